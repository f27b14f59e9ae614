"""The whole test suite, as `./dev test` and CI run it.

Starts one PostgreSQL cluster and one Redis for the run, applies the schema
to a database for pgTAP and runs tests/sql/ with pg_prove (psql alone exits
0 when a pgTAP test fails), then runs pytest against the same cluster.
Extra arguments go to pytest. Exits non-zero when either fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from cajex import ROOT
from cajex.localservices import LocalPostgres, LocalRedis
from cajex.migrate import migrate
from cajex.testing import services


def _say(message: str) -> None:
    print(f"cajex test: {message}", flush=True)


def run_pgtap(pg: LocalPostgres) -> int:
    files = sorted(str(p) for p in (ROOT / "tests" / "sql").glob("*.sql"))
    if not files:
        _say("no pgTAP tests")
        return 0
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute("drop database if exists cajex_pgtap")
        conn.execute("create database cajex_pgtap")
    migrate(pg.url("cajex_pgtap"), services.context_secret())
    with psycopg.connect(pg.url("cajex_pgtap"), autocommit=True) as conn:
        conn.execute("create extension if not exists pgtap")
    prove = shutil.which("pg_prove")
    if prove is None:
        _say(
            "pg_prove is missing: apt-get install libtap-parser-sourcehandler-pgtap-perl"
        )
        return 1
    _say(f"pgTAP: {len(files)} files")
    proc = subprocess.run(
        [
            prove,
            "--host",
            "127.0.0.1",
            "--port",
            str(pg.port),
            "--username",
            "postgres",
            "--dbname",
            "cajex_pgtap",
            "--ext",
            ".sql",
            "--failures",
            "--timer",
            *files,
        ],
        check=False,
    )
    return proc.returncode


def main(argv: list[str]) -> int:
    root = Path(tempfile.mkdtemp(prefix="cajex-test-"))
    _say("starting PostgreSQL and Redis")
    pg = LocalPostgres(root / "pg", fast=True, settings=services.PG_SETTINGS).start()
    rd = LocalRedis(root / "redis", persist=False).start()
    os.environ["CAJEX_TEST_PG_PORT"] = str(pg.port)
    os.environ["CAJEX_TEST_PG_DIR"] = str(root / "pg")
    os.environ["CAJEX_TEST_REDIS_URL"] = rd.url
    services.context_secret()
    # Every log line of the run goes to one file, which the last test greps
    # for addresses, tokens and secrets (tests/py/test_logs.py).
    os.environ["CAJEX_LOG_FILE"] = str(root / "all-logs.jsonl")
    try:
        pgtap = run_pgtap(pg)
        _say(f"pgTAP {'passed' if pgtap == 0 else 'FAILED'}; running pytest")
        # A temporary folder of this run's own: pytest's shared one
        # (/tmp/pytest-of-<user>) keeps only the last three sessions, so a
        # second test run on the same machine would delete this run's
        # folders, clusters and all, from under it.
        basetemp = (
            []
            if any(a.startswith("--basetemp") for a in argv)
            else [f"--basetemp={root / 'pytest'}"]
        )
        args = [sys.executable, "-m", "pytest", *basetemp, *argv]
        pytest = subprocess.run(args, cwd=ROOT, check=False).returncode
    finally:
        rd.stop()
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
    # pytest exits 5 when it collected nothing: that is a failure here too.
    return 0 if pgtap == 0 and pytest == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
