"""Migrations a DBA can run: idempotent, refusing edited history, one at a time."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid

import psycopg
import pytest

from cajex import DB_DIR, ROOT
from cajex.migrate import MigrationError, migrate, render_plan
from cajex.testing import services


def schema_dump(url: str) -> str:
    """The schema as pg_dump prints it (deterministic for an unchanged schema)."""
    proc = subprocess.run(
        ["pg_dump", "--schema-only", "--no-comments", url],
        capture_output=True,
        text=True,
        check=True,
    )
    # pg_dump's \\restrict lines carry a random key per run.
    return "\n".join(
        line
        for line in proc.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def ledger(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select file, kind, checksum, applied_at from cajex_migrations.applied order by file"
        ).fetchall()


@pytest.fixture
def fresh_db(db_urls):
    """A new, empty database on the test cluster; dropped afterwards."""
    name = f"cajex_fresh_{uuid.uuid4().hex[:10]}"
    base = db_urls["admin"].rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def test_can_migrate_twice_without_changing_anything(db_urls):
    """A second run over a migrated database leaves the schema and the ledger unchanged."""
    url = db_urls["admin"]
    before, applied = schema_dump(url), ledger(url)
    migrate(url, services.context_secret())
    assert ledger(url) == applied
    assert schema_dump(url) == before


def test_cannot_migrate_with_an_edited_applied_file(db_urls, tmp_path):
    """An applied versioned file that was edited is refused with a clear message and nothing changes."""
    url = db_urls["admin"]
    copy = tmp_path / "db"
    shutil.copytree(DB_DIR, copy)
    core = copy / "schema" / "0001_core.sql"
    core.write_text(core.read_text() + "\ncreate table cajex.sneaked_in (id integer);\n")
    before, applied = schema_dump(url), ledger(url)
    with pytest.raises(MigrationError) as refused:
        migrate(url, services.context_secret(), db_dir=copy)
    message = str(refused.value)
    assert "schema/0001_core.sql" in message and "edited" in message
    assert ledger(url) == applied
    assert schema_dump(url) == before


def test_can_apply_a_new_versioned_file_once(db_urls, tmp_path):
    """A new versioned file applies once and is recorded; the next run skips it."""
    url = db_urls["admin"]
    copy = tmp_path / "db"
    shutil.copytree(DB_DIR, copy)
    (copy / "schema" / "9999_extra.sql").write_text(
        "create table cajex.extra_things (id integer primary key);\n"
        "alter table cajex.extra_things enable row level security;\n"
        "alter table cajex.extra_things force row level security;\n"
    )
    (copy / "plan.sql").write_text(render_plan(copy))
    migrate(url, services.context_secret(), db_dir=copy)
    files = [row[0] for row in ledger(url)]
    assert files.count("schema/9999_extra.sql") == 1
    applied = ledger(url)
    migrate(url, services.context_secret(), db_dir=copy)
    assert ledger(url) == applied


def test_can_reapply_a_changed_functions_file_and_keep_its_grants(db_urls, tmp_path):
    """A changed functions file that drops and creates a view re-applies the
    policies too, so the grants on that view (made by a policies file) stay."""
    url = db_urls["admin"]
    copy = tmp_path / "db"
    shutil.copytree(DB_DIR, copy)
    context_file = copy / "functions" / "000_context.sql"
    context_file.write_text(context_file.read_text() + "\n-- changed\n")
    grant = (
        "select has_table_privilege('cajex_app', 'cajex_private.browser_opening', 'select')"
    )
    try:
        migrate(url, services.context_secret(), db_dir=copy)
        with psycopg.connect(url) as conn:
            assert conn.execute(grant).fetchone()[0] is True
    finally:
        migrate(url, services.context_secret())
    with psycopg.connect(url) as conn:
        assert conn.execute(grant).fetchone()[0] is True


def test_can_keep_the_plan_current():
    """db/plan.sql is exactly what `cajex db plan` generates from the folders."""
    assert (DB_DIR / "plan.sql").read_text() == render_plan()


def test_can_migrate_a_fresh_database_with_the_documented_psql_command(fresh_db):
    """The README's DBA command, run from the repository root, builds a clean schema."""
    proc = subprocess.run(
        ["psql", fresh_db, "-X", "-v", "ON_ERROR_STOP=1", "-f", "db/migrate.sql"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    files = {row[0] for row in ledger(fresh_db)}
    expected = {f"schema/{p.name}" for p in (DB_DIR / "schema").glob("*.sql")}
    expected |= {
        f"{d}/{p.name}" for d in ("functions", "policies") for p in (DB_DIR / d).glob("*.sql")
    }
    assert files == expected
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("select count(*) from cajex.plans").fetchone()[0] > 0


def test_cannot_run_two_migrations_at_once(fresh_db):
    """A second migration waits on the advisory lock while another holds it, then applies cleanly."""
    holder = psycopg.connect(fresh_db)
    holder.execute("select pg_advisory_xact_lock(hashtext('cajex.migrate'))")
    outcome: dict = {}

    def run():
        try:
            migrate(fresh_db, services.context_secret())
            outcome["ok"] = True
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        waiting = False
        with psycopg.connect(fresh_db, autocommit=True) as watch:
            for _ in range(200):
                waiting = watch.execute(
                    "select exists (select from pg_locks where locktype = 'advisory' and not granted)"
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting, "the second migration did not wait for the lock"
        assert "ok" not in outcome and "error" not in outcome
    finally:
        holder.rollback()
        holder.close()
        worker.join(120)
    assert outcome == {"ok": True}
    # Both the held run (nothing) and the waiting one: every file recorded once.
    files = [row[0] for row in ledger(fresh_db)]
    assert len(files) == len(set(files))
    second = threading.Thread(target=run)
    applied = ledger(fresh_db)
    second.start()
    second.join(120)
    assert ledger(fresh_db) == applied
