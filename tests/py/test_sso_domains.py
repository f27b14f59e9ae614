"""Claimed email domains are proven by DNS before they route anyone.

A routed domain lets its connection's IdP speak for every address there, so
an admin's claim stays pending until the TXT record _cajex-challenge.<domain>
holds the claim's value, which the worker looks up on a real DNS server
(cajex.testing.dns, on loopback). Public mail domains cannot be claimed.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import urllib.parse

import pytest
from cajex.jobs import registry
from test_sso_saml import PUBLIC

from cajex import db
from cajex.sso import fakeidp, saml, service
from cajex.testing.dns import TxtServer


@pytest.fixture
def dns_server():
    server = TxtServer()
    yield server
    server.close()


@pytest.fixture
def dns_settings(settings, dns_server, world):
    return dataclasses.replace(
        settings, dns_server=dns_server.address, database_url=world.worker_url
    )


def _check(world, settings, ws) -> None:
    """Run the workspace's pending `sso.verify_domain` job as the worker does."""
    import cajex.jobs.sso  # noqa: F401  (registers the handler)

    job = world.admin.execute(
        "select id, workspace_id, kind, payload, attempts from cajex.outbox"
        " where workspace_id = %s and kind = 'sso.verify_domain' and done_at is null"
        " order by id desc limit 1",
        (ws.id,),
    ).fetchone()
    assert job is not None, "no pending domain check"
    pool = db.make_pool(settings.worker_url, 1, 2, name="test-sso-jobs")
    try:
        ctx = registry.JobContext(
            id=job["id"],
            kind=job["kind"],
            workspace_id=str(job["workspace_id"]),
            payload=job["payload"],
            attempts=1,
            pool=pool,
            settings=settings,
        )
        try:
            registry.get("sso.verify_domain")(ctx)
        finally:
            world.admin.execute(
                "update cajex.outbox set done_at = now() where id = %s", (job["id"],)
            )
    finally:
        pool.close()


def _routes(world, email: str) -> list:
    return world.admin.execute(
        "select workspace_id from cajex.sso_route_for_email(%s)", (email,)
    ).fetchall()


class AdminConnection:
    """An Enterprise workspace whose owner adds a SAML connection and claims
    a domain through the settings page, as any admin would."""

    def __init__(self, world, signed_in, csrf_headers, domain: str, owner_email=None):
        self.world = world
        self.owner = world.user(email=owner_email or f"owner@{domain}")
        self.ws = world.workspace(self.owner, plan="enterprise")
        self.idp = fakeidp.TestIdP(f"https://idp.{domain}/{self.ws.slug}")
        with world.as_user(self.owner, self.ws) as (conn, _):
            self.cid = service.create_saml(
                conn, saml.parse_metadata(self.idp.okta_metadata())
            )["id"]
            conn.execute(
                "select cajex.set_sso_connection_status(%s, 'enabled')", (self.cid,)
            )
        self.page = signed_in(self.owner)
        self.csrf = csrf_headers
        self.e = service.endpoints(PUBLIC, self.cid)

    def claim(self, domain: str):
        return self.page.post(
            f"/w/{self.ws.slug}/settings/sso",
            headers=self.csrf,
            data={
                "action": "claim_domain",
                "connection_id": str(self.cid),
                "domain": domain,
            },
        )

    def sign_in(self, client, email: str):
        """SP-initiated sign-in in which this workspace's IdP asserts `email`."""
        started = client.get(f"/sso/{self.cid}/login")
        assert started.status_code == 302
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(started.location).query)
        request_id = saml.parse_xml(saml.inflate_b64(query["SAMLRequest"][0])).get("ID")
        xml = self.idp.signed_response(
            sp_entity_id=self.e["entity_id"],
            acs_url=self.e["acs_url"],
            name_id=email,
            in_response_to=request_id,
            attributes={"email": [email]},
        )
        return client.post(
            self.e["acs_url"].replace(PUBLIC, ""),
            data={"SAMLResponse": base64.b64encode(xml).decode()},
        )


def test_an_admins_claim_routes_nobody_until_its_txt_record_is_published(
    world, app, signed_in, csrf_headers, dns_server, dns_settings
):
    a = AdminConnection(world, signed_in, csrf_headers, "acme.test")
    page = a.claim("acme.test")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    value = re.search(r"cajex-domain-verification=[0-9a-f]{32}", text).group(0)
    assert "_cajex-challenge.acme.test" in text
    assert _routes(world, "zoe@acme.test") == []
    # Until it is proven, the IdP cannot speak for an address there.
    assert a.sign_in(app.test_client(), "zoe@acme.test").status_code == 403

    # No record yet, then a record without the claim's value: still pending.
    with pytest.raises(Exception, match="no TXT record"):
        _check(world, dns_settings, a.ws)
    assert dns_server.questions == ["_cajex-challenge.acme.test"]
    with world.as_user(a.owner, a.ws) as (conn, _):
        conn.execute("select cajex.recheck_sso_domain('acme.test')")
    dns_server.records["_cajex-challenge.acme.test"] = [
        "v=spf1 -all",
        "cajex-domain-verification=" + "0" * 32,
    ]
    with pytest.raises(Exception, match="no TXT record"):
        _check(world, dns_settings, a.ws)
    assert _routes(world, "zoe@acme.test") == []

    # The claim's own value proves it: the domain routes, and its people sign in.
    with world.as_user(a.owner, a.ws) as (conn, _):
        conn.execute("select cajex.recheck_sso_domain('acme.test')")
    dns_server.records["_cajex-challenge.acme.test"].append(value)
    _check(world, dns_settings, a.ws)
    assert [r["workspace_id"] for r in _routes(world, "zoe@acme.test")] == [a.ws.id]
    assert a.sign_in(app.test_client(), "zoe@acme.test").status_code == 302
    assert "verified: its addresses sign in here" in a.page.get(
        f"/w/{a.ws.slug}/settings/sso"
    ).get_data(as_text=True)


def test_an_idp_cannot_take_over_accounts_at_a_domain_its_admin_does_not_control(
    world, app, signed_in, csrf_headers, dns_server, dns_settings
):
    """An admin of one Enterprise workspace claims the domain of people who
    have accounts elsewhere: a public mail domain is refused outright, and a
    company's domain stays pending without its DNS, so the admin's IdP signs
    nobody in as them and their workspaces stay closed."""
    victim = world.user(email="victim@bigcorp.test")
    victim_ws = world.workspace(victim, plan="free")
    world.project(victim_ws, victim, name="Victim secret project")
    gmail_user = world.user(email="someone@gmail.com")
    attacker = AdminConnection(
        world, signed_in, csrf_headers, "bigcorp.test", owner_email="mallory@gmail.com"
    )

    refused = attacker.claim("gmail.com")
    assert "a public email domain cannot be claimed" in refused.get_data(as_text=True)
    assert attacker.claim("bigcorp.test").status_code == 200
    dns_server.records["_cajex-challenge.bigcorp.test"] = [
        "cajex-domain-verification=" + "f" * 32
    ]
    with pytest.raises(Exception, match="no TXT record"):
        _check(world, dns_settings, attacker.ws)

    for email in ("victim@bigcorp.test", "someone@gmail.com"):
        browser = app.test_client()
        assert attacker.sign_in(browser, email).status_code == 403
        assert browser.get(f"/w/{victim_ws.slug}/api/v1/projects").status_code in (
            302,
            401,
        )
    live = world.admin.execute(
        "select count(*) as n from cajex.sessions where user_id = any(%s)"
        " and auth_method = 'sso_saml'",
        ([victim.id, gmail_user.id],),
    ).fetchone()["n"]
    assert live == 0


def test_the_operator_vouches_at_once_and_a_proven_domain_cannot_be_taken(
    world, signed_in, csrf_headers, dns_server, dns_settings
):
    """`cajex sso claim-domain` (a job context) routes at once; another
    workspace's later claim, even proven, does not take the route."""
    first = AdminConnection(world, signed_in, csrf_headers, "first.test")
    with world.as_job(first.ws) as (conn, _):
        assert (
            conn.execute(
                "select cajex.claim_sso_domain(%s, 'shared.test') as v", (first.cid,)
            ).fetchone()["v"]
            is None
        )
    assert [r["workspace_id"] for r in _routes(world, "x@shared.test")] == [first.ws.id]
    second = AdminConnection(world, signed_in, csrf_headers, "second.test")
    value = re.search(
        r"cajex-domain-verification=[0-9a-f]{32}",
        second.claim("shared.test").get_data(as_text=True),
    ).group(0)
    dns_server.records["_cajex-challenge.shared.test"] = [value]
    _check(world, dns_settings, second.ws)
    assert [r["workspace_id"] for r in _routes(world, "x@shared.test")] == [first.ws.id]
    assert "another workspace proved it first" in second.page.get(
        f"/w/{second.ws.slug}/settings/sso"
    ).get_data(as_text=True)


def test_only_the_owner_makes_a_connections_new_people_admins(
    world, signed_in, csrf_headers
):
    """Everyone a connection provisions joins with its default role: an admin
    may choose member or viewer, and only the owner may choose admin."""
    a = AdminConnection(world, signed_in, csrf_headers, "roles.test")
    admin = world.member(a.ws, role="admin")

    def choose(page, role):
        return page.post(
            f"/w/{a.ws.slug}/settings/sso",
            headers=csrf_headers,
            data={
                "action": "set_default_role",
                "connection_id": str(a.cid),
                "default_role": role,
            },
        )

    def default_role():
        return world.admin.execute(
            "select default_role from cajex.sso_connections where id = %s", (a.cid,)
        ).fetchone()["default_role"]

    by_admin = signed_in(admin)
    assert choose(by_admin, "viewer").status_code == 200
    assert default_role() == "viewer"
    refused = choose(by_admin, "admin")
    assert refused.status_code == 403
    assert "only the owner" in refused.get_data(as_text=True)
    assert default_role() == "viewer"
    assert choose(a.page, "admin").status_code == 200
    assert default_role() == "admin"
