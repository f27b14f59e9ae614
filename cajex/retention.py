"""Retention: the recovery window of a deleted workspace, and its purge.

Deleting (cajex.delete_workspace) and restoring (cajex.restore_workspace)
are SQL functions called by the web views. The purge lives here: for each
workspace past its date it destroys the data keys first (crypto-shredding:
whatever a crash leaves is unreadable), deletes the rows of every
workspace-owned table the catalog names, children before parents, in small
batches each committed on its own (short locks, no long transaction that
would hold back vacuum or other workspaces), deletes the storage objects,
and leaves a tombstone. Every step can run again: a crashed purge resumes.
"""

from __future__ import annotations

import os
import time
import uuid

import psycopg
from psycopg.rows import dict_row

from cajex import log

_logger = log.get("cajex.retention")

DEFAULT_DAYS = 30
#: Rows per committed purge batch: small enough for short locks (a batch
#: takes about 10 ms), large enough that the per-batch round trip and checks
#: are noise.
BATCH = 20000
#: After each batch the purge rests this many times as long as the batch
#: took, so a purge uses at most half of a core's time and other
#: workspaces' queries keep their latency (bench/purge.py measures both: on
#: two cores, a quarter of the rest let a neighbour's p99 double).
PACE = 1.0
#: A physical walk (cajex_private.purge_pages) starts with ranges of this
#: many pages, then sizes each range to hold about BATCH rows of the
#: workspace, growing across pages that hold none, up to WALK_MAX_PAGES
#: (the most the function takes: 8 MB).
WALK_FIRST_PAGES = 32
WALK_MAX_PAGES = 1024
#: A long walk logs how far it has got this often.
PROGRESS_SECONDS = 10.0


def retention_days(env: dict | None = None) -> int:
    """The deployment's recovery window in days (CAJEX_RETENTION_DAYS, default 30)."""
    raw = (env if env is not None else os.environ).get("CAJEX_RETENTION_DAYS", "")
    if not raw:
        return DEFAULT_DAYS
    if not raw.isdigit() or not 1 <= int(raw) <= 3650:
        raise ValueError(
            "CAJEX_RETENTION_DAYS is a whole number of days from 1 to 3650"
        )
    return int(raw)


def _destroy_keys(conn: psycopg.Connection, workspace_id: str) -> int:
    return conn.execute(
        "select cajex_private.purge_destroy_keys(%s) as n", (workspace_id,)
    ).fetchone()["n"]


def _purge_table(
    conn, workspace_id: str, table: str, column: str, batch: int, pace: float
) -> int:
    """Every row of the workspace in one table, in committed batches.

    A workspace that fills a good part of the table is walked in physical
    order first; then batches in key order take whatever is left (all of
    it, for a small workspace or a set-null reference).
    """
    total = 0
    args = (workspace_id, table, column)
    if conn.execute(
        "select cajex_private.purge_walks(%s, %s::regclass, %s) as walk", args
    ).fetchone()["walk"]:
        total += _walk_pages(conn, workspace_id, table, column, batch, pace)
        if not conn.execute(
            "select cajex_private.purge_rows_left(%s, %s::regclass, %s) as left", args
        ).fetchone()["left"]:
            return total
    after = None
    while True:
        row = _batch(
            conn,
            "select deleted, last_key from cajex_private.purge_batch(%s, %s::regclass, %s, %s, %s)",
            (workspace_id, table, column, batch, after),
            pace,
        )
        total += row["deleted"]
        if row["deleted"] < batch:
            if after is None:
                return total
            # One last pass from the start: nothing may hide below the keyset.
            after = None
            continue
        after = row["last_key"]


def _batch(conn, query: str, params: tuple, pace: float) -> dict:
    """One committed batch; then rest `pace` times as long as it took."""
    started = time.perf_counter()
    row = conn.execute(query, params).fetchone()
    if pace > 0:
        time.sleep((time.perf_counter() - started) * pace)
    return row


def _walk_pages(
    conn, workspace_id: str, table: str, column: str, batch: int, pace: float
) -> int:
    """The workspace's rows of one table, page range by page range.

    Each range is sized to hold about `batch` rows at the density the last
    one found, doubling across pages that hold none, within WALK_MAX_PAGES.
    """
    total, start, pages = 0, 0, WALK_FIRST_PAGES
    reported = time.monotonic()
    while True:
        row = _batch(
            conn,
            "select deleted, pages from cajex_private.purge_pages(%s, %s::regclass, %s, %s, %s)",
            (workspace_id, table, column, start, pages),
            pace,
        )
        total += row["deleted"]
        start += pages
        if start >= row["pages"]:
            return total
        if time.monotonic() - reported >= PROGRESS_SECONDS:
            reported = time.monotonic()
            _logger.info(
                "purge.progress",
                workspace_id=workspace_id,
                table=table,
                rows=total,
                page=start,
                pages=row["pages"],
            )
        if row["deleted"] == 0:
            pages *= 2
        else:
            pages = pages * batch // row["deleted"]
        pages = max(1, min(WALK_MAX_PAGES, pages))


def purge_workspace(
    database_url: str,
    store,
    workspace_id: str | uuid.UUID,
    batch: int = BATCH,
    pace: float = PACE,
) -> dict | None:
    """Purge one workspace that is past its date; None when it is not due.

    Idempotent and resumable: run it again after a crash and it carries on.
    After each batch it rests `pace` times as long as the batch took (0: flat
    out, for a quiet database).
    """
    workspace_id = str(uuid.UUID(str(workspace_id)))
    started = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        if not conn.execute(
            "select cajex_private.purge_begin(%s) as ok", (workspace_id,)
        ).fetchone()["ok"]:
            return None
        _logger.info("purge.started", workspace_id=workspace_id)
        keys = _destroy_keys(conn, workspace_id)
        tables = conn.execute(
            "select table_name::text as table_name, column_name, action from cajex_private.purge_tables()"
        ).fetchall()
        rows: dict[str, int] = {}
        for table in tables:
            name = table["table_name"]
            deleted = _purge_table(
                conn, workspace_id, name, table["column_name"], batch, pace
            )
            rows[name] = rows.get(name, 0) + deleted
            if deleted:
                _logger.info(
                    "purge.table", workspace_id=workspace_id, table=name, rows=deleted
                )
        objects = store.delete_prefix(f"{workspace_id}/") if store is not None else 0
        conn.execute(
            "select cajex_private.purge_finish(%s, %s)", (workspace_id, objects)
        )
    summary = {
        "workspace_id": workspace_id,
        "rows": sum(rows.values()),
        "tables": rows,
        "objects": objects,
        "keys": keys,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    _logger.info(
        "purge.finished",
        workspace_id=workspace_id,
        rows=summary["rows"],
        objects=objects,
        keys=keys,
        duration_ms=summary["duration_ms"],
    )
    return summary


def purge_due(
    database_url: str, store, limit: int = 10, batch: int = BATCH
) -> list[dict]:
    """Purge every workspace whose recovery window has ended (the cron job)."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        due = [
            r["workspace_id"]
            for r in conn.execute(
                "select workspace_id from cajex_private.purge_due(%s)", (limit,)
            ).fetchall()
        ]
    done = []
    for workspace_id in due:
        summary = purge_workspace(database_url, store, workspace_id, batch=batch)
        if summary:
            done.append(summary)
    return done
