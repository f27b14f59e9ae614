"""The servers a test run uses.

`./dev test` (cajex.testing.run_all) starts one PostgreSQL and one Redis for
pgTAP and pytest together and passes them on in CAJEX_TEST_PG_PORT and
CAJEX_TEST_REDIS_URL; a bare `pytest` starts its own.
"""

from __future__ import annotations

import atexit
import os
import secrets
import tempfile
from pathlib import Path

from cajex.localservices import LocalPostgres, LocalRedis

_started: dict = {}


def context_secret() -> str:
    """The context secret of this test run (shared by pgTAP and pytest)."""
    if "CAJEX_TEST_CONTEXT_SECRET" not in os.environ:
        os.environ["CAJEX_TEST_CONTEXT_SECRET"] = secrets.token_hex(32)
    return os.environ["CAJEX_TEST_CONTEXT_SECRET"]


#: The test cluster's own settings: pg_stat_statements counts how often each
#: statement is planned (tests/py/test_planning.py).
PG_SETTINGS = (
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
    "pg_stat_statements.track_planning=on",
)


def postgres() -> tuple[str, int]:
    """(host, port) of the test cluster; starts one if none was handed down."""
    if os.environ.get("CAJEX_TEST_PG_PORT"):
        return "127.0.0.1", int(os.environ["CAJEX_TEST_PG_PORT"])
    if "pg" not in _started:
        root = Path(tempfile.mkdtemp(prefix="cajex-test-pg-"))
        pg = LocalPostgres(root, fast=True, settings=PG_SETTINGS).start()
        _started["pg"] = pg
        atexit.register(pg.stop, "immediate")
        os.environ["CAJEX_TEST_PG_PORT"] = str(pg.port)
        os.environ["CAJEX_TEST_PG_DIR"] = str(root)
    return "127.0.0.1", _started["pg"].port


def redis_url() -> str:
    if os.environ.get("CAJEX_TEST_REDIS_URL"):
        return os.environ["CAJEX_TEST_REDIS_URL"]
    if "redis" not in _started:
        root = Path(tempfile.mkdtemp(prefix="cajex-test-redis-"))
        rd = LocalRedis(root, persist=False).start()
        _started["redis"] = rd
        atexit.register(rd.stop)
        os.environ["CAJEX_TEST_REDIS_URL"] = rd.url
    return _started["redis"].url


def load_schema(
    host: str, port: int, user: str, dbname: str, password: str | None = None, **_
) -> None:
    """pytest-postgresql loader: migrate the template database."""
    from cajex.migrate import migrate

    migrate(f"postgresql://{user}@{host}:{port}/{dbname}", context_secret())
