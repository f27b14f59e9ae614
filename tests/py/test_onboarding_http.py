"""The onboarding wizard over HTTP: start to finish, resuming in another
browser, every step's validation, and the denials (another user's draft,
another owner's organisation, skipping ahead)."""

from __future__ import annotations

import importlib.util
import secrets

import pytest

CSRF = "test-csrf-token"


def post(client, path, data=None, **kwargs):
    return client.post(path, data={**(data or {}), "csrf_token": CSRF}, **kwargs)


def org_form(slug, **extra):
    return {"mode": "new", "organisation_name": "Acme Consulting", "workspace_name": "Client One",
            "slug": slug, **extra}


DEFAULTS = {"default_role": "viewer", "sign_in_methods": ["magic_link", "github"],
            "ai_enabled": "off", "project_tags": "strategy, Security, security, vendor"}


def draft_of(world, user):
    return world.admin.execute(
        "select step, data, workspace_id from cajex.onboarding_drafts where user_id = %s", (user.id,)
    ).fetchone()


def workspace_by_slug(world, slug):
    return world.admin.execute("select * from cajex.workspaces where slug = %s", (slug,)).fetchone()


def new_slug() -> str:
    return f"client-{secrets.token_hex(3)}"


@pytest.fixture
def person(world, signed_in):
    user = world.user()
    return user, signed_in(user)


def test_can_set_up_a_workspace_from_start_to_finish(world, person):
    """Organisation, plan, defaults, team, finish: the workspace exists with its defaults and opens on projects."""
    user, client = person
    slug = new_slug()
    start = client.get("/onboarding/")
    assert start.status_code == 302 and start.headers["Location"].endswith("/onboarding/organisation")
    assert 'id="organisation-form"' in client.get("/onboarding/organisation").get_data(as_text=True)

    created = post(client, "/onboarding/organisation", org_form(slug))
    assert created.status_code == 302 and created.headers["Location"].endswith("/onboarding/plan")
    ws = workspace_by_slug(world, slug)
    assert ws["name"] == "Client One" and ws["plan"] == "free"
    owner = world.admin.execute("select user_id from cajex.memberships where workspace_id = %s"
                                " and role = 'owner'", (ws["id"],)).fetchone()
    assert owner["user_id"] == user.id

    assert post(client, "/onboarding/plan", {"plan": "free"}).headers["Location"].endswith("/onboarding/defaults")
    saved = post(client, "/onboarding/defaults", DEFAULTS)
    assert saved.status_code == 302 and saved.headers["Location"].endswith("/onboarding/team")
    settings = workspace_by_slug(world, slug)["settings"]
    assert settings["default_role"] == "viewer"
    assert settings["ai_enabled"] is False
    assert settings["project_tags"] == ["strategy", "Security", "vendor"]
    methods = world.admin.execute("select methods from cajex.workspace_signin_methods"
                                  " where workspace_id = %s", (ws["id"],)).fetchone()["methods"]
    assert methods == ["github", "magic_link"]
    ai = world.admin.execute("select enabled from cajex.ai_settings where workspace_id = %s",
                             (ws["id"],)).fetchone()
    assert ai["enabled"] is False

    page = post(client, "/onboarding/team", {"list": "ada@example.test, admin\ngrace@example.test"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="results"' in html
    invited = world.admin.execute("select email, role from cajex.invitations where workspace_id = %s"
                                  " order by email", (ws["id"],)).fetchall()
    # The row without a role takes the default role chosen a step earlier.
    assert [(i["email"], i["role"]) for i in invited] == [("ada@example.test", "admin"),
                                                           ("grace@example.test", "viewer")]

    done = post(client, "/onboarding/finish")
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/w/{slug}/projects")
    assert draft_of(world, user) is None
    projects = client.get(f"/w/{slug}/projects").get_data(as_text=True)
    assert "Your workspace is ready." in projects
    assert 'value="strategy"' in projects and 'value="vendor"' in projects


def test_leaving_and_coming_back_resumes_where_it_stopped(world, person, signed_in):
    """The draft is server-side: another browser of the same person continues at the saved step."""
    user, client = person
    slug = new_slug()
    post(client, "/onboarding/organisation", org_form(slug))
    elsewhere = signed_in(user)
    assert elsewhere.get("/onboarding/").headers["Location"].endswith("/onboarding/plan")
    assert f"/w/{slug}" in elsewhere.get("/onboarding/plan").get_data(as_text=True)
    post(elsewhere, "/onboarding/plan", {"plan": "free"})
    post(elsewhere, "/onboarding/defaults", DEFAULTS)
    assert client.get("/onboarding/").headers["Location"].endswith("/onboarding/team")
    # An earlier step can be seen again, with what was saved.
    again = client.get("/onboarding/defaults").get_data(as_text=True)
    assert 'value="viewer" selected' in again
    assert draft_of(world, user)["step"] == "team"


def test_cannot_skip_ahead_of_the_saved_step(person):
    """Later steps redirect to the step the draft is at."""
    _, client = person
    for step in ("plan", "defaults", "team"):
        response = client.get(f"/onboarding/{step}")
        assert response.status_code == 302 and response.headers["Location"].endswith("/onboarding/organisation")
    refused = post(client, "/onboarding/finish")
    assert refused.headers["Location"].endswith("/onboarding/organisation")


@pytest.mark.parametrize(
    ("form", "field"),
    [
        (org_form("Bad Slug!"), "slug"),
        (org_form("ab"), "slug"),
        (org_form("-leading"), "slug"),
        (org_form("fine-slug", organisation_name=""), "organisation_name"),
        (org_form("fine-slug", workspace_name="   "), "workspace_name"),
    ],
    ids=["characters", "too-short", "leading-dash", "no-organisation", "no-name"],
)
def test_organisation_step_validates_before_moving_on(world, person, form, field):
    """A bad address or a missing name is 422 with the field's message; nothing is created, the input is kept."""
    user, client = person
    response = post(client, "/onboarding/organisation", form)
    assert response.status_code == 422
    assert f'id="error-{field}"' in response.get_data(as_text=True)
    assert world.admin.execute("select count(*) as n from cajex.memberships where user_id = %s",
                               (user.id,)).fetchone()["n"] == 0
    draft = draft_of(world, user)
    assert draft["step"] == "organisation" and draft["workspace_id"] is None
    assert draft["data"]["organisation"]["workspace_name"] == form["workspace_name"].strip()


def test_organisation_step_refuses_a_taken_address(world, person):
    """An address another workspace holds is 422 on the slug field, and no organisation is left behind."""
    user, client = person
    taken = world.workspace()
    response = post(client, "/onboarding/organisation", org_form(taken.slug))
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and 'id="error-slug"' in html and "is taken" in html
    assert world.admin.execute("select count(*) as n from cajex.organisation_members where user_id = %s",
                               (user.id,)).fetchone()["n"] == 0


def test_can_add_a_workspace_to_an_organisation_the_person_owns(world, signed_in):
    """Choosing an existing organisation puts the new workspace in it."""
    first = world.workspace()
    client = signed_in(first.owner)
    slug = new_slug()
    response = post(client, "/onboarding/organisation",
                    org_form(slug, mode="existing", organisation_id=str(first.organisation_id)))
    assert response.status_code == 302
    assert workspace_by_slug(world, slug)["organisation_id"] == first.organisation_id


def test_cannot_add_a_workspace_to_another_owners_organisation(world, person):
    """Another owner's organisation id is refused (422 on the field) and no workspace is made."""
    _, client = person
    theirs = world.workspace()
    slug = new_slug()
    response = post(client, "/onboarding/organisation",
                    org_form(slug, mode="existing", organisation_id=str(theirs.organisation_id)))
    assert response.status_code == 422
    assert 'id="error-organisation_id"' in response.get_data(as_text=True)
    assert workspace_by_slug(world, slug) is None


def test_cannot_see_or_continue_another_persons_draft(world, person, signed_in):
    """B starts fresh while A's draft exists, and B's requests leave A's workspace untouched."""
    a_user, a_client = person
    slug = new_slug()
    post(a_client, "/onboarding/organisation", org_form(slug))
    b_user = world.user()
    b_client = signed_in(b_user)
    assert b_client.get("/onboarding/").headers["Location"].endswith("/onboarding/organisation")
    assert slug not in b_client.get("/onboarding/organisation").get_data(as_text=True)
    assert post(b_client, "/onboarding/defaults", DEFAULTS).headers["Location"].endswith("/onboarding/organisation")
    post(b_client, "/onboarding/team", {"list": "mallory@example.test"})
    ws = workspace_by_slug(world, slug)
    assert ws["settings"].get("default_role") == "member"
    assert world.admin.execute("select count(*) as n from cajex.invitations where workspace_id = %s",
                               (ws["id"],)).fetchone()["n"] == 0
    with world.as_user(b_user) as (conn, _):
        assert conn.execute("select count(*) as n from cajex.onboarding_drafts").fetchone()["n"] == 0
    with world.as_user(a_user) as (conn, _):
        assert conn.execute("select count(*) as n from cajex.onboarding_drafts").fetchone()["n"] == 1


def _to_defaults(client) -> str:
    slug = new_slug()
    post(client, "/onboarding/organisation", org_form(slug))
    post(client, "/onboarding/plan", {"plan": "free"})
    return slug


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sign_in_methods": []}, "sign_in_methods"),
        ({"sign_in_methods": ["magic_link", "telepathy"]}, "sign_in_methods"),
        ({"default_role": "owner"}, "default_role"),
        ({"project_tags": "ok, <script>"}, "project_tags"),
        ({"ai_enabled": "on"}, "ai_api_key"),
    ],
    ids=["no-method", "unknown-method", "owner-role", "bad-tag", "ai-without-key"],
)
def test_defaults_step_validates_before_moving_on(world, person, changes, field):
    """Each bad default is 422 on its field, and nothing of the step is applied."""
    user, client = person
    slug = _to_defaults(client)
    response = post(client, "/onboarding/defaults", {**DEFAULTS, **changes})
    assert response.status_code == 422
    assert f'id="error-{field}"' in response.get_data(as_text=True)
    ws = workspace_by_slug(world, slug)
    assert ws["settings"]["default_role"] == "member"
    assert world.admin.execute("select count(*) as n from cajex.workspace_signin_methods"
                               " where workspace_id = %s", (ws["id"],)).fetchone()["n"] == 0
    assert draft_of(world, user)["step"] == "defaults"


def test_ai_can_start_on_with_a_sealed_provider_key(world, person):
    """AI on with a key: enabled, the key stored encrypted (never in the clear or in the draft)."""
    user, client = person
    slug = _to_defaults(client)
    # On Free, the page says AI runs only once the plan includes it.
    assert 'id="ai-plan-note"' in client.get("/onboarding/defaults").get_data(as_text=True)
    key = "sk-test-" + secrets.token_hex(16)
    response = post(client, "/onboarding/defaults",
                    {**DEFAULTS, "ai_enabled": "on", "ai_provider": "anthropic", "ai_api_key": key})
    assert response.status_code == 302
    ws = workspace_by_slug(world, slug)
    ai = world.admin.execute("select enabled, provider, api_key, api_key_last4 from cajex.ai_settings"
                             " where workspace_id = %s", (ws["id"],)).fetchone()
    assert ai["enabled"] is True and ai["provider"] == "anthropic" and ai["api_key_last4"].endswith(key[-4:])
    assert key.encode() not in bytes(ai["api_key"])
    assert key not in str(draft_of(world, user)["data"])


def test_plan_step_refuses_an_unknown_plan(world, person):
    """A plan that is not offered is 422 on the plan field; the workspace stays on Free."""
    _, client = person
    slug = new_slug()
    post(client, "/onboarding/organisation", org_form(slug))
    for plan in ("platinum", "enterprise", ""):
        response = post(client, "/onboarding/plan", {"plan": plan})
        assert response.status_code == 422 and 'id="error-plan"' in response.get_data(as_text=True)
    assert workspace_by_slug(world, slug)["plan"] == "free"


def test_paid_plan_goes_to_billing(world, person):
    """A paid plan is handed to the billing module (offline here: the plan changes at once);
    without a billing module the choice is recorded and billing continues on its page."""
    user, client = person
    slug = new_slug()
    post(client, "/onboarding/organisation", org_form(slug))
    response = post(client, "/onboarding/plan", {"plan": "pro"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/onboarding/defaults")
    recorded = draft_of(world, user)["data"]["plan"]
    assert recorded["code"] == "pro"
    if importlib.util.find_spec("cajex.web.views.billing") is not None:
        assert workspace_by_slug(world, slug)["plan"] == "pro" and recorded["billing"] == "none"
    else:
        assert workspace_by_slug(world, slug)["plan"] == "free" and recorded["billing"] == "billing_page"


def test_team_step_reports_each_row(world, person):
    """Mixed rows: invited, invalid, duplicate in the list, over the Free plan's seats; valid rows go through."""
    _, client = person
    slug = _to_defaults(client)
    post(client, "/onboarding/defaults", DEFAULTS)
    listing = "\n".join(["one@example.test", "not-an-address", "two@example.test, member",
                         "one@example.test", "three@example.test", "four@example.test, wizard"])
    page = post(client, "/onboarding/team", {"list": listing})
    html = page.get_data(as_text=True)
    for outcome in ("invited", "invalid_address", "already_invited", "over_seat_limit", "invalid_role"):
        assert f"outcome-{outcome}" in html, outcome
    ws = workspace_by_slug(world, slug)
    emails = {r["email"] for r in world.admin.execute(
        "select email from cajex.invitations where workspace_id = %s", (ws["id"],)).fetchall()}
    assert emails == {"one@example.test", "two@example.test"}


def test_team_step_refuses_a_list_that_is_not_text(world, person):
    """A binary upload is 422 bad_encoding on the list, and nothing is invited."""
    _, client = person
    slug = _to_defaults(client)
    post(client, "/onboarding/defaults", DEFAULTS)
    import io

    response = client.post("/onboarding/team", data={
        "csrf_token": CSRF, "file": (io.BytesIO(b"\xff\xfe\x00a\x00b"), "list.csv")},
        content_type="multipart/form-data")
    assert response.status_code == 422 and 'id="error-list"' in response.get_data(as_text=True)
    ws = workspace_by_slug(world, slug)
    assert world.admin.execute("select count(*) as n from cajex.invitations where workspace_id = %s",
                               (ws["id"],)).fetchone()["n"] == 0


def test_wizard_needs_a_signed_in_person(client):
    """Signed out, every step sends the browser to sign in."""
    for path in ("/onboarding/", "/onboarding/organisation", "/onboarding/team"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
