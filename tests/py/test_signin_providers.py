"""Google, Apple and GitHub sign-in end to end, through the browser's redirects.

The providers are real HTTP servers on loopback (cajex.identity.fakeidp); the
browser is the Flask test client plus httpx for the provider's side. Every
hostile case names the code it must answer with and proves that nothing was
written: no user, no identity, no session.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse

import pytest
from cajex.web.middleware import close_pools

from cajex.identity import oidc
from cajex.testing import signin as flow


@pytest.fixture(scope="module")
def _providers():
    started = flow.start_providers()
    yield started
    for idp in started.all():
        idp.stop()


@pytest.fixture
def idps(_providers):
    _providers.reset()
    yield _providers
    oidc.clear_caches()


@pytest.fixture
def papp(settings, idps):
    """The app with the three loopback providers configured."""
    from cajex.web import create_app

    application = create_app(
        dataclasses.replace(settings, extra=flow.provider_settings(idps)),
        {"TESTING": True},
    )
    yield application
    close_pools(application)


@pytest.fixture
def browser(papp):
    return papp.test_client()


def counts(world) -> dict:
    row = world.admin.execute(
        "select (select count(*) from cajex.users) as users,"
        " (select count(*) from cajex.user_identities) as identities,"
        " (select count(*) from cajex.sessions where auth_method <> 'test') as sessions"
    ).fetchone()
    return dict(row)


def identities_of(world, user_id) -> list[dict]:
    return world.admin.execute(
        "select provider, issuer, subject, email from cajex.user_identities"
        " where user_id = %s order by created_at",
        (user_id,),
    ).fetchall()


def user_by_email(world, email):
    return world.admin.execute(
        "select id, display_name from cajex.users where email = %s", (email,)
    ).fetchone()


def code_of(response) -> str:
    return response.get_json()["error"]["code"]


# ---------------------------------------------------------------------------
# Google: OpenID Connect with PKCE, state and nonce


def test_google_signs_up_a_new_user(world, browser, idps):
    idps.google.next_user = {
        "sub": "g-100",
        "email": "Grace@Example.com",
        "email_verified": True,
        "name": "Grace Hopper",
    }
    begun = flow.start(browser, "google")
    assert begun.status_code == 302
    query = dict(
        urllib.parse.parse_qsl(urllib.parse.urlsplit(begun.headers["Location"]).query)
    )
    assert (
        query["code_challenge_method"] == "S256" and query["state"] and query["nonce"]
    )
    assert query["redirect_uri"] == "http://cajex.test/login/google/callback"
    path, params = flow.authorize(begun.headers["Location"])
    done = flow.callback(browser, path, params)
    assert done.status_code == 302, done.get_data(as_text=True)
    user = user_by_email(world, "grace@example.com")
    assert user["display_name"] == "Grace Hopper"
    assert flow.signed_in_user(browser) == str(user["id"])
    [identity] = identities_of(world, user["id"])
    assert (identity["provider"], identity["issuer"], identity["subject"]) == (
        "google",
        idps.google.issuer,
        "g-100",
    )
    # The token endpoint got the PKCE verifier and our client's secret.
    assert idps.google.token_requests[-1]["code_verifier"]
    assert idps.google.token_requests[-1]["client_secret"] == idps.google.client_secret


def test_google_identity_is_keyed_by_subject_not_email(world, browser, papp, idps):
    idps.google.next_user = {
        "sub": "g-7",
        "email": "first@example.com",
        "email_verified": True,
    }
    flow.sign_in_with(browser, "google")
    first = flow.signed_in_user(browser)
    # The same Google account now reports another address: still the same user.
    idps.google.next_user = {
        "sub": "g-7",
        "email": "changed@example.com",
        "email_verified": True,
    }
    other = papp.test_client()
    assert flow.sign_in_with(other, "google").status_code == 302
    assert flow.signed_in_user(other) == first
    assert user_by_email(world, "changed@example.com") is None


def test_wrong_state_is_refused(world, browser, idps):
    before = counts(world)
    begun = flow.start(browser, "google")
    path, params = flow.authorize(begun.headers["Location"])
    good = params["state"]
    params["state"] = good[:-2] + ("xx" if good[-2:] != "xx" else "yy")
    refused = flow.callback(browser, path, params)
    assert refused.status_code == 400 and code_of(refused) == "oidc_state_mismatch"
    assert idps.google.token_requests == []
    assert counts(world) == before and flow.signed_in_user(browser) is None


def test_replayed_callback_is_refused(world, browser, papp, idps):
    begun = flow.start(browser, "google")
    path, params = flow.authorize(begun.headers["Location"])
    assert flow.callback(browser, path, params).status_code == 302
    after_first = counts(world)
    # The same callback again, in the same browser and in another one.
    again = flow.callback(browser, path, params)
    assert again.status_code == 400 and code_of(again) == "oidc_state_mismatch"
    elsewhere = flow.callback(papp.test_client(), path, params)
    assert elsewhere.status_code == 400 and code_of(elsewhere) == "oidc_state_mismatch"
    assert counts(world) == after_first


def test_callback_from_another_browser_is_refused(world, browser, papp, idps):
    """Login CSRF: an attacker's own callback planted in a victim's browser."""
    begun = flow.start(browser, "google")
    path, params = flow.authorize(begun.headers["Location"])
    victim = papp.test_client()
    flow.start(victim, "google")  # the victim has a sign-in of their own pending
    refused = flow.callback(victim, path, params)
    assert refused.status_code == 400 and code_of(refused) == "oidc_state_mismatch"
    assert flow.signed_in_user(victim) is None


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda h, c: (h, {**c, "nonce": "not-ours"}, "key"), "oidc_nonce_mismatch"),
        (
            lambda h, c: (h, {**c, "iss": "http://127.0.0.1:1/evil"}, "key"),
            "oidc_issuer_mismatch",
        ),
        (
            lambda h, c: (h, {**c, "aud": "someone-else"}, "key"),
            "oidc_audience_mismatch",
        ),
        (
            lambda h, c: (
                h,
                {**c, "exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000},
                "key",
            ),
            "oidc_token_expired",
        ),
        (
            lambda h, c: (h, {**c, "iat": int(time.time()) + 3600}, "key"),
            "oidc_iat_in_future",
        ),
        (lambda h, c: ({**h, "alg": "none"}, c, "none"), "oidc_alg_rejected"),
        (lambda h, c: ({**h, "alg": "HS256"}, c, "hs256_public"), "oidc_alg_rejected"),
        (lambda h, c: (h, {**c, "sub": "someone-else"}, "none"), "oidc_bad_signature"),
    ],
    ids=[
        "nonce",
        "iss",
        "aud",
        "expired",
        "iat-future",
        "alg-none",
        "hs256-public-key",
        "bad-signature",
    ],
)
def test_hostile_id_token_is_refused_and_writes_nothing(
    world, browser, idps, tamper, code
):
    before = counts(world)
    idps.google.tamper = tamper
    refused = flow.sign_in_with(browser, "google")
    assert refused.status_code == 400, refused.get_data(as_text=True)
    assert code_of(refused) == code
    assert counts(world) == before and flow.signed_in_user(browser) is None


def test_clock_skew_is_configurable(world, settings, idps):
    """A token issued a little in the future passes within the configured skew only."""
    from cajex.web import create_app

    skewed = flow.provider_settings(idps, google={"clock_skew": 5})
    application = create_app(
        dataclasses.replace(settings, extra=skewed), {"TESTING": True}
    )
    try:
        idps.google.tamper = lambda h, c: (
            h,
            {**c, "iat": int(time.time()) + 30},
            "key",
        )
        refused = flow.sign_in_with(application.test_client(), "google")
        assert refused.status_code == 400 and code_of(refused) == "oidc_iat_in_future"
    finally:
        close_pools(application)
    oidc.clear_caches()
    lenient = flow.provider_settings(idps, google={"clock_skew": 120})
    application = create_app(
        dataclasses.replace(settings, extra=lenient), {"TESTING": True}
    )
    try:
        assert flow.sign_in_with(application.test_client(), "google").status_code == 302
    finally:
        close_pools(application)


def test_rotated_key_is_refetched_once_and_rate_limited(world, browser, papp, idps):
    assert flow.sign_in_with(browser, "google").status_code == 302
    fetched = idps.google.jwks_requests
    idps.google.rotate()
    # Within the refresh window (300 s here), an unknown kid does not refetch.
    hurried = flow.sign_in_with(papp.test_client(), "google")
    assert hurried.status_code == 400 and code_of(hurried) == "oidc_unknown_key"
    assert idps.google.jwks_requests == fetched
    # Once the window has passed (the cached key set's clock moved past it,
    # rather than a test that sleeps five minutes), it refetches once.
    keys = oidc._KEYSETS[idps.google.issuer + "/jwks"]
    keys._clock = lambda: time.monotonic() + 301
    assert flow.sign_in_with(papp.test_client(), "google").status_code == 302
    assert idps.google.jwks_requests == fetched + 1
    # Forged kids right after that fetch cost the provider nothing.
    idps.google.tamper = lambda h, c: ({**h, "kid": "forged"}, c, "key")
    for _ in range(3):
        forged = flow.sign_in_with(papp.test_client(), "google")
        assert forged.status_code == 400 and code_of(forged) == "oidc_unknown_key"
    assert idps.google.jwks_requests == fetched + 1


# ---------------------------------------------------------------------------
# Linking accounts: only a verified address, only with the user's confirmation


def test_unverified_email_never_reaches_an_existing_account(world, browser, idps):
    victim = world.user("victim@example.com")
    before = counts(world)
    idps.google.next_user = {
        "sub": "attacker",
        "email": victim.email,
        "email_verified": False,
    }
    refused = flow.sign_in_with(browser, "google")
    assert refused.status_code == 403 and code_of(refused) == "forbidden"
    assert counts(world) == before and identities_of(world, victim.id) == []
    assert flow.signed_in_user(browser) is None
    # Apple's string form of the flag is treated the same way.
    idps.apple.check_client_secret = flow.apple_secret_checker(idps)
    idps.apple.next_user = {
        "sub": "a-attacker",
        "email": victim.email,
        "email_verified": "false",
    }
    refused = flow.sign_in_with(browser, "apple")
    assert refused.status_code == 403 and code_of(refused) == "forbidden"
    assert counts(world) == before


def test_unverified_email_cannot_sign_up(world, browser, idps):
    before = counts(world)
    idps.google.next_user = {
        "sub": "g-new",
        "email": "new@example.com",
        "email_verified": False,
    }
    refused = flow.sign_in_with(browser, "google")
    assert refused.status_code == 422 and code_of(refused) == "invalid"
    assert counts(world) == before


def test_verified_email_links_only_after_confirmation(world, browser, papp, idps):
    existing = world.user("linda@example.com")
    idps.google.next_user = {
        "sub": "g-linda",
        "email": existing.email,
        "email_verified": True,
    }
    before = counts(world)
    asked = flow.sign_in_with(browser, "google")
    assert asked.status_code == 302 and asked.headers["Location"].endswith(
        "/login/link"
    )
    page = browser.get("/login/link").get_data(as_text=True)
    assert "Link Google to your account?" in page and existing.email in page
    # Declining writes nothing and signs nobody in.
    declined = browser.post(
        "/login/link", data={"decision": "cancel", "csrf_token": _csrf(browser)}
    )
    assert declined.status_code == 302 and counts(world) == before
    assert flow.signed_in_user(browser) is None
    assert (
        browser.get("/login/link", headers={"Accept": "application/json"}).status_code
        == 400
    )

    other = papp.test_client()
    flow.sign_in_with(other, "google")
    # Without the form's CSRF token the confirmation is refused.
    forged = other.post(
        "/login/link", data={"decision": "link"}, headers={"Accept": "application/json"}
    )
    assert forged.status_code == 400 and code_of(forged) == "csrf_failed"
    assert identities_of(world, existing.id) == []
    linked = other.post(
        "/login/link", data={"decision": "link", "csrf_token": _csrf(other)}
    )
    assert linked.status_code == 302
    assert flow.signed_in_user(other) == str(existing.id)
    assert [i["subject"] for i in identities_of(world, existing.id)] == ["g-linda"]


def _csrf(client) -> str:
    with client.session_transaction() as sess:
        return sess.setdefault("csrf", "c" * 32)


def test_signed_in_user_links_a_provider_from_the_linked_page(
    world, papp, signed_in, idps
):
    user = world.user("mia@example.com")
    client = papp.test_client()
    world.login(client, user)
    page = client.get("/account/linked").get_data(as_text=True)
    assert "Link GitHub" in page and "Link Apple" in page
    idps.github.github_user = {"id": 9001, "login": "mia"}
    idps.github.github_emails = [
        {"email": "mia@work.example", "primary": True, "verified": True}
    ]
    done = flow.link_with(client, "github")
    assert done.status_code == 302 and done.headers["Location"].endswith(
        "/account/linked"
    )
    assert [(i["provider"], i["subject"]) for i in identities_of(world, user.id)] == [
        ("github", "9001")
    ]
    # The same GitHub account cannot then be linked to someone else.
    someone = world.user()
    other = papp.test_client()
    world.login(other, someone)
    taken = flow.link_with(other, "github")
    assert taken.status_code == 409 and code_of(taken) == "duplicate"
    assert identities_of(world, someone.id) == []


def test_linking_needs_a_form_post_and_a_verified_address(world, papp, idps):
    user = world.user("oscar@example.com")
    client = papp.test_client()
    world.login(client, user)
    before = counts(world)
    # No other site can start a linking flow: it is a POST with the form token.
    forged = client.post("/login/google/link", headers={"Accept": "application/json"})
    assert forged.status_code == 400 and code_of(forged) == "csrf_failed"
    # A link in a GET is a plain sign-in, never a link to the signed-in account.
    idps.google.next_user = {
        "sub": "g-elsewhere",
        "email": "elsewhere@example.com",
        "email_verified": True,
    }
    assert flow.sign_in_with(client, "google", link=1).status_code == 302
    assert identities_of(world, user.id) == []
    # Linking while signed in still needs an address the provider verified.
    world.login(client, user)
    idps.google.next_user = {
        "sub": "g-unverified",
        "email": "oscar@example.com",
        "email_verified": False,
    }
    refused = flow.link_with(client, "google")
    assert refused.status_code == 403 and code_of(refused) == "forbidden"
    assert identities_of(world, user.id) == []
    assert counts(world)["identities"] == before["identities"] + 1  # g-elsewhere only
    # Signed out, there is nothing to link to.
    anonymous = papp.test_client()
    with anonymous.session_transaction() as sess:
        sess["csrf"] = "x" * 32
    response = anonymous.post(
        "/login/google/link",
        data={"csrf_token": "x" * 32},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 401


def test_linked_methods_are_listed_and_removed_but_never_the_last(world, papp, idps):
    user = world.user("nora@example.com")
    client = papp.test_client()
    world.login(client, user)
    idps.google.next_user = {
        "sub": "g-nora",
        "email": user.email,
        "email_verified": True,
    }
    flow.link_with(client, "google")
    flow.link_with(client, "github")
    world.login(client, user)
    rows = world.admin.execute(
        "select id, provider from cajex.user_identities where user_id = %s order by provider",
        (user.id,),
    ).fetchall()
    assert [r["provider"] for r in rows] == ["github", "google"]
    page = client.get("/account/linked").get_data(as_text=True)
    assert "Google" in page and "GitHub" in page
    headers = {"X-CSRF-Token": "test-csrf-token", "Accept": "application/json"}
    assert (
        client.post(
            f"/account/linked/{rows[0]['id']}/remove", headers=headers
        ).status_code
        == 302
    )
    last = client.post(f"/account/linked/{rows[1]['id']}/remove", headers=headers)
    assert last.status_code == 409 and code_of(last) == "last_sign_in_method"
    assert len(identities_of(world, user.id)) == 1
    # Another user cannot remove it (nor learn that it exists).
    stranger = world.user()
    other = papp.test_client()
    world.login(other, stranger)
    denied = other.post(f"/account/linked/{rows[1]['id']}/remove", headers=headers)
    assert denied.status_code == 404 and code_of(denied) == "not_found"
    assert len(identities_of(world, user.id)) == 1
    # Nor see it listed.
    assert (
        "Google"
        not in other.get("/account/linked")
        .get_data(as_text=True)
        .split("<tbody>")[1]
        .split("</tbody>")[0]
    )


# ---------------------------------------------------------------------------
# Apple: form_post, an ES256 client secret, the name only on first consent


def test_apple_form_post_with_es256_secret_and_first_consent_name(
    world, browser, papp, idps
):
    secrets_seen: list[str] = []
    idps.apple.check_client_secret = flow.apple_secret_checker(idps, secrets_seen)
    relay = "x7k2p9q4@privaterelay.appleid.com"
    idps.apple.next_user = {
        "sub": "001234.apple",
        "email": relay,
        "email_verified": "true",
        "is_private_email": "true",
    }
    idps.apple.form_extra = {
        "user": json.dumps(
            {"name": {"firstName": "Ada", "lastName": "Lovelace"}, "email": relay}
        )
    }
    begun = flow.start(browser, "apple")
    query = dict(
        urllib.parse.parse_qsl(urllib.parse.urlsplit(begun.headers["Location"]).query)
    )
    assert query["response_mode"] == "form_post"
    path, params = flow.authorize(begun.headers["Location"])
    assert params.pop("__post__") == "1"
    # Apple's POST arrives cross-site: no CSRF token, handed to a same-site GET.
    posted = browser.post(path, data=params)
    assert posted.status_code == 303
    done = browser.get(posted.headers["Location"])
    assert done.status_code == 302, done.get_data(as_text=True)
    user = user_by_email(world, relay)
    assert user["display_name"] == "Ada Lovelace"
    assert flow.signed_in_user(browser) == str(user["id"])
    assert len(secrets_seen) == 1 and secrets_seen[0].count(".") == 2

    # Later sign-ins carry no name (Apple sends it once): the name stays.
    idps.apple.form_extra = {}
    again = papp.test_client()
    assert flow.sign_in_with(again, "apple").status_code == 302
    assert flow.signed_in_user(again) == str(user["id"])
    assert user_by_email(world, relay)["display_name"] == "Ada Lovelace"


def test_apple_private_relay_address_makes_its_own_account(world, browser, idps):
    """A relay address matches nobody: a new account, never someone else's."""
    existing = world.user("ada@example.com")
    idps.apple.check_client_secret = flow.apple_secret_checker(idps)
    idps.apple.next_user = {
        "sub": "002.apple",
        "email": "abc@privaterelay.appleid.com",
        "email_verified": True,
        "is_private_email": True,
    }
    assert flow.sign_in_with(browser, "apple").status_code == 302
    assert flow.signed_in_user(browser) != str(existing.id)
    assert identities_of(world, existing.id) == []


def test_apple_refuses_a_client_secret_not_signed_by_the_team(world, settings, idps):
    from cajex.web import create_app

    from cajex.identity.fakeidp import SigningKey

    impostor = SigningKey(idps.apple_team_key.kid, "EC")
    extra = flow.provider_settings(idps, apple={"private_key": impostor.private_pem()})
    application = create_app(
        dataclasses.replace(settings, extra=extra), {"TESTING": True}
    )
    try:
        before = counts(world)
        idps.apple.check_client_secret = flow.apple_secret_checker(idps)
        refused = flow.sign_in_with(application.test_client(), "apple")
        assert (
            refused.status_code == 502
            and code_of(refused) == "oidc_token_exchange_failed"
        )
        assert counts(world) == before
    finally:
        close_pools(application)


def test_apple_malformed_user_field_is_ignored(world, browser, idps):
    idps.apple.check_client_secret = flow.apple_secret_checker(idps)
    idps.apple.next_user = {
        "sub": "003.apple",
        "email": "odd@example.com",
        "email_verified": True,
    }
    idps.apple.form_extra = {"user": "{not json"}
    assert flow.sign_in_with(browser, "apple").status_code == 302
    assert user_by_email(world, "odd@example.com")["display_name"] is None


def test_form_post_with_an_oversize_field_is_refused(world, browser, idps):
    before = counts(world)
    flow.start(browser, "apple")
    refused = browser.post(
        "/login/apple/callback",
        data={"state": "s", "code": "c" * 5000},
        headers={"Accept": "application/json"},
    )
    assert refused.status_code == 400 and code_of(refused) == "oidc_oversize"
    assert counts(world) == before


# ---------------------------------------------------------------------------
# GitHub: OAuth 2 and the verified primary address from /user/emails


def test_github_signs_in_with_the_verified_primary_email(world, browser, idps):
    idps.github.github_user = {"id": 31337, "login": "octo", "name": "Octo Cat"}
    idps.github.github_emails = [
        {"email": "old@example.com", "primary": False, "verified": True},
        {"email": "octo@example.com", "primary": True, "verified": True},
    ]
    begun = flow.start(browser, "github")
    target = begun.headers["Location"]
    assert target.startswith(idps.github.url + "/login/oauth/authorize?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
    assert query["scope"] == "read:user user:email" and query["state"]
    path, params = flow.authorize(target)
    assert flow.callback(browser, path, params).status_code == 302
    user = user_by_email(world, "octo@example.com")
    assert (
        flow.signed_in_user(browser) == str(user["id"])
        and user["display_name"] == "Octo Cat"
    )
    [identity] = identities_of(world, user["id"])
    assert (identity["provider"], identity["issuer"], identity["subject"]) == (
        "github",
        idps.github.url,
        "31337",
    )


def test_github_without_a_verified_primary_email_is_refused(world, browser, idps):
    victim = world.user("target@example.com")
    before = counts(world)
    idps.github.github_emails = [
        {"email": victim.email, "primary": True, "verified": False},
        {"email": "other@example.com", "primary": False, "verified": True},
    ]
    refused = flow.sign_in_with(browser, "github")
    assert refused.status_code == 400 and code_of(refused) == "github_no_verified_email"
    assert counts(world) == before and identities_of(world, victim.id) == []


def test_github_wrong_state_never_reaches_github(world, browser, idps):
    begun = flow.start(browser, "github")
    path, params = flow.authorize(begun.headers["Location"])
    codes_before = dict(idps.github.codes)
    params["state"] = "forged"
    refused = flow.callback(browser, path, params)
    assert refused.status_code == 400 and code_of(refused) == "oidc_state_mismatch"
    # The code was not spent at GitHub's token endpoint.
    assert idps.github.codes.keys() == codes_before.keys()


def test_github_refused_code_is_a_clear_error(world, browser, idps):
    begun = flow.start(browser, "github")
    path, params = flow.authorize(begun.headers["Location"])
    idps.github.codes.clear()  # the code expired at GitHub
    refused = flow.callback(browser, path, params)
    assert (
        refused.status_code == 502 and code_of(refused) == "oidc_token_exchange_failed"
    )


# ---------------------------------------------------------------------------
# Bad input


def test_unknown_and_unconfigured_providers_are_404(world, client, browser):
    for c in (client, browser):
        for path in ("/login/facebook", "/login/facebook/callback?state=x&code=y"):
            response = c.get(path, headers={"Accept": "application/json"})
            assert (
                response.status_code == 404 and code_of(response) == "unknown_provider"
            )
    # Apple-style posted callbacks for an unknown provider too.
    posted = browser.post(
        "/login/facebook/callback",
        data={"state": "x", "code": "y"},
        headers={"Accept": "application/json"},
    )
    assert posted.status_code == 404 and code_of(posted) == "unknown_provider"
    # The app without providers configured offers none of them.
    response = client.get("/login/google", headers={"Accept": "application/json"})
    assert response.status_code == 404 and code_of(response) == "unknown_provider"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda p: {"code": p["code"]}, "oidc_missing_parameter"),
        (lambda p: {"state": p["state"]}, "oidc_missing_parameter"),
        (lambda p: {**p, "code": "c" * 5000}, "oidc_oversize"),
        (
            lambda p: {"state": p["state"], "error": "access_denied"},
            "oidc_provider_error",
        ),
        (lambda p: {**p, "code": "not-a-code"}, "oidc_token_exchange_failed"),
    ],
    ids=["no-state", "no-code", "oversize", "provider-error", "unknown-code"],
)
def test_malformed_callback_is_a_clear_error(world, browser, idps, change, code):
    before = counts(world)
    begun = flow.start(browser, "google")
    path, params = flow.authorize(begun.headers["Location"])
    refused = flow.callback(browser, path, change(params))
    assert refused.status_code in (400, 502) and code_of(refused) == code
    assert counts(world) == before and flow.signed_in_user(browser) is None
    # People get a page, not a stack trace.
    html = flow.callback(browser, path, change(params), json=False)
    assert (
        html.status_code in (400, 502)
        and "<html" in html.get_data(as_text=True).lower()
    )


def test_callback_without_a_pending_sign_in_is_refused(world, browser):
    refused = browser.get(
        "/login/google/callback?state=a&code=b", headers={"Accept": "application/json"}
    )
    assert refused.status_code == 400 and code_of(refused) == "oidc_state_mismatch"


def test_provider_that_is_down_is_a_clear_error(world, settings, idps):
    from cajex.web import create_app

    from cajex.localservices import free_port

    down = f"http://127.0.0.1:{free_port()}"
    extra = flow.provider_settings(idps, google={"issuer": down})
    application = create_app(
        dataclasses.replace(settings, extra=extra), {"TESTING": True}
    )
    try:
        refused = application.test_client().get(
            "/login/google", headers={"Accept": "application/json"}
        )
        assert (
            refused.status_code == 502 and code_of(refused) == "oidc_discovery_failed"
        )
    finally:
        close_pools(application)


def test_next_is_kept_only_for_local_paths(world, browser, idps):
    done = flow.sign_in_with(browser, "google", next="/account/sessions")
    assert done.headers["Location"].endswith("/account/sessions")
    other = flow.sign_in_with(browser, "google", next="https://evil.example/")
    assert "evil.example" not in other.headers["Location"]
