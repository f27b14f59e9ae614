"""The AI gateway against a provider server on loopback speaking the Anthropic
and OpenAI HTTP APIs: refusals, budgets, usage, failures, and isolation."""

from __future__ import annotations

import os
import threading
import uuid

import psycopg
import pytest

from cajex import crypto
from cajex.ai import gateway as gw
from cajex.ai import settings as ai_settings
from cajex.ai.fakeprovider import FakeProvider
from cajex.errors import AppError

KEY = "sk-test-" + "x" * 24 + "LAST"


@pytest.fixture(autouse=True)
def _private_hosts_allowed(monkeypatch):
    """The fake provider listens on loopback: allow it, as a self-hosted model."""
    monkeypatch.setenv("CAJEX_AI_ALLOW_PRIVATE_HOSTS", "1")


@pytest.fixture
def master():
    return crypto.Keyring(crypto.LocalMasterKey(os.urandom(32)))


@pytest.fixture
def fake():
    with FakeProvider(api_key=KEY) as server:
        yield server


def configure(world, ws, master, fake, **changes):
    base = {
        "enabled": True,
        "provider": "anthropic",
        "model": "claude-test",
        "base_url": fake.url,
        "budget_tokens": 100000,
        "max_output_tokens": 100,
        "timeout_seconds": 5,
    }
    base.update(changes)
    with world.as_user(ws.owner, ws) as (conn, _):
        return ai_settings.save(conn, master, ws.id, base, api_key=KEY)


def change(world, ws, master, **changes):
    with world.as_user(ws.owner, ws) as (conn, _):
        return ai_settings.save(conn, master, ws.id, changes)


def ask(
    world,
    ws,
    master,
    user=None,
    task="project_summary",
    prompt="Summarise: a project",
    conn=None,
):
    gateway = gw.Gateway(master)
    return gateway.complete(world.scope(user or ws.owner, ws, conn=conn), task, prompt)


def counters(world, ws):
    return world.admin.execute(
        "select scope, used_tokens, reserved_tokens, notified_at from cajex.ai_budget_counters"
        " where workspace_id = %s order by scope",
        (ws.id,),
    ).fetchall()


def usage(world, ws):
    return world.admin.execute(
        "select model, task, requests, failed_requests, input_tokens, output_tokens"
        " from cajex.ai_usage where workspace_id = %s order by model",
        (ws.id,),
    ).fetchall()


@pytest.fixture
def two(world):
    return world.workspace(plan="pro"), world.workspace(plan="pro")


def test_anthropic_call_records_usage_and_releases_the_rest(world, two, master, fake):
    a, _ = two
    configure(world, a, master, fake)
    result = ask(world, a, master)
    assert result.text == "A short drafted summary."
    assert (result.input_tokens, result.output_tokens) == (40, 25)
    assert (
        fake.requests[-1]["path"] == "/v1/messages" and fake.requests[-1]["key"] == KEY
    )
    assert fake.requests[-1]["max_tokens"] == 100
    [row] = counters(world, a)
    assert row["used_tokens"] == 65 and row["reserved_tokens"] == 0
    assert usage(world, a) == [
        {
            "model": "claude-test",
            "task": "project_summary",
            "requests": 1,
            "failed_requests": 0,
            "input_tokens": 40,
            "output_tokens": 25,
        }
    ]


def test_openai_and_compatible_providers(world, two, master, fake):
    a, b = two
    configure(
        world,
        a,
        master,
        fake,
        provider="openai",
        model="gpt-test",
        base_url=fake.url + "/v1",
    )
    configure(
        world,
        b,
        master,
        fake,
        provider="openai_compatible",
        model="local-llm",
        base_url=fake.url + "/v1",
    )
    ra, rb = ask(world, a, master), ask(world, b, master)
    assert (ra.model, rb.model) == ("gpt-test", "local-llm")
    assert all(r["path"] == "/v1/chat/completions" for r in fake.requests)
    assert (
        usage(world, a)[0]["input_tokens"] == 40
        and usage(world, b)[0]["model"] == "local-llm"
    )


def test_off_refuses_at_once_without_decrypting_the_key(
    world, two, master, fake, monkeypatch
):
    a, _ = two
    configure(world, a, master, fake)
    change(world, a, master, enabled=False)

    def no_decrypt(*args, **kwargs):
        raise AssertionError("a key was decrypted")

    # Every way to a plaintext goes through these two.
    monkeypatch.setattr(crypto, "open_sealed", no_decrypt)
    monkeypatch.setattr(crypto.Keyring, "unwrap", no_decrypt)
    with pytest.raises(AppError) as err:
        ask(world, a, master)
    assert err.value.code == "ai_off"
    assert fake.requests == [] and counters(world, a) == []


def test_plan_without_ai_refuses_without_decrypting(world, master, fake, monkeypatch):
    ws = world.workspace(plan="pro")
    configure(world, ws, master, fake)
    world.admin.execute(
        "update cajex.workspaces set plan = 'free' where id = %s", (ws.id,)
    )
    monkeypatch.setattr(
        crypto, "open_sealed", lambda *a, **k: (_ for _ in ()).throw(AssertionError())
    )
    monkeypatch.setattr(
        crypto.Keyring,
        "unwrap",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError()),
    )
    with pytest.raises(AppError) as err:
        ask(world, ws, master)
    assert (err.value.status, err.value.code) == (402, "plan_feature")
    assert fake.requests == []


def test_a_workspace_limited_for_non_payment_gets_no_ai_until_paid(
    world, two, master, fake
):
    a, b = two
    configure(world, a, master, fake)
    configure(world, b, master, fake)
    member = world.member(a, role="member")
    with world.as_user(a.owner, a) as (conn, _):
        conn.execute("select cajex.record_stripe_customer('cus_aiunpaid')")

    def grace_ends(when: str) -> None:
        world.admin.execute(
            "update cajex.workspace_billing set payment_failed_at = now() - interval '8 days',"
            f" grace_until = now() + interval '{when}' where workspace_id = %s",
            (a.id,),
        )

    # Inside the grace period nothing is limited.
    grace_ends("1 day")
    assert ask(world, a, master).output_tokens == 25
    grace_ends("-1 second")
    before = counters(world, a)
    # Members may not read the billing row, and are limited all the same.
    for user in (a.owner, member):
        with pytest.raises(AppError) as err:
            ask(world, a, master, user=user)
        assert (err.value.status, err.value.code) == (402, "plan_feature")
        with world.as_user(user, a) as (conn, _):
            assert not conn.execute(
                "select cajex.workspace_has_feature('ai') as ok"
            ).fetchone()["ok"]
            status = conn.execute("select cajex.ai_status() as s").fetchone()["s"]
            assert status["plan_allows"] is False
    # Nothing was reserved and the provider was not called; the other
    # workspace is untouched.
    assert counters(world, a) == before and len(fake.requests) == 1
    assert ask(world, b, master).output_tokens == 25
    world.admin.execute(
        "update cajex.workspace_billing set payment_failed_at = null, grace_until = null"
        " where workspace_id = %s",
        (a.id,),
    )
    assert ask(world, a, master).output_tokens == 25


def test_never_configured_is_off(world, two, master):
    a, _ = two
    with pytest.raises(AppError) as err:
        ask(world, a, master)
    assert err.value.code == "ai_off"


@pytest.mark.parametrize(
    "model, code",
    [
        ("fail-500", "ai_provider_error"),
        ("fail-503", "ai_provider_error"),
        ("fail-429", "ai_provider_busy"),
        ("slow-3", "ai_timeout"),
    ],
)
def test_provider_failures_release_the_reservation(
    world, two, master, fake, model, code
):
    a, _ = two
    configure(world, a, master, fake, model=model, timeout_seconds=1)
    with pytest.raises(AppError) as err:
        ask(world, a, master)
    assert err.value.code == code
    assert KEY not in err.value.message
    [row] = counters(world, a)
    assert row["used_tokens"] == 0 and row["reserved_tokens"] == 0
    assert (
        usage(world, a)[0]["failed_requests"] == 1
        and usage(world, a)[0]["requests"] == 0
    )


def test_a_wrong_key_is_a_clear_error(world, two, master, fake):
    a, _ = two
    configure(world, a, master, fake)
    with world.as_user(a.owner, a) as (conn, _):
        ai_settings.save(conn, master, a.id, {}, api_key="sk-wrong-key-1234")
    with pytest.raises(AppError) as err:
        ask(world, a, master)
    assert err.value.code == "ai_provider_auth" and "sk-wrong" not in err.value.message


def test_an_over_long_answer_is_cut_and_charged_no_more_than_reserved(
    world, two, master, fake
):
    a, _ = two
    configure(world, a, master, fake, model="long", max_output_tokens=50)
    result = ask(world, a, master)
    assert result.truncated and len(result.text) <= 200
    [row] = counters(world, a)
    assert (
        row["used_tokens"]
        == result.reserved_tokens
        == result.input_tokens + result.output_tokens
    )
    assert row["reserved_tokens"] == 0


def test_budget_reached_pauses_notifies_admins_once_and_spares_other_workspaces(
    world, two, master, fake
):
    a, b = two
    admin = world.member(a, role="admin")
    member = world.member(a, role="member")
    configure(world, a, master, fake, budget_tokens=400, max_output_tokens=100)
    configure(world, b, master, fake, budget_tokens=400, max_output_tokens=100)
    from cajex import metrics

    pauses_before = metrics.QUOTA_PAUSES._value.get()
    results = []
    for _ in range(5):
        try:
            results.append(ask(world, a, master, user=member))
        except AppError as exc:
            results.append(exc)
    ok = [r for r in results if not isinstance(r, AppError)]
    refused = [r for r in results if isinstance(r, AppError)]
    assert (
        ok
        and refused
        and all(r.code == "quota_exceeded" and r.status == 429 for r in refused)
    )
    # Operators see each pause on the metrics endpoint.
    assert metrics.QUOTA_PAUSES._value.get() - pauses_before == len(refused)
    assert "paused" in refused[0].message
    [row] = counters(world, a)
    assert (
        row["used_tokens"] + row["reserved_tokens"] <= 400
        and row["notified_at"] is not None
    )
    mails = world.admin.execute(
        "select payload from cajex.outbox where workspace_id = %s and kind = 'email.send'",
        (a.id,),
    ).fetchall()
    assert sorted(m["payload"]["to"] for m in mails) == sorted(
        [a.owner.email, admin.email]
    )
    assert all(m["payload"]["template"] == "ai_budget" for m in mails)
    assert member.email not in [m["payload"]["to"] for m in mails]
    # Other workspaces continue.
    assert ask(world, b, master).output_tokens == 25
    assert not world.admin.execute(
        "select 1 from cajex.outbox where workspace_id = %s", (b.id,)
    ).fetchall()
    # Status says paused; raising the budget resumes at once.
    with world.as_user(member, a) as (conn, _):
        assert ai_settings.status(conn)["paused"] is True
    change(world, a, master, budget_tokens=100000)
    with world.as_user(member, a) as (conn, _):
        assert ai_settings.status(conn)["paused"] is False
    assert ask(world, a, master, user=member).text
    # A new period resumes too (and notifies again when spent).
    change(world, a, master, budget_tokens=400)
    world.admin.execute(
        "update cajex.ai_budget_counters set period_start = period_start - 40"
        " where workspace_id = %s",
        (a.id,),
    )
    assert ask(world, a, master, user=member).text


def test_task_budget(world, two, master, fake):
    a, _ = two
    # A call reserves its estimated input (88 tokens here) plus the answer
    # limit (100): 250 covers one call (which uses 65) but not a second.
    configure(
        world,
        a,
        master,
        fake,
        max_output_tokens=100,
        task_budgets={"decision_record": 250},
    )
    assert ask(world, a, master, task="decision_record").text
    with pytest.raises(AppError) as err:
        ask(world, a, master, task="decision_record")
    assert err.value.code == "quota_exceeded"
    assert ask(world, a, master, task="project_summary").text  # other tasks go on


def test_a_daily_budget_cannot_pass_the_plans_monthly_quota(world, two, master, fake):
    a, b = two
    world.admin.execute(
        "update cajex.plans set ai_monthly_tokens = 300 where code = 'pro'"
    )
    configure(world, a, master, fake, budget_tokens=100000, budget_period="day")
    configure(world, b, master, fake, budget_tokens=100000, budget_period="month")
    # Each call reserves 188 and uses 65: two fit the plan's 300, a third does not.
    assert ask(world, a, master).text and ask(world, a, master).text
    with pytest.raises(AppError) as err:
        ask(world, a, master)
    assert err.value.code == "quota_exceeded" and "month" in err.value.message
    scopes = {r["scope"]: r for r in counters(world, a)}
    assert (
        scopes["plan"]["used_tokens"] == 130
        and scopes["plan"]["notified_at"] is not None
    )
    assert scopes["all"]["used_tokens"] == 130 and scopes["all"]["notified_at"] is None
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.outbox where workspace_id = %s"
            " and kind = 'email.send'",
            (a.id,),
        ).fetchone()["n"]
        == 1
    )
    # A monthly budget is capped by the same quota.
    with world.as_user(b.owner, b) as (conn, _):
        assert ai_settings.status(conn)["budget_tokens"] == 300


def test_viewer_may_not_use_ai(world, two, master, fake):
    a, _ = two
    configure(world, a, master, fake)
    viewer = world.member(a, role="viewer")
    with pytest.raises(psycopg.Error) as err:
        ask(world, a, master, user=viewer)
    assert err.value.sqlstate == "CXFBD"
    assert fake.requests == []


def test_member_cannot_change_settings_and_admin_can(world, two, master, fake):
    a, _ = two
    configure(world, a, master, fake)
    member, admin = world.member(a, role="member"), world.member(a, role="admin")
    with pytest.raises(psycopg.Error) as err:
        with world.as_user(member, a) as (conn, _):
            ai_settings.save(conn, master, a.id, {"enabled": False})
    assert err.value.sqlstate == "CXFBD"
    with world.as_user(admin, a) as (conn, _):
        assert (
            ai_settings.save(conn, master, a.id, {"model": "claude-other"})["model"]
            == "claude-other"
        )


def test_settings_validation_writes_nothing(world, two, master, fake):
    a, _ = two
    configure(world, a, master, fake)
    for bad in (
        {"provider": "skynet"},
        {"budget_period": "week"},
        {"budget_tokens": -1},
        {"model": "bad model"},
        {"base_url": "ftp://x"},
        {"colour": "red"},
        {"task_budgets": {"Bad Task": 1}},
        {"provider": "openai_compatible", "base_url": None},
    ):
        with pytest.raises(psycopg.Error) as err:
            change(world, a, master, **bad)
        assert err.value.sqlstate == "CXINV", bad
    with world.as_user(a.owner, a) as (conn, _):
        assert ai_settings.read(conn)["provider"] == "anthropic"


def test_switching_on_needs_a_key(world, two, master):
    a, _ = two
    with pytest.raises(psycopg.Error) as err:
        change(world, a, master, enabled=True)
    assert err.value.sqlstate == "CXINV"


def test_settings_show_only_the_last_four(world, two, master, fake):
    a, _ = two
    shown = configure(world, a, master, fake)
    assert shown["api_key_last4"] == "…LAST" and "api_key" not in shown
    assert KEY not in repr(shown)
    raw = world.admin.execute(
        "select api_key from cajex.ai_settings where workspace_id = %s", (a.id,)
    ).fetchone()["api_key"]
    assert KEY.encode() not in bytes(raw)


def test_key_rotations_keep_the_provider_key_usable(world, two, master, fake):
    a, b = two
    configure(world, a, master, fake)
    configure(world, b, master, fake)
    result = crypto.rotate_workspace_key(lambda: world.as_job(a, "keys"), master, a.id)
    assert result["version"] == 2 and result["reencrypted"] == 1
    new = crypto.Keyring(crypto.LocalMasterKey(os.urandom(32)), (master.current,))
    assert crypto.rotate_master(world.admin, new) == 3  # a's two versions, b's one
    only_new = crypto.Keyring(new.current)
    assert ask(world, a, only_new).text and ask(world, b, only_new).text
    assert [r["key"] for r in fake.requests] == [KEY, KEY]
    with pytest.raises(AppError) as err:
        ask(world, a, master)  # the old master alone opens nothing now
    assert err.value.code == "ai_not_configured"


def test_destroyed_keys_leave_the_stored_provider_key_unreadable(
    world, two, master, fake
):
    a, _ = two
    configure(world, a, master, fake)
    world.admin.execute(
        "update cajex.workspaces set status = 'deleted', deleted_at = now(),"
        " purge_after = now() - interval '1 day' where id = %s",
        (a.id,),
    )
    with world.app_connection() as conn:
        assert crypto.destroy_workspace_keys(conn, a.id) == 1
        conn.commit()
    world.admin.execute(
        "update cajex.workspaces set status = 'active', deleted_at = null,"
        " purge_after = null where id = %s",
        (a.id,),
    )
    with pytest.raises(AppError) as err:
        ask(world, a, master)
    assert err.value.code == "ai_not_configured" and fake.requests == []
    [row] = counters(world, a)
    assert row["reserved_tokens"] == 0 and row["used_tokens"] == 0


# -- isolation (SQL) -------------------------------------------------------------


def test_another_workspace_sees_no_settings_usage_counters_or_keys(
    world, two, master, fake
):
    a, b = two
    configure(world, a, master, fake)
    ask(world, a, master)
    with world.as_user(a.owner, a) as (conn, _):
        assert (
            conn.execute("select count(*) as n from cajex.ai_settings").fetchone()["n"]
            == 1
        )
        assert (
            conn.execute("select count(*) as n from cajex.ai_usage").fetchone()["n"]
            == 1
        )
        assert (
            conn.execute("select count(*) as n from cajex.workspace_keys").fetchone()[
                "n"
            ]
            == 1
        )
    with world.as_user(b.owner, b) as (conn, _):
        for table in (
            "cajex.ai_settings",
            "cajex.ai_usage",
            "cajex.ai_budget_counters",
            "cajex.workspace_keys",
            "cajex.ai_reservations",
        ):
            assert (
                conn.execute(f"select count(*) as n from {table}").fetchone()["n"] == 0
            ), table
        assert (
            conn.execute("select cajex.ai_status() as s").fetchone()["s"]["enabled"]
            is False
        )


def test_members_read_no_settings_or_usage_rows(world, two, master, fake):
    a, _ = two
    configure(world, a, master, fake)
    ask(world, a, master)
    member = world.member(a, role="member")
    with world.as_user(member, a) as (conn, _):
        assert (
            conn.execute("select count(*) as n from cajex.ai_settings").fetchone()["n"]
            == 0
        )
        assert (
            conn.execute("select count(*) as n from cajex.ai_usage").fetchone()["n"]
            == 0
        )
        assert (
            conn.execute("select cajex.ai_status() as s").fetchone()["s"]["enabled"]
            is True
        )


def test_settling_another_workspaces_reservation_does_nothing(world, two, master, fake):
    a, b = two
    configure(world, a, master, fake)
    with world.as_user(a.owner, a) as (conn, _):
        res = conn.execute(
            "select * from cajex_private.ai_reserve('project_summary', 10)"
        ).fetchone()
    with world.as_user(b.owner, b) as (conn, _):
        assert (
            conn.execute(
                "select * from cajex_private.ai_settle(%s, 'm', 0, 0, true)",
                (res["reservation_id"],),
            ).fetchone()
            is None
        )
    [row] = counters(world, a)
    assert row["reserved_tokens"] == res["reserved_tokens"]


def test_request_role_cannot_write_ai_tables(world, two, master, fake):
    a, _ = two
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with world.as_user(a.owner, a) as (conn, _):
            conn.execute("update cajex.ai_budget_counters set used_tokens = 0")


# -- concurrency -------------------------------------------------------------------


def test_50_parallel_requests_against_a_budget_for_10(world, master):
    ws = world.workspace(plan="pro")
    # The provider reports exactly what each call reserved (estimated input
    # plus the 100-token answer limit), so the budget holds exactly 10 calls.
    est_in = gw.estimate_input_tokens(
        "You are a concise assistant.", "Summarise: a project"
    )
    per_call = est_in + 100
    with FakeProvider(api_key=KEY, input_tokens=est_in, output_tokens=100) as fake:
        configure(
            world, ws, master, fake, budget_tokens=per_call * 10, max_output_tokens=100
        )
        barrier = threading.Barrier(50)
        outcomes: list = []
        lock = threading.Lock()

        def worker():
            conn = world.app_connection()
            try:
                barrier.wait()
                try:
                    out = ask(world, ws, master, conn=conn)
                except AppError as exc:
                    out = exc
            finally:
                conn.close()
            with lock:
                outcomes.append(out)

        threads = [threading.Thread(target=worker) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = len(fake.requests)
    ok = [o for o in outcomes if not isinstance(o, AppError)]
    refused = [o for o in outcomes if isinstance(o, AppError)]
    assert len(outcomes) == 50
    assert len(ok) == 10 and calls == 10
    assert len(refused) == 40 and all(o.code == "quota_exceeded" for o in refused)
    [row] = counters(world, ws)
    assert row["reserved_tokens"] == 0
    assert row["used_tokens"] == per_call * 10
    recorded = sum(u["input_tokens"] + u["output_tokens"] for u in usage(world, ws))
    assert recorded == row["used_tokens"] <= per_call * 10
    # Admins were told once, however many calls were refused.
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.outbox where workspace_id = %s"
            " and kind = 'email.send'",
            (ws.id,),
        ).fetchone()["n"]
        == 1
    )


def test_concurrent_first_calls_of_a_period_are_all_reserved(world, master, fake):
    """The counter row of a new period is made by whichever call comes first; none is refused."""
    ws = world.workspace(plan="pro")
    configure(world, ws, master, fake)
    barrier = threading.Barrier(20)
    statuses: list = []
    lock = threading.Lock()

    def worker():
        conn = world.app_connection()
        try:
            barrier.wait()
            with world.as_user(ws.owner, ws, conn=conn):
                row = conn.execute(
                    "select status from cajex_private.ai_reserve('project_summary', 10)"
                ).fetchone()
        finally:
            conn.close()
        with lock:
            statuses.append(row["status"])

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == ["ok"] * 20
    [row] = counters(world, ws)
    assert row["reserved_tokens"] == 20 * 110 and row["notified_at"] is None


# -- the keys command ------------------------------------------------------------------


def test_keys_command_rotates_data_and_master_keys_and_the_gateway_still_reads(
    world, two, fake, db_urls, settings, monkeypatch
):
    import json

    from click.testing import CliRunner

    from cajex import cli as cli_module

    if "keys" not in cli_module.cli.commands:
        cli_module._register_areas()
    a, b = two
    old_hex, new_hex = os.urandom(32).hex(), os.urandom(32).hex()
    old = crypto.Keyring(crypto.LocalMasterKey(bytes.fromhex(old_hex)))
    configure(world, a, old, fake)
    configure(world, b, old, fake)
    monkeypatch.setenv("CAJEX_CONTEXT_SECRET", settings.context_secret)
    monkeypatch.setenv("CAJEX_MASTER_KEY", old_hex)
    monkeypatch.delenv("CAJEX_OLD_MASTER_KEYS", raising=False)
    run = CliRunner().invoke
    out = run(
        cli_module.cli,
        [
            "keys",
            "rotate-workspace",
            "--workspace",
            a.slug,
            "--database-url",
            db_urls["app"],
            "--database-admin-url",
            db_urls["admin"],
        ],
    )
    assert out.exit_code == 0, out.output

    def result(output):  # the JSON line (log lines may precede it)
        return json.loads(output.strip().splitlines()[-1])

    assert result(out.output) == {"version": 2, "reencrypted": 1, "resumed": False}
    missing = run(
        cli_module.cli,
        [
            "keys",
            "rotate-workspace",
            "--workspace",
            str(uuid.uuid4()),
            "--database-url",
            db_urls["app"],
        ],
    )
    assert missing.exit_code != 0 and "no active workspace" in missing.output
    # A new master key: without the old one the data keys cannot be re-wrapped.
    monkeypatch.setenv("CAJEX_MASTER_KEY", new_hex)
    refused = run(
        cli_module.cli,
        ["keys", "rotate-master", "--database-admin-url", db_urls["admin"]],
    )
    assert refused.exit_code != 0 and "CAJEX_OLD_MASTER_KEYS" in refused.output
    monkeypatch.setenv("CAJEX_OLD_MASTER_KEYS", old_hex)
    first = run(
        cli_module.cli,
        ["keys", "rotate-master", "--database-admin-url", db_urls["admin"]],
    )
    assert first.exit_code == 0, first.output
    assert result(first.output)["rewrapped"] == 3
    again = run(
        cli_module.cli,
        ["keys", "rotate-master", "--database-admin-url", db_urls["admin"]],
    )
    assert result(again.output)["rewrapped"] == 0
    new = crypto.Keyring(crypto.LocalMasterKey(bytes.fromhex(new_hex)))
    assert ask(world, a, new).text and ask(world, b, new).text
    for text in (out.output, first.output):
        assert KEY not in text and old_hex not in text and new_hex not in text


def test_a_downgrade_waits_for_ai_being_switched_on_and_then_refuses(
    world, master, fake
):
    """The owner switches AI on while a downgrade to a plan without AI runs:
    the downgrade waits for the switch, sees AI on, and refuses, rather than
    leaving AI on where the plan has none."""
    ws = world.workspace(plan="pro")
    switching = world.app_connection()
    outcome: list[str] = []

    def downgrade():
        conn = world.app_connection()
        try:
            with world.as_user(ws.owner, ws, conn=conn) as (c, _):
                c.execute("select cajex.change_plan('free', 'offline')")
            outcome.append("changed")
        except psycopg.Error as exc:
            outcome.append(exc.sqlstate or "error")
        finally:
            conn.close()

    try:
        with world.as_user(ws.owner, ws, conn=switching) as (conn, _):
            ai_settings.save(
                conn,
                master,
                ws.id,
                {"enabled": True, "provider": "anthropic", "base_url": fake.url},
                api_key=KEY,
            )
            thread = threading.Thread(target=downgrade)
            thread.start()
            thread.join(1.0)
            assert thread.is_alive()  # waiting for the switch's transaction
        thread.join(30)
    finally:
        switching.close()
    assert outcome == ["CXPLN"]
    row = world.admin.execute(
        "select w.plan, s.enabled from cajex.workspaces w"
        " join cajex.ai_settings s on s.workspace_id = w.id where w.id = %s",
        (ws.id,),
    ).fetchone()
    assert row == {"plan": "pro", "enabled": True}
