"""Browser tests: Playwright driving Debian's Chromium against the real app on
a loopback port. The onboarding wizard from start to finish (leaving and
resuming in another browser), inviting and accepting as a second person who
signs in by magic link, bulk invite with mixed rows, ownership transfer, and
a logo and colour change visible on the next page. Screenshots of the main
pages land in test-artifacts/."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest

from cajex.testing.workspaces import image

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CSRF = "browser-csrf-token"


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def signed_in_context(browser, live, user):
    """A browser context carrying the cookie a sign-in sets (as World.login does)."""
    app = live.app
    cookie = app.session_interface.get_signing_serializer(app).dumps({
        "_user_id": str(user.id), "_fresh": True, "sid": str(user.session_id),
        "sk": user.session_secret, "csrf": CSRF})
    context = browser.new_context(base_url=live.url, viewport={"width": 1200, "height": 800})
    context.add_cookies([{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie,
                          "url": live.url, "httpOnly": True}])
    context.set_default_timeout(10_000)
    return context


def last_mail(world, recipient: str) -> str:
    row = world.admin.execute(
        "select text_body from cajex.email_deliveries where recipient = %s"
        " order by outbox_id desc limit 1", (recipient,)).fetchone()
    assert row is not None, "no mail was delivered"
    return row["text_body"]


def test_wizard_from_start_to_finish_with_leaving_and_resuming(world, browser, live_server):
    """A new person sets up a workspace; leaves after the plan; resumes in another browser; finishes."""
    user = world.user()
    slug = f"acme-{uuid.uuid4().hex[:6]}"
    first = signed_in_context(browser, live_server, user)
    page = first.new_page()
    page.goto("/")
    shot(page, "01-home-no-workspace")
    page.click("#new-workspace")
    page.wait_for_url("**/onboarding/organisation")
    page.fill("#organisation_name", "Acme Consulting")
    page.fill("#workspace_name", "Acme Client One")
    page.fill("#slug", slug)
    shot(page, "02-wizard-organisation")
    page.click("#next")
    page.wait_for_url("**/onboarding/plan")
    assert f"/w/{slug}" in page.inner_text("#setting-up")
    shot(page, "03-wizard-plan")
    page.check("#plan-free")
    page.click("#next")
    page.wait_for_url("**/onboarding/defaults")
    first.close()

    # Another browser of the same person: the wizard resumes at the defaults step.
    second = signed_in_context(browser, live_server, user)
    page = second.new_page()
    page.goto(f"/w/{slug}/projects")
    page.click(".switcher summary")
    page.click("text=+ New workspace")
    page.wait_for_url("**/onboarding/defaults")
    page.select_option("#default_role", "viewer")
    page.uncheck("#method-apple")
    page.fill("#project_tags", "strategy, threat model, vendor")
    shot(page, "04-wizard-defaults")
    page.click("#next")
    page.wait_for_url("**/onboarding/team")
    page.fill("#list", "ada@example.test, admin\nnot-an-address\nbob@example.test\ncy@example.test")
    page.click("#invite")
    page.wait_for_selector("#results")
    assert page.locator("#results tr.outcome-invited").count() == 2
    assert page.locator("#results tr.outcome-invalid_address").count() == 1
    # Free has three seats: the owner and two pending invitations fill them.
    assert page.locator("#results tr.outcome-over_seat_limit").count() == 1
    shot(page, "05-wizard-team")
    page.click("#finish")
    page.wait_for_url(f"**/w/{slug}/projects")
    assert "Your workspace is ready." in page.inner_text("main")
    assert page.locator("#starter-tags option[value='threat model']").count() == 1
    shot(page, "06-projects-after-wizard")
    second.close()
    methods = world.admin.execute(
        "select m.methods from cajex.workspace_signin_methods m join cajex.workspaces w"
        " on w.id = m.workspace_id where w.slug = %s", (slug,)).fetchone()["methods"]
    assert methods == ["github", "google", "magic_link"]


def test_invite_accept_bulk_invite_and_transfer_ownership(world, browser, live_server, mail_worker):
    """The owner invites; the invitee signs in by magic link in another browser and accepts; the
    owner bulk-invites mixed rows and hands ownership to the newcomer."""
    ws = world.workspace(plan="pro")
    guest_email = f"guest-{uuid.uuid4().hex[:6]}@example.test"
    owner = signed_in_context(browser, live_server, ws.owner)
    page = owner.new_page()
    page.goto(f"/w/{ws.slug}/members")
    page.fill("#invite input[name=email]", guest_email)
    page.click("#invite button[type=submit]")
    page.wait_for_selector(f"#pending tr[data-email='{guest_email}']")

    assert mail_worker() == ["done"]
    link = re.search(r"(http\S+/join/\S+)", last_mail(world, guest_email)).group(1)

    guest = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 800})
    guest.set_default_timeout(10_000)
    gpage = guest.new_page()
    gpage.goto(link)
    shot(gpage, "07-invitation-signed-out")
    gpage.click("#sign-in-to-accept")
    gpage.fill("input[name=email]", guest_email)
    gpage.click("form[action='/login/email'] button[type=submit]")
    gpage.wait_for_selector("text=Check your email", timeout=10_000)
    mail_worker()
    magic = re.search(r"(http\S+/login/magic/\S+)", last_mail(world, guest_email)).group(1)
    gpage.goto(magic)
    gpage.click("main button[type=submit]")
    gpage.wait_for_load_state()
    gpage.goto(link)
    shot(gpage, "08-invitation-signed-in")
    gpage.click("#accept")
    gpage.wait_for_url(f"**/w/{ws.slug}/projects")
    assert "You joined the workspace" in gpage.inner_text("main")

    page.goto(f"/w/{ws.slug}/members")
    assert page.locator(f"#members tr[data-email='{guest_email}'] .role").inner_text() == "member"
    page.fill("#bulk-form textarea[name=list]",
              f"one@example.test, viewer\nnot an address\n{guest_email}\ntwo@example.test, sorcerer")
    page.click("#bulk-form button[value=html]")
    page.wait_for_selector("#bulk-results tr.invited")
    results = {cls: page.locator(f"#bulk-results tr.{cls}").count()
               for cls in ("invited", "invalid_address", "already_member", "invalid_role")}
    assert results == {"invited": 1, "invalid_address": 1, "already_member": 1, "invalid_role": 1}
    shot(page, "09-members-bulk-invite")

    page.goto(f"/w/{ws.slug}/members")
    page.select_option("#transfer select[name=user_id]", label=guest_email)
    page.fill("#transfer input[name=confirm]", ws.slug)
    page.click("#transfer button[type=submit]")
    page.wait_for_selector("text=Ownership transferred")
    assert page.locator(f"#members tr[data-email='{guest_email}'] .role").inner_text() == "owner"
    assert page.locator(f"#members tr[data-email='{ws.owner.email}'] .role").inner_text() == "admin"
    assert page.locator("#transfer").count() == 0
    shot(page, "10-members-after-transfer")
    gpage.goto(f"/w/{ws.slug}/members")
    assert gpage.locator("#transfer").count() == 1
    guest.close()
    owner.close()


def test_logo_and_colours_show_on_the_next_page_and_the_sign_in_page(world, browser, live_server, tmp_path):
    """An admin uploads a logo and picks a too-light colour, takes the offered shade, and sees both
    on the projects page and the workspace's sign-in page."""
    ws = world.workspace()
    context = signed_in_context(browser, live_server, ws.owner)
    page = context.new_page()
    page.goto(f"/w/{ws.slug}/settings/branding")
    logo = tmp_path / "logo.png"
    logo.write_bytes(image("PNG", size=(120, 40), colour=(250, 180, 20)))
    page.set_input_files("#logo-file", str(logo))
    page.click("#upload-logo")
    page.wait_for_selector(".logo-preview")
    page.fill("#primary", "#ffd84d")
    page.fill("#accent", "#0f766e")
    page.click("#save-colours")
    page.wait_for_selector("#contrast-warning")
    suggestion = page.inner_text("#suggest-primary")
    shot(page, "11-branding-contrast-warning")
    page.click("#use-suggestion")
    page.wait_for_selector("text=Colours saved.")

    page.goto(f"/w/{ws.slug}/projects")
    background = page.eval_on_selector(".topbar", "e => getComputedStyle(e).backgroundColor")
    r, g, b = (int(suggestion[i:i + 2], 16) for i in (1, 3, 5))
    assert background == f"rgb({r}, {g}, {b})"
    assert page.eval_on_selector(".topbar img.workspace-logo", "img => img.naturalWidth") == 120
    shot(page, "12-projects-branded")

    visitor = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 800})
    vpage = visitor.new_page()
    vpage.goto(f"/w/{ws.slug}/login")
    assert vpage.eval_on_selector("img.workspace-logo.large", "img => img.naturalWidth") == 120
    assert vpage.eval_on_selector(".topbar", "e => getComputedStyle(e).backgroundColor") == f"rgb({r}, {g}, {b})"
    shot(vpage, "13-sign-in-branded")
    visitor.close()
    context.close()
