"""Purging a big workspace: throughput against one cascading delete, and the
latency another workspace sees meanwhile.

Starts its own PostgreSQL, migrates, and loads (as the superuser, with
generate_series) two identical workspaces of --projects projects each, plus
a small neighbour. A thread runs the neighbour's projects list (the real
query, in its verified context, under RLS) in a loop the whole time.
(a) baseline: the neighbour's latency with nothing else running;
(b) the ceiling: one `delete from cajex.workspaces` of the first big
    workspace, cascading to every table in one statement;
(c) the purge job's code (cajex.retention.purge_workspace) on the second:
    data keys, then every workspace-owned table in small committed batches
    (a large workspace's rows in page order), resting after each batch as
    the job does (--pace), storage objects, tombstone.
Targets: rows/s of (c) / (b) >= 0.8; the neighbour's p99 during (c) at most
1.5x its baseline p99.

Usage: python bench/purge.py [--projects 1000000] [--batch 5000] [--pace 1.0]
The last line of output is one JSON object with the figures and the targets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from export import say, setup  # noqa: E402

from cajex import context, db, retention  # noqa: E402


class Prober(threading.Thread):
    """The neighbour's projects list in a loop; records each latency by phase."""

    def __init__(self, url: str, secret: str, workspace_id):
        super().__init__(daemon=True)
        self.url, self.secret, self.workspace_id = url, secret, workspace_id
        self.phase = "warmup"
        self.samples: dict[str, list[float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url) as conn:
            while not self.stop.is_set():
                token = context.service_token(self.secret, self.workspace_id, "bench")
                started = time.perf_counter()
                with db.in_context(conn, token, str(self.workspace_id)) as opened:
                    assert opened.workspace_id is not None
                    conn.execute(
                        "select id, name, description, tags, status, created_by, created_at,"
                        " updated_at from cajex.projects"
                        " order by created_at desc, id desc limit 50"
                    ).fetchall()
                self.samples.setdefault(self.phase, []).append(
                    time.perf_counter() - started
                )
                time.sleep(0.002)


def p99(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)
    )


def owned_rows(admin, workspace_id) -> int:
    total = 0
    for table, column in admin.execute(
        "select table_name::text, column_name from cajex_private.purge_tables()"
    ).fetchall():
        total += admin.execute(
            f"select count(*) from {table} where {column} = %s",  # noqa: S608
            (workspace_id,),
        ).fetchone()[0]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=retention.BATCH)
    parser.add_argument(
        "--pace", type=float, default=retention.PACE,
        help="rest after each batch, as a multiple of its time (the job's default)",
    )
    parser.add_argument("--baseline-seconds", type=float, default=8.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cajex-bench-purge-"))
    pg = None
    try:
        # Two identical giants and a normal neighbour.
        pg, secret, admin, first, others = setup(
            root, args.projects, sizes=[args.projects, args.projects, 20_000]
        )
        second, neighbour = others[0], others[1]
        rows_first, rows_second = owned_rows(admin, first), owned_rows(admin, second)
        say(f"workspaces of {rows_first:,} and {rows_second:,} owned rows")

        prober = Prober(pg.url(user="cajex_app"), secret, neighbour)
        prober.start()
        time.sleep(2)
        prober.phase = "baseline"
        time.sleep(args.baseline_seconds)

        # (b) One cascading delete. The audit log's append-only trigger admits
        # only the purge's definer role; the cascade runs as the table owner,
        # so the trigger is set aside for this one statement.
        # Each measured phase starts from clean buffers: otherwise the
        # checkpointer writes out the loading (or the cascade and its vacuum)
        # during the phase that follows, and charges it to that phase.
        admin.execute("checkpoint")
        prober.phase = "cascade"
        admin.execute(
            "alter table cajex.audit_log disable trigger audit_log_append_only"
        )
        started = time.perf_counter()
        admin.execute("delete from cajex.workspaces where id = %s", (first,))
        cascade_s = time.perf_counter() - started
        admin.execute(
            "alter table cajex.audit_log enable trigger audit_log_append_only"
        )
        prober.phase = "between"
        admin.execute("vacuum analyze")
        admin.execute("checkpoint")
        prober.phase = "baseline2"
        time.sleep(args.baseline_seconds)

        # (c) The purge, as the job runs it (as cajex_app, through the definer functions).
        admin.execute(
            "update cajex.workspaces set status = 'deleted', deleted_at = now(),"
            " purge_after = now() - interval '1 second' where id = %s",
            (second,),
        )
        prober.phase = "purge"
        started = time.perf_counter()
        summary = retention.purge_workspace(
            pg.url(user="cajex_worker"), None, second, batch=args.batch, pace=args.pace
        )
        purge_s = time.perf_counter() - started
        prober.phase = "after"
        prober.stop.set()
        prober.join(10)

        assert summary is not None and summary["rows"] == rows_second, summary
        assert owned_rows(admin, second) == 0
        assert owned_rows(admin, neighbour) > 0
        samples = prober.samples
        baseline = samples["baseline"] + samples["baseline2"]
        figures = {
            "projects": args.projects,
            "rows": rows_second,
            "batch": args.batch,
            "pace": args.pace,
            "cascade_rows_per_s": round(rows_first / cascade_s),
            "purge_rows_per_s": round(rows_second / purge_s),
            "throughput_ratio": round(
                (rows_second / purge_s) / (rows_first / cascade_s), 3
            ),
            "baseline_p99_ms": round(p99(baseline) * 1000, 2),
            "purge_p99_ms": round(p99(samples["purge"]) * 1000, 2),
            "cascade_p99_ms": round(p99(samples.get("cascade", [0.0])) * 1000, 2),
            "purge_samples": len(samples["purge"]),
        }
        figures["p99_ratio"] = round(
            figures["purge_p99_ms"] / figures["baseline_p99_ms"], 3
        )
        targets = {"throughput_ratio": 0.8, "p99_ratio": 1.5}
        ok = figures["throughput_ratio"] >= 0.8 and figures["p99_ratio"] <= 1.5
        print(
            f"purge of {rows_second:,} rows: {figures['throughput_ratio']:.2f} of a cascading"
            f" delete; neighbour p99 {figures['purge_p99_ms']} ms vs"
            f" {figures['baseline_p99_ms']} ms baseline ({figures['p99_ratio']:.2f}x);"
            f" during the cascade {figures['cascade_p99_ms']} ms"
        )
        print(
            json.dumps(
                {"bench": "purge", "figures": figures, "targets": targets, "ok": ok}
            )
        )
        admin.close()
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
