"""The outbox relay: hands due outbox rows to RQ, at least once.

Woken by NOTIFY cajex_outbox (sent by enqueue_job at commit) and by a sweep
every few seconds, so a job is delivered even when a notification is lost.
When Redis is down, claimed rows are released and wait in the outbox; when a
worker dies mid-job, the row's lease expires and it is handed over again.
"""

from __future__ import annotations

import os
import select
import signal
import time

import psycopg
import redis
from rq import Queue

from cajex import config, log

_logger = log.get("cajex.relay")

QUEUE = "cajex"


def requeue_after() -> str:
    """How long a handed-over job may go unfinished before it is handed over
    again (a worker died). Also the workers' lease on a started job."""
    return f"{int(os.environ.get('CAJEX_JOB_LEASE_SECONDS', '600'))} seconds"


def relay_once(conn: psycopg.Connection, queue: Queue, batch: int = 100) -> int:
    """Hand one batch of due rows to the queue; returns how many were handed."""
    rows = conn.execute(
        "select id, kind, workspace_id from cajex_private.claim_outbox(%s, %s::interval)",
        (batch, requeue_after()),
    ).fetchall()
    conn.commit()
    if not rows:
        return 0
    handed = []
    try:
        for row in rows:
            queue.enqueue(
                "cajex.jobs.runner.run_outbox_job",
                row[0],
                job_id=f"outbox-{row[0]}-{int(time.time() * 1000)}",
                retry=None,
                job_timeout=3600,
                result_ttl=3600,
                failure_ttl=86400,
            )
            handed.append(row[0])
    except redis.RedisError as exc:
        rest = [r[0] for r in rows if r[0] not in handed]
        conn.execute("select cajex_private.release_outbox(%s)", (rest,))
        conn.commit()
        _logger.warning(
            "relay.redis_unavailable",
            released=len(rest),
            error_class=type(exc).__name__,
        )
    return len(handed)


def run(stop_after: float | None = None, sweep_seconds: float = 2.0) -> None:
    """Relay until SIGTERM/SIGINT (or `stop_after` seconds, for tests)."""
    settings = config.from_env()
    log.configure()
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    queue = Queue(
        QUEUE, connection=redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    )
    _logger.info("relay.started")
    while not stopping and (
        stop_after is None or time.monotonic() - started < stop_after
    ):
        try:
            with psycopg.connect(settings.worker_url, autocommit=False) as conn:
                listen = psycopg.connect(settings.worker_url, autocommit=True)
                listen.execute("listen cajex_outbox")
                while not stopping and (
                    stop_after is None or time.monotonic() - started < stop_after
                ):
                    while relay_once(conn, queue):
                        pass
                    ready, _, _ = select.select(
                        [listen.fileno()], [], [], sweep_seconds
                    )
                    if ready:
                        for _ in listen.notifies(timeout=0):
                            pass
                listen.close()
        except psycopg.OperationalError as exc:
            _logger.warning(
                "relay.database_unavailable", error_class=type(exc).__name__
            )
            time.sleep(1)
    _logger.info("relay.stopped")
