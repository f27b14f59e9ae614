"""The function RQ runs for every outbox job."""

from __future__ import annotations

import time

from cajex.jobs import registry
from cajex.jobs.relay import requeue_after

from cajex import config, db, log, metrics

_logger = log.get("cajex.jobs")
_state: dict = {}


def _resources():
    if "pool" not in _state:
        settings = config.from_env()
        _state["settings"] = settings
        _state["pool"] = db.make_pool(settings.worker_url, 1, 4, name="worker")
        registry.load_all()
    return _state["pool"], _state["settings"]


def run_outbox_job(outbox_id: int) -> str:
    """Run outbox row `outbox_id` unless it already ran; record the outcome."""
    pool, settings = _resources()
    with pool.connection() as conn:
        row = conn.execute(
            "select o.id, o.workspace_id, o.kind, o.payload, o.attempts"
            " from cajex_private.claim_outbox_row(%s, %s::interval) o",
            (outbox_id, requeue_after()),
        ).fetchone()
        conn.commit()
    if row is None:
        _logger.info("job.skipped", job_id=outbox_id, reason="done or unknown")
        return "skipped"
    fn = registry.get(row["kind"])
    log_fields = dict(
        job_id=outbox_id, kind=row["kind"], workspace_id=str(row["workspace_id"] or "")
    )
    if fn is None:
        with pool.connection() as conn:
            conn.execute(
                "select cajex_private.finish_outbox_job(%s, %s)",
                (outbox_id, "no handler"),
            )
        _logger.error("job.unknown_kind", **log_fields)
        return "unknown"
    started = time.perf_counter()
    _logger.info("job.started", attempt=row["attempts"], **log_fields)
    ctx = registry.JobContext(
        id=row["id"],
        kind=row["kind"],
        workspace_id=str(row["workspace_id"]) if row["workspace_id"] else None,
        payload=row["payload"],
        attempts=row["attempts"],
        pool=pool,
        settings=settings,
    )
    try:
        fn(ctx)
    except Exception as exc:
        with pool.connection() as conn:
            conn.execute(
                "select cajex_private.finish_outbox_job(%s, %s)",
                (outbox_id, type(exc).__name__ + ": " + log.scrub_text(str(exc))),
            )
        metrics.JOBS.labels(row["kind"], "failed").inc()
        metrics.JOB_DURATION.labels(row["kind"]).observe(time.perf_counter() - started)
        _logger.warning(
            "job.failed",
            error_class=type(exc).__name__,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            **log_fields,
        )
        raise
    with pool.connection() as conn:
        conn.execute("select cajex_private.finish_outbox_job(%s, null)", (outbox_id,))
    metrics.JOBS.labels(row["kind"], "done").inc()
    metrics.JOB_DURATION.labels(row["kind"]).observe(time.perf_counter() - started)
    _logger.info(
        "job.finished",
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        **log_fields,
    )
    return "done"
