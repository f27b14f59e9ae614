"""What the AI budget and the gateway cost, measured side by side.

1. Reservations: 16 clients on one workspace each run whole reservation
   transactions as the gateway does (cajex.db.commit_with: BEGIN, the
   member's context and its check, cajex_private.ai_reserve (permission,
   plan, settings, one conditional update of the workspace's counter row)
   and COMMIT in one message), against the same 16 clients
   running plain `update ... set n = n + 1` transactions on one row. Both
   serialise on one row lock; the rounds alternate so machine load hits both
   alike. Target: reservations per second >= 0.5x the plain updates.
2. Overspend: the 16 clients reserve and settle (with random actual usage)
   against a budget that holds exactly K calls, until refused. Target: K
   calls succeed, and used + reserved never passes the budget.
3. Gateway overhead: Gateway.complete against the loopback provider
   (cajex.ai.fakeprovider), minus the time spent in the provider adapter
   (the official client and its HTTP call): the two short transactions,
   the key decryption and the bookkeeping. Target: p50 < 2 ms. Beside it,
   the same gateway with a provider that answers at once, and with one that
   answers at once after sleeping as long as the loopback provider took (no
   provider code runs: only the machine's idling differs), and what one
   round trip to a backend that sat idle that long costs more than to a
   busy one.

Usage: python bench/ai_quota.py [--quick] [--ops N] [--calls N] [--rounds N]
The last line of output is one JSON object with the figures and targets.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The provider stand-ins listen on loopback, which a deployment refuses by
# default (cajex.ai.netguard).
os.environ.setdefault("CAJEX_AI_ALLOW_PRIVATE_HOSTS", "1")

from cajex import crypto, db, log  # noqa: E402
from cajex.ai import gateway as gw  # noqa: E402
from cajex.ai import providers  # noqa: E402
from cajex.ai import settings as ai_settings  # noqa: E402
from cajex.ai.fakeprovider import FakeProvider  # noqa: E402
from cajex.localservices import LocalPostgres  # noqa: E402
from cajex.migrate import migrate  # noqa: E402
from cajex.testing.factory import World  # noqa: E402

CLIENTS = 16
KEY = "sk-bench-" + "z" * 30
RESERVE = "select status, reservation_id from cajex_private.ai_reserve('project_summary', 100)"
PER_CALL = 100 + 16  # the estimate asked for plus the answer limit


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- client processes --------------------------------------------------------------
#
# Each client is its own process with its own connection, as web workers are;
# threads in one process would queue on the GIL while holding the row lock.


def _reserve_client(args) -> tuple[float, float, int]:
    url, token, slug, workspace_id, count, barrier = args
    conn = psycopg.connect(url, row_factory=dict_row)
    try:
        for _ in range(20):  # warm the session's plan cache
            assert _reserve_once(conn, token, slug, workspace_id)["status"] == "ok"
        barrier.wait()
        started = time.perf_counter()
        for _ in range(count):
            assert _reserve_once(conn, token, slug, workspace_id)["status"] == "ok"
        return started, time.perf_counter(), count
    finally:
        conn.close()


def _reserve_once(conn, token: str, slug: str, workspace_id) -> dict:
    """The gateway's reservation transaction (cajex.db.Scope.commit_with):
    BEGIN, the context and its check, the reservation and COMMIT in one message."""
    return db.commit_with(conn, token, slug, RESERVE, expect=workspace_id)[1][0]


def _plain_client(args) -> tuple[float, float, int]:
    url, count, barrier = args
    conn = psycopg.connect(url, autocommit=True)
    try:
        for _ in range(20):
            conn.execute("update bench_counter set n = n + 116 where id = 1")
        barrier.wait()
        started = time.perf_counter()
        for _ in range(count):
            conn.execute("update bench_counter set n = n + 116 where id = 1")
        return started, time.perf_counter(), count
    finally:
        conn.close()


def _plain_in_context_client(args) -> tuple[float, float, int]:
    """The same transaction as a reservation (one message: the member's
    verified context and its check, the statement, COMMIT), with a plain
    one-row update as the statement. As the superuser, who may update the
    row directly."""
    url, token, slug, workspace_id, count, barrier = args
    conn = psycopg.connect(url)

    def once():
        db.commit_with(
            conn,
            token,
            slug,
            "update bench_counter set n = n + 116 where id = 1",
            expect=workspace_id,
        )

    try:
        for _ in range(20):
            once()
        barrier.wait()
        started = time.perf_counter()
        for _ in range(count):
            once()
        return started, time.perf_counter(), count
    finally:
        conn.close()


def _spend_client(args) -> tuple[int, int, int]:
    """Reserve and settle until refused: (calls made, refusals, most tokens seen taken)."""
    url, token, slug, workspace_id, barrier = args
    conn = psycopg.connect(url, row_factory=dict_row)
    ok = peak = 0
    try:
        barrier.wait()
        while True:
            row = _reserve_once(conn, token, slug, workspace_id)
            if row["status"] != "ok":
                return ok, 1, peak
            with db.in_context(conn, token, slug):
                taken = conn.execute(
                    "select used_tokens + reserved_tokens as t from cajex.ai_budget_counters"
                    " where scope = 'all'"
                ).fetchone()["t"]
                # Each call uses all it reserved, so the budget holds exactly K calls.
                conn.execute(
                    "select * from cajex_private.ai_settle(%s, 'bench', %s, %s)",
                    (row["reservation_id"], PER_CALL - 16, 16),
                )
            ok, peak = ok + 1, max(peak, int(taken))
    finally:
        conn.close()


def _provider_process(port_queue) -> None:
    with FakeProvider(api_key=KEY, output_tokens=16) as fake:
        port_queue.put(fake.url)
        threading.Event().wait()


def run_clients(pool, fn, args_list) -> float:
    """Run the clients (one task per pool process); transactions per second over the wall time."""
    results = pool.map(fn, args_list)
    starts, ends = [r[0] for r in results], [r[1] for r in results]
    return sum(r[2] for r in results) / (max(ends) - min(starts))


def overspend(world, ws, users, app_url, pool, manager, master, calls: int) -> dict:
    """Reserve-and-settle against a budget for exactly `calls` calls, until refused."""
    budget = PER_CALL * calls
    with world.as_user(ws.owner, ws) as (conn, _):
        ai_settings.save(
            conn, master, ws.id, {"budget_tokens": budget, "budget_period": "day"}
        )
    world.admin.execute(
        "delete from cajex.ai_budget_counters where workspace_id = %s", (ws.id,)
    )
    world.admin.execute(
        "delete from cajex.ai_reservations where workspace_id = %s", (ws.id,)
    )
    barrier = manager.Barrier(CLIENTS)
    results = pool.map(
        _spend_client,
        [(app_url, u.token(3600), ws.slug, ws.id, barrier) for u in users],
    )
    final = world.admin.execute(
        "select used_tokens, reserved_tokens from cajex.ai_budget_counters"
        " where workspace_id = %s and scope = 'all'",
        (ws.id,),
    ).fetchone()
    recorded = world.admin.execute(
        "select coalesce(sum(input_tokens + output_tokens), 0) as t from cajex.ai_usage"
        " where workspace_id = %s and model = 'bench'",
        (ws.id,),
    ).fetchone()["t"]
    peak = max(r[2] for r in results)
    return {
        "budget_tokens": budget,
        "calls_allowed": calls,
        "succeeded": sum(r[0] for r in results),
        "refused": sum(r[1] for r in results),
        "peak_taken_tokens": peak,
        "used_tokens": final["used_tokens"],
        "reserved_tokens": final["reserved_tokens"],
        "recorded_tokens": int(recorded),
        "overspend_tokens": max(0, peak - budget, final["used_tokens"] - budget),
    }


def gateway_overhead(world, ws, master, provider_url: str, calls: int) -> dict:
    with world.as_user(ws.owner, ws) as (conn, _):
        ai_settings.save(
            conn,
            master,
            ws.id,
            {
                "budget_tokens": 10**9,
                "budget_period": "month",
                "base_url": provider_url,
            },
        )
    spent: list[float] = []

    def timed(req):
        t0 = time.perf_counter()
        try:
            return providers.anthropic_messages(req)
        finally:
            spent.append(time.perf_counter() - t0)

    def instant(req):
        t0 = time.perf_counter()
        try:
            return providers.Answer("A short drafted summary.", 40, 16, req.model)
        finally:
            spent.append(time.perf_counter() - t0)

    def measure(adapter) -> tuple[list[float], list[float], list[float]]:
        # As the web app makes it: settling runs in the workspace's service
        # context, opened with a token signed by the context secret.
        gateway = gw.Gateway(
            master, {"anthropic": adapter}, context_secret=world.secret
        )
        conn = world.app_connection()
        overhead, totals, provider = [], [], []
        try:
            for i in range(calls + 50):
                spent.clear()
                t0 = time.perf_counter()
                gateway.complete(
                    world.scope(ws.owner, ws, conn=conn),
                    "project_summary",
                    "Summarise: the payments platform",
                )
                total = time.perf_counter() - t0
                if i >= 50:  # warm-up
                    totals.append(total)
                    provider.append(spent[0])
                    overhead.append(total - spent[0])
        finally:
            conn.close()
        return sorted(overhead), totals, provider

    overhead, totals, provider = measure(timed)
    # The same gateway with an adapter that answers at once: what the
    # gateway's own work costs when the database backend has not gone idle
    # during a provider call (waking it is the machine's scheduling latency).
    hot, _, _ = measure(instant)
    # And one that answers at once after idling as long as the loopback
    # provider took: no provider code runs, the machine only sits idle.
    pause = statistics.median(provider)

    def idle(req):
        t0 = time.perf_counter()
        try:
            time.sleep(pause)
            return providers.Answer("A short drafted summary.", 40, 16, req.model)
        finally:
            spent.append(time.perf_counter() - t0)

    idled, _, _ = measure(idle)
    wakeup = idle_wakeup(world, pause, calls)
    return {
        "calls": calls,
        "p50_ms_overhead": round(statistics.median(overhead) * 1000, 3),
        "p99_ms_overhead": round(
            overhead[min(len(overhead) - 1, int(0.99 * len(overhead)))] * 1000, 3
        ),
        "p50_ms_overhead_instant_provider": round(statistics.median(hot) * 1000, 3),
        "p50_ms_overhead_idle_provider": round(statistics.median(idled) * 1000, 3),
        "p50_ms_provider": round(statistics.median(provider) * 1000, 3),
        "p50_ms_total": round(statistics.median(totals) * 1000, 3),
        "p50_ms_idle_wakeup": wakeup,
    }


def idle_wakeup(world, idle: float, calls: int) -> float:
    """What one round trip costs more after the backend sat idle as long as a
    provider call, than straight after another: `select 1` each way, on a
    connection of the gateway's kind. The machine's, not the gateway's."""
    conn = world.app_connection()
    cold, warm = [], []
    try:
        for _ in range(min(calls, 300)):
            time.sleep(idle)
            t0 = time.perf_counter()
            conn.execute("select 1")
            t1 = time.perf_counter()
            conn.execute("select 1")
            t2 = time.perf_counter()
            cold.append(t1 - t0)
            warm.append(t2 - t1)
    finally:
        conn.close()
    return round((statistics.median(cold) - statistics.median(warm)) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="a small run (well under a minute)"
    )
    parser.add_argument(
        "--ops", type=int, default=500, help="transactions per client per round"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--calls", type=int, default=1000, help="gateway calls measured"
    )
    parser.add_argument("--budget-calls", type=int, default=200)
    args = parser.parse_args()
    if args.quick:
        args.ops, args.rounds, args.calls, args.budget_calls = 60, 1, 150, 40

    # Log lines (the gateway logs each call, as in production) go to stderr:
    # stdout carries only the result.
    log.configure()
    root = Path(tempfile.mkdtemp(prefix="cajex-bench-"))
    pg = LocalPostgres(root, fast=True).start()
    ctx = multiprocessing.get_context("fork")
    provider_proc = None
    try:
        secret = secrets.token_hex(32)
        migrate(pg.url(), secret)
        app_url = pg.url("cajex", "cajex_app")
        world = World(pg.url(), app_url, secret)
        master = crypto.Keyring(crypto.LocalMasterKey(os.urandom(32)))
        ws = world.workspace(plan="enterprise")
        users = [world.member(ws, role="member") for _ in range(CLIENTS)]
        with world.as_user(ws.owner, ws) as (conn, _):
            ai_settings.save(
                conn,
                master,
                ws.id,
                {
                    "enabled": True,
                    "provider": "anthropic",
                    "model": "claude-bench",
                    "base_url": "http://127.0.0.1:9",
                    "budget_tokens": 10**12,
                    "max_output_tokens": 16,
                    "timeout_seconds": 10,
                },
                api_key=KEY,
            )
        world.admin.execute(
            "create table bench_counter (id int primary key, n bigint not null)"
        )
        world.admin.execute("insert into bench_counter values (1, 0)")
        # The plan's monthly quota would cap the month; lift it for the throughput run.
        world.admin.execute(
            "update cajex.plans set ai_monthly_tokens = null where code = 'enterprise'"
        )

        total_ops = CLIENTS * args.ops
        reserve_rates, plain_rates, plain_ctx_rates = [], [], []
        with ctx.Manager() as manager, ctx.Pool(CLIENTS) as pool:
            say(
                f"{args.rounds} rounds of {total_ops} transactions each way, {CLIENTS} clients"
            )
            for r in range(args.rounds):
                order = ["reserve", "plain", "plain_in_context"]
                order = order if r % 2 == 0 else order[::-1]
                for name in order:
                    barrier = manager.Barrier(CLIENTS)
                    if name == "reserve":
                        jobs = [
                            (app_url, u.token(3600), ws.slug, ws.id, args.ops, barrier)
                            for u in users
                        ]
                        rate = run_clients(pool, _reserve_client, jobs)
                        reserve_rates.append(rate)
                    elif name == "plain":
                        jobs = [(pg.url(), args.ops, barrier) for _ in users]
                        rate = run_clients(pool, _plain_client, jobs)
                        plain_rates.append(rate)
                    else:
                        jobs = [
                            (pg.url(), u.token(3600), ws.slug, ws.id, args.ops, barrier)
                            for u in users
                        ]
                        rate = run_clients(pool, _plain_in_context_client, jobs)
                        plain_ctx_rates.append(rate)
                    say(f"  round {r + 1}: {name} {rate:.0f}/s")
            # Reservations were never settled: the counter holds every one of them.
            held = world.admin.execute(
                "select reserved_tokens from cajex.ai_budget_counters where workspace_id = %s"
                " and scope = 'all'",
                (ws.id,),
            ).fetchone()["reserved_tokens"]
            assert held == PER_CALL * CLIENTS * (20 + args.ops) * args.rounds, held

            say(
                f"overspend: {CLIENTS} clients against a budget for {args.budget_calls} calls"
            )
            spend = overspend(
                world, ws, users, app_url, pool, manager, master, args.budget_calls
            )

        port_queue = ctx.Queue()
        provider_proc = ctx.Process(
            target=_provider_process, args=(port_queue,), daemon=True
        )
        provider_proc.start()
        provider_url = port_queue.get(timeout=30)
        say(
            f"gateway overhead over {args.calls} calls to the loopback provider (own process)"
        )
        overhead = gateway_overhead(world, ws, master, provider_url, args.calls)
        world.close()
    finally:
        if provider_proc is not None:
            provider_proc.terminate()
        pg.stop("immediate")

    reserve = statistics.median(reserve_rates)
    plain = statistics.median(plain_rates)
    plain_ctx = statistics.median(plain_ctx_rates)
    ratio = round(reserve / plain, 3)
    ratio_ctx = round(reserve / plain_ctx, 3)
    exact = (
        spend["succeeded"] == spend["calls_allowed"] and spend["overspend_tokens"] == 0
    )
    result = {
        "bench": "ai_quota",
        "clients": CLIENTS,
        "reservations_per_s": round(reserve, 1),
        "plain_updates_per_s": round(plain, 1),
        "plain_updates_in_context_per_s": round(plain_ctx, 1),
        "ratio": ratio,
        "ratio_in_context": ratio_ctx,
        "overspend": spend,
        "gateway": overhead,
        "targets": {
            "ratio": 0.5,
            "overspend_tokens": 0,
            "gateway_p50_ms_overhead": 2.0,
        },
        "met": ratio >= 0.5 and exact and overhead["p50_ms_overhead"] < 2.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
