"""Members over HTTP: inviting (one, a pasted list, a CSV file), accepting
on the way through the magic-link sign-in, declining, revoking, resending,
roles, removal, leaving and ownership transfer, each allow beside a deny from
another workspace, and the hostile cases of the issue."""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import unquote, urlsplit

import pytest

from cajex import members
from cajex.testing.workspaces import mail_worker  # noqa: F401  (fixture)

CSRF = {"X-CSRF-Token": "test-csrf-token"}


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def outbox(world, template: str, to: str) -> list[dict]:
    """Email jobs waiting in the outbox for `to` (newest last)."""
    return [r["payload"] for r in world.admin.execute(
        "select payload from cajex.outbox where kind = 'email.send'"
        " and payload ->> 'template' = %s and payload ->> 'to' = %s order by created_at, id",
        (template, to),
    )]


def invite_link(world, email: str) -> str:
    return outbox(world, "invitation", email)[-1]["params"]["accept_url"]


def token_of(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[1]


def api_invite(client, ws, email, role="member"):
    return client.post(f"/w/{ws.slug}/api/v1/invitations", json={"email": email, "role": role})


def form(client, url, **data):
    return client.post(url, data=dict(data, csrf_token="test-csrf-token"))


def anonymous(app):
    c = app.test_client()
    with c.session_transaction() as sess:
        sess["csrf"] = "test-csrf-token"
    return c


def invitations(world, ws) -> list[dict]:
    return world.admin.execute(
        "select email, role, status from cajex.invitations where workspace_id = %s order by created_at, email",
        (ws.id,),
    ).fetchall()


# -- one invitation -------------------------------------------------------------------


def test_admin_invites_and_the_outbox_holds_the_email(world, signed_in):
    ws = world.workspace()
    admin = world.member(ws, role="admin")
    r = api_invite(signed_in(admin), ws, "New.Person@Example.test", "viewer")
    assert r.status_code == 201, r.json
    assert r.json["outcome"] == "invited"
    assert invitations(world, ws) == [{"email": "new.person@example.test", "role": "viewer", "status": "pending"}]
    link = invite_link(world, "new.person@example.test")
    assert link.startswith(f"http://cajex.test/w/{ws.slug}/join/")
    stored = world.admin.execute("select token_hash from cajex.invitations").fetchone()["token_hash"]
    assert bytes(stored) == members.token_hash(token_of(link))


def test_inviting_into_another_workspace_is_not_found(world, signed_in):
    a, b = world.workspace(), world.workspace()
    r = api_invite(signed_in(a.owner), b, "x@example.test")
    assert r.status_code == 404
    assert invitations(world, b) == []


def test_member_and_viewer_may_not_invite(world, signed_in):
    ws = world.workspace()
    for role in ("member", "viewer"):
        r = api_invite(signed_in(world.member(ws, role=role)), ws, f"{role}@example.test")
        assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    assert invitations(world, ws) == []


def test_duplicates_say_so(world, signed_in):
    ws = world.workspace()
    existing = world.member(ws)
    client = signed_in(ws.owner)
    assert api_invite(client, ws, "twice@example.test").status_code == 201
    again = api_invite(client, ws, "TWICE@example.test")
    assert again.status_code == 409 and again.json["outcome"] == "already_invited"
    member = api_invite(client, ws, existing.email)
    assert member.status_code == 409 and member.json["outcome"] == "already_member"
    bad = api_invite(client, ws, "not-an-address")
    assert bad.status_code == 422 and bad.json["outcome"] == "invalid_address"
    assert len(invitations(world, ws)) == 1


def test_the_form_flashes_already_invited(world, signed_in):
    ws = world.workspace()
    client = signed_in(ws.owner)
    form(client, f"/w/{ws.slug}/members/invite", email="pat@example.test", role="member")
    form(client, f"/w/{ws.slug}/members/invite", email="pat@example.test", role="member")
    page = client.get(f"/w/{ws.slug}/members").get_data(as_text=True)
    assert "Already invited." in page
    assert page.count('data-email="pat@example.test"') == 1


def test_seat_limit_at_invitation(world, signed_in):
    ws = world.workspace(plan="free")  # three seats, the owner holds one
    client = signed_in(ws.owner)
    assert api_invite(client, ws, "s1@example.test").status_code == 201
    assert api_invite(client, ws, "s2@example.test").status_code == 201
    over = api_invite(client, ws, "s3@example.test")
    assert over.status_code == 402 and over.json["outcome"] == "over_seat_limit"
    assert outbox(world, "invitation", "s3@example.test") == []


def test_seat_limit_again_at_acceptance(world, signed_in, app):
    ws = world.workspace(plan="free")
    client = signed_in(ws.owner)
    api_invite(client, ws, "late@example.test")
    world.member(ws)
    world.member(ws)  # the seats filled up after the invitation was sent
    late = world.user("late@example.test")
    r = form(signed_in(late), path_of(invite_link(world, late.email)) + "/accept")
    assert r.status_code == 402
    assert "plan allows 3 seats" in r.get_data(as_text=True)
    with world.as_user(late, ws) as (_, opened):
        assert opened.workspace_id is None


# -- accepting ---------------------------------------------------------------------


def test_accept_when_signed_in(world, signed_in):
    ws = world.workspace()
    newcomer = world.user()
    api_invite(signed_in(ws.owner), ws, newcomer.email, "viewer")
    client = signed_in(newcomer)
    link = path_of(invite_link(world, newcomer.email))
    page = client.get(link)
    assert page.status_code == 200 and 'id="accept"' in page.get_data(as_text=True)
    r = form(client, link + "/accept")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/w/{ws.slug}/projects")
    assert client.get(f"/w/{ws.slug}/members").status_code == 200
    with world.as_user(newcomer, ws) as (_, opened):
        assert opened.role == "viewer"


def test_accept_when_not_signed_in_signs_up_on_the_way(world, signed_in, app):
    """The invitee has no account: the link leads to sign-in, the magic link
    creates the account and comes back to the invitation, which they accept."""
    ws = world.workspace()
    email = "first.timer@example.test"
    api_invite(signed_in(ws.owner), ws, email)
    browser = anonymous(app)
    join = path_of(invite_link(world, email))
    page = browser.get(join)
    assert page.status_code == 200
    login = re.search(r'id="sign-in-to-accept" href="([^"]+)"', page.get_data(as_text=True)).group(1)
    login = login.replace("&amp;", "&")
    assert login.startswith(f"/w/{ws.slug}/login?")  # the workspace's own methods and branding
    assert unquote(login.split("next=", 1)[1]) == join
    sign_in_page = browser.get(login).get_data(as_text=True)
    assert f'name="next" value="{join}"' in sign_in_page
    asked = browser.post("/login/email", data={"email": email, "next": join, "csrf_token": "test-csrf-token"})
    assert asked.status_code == 200
    magic = path_of(outbox(world, "magic_link", email)[-1]["params"]["link"])
    confirm = browser.get(magic)
    assert confirm.status_code == 200
    action = re.search(r'<form method="post" action="([^"]+)"', confirm.get_data(as_text=True)).group(1)
    with browser.session_transaction() as sess:
        sess["csrf"] = "test-csrf-token"
    signed = browser.post(action.replace("&amp;", "&"), data={"csrf_token": "test-csrf-token"})
    assert signed.status_code == 302 and path_of(signed.headers["Location"]) == join
    with browser.session_transaction() as sess:
        sess["csrf"] = "test-csrf-token"
    assert 'id="accept"' in browser.get(join).get_data(as_text=True)
    accepted = form(browser, join + "/accept")
    assert accepted.status_code == 302
    assert browser.get(f"/w/{ws.slug}/projects").status_code == 200
    assert world.admin.execute(
        "select m.role from cajex.memberships m join cajex.users u on u.id = m.user_id"
        " where m.workspace_id = %s and u.email = %s", (ws.id, email)).fetchone()["role"] == "member"


def test_accept_without_session_goes_to_sign_in_and_changes_nothing(world, signed_in, app):
    ws = world.workspace()
    api_invite(signed_in(ws.owner), ws, "later@example.test")
    join = path_of(invite_link(world, "later@example.test"))
    r = form(anonymous(app), join + "/accept")
    assert r.status_code == 302 and "/login?next=" in r.headers["Location"]
    assert invitations(world, ws)[0]["status"] == "pending"


def test_accepting_as_a_different_signed_in_email_is_refused(world, signed_in):
    ws = world.workspace()
    invited, intruder = world.user(), world.user()
    api_invite(signed_in(ws.owner), ws, invited.email)
    link = path_of(invite_link(world, invited.email))
    client = signed_in(intruder)
    page = client.get(link).get_data(as_text=True)
    assert 'id="wrong-account"' in page and 'id="accept"' not in page
    r = form(client, link + "/accept")
    assert r.status_code == 403
    assert "another email address" in r.get_data(as_text=True)
    assert client.get(f"/w/{ws.slug}/projects").status_code == 404
    assert invitations(world, ws)[0]["status"] == "pending"


def test_reused_token_is_refused(world, signed_in):
    ws = world.workspace()
    newcomer = world.user()
    api_invite(signed_in(ws.owner), ws, newcomer.email)
    link = path_of(invite_link(world, newcomer.email))
    client = signed_in(newcomer)
    assert form(client, link + "/accept").status_code == 302
    again = form(client, link + "/accept")
    assert again.status_code == 410
    assert "already used or withdrawn" in client.get(link).get_data(as_text=True)


def test_expired_token_is_refused(world, signed_in):
    ws = world.workspace()
    newcomer = world.user()
    api_invite(signed_in(ws.owner), ws, newcomer.email)
    world.admin.execute("update cajex.invitations set expires_at = now() - interval '1 second'")
    link = path_of(invite_link(world, newcomer.email))
    client = signed_in(newcomer)
    assert "has expired" in client.get(link).get_data(as_text=True)
    assert form(client, link + "/accept").status_code == 410
    with world.as_user(newcomer, ws) as (_, opened):
        assert opened.workspace_id is None


def test_revoked_token_is_refused(world, signed_in):
    ws = world.workspace()
    newcomer = world.user()
    owner = signed_in(ws.owner)
    invited = api_invite(owner, ws, newcomer.email).json
    link = path_of(invite_link(world, newcomer.email))
    r = form(owner, f"/w/{ws.slug}/members/invitations/{invited['invitation_id']}/revoke")
    assert r.status_code == 302
    assert form(signed_in(newcomer), link + "/accept").status_code == 410
    assert invitations(world, ws)[0]["status"] == "revoked"


def test_revoking_from_another_workspace_is_not_found(world, signed_in):
    a, b = world.workspace(), world.workspace()
    invited = api_invite(signed_in(a.owner), a, "keep@example.test").json
    r = form(signed_in(b.owner), f"/w/{b.slug}/members/invitations/{invited['invitation_id']}/revoke")
    assert r.status_code == 404
    r = form(signed_in(b.owner), f"/w/{a.slug}/members/invitations/{invited['invitation_id']}/revoke")
    assert r.status_code == 404
    assert invitations(world, a)[0]["status"] == "pending"


def test_other_workspace_token_is_refused(world, signed_in):
    a, b = world.workspace(), world.workspace()
    newcomer = world.user()
    api_invite(signed_in(a.owner), a, newcomer.email)
    token = token_of(invite_link(world, newcomer.email))
    client = signed_in(newcomer)
    assert client.get(f"/w/{b.slug}/join/{token}").status_code == 404
    assert form(client, f"/w/{b.slug}/join/{token}/accept").status_code == 404
    assert client.get(f"/w/{b.slug}/projects").status_code == 404
    assert invitations(world, a)[0]["status"] == "pending"


def test_forged_token_is_not_found(world, signed_in):
    ws = world.workspace()
    client = signed_in(world.user())
    assert client.get(f"/w/{ws.slug}/join/{'A' * 43}").status_code == 404
    assert form(client, f"/w/{ws.slug}/join/{'A' * 43}/accept").status_code == 404
    assert client.get(f"/w/{ws.slug}/join/short").status_code == 404


def test_resend_kills_the_old_link(world, signed_in):
    ws = world.workspace()
    newcomer = world.user()
    owner = signed_in(ws.owner)
    invited = api_invite(owner, ws, newcomer.email).json
    old = path_of(invite_link(world, newcomer.email))
    r = form(owner, f"/w/{ws.slug}/members/invitations/{invited['invitation_id']}/resend")
    assert r.status_code == 302
    new = path_of(invite_link(world, newcomer.email))
    assert new != old
    client = signed_in(newcomer)
    assert form(client, old + "/accept").status_code == 410
    assert form(client, new + "/accept").status_code == 302


def test_resending_from_another_workspace_is_not_found(world, signed_in):
    a, b = world.workspace(), world.workspace()
    invited = api_invite(signed_in(a.owner), a, "stay@example.test").json
    link = invite_link(world, "stay@example.test")
    for slug in (a.slug, b.slug):
        r = form(signed_in(b.owner), f"/w/{slug}/members/invitations/{invited['invitation_id']}/resend")
        assert r.status_code == 404
    assert invite_link(world, "stay@example.test") == link
    assert invitations(world, a)[0]["status"] == "pending"


def test_decline_needs_no_account_and_ends_the_link(world, signed_in, app):
    ws = world.workspace()
    api_invite(signed_in(ws.owner), ws, "no.thanks@example.test")
    link = path_of(invite_link(world, "no.thanks@example.test"))
    browser = anonymous(app)
    r = form(browser, link + "/decline")
    assert r.status_code == 200 and "Invitation declined" in r.get_data(as_text=True)
    assert invitations(world, ws)[0]["status"] == "declined"
    assert form(browser, link + "/decline").status_code == 410


def test_declining_with_another_workspaces_slug_is_not_found(world, signed_in, app):
    a, b = world.workspace(), world.workspace()
    api_invite(signed_in(a.owner), a, "d@example.test")
    token = token_of(invite_link(world, "d@example.test"))
    assert form(anonymous(app), f"/w/{b.slug}/join/{token}/decline").status_code == 404
    assert invitations(world, a)[0]["status"] == "pending"


# -- bulk ----------------------------------------------------------------------------


def test_bulk_paste_with_mixed_rows(world, signed_in):
    ws = world.workspace(plan="free")
    existing = world.member(ws)  # two of three seats taken
    client = signed_in(ws.owner)
    listing = "\n".join(["email,role", "ok@example.test, viewer", existing.email, "nonsense",
                         "ok2@example.test", "ok3@example.test,boss"])
    r = form(client, f"/w/{ws.slug}/members/bulk", list=listing, role="member", format="html")
    assert r.status_code == 200
    rows = re.findall(r'<tr class="(\w+)"><td>(\d+)</td><td>([^<]*)</td>', r.get_data(as_text=True))
    assert [(o, int(n)) for o, n, _ in rows] == [
        ("invited", 2), ("already_member", 3), ("invalid_address", 4), ("over_seat_limit", 5),
        ("invalid_role", 6)]
    assert [i["email"] for i in invitations(world, ws)] == ["ok@example.test"]


def test_bulk_csv_upload_answers_with_safe_csv(world, signed_in):
    """Formula cells (=, +, -, @) come back quoted so a spreadsheet shows them
    as text; valid rows went through."""
    ws = world.workspace(plan="pro")
    client = signed_in(ws.owner)
    data = (b"email,role\r\n=1+2@evil.test,member\r\n+cmd@evil.test,=HYPERLINK(\"http://x\")\r\n"
            b"-2@evil.test,viewer\r\n@SUM(A1)@evil.test,member\r\nplain@example.test,admin\r\n")
    r = client.post(f"/w/{ws.slug}/members/bulk", data={
        "file": (io.BytesIO(data), "team.csv"), "role": "member", "format": "csv",
        "csrf_token": "test-csrf-token"}, content_type="multipart/form-data")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[0] == ["line", "email", "role", "result"]
    by_line = {int(row[0]): row for row in rows[1:]}
    assert by_line[2][1] == "'=1+2@evil.test" and by_line[2][3] == "invited"
    assert by_line[3][2].startswith("'=") and by_line[3][3] == "invalid_role"
    assert by_line[4][1] == "'-2@evil.test"
    assert by_line[5][1].startswith("'@") and by_line[5][3] == "invalid_address"
    assert by_line[6][1:] == ["plain@example.test", "admin", "invited"]
    for row in rows[1:]:
        assert row[1][:1] not in "=+-@" and row[2][:1] not in "=+-@"
    assert {i["email"] for i in invitations(world, ws)} == {
        "=1+2@evil.test", "-2@evil.test", "plain@example.test"}


@pytest.mark.parametrize("raw,code", [
    ("email\n".encode("utf-16"), "bad_encoding"),
    ("Jos\xe9@example.test\n".encode("latin-1"), "bad_encoding"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "bad_encoding"),
    (b"\n\n", "empty"),
    (b"".join(b"a" * 400 + b"@example.test\n" for _ in range(1000)), "too_large"),
])
def test_bulk_refuses_files_it_cannot_read_whole(world, signed_in, raw, code):
    ws = world.workspace()
    r = signed_in(ws.owner).post(f"/w/{ws.slug}/members/bulk", data={
        "file": (io.BytesIO(raw), "list.csv"), "csrf_token": "test-csrf-token"},
        content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert r.status_code == 422 and r.json["error"]["code"] == code
    assert invitations(world, ws) == []


def test_bulk_refuses_10000_rows_clearly_and_invites_none(world, signed_in):
    ws = world.workspace(plan="enterprise")
    client = signed_in(ws.owner)
    big = "".join(f"p{i}@example.test\n" for i in range(10_000)).encode()
    r = client.post(f"/w/{ws.slug}/members/bulk", data={
        "file": (io.BytesIO(big), "big.csv"), "csrf_token": "test-csrf-token"},
        content_type="multipart/form-data")
    assert r.status_code == 422
    assert "at most 1000 rows" in r.get_data(as_text=True)
    api = client.post(f"/w/{ws.slug}/api/v1/invitations/bulk",
                      json={"rows": [{"line": i, "email": f"p{i}@example.test"} for i in range(10_000)]})
    assert api.status_code == 422 and api.json["error"]["code"] == "too_many_rows"
    assert invitations(world, ws) == []


def test_bulk_of_1000_rows_goes_through_in_chunks(world, signed_in):
    """What the page's script does: chunks of CHUNK_SIZE rows, one request
    each, progress after each."""
    ws = world.workspace(plan="enterprise")
    client = signed_in(ws.owner)
    rows = [{"line": i + 1, "email": f"bulk{i}@example.test", "role": "member"} for i in range(1000)]
    rows[10]["email"] = "broken"
    done = []
    for start in range(0, len(rows), members.CHUNK_SIZE):
        r = client.post(f"/w/{ws.slug}/api/v1/invitations/bulk",
                        json={"rows": rows[start:start + members.CHUNK_SIZE]})
        assert r.status_code == 200
        done += r.json["results"]
    assert len(done) == 1000
    assert sum(d["outcome"] == "invited" for d in done) == 999
    assert done[10]["outcome"] == "invalid_address" and done[10]["line"] == 11
    assert world.admin.execute(
        "select count(*) as n from cajex.outbox where kind = 'email.send' and payload->>'template' = 'invitation'"
    ).fetchone()["n"] == 999


def test_bulk_into_another_workspace_is_not_found(world, signed_in):
    a, b = world.workspace(), world.workspace()
    r = signed_in(a.owner).post(f"/w/{b.slug}/api/v1/invitations/bulk",
                                json={"rows": [{"email": "x@example.test"}]})
    assert r.status_code == 404
    assert invitations(world, b) == []


def test_member_may_not_bulk_invite(world, signed_in):
    ws = world.workspace()
    r = signed_in(world.member(ws)).post(f"/w/{ws.slug}/api/v1/invitations/bulk",
                                         json={"rows": [{"email": "x@example.test"}]})
    assert r.status_code == 403
    assert invitations(world, ws) == []


# -- roles, removal, leaving ---------------------------------------------------------------


def test_change_role_and_its_cross_workspace_deny(world, signed_in):
    a, b = world.workspace(), world.workspace()
    m = world.member(a)
    assert form(signed_in(a.owner), f"/w/{a.slug}/members/{m.id}/role", role="viewer").status_code == 302
    assert form(signed_in(b.owner), f"/w/{b.slug}/members/{m.id}/role", role="admin").status_code == 404
    assert form(signed_in(b.owner), f"/w/{a.slug}/members/{m.id}/role", role="admin").status_code == 404
    with world.as_user(m, a) as (_, opened):
        assert opened.role == "viewer"


def test_removed_member_is_refused_on_the_next_request(world, signed_in):
    ws = world.workspace()
    other = world.workspace()
    m = world.member(ws)
    world.member(other, m)
    theirs = signed_in(m)
    assert theirs.get(f"/w/{ws.slug}/projects").status_code == 200
    assert form(signed_in(ws.owner), f"/w/{ws.slug}/members/{m.id}/remove").status_code == 302
    assert theirs.get(f"/w/{ws.slug}/projects").status_code == 404
    assert theirs.get(f"/w/{ws.slug}/api/v1/projects").status_code == 404
    # Their other workspace still opens with the same browser session.
    assert theirs.get(f"/w/{other.slug}/projects").status_code == 200


def test_removing_from_another_workspace_is_not_found(world, signed_in):
    a, b = world.workspace(), world.workspace()
    m = world.member(a)
    assert form(signed_in(b.owner), f"/w/{b.slug}/members/{m.id}/remove").status_code == 404
    assert signed_in(m).get(f"/w/{a.slug}/projects").status_code == 200


def test_owner_cannot_be_removed_or_leave(world, signed_in):
    ws = world.workspace()
    admin = world.member(ws, role="admin")
    r = form(signed_in(admin), f"/w/{ws.slug}/members/{ws.owner.id}/remove")
    assert r.status_code == 409 and "<code>owner_required</code>" in r.get_data(as_text=True)
    r = form(signed_in(ws.owner), f"/w/{ws.slug}/members/leave")
    assert r.status_code == 409
    assert signed_in(ws.owner).get(f"/w/{ws.slug}/members").status_code == 200


def test_member_leaves(world, signed_in):
    ws = world.workspace()
    m = world.member(ws)
    client = signed_in(m)
    assert form(client, f"/w/{ws.slug}/members/leave").status_code == 302
    assert client.get(f"/w/{ws.slug}/projects").status_code == 404


# -- ownership -------------------------------------------------------------------


def test_transfer_ownership_over_http(world, signed_in):
    ws = world.workspace()
    heir = world.member(ws)
    owner = signed_in(ws.owner)
    wrong = form(owner, f"/w/{ws.slug}/members/transfer", user_id=str(heir.id), confirm="nope")
    assert wrong.status_code == 422
    r = form(owner, f"/w/{ws.slug}/members/transfer", user_id=str(heir.id), confirm=ws.slug)
    assert r.status_code == 302
    roles = {r["user_id"]: r["role"] for r in world.admin.execute(
        "select user_id, role from cajex.memberships where workspace_id = %s", (ws.id,))}
    assert roles == {heir.id: "owner", ws.owner.id: "admin"}
    # The old owner is an admin now: no second transfer.
    again = form(owner, f"/w/{ws.slug}/members/transfer", user_id=str(heir.id), confirm=ws.slug)
    assert again.status_code == 403


def test_transfer_to_a_member_of_another_workspace_is_not_found(world, signed_in):
    a, b = world.workspace(), world.workspace()
    outsider = world.member(b)
    r = form(signed_in(a.owner), f"/w/{a.slug}/members/transfer", user_id=str(outsider.id), confirm=a.slug)
    assert r.status_code == 404
    r = form(signed_in(a.owner), f"/w/{b.slug}/members/transfer", user_id=str(outsider.id), confirm=b.slug)
    assert r.status_code == 404
    assert world.admin.execute(
        "select user_id from cajex.memberships where workspace_id = %s and role = 'owner'", (b.id,)
    ).fetchone()["user_id"] == b.owner.id


# -- the members page -------------------------------------------------------------


def test_members_page_lists_this_workspace_only(world, signed_in):
    a, b = world.workspace(), world.workspace()
    mine, theirs = world.member(a), world.member(b)
    page = signed_in(a.owner).get(f"/w/{a.slug}/members").get_data(as_text=True)
    assert mine.email in page and theirs.email not in page
    listed = signed_in(a.owner).get(f"/w/{a.slug}/api/v1/members").json["items"]
    assert {m["email"] for m in listed} == {a.owner.email, mine.email}
    assert signed_in(a.owner).get(f"/w/{b.slug}/api/v1/members").status_code == 404


def test_viewer_sees_members_but_no_invitations(world, signed_in):
    ws = world.workspace()
    viewer = world.member(ws, role="viewer")
    api_invite(signed_in(ws.owner), ws, "hidden@example.test")
    page = signed_in(viewer).get(f"/w/{ws.slug}/members").get_data(as_text=True)
    assert viewer.email in page and "hidden@example.test" not in page


def test_concurrent_transfers_over_http_leave_one_owner(world, signed_in):
    """Three tabs of the owner transfer to three heirs at the same instant."""
    import threading

    ws = world.workspace(plan="pro")
    heirs = [world.member(ws) for _ in range(3)]
    clients = [signed_in(ws.owner) for _ in heirs]
    barrier = threading.Barrier(len(heirs))
    statuses: list[int] = []

    def attempt(client, heir):
        barrier.wait()
        statuses.append(form(client, f"/w/{ws.slug}/members/transfer", user_id=str(heir.id),
                             confirm=ws.slug).status_code)

    threads = [threading.Thread(target=attempt, args=pair) for pair in zip(clients, heirs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [302, 403, 403], statuses
    owners = world.admin.execute(
        "select user_id from cajex.memberships where workspace_id = %s and role = 'owner'", (ws.id,)).fetchall()
    assert len(owners) == 1 and owners[0]["user_id"] in {h.id for h in heirs}


def test_the_invitation_email_is_sent_with_its_link(world, signed_in, mail_worker):  # noqa: F811
    ws = world.workspace()
    api_invite(signed_in(ws.owner), ws, "mailed@example.test", "viewer")
    assert "done" in " ".join(str(r) for r in mail_worker())
    sent = world.admin.execute(
        "select recipient, subject, text_body from cajex.email_deliveries where recipient = %s",
        ("mailed@example.test",)).fetchall()
    assert len(sent) == 1
    assert invite_link(world, "mailed@example.test") in sent[0]["text_body"]
    assert "viewer" in sent[0]["text_body"]


@pytest.mark.parametrize("email", ["a\u0000b@example.test", "a\ud800b@example.test"])
def test_bulk_refuses_text_postgresql_cannot_hold_and_invites_none(world, signed_in, email):
    """A NUL character or a lone surrogate in a row: a 400 with a stable
    code for the whole list, and no row of it is written."""
    ws = world.workspace(plan="enterprise")
    client = signed_in(ws.owner)
    rows = [{"email": "fine@example.test"}, {"email": email}]
    api = client.post(f"/w/{ws.slug}/api/v1/invitations/bulk", json={"rows": rows})
    assert api.status_code == 400 and api.json["error"]["code"] == "invalid_text"
    if "\u0000" in email:  # a browser's form cannot carry a lone surrogate
        pasted = client.post(f"/w/{ws.slug}/members/bulk",
                             data={"list": f"fine@example.test\n{email}\n", "csrf_token": "test-csrf-token"})
        assert pasted.status_code == 400
    assert invitations(world, ws) == []
