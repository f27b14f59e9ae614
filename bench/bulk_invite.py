"""A 1,000-row bulk invitation end to end, against a plain insert.

End to end: an owner's browser posts a CSV file of N rows to the members
page (POST /w/<slug>/members/bulk, through the Flask app and its verified
context, as the test client sends it: no sockets). The app reads the file,
makes a token per row, and cajex.invite_members checks each row (address,
role, member already, invited already, seats), stores the invitations, writes
one outbox row per email and one audit event per invitation, and the answer
is the per-row results as CSV. Timed from the request to the last byte of
the answer.

Baseline: the same N invitations (hashes made beforehand) written by one
plain `insert ... select` as the superuser, with no checks, no outbox and no
audit, in its own transaction.

The two alternate, each in a fresh workspace, and the median of the runs is
reported (and the ratio of the fastest runs, which a busy machine disturbs
least). Target: end to end within 3x of the baseline, on the medians.

Usage: python bench/bulk_invite.py [--rows 1000] [--runs 7] [--quick]
The last line of output is one JSON object with the figures and the target.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cajex import config  # noqa: E402
from cajex.localservices import LocalPostgres  # noqa: E402
from cajex.migrate import migrate  # noqa: E402
from cajex.testing.factory import World  # noqa: E402

TARGET_RATIO = 3.0

PLAIN_INSERT = """
insert into cajex.invitations (workspace_id, email, role, token_hash, invited_by, expires_at)
select %s, t.email, 'member', t.token_hash, %s, now() + interval '7 days'
from unnest(%s::text[], %s::bytea[]) as t (email, token_hash)
"""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def addresses(run: int, rows: int) -> list[str]:
    return [f"person{i}.run{run}@bench.test" for i in range(rows)]


def end_to_end(app, world: World, run: int, rows: int) -> float:
    ws = world.workspace(plan="enterprise")
    client = app.test_client()
    world.login(client, ws.owner)
    body = ("email,role\n" + "".join(f"{e},member\n" for e in addresses(run, rows))).encode()
    started = time.perf_counter()
    response = client.post(
        f"/w/{ws.slug}/members/bulk",
        data={"file": (io.BytesIO(body), "team.csv"), "format": "csv", "csrf_token": "test-csrf-token"},
        content_type="multipart/form-data",
    )
    answer = response.get_data()
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, answer[:300]
    invited = answer.count(b",invited\r\n")
    assert invited == rows, f"{invited} of {rows} invited"
    outbox = world.admin.execute(
        "select count(*) as n from cajex.outbox where workspace_id = %s and kind = 'email.send'", (ws.id,)
    ).fetchone()["n"]
    assert outbox == rows, f"{outbox} outbox rows for {rows} invitations"
    return elapsed


def plain(admin: psycopg.Connection, world: World, run: int, rows: int) -> float:
    ws = world.workspace(plan="enterprise")
    emails = addresses(run, rows)
    hashes = [hashlib.sha256(secrets.token_urlsafe(32).encode()).digest() for _ in emails]
    started = time.perf_counter()
    with admin.transaction():
        admin.execute(PLAIN_INSERT, (ws.id, ws.owner.id, emails, hashes))
    elapsed = time.perf_counter() - started
    n = admin.execute("select count(*) as n from cajex.invitations where workspace_id = %s", (ws.id,)).fetchone()["n"]
    assert n == rows
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 rows, 3 runs")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.runs = 200, 3

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-"))
    pg = LocalPostgres(root, fast=True).start()
    try:
        secret = secrets.token_hex(32)
        migrate(pg.url(), secret)
        world = World(pg.url(), pg.url("cajex", "cajex_app"), secret)
        settings = config.Settings(
            database_url=pg.url("cajex", "cajex_app"),
            redis_url="redis://127.0.0.1:1/0",  # never reached: the outbox is the queue
            env="production",
            secret_key=secrets.token_hex(20),
            context_secret=secret,
            jwt_secret=secrets.token_hex(24),
            master_key=secrets.token_hex(32),
            public_url="http://cajex.bench",
            data_dir=root / "data",
            pool_min=1,
            pool_max=2,
        )
        from cajex.web import create_app

        app = create_app(settings, {"TESTING": True})
        admin = psycopg.connect(pg.url(), row_factory=dict_row)
        say(f"warming up with {min(args.rows, 100)} rows")
        end_to_end(app, world, -1, min(args.rows, 100))
        plain(admin, world, -1, min(args.rows, 100))
        e2e_times, plain_times = [], []
        for run in range(args.runs):
            e2e_times.append(end_to_end(app, world, run, args.rows))
            plain_times.append(plain(admin, world, run, args.rows))
            say(f"run {run + 1}/{args.runs}: end to end {e2e_times[-1]:.3f}s, plain insert {plain_times[-1]:.3f}s")
        admin.close()
        world.close()
        app.extensions["cajex.pool"].close()
    finally:
        pg.stop("immediate")

    e2e, base = statistics.median(e2e_times), statistics.median(plain_times)
    ratio = e2e / base
    print(json.dumps({
        "bench": "bulk_invite",
        "rows": args.rows,
        "runs": args.runs,
        "end_to_end": {"seconds": round(e2e, 4), "rows_per_second": round(args.rows / e2e)},
        "plain_insert": {"seconds": round(base, 4), "rows_per_second": round(args.rows / base)},
        "ratio": round(ratio, 2),
        # The fastest run of each: how far apart they are on an idle machine.
        "fastest_ratio": round(min(e2e_times) / min(plain_times), 2),
        "targets": {"ratio": TARGET_RATIO},
        "met": ratio <= TARGET_RATIO,
    }))


if __name__ == "__main__":
    main()
