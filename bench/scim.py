"""SCIM over HTTP: provisioning throughput, and the userName filter at scale.

The real app runs under gunicorn on loopback against its own PostgreSQL, and
every request goes through the bearer-token lookup, the verified context and
RLS, as an identity provider's would.

1. Provisioning: 1,000 users (POST /Users), 50 groups (POST /Groups), then
   the memberships (PATCH /Groups/<id> adding members 20 at a time, as Entra
   ID batches them), each user in two groups. Requests per second and p99
   latency per phase.
2. Filter: GET /Users?filter=userName eq "..." (hits in any letter case and
   misses) in a workspace of 10,000 users, side by side in two databases of
   one cluster, each served by its own gunicorn: the workspace alone, and
   the same workspace beside 100 other workspaces of 1,000 users each.
   Short bursts alternate between the two, so the machine's load falls on
   both alike. The cost must not depend on the others: the query reaches its
   rows through (workspace_id, user_name_folded), and the context check is
   an InitPlan.

Targets: p99 under 100 ms per request in every phase; the crowded side's
median filter latency within 1.5x of the lone side's, and the shared
buffers its query touches (EXPLAIN ANALYZE inside the token's context) no
more than the lone side's plus one B-tree level.

Usage: python bench/scim.py [--quick] [--clients 2] [--filters 4000] [--rounds 8]
(BENCH_SHOW_PLAN=1 prints the filter's plan on each side to stderr.)
Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
P99_TARGET_MS = 100.0
INDEPENDENCE_TARGET = 1.5


def say(message: str) -> None:
    print(f"bench scim: {message}", file=sys.stderr, flush=True)


def wait_http(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/livez")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not start")


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted seconds, in milliseconds."""
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2)


def run(port: int, token: str, requests: list, clients: int) -> dict:
    """Send (method, path, body, expected status) with keep-alive clients.

    Returns requests/s over the wall time, p50/p99 in ms, the responses'
    JSON bodies in request order (for ids created along the way), and the
    raw latencies and wall time (to merge several runs).
    """
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/scim+json",
        "Accept": "application/scim+json",
    }
    latencies = [0.0] * len(requests)
    bodies: list = [None] * len(requests)
    errors: list = []
    cursor = iter(range(len(requests)))
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            method, path, body, expected = requests[i]
            payload = json.dumps(body).encode() if body is not None else None
            started = time.perf_counter()
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            latencies[i] = time.perf_counter() - started
            if response.status != expected:
                errors.append((method, path, response.status, data[:200]))
            elif data:
                bodies[i] = json.loads(data)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    ordered = sorted(latencies)
    return {
        "requests": len(requests),
        "rps": round(len(requests) / elapsed, 1),
        "p50_ms": percentile(ordered, 0.5),
        "p99_ms": percentile(ordered, 0.99),
        "bodies": bodies,
        "latencies": latencies,
        "seconds": elapsed,
    }


def seed_workspace(admin, org, slug: str, users: int) -> str:
    """A workspace with its owner and `users` SCIM-provisioned members, in bulk."""
    with admin.transaction():
        ws = admin.execute(
            "insert into cajex.workspaces (organisation_id, slug, name, plan)"
            " values (%s, %s, %s, 'enterprise') returning id",
            (org, slug, slug),
        ).fetchone()[0]
        owner = admin.execute(
            "insert into cajex.users (email) values (%s) returning id",
            (f"owner@{slug}.owners.bench.test",),
        ).fetchone()[0]
        admin.execute(
            "insert into cajex.memberships (workspace_id, user_id, role)"
            " values (%s, %s, 'owner')",
            (ws, owner),
        )
    admin.execute(
        "insert into cajex.users (email)"
        " select 'p' || g || '@' || %s || '.bench.test' from generate_series(1, %s) g"
        " on conflict do nothing",
        (slug, users),
    )
    admin.execute(
        "insert into cajex.memberships (workspace_id, user_id, role)"
        " select %s, u.id, 'member' from cajex.users u"
        " where u.email like '%%@' || %s || '.bench.test'",
        (ws, slug),
    )
    admin.execute(
        "insert into cajex.scim_users (workspace_id, user_id, user_name, emails)"
        " select m.workspace_id, m.user_id, u.email,"
        " jsonb_build_array(jsonb_build_object('value', u.email, 'type', 'work'))"
        " from cajex.memberships m join cajex.users u on u.id = m.user_id"
        " where m.workspace_id = %s",
        (ws,),
    )
    return ws


def filter_buffers(app_url: str, token: str, user_name: str) -> int:
    """Shared buffers the userName filter touches, as the app runs it.

    The list view's own count query, compiled by the same filter parser,
    explained inside the token's verified SCIM context: a figure that load
    on the machine does not blur.
    """
    import psycopg
    from cajex.web.views.scim import _USER_FROM, USER_SCHEMA
    from psycopg import sql

    from cajex.scim import filter as scim_filter

    where, params = scim_filter.compile_filter(
        scim_filter.parse(f'userName eq "{user_name}"'), USER_SCHEMA
    )
    with psycopg.connect(app_url) as conn:
        conn.execute(
            "select cajex_private.open_scim_context(%s)",
            (hashlib.sha256(token.encode()).digest(),),
        )
        query = sql.SQL(
            "explain (analyze, buffers, format json) select count(*) "
            + _USER_FROM
            + " where {}"
        ).format(where)
        plan = conn.execute(query, params).fetchone()[0][0]["Plan"]
        if os.environ.get("BENCH_SHOW_PLAN"):
            print(json.dumps(plan, indent=1), file=sys.stderr)
        conn.rollback()

    def total(node) -> int:
        own = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
        return max([own] + [total(child) for child in node.get("Plans", [])])

    return total(plan)


def make_token(admin, ws) -> str:
    token = "cxscim_" + secrets.token_urlsafe(32)
    admin.execute(
        "insert into cajex.scim_tokens (workspace_id, label, token_hash)"
        " values (%s, 'bench', %s)",
        (ws, hashlib.sha256(token.encode()).digest()),
    )
    return token


def start_server(env: dict, database_url: str, log_path: Path):
    """gunicorn with the real app on a free loopback port: (process, port)."""
    from cajex.localservices import free_port

    port = free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--threads",
            "2",
            "--log-level",
            "warning",
            "-b",
            f"127.0.0.1:{port}",
            "cajex.web.wsgi:app",
        ],
        env={**env, "DATABASE_URL": database_url},
        cwd=ROOT,
        # One log line per request: kept in a file, out of the progress.
        stdout=log,
        stderr=log,
    )
    try:
        wait_http(port)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"the server did not start; see {log_path}") from None
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    # Two keep-alive clients for two cores: more only measures queueing.
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--filters", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n_users, n_groups = 1000 // scale, 50 // scale
    big, other_size = 10_000 // scale, 1000 // scale
    n_others = 100 if not args.quick else 20
    n_filters = args.filters // scale

    import psycopg

    from cajex.localservices import LocalPostgres
    from cajex.migrate import migrate

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-scim-"))
    pg = LocalPostgres(root, fast=True).start()
    servers = []
    try:
        context_secret = secrets.token_hex(32)
        # Three databases in one cluster: provisioning, and the filter's two
        # sides (the big workspace alone, and beside n_others workspaces).
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            for name in ("side_alone", "side_crowded"):
                conn.execute(f"create database {name}")
        for name in ("cajex", "side_alone", "side_crowded"):
            say(f"migrating {name}")
            migrate(pg.url(name), context_secret)
        admin = psycopg.connect(pg.url(), autocommit=True)
        org = admin.execute(
            "insert into cajex.organisations (name) values ('Bench') returning id"
        ).fetchone()[0]
        prov_ws = seed_workspace(admin, org, "provision", 0)
        prov_token = make_token(admin, prov_ws)
        admin.execute("vacuum analyze")

        env = dict(
            os.environ,
            REDIS_URL="",
            CAJEX_ENV="production",
            CAJEX_SECRET_KEY="k" * 64,
            CAJEX_CONTEXT_SECRET=context_secret,
            CAJEX_JWT_SECRET="j" * 64,
            CAJEX_MASTER_KEY="m" * 64,
            CAJEX_DATA_DIR=str(root),
            CAJEX_PUBLIC_URL="http://127.0.0.1",
            PYTHONPATH=str(ROOT),
        )
        proc, port = start_server(
            env, pg.url("cajex", "cajex_app"), root / "server-provision.log"
        )
        servers.append(proc)
        base = "/scim/v2/provision"
        # Warm-up: each worker's pool and prepared context check.
        run(
            port,
            prov_token,
            [("GET", base + "/Users?count=1", None, 200)] * 20,
            args.clients,
        )

        # -- 1. provisioning ------------------------------------------------
        say(f"provisioning {n_users} users")
        users = run(
            port,
            prov_token,
            [
                (
                    "POST",
                    base + "/Users",
                    {
                        "schemas": [USER],
                        "userName": f"person{i}@corp.bench.test",
                        "externalId": f"ext-{i}",
                        "active": True,
                        "name": {"givenName": "Person", "familyName": str(i)},
                        "emails": [
                            {"value": f"person{i}@corp.bench.test", "type": "work"}
                        ],
                    },
                    201,
                )
                for i in range(n_users)
            ],
            args.clients,
        )
        user_ids = [b["id"] for b in users.pop("bodies")]
        users.pop("latencies")
        users.pop("seconds")
        say(f"creating {n_groups} groups")
        groups = run(
            port,
            prov_token,
            [
                (
                    "POST",
                    base + "/Groups",
                    {"schemas": [GROUP], "displayName": f"Team {j}", "members": []},
                    201,
                )
                for j in range(n_groups)
            ],
            args.clients,
        )
        group_ids = [b["id"] for b in groups.pop("bodies")]
        groups.pop("latencies")
        groups.pop("seconds")
        # Each user in two groups; each PATCH adds up to 20 members.
        members: dict[str, list[str]] = {gid: [] for gid in group_ids}
        for i, uid in enumerate(user_ids):
            members[group_ids[i % n_groups]].append(uid)
            members[group_ids[(i * 7 + 3) % n_groups]].append(uid)
        batches: list[list] = []
        for gid, uids in members.items():
            uids = list(dict.fromkeys(uids))
            batches.append([])
            for k in range(0, len(uids), 20):
                batches[-1].append(
                    (
                        "PATCH",
                        f"{base}/Groups/{gid}",
                        {
                            "schemas": [PATCH],
                            "Operations": [
                                {
                                    "op": "Add",
                                    "path": "members",
                                    "value": [{"value": u} for u in uids[k : k + 20]],
                                }
                            ],
                        },
                        204,
                    )
                )
        # Round-robin over the groups: an IdP works through one group's
        # members in order, so two PATCHes of one group in flight at once
        # (waiting on each other's row lock) would measure our ordering.
        patches = [
            batch[k]
            for k in range(max(map(len, batches)))
            for batch in batches
            if k < len(batch)
        ]
        say(f"adding memberships in {len(patches)} PATCH requests")
        memberships = run(port, prov_token, patches, args.clients)
        memberships.pop("bodies")
        memberships.pop("latencies")
        memberships.pop("seconds")
        linked = admin.execute(
            "select count(*) from cajex.scim_group_members where workspace_id = %s",
            (prov_ws,),
        ).fetchone()[0]
        if linked != sum(len(set(v)) for v in members.values()):
            raise RuntimeError(f"memberships missing: {linked}")
        proc.terminate()
        proc.wait(10)
        servers.remove(proc)
        admin.close()

        # -- 2. filter by userName: alone, and beside many workspaces ------
        sides = {}
        for name, others in (("side_alone", 0), ("side_crowded", n_others)):
            say(f"seeding {name}: {big} users and {others} other workspaces")
            with psycopg.connect(pg.url(name), autocommit=True) as conn:
                side_org = conn.execute(
                    "insert into cajex.organisations (name) values ('Bench')"
                    " returning id"
                ).fetchone()[0]
                big_ws = seed_workspace(conn, side_org, "big", big)
                token = make_token(conn, big_ws)
                for k in range(others):
                    seed_workspace(conn, side_org, f"other{k}", other_size)
                conn.execute("vacuum analyze")
                rows = conn.execute("select count(*) from cajex.scim_users").fetchone()[
                    0
                ]
            proc, port = start_server(
                env, pg.url(name, "cajex_app"), root / f"server-{name}.log"
            )
            servers.append(proc)
            sides[name] = {
                "port": port,
                "token": token,
                "other_workspaces": others,
                "scim_users_rows": rows,
                "latencies": [],
                "seconds": 0.0,
                "shared_buffers_per_filter": filter_buffers(
                    pg.url(name, "cajex_app"), token, "P42@big.bench.test"
                ),
            }
        rng = random.Random(7)
        filters = []
        for _ in range(n_filters):
            if rng.random() < 0.8:
                name, want = f"P{rng.randint(1, big)}@BIG.bench.test", 1
            else:
                name, want = f"nobody{rng.randint(1, 10**6)}@big.bench.test", 0
            query = f'userName eq "{name}"'
            filters.append(
                (
                    "GET",
                    "/scim/v2/big/Users?filter="
                    + query.replace(" ", "%20").replace('"', "%22"),
                    None,
                    200,
                    want,
                )
            )
        for side in sides.values():  # warm-up of every worker
            run(
                side["port"], side["token"], [f[:4] for f in filters[:50]], args.clients
            )
        # Short bursts alternating between the sides, so that the machine's
        # load (other processes, the client itself) falls on both alike.
        per_round = max(1, n_filters // args.rounds)
        for i in range(args.rounds):
            batch = filters[i * per_round : (i + 1) * per_round]
            order = list(sides.values()) if i % 2 == 0 else list(sides.values())[::-1]
            for side in order:
                result = run(
                    side["port"], side["token"], [f[:4] for f in batch], args.clients
                )
                wrong = [
                    f
                    for f, b in zip(batch, result["bodies"], strict=True)
                    if b["totalResults"] != f[4]
                ]
                if wrong:
                    raise RuntimeError(f"wrong filter answers, e.g. {wrong[0][1]}")
                side["latencies"] += result["latencies"]
                side["seconds"] += result["seconds"]
            say(f"filter round {i + 1}/{args.rounds}")
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.stop("immediate")

    filter_runs = []
    for side in sides.values():
        ordered = sorted(side["latencies"])
        filter_runs.append(
            {
                "other_workspaces": side["other_workspaces"],
                "scim_users_rows": side["scim_users_rows"],
                "shared_buffers_per_filter": side["shared_buffers_per_filter"],
                "requests": len(ordered),
                "rps": round(len(ordered) / side["seconds"], 1),
                "p50_ms": percentile(ordered, 0.5),
                "p99_ms": percentile(ordered, 0.99),
            }
        )
    phases = {"users": users, "groups": groups, "memberships": memberships}
    worst_p99 = max(
        [p["p99_ms"] for p in phases.values()] + [r["p99_ms"] for r in filter_runs]
    )
    alone, crowded = filter_runs
    # Independence from the other workspaces: the crowded side's latency
    # against the lone side's, measured side by side, and the buffers the
    # query touches ("flat": a B-tree descent may grow by one level).
    growth = round(crowded["p50_ms"] / alone["p50_ms"], 2)
    p99_growth = round(crowded["p99_ms"] / alone["p99_ms"], 2)
    buffers_flat = (
        crowded["shared_buffers_per_filter"] <= alone["shared_buffers_per_filter"] + 2
    )
    print(
        json.dumps(
            {
                "bench": "scim",
                "quick": args.quick,
                "clients": args.clients,
                "provisioning": phases,
                "filter_workspace_users": big,
                "filter": filter_runs,
                "filter_p50_ratio": growth,
                "filter_p99_ratio": p99_growth,
                "filter_buffers_flat": buffers_flat,
                "worst_p99_ms": worst_p99,
                "target": {
                    "p99_ms": P99_TARGET_MS,
                    "filter_p50_ratio_max": INDEPENDENCE_TARGET,
                    "filter_buffers_flat": True,
                },
                "met": worst_p99 < P99_TARGET_MS
                and growth <= INDEPENDENCE_TARGET
                and buffers_flat,
            }
        )
    )


if __name__ == "__main__":
    main()
