"""SAML single logout over the HTTP-Redirect binding: the message that is
read is the one whose signature was checked."""

from __future__ import annotations

import datetime as dt
import secrets
import urllib.parse

import pytest
from test_sso_saml import PUBLIC, Setup

from cajex.sso import saml


def _live(world, subject: str) -> int:
    return world.admin.execute(
        "select count(*) as n from cajex.sessions where auth_method = 'sso_saml'"
        " and idp_subject = %s and revoked_at is null",
        (subject,),
    ).fetchone()["n"]


def _forged_logout_request(s, name_id: str) -> str:
    """A LogoutRequest the IdP never signed, deflated and URL-encoded."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = (
        '<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"'
        ' xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"'
        f' ID="_forged{secrets.token_hex(8)}" Version="2.0" IssueInstant="{now}"'
        f' Destination="{s.e["slo_url"]}"><saml:Issuer>{s.idp.entity_id}</saml:Issuer>'
        f"<saml:NameID>{name_id}</saml:NameID></samlp:LogoutRequest>"
    ).encode()
    return urllib.parse.quote(saml._deflate_b64(xml), safe="")


@pytest.mark.parametrize(
    "spelling",
    ["SAML%52equest", "SAMLRequest", "SAML%52equest%00", "%53AMLRequest"],
)
def test_a_forged_message_cannot_ride_along_a_signed_one(world, app, spelling):
    """Holding any message the IdP signed for the redirect binding (say the
    LogoutResponse of one's own sign-out), a member cannot add an unsigned
    LogoutRequest for someone else under a second, differently spelled
    parameter: the query is refused and nobody is signed out."""
    s = Setup(world)
    alice, bob = app.test_client(), app.test_client()
    assert s.post(alice, s.response(s.start(alice), "alice-1")).status_code == 302
    assert _live(world, "alice-1") == 1
    signed = saml.redirect_url(
        s.e["slo_url"],
        "SAMLResponse",
        s.idp.logout_response(destination=s.e["slo_url"], in_response_to="_any"),
        None,
        s.idp.key,
    )
    path, query = signed.replace(PUBLIC, "").split("?", 1)
    forged = f"{spelling}={_forged_logout_request(s, 'alice-1')}"
    for attempt in (f"{forged}&{query}", f"{query}&{forged}"):
        assert bob.get(f"{path}?{attempt}").status_code == 400
    assert _live(world, "alice-1") == 1


def test_a_parameter_given_twice_or_unknown_is_refused(world, app):
    s = Setup(world)
    client = app.test_client()
    assert s.post(client, s.response(s.start(client), "alice-1")).status_code == 302
    url = saml.redirect_url(
        s.e["slo_url"],
        "SAMLRequest",
        s.idp.logout_request(
            destination=s.e["slo_url"], name_id="alice-1", session_index="_sess1"
        ),
        None,
        s.idp.key,
    )
    path, query = url.replace(PUBLIC, "").split("?", 1)
    sig_alg = next(p for p in query.split("&") if p.startswith("SigAlg="))
    for bad in (f"{query}&{sig_alg}", f"{query}&Extra=1", f"{query}&SAMLResponse=x"):
        assert client.get(f"{path}?{bad}").status_code == 400
    assert _live(world, "alice-1") == 1
    # The message as the IdP sent it still signs Alice out.
    assert client.get(f"{path}?{query}").status_code == 302
    assert _live(world, "alice-1") == 0


def test_a_sign_in_answer_counts_only_in_the_browser_that_started_it(world, app):
    """Login CSRF: an answer to a sign-in started in one browser (the
    attacker's), posted from a page into another browser, is refused there,
    and the victim's browser gets no session; in the browser that started
    it, the same kind of answer signs in."""
    s = Setup(world)
    attacker, victim = app.test_client(), app.test_client()
    answer = s.response(s.start(attacker), "mallory-1", "mallory@acme.test")
    refused = s.post(victim, answer)
    assert refused.status_code == 403
    assert "another browser" in refused.get_data(as_text=True)
    with victim.session_transaction() as sess:
        assert not sess.get("sid")
    assert _live(world, "mallory-1") == 0
    assert (
        s.post(attacker, s.response(s.start(attacker), "mallory-1")).status_code == 302
    )
    assert _live(world, "mallory-1") == 1
