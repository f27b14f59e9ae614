"""A mixed multi-workspace workload over HTTP, against the production server.

The real app runs under gunicorn (2 workers x 4 threads) with every layer on:
session cookie, workspace middleware, verified context, RLS, the business
functions and their audit events, request logs and metrics. Beside it, a bare
Flask + psycopg app (same gunicorn settings) serves the same routes with the
same queries and no middleware, context or audit. Clients spread over 20
workspaces send 70% list, 15% get, 10% create and 5% update requests,
alternating between the two servers in rounds.

Reports throughput and p50/p99 latency of each, and the throughput ratio.
Target: real / bare >= 0.80.

Usage: python bench/load.py [--requests 6000] [--clients 8]
The last line of output is one JSON object with the figures and the target.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

WORKSPACES = 20


def bare_app():
    """Same routes and queries, no middleware, context, RLS or audit."""
    import uuid

    from cajex.web.views.projects import _COLUMNS, to_json
    from flask import Flask, jsonify, request
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    app = Flask("bare")
    pool = ConnectionPool(
        os.environ["BARE_DATABASE_URL"],
        min_size=2,
        max_size=10,
        kwargs={"row_factory": dict_row},
    )
    slugs = json.loads(os.environ["BARE_WORKSPACES"])

    @app.get("/w/<slug>/api/v1/projects")
    def list_projects(slug):
        with pool.connection() as conn:
            rows = conn.execute(
                f"select {_COLUMNS} from cajex.projects where workspace_id = %s"
                " order by created_at desc, id desc limit 21",
                (slugs[slug],),
            ).fetchall()
        return jsonify(items=[to_json(r) for r in rows[:20]], next_cursor=None)

    @app.get("/w/<slug>/api/v1/projects/<pid>")
    def get_project(slug, pid):
        with pool.connection() as conn:
            row = conn.execute(
                f"select {_COLUMNS} from cajex.projects where workspace_id = %s and id = %s",
                (slugs[slug], uuid.UUID(pid)),
            ).fetchone()
        return jsonify(to_json(row))

    @app.post("/w/<slug>/api/v1/projects")
    def create_project(slug):
        body = request.get_json()
        with pool.connection() as conn:
            row = conn.execute(
                f"insert into cajex.projects (workspace_id, name) values (%s, %s) returning {_COLUMNS}",
                (slugs[slug], body["name"]),
            ).fetchone()
        return jsonify(to_json(row)), 201

    @app.patch("/w/<slug>/api/v1/projects/<pid>")
    def update_project(slug, pid):
        body = request.get_json()
        with pool.connection() as conn:
            row = conn.execute(
                f"update cajex.projects set name = %s, updated_at = now() where workspace_id = %s and id = %s"
                f" returning {_COLUMNS}",
                (body["name"], slugs[slug], uuid.UUID(pid)),
            ).fetchone()
        return jsonify(to_json(row))

    @app.get("/livez")
    def livez():
        return "ok"

    return app


def run_clients(port, plan, clients, cookie_for, latencies):
    """Send the planned requests with keep-alive connections; seconds taken."""
    chunks = [plan[i::clients] for i in range(clients)]
    errors = []

    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for method, slug, path, body in chunk:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            cookie = cookie_for(slug)
            if cookie:
                headers["Cookie"] = cookie
            t0 = time.perf_counter()
            conn.request(
                method, path, body=json.dumps(body) if body else None, headers=headers
            )
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - t0)
            if response.status >= 400:
                errors.append((method, path, response.status))
        conn.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    import psycopg
    from flask import Flask
    from http_overhead import wait_http

    from cajex.localservices import LocalPostgres, free_port
    from cajex.migrate import migrate

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-load-"))
    pg = LocalPostgres(root, fast=True).start()
    procs = []
    try:
        context_secret = secrets.token_hex(32)
        migrate(pg.url(), context_secret)
        admin = psycopg.connect(pg.url(), autocommit=True)
        org = admin.execute(
            "insert into cajex.organisations (name) values ('Load') returning id"
        ).fetchone()[0]
        slugs, sessions, projects = {}, {}, {}
        for n in range(WORKSPACES):
            slug = f"load-{n}"
            user = admin.execute(
                "insert into cajex.users (email) values (%s) returning id",
                (f"owner{n}@load.test",),
            ).fetchone()[0]
            ws = admin.execute(
                "insert into cajex.workspaces (organisation_id, slug, name, plan)"
                " values (%s, %s, %s, 'team') returning id",
                (org, slug, slug),
            ).fetchone()[0]
            admin.execute(
                "insert into cajex.memberships (workspace_id, user_id, role) values (%s, %s, 'owner')",
                (ws, user),
            )
            admin.execute(
                "insert into cajex.projects (workspace_id, name, created_at)"
                " select %s, 'Project ' || g, now() - g * interval '1 minute'"
                " from generate_series(1, 500) g",
                (ws,),
            )
            projects[slug] = [
                str(r[0])
                for r in admin.execute(
                    "select id from cajex.projects where workspace_id = %s limit 100",
                    (ws,),
                ).fetchall()
            ]
            secret = secrets.token_urlsafe(32)
            sid = admin.execute(
                "select cajex_private.create_session(%s, %s, 'bench')",
                (user, hashlib.sha256(secret.encode()).digest()),
            ).fetchone()[0]
            slugs[slug] = str(ws)
            sessions[slug] = (str(user), str(sid), secret)
        admin.execute("vacuum analyze")

        env = dict(
            os.environ,
            DATABASE_URL=pg.url("cajex", "cajex_app"),
            REDIS_URL="",
            CAJEX_ENV="production",
            CAJEX_SECRET_KEY="k" * 64,
            CAJEX_CONTEXT_SECRET=context_secret,
            CAJEX_JWT_SECRET="j" * 64,
            CAJEX_MASTER_KEY="m" * 64,
            CAJEX_DATA_DIR=str(root),
            BARE_DATABASE_URL=pg.url(),
            BARE_WORKSPACES=json.dumps(slugs),
            PYTHONPATH=str(ROOT),
        )
        app_port, bare_port = free_port(), free_port()
        common = ["--workers", "2", "--threads", "4", "--log-level", "warning"]
        with open(root / "app.log", "w") as app_log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gunicorn",
                        *common,
                        "-b",
                        f"127.0.0.1:{app_port}",
                        "cajex.web.wsgi:app",
                    ],
                    env=env,
                    cwd=ROOT,
                    stderr=app_log,
                )
            )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    *common,
                    "-b",
                    f"127.0.0.1:{bare_port}",
                    "--chdir",
                    str(ROOT / "bench"),
                    "load:bare_app()",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        wait_http(app_port)
        wait_http(bare_port)

        signer = Flask("cookie")
        signer.secret_key = env["CAJEX_SECRET_KEY"]
        serializer = signer.session_interface.get_signing_serializer(signer)
        cookies = {
            slug: "cajex_session="
            + serializer.dumps(
                {"_user_id": user, "_fresh": True, "sid": sid, "sk": secret}
            )
            for slug, (user, sid, secret) in sessions.items()
        }

        rng = random.Random(7)

        def plan(count):
            out = []
            for i in range(count):
                slug = rng.choice(list(slugs))
                base = f"/w/{slug}/api/v1/projects"
                r = rng.random()
                if r < 0.70:
                    out.append(("GET", slug, base, None))
                elif r < 0.85:
                    out.append(
                        ("GET", slug, f"{base}/{rng.choice(projects[slug])}", None)
                    )
                elif r < 0.95:
                    out.append(("POST", slug, base, {"name": f"load {i}"}))
                else:
                    out.append(
                        (
                            "PATCH",
                            slug,
                            f"{base}/{rng.choice(projects[slug])}",
                            {"name": f"renamed {i}"},
                        )
                    )
            return out

        per_round = args.requests // args.rounds
        run_clients(app_port, plan(200), args.clients, cookies.get, [])
        run_clients(bare_port, plan(200), args.clients, lambda s: None, [])
        times = {"app": 0.0, "bare": 0.0}
        lat = {"app": [], "bare": []}
        for i in range(args.rounds):
            work = plan(per_round)
            sides = [("app", app_port), ("bare", bare_port)]
            if i % 2:
                sides.reverse()
            for side, port in sides:
                times[side] += run_clients(
                    port,
                    work,
                    args.clients,
                    cookies.get if side == "app" else (lambda s: None),
                    lat[side],
                )
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr, flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        pg.stop("immediate")

    def pct(values, q):
        values = sorted(values)
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

    total = per_round * args.rounds
    result = {
        "bench": "load",
        "requests_per_side": total,
        "clients": args.clients,
        "workspaces": WORKSPACES,
    }
    for side in ("app", "bare"):
        result[side] = {
            "rps": round(total / times[side], 1),
            "p50_ms": pct(lat[side], 0.5),
            "p99_ms": pct(lat[side], 0.99),
            "mean_ms": round(statistics.mean(lat[side]) * 1000, 2),
        }
    result["ratio"] = round(result["app"]["rps"] / result["bare"]["rps"], 3)
    result["target"] = {"ratio": 0.80}
    result["met"] = result["ratio"] >= 0.80
    print(json.dumps(result))


if __name__ == "__main__":
    main()
