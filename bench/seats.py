"""Seat counting: Stripe calls for a burst, and what the seat trigger costs.

1. Calls. 500 membership changes (joins, leaves, deactivations, role
   changes) in one Stripe-billed workspace, spread over 10 seconds, each its
   own transaction through the business functions, while a worker loop runs
   due outbox jobs through the real runner against localstripe (a real
   process on loopback) behind a counting proxy. Counted: subscription
   updates until the quantity equals the count. Target: at most 5.
2. Overhead. The same membership changes (a join through add_member and a
   removal through remove_member, each a whole transaction in the owner's
   verified context) with the seat trigger enabled, in a billed workspace
   (so the outbox write happens too), and with the trigger disabled, in
   rounds that alternate so machine load hits both alike. Target: median
   per change within 1.3x.

Usage: python bench/seats.py [--quick] [--changes 500] [--seconds 10]
The last line of output is one JSON object with the figures and targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cajex import config, db  # noqa: E402
from cajex.localservices import LocalPostgres  # noqa: E402
from cajex.migrate import migrate  # noqa: E402
from cajex.testing import billing as tb  # noqa: E402
from cajex.testing.factory import World  # noqa: E402


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def subscribe(world, ws, settings) -> str:
    from cajex.billing import stripe_api

    customer = stripe_api.create_customer(settings, str(ws.id), ws.slug)
    tb.attach_card(settings.stripe_api_base, customer)
    used = world.admin.execute(
        "select seats_used from cajex.workspace_billing where workspace_id = %s",
        (ws.id,),
    ).fetchone()["seats_used"]
    sub = stripe_api.create_subscription(
        settings, customer, tb.PRICES["enterprise"], used, str(ws.id), f"bench-{ws.id}"
    )
    world.admin.execute(
        "update cajex.workspace_billing set stripe_customer_id = %s, stripe_subscription_id = %s,"
        " stripe_item_id = %s, subscription_status = 'active', seats_paid = %s"
        " where workspace_id = %s",
        (customer, sub["subscription_id"], sub["item_id"], used, ws.id),
    )
    return sub["subscription_id"]


class Worker(threading.Thread):
    """Runs due outbox jobs through cajex.jobs.runner, as a relay + worker would."""

    def __init__(self, settings):
        super().__init__(daemon=True)
        from cajex.jobs import registry, runner

        self.pool = db.make_pool(settings.worker_url, 1, 2, name="bench-worker")
        runner._state.update(pool=self.pool, settings=settings)
        registry.load_all()
        self.runner = runner
        self.stop = threading.Event()
        self.ran = 0

    def run(self):
        while not self.stop.is_set():
            with self.pool.connection() as conn:
                ids = [
                    r["id"]
                    for r in conn.execute(
                        "select id from cajex_private.claim_outbox(50, '600 seconds')"
                    ).fetchall()
                ]
            for job_id in ids:
                self.runner.run_outbox_job(job_id)
                self.ran += 1
            self.stop.wait(0.25)


#: A mix like an import with churn: half joins, the rest leaves,
#: deactivations and role changes (which move no seat).
KINDS = ("join",) * 5 + ("leave",) * 2 + ("deactivate",) * 2 + ("role",)


def change(world, ws, people, rng, kinds=KINDS):
    kind = rng.choice(kinds) if len(people) > 5 else "join"
    if kind == "join":
        people.append(world.member(ws))
    elif kind == "leave":
        user = people.pop(rng.randrange(len(people)))
        with world.as_user(ws.owner, ws) as (conn, _):
            conn.execute("select cajex.remove_member(%s)", (user.id,))
    elif kind == "deactivate":
        user = people.pop(rng.randrange(len(people)))
        world.admin.execute(
            "update cajex.memberships set status = 'deactivated'"
            " where workspace_id = %s and user_id = %s",
            (ws.id, user.id),
        )
    else:
        user = rng.choice(people)
        with world.as_user(ws.owner, ws) as (conn, _):
            conn.execute(
                "select cajex.change_member_role(%s, %s)",
                (user.id, rng.choice(["admin", "member", "viewer"])),
            )


def calls_for_a_burst(world, settings, proxy, n_changes, seconds) -> dict:
    from cajex.billing import stripe_api

    ws = world.workspace(plan="enterprise")
    sub_id = subscribe(world, ws, settings)
    proxy.reset()
    worker = Worker(settings)
    worker.start()
    rng = random.Random(7)
    people: list = []
    started = time.monotonic()
    for i in range(n_changes):
        change(world, ws, people, rng)
        # Spread evenly over the window.
        delay = started + (i + 1) * seconds / n_changes - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    burst = time.monotonic() - started
    say(f"  {n_changes} changes in {burst:.1f} s; waiting for the quantity")
    count = world.admin.execute(
        "select seats_used from cajex.workspace_billing where workspace_id = %s",
        (ws.id,),
    ).fetchone()["seats_used"]
    deadline = time.monotonic() + 30
    quantity = None
    while time.monotonic() < deadline:
        pending = world.admin.execute(
            "select count(*) as n from cajex.outbox where workspace_id = %s and done_at is null",
            (ws.id,),
        ).fetchone()["n"]
        if pending == 0:
            quantity = stripe_api.retrieve_subscription(settings, sub_id)["quantity"]
            if quantity == count:
                break
        time.sleep(0.3)
    settled = time.monotonic() - started
    worker.stop.set()
    worker.join(10)
    worker.pool.close()
    updates = len(proxy.writes())
    return {
        "changes": n_changes,
        "burst_seconds": round(burst, 2),
        "settled_seconds": round(settled, 2),
        "seat_count": count,
        "stripe_quantity": quantity,
        "stripe_updates": updates,
        "jobs_run": worker.ran,
    }


def timed_changes(world, ws, people, n) -> list[float]:
    """n alternating joins and removals through the business functions."""
    times = []
    for i in range(n):
        started = time.perf_counter()
        if i % 2 == 0 or not people:
            people.append(world.member(ws))
        else:
            user = people.pop()
            with world.as_user(ws.owner, ws) as (conn, _):
                conn.execute("select cajex.remove_member(%s)", (user.id,))
        times.append(time.perf_counter() - started)
    return times


def trigger_overhead(world, settings, rounds, per_round) -> dict:
    on_ws = world.workspace(plan="enterprise")
    off_ws = world.workspace(plan="enterprise")
    subscribe(world, on_ws, settings)
    on_people: list = []
    off_people: list = []
    on, off = [], []
    # Warm up both paths (plans, caches).
    timed_changes(world, on_ws, on_people, 20)
    timed_changes(world, off_ws, off_people, 20)
    for r in range(rounds):
        for enabled in (True, False) if r % 2 == 0 else (False, True):
            world.admin.execute(
                "alter table cajex.memberships "
                + ("enable" if enabled else "disable")
                + " trigger memberships_count_seats"
            )
            if enabled:
                on += timed_changes(world, on_ws, on_people, per_round)
            else:
                off += timed_changes(world, off_ws, off_people, per_round)
    world.admin.execute(
        "alter table cajex.memberships enable trigger memberships_count_seats"
    )
    p50_on, p50_off = statistics.median(on), statistics.median(off)
    return {
        "changes_each": len(on),
        "p50_ms_with_trigger": round(p50_on * 1000, 3),
        "p50_ms_without_trigger": round(p50_off * 1000, 3),
        "mean_ms_with_trigger": round(statistics.fmean(on) * 1000, 3),
        "mean_ms_without_trigger": round(statistics.fmean(off) * 1000, 3),
        "ratio_p50": round(p50_on / p50_off, 3),
        "ratio_mean": round(statistics.fmean(on) / statistics.fmean(off), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 changes in 2 seconds")
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    args = parser.parse_args()
    if args.quick:
        args.changes, args.seconds, args.rounds, args.per_round = 100, 2.0, 6, 30

    # Log lines (the worker's, the stripe library's) go to stderr: stdout
    # carries only the closing JSON line.
    out, sys.stdout = sys.stdout, sys.stderr
    root = Path(tempfile.mkdtemp(prefix="cajex-bench-seats-"))
    pg = LocalPostgres(root, fast=True).start()
    stripe_server = tb.LocalStripe()
    proxy = tb.CountingProxy(stripe_server.port)
    try:
        secret = secrets.token_hex(32)
        migrate(pg.url(), secret)
        tb.ensure_plans(stripe_server.url)
        settings = dataclasses.replace(
            config.from_env(),
            database_url=pg.url("cajex", "cajex_app"),
            context_secret=secret,
            stripe_api_key="sk_test_bench",
            stripe_api_base=proxy.url,
            stripe_prices=dict(tb.PRICES),
        )
        world = World(pg.url(), pg.url("cajex", "cajex_app"), secret)
        say(f"calls: {args.changes} membership changes over {args.seconds} s")
        calls = calls_for_a_burst(world, settings, proxy, args.changes, args.seconds)
        say(f"  {calls}")
        say(f"overhead: {args.rounds} rounds of {args.per_round} changes each way")
        overhead = trigger_overhead(world, settings, args.rounds, args.per_round)
        say(f"  {overhead}")
        world.close()
        result = {
            "bench": "seats",
            "calls": calls,
            "overhead": overhead,
            "targets": {"stripe_updates_max": 5, "ratio_p50_max": 1.3},
            "pass": calls["stripe_updates"] <= 5
            and calls["stripe_quantity"] == calls["seat_count"]
            and overhead["ratio_p50"] <= 1.3,
        }
        print(json.dumps(result), file=out, flush=True)
    finally:
        proxy.close()
        stripe_server.stop()
        pg.stop("immediate")


if __name__ == "__main__":
    main()
