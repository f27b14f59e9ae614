"""Export jobs: writing an export (outbox kind `export.run`) and the daily
sweep that deletes exports past their date (run by `rq cron`)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from cajex.jobs import registry

from cajex import config, db, exports, log, storage

_logger = log.get("cajex.jobs.export")

#: After this many attempts an export is marked failed for good.
MAX_ATTEMPTS = 5


def _page_url(settings, slug: str) -> str:
    return f"{settings.public_url}/w/{slug}/exports"


@registry.handler("export.run")
def run_export(ctx: registry.JobContext) -> None:
    """Write, verify and publish the export named in the payload.

    Idempotent: an export that is ready (or settled otherwise) is left
    alone. Every run is an attempt of its own (start_export numbers it) and
    publishes under that attempt's prefix; only the latest attempt can
    finish, so when the outbox hands the job out again while an earlier
    delivery still runs, the loser removes its own objects and the ready
    export's files are always the ones its checksums describe. A failure
    puts the export back in the queue (the outbox retries with a backoff)
    until the last attempt, which marks it failed.
    """
    export_id = str(ctx.payload["export_id"])
    settings = ctx.settings
    store = storage.from_settings(settings)
    with ctx.service("export") as (conn, opened):
        if opened.workspace_id is None:
            # Deleted meanwhile: a deleted workspace exports nothing, and
            # delete_workspace marked the export failed.
            _logger.info(
                "export.skipped", workspace_id=ctx.workspace_id, export_id=export_id
            )
            return
        row = conn.execute(
            "select status, attempts from cajex.start_export(%s)", (export_id,)
        ).fetchone()
        workspace = conn.execute(
            "select id, slug, name from cajex.workspaces where id = cajex.current_workspace_id()"
        ).fetchone()
        version = conn.execute("select cajex_private.schema_version() as v").fetchone()[
            "v"
        ]
    if row["status"] != "running":
        return
    attempt = row["attempts"]
    prefix = exports.object_prefix(workspace["id"], export_id, attempt)

    def progress(pct: int) -> None:
        with ctx.service("export") as (pconn, popened):
            if popened.workspace_id is not None:
                pconn.execute(
                    "select cajex.export_progress(%s, %s, %s)",
                    (export_id, pct, attempt),
                )

    try:
        with exports.snapshot_context(
            ctx.pool,
            settings.context_secret,
            ctx.workspace_id,
            parallel=exports.PARALLEL,
        ) as (conn, ws, helpers):
            if ws is None:
                return
            objects, counts = exports.build(
                [conn, *helpers],
                store,
                workspace,
                export_id,
                version,
                progress,
                attempt=attempt,
            )
    except Exception as exc:
        # Publishing may have begun: what this attempt published is no one's.
        _discard(store, prefix, export_id)
        final = ctx.attempts >= MAX_ATTEMPTS
        current = False
        with ctx.service("export") as (conn, opened):
            if opened.workspace_id is not None:
                current = conn.execute(
                    "select cajex.fail_export(%s, %s, %s, %s) as changed",
                    (
                        export_id,
                        type(exc).__name__ + ": " + log.scrub_text(str(exc)),
                        final,
                        attempt,
                    ),
                ).fetchone()["changed"]
        _logger.warning(
            "export.failed",
            workspace_id=ctx.workspace_id,
            export_id=export_id,
            attempt=ctx.attempts,
            final=final,
            error_class=type(exc).__name__,
        )
        # A retry only for the current attempt: one that was taken over (or
        # whose export was settled meanwhile) has nothing left to do.
        if final or not current:
            return
        raise
    try:
        with ctx.service("export") as (conn, opened):
            if opened.workspace_id is None:
                # Deleted while writing: the export is failed already.
                _discard(store, prefix, export_id)
                return
            conn.execute(
                "select cajex.finish_export(%s, %s, %s, %s, make_interval(days => %s), %s, %s)",
                (
                    export_id,
                    db_json(objects),
                    db_json(counts),
                    version,
                    exports.KEEP_DAYS,
                    _page_url(settings, workspace["slug"]),
                    attempt,
                ),
            )
    except psycopg.Error as exc:
        if exc.sqlstate != "CXSTL":
            # The outcome is unknown (the commit may have landed): keep the
            # objects; the retry is a new attempt, and the export's expiry
            # removes every attempt's prefix.
            raise
        # Another attempt took the export over (or it was settled): this
        # attempt's objects are not the export's.
        _discard(store, prefix, export_id)
        _logger.info(
            "export.superseded",
            workspace_id=ctx.workspace_id,
            export_id=export_id,
            attempt=attempt,
        )


def _discard(store, prefix: str, export_id: str) -> None:
    """Remove what one attempt published; best effort (the purge or the
    expiry of the export takes whatever is left, never served meanwhile)."""
    try:
        store.delete_prefix(prefix)
    except Exception as exc:  # the outcome is recorded already
        _logger.warning(
            "export.discard_failed",
            export_id=export_id,
            error_class=type(exc).__name__,
        )


def db_json(value):
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def expire_exports(limit: int = 500) -> int:
    """Delete the objects of exports past their date and mark them expired (cron)."""
    settings = config.from_env()
    store = storage.from_settings(settings)
    count = 0
    pool = db.make_pool(settings.worker_url, 1, 1, name="export-expiry")
    try:
        with pool.connection() as conn:
            conn.autocommit = True
            due = conn.execute(
                "select workspace_id, id, objects from cajex_private.due_export_expiries(%s)",
                (limit,),
            ).fetchall()
            for row in due:
                store.delete_prefix(f"{row['workspace_id']}/exports/{row['id']}/")
                conn.execute(
                    "select cajex_private.expire_export(%s, %s)",
                    (row["workspace_id"], row["id"]),
                )
                count += 1
    finally:
        pool.close()
    _sweep_scratch(Path(settings.data_dir) / "exports" / "tmp")
    _logger.info("export.expired", count=count)
    return count


def _sweep_scratch(folder: Path, older_than: float = 86400) -> None:
    """Scratch files a killed worker left behind (never published)."""
    if not folder.is_dir():
        return
    cutoff = time.time() - older_than
    for path in folder.rglob("*.partial"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass
