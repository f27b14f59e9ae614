"""Connections, and the one way a request or a job touches workspace data.

`in_context()` opens a transaction whose first statement installs the
verified context. Nothing else in the code base filters by workspace: RLS
does, inside PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from collections.abc import Callable, Iterator

import psycopg
from psycopg import generators, sql
from psycopg.adapt import Transformer
from psycopg.pq import ExecStatus
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cajex import context


@dataclasses.dataclass(frozen=True)
class OpenedContext:
    """What `open_context` returned: empty fields when nothing was opened."""

    workspace_id: uuid.UUID | None
    workspace_slug: str | None
    role: str | None
    user_id: uuid.UUID | None
    #: What the role may do here, from the permission matrix (cajex.role_permissions).
    permissions: frozenset = frozenset()

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def opened(self) -> bool:
        return self.user_id is not None or self.workspace_id is not None


NO_CONTEXT = OpenedContext(None, None, None, None)

_PERMISSIONS = (
    "array(select rp.permission from cajex.role_permissions rp where rp.role = c.member_role)"
    " as permissions"
)


def make_pool(
    url: str, min_size: int = 2, max_size: int = 10, name: str = "cajex"
) -> ConnectionPool:
    """A pool of cajex_app connections.

    Connections come back to the pool outside any transaction (the pool rolls
    back an open one), and the context row of a finished transaction never
    matches the next (it is keyed by the transaction's start time), so no
    context outlives its transaction. After a database restart, a request
    that meets a dead connection fails with 503 and the pool replaces the
    connection; a background check every `max_idle` keeps idle ones fresh.
    """
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=True,
        kwargs={"row_factory": dict_row, "autocommit": False},
        timeout=10,
        reconnect_timeout=60,
    )


_CHECK = "cajex_context_check"
_CHECK_SQL = (
    f"prepare {_CHECK} as select c.workspace_id, c.workspace_slug, c.member_role as role, c.user_id, "
    + _PERMISSIONS
    + " from cajex_private.context c"
)


def _prepare(conn: psycopg.Connection) -> None:
    """Prepare the context check once per connection (it is planned once)."""
    if getattr(conn, "_cajex_check_prepared", False):
        return
    with conn.transaction():
        if not conn.execute(
            "select 1 from pg_prepared_statements where name = %s", (_CHECK,)
        ).fetchone():
            conn.execute(_CHECK_SQL)
    conn._cajex_check_prepared = True


@contextlib.contextmanager
def in_context(
    conn: psycopg.Connection,
    token: str,
    workspace: str | None = None,
) -> Iterator[OpenedContext]:
    """Run a transaction in the verified context named by `token`.

    Yields what was opened; when nothing was (bad token, dead session, not a
    member, workspace deleted) the transaction still runs, and RLS shows it
    nothing. Commits on success, rolls back on error; a body that caught a
    database error and returned gets InFailedSqlTransaction, not a silent
    rollback.

    A browser's session credential (context.session_credential) travels in
    transaction-local settings and is verified by the policies themselves
    (cajex_private.context), once per statement. A signed token
    (context.user_token, context.service_token) is verified once by
    cajex_private.open_context, which records the context for the
    transaction. Either way BEGIN, the context and its check go in one round
    trip, so a transaction costs no more round trips than one without.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("in_context() must start its own transaction")
    try:
        row = _open(conn, token, workspace)
        yield OpenedContext(*row[:4], frozenset(row[4] or ())) if row else NO_CONTEXT
    except BaseException:
        _rollback(conn)
        raise
    status = conn.info.transaction_status
    if status == psycopg.pq.TransactionStatus.INERROR:
        # The body caught a database error and went on: PostgreSQL would
        # answer COMMIT with a silent ROLLBACK, and the caller would take
        # its writes for done.
        _rollback(conn)
        raise psycopg.errors.InFailedSqlTransaction(
            "a statement in this transaction failed, so nothing was committed"
        )
    # The body may have committed itself (a statement pipelined with its
    # COMMIT, cajex.ai.gateway), so no lock waits a round trip.
    if status != psycopg.pq.TransactionStatus.IDLE:
        _run(conn, b"COMMIT")


# What a browser's credential and a workspace slug look like. Both travel
# inside the opening statement as literals; anything else is quoted by
# psycopg instead (and opens nothing).
_CREDENTIAL = re.compile(
    rb"v2\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[A-Za-z0-9_-]{1,256}"
)
_SLUG = re.compile(rb"[a-z0-9-]{0,64}")


def _opening(
    conn: psycopg.Connection,
    token: str,
    workspace: str | None,
    expect: uuid.UUID | None = None,
) -> bytes:
    """BEGIN, the context and its check, as one simple-query message.

    With `expect`, the check is cajex_private.expect_context, which fails
    the transaction unless that workspace opened.
    """
    guard = (
        sql.SQL("; select * from cajex_private.expect_context({})")
        .format(sql.Literal(uuid.UUID(str(expect))))
        .as_bytes(conn)
        if expect is not None
        else None
    )
    if not token.startswith("v2."):
        opening = (
            sql.SQL(
                "begin; select c.workspace_id, c.workspace_slug, c.member_role as role, c.user_id, "
                + _PERMISSIONS
                + " from cajex_private.open_context({}, {}) c"
            )
            .format(sql.Literal(token), sql.Literal(workspace))
            .as_bytes(conn)
        )
        return opening + guard if guard else opening
    if guard is None:
        _prepare(conn)
    credential, slug = token.encode(), (workspace or "").encode()
    if _CREDENTIAL.fullmatch(credential) and _SLUG.fullmatch(slug):
        settings = b"".join(
            (
                b"begin; select set_config('cajex.context', '",
                credential,
                b"', true), set_config('cajex.workspace', '",
                slug,
                b"', true)",
            )
        )
    else:
        settings = (
            sql.SQL(
                "begin; select set_config('cajex.context', {}, true),"
                " set_config('cajex.workspace', {}, true)"
            )
            .format(sql.Literal(token), sql.Literal(workspace or ""))
            .as_bytes(conn)
        )
    return settings + (guard or b"; execute " + _CHECK.encode())


def _open(conn: psycopg.Connection, token: str, workspace: str | None) -> tuple | None:
    """Send the opening; the check's row (typed), or None when nothing opened.

    Sent with libpq directly rather than through a cursor: psycopg would
    otherwise send a BEGIN of its own, and this is the one statement every
    request makes.
    """
    opening = _opening(conn, token, workspace)
    try:
        result = _run(conn, opening)
    except psycopg.errors.InvalidSqlStatementName:
        # psycopg deallocates every prepared statement after a rollback it
        # runs itself; prepare the check again and retry once.
        _rollback(conn)
        conn._cajex_check_prepared = False
        _prepare(conn)
        result = _run(conn, opening)
    if not result.ntuples:
        return None
    loader = Transformer.from_context(conn)
    loader.set_pgresult(result)
    return loader.load_row(0, tuple)


def commit_with(
    conn: psycopg.Connection,
    token: str,
    workspace: str | None,
    query: str,
    params: tuple = (),
    *,
    expect: uuid.UUID | None = None,
) -> tuple[OpenedContext, list[dict]]:
    """A whole transaction in one round trip: BEGIN, the context and its
    check, `query` and COMMIT, sent as one simple-query message.

    For short writes on a contended row (the AI budget's counter): the row
    lock is held only while the server works, and the transaction costs one
    round trip instead of two. `params` are bound client-side by psycopg.
    With `expect` (a workspace id), nothing runs unless the context opened
    that workspace (cajex_private.expect_context raises CXNCX). Returns what
    was opened and the query's rows; an error rolls back and is raised.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("commit_with() must start its own transaction")
    statement = psycopg.ClientCursor(conn).mogrify(query, params)
    message = b"; ".join(
        (
            _opening(conn, token, workspace, expect),
            statement.encode(conn.info.encoding),
            b"commit",
        )
    )
    try:
        check, result = _exchange(conn, message)[-3:-1]
    except psycopg.errors.InvalidSqlStatementName:
        conn._cajex_check_prepared = False
        _prepare(conn)
        check, result = _exchange(conn, message)[-3:-1]
    loader = Transformer.from_context(conn)
    loader.set_pgresult(check)
    row = loader.load_row(0, tuple) if check.ntuples else None
    opened = OpenedContext(*row[:4], frozenset(row[4] or ())) if row else NO_CONTEXT
    loader.set_pgresult(result)
    names = [result.fname(i).decode() for i in range(result.nfields)]
    rows = [
        dict(zip(names, loader.load_row(i, tuple), strict=True))
        for i in range(result.ntuples)
    ]
    return opened, rows


def _exchange(conn: psycopg.Connection, message: bytes) -> list:
    """Send a simple-query message of several statements; every result, or
    the error one of them raised (the transaction rolled back)."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    try:
        pgconn.send_query(message)
        results = conn.wait(generators.execute(pgconn))
    except psycopg.OperationalError:
        raise
    except BaseException:
        # Interrupted while waiting: the connection's state is unknown.
        conn.close()
        raise
    failed = results[-1] if results else None
    if failed is not None and failed.status in (
        ExecStatus.TUPLES_OK,
        ExecStatus.COMMAND_OK,
    ):
        return results
    if pgconn.status != psycopg.pq.ConnStatus.OK or failed is None:
        message_text = (
            (failed.error_message if failed is not None else b"")
            or pgconn.error_message
        ).decode(errors="replace")
        raise psycopg.OperationalError(
            message_text.strip() or "the connection was lost"
        )
    _rollback(conn)
    raise psycopg.errors.error_from_result(failed, encoding=pgconn._encoding)


def _run(conn: psycopg.Connection, command: bytes):
    """One simple-query message; its last result, or the error it raised."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    result = pgconn.exec_(command)
    if result.status in (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK):
        return result
    if pgconn.status != psycopg.pq.ConnStatus.OK:
        # The server went away: what psycopg raises for a lost connection.
        message = (result.error_message or pgconn.error_message).decode(
            errors="replace"
        )
        raise psycopg.OperationalError(message.strip() or "the connection was lost")
    _rollback(conn)
    raise psycopg.errors.error_from_result(result, encoding=pgconn._encoding)


def _rollback(conn: psycopg.Connection) -> None:
    """ROLLBACK without psycopg's reaction to it (deallocating all prepared
    statements, ours included): nothing here changed the schema."""
    if (
        not conn.closed
        and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    ):
        conn.pgconn.exec_(b"ROLLBACK")


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where short transactions of one workspace run, each whole in one round
    trip (commit_with): a source of connections, the credential and the
    workspace reference of the context, and the workspace id it must open.
    """

    connection: Callable[[], contextlib.AbstractContextManager[psycopg.Connection]]
    token: str
    workspace: str | None
    workspace_id: uuid.UUID

    def commit_with(self, query: str, params: tuple = ()) -> list[dict]:
        with self.connection() as conn:
            return commit_with(
                conn,
                self.token,
                self.workspace,
                query,
                params,
                expect=self.workspace_id,
            )[1]


@contextlib.contextmanager
def as_service(
    pool: ConnectionPool, secret: str, workspace_id: uuid.UUID | str, label: str
) -> Iterator[tuple[psycopg.Connection, OpenedContext]]:
    """A job's transaction acting for one workspace (audit actor `job:<label>`)."""
    token = context.service_token(secret, workspace_id, label)
    with (
        pool.connection() as conn,
        in_context(conn, token, str(workspace_id)) as opened,
    ):
        yield conn, opened
