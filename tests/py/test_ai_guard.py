"""The gateway calls only public provider addresses (SSRF), follows no
redirect, settles its reservation whatever became of the member's session,
and releases reservations of calls that never settled."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from cajex import crypto
from cajex.ai import gateway as gw
from cajex.ai import netguard
from cajex.ai import providers as providers_mod
from cajex.ai import settings as ai_settings
from cajex.ai.fakeprovider import FakeProvider
from cajex.errors import AppError
from cajex.localservices import free_port

KEY = "sk-guard-" + "g" * 24 + "LAST"
# A self-hosted model's address, for the tests of settling (adapters stand in).
LOOPBACK = "http://127.0.0.1:9/v1"

#: Each class of address the gateway refuses while private hosts are not allowed.
INTERNAL = [
    "http://127.0.0.1:{port}/v1",
    "http://[::1]:{port}/v1",
    "http://10.0.0.1:{port}/v1",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/v1",
    "http://[::ffff:127.0.0.1]:{port}/v1",
    "http://0.0.0.0:{port}/v1",
    "http://224.0.0.1/v1",
    "http://localhost:{port}/v1",
]


@pytest.fixture
def master():
    return crypto.Keyring(crypto.LocalMasterKey(os.urandom(32)))


class Internal:
    """A loopback service that must never be reached; records every request.
    With `redirect_to`, it answers 302 to there."""

    def __init__(self, redirect_to: str | None = None):
        self.hits: list[tuple[str, str]] = []
        self.port = free_port()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                owner.hits.append((self.command, self.path))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                out = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "INTERNAL"},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def configure(world, ws, master, allow=True, **changes):
    base = {
        "enabled": True,
        "provider": "openai_compatible",
        "model": "m",
        "base_url": "https://provider.example.test/v1",
        "budget_tokens": 100000,
        "max_output_tokens": 100,
        "timeout_seconds": 5,
    }
    base.update(changes)
    with world.as_user(ws.owner, ws) as (conn, _):
        return ai_settings.save(
            conn, master, ws.id, base, api_key=KEY, allow_private_hosts=allow
        )


def force_base_url(world, ws, url):
    """Store a URL the save checks would refuse (an older row, or SQL run by hand)."""
    world.admin.execute(
        "update cajex.ai_settings set base_url = %s where workspace_id = %s",
        (url, ws.id),
    )


def counters(world, ws) -> dict:
    rows = world.admin.execute(
        "select scope, used_tokens, reserved_tokens from cajex.ai_budget_counters"
        " where workspace_id = %s",
        (ws.id,),
    ).fetchall()
    return {r["scope"]: (r["used_tokens"], r["reserved_tokens"]) for r in rows}


def open_reservations(world, ws) -> int:
    return world.admin.execute(
        "select count(*) as n from cajex.ai_reservations where workspace_id = %s",
        (ws.id,),
    ).fetchone()["n"]


def usage(world, ws) -> tuple[int, int]:
    row = world.admin.execute(
        "select coalesce(sum(requests), 0) as ok, coalesce(sum(failed_requests), 0) as failed"
        " from cajex.ai_usage where workspace_id = %s",
        (ws.id,),
    ).fetchone()
    return int(row["ok"]), int(row["failed"])


# -- saving ------------------------------------------------------------------------


@pytest.mark.parametrize("url", INTERNAL)
def test_saving_an_internal_base_url_is_refused(world, master, url):
    ws = world.workspace(plan="pro")
    with pytest.raises(AppError) as err:
        configure(world, ws, master, allow=False, base_url=url.format(port=free_port()))
    assert (err.value.status, err.value.code, err.value.field) == (
        422,
        "invalid",
        "base_url",
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@provider.example.test/v1",
        "https://token@provider.example.test/v1",
        "https://provider.example.test/v1?api_key=x",
        "https://provider.example.test/v1#frag",
    ],
)
def test_saving_userinfo_query_or_fragment_is_refused_even_when_private_is_allowed(
    world, master, url
):
    ws = world.workspace(plan="pro")
    with pytest.raises(psycopg.Error) as err:
        configure(world, ws, master, allow=True, base_url=url)
    assert (
        err.value.diag.sqlstate == "CXINV"
        and err.value.diag.message_detail == "base_url"
    )


def test_the_settings_api_refuses_internal_urls_when_the_setting_is_off(
    world, signed_in
):
    ws = world.workspace(plan="pro")
    client = signed_in(ws.owner)
    for url in (
        "http://127.0.0.1:9/v1",
        "http://[::1]:9/v1",
        "http://10.0.0.1/v1",
        "http://169.254.169.254/",
        "http://localhost:9/v1",
        "https://u:p@provider.example.test/v1",
        "https://provider.example.test/v1?token=x",
    ):
        resp = client.patch(
            f"/w/{ws.slug}/api/v1/ai/settings",
            json={"provider": "openai_compatible", "base_url": url},
        )
        error = resp.get_json()["error"]
        assert (resp.status_code, error["code"], error["field"]) == (
            422,
            "invalid",
            "base_url",
        ), url


def test_private_hosts_can_be_saved_when_the_deployment_allows_them(world, master):
    ws = world.workspace(plan="pro")
    saved = configure(world, ws, master, allow=True, base_url="http://127.0.0.1:9/v1")
    assert saved["base_url"] == "http://127.0.0.1:9/v1"


# -- calling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    INTERNAL + ["http://u:p@127.0.0.1:{port}/v1", "http://127.0.0.1:{port}/v1?token=x"],
)
def test_calling_an_internal_base_url_is_refused_and_nothing_is_sent(
    world, master, url
):
    with Internal() as internal:
        ws = world.workspace(plan="pro")
        configure(world, ws, master)
        force_base_url(world, ws, url.format(port=internal.port))
        gateway = gw.Gateway(master, allow_private_hosts=False)
        with pytest.raises(AppError) as err:
            gateway.complete(world.scope(ws.owner, ws), "project_summary", "hi")
        assert (err.value.status, err.value.code) == (409, "ai_provider_refused")
        assert internal.hits == []
    assert open_reservations(world, ws) == 0
    assert all(reserved == 0 for _, reserved in counters(world, ws).values())
    assert usage(world, ws) == (0, 1)


@pytest.mark.parametrize("adapter", ["openai_chat", "anthropic_messages"])
def test_the_clients_check_the_address_again_when_they_connect(adapter):
    """Without the gateway's own check first: the transport refuses, pins, sends nothing."""
    with Internal() as internal:
        for host in ("127.0.0.1", "localhost"):
            request = providers_mod.Request(
                provider="openai_compatible",
                model="m",
                api_key=KEY,
                base_url=f"http://{host}:{internal.port}/v1",
                system="s",
                prompt="p",
                max_output_tokens=50,
                timeout_seconds=3,
                allow_private_hosts=False,
            )
            with pytest.raises(providers_mod.ProviderError) as err:
                getattr(providers_mod, adapter)(request)
            assert err.value.kind == "refused"
        assert internal.hits == []


def test_addresses_are_classified_with_their_embedded_ipv4():
    import ipaddress

    for text in (
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ):
        assert not netguard.is_public(ipaddress.ip_address(text)), text
    for text in ("93.184.216.34", "2606:4700::6810:85e5", "::ffff:8.8.8.8"):
        assert netguard.is_public(ipaddress.ip_address(text)), text


def test_a_redirect_from_the_provider_is_not_followed(world, master):
    with Internal() as target, Internal(redirect_to=target.url + "/latest/") as hop:
        ws = world.workspace(plan="pro")
        configure(world, ws, master, base_url=hop.url + "/v1")
        gateway = gw.Gateway(master, allow_private_hosts=True)
        with pytest.raises(AppError) as err:
            gateway.complete(world.scope(ws.owner, ws), "project_summary", "hi")
        assert err.value.code == "ai_provider_error"
        assert [method for method, _ in hop.hits] == ["POST"]
        assert target.hits == []
    assert open_reservations(world, ws) == 0


def test_with_private_hosts_allowed_the_loopback_provider_answers(world, master):
    with FakeProvider(api_key=KEY) as fake:
        ws = world.workspace(plan="pro")
        configure(world, ws, master, base_url=fake.url + "/v1")
        result = gw.Gateway(master, allow_private_hosts=True).complete(
            world.scope(ws.owner, ws), "project_summary", "hi"
        )
        assert result.total_tokens > 0 and len(fake.requests) == 1


def test_a_gateway_call_logs_no_key_and_no_url(world, master):
    path = os.environ["CAJEX_LOG_FILE"]
    before = os.path.getsize(path)
    with FakeProvider(api_key=KEY) as fake:
        ws = world.workspace(plan="pro")
        configure(world, ws, master, base_url=fake.url + "/v1")
        gw.Gateway(master, allow_private_hosts=True).complete(
            world.scope(ws.owner, ws), "project_summary", "hi"
        )
    with open(path) as f:
        f.seek(before)
        new = f.read()
    assert '"ai.completed"' in new
    assert KEY not in new and KEY[-12:] not in new
    assert "HTTP Request" not in new and fake.url not in new


# -- settling ----------------------------------------------------------------------


def test_a_member_removed_during_the_call_still_settles(world, master):
    ws = world.workspace(plan="pro")
    configure(world, ws, master, budget_tokens=5000, base_url=LOOPBACK)
    member = world.member(ws, role="member")

    def provider(_request):
        world.admin.execute(
            "update cajex.memberships set status = 'deactivated'"
            " where workspace_id = %s and user_id = %s",
            (ws.id, member.id),
        )
        return providers_mod.Answer("text", 10, 10, "m")

    gateway = gw.Gateway(
        master,
        providers={"openai_compatible": provider},
        context_secret=world.secret,
        allow_private_hosts=True,
    )
    result = gateway.complete(world.scope(member, ws), "project_summary", "hi")
    assert (result.input_tokens, result.output_tokens) == (10, 10)
    assert open_reservations(world, ws) == 0
    assert counters(world, ws)["all"] == (20, 0)
    assert usage(world, ws) == (1, 0)
    # ... and the member opens nothing any more.
    with pytest.raises(psycopg.Error):
        world.scope(member, ws).commit_with("select 1")


def test_a_session_revoked_during_a_failed_call_still_returns_the_reservation(
    world, master
):
    ws = world.workspace(plan="pro")
    configure(world, ws, master, budget_tokens=5000, base_url=LOOPBACK)
    member = world.member(ws, role="member")

    def provider(_request):
        world.admin.execute(
            "update cajex.sessions set revoked_at = now() where user_id = %s",
            (member.id,),
        )
        raise providers_mod.ProviderError("timeout")

    gateway = gw.Gateway(
        master,
        providers={"openai_compatible": provider},
        context_secret=world.secret,
        allow_private_hosts=True,
    )
    with pytest.raises(AppError) as err:
        gateway.complete(world.scope(member, ws), "project_summary", "hi")
    assert err.value.code == "ai_timeout"
    assert open_reservations(world, ws) == 0
    assert counters(world, ws)["all"] == (0, 0)
    assert usage(world, ws) == (0, 1)


def test_a_reservation_that_never_settled_is_released_by_the_next_call(world, master):
    ws = world.workspace(plan="pro")
    configure(world, ws, master, budget_tokens=5000, base_url=LOOPBACK)
    scope = world.scope(ws.owner, ws)
    # Two calls whose worker died after reserving: one long ago, one just now.
    for _ in range(2):
        (row,) = scope.commit_with(
            "select * from cajex_private.ai_reserve('project_summary', 100)"
        )
        assert row["status"] == "ok"
    stale, fresh = (
        r["id"]
        for r in world.admin.execute(
            "select id from cajex.ai_reservations where workspace_id = %s", (ws.id,)
        ).fetchall()
    )
    world.admin.execute(
        "update cajex.ai_reservations set created_at = now() - interval '12 minutes'"
        " where id = %s",
        (stale,),
    )
    held = counters(world, ws)["all"][1]

    gateway = gw.Gateway(
        master,
        providers={"openai_compatible": lambda r: providers_mod.Answer("t", 5, 5, "m")},
        context_secret=world.secret,
        allow_private_hosts=True,
    )
    gateway.complete(scope, "project_summary", "hi")
    left = world.admin.execute(
        "select id, tokens from cajex.ai_reservations where workspace_id = %s", (ws.id,)
    ).fetchall()
    assert [r["id"] for r in left] == [fresh]
    assert counters(world, ws)["all"] == (10, left[0]["tokens"])
    assert held == 2 * left[0]["tokens"]
    assert usage(world, ws) == (1, 1)
    # A late settlement of the released reservation does nothing.
    assert (
        scope.commit_with(
            "select * from cajex_private.ai_settle($1, 'm', 1, 1, false)", (stale,)
        )
        == []
    )
    assert counters(world, ws)["all"][0] == 10
