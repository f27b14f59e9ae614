"""What the verified context and RLS cost, measured side by side.

The same newest-20 list and get-by-id queries run as whole transactions
(a) as cajex_app through the verified context and RLS, exactly as the web
layer runs them (cajex.db.in_context with the browser's session credential,
which the policies verify inline), and (b) hand-scoped with an explicit
workspace_id filter and no RLS (as a role that bypasses it), as plain psycopg
transactions (BEGIN, the query, COMMIT). Both make the same number of round
trips: in_context sends its context statement with BEGIN. The two run
interleaved, request by request, so that load on the machine hits both alike.

Measured first with 100 workspaces, then again after growing the database to
10,000 workspaces and 1,000,000 projects plus one large workspace of 100,000
projects. Targets: p50 ratio <= 1.20 and p99 ratio <= 1.30, and the ratio at
10,000 workspaces within 1.2x of the ratio at 100.
Also reported, outside the targets: (c) the same transactions opened with a
signed token (cajex_private.open_context: HMAC in SQL and one context row
written), the path jobs, SCIM and `cajex db as-member` take.

The client runs on one CPU and both measured database backends on another
(bench/_placement.py), so both sides pay the same round trip; --no-pin
leaves placement to the scheduler.

Usage: python bench/rls_overhead.py [--workspaces 10000] [--projects 1000000]
       [--large 100000] [--iterations 3000] [--no-pin]
The last line of output is one JSON object with the figures and targets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _placement import pin_apart  # noqa: E402

from cajex import context, db  # noqa: E402
from cajex.localservices import LocalPostgres  # noqa: E402
from cajex.migrate import migrate  # noqa: E402

LIST_RLS = (
    "select id, name, status, tags, created_at from cajex.projects"
    " order by created_at desc, id desc limit 20"
)
LIST_SCOPED = (
    "select id, name, status, tags, created_at from cajex.projects"
    " where workspace_id = %s order by created_at desc, id desc limit 20"
)
GET_RLS = "select id, name, description, status, tags from cajex.projects where id = %s"
GET_SCOPED = (
    "select id, name, description, status, tags from cajex.projects"
    " where workspace_id = %s and id = %s"
)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load(admin: psycopg.Connection, first: int, last: int, per_workspace: int) -> None:
    """Workspaces first..last-1, each with an owner and `per_workspace` projects."""
    params = {"a": first, "b": last, "n": per_workspace}
    for statement in (
        """
        insert into cajex.users (id, email)
        select ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
               'owner' || g || '@bench.test'
        from generate_series(%(a)s, %(b)s - 1) g
        on conflict do nothing
        """,
        """
        insert into cajex.workspaces (id, organisation_id, slug, name, plan)
        select ('10000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
               (select id from cajex.organisations limit 1), 'bench-' || g, 'Bench ' || g, 'team'
        from generate_series(%(a)s, %(b)s - 1) g
        """,
        """
        insert into cajex.memberships (workspace_id, user_id, role)
        select ('10000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
               ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'owner'
        from generate_series(%(a)s, %(b)s - 1) g
        """,
        """
        insert into cajex.projects (workspace_id, name, description, tags, status, created_at)
        select ('10000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
               'Project ' || p, 'Benchmark work item', '{platform}', 'active',
               now() - (random() * interval '365 days')
        from generate_series(%(a)s, %(b)s - 1) g, generate_series(1, %(n)s) p
        """,
    ):
        admin.execute(statement, params)


def ws_id(n: int) -> uuid.UUID:
    return uuid.UUID("10000000-0000-4000-8000-" + format(n, "012x"))


def user_id(n: int) -> uuid.UUID:
    return uuid.UUID("00000000-0000-4000-8000-" + format(n, "012x"))


def sessions_for(admin, numbers: list[int]) -> dict[int, tuple[uuid.UUID, str]]:
    """A live session per workspace owner: (session id, the cookie's secret)."""
    out = {}
    for n in numbers:
        cookie_secret = secrets.token_urlsafe(32)
        session_id = admin.execute(
            "select cajex_private.create_session(%s, %s, 'bench')",
            (user_id(n), hashlib.sha256(cookie_secret.encode()).digest()),
        ).fetchone()[0]
        out[n] = (session_id, cookie_secret)
    return out


def measure(
    app, base, secret, targets: list[int], sessions, project_ids, iterations: int
) -> dict:
    """Interleave context+RLS and hand-scoped transactions; per-kind timings."""
    kinds = ("rls", "scoped", "signed")
    times = {f"{q}_{k}": [] for q in ("list", "get") for k in kinds}

    def rls_tx(n, query, params):
        # What a browser's request sends: its session credential.
        token = context.session_credential(*sessions[n])
        t0 = time.perf_counter()
        with db.in_context(app, token, f"bench-{n}"):
            rows = app.execute(query, params).fetchall()
        return time.perf_counter() - t0, rows

    def signed_tx(n, query, params):
        token = context.user_token(secret, user_id(n), sessions[n][0])
        t0 = time.perf_counter()
        with db.in_context(app, token, f"bench-{n}"):
            rows = app.execute(query, params).fetchall()
        return time.perf_counter() - t0, rows

    def scoped_tx(query, params):
        t0 = time.perf_counter()
        rows = base.execute(query, params).fetchall()
        base.commit()
        return time.perf_counter() - t0, rows

    for i in range(iterations + 200):
        n = random.choice(targets)
        pid = random.choice(project_ids[n])
        pairs = [
            ("list_rls", lambda n=n: rls_tx(n, LIST_RLS, ())),
            ("list_scoped", lambda n=n: scoped_tx(LIST_SCOPED, (ws_id(n),))),
            ("get_rls", lambda n=n, pid=pid: rls_tx(n, GET_RLS, (pid,))),
            ("get_scoped", lambda n=n, pid=pid: scoped_tx(GET_SCOPED, (ws_id(n), pid))),
            ("list_signed", lambda n=n: signed_tx(n, LIST_RLS, ())),
            ("get_signed", lambda n=n, pid=pid: signed_tx(n, GET_RLS, (pid,))),
        ]
        random.shuffle(pairs)
        results = {}
        for name, fn in pairs:
            elapsed, rows = fn()
            results[name] = rows
            if i >= 200:  # warm-up
                times[name].append(elapsed)
        # Both paths must answer the same.
        assert [r[0] for r in results["list_rls"]] == [
            r[0] for r in results["list_scoped"]
        ]
        assert results["get_rls"] == results["get_scoped"] == results["get_signed"]
        assert [r[0] for r in results["list_signed"]] == [
            r[0] for r in results["list_scoped"]
        ]

    def pct(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))]

    out = {}
    for kind in ("list", "get"):
        rls, scoped = times[f"{kind}_rls"], times[f"{kind}_scoped"]
        out[kind] = {
            "p50_ms_rls": round(statistics.median(rls) * 1000, 4),
            "p50_ms_scoped": round(statistics.median(scoped) * 1000, 4),
            "p99_ms_rls": round(pct(rls, 0.99) * 1000, 4),
            "p99_ms_scoped": round(pct(scoped, 0.99) * 1000, 4),
            "p50_ratio": round(statistics.median(rls) / statistics.median(scoped), 3),
            "p99_ratio": round(pct(rls, 0.99) / pct(scoped, 0.99), 3),
            "signed_token_p50_ratio": round(
                statistics.median(times[f"{kind}_signed"]) / statistics.median(scoped),
                3,
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-"))
    pg = LocalPostgres(root, fast=True).start()
    try:
        secret = secrets.token_hex(32)
        migrate(pg.url(), secret)
        admin = psycopg.connect(pg.url(), autocommit=True)
        owner = admin.execute(
            "insert into cajex.users (email) values ('org@bench.test') returning id"
        ).fetchone()[0]
        admin.execute(
            "insert into cajex.organisations (name, created_by) values ('Bench', %s)",
            (owner,),
        )

        per_ws = max(1, args.projects // args.workspaces)
        say(f"loading 100 workspaces x {per_ws} projects, and one of {args.large}")
        load(admin, 1, 100, per_ws)
        load(admin, 100, 101, args.large)  # the large workspace: number 100
        admin.execute("vacuum analyze")
        targets = list(range(1, 101))
        sessions = sessions_for(admin, targets)
        project_ids = {
            n: [
                r[0]
                for r in admin.execute(
                    "select id from cajex.projects where workspace_id = %s limit 200",
                    (ws_id(n),),
                ).fetchall()
            ]
            for n in targets
        }
        app = psycopg.connect(pg.url("cajex", "cajex_app"))
        base = psycopg.connect(pg.url())  # superuser: no RLS, hand-scoped queries
        placement = (
            {"pinned": False, "why": "--no-pin"}
            if args.no_pin
            else pin_apart([app.info.backend_pid, base.info.backend_pid])
        )
        say(f"placement: {placement}")
        say(f"measuring at 100 workspaces ({args.iterations} iterations)")
        small = measure(
            app, base, secret, targets, sessions, project_ids, args.iterations
        )

        say(
            f"growing to {args.workspaces} workspaces and {args.projects + args.large} projects"
        )
        step = 1000
        for first in range(101, args.workspaces + 1, step):
            load(admin, first, min(first + step, args.workspaces + 1), per_ws)
            say(f"  {min(first + step, args.workspaces + 1) - 1} workspaces")
        admin.execute("vacuum analyze")
        say(f"measuring at {args.workspaces} workspaces")
        large = measure(
            app, base, secret, targets, sessions, project_ids, args.iterations
        )
    finally:
        pg.stop("immediate")

    scale = {
        k: round(large[k]["p50_ratio"] / small[k]["p50_ratio"], 3)
        for k in ("list", "get")
    }
    worst_p50 = max(large["list"]["p50_ratio"], large["get"]["p50_ratio"])
    worst_p99 = max(large["list"]["p99_ratio"], large["get"]["p99_ratio"])
    result = {
        "bench": "rls_overhead",
        "workspaces": args.workspaces,
        "projects": args.projects + args.large,
        "placement": placement,
        "at_100_workspaces": small,
        "at_scale": large,
        "p50_ratio": worst_p50,
        "p99_ratio": worst_p99,
        "scale_ratio": max(scale.values()),
        "targets": {"p50_ratio": 1.20, "p99_ratio": 1.30, "scale_ratio": 1.2},
        "met": worst_p50 <= 1.20 and worst_p99 <= 1.30 and max(scale.values()) <= 1.2,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
