"""Sessions, CSRF, security headers and the workspace's allowed methods over HTTP.

Sign-ins here use real magic links (created through the same SQL function
the sign-in page calls, then used through the page), so every session is a
real one: made by cajex_private.create_session, checked by the context on
every request, revoked by cajex_private.revoke_sessions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import uuid

import psycopg
import pytest
from cajex.web.middleware import close_pools

from cajex import ROOT

JSON = {"Accept": "application/json"}


def magic_sign_in(world, client, email: str):
    """Sign `client` in through a magic link for `email`; the redirect response."""
    token = secrets.token_urlsafe(32)
    world.admin.execute(
        "select cajex_private.request_magic_link(%s, %s, 'http://cajex.test/x', %s, %s)",
        (
            email,
            hashlib.sha256(token.encode()).digest(),
            secrets.token_bytes(32),
            secrets.token_bytes(32),
        ),
    )
    with client.session_transaction() as sess:
        csrf = sess.setdefault("csrf", secrets.token_urlsafe(16))
    return client.post(f"/login/magic/{token}", data={"csrf_token": csrf})


def cookie_session(client) -> dict:
    with client.session_transaction() as sess:
        return dict(sess)


def csrf_of(client) -> str:
    """The browser's form token (a page it loads would make one the same way)."""
    with client.session_transaction() as sess:
        return sess.setdefault("csrf", secrets.token_urlsafe(16))


def live_sessions(world, user_id) -> int:
    return world.admin.execute(
        "select count(*) as n from cajex.sessions where user_id = %s and revoked_at is null",
        (user_id,),
    ).fetchone()["n"]


def signed_in(client) -> bool:
    """Whether the next request of this browser is a signed-in one."""
    response = client.get("/api/v1/me", headers=JSON)
    assert response.status_code in (200, 401), response.status_code
    return response.status_code == 200


# ---------------------------------------------------------------------------
# Sign-in rotates the session


def test_sign_in_rotates_the_session(world, app, client):
    user = world.user()
    with client.session_transaction() as sess:
        sess["sid"] = str(uuid.uuid4())  # planted before sign-in
        sess["sk"] = "planted-secret"
        sess["planted"] = "yes"
    before = cookie_session(client)
    assert magic_sign_in(world, client, user.email).status_code == 302
    after = cookie_session(client)
    assert after["sid"] != before["sid"] and after["sk"] != before["sk"]
    assert "planted" not in after
    assert signed_in(client)
    # The cookie as it was before sign-in opens nothing.
    stale = app.test_client()
    with stale.session_transaction() as sess:
        sess.update(before)
        sess["_user_id"] = str(user.id)
    assert not signed_in(stale)
    # Each sign-in is a new session.
    again = app.test_client()
    magic_sign_in(world, again, user.email)
    assert cookie_session(again)["sid"] != after["sid"]


def test_session_cookie_flags(world, client, settings):
    from cajex.web import create_app

    user = world.user()
    response = magic_sign_in(world, client, user.email)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    tls = create_app(
        dataclasses.replace(settings, public_url="https://cajex.test"),
        {"TESTING": True},
    )
    try:
        secure = magic_sign_in(world, tls.test_client(), user.email)
        assert "Secure" in secure.headers["Set-Cookie"]
    finally:
        close_pools(tls)


# ---------------------------------------------------------------------------
# Timeouts


def test_idle_timeout_signs_out(world, client):
    user = world.user()
    magic_sign_in(world, client, user.email)
    assert signed_in(client)
    world.admin.execute(
        "update cajex.sessions set idle_expires_at = now() - interval '1 second'"
        " where id = %s",
        (cookie_session(client)["sid"],),
    )
    assert not signed_in(client)
    page = client.get("/")
    assert page.status_code == 302 and "/login" in page.headers["Location"]


def test_absolute_timeout_signs_out_however_active(world, client):
    user = world.user()
    magic_sign_in(world, client, user.email)
    world.admin.execute(
        "update cajex.sessions set absolute_expires_at = now() - interval '1 second',"
        " idle_expires_at = now() + interval '1 hour' where id = %s",
        (cookie_session(client)["sid"],),
    )
    assert not signed_in(client)


def test_activity_slides_the_idle_window_but_not_past_the_absolute_limit(world, client):
    user = world.user()
    magic_sign_in(world, client, user.email)
    sid = cookie_session(client)["sid"]
    world.admin.execute(
        "update cajex.sessions set last_seen_at = now() - interval '2 minutes',"
        " idle_expires_at = now() + interval '5 minutes',"
        " absolute_expires_at = now() + interval '1 hour' where id = %s",
        (sid,),
    )
    assert signed_in(client)
    row = world.admin.execute(
        "select idle_expires_at > now() + interval '6 minutes' as slid,"
        " idle_expires_at <= absolute_expires_at as bounded from cajex.sessions where id = %s",
        (sid,),
    ).fetchone()
    assert row["slid"] and row["bounded"]


def test_activity_slides_the_session_without_rewriting_the_cookie(world, client):
    """The idle window slides from the session's own last activity, kept by
    the database: a client that never stores a new cookie stays signed in,
    and no request sends one."""
    user = world.user()
    magic_sign_in(world, client, user.email)
    sid = cookie_session(client)["sid"]
    world.admin.execute(
        "update cajex.sessions set last_seen_at = now() - interval '2 minutes',"
        " idle_expires_at = now() + interval '5 minutes' where id = %s",
        (sid,),
    )
    for _ in range(2):
        response = client.get("/api/v1/me", headers=JSON)
        assert response.status_code == 200
        assert not response.headers.getlist("Set-Cookie")
    row = world.admin.execute(
        "select last_seen_at > now() - interval '10 seconds' as seen,"
        " idle_expires_at > now() + interval '6 minutes' as slid"
        " from cajex.sessions where id = %s",
        (sid,),
    ).fetchone()
    assert row["seen"] and row["slid"]


def test_a_dead_session_is_not_revived_by_activity(world, client):
    user = world.user()
    magic_sign_in(world, client, user.email)
    sid = cookie_session(client)["sid"]
    world.admin.execute(
        "update cajex.sessions set last_seen_at = now() - interval '2 hours',"
        " idle_expires_at = now() - interval '1 minute' where id = %s",
        (sid,),
    )
    assert not signed_in(client)
    assert world.admin.execute(
        "select idle_expires_at < now() as dead from cajex.sessions where id = %s",
        (sid,),
    ).fetchone()["dead"]


def test_timeouts_are_configurable(world, settings):
    from cajex.web import create_app

    short = create_app(
        dataclasses.replace(
            settings, extra={"session_idle_minutes": 5, "session_max_hours": 2}
        ),
        {"TESTING": True},
    )
    try:
        client = short.test_client()
        user = world.user()
        magic_sign_in(world, client, user.email)
        row = world.admin.execute(
            "select idle_expires_at - created_at as idle,"
            " absolute_expires_at - created_at as absolute from cajex.sessions where id = %s",
            (cookie_session(client)["sid"],),
        ).fetchone()
        assert row["idle"].total_seconds() == 300
        assert row["absolute"].total_seconds() == 7200
    finally:
        close_pools(short)


# ---------------------------------------------------------------------------
# Ending sessions: the very next request is signed out


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(world, app, client):
    user = world.user()
    magic_sign_in(world, client, user.email)
    copy = app.test_client()
    with copy.session_transaction() as sess:
        sess.update(cookie_session(client))
    assert signed_in(copy)
    assert (
        client.post("/logout", data={"csrf_token": csrf_of(client)}).status_code == 302
    )
    assert not signed_in(client) and not signed_in(copy)


def test_sign_out_everywhere(world, app):
    user = world.user()
    laptop, phone = app.test_client(), app.test_client()
    magic_sign_in(world, laptop, user.email)
    magic_sign_in(world, phone, user.email)
    bystander = world.user()
    other = app.test_client()
    magic_sign_in(world, other, bystander.email)
    assert live_sessions(world, user.id) == 3  # with the factory's own session
    ended = laptop.post(
        "/account/sessions/end-all", data={"csrf_token": csrf_of(laptop)}
    )
    assert ended.status_code == 302
    assert not signed_in(phone) and not signed_in(laptop)
    assert live_sessions(world, user.id) == 0
    # Another user's sessions are untouched.
    assert signed_in(other)


def test_revocation_takes_effect_on_the_very_next_request(world, app):
    ws = world.workspace()
    browser = app.test_client()
    magic_sign_in(world, browser, ws.owner.email)
    assert browser.get(f"/w/{ws.slug}/api/v1/projects").status_code == 200
    world.admin.execute(
        "select cajex_private.revoke_sessions(%s, 'test')", (ws.owner.id,)
    )
    response = browser.get(f"/w/{ws.slug}/api/v1/projects")
    assert response.status_code == 401


def test_sessions_page_lists_and_ends_my_sessions_only(world, app):
    user, stranger = world.user(), world.user()
    mine, second = app.test_client(), app.test_client()
    magic_sign_in(world, mine, user.email)
    magic_sign_in(world, second, user.email)
    theirs = app.test_client()
    magic_sign_in(world, theirs, stranger.email)
    second_sid = cookie_session(second)["sid"]
    their_sid = cookie_session(theirs)["sid"]
    page = mine.get("/account/sessions").get_data(as_text=True)
    assert second_sid in page and their_sid not in page
    # Ending someone else's session is refused and leaves it alive.
    denied = mine.post(
        f"/account/sessions/{their_sid}/end",
        data={"csrf_token": csrf_of(mine)},
        headers=JSON,
    )
    assert (
        denied.status_code == 404 and denied.get_json()["error"]["code"] == "not_found"
    )
    assert signed_in(theirs)
    # Ending my other session signs that browser out at once; this one stays.
    ended = mine.post(
        f"/account/sessions/{second_sid}/end", data={"csrf_token": csrf_of(mine)}
    )
    assert ended.status_code == 302
    assert not signed_in(second) and signed_in(mine)
    bad = mine.post(
        "/account/sessions/not-a-uuid/end",
        data={"csrf_token": csrf_of(mine)},
        headers=JSON,
    )
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_id"


# ---------------------------------------------------------------------------
# The last used workspace


def test_last_used_workspace_opens_by_default_even_after_signing_in_again(world, app):
    user = world.user()
    a, b = world.workspace(owner=user), world.workspace(owner=user)
    browser = app.test_client()
    magic_sign_in(world, browser, user.email)
    assert browser.get("/").status_code == 200  # two workspaces: the chooser
    assert browser.get(f"/w/{b.slug}/projects").status_code == 200
    assert browser.get("/").headers["Location"].endswith(f"/w/{b.slug}/projects")
    browser.get(f"/w/{a.slug}/projects")
    assert browser.get("/").headers["Location"].endswith(f"/w/{a.slug}/projects")
    browser.post("/logout", data={"csrf_token": csrf_of(browser)})
    magic_sign_in(world, browser, user.email)
    assert browser.get("/").headers["Location"].endswith(f"/w/{a.slug}/projects")


def test_last_used_workspace_follows_the_account_to_a_new_browser(world, app):
    user, other = world.user(), world.user()
    a = world.workspace(owner=user)
    b = world.workspace()
    world.member(b, user)
    world.workspace(owner=other)
    world.workspace(owner=other)
    laptop = app.test_client()
    magic_sign_in(world, laptop, user.email)
    assert laptop.get(f"/w/{b.slug}/projects").status_code == 200
    phone = app.test_client()
    magic_sign_in(world, phone, user.email)
    assert phone.get("/").headers["Location"].endswith(f"/w/{b.slug}/projects")
    # Another account's choice is its own: its new browser gets its chooser.
    stranger = app.test_client()
    magic_sign_in(world, stranger, other.email)
    assert stranger.get("/").status_code == 200
    # Once the user is no longer in b, a new browser does not open it.
    world.admin.execute(
        "update cajex.memberships set status = 'deactivated' where workspace_id = %s"
        " and user_id = %s",
        (b.id, user.id),
    )
    tablet = app.test_client()
    magic_sign_in(world, tablet, user.email)
    home = tablet.get("/")
    assert home.status_code == 302 and home.headers["Location"].endswith(
        f"/w/{a.slug}/projects"
    )  # the one workspace left


def test_last_used_workspace_of_someone_else_is_not_opened(world, app):
    """A remembered slug of a workspace the user is not in opens nothing."""
    owner = world.user()
    world.workspace(owner=owner)
    world.workspace(owner=owner)
    foreign = world.workspace()
    browser = app.test_client()
    magic_sign_in(world, browser, owner.email)
    with browser.session_transaction() as sess:
        sess["last_workspace"] = foreign.slug
    home = browser.get("/")
    assert home.status_code == 200 and foreign.slug not in home.get_data(as_text=True)


# ---------------------------------------------------------------------------
# CSRF on every state-changing form, security headers on every response

#: Endpoints other servers post to: no browser session, no form token.
CSRF_EXEMPT = {
    "signin.callback_post",  # Apple's cross-site form_post, turned into a GET
}


def _fill(rule, slug: str) -> str:
    values = {"slug": slug, "provider": "google", "workspace": slug}
    path = rule.rule
    for arg in rule.arguments:
        path = path.replace(f"<{arg}>", values.get(arg, str(uuid.uuid4())))
    return re.sub(
        r"<[^>]+:([^>]+)>", lambda m: values.get(m.group(1), str(uuid.uuid4())), path
    )


def test_every_form_post_needs_the_csrf_token(world, app):
    ws = world.workspace()
    browser = app.test_client()
    magic_sign_in(world, browser, ws.owner.email)
    checked, exempt = [], set()
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        if getattr(view, "csrf_exempt", False):
            exempt.add(rule.endpoint)
            continue
        response = browser.post(_fill(rule, ws.slug), data={"x": "1"}, headers=JSON)
        assert response.status_code == 400, (rule.rule, response.status_code)
        assert response.get_json()["error"]["code"] == "csrf_failed", rule.rule
        checked.append(rule.rule)
    assert "/logout" in checked and "/account/sessions/end-all" in checked
    assert "/login/email" in checked and "/login/link" in checked
    # Exemptions are only for other servers' posts (webhooks, SAML, SCIM).
    assert CSRF_EXEMPT <= exempt
    for endpoint in exempt - CSRF_EXEMPT:
        assert endpoint.split(".")[0] in {"sso", "scim", "billing"}, endpoint
    # And nothing was changed by the refused posts.
    assert live_sessions(world, ws.owner.id) == 2


def test_csrf_token_from_another_session_is_refused(world, app):
    a, b = app.test_client(), app.test_client()
    magic_sign_in(world, a, world.user().email)
    magic_sign_in(world, b, world.user().email)
    refused = a.post(
        "/account/sessions/end-all", data={"csrf_token": csrf_of(b)}, headers=JSON
    )
    assert (
        refused.status_code == 400
        and refused.get_json()["error"]["code"] == "csrf_failed"
    )
    assert signed_in(a)


def _check_headers(response, path):
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, path
    script = re.search(r"script-src ([^;]+)", csp).group(1)
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, path
    assert response.headers.get("X-Content-Type-Options") == "nosniff", path
    assert response.headers.get("Referrer-Policy"), path


def test_security_headers_on_every_response(world, app, client):
    ws = world.workspace()
    browser = app.test_client()
    magic_sign_in(world, browser, ws.owner.email)
    seen = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        path = _fill(rule, ws.slug)
        for c in (client, browser):
            _check_headers(c.get(path), path)
            seen += 1
    # Errors too: unknown pages, bad methods, refused forms.
    _check_headers(client.get("/no/such/page"), "404")
    _check_headers(client.post("/login/email", data={}), "csrf")
    _check_headers(client.delete("/login"), "405")
    assert seen > 20


def test_templates_hold_no_inline_script():
    """The CSP forbids inline script; no template may rely on one."""
    for path in (ROOT / "web" / "templates").rglob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", text), path
        assert not re.search(r"\son[a-z]+\s*=\s*[\"']", text), path
        assert "javascript:" not in text, path


# ---------------------------------------------------------------------------
# The workspace's allowed standard methods


def test_workspace_login_page_shows_only_the_chosen_methods(world, app, settings):
    from cajex.web import create_app

    a, b = world.workspace(), world.workspace()
    with world.as_user(a.owner, a) as (conn, _):
        conn.execute("select cajex.set_signin_methods(array['github'])")
    extra = {"google": {"client_id": "g"}, "github": {"client_id": "h"}}
    configured = create_app(
        dataclasses.replace(settings, extra=extra), {"TESTING": True}
    )
    try:
        c = configured.test_client()
        page = c.get(f"/w/{a.slug}/login").get_data(as_text=True)
        assert "Continue with GitHub" in page
        assert (
            "Continue with Google" not in page and "Email me a sign-in link" not in page
        )
        # Another workspace is not affected by a's choice.
        other = c.get(f"/w/{b.slug}/login").get_data(as_text=True)
        assert "Continue with Google" in other and "Email me a sign-in link" in other
        # Starting a refused method for that workspace is a clear 403.
        refused = c.get(f"/login/google?workspace={a.slug}", headers=JSON)
        assert refused.status_code == 403
        assert refused.get_json()["error"]["code"] == "method_not_allowed"
        refused = c.post(
            "/login/email",
            data={
                "email": "x@example.com",
                "workspace": a.slug,
                "csrf_token": csrf_of(c),
            },
            headers=JSON,
        )
        assert refused.status_code == 403
        assert (
            world.admin.execute(
                "select count(*) as n from cajex.magic_links"
            ).fetchone()["n"]
            == 0
        )
        # An unknown workspace shows every method (its existence is not revealed).
        assert "Email me a sign-in link" in c.get("/w/no-such-ws/login").get_data(
            as_text=True
        )
    finally:
        close_pools(configured)


def test_a_session_of_a_left_out_method_does_not_open_the_workspace(world, app):
    ws = world.workspace()
    member = world.member(ws)
    browser = app.test_client()
    magic_sign_in(world, browser, member.email)
    assert browser.get(f"/w/{ws.slug}/api/v1/projects").status_code == 200
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.set_signin_methods(array['google', 'github'])")
    # The very next request: the workspace does not open, and says why.
    refused = browser.get(f"/w/{ws.slug}/api/v1/projects")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "signin_method_not_allowed"
    page = browser.get(f"/w/{ws.slug}/projects")
    assert page.status_code == 302
    assert f"/w/{ws.slug}/login" in page.headers["Location"]
    assert "This workspace asks you" in browser.get(page.headers["Location"]).get_data(
        as_text=True
    )
    # Someone who is not a member learns nothing: the same 404 as for no workspace.
    outsider = app.test_client()
    magic_sign_in(world, outsider, world.user().email)
    assert outsider.get(f"/w/{ws.slug}/api/v1/projects").status_code == 404
    # The owner's factory session (not a standard method) is not affected.
    with world.as_user(ws.owner, ws) as (conn, opened):
        assert opened.workspace_id == ws.id
    # Choosing email links again lets the member back in.
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.set_signin_methods(array['magic_link'])")
    assert browser.get(f"/w/{ws.slug}/api/v1/projects").status_code == 200


def test_settings_page_chooses_methods_and_keeps_the_admins_own(world, app):
    ws, other = world.workspace(), world.workspace()
    browser = app.test_client()
    magic_sign_in(world, browser, ws.owner.email)
    page = browser.get(f"/w/{ws.slug}/settings/signin")
    assert page.status_code == 200 and "Sign-in methods" in page.get_data(as_text=True)
    token = {"csrf_token": csrf_of(browser)}
    saved = browser.post(
        f"/w/{ws.slug}/settings/signin",
        data={**token, "methods": ["magic_link", "github"]},
    )
    assert saved.status_code == 302
    assert browser.get(f"/w/{ws.slug}/api/v1/signin-methods").get_json() == {
        "methods": ["github", "magic_link"]
    }
    # Leaving out the method the admin signed in with would lock them out.
    refused = browser.put(
        f"/w/{ws.slug}/api/v1/signin-methods", json={"methods": ["google"]}
    )
    assert (
        refused.status_code == 422 and refused.get_json()["error"]["code"] == "invalid"
    )
    bad = browser.put(
        f"/w/{ws.slug}/api/v1/signin-methods", json={"methods": ["password"]}
    )
    assert bad.status_code == 422
    empty = browser.put(f"/w/{ws.slug}/api/v1/signin-methods", json={"methods": []})
    assert empty.status_code == 422
    audit = world.admin.execute(
        "select count(*) as n from cajex.audit_log where workspace_id = %s"
        " and action = 'signin.methods_changed'",
        (ws.id,),
    ).fetchone()["n"]
    assert audit == 1
    # Another workspace's owner can neither read nor change it.
    stranger = app.test_client()
    magic_sign_in(world, stranger, other.owner.email)
    assert stranger.get(f"/w/{ws.slug}/api/v1/signin-methods").status_code == 404
    assert (
        stranger.put(
            f"/w/{ws.slug}/api/v1/signin-methods", json={"methods": ["magic_link"]}
        ).status_code
        == 404
    )
    assert browser.get(f"/w/{ws.slug}/api/v1/signin-methods").get_json()["methods"] == [
        "github",
        "magic_link",
    ]


def test_a_plain_member_cannot_choose_methods(world, app):
    ws = world.workspace()
    member = world.member(ws)
    browser = app.test_client()
    magic_sign_in(world, browser, member.email)
    refused = browser.put(
        f"/w/{ws.slug}/api/v1/signin-methods", json={"methods": ["github"]}
    )
    assert (
        refused.status_code == 403
        and refused.get_json()["error"]["code"] == "forbidden"
    )
    with pytest.raises(psycopg.Error) as caught, world.as_user(member, ws) as (conn, _):
        conn.execute("select cajex.set_signin_methods(array['github'])")
    assert caught.value.sqlstate == "CXFBD"


def test_magic_link_lifetime_comes_from_the_environment(world, client, monkeypatch):
    monkeypatch.setenv("CAJEX_MAGIC_LINK_TTL_MINUTES", "5")
    response = client.post(
        "/login/email", data={"email": "ttl@example.com", "csrf_token": csrf_of(client)}
    )
    assert response.status_code == 200 and "5 minutes" in response.get_data(
        as_text=True
    )
    row = world.admin.execute(
        "select expires_at - created_at as ttl from cajex.magic_links"
    ).fetchone()
    assert row["ttl"].total_seconds() == 300
