"""What a workspace's chosen sign-in methods cost each request, side by side.

The verified context (cajex_private.context) also checks, for a session made
by a standard method (Google, Apple, GitHub, email link), that the
workspace allows that method: one primary-key probe of
cajex.workspace_signin_methods inside the InitPlan every policy shares. This
measures whole transactions exactly as the web layer runs them
(cajex.db.in_context with the browser's session credential, then the
newest-20 project list), interleaved request by request, for three kinds of
session:

  other      a session of a non-standard method (the check is skipped: the
             cost of the context before sign-in methods existed)
  open       a magic-link session in a workspace that chose nothing
  chosen     a magic-link session in a workspace that chose its methods

Also measured, outside the targets: magic links asked for and used per
second through the SQL functions the sign-in pages call.

Targets: p50 of chosen / other <= 1.10, p99 <= 1.25.

Usage: python bench/signin_context.py [--workspaces 2000] [--iterations 3000]
       python bench/signin_context.py --quick
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

from cajex import context, db  # noqa: E402
from cajex.localservices import LocalPostgres  # noqa: E402
from cajex.migrate import migrate  # noqa: E402

LIST = (
    "select id, name, status, tags, created_at from cajex.projects"
    " order by created_at desc, id desc limit 20"
)
KINDS = ("other", "open", "chosen")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ws_uuid(n: int) -> uuid.UUID:
    return uuid.UUID("20000000-0000-4000-8000-" + format(n, "012x"))


def user_uuid(n: int) -> uuid.UUID:
    return uuid.UUID("30000000-0000-4000-8000-" + format(n, "012x"))


def load(admin: psycopg.Connection, count: int, per_workspace: int) -> None:
    """`count` workspaces with an owner and projects; odd ones choose their methods."""
    params = {"n": count, "p": per_workspace}
    admin.execute(
        "insert into cajex.users (id, email) select ('30000000-0000-4000-8000-'"
        " || lpad(to_hex(g), 12, '0'))::uuid, 'm' || g || '@bench.test'"
        " from generate_series(1, %(n)s) g",
        params,
    )
    admin.execute(
        "insert into cajex.workspaces (id, organisation_id, slug, name, plan)"
        " select ('20000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,"
        " (select id from cajex.organisations limit 1), 'sb-' || g, 'Bench ' || g, 'team'"
        " from generate_series(1, %(n)s) g",
        params,
    )
    admin.execute(
        "insert into cajex.memberships (workspace_id, user_id, role)"
        " select ('20000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,"
        " ('30000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'owner'"
        " from generate_series(1, %(n)s) g",
        params,
    )
    admin.execute(
        "insert into cajex.projects (workspace_id, name, description, tags, status, created_at)"
        " select ('20000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,"
        " 'Project ' || p, 'Benchmark work item', '{platform}', 'active',"
        " now() - (random() * interval '365 days')"
        " from generate_series(1, %(n)s) g, generate_series(1, %(p)s) p",
        params,
    )
    # The workspace row is owner-only under forced RLS: written as the superuser.
    admin.execute(
        "insert into cajex.workspace_signin_methods (workspace_id, methods)"
        " select ('20000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,"
        " array['google', 'magic_link'] from generate_series(1, %(n)s) g where g %% 2 = 1",
        params,
    )


def session(admin, n: int, method: str) -> str:
    """A browser's session credential for member `n`, made by `method`."""
    secret = secrets.token_urlsafe(32)
    sid = admin.execute(
        "select cajex_private.create_session(%s, %s, %s)",
        (user_uuid(n), hashlib.sha256(secret.encode()).digest(), method),
    ).fetchone()[0]
    return context.session_credential(sid, secret)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(app, admin, count: int, iterations: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    odd = [n for n in range(1, count + 1) if n % 2 == 1][:200]
    even = [n for n in range(1, count + 1) if n % 2 == 0][:200]
    creds = {
        "other": {n: session(admin, n, "bench") for n in odd},
        "chosen": {n: session(admin, n, "magic_link") for n in odd},
        "open": {n: session(admin, n, "magic_link") for n in even},
    }

    def run(token: str, slug: str):
        t0 = time.perf_counter()
        with db.in_context(app, token, slug) as opened:
            rows = app.execute(LIST).fetchall()
        return time.perf_counter() - t0, opened.workspace_id, rows

    for i in range(iterations + 200):
        a, b = random.choice(odd), random.choice(even)
        plan = [("other", a), ("chosen", a), ("open", b)]
        random.shuffle(plan)
        answers = {}
        for kind, n in plan:
            elapsed, workspace, rows = run(creds[kind][n], f"sb-{n}")
            assert workspace == ws_uuid(n), (kind, n)
            answers[kind] = [r[0] for r in rows]
            if i >= 200:  # warm-up
                times[kind].append(elapsed)
        assert answers["other"] == answers["chosen"] and len(answers["open"]) == 20

    out = {}
    for kind in KINDS:
        out[kind] = {
            "p50_ms": round(statistics.median(times[kind]) * 1000, 4),
            "p99_ms": round(pct(times[kind], 0.99) * 1000, 4),
        }
    base = times["other"]
    for kind in ("open", "chosen"):
        out[kind]["p50_ratio"] = round(
            statistics.median(times[kind]) / statistics.median(base), 3
        )
        out[kind]["p99_ratio"] = round(pct(times[kind], 0.99) / pct(base, 0.99), 3)
    return out


def magic_links_per_second(app, rounds: int) -> float:
    """Ask for and use `rounds` magic links, as the sign-in pages do (no HTTP)."""
    t0 = time.perf_counter()
    for i in range(rounds):
        token = secrets.token_urlsafe(32).encode()
        digest = hashlib.sha256(token).digest()
        with app.transaction():
            status = app.execute(
                "select cajex_private.request_magic_link(%s, %s, 'http://bench.test/x', %s, %s)",
                (
                    f"signin{i}@bench.test",
                    digest,
                    secrets.token_bytes(32),
                    secrets.token_bytes(32),
                ),
            ).fetchone()[0]
        assert status == "sent"
        with app.transaction():
            app.execute("select cajex_private.consume_magic_link(%s)", (digest,))
    return round(rounds / (time.perf_counter() - t0), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=2000)
    parser.add_argument("--projects-per-workspace", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument(
        "--quick", action="store_true", help="200 workspaces, 500 iterations"
    )
    args = parser.parse_args()
    if args.quick:
        args.workspaces, args.iterations = 200, 500

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-signin-"))
    pg = LocalPostgres(root, fast=True).start()
    try:
        migrate(pg.url(), secrets.token_hex(32))
        admin = psycopg.connect(pg.url(), autocommit=True)
        owner = admin.execute(
            "insert into cajex.users (email) values ('org@bench.test') returning id"
        ).fetchone()[0]
        admin.execute(
            "insert into cajex.organisations (name, created_by) values ('Bench', %s)",
            (owner,),
        )
        say(
            f"loading {args.workspaces} workspaces x {args.projects_per_workspace} projects"
        )
        load(admin, args.workspaces, args.projects_per_workspace)
        admin.execute("vacuum analyze")
        app = psycopg.connect(pg.url("cajex", "cajex_app"))
        say(f"measuring the context check ({args.iterations} iterations of each kind)")
        figures = measure(app, admin, args.workspaces, args.iterations)
        say("measuring magic links asked for and used")
        rate = magic_links_per_second(app, 200 if args.quick else 1000)
    finally:
        pg.stop("immediate")

    chosen = figures["chosen"]
    result = {
        "bench": "signin_context",
        "workspaces": args.workspaces,
        "iterations": args.iterations,
        "context": figures,
        "p50_ratio": chosen["p50_ratio"],
        "p99_ratio": chosen["p99_ratio"],
        "magic_links_per_second": rate,
        "targets": {"p50_ratio": 1.10, "p99_ratio": 1.25},
        "met": chosen["p50_ratio"] <= 1.10 and chosen["p99_ratio"] <= 1.25,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
