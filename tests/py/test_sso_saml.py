"""SAML 2.0 sign-in through the ACS, with an IdP that signs with xmlsec1.

Every hostile response is refused with a logged reason, and creates no
session, no user and no membership.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from cajex.web.middleware import close_pools
from structlog.testing import capture_logs

from cajex.sso import fakeidp, saml, service

PUBLIC = "http://cajex.test"


class Setup:
    def __init__(
        self, world, plan="enterprise", domain="acme.test", idp_initiated=False
    ):
        self.world = world
        self.owner = world.user(email=f"owner@{domain}")
        self.ws = world.workspace(self.owner, plan=plan)
        self.idp = fakeidp.TestIdP(f"https://idp.{domain}/{self.ws.slug}")
        with world.as_job(self.ws) as (conn, _):
            md = saml.parse_metadata(self.idp.okta_metadata())
            row = service.create_saml(conn, md, allow_idp_initiated=idp_initiated)
            self.cid = row["id"]
            conn.execute("select cajex.claim_sso_domain(%s, %s)", (self.cid, domain))
            conn.execute(
                "select cajex.set_sso_connection_status(%s, 'enabled')", (self.cid,)
            )
        self.e = service.endpoints(PUBLIC, self.cid)
        self.domain = domain

    def start(self, client) -> str:
        """SP-initiated: follow our redirect, return the AuthnRequest's ID."""
        response = client.get(f"/sso/{self.cid}/login")
        assert response.status_code == 302, response.get_data(as_text=True)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(response.location).query)
        xml = saml.inflate_b64(query["SAMLRequest"][0])
        root = saml.parse_xml(xml)
        assert root.get("AssertionConsumerServiceURL") == self.e["acs_url"]
        return root.get("ID")

    def response(self, request_id, name_id="alice-1", email=None, **kw) -> bytes:
        attributes = kw.pop("attributes", None) or {
            "email": [email or f"alice@{self.domain}"],
            "groups": ["Architects", "All staff"],
        }
        return self.idp.signed_response(
            sp_entity_id=kw.pop("audience", self.e["entity_id"]),
            acs_url=kw.pop("acs", self.e["acs_url"]),
            name_id=name_id,
            in_response_to=request_id,
            attributes=attributes,
            **kw,
        )

    def post(self, client, xml: bytes):
        return client.post(
            self.e["acs_url"].replace(PUBLIC, ""),
            data={"SAMLResponse": base64.b64encode(xml).decode()},
        )


def counts(world, email):
    row = world.admin.execute(
        "select (select count(*) from cajex.sessions where auth_method = 'sso_saml') as sessions,"
        " (select count(*) from cajex.users where email = %s) as users",
        (email,),
    ).fetchone()
    return row["sessions"], row["users"]


def test_sp_initiated_sign_in_provisions_a_member(world, client):
    s = Setup(world)
    request_id = s.start(client)
    response = s.post(client, s.response(request_id))
    assert response.status_code == 302, response.get_data(as_text=True)
    session = world.admin.execute(
        "select s.*, u.email from cajex.sessions s join cajex.users u on u.id = s.user_id"
        " where auth_method = 'sso_saml'"
    ).fetchone()
    assert session["email"] == "alice@acme.test"
    assert (
        session["sso_workspace_id"] == s.ws.id and session["sso_connection_id"] == s.cid
    )
    assert session["idp_subject"] == "alice-1" and session["idp_session_id"] == "_sess1"
    member = world.admin.execute(
        "select role from cajex.memberships where workspace_id = %s and user_id = %s",
        (s.ws.id, session["user_id"]),
    ).fetchone()
    assert member["role"] == "member"
    groups = world.admin.execute("select groups from cajex.sso_identities").fetchone()[
        "groups"
    ]
    assert groups == ["Architects", "All staff"]  # multi-valued attribute kept whole
    # The browser now reaches the workspace.
    assert client.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 200


def test_entra_metadata_is_understood(world):
    idp = fakeidp.TestIdP("https://sts.windows.net/0000-tenant/")
    md = saml.parse_metadata(idp.entra_metadata())
    assert md.entity_id == "https://sts.windows.net/0000-tenant/"
    assert md.sso_url == idp.sso_url and md.slo_url == idp.slo_url
    assert len(md.certificates) == 1


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b"<x/>" * 0 + b"not xml", "xml_malformed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><r>&b;</r>',
            "xml_dtd",
        ),
        (
            b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
            "xml_dtd",
        ),
        (b"<a>" + b"x" * (1100 * 1024) + b"</a>", "xml_size"),
        (b"<EntityDescriptor/>", "not_metadata"),
    ],
    ids=["malformed", "billion_laughs", "xxe", "oversize", "not_metadata"],
)
def test_bad_metadata_is_explained(bad, reason):
    with pytest.raises(saml.MetadataError) as info:
        saml.parse_metadata(bad)
    assert info.value.reason == reason
    assert info.value.message


def test_broken_certificate_in_metadata_is_explained():
    idp = fakeidp.TestIdP("https://idp.x.test/")
    md = idp.okta_metadata().replace(fakeidp.cert_body(idp.cert)[:40].encode(), b"AAAA")
    with pytest.raises(saml.MetadataError) as info:
        saml.parse_metadata(md)
    assert info.value.reason == "bad_certificate"


def _evil_assertion(s: Setup, rid: str) -> str:
    """An unsigned assertion for mallory, otherwise well-formed for our ACS."""
    return s.idp.assertion_xml(
        assertion_id="_evil",
        audience=s.e["entity_id"],
        recipient=s.e["acs_url"],
        name_id="mallory",
        in_response_to=rid,
        attributes={"email": ["mallory@acme.test"]},
    )


def _hostile(s: Setup, rid: str, kind: str, other: Setup | None) -> bytes:
    good = s.response(rid).decode()
    if kind == "stripped_signature":
        start = good.index("<ds:Signature")
        end = good.index("</ds:Signature>") + len("</ds:Signature>")
        return (good[:start] + good[end:]).encode()
    if kind == "tampered_name_id":
        return good.replace("alice-1", "admin-1").encode()
    if kind == "tampered_email":
        return good.replace("alice@acme.test", "mallory@acme.test").encode()
    if kind == "second_unsigned_assertion":
        evil = s.idp.assertion_xml(
            assertion_id="_evil",
            audience=s.e["entity_id"],
            recipient=s.e["acs_url"],
            name_id="mallory",
            in_response_to=rid,
            attributes={"email": ["mallory@acme.test"]},
        )
        return good.replace("</samlp:Response>", evil + "</samlp:Response>").encode()
    if kind in (
        "wrapped_in_extensions",
        "wrapped_in_object",
        "signed_moved_evil_first",
    ):
        start = good.index("<saml:Assertion")
        end = good.index("</saml:Assertion>") + len("</saml:Assertion>")
        signed = good[start:end]
        evil = s.idp.assertion_xml(
            assertion_id="_evil",
            audience=s.e["entity_id"],
            recipient=s.e["acs_url"],
            name_id="mallory",
            in_response_to=rid,
            attributes={"email": ["mallory@acme.test"]},
        )
        if kind == "wrapped_in_extensions":
            body = "<samlp:Extensions>" + signed + "</samlp:Extensions>" + evil
        elif kind == "wrapped_in_object":
            sig_start = signed.index("<ds:Signature")
            sig_end = signed.index("</ds:Signature>") + len("</ds:Signature>")
            sig = signed[sig_start:sig_end].replace(
                "</ds:Signature>",
                "<ds:Object>" + signed + "</ds:Object></ds:Signature>",
            )
            body = evil.replace("</saml:Issuer>", "</saml:Issuer>" + sig, 1)
        else:
            body = evil + signed
        return (good[:start] + body + good[end:]).encode()
    if kind in ("signed_response_then_evil_added", "signed_response_wrapped"):
        signed = s.response(rid, sign="response").decode()
        signed = signed.split("?>", 1)[1] if signed.startswith("<?xml") else signed
        evil = _evil_assertion(s, rid)
        if kind == "signed_response_then_evil_added":
            return signed.replace(
                "</samlp:Response>", evil + "</samlp:Response>"
            ).encode()
        # The genuine signed Response hidden in an unsigned outer one.
        return s.idp.response_xml(
            evil,
            destination=s.e["acs_url"],
            in_response_to=rid,
            response_id="_outer",
            extra="<samlp:Extensions>" + signed + "</samlp:Extensions>",
        ).encode()
    if kind == "duplicate_id":
        # An evil Response element reusing the signed assertion's ID, so a
        # lookup by ID could land on either.
        return good.replace(
            "<samlp:Status>",
            '<samlp:Extensions><x:Decoy xmlns:x="urn:x" ID="_a1"/></samlp:Extensions>'
            "<samlp:Status>",
            1,
        ).encode()
    if kind == "encrypted_assertion":
        return good.replace(
            "<samlp:Status>",
            "<saml:EncryptedAssertion><x/></saml:EncryptedAssertion><samlp:Status>",
            1,
        ).encode()
    if kind == "nested_in_evil_advice":
        start = good.index("<saml:Assertion")
        end = good.index("</saml:Assertion>") + len("</saml:Assertion>")
        evil = _evil_assertion(s, rid).replace(
            "<saml:Conditions",
            "<saml:Advice>" + good[start:end] + "</saml:Advice><saml:Conditions",
            1,
        )
        return (good[:start] + evil + good[end:]).encode()
    if kind == "signature_points_elsewhere":
        # The evil assertion carries the genuine signature, whose reference
        # names the (now absent) signed assertion's ID.
        start = good.index("<saml:Assertion")
        end = good.index("</saml:Assertion>") + len("</saml:Assertion>")
        signed = good[start:end]
        sig = signed[
            signed.index("<ds:Signature") : signed.index("</ds:Signature>") + 15
        ]
        evil = s.idp.assertion_xml(
            assertion_id="_evil",
            audience=s.e["entity_id"],
            recipient=s.e["acs_url"],
            name_id="mallory",
            in_response_to=rid,
            attributes={"email": ["mallory@acme.test"]},
            signed_template=sig,
        )
        return (good[:start] + evil + good[end:]).encode()
    if kind == "look_alike_certificate":
        key, cert = fakeidp.make_key_and_cert(s.idp.entity_id[-40:])
        impostor = fakeidp.TestIdP(s.idp.entity_id)
        impostor.key, impostor.cert = key, cert
        return impostor.signed_response(
            sp_entity_id=s.e["entity_id"],
            acs_url=s.e["acs_url"],
            name_id="alice-1",
            in_response_to=rid,
            attributes={"email": ["alice@acme.test"]},
        )
    if kind == "other_workspaces_idp":
        return other.idp.signed_response(
            sp_entity_id=s.e["entity_id"],
            acs_url=s.e["acs_url"],
            name_id="alice-1",
            in_response_to=rid,
            attributes={"email": ["alice@acme.test"]},
        )
    if kind == "wrong_audience":
        return s.response(rid, audience="https://someone-else.test/sp").replace(
            b"x", b"x"
        )
    if kind == "wrong_recipient":
        return s.idp.signed_response(
            sp_entity_id=s.e["entity_id"],
            acs_url="https://evil.test/acs",
            destination=s.e["acs_url"],
            name_id="alice-1",
            in_response_to=rid,
            attributes={"email": ["alice@acme.test"]},
        )
    if kind == "wrong_destination":
        return s.response(rid, destination="https://evil.test/acs")
    if kind == "expired":
        import datetime as dt

        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        return s.response(
            rid, not_before=past - dt.timedelta(minutes=5), not_on_or_after=past
        )
    if kind == "not_yet_valid":
        import datetime as dt

        future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
        return s.response(
            rid, not_before=future, not_on_or_after=future + dt.timedelta(minutes=5)
        )
    if kind == "comment_in_name_id":
        # The IdP signed "alice-1.evil"; the comment is outside exclusive
        # c14n, so the signature still holds, and a naive reader would see
        # only "alice-1".
        signed = s.response(rid, name_id="alice-1.evil").decode()
        return signed.replace(">alice-1.evil<", ">alice-1<!---->.evil<").encode()
    if kind == "sha1":
        return s.response(rid, sha1=True)
    if kind == "status_failure":
        return s.response(rid, status="urn:oasis:names:tc:SAML:2.0:status:Responder")
    if kind == "unknown_request":
        return s.response("_never_issued_request_id_0001")
    if kind == "xxe":
        return (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + good.replace("alice-1", "&x;").encode()
        )
    if kind == "billion_laughs":
        return (
            b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            + good.replace("alice-1", "&b;").encode()
        )
    if kind == "garbage":
        return b"\x00\x01garbage"
    raise AssertionError(kind)


HOSTILE = {
    "stripped_signature": "unsigned",
    "tampered_name_id": "bad_signature",
    "tampered_email": "bad_signature",
    "second_unsigned_assertion": "assertion_count",
    "wrapped_in_extensions": "assertion_count",
    "wrapped_in_object": "assertion_count",
    "signed_moved_evil_first": "assertion_count",
    "signature_points_elsewhere": "signature_reference",
    "signed_response_then_evil_added": "assertion_count",
    "signed_response_wrapped": "assertion_count",
    "nested_in_evil_advice": "assertion_count",
    "duplicate_id": "duplicate_id",
    "encrypted_assertion": "encrypted",
    "look_alike_certificate": "bad_signature",
    "other_workspaces_idp": "issuer",
    "wrong_audience": "audience",
    "wrong_recipient": "recipient",
    "wrong_destination": "destination",
    "expired": "expired",
    "not_yet_valid": "not_yet_valid",
    "comment_in_name_id": "comment",
    "sha1": "sha1",
    "status_failure": "status",
    "unknown_request": "in_response_to",
    "xxe": "xml_dtd",
    "billion_laughs": "xml_dtd",
    "garbage": "xml_malformed",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_response_is_refused(world, client, kind):
    s = Setup(world)
    other = (
        Setup(world, domain="other.test") if kind == "other_workspaces_idp" else None
    )
    rid = s.start(client)
    xml = _hostile(s, rid, kind, other)
    with capture_logs() as logs:
        response = s.post(client, xml)
    assert response.status_code in (400, 403), response.get_data(as_text=True)
    refused = [e for e in logs if e.get("event") == "sso.signin_refused"]
    assert refused and refused[0]["reason"] == HOSTILE[kind], logs
    assert "@" not in json.dumps(refused, default=str)
    sessions, _ = counts(world, "alice@acme.test")
    assert sessions == 0
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.users"
            " where email in ('alice@acme.test', 'mallory@acme.test')"
        ).fetchone()["n"]
        == 0
    )
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.memberships where workspace_id = %s",
            (s.ws.id,),
        ).fetchone()["n"]
        == 1
    )


@pytest.mark.parametrize("sign", ["response", "both"])
def test_a_signed_response_is_accepted_too(world, client, sign):
    s = Setup(world)
    assert s.post(client, s.response(s.start(client), sign=sign)).status_code == 302
    assert counts(world, "alice@acme.test") == (1, 1)


def test_sha1_is_accepted_only_when_the_connection_allows_it(world, client):
    s = Setup(world)
    with world.as_job(s.ws) as (conn, _):
        conn.execute(
            "select cajex.update_sso_connection(%s, '{\"allow_sha1\": true}')", (s.cid,)
        )
    rid = s.start(client)
    assert s.post(client, s.response(rid, sha1=True)).status_code == 302


def test_replay_is_refused_also_after_a_restart(world, client, settings):
    s = Setup(world, idp_initiated=True)
    xml = s.response(None)  # IdP-initiated: no InResponseTo
    assert s.post(client, xml).status_code == 302
    from cajex.web import create_app

    fresh = create_app(settings, {"TESTING": True})  # a new process's worth of state
    try:
        with capture_logs() as logs:
            again = s.post(fresh.test_client(), xml)
    finally:
        close_pools(fresh)
    assert again.status_code == 400
    assert [e["reason"] for e in logs if e.get("event") == "sso.signin_refused"] == [
        "replay"
    ]
    assert counts(world, "alice@acme.test")[0] == 1


def test_idp_initiated_is_refused_unless_allowed(world, client):
    s = Setup(world)
    with capture_logs() as logs:
        assert s.post(client, s.response(None)).status_code == 400
    assert [e["reason"] for e in logs if e.get("event") == "sso.signin_refused"] == [
        "idp_initiated"
    ]


def test_request_id_is_single_use(world, client):
    s = Setup(world)
    rid = s.start(client)
    assert s.post(client, s.response(rid, assertion_id="_first")).status_code == 302
    second = s.post(client, s.response(rid, assertion_id="_second"))
    assert second.status_code == 400


def test_certificate_rollover(world, client):
    s = Setup(world)
    old_key, old_cert = s.idp.key, s.idp.cert
    new_key, new_cert = fakeidp.make_key_and_cert("rolled")
    # The IdP publishes both certificates, then signs with the new key.
    s.idp.cert = new_cert
    md = saml.parse_metadata(s.idp.okta_metadata(extra_certs=(old_cert,)))
    with world.as_job(s.ws) as (conn, _):
        service.refresh_saml_metadata(conn, s.cid, md)
    s.idp.key = new_key
    assert (
        s.post(client, s.response(s.start(client), assertion_id="_new")).status_code
        == 302
    )
    s.idp.key, s.idp.cert = old_key, old_cert
    assert (
        s.post(client, s.response(s.start(client), assertion_id="_old")).status_code
        == 302
    )


def test_address_outside_claimed_domains_is_refused(world, client):
    s = Setup(world)
    victim = world.user(email="ceo@bigcorp.test")
    rid = s.start(client)
    with capture_logs() as logs:
        r = s.post(client, s.response(rid, name_id="x", email="ceo@bigcorp.test"))
    assert r.status_code == 403
    assert [e["reason"] for e in logs if e.get("event") == "sso.signin_refused"] == [
        "provision_forbidden"
    ]
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sessions where user_id = %s"
            " and auth_method = 'sso_saml'",
            (victim.id,),
        ).fetchone()["n"]
        == 0
    )


def test_group_mapping_sets_the_role_at_every_sign_in(world, client):
    s = Setup(world)
    with world.as_user(s.owner, s.ws) as (conn, _):
        conn.execute("select cajex.set_group_role_mapping('architects', 'admin')")
    s.post(client, s.response(s.start(client), assertion_id="_g1"))
    role = lambda: world.admin.execute(  # noqa: E731
        "select m.role from cajex.memberships m join cajex.users u on u.id = m.user_id"
        " where u.email = 'alice@acme.test'"
    ).fetchone()["role"]
    assert role() == "admin"
    s.post(
        client,
        s.response(
            s.start(client),
            assertion_id="_g2",
            attributes={"email": ["alice@acme.test"], "groups": ["All staff"]},
        ),
    )
    assert role() == "member"


def test_entra_group_overage_leaves_groups_unknown(world, client):
    s = Setup(world)
    with world.as_user(s.owner, s.ws) as (conn, _):
        conn.execute("select cajex.set_group_role_mapping('architects', 'admin')")
    s.post(client, s.response(s.start(client), assertion_id="_o1"))
    s.post(
        client,
        s.response(
            s.start(client),
            assertion_id="_o2",
            attributes={
                "email": ["alice@acme.test"],
                saml.ENTRA_GROUPS_OVERAGE: ["https://graph.microsoft.com/v1.0/x"],
            },
        ),
    )
    row = world.admin.execute(
        "select m.role, i.groups_known from cajex.memberships m"
        " join cajex.sso_identities i on i.user_id = m.user_id"
        " and i.workspace_id = m.workspace_id"
    ).fetchone()
    assert row["role"] == "admin" and row["groups_known"] is False


def test_connection_of_a_free_workspace_cannot_be_created(world):
    ws = world.workspace(plan="free")
    idp = fakeidp.TestIdP("https://idp.free.test/")
    import psycopg

    with pytest.raises(psycopg.Error) as info:
        with world.as_job(ws) as (conn, _):
            service.create_saml(conn, saml.parse_metadata(idp.okta_metadata()))
    assert info.value.sqlstate == "CXFTR"


def test_idp_initiated_logout_ends_only_matching_sessions(world, client, app):
    s = Setup(world)
    s.post(client, s.response(s.start(client)))
    other = app.test_client()
    s.post(
        other,
        s.response(
            s.start(other),
            name_id="bob-1",
            email="bob@acme.test",
            assertion_id="_bob",
            session_index="_sessbob",
        ),
    )
    xml = s.idp.logout_request(
        destination=s.e["slo_url"], name_id="alice-1", session_index="_sess1"
    )
    r = client.post(
        s.e["slo_url"].replace(PUBLIC, ""),
        data={"SAMLRequest": base64.b64encode(xml).decode()},
    )
    assert r.status_code == 302 and r.location.startswith(s.idp.slo_url)
    rows = world.admin.execute(
        "select idp_subject, revoked_at is not null as revoked from cajex.sessions"
        " where auth_method = 'sso_saml' order by idp_subject"
    ).fetchall()
    assert [(x["idp_subject"], x["revoked"]) for x in rows] == [
        ("alice-1", True),
        ("bob-1", False),
    ]
    assert client.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 401
    # A replayed logout request is refused.
    again = client.post(
        s.e["slo_url"].replace(PUBLIC, ""),
        data={"SAMLRequest": base64.b64encode(xml).decode()},
    )
    assert again.status_code == 400


def test_unsigned_logout_request_is_refused(world, client):
    s = Setup(world)
    s.post(client, s.response(s.start(client)))
    xml = s.idp.logout_request(
        destination=s.e["slo_url"], name_id="alice-1", session_index="_sess1"
    )
    text = xml.decode()
    text = (
        text[: text.index("<ds:Signature")] + text[text.index("</ds:Signature>") + 15 :]
    )
    r = client.post(
        s.e["slo_url"].replace(PUBLIC, ""),
        data={"SAMLRequest": base64.b64encode(text.encode()).decode()},
    )
    assert r.status_code == 400
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sessions where auth_method = 'sso_saml'"
            " and revoked_at is null"
        ).fetchone()["n"]
        == 1
    )


def test_garbage_at_slo_changes_nothing(world, client):
    s = Setup(world)
    r = client.post(
        s.e["slo_url"].replace(PUBLIC, ""), data={"SAMLRequest": "%%%not base64"}
    )
    assert r.status_code == 400


def test_unknown_connection_answers_404(world, client):
    assert (
        client.post(
            "/sso/saml/00000000-0000-0000-0000-000000000000/acs",
            data={"SAMLResponse": "x"},
        ).status_code
        == 404
    )
    assert (
        client.post("/sso/saml/not-a-uuid/acs", data={"SAMLResponse": "x"}).status_code
        == 404
    )


def test_person_in_two_workspaces_one_enforcing_sso(world, client, signed_in):
    s = Setup(world)
    # Alice signs in once by SSO (JIT), then is also a member of a second,
    # non-enforcing workspace.
    s.post(client, s.response(s.start(client)))
    alice = world.admin.execute(
        "select id from cajex.users where email = 'alice@acme.test'"
    ).fetchone()["id"]
    other_ws = world.workspace(plan="free")
    with world.as_user(other_ws.owner, other_ws) as (conn, _):
        conn.execute("select cajex_private.add_member(%s, 'member')", (alice,))
    with world.as_job(s.ws) as (conn, _):
        conn.execute("select cajex.set_sso_enforced(true)")
    # A social-login style session (not from the IdP) for the same person.
    social = world.user(email="alice@acme.test")
    plain = signed_in(social)
    assert plain.get(f"/w/{other_ws.slug}/api/v1/projects").status_code == 200
    assert plain.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 404
    # The IdP's session reaches the enforcing workspace.
    assert client.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 200


def test_settings_page_explains_the_plan_gate(world, signed_in):
    ws = world.workspace(plan="free")
    page = signed_in(ws.owner).get(f"/w/{ws.slug}/settings/sso")
    assert page.status_code == 200
    assert "Enterprise plan" in page.get_data(as_text=True)


def test_settings_page_shows_the_idp_values_and_not_to_other_workspaces(
    world, signed_in
):
    s = Setup(world)
    page = signed_in(s.owner).get(f"/w/{s.ws.slug}/settings/sso").get_data(as_text=True)
    for key in ("entity_id", "acs_url", "slo_url", "metadata_url"):
        assert s.e[key] in page
    stranger = world.workspace(plan="enterprise")
    assert (
        signed_in(stranger.owner).get(f"/w/{s.ws.slug}/settings/sso").status_code == 404
    )
    member = world.member(s.ws, role="member")
    assert signed_in(member).get(f"/w/{s.ws.slug}/settings/sso").status_code == 403


def test_admin_adds_saml_by_upload_and_bad_metadata_changes_nothing(
    world, signed_in, csrf_headers
):
    ws = world.workspace(world.user(email="root@corp.test"), plan="enterprise")
    c = signed_in(ws.owner)
    import io

    bad = c.post(
        f"/w/{ws.slug}/settings/sso",
        headers=csrf_headers,
        content_type="multipart/form-data",
        data={"action": "add_saml", "metadata": (io.BytesIO(b"<nope/>"), "md.xml")},
    )
    assert bad.status_code == 422 and "EntityDescriptor" in bad.get_data(as_text=True)
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sso_connections"
        ).fetchone()["n"]
        == 0
    )
    idp = fakeidp.TestIdP("https://idp.corp.test/")
    ok = c.post(
        f"/w/{ws.slug}/settings/sso",
        headers=csrf_headers,
        content_type="multipart/form-data",
        data={
            "action": "add_saml",
            "metadata": (io.BytesIO(idp.okta_metadata()), "md.xml"),
        },
    )
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sso_connections"
        ).fetchone()["n"]
        == 1
    )


def test_sp_metadata_names_the_connection_endpoints(world, client):
    s = Setup(world)
    xml = client.get(s.e["metadata_url"].replace(PUBLIC, "")).data
    root = saml.parse_xml(xml)
    assert root.get("entityID") == s.e["entity_id"]
    assert s.e["acs_url"].encode() in xml and s.e["slo_url"].encode() in xml


def _sign_out_here(client):
    with client.session_transaction() as sess:
        sess["csrf"] = "t"
    return client.post("/sso/logout", headers={"X-CSRF-Token": "t"})


def test_sp_initiated_logout_is_signed_and_the_idp_answer_is_checked(
    world, client, settings
):
    s = Setup(world)
    s.post(client, s.response(s.start(client)))
    out = _sign_out_here(client)
    assert out.status_code == 302 and out.location.startswith(s.idp.slo_url)
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sessions where auth_method = 'sso_saml'"
            " and revoked_at is null"
        ).fetchone()["n"]
        == 0
    )
    # Our LogoutRequest is signed with the SP key published in our metadata.
    query = out.location.split("?", 1)[1].encode()
    sp_cert = saml.sp_signing_key(settings.data_dir)[1]
    sp_as_idp = saml.IdPConfig("x", "x", "x", None, (sp_cert,))
    saml.verify_redirect_signature(query, sp_as_idp)
    params = urllib.parse.parse_qs(query.decode())
    request = saml.parse_xml(saml.inflate_b64(params["SAMLRequest"][0]))
    assert request.find("saml:NameID", saml.NS).text == "alice-1"
    # The IdP's signed LogoutResponse is accepted once, for that request only.
    answer = s.idp.logout_response(
        destination=s.e["slo_url"], in_response_to=request.get("ID")
    )
    slo = s.e["slo_url"].replace(PUBLIC, "")
    assert (
        client.post(
            slo, data={"SAMLResponse": base64.b64encode(answer).decode()}
        ).status_code
        == 200
    )
    again = client.post(slo, data={"SAMLResponse": base64.b64encode(answer).decode()})
    assert again.status_code == 400
    stray = s.idp.logout_response(
        destination=s.e["slo_url"],
        in_response_to="_never_asked_0000000",
        response_id="_lresp2",
    )
    assert (
        client.post(
            slo, data={"SAMLResponse": base64.b64encode(stray).decode()}
        ).status_code
        == 400
    )


def test_idp_initiated_logout_by_redirect_binding(world, client):
    s = Setup(world)
    s.post(client, s.response(s.start(client)))
    xml = s.idp.logout_request(
        destination=s.e["slo_url"], name_id="alice-1", session_index="_sess1"
    )
    # Redirect binding: the query is signed, the XML need not be.
    url = saml.redirect_url(s.e["slo_url"], "SAMLRequest", xml, None, s.idp.key)
    path = url.replace(PUBLIC, "")
    forged = saml.redirect_url(
        s.e["slo_url"], "SAMLRequest", xml, None, fakeidp.make_key_and_cert("forger")[0]
    ).replace(PUBLIC, "")
    assert client.get(forged).status_code == 400
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sessions where auth_method = 'sso_saml'"
            " and revoked_at is null"
        ).fetchone()["n"]
        == 1
    )
    assert client.get(path).status_code == 302
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sessions where auth_method = 'sso_saml'"
            " and revoked_at is null"
        ).fetchone()["n"]
        == 0
    )


def test_admin_changes_the_default_role_and_another_workspace_cannot(
    world, client, signed_in, csrf_headers
):
    s = Setup(world)
    page = signed_in(s.owner)
    r = page.post(
        f"/w/{s.ws.slug}/settings/sso",
        headers=csrf_headers,
        data={
            "action": "set_default_role",
            "connection_id": str(s.cid),
            "default_role": "viewer",
        },
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    # Just-in-time provisioning now uses it.
    s.post(client, s.response(s.start(client)))
    assert (
        world.admin.execute(
            "select m.role from cajex.memberships m join cajex.users u"
            " on u.id = m.user_id where u.email = 'alice@acme.test'"
        ).fetchone()["role"]
        == "viewer"
    )
    # An admin of another workspace names this connection: not found there.
    stranger = world.workspace(world.user(email="eve@evil.test"), plan="enterprise")
    r = signed_in(stranger.owner).post(
        f"/w/{stranger.slug}/settings/sso",
        headers=csrf_headers,
        data={
            "action": "set_default_role",
            "connection_id": str(s.cid),
            "default_role": "admin",
        },
    )
    assert r.status_code == 404
    bad = page.post(
        f"/w/{s.ws.slug}/settings/sso",
        headers=csrf_headers,
        data={
            "action": "set_default_role",
            "connection_id": str(s.cid),
            "default_role": "owner",
        },
    )
    assert bad.status_code == 422
    assert (
        world.admin.execute(
            "select default_role from cajex.sso_connections where id = %s", (s.cid,)
        ).fetchone()["default_role"]
        == "viewer"
    )


def test_signed_authn_requests_when_the_connection_asks(world, client, settings):
    s = Setup(world)
    with world.as_job(s.ws) as (conn, _):
        conn.execute(
            "select cajex.update_sso_connection(%s, '{\"sign_requests\": true}')",
            (s.cid,),
        )
    response = client.get(f"/sso/{s.cid}/login")
    assert response.status_code == 302
    query = response.location.split("?", 1)[1].encode()
    assert b"Signature=" in query and b"SigAlg=" in query
    sp_cert = saml.sp_signing_key(settings.data_dir)[1]
    saml.verify_redirect_signature(
        query, saml.IdPConfig("x", "x", "x", None, (sp_cert,))
    )
    # Without the flag, the request goes unsigned.
    with world.as_job(s.ws) as (conn, _):
        conn.execute(
            "select cajex.update_sso_connection(%s, '{\"sign_requests\": false}')",
            (s.cid,),
        )
    assert b"Signature=" not in client.get(f"/sso/{s.cid}/login").location.encode()


def test_clock_skew_is_the_connections(world, client):
    import datetime as dt

    s = Setup(world)
    ended = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)
    window = {"not_before": ended - dt.timedelta(minutes=5), "not_on_or_after": ended}
    # 90 s late is inside the default skew of 120 s...
    ok = s.post(client, s.response(s.start(client), assertion_id="_late1", **window))
    assert ok.status_code == 302
    # ...and outside a skew of 30 s.
    with world.as_job(s.ws) as (conn, _):
        conn.execute(
            "select cajex.update_sso_connection(%s, '{\"clock_skew_seconds\": 30}')",
            (s.cid,),
        )
    with capture_logs() as logs:
        late = s.post(
            client, s.response(s.start(client), assertion_id="_late2", **window)
        )
    assert late.status_code == 400
    assert [e["reason"] for e in logs if e.get("event") == "sso.signin_refused"] == [
        "expired"
    ]


def test_disabling_or_removing_a_connection_ends_its_sessions(world, client, app):
    s = Setup(world)
    s.post(client, s.response(s.start(client)))
    assert client.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 200
    with world.as_job(s.ws) as (conn, _):
        conn.execute("select cajex.set_sso_connection_status(%s, 'disabled')", (s.cid,))
    assert client.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 401
    # A disabled connection's endpoints answer as if it did not exist.
    assert client.get(f"/sso/{s.cid}/login").status_code == 404
    with world.as_job(s.ws) as (conn, _):
        conn.execute("select cajex.set_sso_connection_status(%s, 'enabled')", (s.cid,))
    other = app.test_client()
    s.post(other, s.response(s.start(other), assertion_id="_again"))
    with world.as_job(s.ws) as (conn, _):
        conn.execute("select cajex.delete_sso_connection(%s)", (s.cid,))
    assert other.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 401


def test_cli_add_saml_from_a_metadata_url(world, db_urls, settings, monkeypatch):
    import http.server
    import threading

    from click.testing import CliRunner

    from cajex import cli as cli_module
    from cajex.localservices import free_port

    if "sso" not in cli_module.cli.commands:
        cli_module._register_areas()
    idp = fakeidp.TestIdP(
        "https://sts.windows.net/5a1e0000-0000-0000-0000-00000000cafe/"
    )
    body = idp.entra_metadata()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "application/samlmetadata+xml")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("CAJEX_CONTEXT_SECRET", settings.context_secret)
    monkeypatch.setenv("CAJEX_PUBLIC_URL", PUBLIC)
    ws = world.workspace(plan="enterprise")
    url = f"http://127.0.0.1:{server.server_port}/federationmetadata/2007-06/federationmetadata.xml?appid=x"
    try:
        runner = CliRunner()
        base = [
            "sso",
            "add-saml",
            "--workspace",
            ws.slug,
            "--database-url",
            db_urls["app"],
        ]
        out = runner.invoke(cli_module.cli, [*base, "--metadata", url])
        assert out.exit_code == 0, out.output
        added = json.loads(out.output)
        row = world.admin.execute(
            "select saml_metadata_url, saml_idp_entity_id from cajex.sso_connections"
            " where id = %s",
            (added["connection_id"],),
        ).fetchone()
        assert row["saml_metadata_url"] == url
        assert row["saml_idp_entity_id"] == idp.entity_id
        gone = f"http://127.0.0.1:{free_port()}/md.xml"
        refused = runner.invoke(cli_module.cli, [*base, "--metadata", gone])
        assert refused.exit_code != 0 and "could not be reached" in refused.output
        assert (
            world.admin.execute(
                "select count(*) as n from cajex.sso_connections where workspace_id = %s",
                (ws.id,),
            ).fetchone()["n"]
            == 1
        )
    finally:
        server.shutdown()
        server.server_close()


def test_sign_in_with_sso_routes_each_domain_to_its_own_connection(world, client):
    a = Setup(world)
    b = Setup(world, domain="other.test")
    with client.session_transaction() as sess:
        sess["csrf"] = "t"

    def route(email):
        return client.post("/sso", data={"email": email}, headers={"X-CSRF-Token": "t"})

    assert route("zoe@acme.test").location.endswith(f"/sso/{a.cid}/login")
    assert route("Zoe@OTHER.test").location.endswith(f"/sso/{b.cid}/login")
    assert route("zoe@nobody.test").status_code == 404
    assert route("not an address").status_code == 404
    # A disabled connection routes nobody.
    with world.as_job(b.ws) as (conn, _):
        conn.execute("select cajex.set_sso_connection_status(%s, 'disabled')", (b.cid,))
    assert route("zoe@other.test").status_code == 404


def test_an_idp_session_of_one_workspace_does_not_open_another_enforcing_one(
    world, client
):
    a = Setup(world)
    b = Setup(world, domain="other.test")
    # Alice signs in through A's IdP, and is also a member of B.
    a.post(client, a.response(a.start(client)))
    alice = world.admin.execute(
        "select id from cajex.users where email = 'alice@acme.test'"
    ).fetchone()["id"]
    with world.as_user(b.owner, b.ws) as (conn, _):
        conn.execute("select cajex_private.add_member(%s, 'member')", (alice,))
    assert client.get(f"/w/{b.ws.slug}/api/v1/projects").status_code == 200
    with world.as_job(b.ws) as (conn, _):
        conn.execute("select cajex.set_sso_enforced(true)")
    # B now wants a session from B's IdP: A's does not do.
    assert client.get(f"/w/{b.ws.slug}/api/v1/projects").status_code == 404
    assert client.get(f"/w/{a.ws.slug}/api/v1/projects").status_code == 200


def test_sso_sign_in_does_not_undo_a_scim_deactivation(world, app):
    """SCIM's active: false holds until SCIM says active: true (docs/scim.md):
    a sign-in through the IdP is refused with a clear page, not a way back."""
    from cajex import scim as scim_lib

    s = Setup(world)
    first = app.test_client()
    assert s.post(first, s.response(s.start(first), "dave-1", "dave@acme.test",
                                    assertion_id="_dave1")).status_code == 302
    with world.as_user(s.owner, s.ws) as (conn, _):
        _, token = scim_lib.create_token(conn, "t")
    scim = app.test_client()
    hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    user = scim.post(f"/scim/v2/{s.ws.slug}/Users", headers=hdr, json={
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "dave@acme.test", "active": True}).get_json()

    def set_active(value):
        r = scim.patch(f"/scim/v2/{s.ws.slug}/Users/{user['id']}", headers=hdr, json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": value}]})
        assert r.status_code == 200, r.get_json()

    def status():
        return world.admin.execute(
            "select m.status from cajex.memberships m join cajex.users u on u.id = m.user_id"
            " where u.email = 'dave@acme.test' and m.workspace_id = %s", (s.ws.id,)).fetchone()["status"]

    set_active(False)
    # Deny: deactivated, the sign-in is refused and changes nothing.
    refused = app.test_client()
    with capture_logs() as logs:
        r = s.post(refused, s.response(s.start(refused), "dave-1", "dave@acme.test", assertion_id="_dave2"))
    assert r.status_code == 403
    assert "deactivated" in r.get_data(as_text=True)
    assert [e["reason"] for e in logs if e.get("event") == "sso.signin_refused"] == ["provision_forbidden"]
    assert status() == "deactivated"
    assert refused.get(f"/w/{s.ws.slug}/api/v1/projects").status_code in (302, 401, 404)
    assert scim.get(f"/scim/v2/{s.ws.slug}/Users/{user['id']}", headers=hdr).get_json()["active"] is False
    # Allow: once SCIM restores the membership, the same sign-in works.
    set_active(True)
    back = app.test_client()
    assert s.post(back, s.response(s.start(back), "dave-1", "dave@acme.test",
                                   assertion_id="_dave3")).status_code == 302
    assert status() == "active"
    assert back.get(f"/w/{s.ws.slug}/api/v1/projects").status_code == 200
