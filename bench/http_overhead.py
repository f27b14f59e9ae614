"""The projects list endpoint over HTTP: middleware and context versus none.

Two gunicorn servers run side by side on loopback, against one database:
(a) the real app, GET /w/<slug>/api/v1/projects through the workspace
middleware, the verified context and RLS; (b) the same app with one more
route, the same endpoint with the workspace hard-coded: the same query with
an explicit workspace_id, as a role that bypasses RLS, and no context. A client with keep-alive
connections alternates short bursts between the two, so machine load hits
both alike. Target: requests per second of (a) / (b) >= 0.90.

This machine's speed drifts from second to second (one burst of 200
requests can run 20% faster than the next), so the two sides alternate in
many short rounds; each round's ratio is printed, and the figure is the
ratio of the totals.

Usage: python bench/http_overhead.py [--requests 8000] [--clients 4] [--rounds 40]
The last line of output is one JSON object with the figures and the target.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
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


def baseline_app():
    """The same app and endpoint, with the workspace hard-coded and no context.

    Everything else about a request is as in the real app (Flask, cookie,
    logging, headers); only the workspace middleware, the context and RLS
    are replaced by a query with an explicit workspace_id, run as a role that
    bypasses RLS.
    """
    from cajex.web import create_app
    from cajex.web.views.projects import _COLUMNS, to_json
    from flask import jsonify
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    app = create_app()
    pool = ConnectionPool(
        os.environ["BASELINE_DATABASE_URL"],
        min_size=2,
        max_size=10,
        kwargs={"row_factory": dict_row},
    )
    workspace_id = os.environ["BASELINE_WORKSPACE_ID"]

    @app.get("/hardcoded/<slug>/api/v1/projects")
    def hardcoded_projects(slug):
        with pool.connection() as conn:
            rows = conn.execute(
                f"select {_COLUMNS} from cajex.projects where workspace_id = %s"
                " order by created_at desc, id desc limit 21",
                (workspace_id,),
            ).fetchall()
        return jsonify(items=[to_json(r) for r in rows[:20]], next_cursor=None)

    return app


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


def burst(port: int, path: str, headers: dict, count: int, clients: int) -> float:
    """Send `count` requests with `clients` keep-alive connections; seconds taken."""
    per = count // clients
    errors = []

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per):
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or b'"items"' not in body:
                errors.append(response.status)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
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
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    import psycopg

    from cajex.localservices import LocalPostgres, free_port
    from cajex.migrate import migrate

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-http-"))
    pg = LocalPostgres(root, fast=True).start()
    procs = []
    try:
        context_secret = secrets.token_hex(32)
        migrate(pg.url(), context_secret)
        admin = psycopg.connect(pg.url(), autocommit=True)
        user = admin.execute(
            "insert into cajex.users (email) values ('bench@bench.test') returning id"
        ).fetchone()[0]
        org = admin.execute(
            "insert into cajex.organisations (name) values ('Bench') returning id"
        ).fetchone()[0]
        ws = admin.execute(
            "insert into cajex.workspaces (organisation_id, slug, name, plan) values (%s, 'bench', 'Bench', 'team')"
            " returning id",
            (org,),
        ).fetchone()[0]
        admin.execute(
            "insert into cajex.memberships (workspace_id, user_id, role) values (%s, %s, 'owner')",
            (ws, user),
        )
        admin.execute(
            "insert into cajex.projects (workspace_id, name, tags, created_at)"
            " select %s, 'Project ' || g, '{platform}', now() - g * interval '1 minute'"
            " from generate_series(1, 2000) g",
            (ws,),
        )
        session_secret = secrets.token_urlsafe(32)
        session_id = admin.execute(
            "select cajex_private.create_session(%s, %s, 'bench')",
            (user, hashlib.sha256(session_secret.encode()).digest()),
        ).fetchone()[0]
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
            BASELINE_DATABASE_URL=pg.url(),
            BASELINE_WORKSPACE_ID=str(ws),
            PYTHONPATH=str(ROOT),
        )
        app_port, base_port = free_port(), free_port()
        common = ["--workers", "2", "--threads", "2", "--log-level", "warning"]
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
                    f"127.0.0.1:{base_port}",
                    "--chdir",
                    str(ROOT / "bench"),
                    "http_overhead:baseline_app()",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        wait_http(app_port)
        wait_http(base_port)

        # A signed Flask session cookie, as a sign-in would set it.
        sys.path.insert(0, str(ROOT))
        from flask import Flask

        signer = Flask("cookie")
        signer.secret_key = env["CAJEX_SECRET_KEY"]
        cookie = signer.session_interface.get_signing_serializer(signer).dumps(
            {
                "_user_id": str(user),
                "_fresh": True,
                "sid": str(session_id),
                "sk": session_secret,
            }
        )
        app_headers = {
            "Cookie": f"cajex_session={cookie}",
            "Accept": "application/json",
        }
        path = "/w/bench/api/v1/projects"
        base_path = "/hardcoded/bench/api/v1/projects"

        per_round = max(args.clients, args.requests // args.rounds)
        burst(app_port, path, app_headers, per_round // 4 or 1, args.clients)  # warm-up
        burst(base_port, base_path, app_headers, per_round // 4 or 1, args.clients)
        app_time = base_time = 0.0
        rounds = []
        for i in range(args.rounds):
            order = (
                [(True, app_port), (False, base_port)]
                if i % 2 == 0
                else [(False, base_port), (True, app_port)]
            )
            for is_app, port in order:
                elapsed = burst(
                    port,
                    path if is_app else base_path,
                    app_headers,
                    per_round,
                    args.clients,
                )
                if is_app:
                    app_time += elapsed
                    app_elapsed = elapsed
                else:
                    base_time += elapsed
                    base_elapsed = elapsed
            rounds.append(base_elapsed / app_elapsed)
            print(
                f"round {i + 1}/{args.rounds}: ratio {rounds[-1]:.3f}",
                file=sys.stderr,
                flush=True,
            )
        total = per_round * args.rounds
        app_rps, base_rps = total / app_time, total / base_time
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        pg.stop("immediate")

    ratio = round(app_rps / base_rps, 3)
    print(
        json.dumps(
            {
                "bench": "http_overhead",
                "requests_per_side": total,
                "rps_with_context": round(app_rps, 1),
                "rps_hardcoded": round(base_rps, 1),
                "ratio": ratio,
                "round_ratios": {
                    "median": round(statistics.median(rounds), 3),
                    "min": round(min(rounds), 3),
                    "max": round(max(rounds), 3),
                },
                "target": {"ratio": 0.90},
                "met": ratio >= 0.90,
            }
        )
    )


if __name__ == "__main__":
    main()
