"""Writing a workspace's export: members, projects and the audit log as one
JSON document and as CSV files in a zip, each with a manifest.

Rows stream inside the export job's service context (RLS scopes every query
to the workspace): the CSV from `COPY (query) TO STDOUT` through a 1 MB
buffer, the JSON as values the database builds for ranges of pages, into
files on local scratch space, so memory stays flat whatever the size.
SHA-256 and row counts are taken while writing. Nothing is published until
every file is complete and verified (see cajex.storage).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import queue
import threading
import zipfile
from collections.abc import Iterator
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
#: Connections that read a big table together: the database formats rows on
#: that many cores (JSON formatting costs it about three times a raw COPY).
PARALLEL = 2

#: Entity -> (the query that exports it, the alias of its one big table,
#: whose rows may be split by block ranges between parallel connections).
#: RLS limits each to the workspace of the context; none filters by
#: workspace itself.
ENTITIES: dict[str, tuple[str, str | None]] = {
    "members": (
        "select m.user_id, u.email, u.display_name, m.role, m.status, m.created_at,"
        " m.updated_at from cajex.memberships m join cajex.users u on u.id = m.user_id",
        None,
    ),
    "projects": (
        "select p.id, p.name, p.description, p.tags, p.status, p.created_by, p.created_at,"
        " p.updated_at from cajex.projects p",
        "p",
    ),
    "audit_log": (
        "select a.id, a.occurred_at, a.actor_user_id, a.actor, a.action, a.target_type,"
        " a.target_id, a.details from cajex.audit_log a",
        "a",
    ),
}
_TABLES = {"p": "cajex.projects", "a": "cajex.audit_log"}
#: Below this many blocks a table is read on one connection.
_SPLIT_MIN_BLOCKS = 2048


def _open(conn, token: str, workspace_id: str, snapshot: str | None = None):
    conn.autocommit = True
    conn.execute("begin isolation level repeatable read")
    if snapshot:
        conn.execute(
            sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot))
        )
    row = conn.execute(
        "select c.workspace_id from cajex_private.open_context(%s, %s) c",
        (token, str(workspace_id)),
    ).fetchone()
    return row["workspace_id"] if isinstance(row, dict) else row[0]


def _close(conn, ok: bool) -> None:
    if conn.closed:
        return
    try:
        conn.execute("commit" if ok else "rollback")
    finally:
        conn.autocommit = False


@contextlib.contextmanager
def snapshot_context(
    pool, secret: str, workspace_id: str, label: str = "export", parallel: int = 1
):
    """The workspace's service context on one REPEATABLE READ snapshot.

    Like cajex.db.as_service, but the transaction sees one snapshot, so the
    JSON document and the CSV files hold exactly the same rows even while the
    workspace keeps working. With `parallel` > 1, that many more connections
    import the same snapshot and open the same context, so the database can
    format a big table's rows on several cores. Yields (conn, workspace id or
    None, helper connections).
    """
    token = context.service_token(secret, workspace_id, label, ttl=60)
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(pool.connection())
        ok = False
        helpers = []
        try:
            opened = _open(conn, token, workspace_id)
            if opened is not None and parallel > 1:
                snapshot = conn.execute("select pg_export_snapshot() as s").fetchone()
                snapshot = snapshot["s"] if isinstance(snapshot, dict) else snapshot[0]
                for _ in range(parallel - 1):
                    helper = stack.enter_context(pool.connection())
                    helpers.append(helper)
                    if _open(helper, token, workspace_id, snapshot) != opened:
                        raise RuntimeError("a helper connection opened another context")
            yield conn, opened, helpers
            ok = True
        finally:
            for helper in helpers:
                _close(helper, ok)
            _close(conn, ok)


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


def _blocks(conn, alias: str) -> int:
    """How many pages the big table behind `alias` has."""
    row = conn.execute(
        "select (pg_relation_size(%s::regclass) / current_setting('block_size')::int)::bigint",
        (_TABLES[alias],),
    ).fetchone()
    return row[0] if not isinstance(row, dict) else next(iter(row.values()))


def _parts(conn, entity: str, parts: int) -> list[str]:
    """The entity's query, split into block ranges of its big table when worth it."""
    query, alias = ENTITIES[entity]
    if alias is None or parts <= 1:
        return [query]
    blocks = _blocks(conn, alias)
    if blocks < _SPLIT_MIN_BLOCKS:
        return [query]
    step = blocks // parts + 1
    out = []
    for i in range(parts):
        lo = f"{alias}.ctid >= '({i * step},0)'::tid"
        # The last range is open: rows a newer version moved past the end
        # are still read (the snapshot decides what is visible).
        hi = f" and {alias}.ctid < '({(i + 1) * step},0)'::tid" if i < parts - 1 else ""
        out.append(f"{query} where {lo}{hi}")
    return out


def _stream(conns: list, statements: list) -> tuple[Iterator[bytes], list[int]]:
    """Run COPY statements (one per connection) and yield chunks of whole rows.

    One statement runs in this thread; several run in threads (the database
    formats rows on several cores) and hand over 1 MB chunks through a small
    queue, so memory stays bounded. Each chunk ends at a row boundary (the
    server sends one message per row). Row counts land in the list returned.
    """
    counts = [0] * len(statements)

    def produce(i, conn, statement, put):
        buf = bytearray()
        with conn.cursor() as cur:
            with cur.copy(statement) as copy:
                for data in copy:
                    buf += data
                    if len(buf) >= _FLUSH:
                        put(bytes(buf))
                        buf.clear()
            if buf:
                put(bytes(buf))
            counts[i] = cur.rowcount

    if len(statements) == 1:

        def single():
            buf = bytearray()
            with conns[0].cursor() as cur:
                with cur.copy(statements[0]) as copy:
                    for data in copy:
                        buf += data
                        if len(buf) >= _FLUSH:
                            yield bytes(buf)
                            buf.clear()
                if buf:
                    yield bytes(buf)
                counts[0] = cur.rowcount

        return single(), counts

    def parallel():
        yield from _in_threads(
            [
                lambda put, i=i, c=c, s=s: produce(i, c, s, put)
                for i, (c, s) in enumerate(zip(conns, statements, strict=False))
            ],
            4 * len(statements),
        )

    return parallel(), counts


def _columns(conn, query: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("select * from ({}) q limit 0").format(sql.SQL(query)))
        return [d.name for d in cur.description]


def _copy_csv(conns: list, entity: str, sink: _Sink) -> int:
    """Stream the entity as CSV with a header into `sink`; returns the row count."""
    query = ENTITIES[entity][0]
    # The header is written here: with several streams, none of them is first.
    sink.write((",".join(_columns(conns[0], query)) + "\n").encode())
    statements = [
        sql.SQL("copy ({}) to stdout with (format csv)").format(sql.SQL(part))
        for part in _parts(conns[0], entity, len(conns))
    ]
    chunks, counts = _stream(conns, statements)
    for chunk in chunks:
        sink.write(chunk)
    return sum(counts)


def _copy_json_array(conns: list, entity: str, sink: _Sink) -> int:
    """Stream the entity as the elements of a JSON array (without brackets).

    The database writes the JSON: each statement turns a range of the big
    table's pages into one value, the rows' JSON joined by ",\n", fetched as
    bytes. The connections take the ranges in turn and hand the values over
    through a small queue, so memory stays bounded; the client handles a few
    hundred values where COPY would hand it each row.
    """
    first, rows = True, 0
    for body, count in _aggregate(conns, _chunk_queries(conns[0], entity)):
        rows += count
        if not body:
            continue
        if not first:
            sink.write(b",\n")
        sink.write(body)
        first = False
    return rows


#: Pages of the big table one JSON value covers: about 2.5 MB of JSON.
_JSON_CHUNK_BLOCKS = 256


def _chunk_queries(conn, entity: str) -> list[str]:
    """The entity's query, once per range of its big table's pages (the last
    range open, so that rows a newer version moved past the end are read:
    the snapshot decides what is visible)."""
    query, alias = ENTITIES[entity]
    if alias is None:
        return [query]
    blocks = _blocks(conn, alias)
    out = []
    for lo in range(0, blocks, _JSON_CHUNK_BLOCKS):
        hi = lo + _JSON_CHUNK_BLOCKS
        upper = f" and {alias}.ctid < '({hi},0)'::tid" if hi < blocks else ""
        out.append(f"{query} where {alias}.ctid >= '({lo},0)'::tid{upper}")
    return out or [query]


def _aggregate(conns: list, queries: list[str]) -> Iterator[tuple[bytes, int]]:
    """(the rows' JSON joined by ",\n", their count) for each query; the
    connections run the queries in turn, in threads."""
    statements = [
        sql.SQL(
            "select convert_to(string_agg(row_to_json(t)::text, E',\n'), 'UTF8') as json,"
            " count(*) as n from ({}) t"
        ).format(sql.SQL(q))
        for q in queries
    ]

    def one(conn, statement) -> tuple[bytes, int]:
        row = conn.execute(statement, binary=True).fetchone()
        if isinstance(row, dict):
            return bytes(row["json"] or b""), row["n"]
        return bytes(row[0] or b""), row[1]

    if len(conns) == 1 or len(statements) == 1:
        for statement in statements:
            yield one(conns[0], statement)
        return

    def job(conn, mine):
        def run(put):
            for statement in mine:
                put(one(conn, statement))

        return run

    yield from _in_threads(
        [job(c, statements[i :: len(conns)]) for i, c in enumerate(conns)], len(conns)
    )


def _in_threads(jobs: list, queue_size: int) -> Iterator:
    """Run each job in a thread of its own, and yield what they hand over, as
    it comes. A job is called with the function it hands items to; the queue
    between them holds at most `queue_size`, so memory stays bounded. A job's
    error is raised once every job has ended."""
    q: queue.Queue = queue.Queue(maxsize=queue_size)
    done = object()
    errors: list[BaseException] = []

    def run(job):
        try:
            job(q.put)
        except BaseException as exc:  # handed to the consumer
            errors.append(exc)
        finally:
            q.put(done)

    threads = [threading.Thread(target=run, args=(j,), daemon=True) for j in jobs]
    for t in threads:
        t.start()
    remaining = len(threads)
    while remaining:
        item = q.get()
        if item is done:
            remaining -= 1
            continue
        yield item
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _json_default(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def write_csv_zip(
    conns: list, path: Path, manifest_head: dict, progress=None
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
            for i, name in enumerate(ENTITIES):
                with zf.open(f"{name}.csv", "w", force_zip64=True) as entry:
                    sink = _Sink(entry)
                    counts[name] = _copy_csv(conns, name, sink)
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
    conns: list, path: Path, manifest_head: dict, csv_files: list, progress=None
) -> tuple[str, dict]:
    """The JSON document at `path`: one array per entity, the manifest last."""
    counts: dict[str, int] = {}
    sections: list[dict] = []
    with open(path, "wb") as raw:
        sink = _Sink(raw)
        sink.write(b'{"format": "cajex-export",\n')
        for i, name in enumerate(ENTITIES):
            sink.write(json.dumps(name).encode() + b": [\n")
            section = _Sink(sink)
            counts[name] = _copy_json_array(conns, name, section)
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


def object_prefix(workspace_id, export_id, attempt: int) -> str:
    """Where one attempt of an export publishes its objects (ends in '/').

    Each attempt has its own prefix: two deliveries of one job running at
    once never write the same object, so the files of the attempt that
    finishes are the ones its checksums were taken from.
    """
    return f"{workspace_id}/exports/{export_id}/{int(attempt)}/"


def build(
    conns,
    store,
    workspace: dict,
    export_id: str,
    schema_version: str,
    progress=None,
    *,
    attempt: int = 1,
) -> tuple[dict, dict]:
    """Write and publish an export attempt; returns (objects, row counts).

    `conns` is a connection in the workspace's service context, or a list of
    them on one snapshot (see snapshot_context) to split big tables between.
    Files are written to scratch names and only published (atomically, after
    verification) once all of them are complete, under the attempt's own
    prefix (see object_prefix); a failure before that publishes nothing.
    The export job passes the attempt start_export handed out (the default
    serves callers outside the job, such as bench/export.py).
    """
    ws_id = str(workspace["id"])
    prefix = object_prefix(ws_id, export_id, attempt).rstrip("/")
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
    if not isinstance(conns, list | tuple):
        conns = [conns]
    conns = list(conns)
    csv_tmp = store.temp_path(ws_id)
    json_tmp = store.temp_path(ws_id)
    manifest_tmp = store.temp_path(ws_id)
    try:
        csv_sha, counts, csv_files = write_csv_zip(conns, csv_tmp, head, progress)
        json_sha, json_counts = write_json(conns, json_tmp, head, csv_files, progress)
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
