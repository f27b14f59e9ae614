"""OIDC connections per workspace against real providers on loopback.

Two workspaces, each with its own provider; hostile callbacks and
back-channel logout tokens are refused and leave sessions untouched.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import httpx
import pytest
from structlog.testing import capture_logs

from cajex import crypto
from cajex.identity import oidc
from cajex.identity.fakeidp import FakeProvider, SigningKey, make_jwt
from cajex.sso import service

PUBLIC = "http://cajex.test"
EVENT = {"http://schemas.openid.net/event/backchannel-logout": {}}


@pytest.fixture(autouse=True)
def _fresh_caches():
    oidc.clear_caches()
    yield
    oidc.clear_caches()


class Tenant:
    def __init__(self, world, settings, domain: str):
        self.provider = FakeProvider(
            client_id=f"client-{domain}", client_secret="s3cret-" + domain
        ).start()
        self.owner = world.user(email=f"owner@{domain}")
        self.ws = world.workspace(self.owner, plan="enterprise")
        self.domain = domain
        with world.as_job(self.ws) as (conn, _):
            row = service.create_oidc(
                conn,
                crypto.master_key_from_settings(settings),
                issuer=self.provider.issuer,
                client_id=self.provider.client_id,
                client_secret=self.provider.client_secret,
            )
            self.cid = row["id"]
            conn.execute("select cajex.claim_sso_domain(%s, %s)", (self.cid, domain))
            conn.execute(
                "select cajex.set_sso_connection_status(%s, 'enabled')", (self.cid,)
            )
        self.provider.next_user = {
            "sub": "ada-1",
            "email": f"ada@{domain}",
            "email_verified": True,
            "sid": "idp-session-1",
        }

    def authorize(self, client) -> str:
        """Start at our login URL, let the provider approve; the callback path+query."""
        start = client.get(f"/sso/{self.cid}/login")
        assert start.status_code == 302, start.get_data(as_text=True)
        answer = httpx.get(start.location, follow_redirects=False)
        assert answer.status_code == 302
        parts = urllib.parse.urlsplit(answer.headers["location"])
        return parts.path + "?" + parts.query

    def logout_token(
        self, key: SigningKey | None = None, header: dict | None = None, **claims
    ) -> str:
        key = key or self.provider.current_key
        body = {
            "iss": self.provider.issuer,
            "aud": self.provider.client_id,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
            "sub": "ada-1",
            "sid": "idp-session-1",
            "events": EVENT,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return make_jwt(
            header or {"alg": key.alg, "kid": key.kid, "typ": "logout+jwt"}, body, key
        )


@pytest.fixture
def tenants(world, settings):
    a = Tenant(world, settings, "acme.test")
    b = Tenant(world, settings, "bravo.test")
    yield a, b
    a.provider.stop()
    b.provider.stop()


def live_sessions(world):
    return world.admin.execute(
        "select idp_subject, idp_session_id, sso_workspace_id from cajex.sessions"
        " where auth_method = 'sso_oidc' and revoked_at is null order by idp_subject"
    ).fetchall()


def test_sign_in_through_each_workspaces_provider(world, client, tenants, app):
    a, b = tenants
    assert client.get(a.authorize(client)).status_code == 302
    other = app.test_client()
    assert other.get(b.authorize(other)).status_code == 302
    rows = live_sessions(world)
    assert {r["sso_workspace_id"] for r in rows} == {a.ws.id, b.ws.id}
    assert client.get(f"/w/{a.ws.slug}/api/v1/projects").status_code == 200
    assert client.get(f"/w/{b.ws.slug}/api/v1/projects").status_code == 404
    # The client secret is stored sealed, never in clear.
    raw = world.admin.execute(
        "select oidc_client_secret from cajex.sso_connections where id = %s", (a.cid,)
    ).fetchone()["oidc_client_secret"]
    assert a.provider.client_secret.encode() not in bytes(raw)


def test_mix_up_an_answer_for_one_workspace_is_refused_at_anothers_callback(
    world, client, tenants
):
    a, b = tenants
    callback = a.authorize(client)
    with capture_logs() as logs:
        r = client.get(callback.replace(str(a.cid), str(b.cid)))
    assert r.status_code == 400
    assert [e["reason"] for e in logs if e.get("event") == "sso.signin_refused"] == [
        "mix_up"
    ]
    assert live_sessions(world) == []


def test_answer_from_another_provider_is_refused(world, client, tenants):
    a, b = tenants
    # Provider B answers with its own key and issuer, at A's callback.
    a.provider.tamper = lambda h, c: (
        {**h, "kid": b.provider.current_key.kid},
        {**c, "iss": b.provider.issuer},
        "key",
    )
    r = client.get(a.authorize(client))
    assert r.status_code == 400
    assert live_sessions(world) == []


@pytest.mark.parametrize(
    "mode",
    [
        "alg_none",
        "hs256_public",
        "wrong_audience",
        "expired",
        "wrong_nonce",
        "wrong_issuer",
        "future_iat",
        "no_sub",
        "azp_other",
        "two_audiences_no_azp",
        "no_nonce",
    ],
)
def test_hostile_id_tokens_are_refused(world, client, tenants, mode):
    a, _ = tenants

    def tamper(h, c):
        if mode == "alg_none":
            return {**h, "alg": "none"}, c, "none"
        if mode == "hs256_public":
            return {**h, "alg": "HS256"}, c, "hs256_public"
        if mode == "wrong_audience":
            return h, {**c, "aud": "someone-else"}, "key"
        if mode == "expired":
            return (
                h,
                {**c, "exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000},
                "key",
            )
        if mode == "wrong_issuer":
            return h, {**c, "iss": "https://evil.test"}, "key"
        if mode == "future_iat":
            return h, {**c, "iat": int(time.time()) + 3600}, "key"
        if mode == "no_sub":
            return h, {k: v for k, v in c.items() if k != "sub"}, "key"
        if mode == "azp_other":
            return h, {**c, "azp": "someone-else"}, "key"
        if mode == "two_audiences_no_azp":
            return h, {**c, "aud": [c["aud"], "someone-else"]}, "key"
        if mode == "no_nonce":
            return h, {k: v for k, v in c.items() if k != "nonce"}, "key"
        return h, {**c, "nonce": "not-the-nonce"}, "key"

    a.provider.tamper = tamper
    with capture_logs() as logs:
        r = client.get(a.authorize(client))
    assert r.status_code == 400
    assert [e for e in logs if e.get("event") == "sso.signin_refused"]
    assert live_sessions(world) == []


def test_key_rotation_is_followed(world, client, tenants):
    a, _ = tenants
    assert client.get(a.authorize(client)).status_code == 302
    a.provider.rotate()
    oidc.clear_caches()
    assert client.get(a.authorize(client)).status_code == 302


def test_unreachable_discovery_changes_nothing(world, settings):
    ws = world.workspace(plan="enterprise")
    from cajex.errors import AppError
    from cajex.localservices import free_port

    with pytest.raises(AppError) as info:
        with world.as_job(ws) as (conn, _):
            service.create_oidc(
                conn,
                crypto.master_key_from_settings(settings),
                issuer=f"http://127.0.0.1:{free_port()}",
                client_id="x",
                client_secret="y",
            )
    assert info.value.code == "invalid_provider"
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sso_connections"
        ).fetchone()["n"]
        == 0
    )


def test_entra_multi_tenant_issuer_is_refused():
    from cajex.errors import AppError

    with pytest.raises(AppError):
        service.entra_settings("https://login.microsoftonline.com/common/v2.0")
    assert service.entra_settings(
        "https://login.microsoftonline.com/1234-tid/v2.0"
    ) == {"provider": "entra", "tenant_id": "1234-tid"}


def _sign_in_two(client, app, a):
    assert client.get(a.authorize(client)).status_code == 302
    other = app.test_client()
    a.provider.next_user = {
        "sub": "bob-1",
        "email": f"bob@{a.domain}",
        "email_verified": True,
        "sid": "idp-session-2",
    }
    assert other.get(a.authorize(other)).status_code == 302
    return other


BAD_LOGOUT_TOKENS = {
    "other_key": lambda a: a.logout_token(key=SigningKey("stranger")),
    "wrong_issuer": lambda a: a.logout_token(iss="https://evil.test"),
    "wrong_audience": lambda a: a.logout_token(aud="someone-else"),
    "future_iat": lambda a: a.logout_token(iat=int(time.time()) + 3600),
    "no_event": lambda a: a.logout_token(events={"other": {}}),
    "with_nonce": lambda a: a.logout_token(nonce="n"),
    "wrong_typ": lambda a: a.logout_token(
        header={
            "alg": a.provider.current_key.alg,
            "kid": a.provider.current_key.kid,
            "typ": "JWT",
        }
    ),
    "no_jti": lambda a: a.logout_token(jti=None),
    "no_iat": lambda a: a.logout_token(iat=None),
    "expired": lambda a: a.logout_token(
        iat=int(time.time()) - 300, exp=int(time.time()) - 240
    ),
    "neither_sub_nor_sid": lambda a: a.logout_token(sub=None, sid=None),
    "stale_iat": lambda a: a.logout_token(iat=int(time.time()) - 7200),
    "event_not_an_object": lambda a: a.logout_token(
        events={"http://schemas.openid.net/event/backchannel-logout": "yes"}
    ),
    "garbage": lambda a: "not.a.jwt",
    "missing": lambda a: "",
    "alg_none": lambda a: make_jwt(
        {"alg": "none", "typ": "logout+jwt"},
        {
            "iss": a.provider.issuer,
            "aud": a.provider.client_id,
            "iat": int(time.time()),
            "jti": "x",
            "sub": "ada-1",
            "events": EVENT,
        },
        None,
    ),
}


@pytest.mark.parametrize("defect", sorted(BAD_LOGOUT_TOKENS))
def test_defective_logout_tokens_leave_sessions_untouched(
    world, client, app, tenants, defect
):
    a, _ = tenants
    _sign_in_two(client, app, a)
    token = BAD_LOGOUT_TOKENS[defect](a)
    with capture_logs() as logs:
        r = client.post(
            f"/sso/oidc/{a.cid}/backchannel-logout", data={"logout_token": token}
        )
    assert r.status_code == 400, r.get_data(as_text=True)
    refused = [e for e in logs if e.get("event") == "sso.signin_refused"]
    assert refused and refused[0]["reason"] == r.json["error"]
    assert len(live_sessions(world)) == 2


def test_valid_logout_token_ends_only_its_sessions_and_is_single_use(
    world, client, app, tenants
):
    a, b = tenants
    _sign_in_two(client, app, a)
    third = app.test_client()
    assert (
        third.get(b.authorize(third)).status_code == 302
    )  # same sub and sid at provider B
    token = a.logout_token()
    r = client.post(
        f"/sso/oidc/{a.cid}/backchannel-logout", data={"logout_token": token}
    )
    assert r.status_code == 200 and r.json == {"ended": 1}
    left = [(x["idp_subject"], x["sso_workspace_id"]) for x in live_sessions(world)]
    assert sorted(left, key=str) == sorted(
        [("ada-1", b.ws.id), ("bob-1", a.ws.id)], key=str
    )
    assert client.get(f"/w/{a.ws.slug}/api/v1/projects").status_code == 401
    again = client.post(
        f"/sso/oidc/{a.cid}/backchannel-logout", data={"logout_token": token}
    )
    assert again.status_code == 400
    # A's token at B's endpoint is refused too (issuer and audience are B's).
    at_b = client.post(
        f"/sso/oidc/{b.cid}/backchannel-logout", data={"logout_token": a.logout_token()}
    )
    assert at_b.status_code == 400
    assert len(live_sessions(world)) == 2


def test_logout_by_sub_alone_ends_that_subjects_sessions(world, client, app, tenants):
    a, _ = tenants
    _sign_in_two(client, app, a)
    r = client.post(
        f"/sso/oidc/{a.cid}/backchannel-logout",
        data={"logout_token": a.logout_token(sid=None)},
    )
    assert r.status_code == 200 and r.json == {"ended": 1}
    assert [x["idp_subject"] for x in live_sessions(world)] == ["bob-1"]


def test_cli_adds_and_lists_connections(
    world, db_urls, settings, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from cajex import cli as cli_module
    from cajex.sso import fakeidp

    if "sso" not in cli_module.cli.commands:
        cli_module._register_areas()
    cli_main = cli_module.cli

    ws = world.workspace(plan="enterprise")
    idp = fakeidp.TestIdP("https://idp.cli.test/")
    md = tmp_path / "md.xml"
    md.write_bytes(idp.entra_metadata())
    monkeypatch.setenv("CAJEX_CONTEXT_SECRET", settings.context_secret)
    monkeypatch.setenv("CAJEX_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("CAJEX_MASTER_KEY", settings.master_key)
    runner = CliRunner()
    out = runner.invoke(
        cli_main,
        [
            "sso",
            "add-saml",
            "--workspace",
            ws.slug,
            "--metadata",
            str(md),
            "--allow-idp-initiated",
            "--database-url",
            db_urls["app"],
        ],
    )
    assert out.exit_code == 0, out.output
    added = json.loads(out.output)
    assert added["acs_url"] == f"{PUBLIC}/sso/saml/{added['connection_id']}/acs"
    for key in ("entity_id", "slo_url", "redirect_uri"):
        assert added[key].startswith(PUBLIC)
    listed = runner.invoke(
        cli_main,
        ["sso", "list", "--workspace", ws.slug, "--database-url", db_urls["app"]],
    )
    assert [c["connection_id"] for c in json.loads(listed.output)] == [
        added["connection_id"]
    ]
    free = world.workspace(plan="free")
    refused = runner.invoke(
        cli_main,
        [
            "sso",
            "add-saml",
            "--workspace",
            free.slug,
            "--metadata",
            str(md),
            "--database-url",
            db_urls["app"],
        ],
    )
    assert refused.exit_code != 0 and "plan" in refused.output
    bad = tmp_path / "bad.xml"
    bad.write_text("<nope/>")
    broken = runner.invoke(
        cli_main,
        [
            "sso",
            "add-saml",
            "--workspace",
            ws.slug,
            "--metadata",
            str(bad),
            "--database-url",
            db_urls["app"],
        ],
    )
    assert broken.exit_code != 0 and "EntityDescriptor" in broken.output


def _cli(args, db_urls, settings, monkeypatch):
    from click.testing import CliRunner

    from cajex import cli as cli_module

    if "sso" not in cli_module.cli.commands:
        cli_module._register_areas()
    monkeypatch.setenv("CAJEX_CONTEXT_SECRET", settings.context_secret)
    monkeypatch.setenv("CAJEX_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("CAJEX_MASTER_KEY", settings.master_key)
    return CliRunner().invoke(cli_module.cli, [*args, "--database-url", db_urls["app"]])


def test_cli_add_oidc_then_jit_provisioning_with_its_default_role(
    world, client, db_urls, settings, monkeypatch
):
    provider = FakeProvider(client_id="cli-client", client_secret="cli-secret").start()
    try:
        ws = world.workspace(plan="enterprise")
        # The discovery URL pasted as the issuer resolves to the issuer.
        out = _cli(
            [
                "sso",
                "add-oidc",
                "--workspace",
                ws.slug,
                "--issuer",
                provider.issuer + "/.well-known/openid-configuration",
                "--client-id",
                provider.client_id,
                "--client-secret",
                provider.client_secret,
                "--default-role",
                "viewer",
            ],
            db_urls,
            settings,
            monkeypatch,
        )
        assert out.exit_code == 0, out.output
        added = json.loads(out.output)
        cid = added["connection_id"]
        assert added["issuer"] == provider.issuer
        assert added["redirect_uri"] == f"{PUBLIC}/sso/oidc/{cid}/callback"
        assert added["default_role"] == "viewer"
        for args in (
            [
                "sso",
                "claim-domain",
                "--workspace",
                ws.slug,
                "--connection",
                cid,
                "--domain",
                "cli.test",
            ],
            ["sso", "enable", "--workspace", ws.slug, "--connection", cid],
        ):
            step = _cli(args, db_urls, settings, monkeypatch)
            assert step.exit_code == 0, step.output
        # The secret is sealed with the workspace's key, not stored in clear.
        raw = world.admin.execute(
            "select oidc_client_secret from cajex.sso_connections where id = %s",
            (cid,),
        ).fetchone()["oidc_client_secret"]
        assert b"cli-secret" not in bytes(raw)
        provider.next_user = {
            "sub": "cli-1",
            "email": "newcomer@cli.test",
            "email_verified": True,
        }
        start = client.get(f"/sso/{cid}/login")
        answer = httpx.get(start.location, follow_redirects=False)
        parts = urllib.parse.urlsplit(answer.headers["location"])
        assert client.get(parts.path + "?" + parts.query).status_code == 302
        role = world.admin.execute(
            "select m.role from cajex.memberships m join cajex.users u"
            " on u.id = m.user_id where u.email = 'newcomer@cli.test'"
            " and m.workspace_id = %s",
            (ws.id,),
        ).fetchone()["role"]
        assert role == "viewer"
        listed = _cli(
            ["sso", "list", "--workspace", ws.slug], db_urls, settings, monkeypatch
        )
        assert [c["connection_id"] for c in json.loads(listed.output)] == [cid]
        # Another workspace lists none of it.
        other = world.workspace(plan="enterprise")
        listed = _cli(
            ["sso", "list", "--workspace", other.slug], db_urls, settings, monkeypatch
        )
        assert json.loads(listed.output) == []
    finally:
        provider.stop()


def test_cli_add_oidc_with_an_unreachable_issuer_explains_and_changes_nothing(
    world, db_urls, settings, monkeypatch
):
    from cajex.localservices import free_port

    ws = world.workspace(plan="enterprise")
    out = _cli(
        [
            "sso",
            "add-oidc",
            "--workspace",
            ws.slug,
            "--issuer",
            f"http://127.0.0.1:{free_port()}",
            "--client-id",
            "x",
            "--client-secret",
            "y",
        ],
        db_urls,
        settings,
        monkeypatch,
    )
    assert out.exit_code != 0 and "issuer" in out.output
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.sso_connections"
        ).fetchone()["n"]
        == 0
    )


def test_entra_documented_forms():
    from cajex.errors import AppError

    tid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    # The v2.0 and v1 issuers name the tenant; no fetch is needed.
    assert service.resolve_oidc_provider(
        f"https://login.microsoftonline.com/{tid}/v2.0"
    ) == (
        f"https://login.microsoftonline.com/{tid}/v2.0",
        None,
        {"provider": "entra", "tenant_id": tid},
    )
    assert service.entra_settings(f"https://sts.windows.net/{tid}/") == {
        "provider": "entra",
        "tenant_id": tid,
    }
    assert service.entra_settings(
        f"https://login.microsoftonline.us/{tid.upper()}/v2.0"
    ) == {"provider": "entra", "tenant_id": tid}
    assert service.entra_settings("https://acme.okta.com") == {}
    # Multi-tenant endpoints, in every documented form, are refused.
    for url in (
        "https://login.microsoftonline.com/common/v2.0",
        "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration",
        "https://login.microsoftonline.com/consumers/v2.0",
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        "https://login.microsoftonline.com/common/.well-known/openid-configuration",
    ):
        with pytest.raises(AppError) as info:
            service.resolve_oidc_provider(url)
        assert info.value.status == 422 and "multi-tenant" in info.value.message


def _entra_tenant(world, settings, tid):
    t = Tenant(world, settings, "entra.test")
    with world.as_job(t.ws) as (conn, _):
        conn.execute(
            "select cajex.update_sso_connection(%s, %s::jsonb)",
            (
                t.cid,
                json.dumps({"settings": {"provider": "entra", "tenant_id": tid}}),
            ),
        )
    return t


def test_entra_tid_claim_must_be_the_connections_tenant(world, client, settings):
    tid = "0f7c52a6-1111-4a2b-9c3d-000000000001"
    t = _entra_tenant(world, settings, tid)
    try:
        t.provider.next_user = {**t.provider.next_user, "tid": "someone-else"}
        with capture_logs() as logs:
            r = client.get(t.authorize(client))
        assert r.status_code == 400
        assert [
            e["reason"] for e in logs if e.get("event") == "sso.signin_refused"
        ] == ["entra_tenant"]
        assert live_sessions(world) == []
        t.provider.next_user = {**t.provider.next_user, "tid": tid.upper()}
        assert client.get(t.authorize(client)).status_code == 302
    finally:
        t.provider.stop()


def test_entra_group_ids_and_overage_in_id_tokens(world, client, settings):
    tid = "0f7c52a6-1111-4a2b-9c3d-000000000002"
    group = "b4e1c0de-2222-4a2b-9c3d-00000000abcd"  # Entra sends object ids
    t = _entra_tenant(world, settings, tid)
    try:
        with world.as_user(t.owner, t.ws) as (conn, _):
            conn.execute(
                "select cajex.set_group_role_mapping(%s, 'admin')", (group.upper(),)
            )
        base = {**t.provider.next_user, "tid": tid}

        def sign_in(**claims):
            t.provider.next_user = {**base, **claims}
            browser = client.application.test_client()
            assert browser.get(t.authorize(browser)).status_code == 302

        def state():
            return world.admin.execute(
                "select m.role, i.groups, i.groups_known from cajex.memberships m"
                " join cajex.sso_identities i on i.user_id = m.user_id"
                " and i.workspace_id = m.workspace_id where m.workspace_id = %s",
                (t.ws.id,),
            ).fetchone()

        sign_in(groups=[group, "c0ffee00-0000-0000-0000-000000000000"])
        assert state()["role"] == "admin"
        # Overage: the groups are unknown, not empty; role and groups stay.
        sign_in(
            _claim_names={"groups": "src1"},
            _claim_sources={"src1": {"endpoint": "https://graph.microsoft.com/x"}},
        )
        row = state()
        assert row["role"] == "admin" and row["groups_known"] is False
        assert row["groups"] == [group, "c0ffee00-0000-0000-0000-000000000000"]
        # Re-evaluated at the next sign-in that names the groups.
        sign_in(groups=[])
        assert state()["role"] == "member"
    finally:
        t.provider.stop()


def test_rp_initiated_logout_ends_the_session_and_goes_to_the_provider(
    world, client, tenants
):
    a, b = tenants
    assert client.get(a.authorize(client)).status_code == 302
    with client.session_transaction() as sess:
        sess["csrf"] = "t"
    out = client.post("/sso/logout", headers={"X-CSRF-Token": "t"})
    assert out.status_code == 302
    target = urllib.parse.urlsplit(out.location)
    assert f"{target.scheme}://{target.netloc}{target.path}" == (
        a.provider.issuer + "/logout"
    )
    query = urllib.parse.parse_qs(target.query)
    assert query["client_id"] == [a.provider.client_id]
    assert query["post_logout_redirect_uri"] == [PUBLIC + "/"]
    assert live_sessions(world) == []
    assert client.get(f"/w/{a.ws.slug}/api/v1/projects").status_code == 401


def test_logout_by_sid_alone_ends_that_session(world, client, app, tenants):
    a, _ = tenants
    _sign_in_two(client, app, a)
    r = client.post(
        f"/sso/oidc/{a.cid}/backchannel-logout",
        data={"logout_token": a.logout_token(sub=None, sid="idp-session-2")},
    )
    assert r.status_code == 200 and r.json == {"ended": 1}
    assert [x["idp_subject"] for x in live_sessions(world)] == ["ada-1"]


def test_admin_adds_oidc_on_the_page_and_a_multi_tenant_issuer_is_explained(
    world, signed_in, csrf_headers
):
    ws = world.workspace(plan="enterprise")
    page = signed_in(ws.owner)
    bad = page.post(
        f"/w/{ws.slug}/settings/sso",
        headers=csrf_headers,
        data={
            "action": "add_oidc",
            "issuer": "https://login.microsoftonline.com/common/v2.0",
            "client_id": "x",
            "client_secret": "y",
        },
    )
    assert bad.status_code == 422 and "multi-tenant" in bad.get_data(as_text=True)
    count = "select count(*) as n from cajex.sso_connections where workspace_id = %s"
    assert world.admin.execute(count, (ws.id,)).fetchone()["n"] == 0
    provider = FakeProvider().start()
    try:
        ok = page.post(
            f"/w/{ws.slug}/settings/sso",
            headers=csrf_headers,
            data={
                "action": "add_oidc",
                "issuer": provider.issuer + "/.well-known/openid-configuration",
                "client_id": provider.client_id,
                "client_secret": provider.client_secret,
            },
        )
    finally:
        provider.stop()
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert "/backchannel-logout" in ok.get_data(as_text=True)
    assert world.admin.execute(count, (ws.id,)).fetchone()["n"] == 1
    other = world.workspace(plan="enterprise")
    theirs = signed_in(other.owner).get(f"/w/{other.slug}/settings/sso")
    assert "/backchannel-logout" not in theirs.get_data(as_text=True)


@pytest.mark.parametrize("defect", ["wrong_state", "no_state", "no_code", "error"])
def test_hostile_callbacks_are_refused(world, client, tenants, defect):
    a, _ = tenants
    callback = a.authorize(client)
    path, _, query = callback.partition("?")
    params = dict(urllib.parse.parse_qsl(query))
    if defect == "wrong_state":
        params["state"] = "x" * 43
    elif defect == "no_state":
        params.pop("state")
    elif defect == "no_code":
        params.pop("code")
    else:
        params = {"error": "access_denied", "state": params["state"]}
    with capture_logs() as logs:
        r = client.get(path + "?" + urllib.parse.urlencode(params))
    assert r.status_code == 400
    assert [e for e in logs if e.get("event") == "sso.signin_refused"]
    assert live_sessions(world) == []
