"""Shared steps of the export and retention tests: run the outbox's export
job as a worker would, and read the files back."""

from __future__ import annotations

import csv
import io
import json
import zipfile

from cajex.jobs import registry

from cajex import db


def request_export(world, ws) -> str:
    with world.as_user(ws.owner, ws) as (conn, _):
        return str(
            conn.execute("select (cajex.request_export()).id as id").fetchone()["id"]
        )


def outbox_job(world, ws, kind="export.run") -> dict:
    return world.admin.execute(
        "select id, workspace_id, kind, payload, attempts from cajex.outbox"
        " where workspace_id = %s and kind = %s order by id desc limit 1",
        (ws.id, kind),
    ).fetchone()


def run_job(settings, job: dict, attempts: int = 1) -> None:
    """Run an outbox row's handler the way cajex.jobs.runner does."""
    import cajex.jobs.export  # noqa: F401  (registers the handler)

    pool = db.make_pool(settings.database_url, 1, 3, name="test-jobs")
    try:
        ctx = registry.JobContext(
            id=job["id"],
            kind=job["kind"],
            workspace_id=str(job["workspace_id"]),
            payload=job["payload"],
            attempts=attempts,
            pool=pool,
            settings=settings,
        )
        registry.get(job["kind"])(ctx)
    finally:
        pool.close()


def export_row(world, ws, export_id) -> dict:
    return world.admin.execute(
        "select * from cajex.exports where workspace_id = %s and id = %s",
        (ws.id, export_id),
    ).fetchone()


def read_csv_zip(data: bytes) -> tuple[dict, dict]:
    """(entity -> list of row dicts, manifest) from the CSV zip."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        for entry in manifest["files"]:
            raw = zf.read(entry["name"])
            out[entry["name"]] = (raw, list(csv.DictReader(io.StringIO(raw.decode()))))
    return out, manifest
