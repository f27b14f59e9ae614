"""Writing a workspace's export: members, projects and the audit log as one
JSON document and as CSV files in a zip, each with a manifest.

Rows stream from `COPY (query) TO STDOUT` inside the export job's service
context (RLS scopes every query to the workspace), through a 1 MB buffer,
into files on local scratch space, so memory stays flat whatever the size.
SHA-256 and row counts are taken while writing. Nothing is published until
every file is complete and verified (see cajex.storage).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import zipfile
from pathlib import Path

from psycopg import sql

from cajex import context, log

_logger = log.get("cajex.exports")

#: Bumped when the layout of the files changes (not the database schema,
#: which the manifest names separately).
FORMAT_VERSION = 1
#: How long a finished export is kept, and its links' default life.
KEEP_DAYS = 7
_FLUSH = 1 << 20

#: Entity -> the query that exports it. RLS limits each to the workspace of
#: the context; none filters by workspace itself.
ENTITIES: dict[str, str] = {
    "members": (
        "select m.user_id, u.email, u.display_name, m.role, m.status, m.created_at, m.updated_at"
        " from cajex.memberships m join cajex.users u on u.id = m.user_id"
    ),
    "projects": (
        "select p.id, p.name, p.description, p.tags, p.status, p.created_by, p.created_at,"
        " p.updated_at from cajex.projects p"
    ),
    "audit_log": (
        "select a.id, a.occurred_at, a.actor_user_id, a.actor, a.action, a.target_type,"
        " a.target_id, a.details from cajex.audit_log a"
    ),
}


@contextlib.contextmanager
def snapshot_context(pool, secret: str, workspace_id: str, label: str = "export"):
    """A read-only-in-spirit service context on one REPEATABLE READ snapshot.

    Like cajex.db.as_service, but the transaction sees one snapshot, so the
    JSON document and the CSV files hold exactly the same rows even while the
    workspace keeps working. Yields (conn, workspace id or None).
    """
    token = context.service_token(secret, workspace_id, label, ttl=60)
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            conn.execute("begin isolation level repeatable read")
            try:
                row = conn.execute(
                    "select c.workspace_id from cajex_private.open_context(%s, %s) c",
                    (token, str(workspace_id)),
                ).fetchone()
                opened = row and (
                    row["workspace_id"] if isinstance(row, dict) else row[0]
                )
                yield conn, opened
            except BaseException:
                if not conn.closed:
                    conn.execute("rollback")
                raise
            else:
                conn.execute("commit")
        finally:
            if not conn.closed:
                conn.autocommit = False


class _Sink:
    """Bytes to a file object, hashed and counted on the way."""

    def __init__(self, fh):
        self.fh = fh
        self.digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.fh.write(data)
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        self.fh.flush()


def _copy_csv(conn, query: str, sink: _Sink) -> int:
    """Stream `query` as CSV with a header into `sink`; returns the row count."""
    statement = sql.SQL("copy ({}) to stdout with (format csv, header)").format(
        sql.SQL(query)
    )
    buf = bytearray()
    with conn.cursor() as cur:
        with cur.copy(statement) as copy:
            for data in copy:
                buf += data
                if len(buf) >= _FLUSH:
                    sink.write(buf)
                    buf.clear()
        if buf:
            sink.write(buf)
        return cur.rowcount


def _copy_json_array(conn, query: str, sink: _Sink) -> int:
    """Stream `query` as the elements of a JSON array (without brackets).

    COPY's text format escapes only backslashes and control characters; JSON
    text holds no raw control characters, so undoing the doubled backslash
    restores it exactly, and every newline ends one row.
    """
    statement = sql.SQL("copy (select row_to_json(t) from ({}) t) to stdout").format(
        sql.SQL(query)
    )
    buf = bytearray()
    first = True

    def emit(chunk: bytes) -> None:
        nonlocal first
        # chunk holds whole rows, each ending in a newline.
        body = chunk[:-1].replace(b"\\\\", b"\\").replace(b"\n", b",\n")
        sink.write(body if first else b",\n" + body)
        first = False

    with conn.cursor() as cur:
        with cur.copy(statement) as copy:
            for data in copy:
                buf += data
                if len(buf) >= _FLUSH:
                    cut = buf.rfind(b"\n") + 1
                    if cut:
                        emit(bytes(buf[:cut]))
                        del buf[:cut]
        if buf:
            emit(bytes(buf))
        return cur.rowcount


def _json_default(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def write_csv_zip(
    conn, path: Path, manifest_head: dict, progress=None
) -> tuple[str, dict, list]:
    """The CSV zip at `path`; returns (sha256, row counts, file entries)."""
    counts: dict[str, int] = {}
    files: list[dict] = []
    with open(path, "wb") as raw:
        outer = _Sink(raw)
        # Stored, not deflated: the zip bundles the files, and compressing would
        # cost more CPU than the database spends producing the rows.
        with zipfile.ZipFile(
            outer, "w", compression=zipfile.ZIP_STORED, allowZip64=True
        ) as zf:
            for i, (name, query) in enumerate(ENTITIES.items()):
                with zf.open(f"{name}.csv", "w", force_zip64=True) as entry:
                    sink = _Sink(entry)
                    counts[name] = _copy_csv(conn, query, sink)
                files.append(
                    {
                        "name": f"{name}.csv",
                        "rows": counts[name],
                        "sha256": sink.digest.hexdigest(),
                        "bytes": sink.bytes,
                    }
                )
                if progress:
                    progress(int(45 * (i + 1) / len(ENTITIES)))
            manifest = dict(manifest_head, files=files)
            zf.writestr(
                "manifest.json", json.dumps(manifest, indent=2, default=_json_default)
            )
    return outer.digest.hexdigest(), counts, files


def write_json(
    conn, path: Path, manifest_head: dict, csv_files: list, progress=None
) -> tuple[str, dict]:
    """The JSON document at `path`: one array per entity, the manifest last."""
    counts: dict[str, int] = {}
    sections: list[dict] = []
    with open(path, "wb") as raw:
        sink = _Sink(raw)
        sink.write(b'{"format": "cajex-export",\n')
        for i, (name, query) in enumerate(ENTITIES.items()):
            sink.write(json.dumps(name).encode() + b": [\n")
            section = _Sink(sink)
            counts[name] = _copy_json_array(conn, query, section)
            sink.write(b"\n],\n")
            sections.append(
                {
                    "name": name,
                    "rows": counts[name],
                    "sha256": section.digest.hexdigest(),
                }
            )
            if progress:
                progress(50 + int(45 * (i + 1) / len(ENTITIES)))
        manifest = dict(manifest_head, sections=sections, csv_files=csv_files)
        sink.write(
            b'"manifest": '
            + json.dumps(manifest, indent=2, default=_json_default).encode()
            + b"}\n"
        )
    return sink.digest.hexdigest(), counts


def build(
    conn, store, workspace: dict, export_id: str, schema_version: str, progress=None
) -> tuple[dict, dict]:
    """Write and publish an export; returns (objects, row counts).

    `conn` is in the workspace's service context. Files are written to
    scratch names and only published (atomically, after verification) once
    all of them are complete; a failure before that publishes nothing.
    """
    ws_id = str(workspace["id"])
    prefix = f"{ws_id}/exports/{export_id}"
    head = {
        "format_version": FORMAT_VERSION,
        "workspace": {
            "id": ws_id,
            "slug": workspace["slug"],
            "name": workspace["name"],
        },
        "export_id": str(export_id),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "schema_version": schema_version,
    }
    csv_tmp = store.temp_path(ws_id)
    json_tmp = store.temp_path(ws_id)
    manifest_tmp = store.temp_path(ws_id)
    try:
        csv_sha, counts, csv_files = write_csv_zip(conn, csv_tmp, head, progress)
        json_sha, json_counts = write_json(conn, json_tmp, head, csv_files, progress)
        if json_counts != counts:
            # Both formats read the same committed rows unless a write landed
            # in between; a retry takes a fresh, consistent pair.
            raise RuntimeError("the workspace changed during the export")
        manifest = dict(
            head,
            rows=counts,
            files=[
                {
                    "name": "export.json",
                    "sha256": json_sha,
                    "bytes": json_tmp.stat().st_size,
                    "rows": counts,
                },
                {
                    "name": "export-csv.zip",
                    "sha256": csv_sha,
                    "bytes": csv_tmp.stat().st_size,
                    "files": csv_files,
                },
            ],
        )
        manifest_tmp.write_bytes(
            json.dumps(manifest, indent=2, default=_json_default).encode()
        )
        manifest_sha = hashlib.sha256(manifest_tmp.read_bytes()).hexdigest()
        objects = {
            "json": store.publish(ws_id, json_tmp, f"{prefix}/export.json", json_sha),
            "csv": store.publish(ws_id, csv_tmp, f"{prefix}/export-csv.zip", csv_sha),
            "manifest": store.publish(
                ws_id, manifest_tmp, f"{prefix}/manifest.json", manifest_sha
            ),
        }
    finally:
        for tmp in (csv_tmp, json_tmp, manifest_tmp):
            tmp.unlink(missing_ok=True)
    _logger.info(
        "export.written", workspace_id=ws_id, export_id=str(export_id), rows=counts
    )
    return objects, counts
