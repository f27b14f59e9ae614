"""Prometheus metrics (prometheus-client), served at /metrics.

Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR to an empty
folder so that every worker's samples are collected together.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "cajex_http_requests_total", "HTTP requests", ["route", "method", "status"]
)
LATENCY = Histogram(
    "cajex_http_request_duration_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
JOBS = Counter("cajex_jobs_total", "Outbox jobs run", ["kind", "outcome"])
JOB_DURATION = Histogram("cajex_job_duration_seconds", "Outbox job duration", ["kind"])
QUOTA_PAUSES = Counter(
    "cajex_ai_quota_pauses_total",
    "AI requests refused because a workspace's budget is spent",
)
OUTBOX_PENDING = Gauge(
    "cajex_outbox_pending", "Outbox jobs due and not done", multiprocess_mode="max"
)
OUTBOX_LAG = Gauge(
    "cajex_outbox_lag_seconds",
    "Age of the oldest due outbox job",
    multiprocess_mode="max",
)
POOL_SIZE = Gauge(
    "cajex_db_pool_connections",
    "Connections in the pool",
    ["state"],
    multiprocess_mode="livesum",
)


def render(pool=None) -> tuple[bytes, str]:
    """The exposition text, refreshing the gauges that are read at scrape time."""
    if pool is not None:
        stats = pool.get_stats()
        POOL_SIZE.labels("open").set(stats.get("pool_size", 0))
        POOL_SIZE.labels("idle").set(stats.get("pool_available", 0))
        POOL_SIZE.labels("waiting").set(stats.get("requests_waiting", 0))
        try:
            with pool.connection(timeout=2) as conn:
                row = conn.execute(
                    "select pending, oldest_seconds from cajex_private.outbox_lag()"
                ).fetchone()
            OUTBOX_PENDING.set(row["pending"])
            OUTBOX_LAG.set(row["oldest_seconds"])
        except Exception:  # noqa: BLE001, S110 - a scrape never fails for the database
            pass
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
