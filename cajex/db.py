"""Connections, and the one way a request or a job touches workspace data.

`in_context()` opens a transaction whose first statement checks a credential
and seals the verified context into it. Nothing else in the code base filters
by workspace: RLS does, inside PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterator

import psycopg
from psycopg import generators
from psycopg.adapt import PyFormat, Transformer
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

#: The permission matrix (cajex.role_permissions), read once per process:
#: role -> what it may do. Only migrations change the matrix, and the app
#: restarts after one (docs/operations.md). The SQL functions check the
#: matrix themselves; this copy answers a view's "may this role ...?" (a
#: clear 403, the navigation) without a lookup in every opening.
_MATRIX: dict[str, frozenset] | None = None


def _permissions_of(conn: psycopg.Connection, role: str | None) -> frozenset:
    global _MATRIX
    if role is None:
        return frozenset()
    if _MATRIX is None:
        result = conn.pgconn.exec_(
            b"select role, array_agg(permission) from cajex.role_permissions group by role"
        )
        if result.status != ExecStatus.TUPLES_OK:
            raise psycopg.errors.error_from_result(
                result, encoding=conn.pgconn._encoding
            )
        loader = Transformer.from_context(conn)
        loader.set_pgresult(result)
        _MATRIX = {
            r[0]: frozenset(r[1])
            for r in (loader.load_row(i, tuple) for i in range(result.ntuples))
        }
    return _MATRIX.get(role, frozenset())


def make_pool(
    url: str, min_size: int = 2, max_size: int = 10, name: str = "cajex"
) -> ConnectionPool:
    """A pool of cajex_app connections.

    Connections come back to the pool outside any transaction (the pool rolls
    back an open one), and a context is sealed to its transaction (the
    setting is transaction-local, and the seal covers the transaction's start
    time), so no context outlives its transaction. After a database restart, a request
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


#: The openings, each prepared once per connection: the context's row. A browser's credential goes to
#: the view that checks it (cajex_private.browser_opening), through
#: transaction-local settings that the same statement sets first and clears
#: after; a signed token to cajex_private.open_context. The "_for" forms
#: take a third parameter, a workspace id, and fail (CXNCX) unless the
#: context opened that workspace, so that nothing after them runs.
#:
#: Each form is its own statement, rather than one with a third parameter
#: that may be null, so that the server keeps one plan for it: given a null,
#: the planner folds the check away, finds that plan cheaper than the
#: general one, and would plan the opening again on every transaction.
_REFUSE = (
    b", case when o.workspace_id is distinct from $3::uuid"
    b" then cajex_private.refuse_context() end"
)
_BROWSER_FIELDS = (
    b"select o.workspace_id, o.workspace_slug, o.member_role as role, o.user_id"
    b", o.stale"
    b", set_config('cajex.context', coalesce(o.sealed, ''), true)"
    b", set_config('cajex.credential', '', true)"
)
_BROWSER_FROM = (
    b" from (select set_config('cajex.credential', $1, true) as credential,"
    b" set_config('cajex.workspace', coalesce($2, ''), true)) s"
    b" left join lateral (select * from cajex_private.browser_opening o"
    b" where s.credential is not null offset 0) o on true"
)
_TOKEN_FIELDS = (
    b"select o.workspace_id, o.workspace_slug, o.member_role as role, o.user_id"
)
_TOKEN_FROM = b" from cajex_private.open_context($1, $2) o"
_OPEN_BROWSER = (b"cajex_open_browser", _BROWSER_FIELDS + _BROWSER_FROM)
_OPEN_BROWSER_FOR = (
    b"cajex_open_browser_for",
    _BROWSER_FIELDS + _REFUSE + _BROWSER_FROM,
)
_OPEN_TOKEN = (b"cajex_open_token", _TOKEN_FIELDS + _TOKEN_FROM)
_OPEN_TOKEN_FOR = (b"cajex_open_token_for", _TOKEN_FIELDS + _REFUSE + _TOKEN_FROM)
_IDLE = psycopg.pq.TransactionStatus.IDLE
_INERROR = psycopg.pq.TransactionStatus.INERROR
_TEXT = 25  # the text type's oid
_UUID = 2950
_TOUCH = b"select cajex_private.touch_context_session()"


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

    `token` is a browser's session credential (context.session_credential)
    or a signed token (context.user_token, context.service_token). The
    opening checks it once and seals the context into the transaction, and
    every policy checks the seal. BEGIN and the opening go
    in one round trip (a pipeline), so a transaction costs no more round
    trips than one without; the credential travels as a bind parameter, never
    in the statement's text, which other sessions of the same role can read.
    """
    if conn.pgconn.transaction_status != _IDLE:
        raise RuntimeError("in_context() must start its own transaction")
    try:
        row, stale = _open(conn, token, workspace)
        yield _opened(conn, row)
    except BaseException:
        _rollback(conn)
        raise
    status = conn.pgconn.transaction_status
    if status == _INERROR:
        # The body caught a database error and went on: PostgreSQL would
        # answer COMMIT with a silent ROLLBACK, and the caller would take
        # its writes for done.
        _rollback(conn)
        raise psycopg.errors.InFailedSqlTransaction(
            "a statement in this transaction failed, so nothing was committed"
        )
    # The body may have committed itself (a statement pipelined with its
    # COMMIT, cajex.ai.gateway), so no lock waits a round trip.
    if status == _IDLE:
        return
    if stale:
        # A browser's session last seen over a minute ago: slide its idle
        # window in the same round trip as COMMIT, so that the session's row
        # is locked only while the server works.
        pgconn = conn.pgconn
        _pipeline(
            conn,
            [
                lambda: pgconn.send_query_params(_TOUCH, None),
                lambda: pgconn.send_query_params(b"COMMIT", None),
            ],
        )
    else:
        _run(conn, b"COMMIT")


def _opening_steps(
    conn: psycopg.Connection,
    token: str,
    workspace: str | None,
    expect: uuid.UUID | None = None,
) -> list[Callable[[], None]]:
    """BEGIN and the opening, as pipeline steps; prepares the opening on a
    connection that has not got it."""
    pgconn = conn.pgconn
    browser = token.startswith("v2.")
    params = [token.encode(), workspace.encode() if workspace is not None else None]
    types = [_TEXT, _TEXT]
    if expect is None:
        name, text = _OPEN_BROWSER if browser else _OPEN_TOKEN
    else:
        name, text = _OPEN_BROWSER_FOR if browser else _OPEN_TOKEN_FOR
        params.append(str(expect).encode())
        types.append(_UUID)
    _prepare(conn, name, text, types)
    return [
        lambda: pgconn.send_query_params(b"BEGIN", None),
        lambda: pgconn.send_query_prepared(name, params),
    ]


def _prepare(conn: psycopg.Connection, name: bytes, text: bytes, types: list) -> None:
    """Prepare a statement on this connection, once (a round trip the first
    time). A statement of that name the server already has counts as
    prepared: psycopg may have been told to forget it, the server not."""
    prepared = conn.__dict__.setdefault("_cajex_prepared", set())
    if name in prepared:
        return
    pgconn = conn.pgconn
    pgconn.send_prepare(name, text, types)
    result = conn.wait(generators.execute(pgconn))[-1]
    if result.status != ExecStatus.COMMAND_OK and (
        result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) != b"42P05"
    ):
        raise psycopg.errors.error_from_result(result, encoding=pgconn._encoding)
    prepared.add(name)


def _open(
    conn: psycopg.Connection, token: str, workspace: str | None
) -> tuple[tuple | None, bool]:
    """Send BEGIN and the opening: the opening's row (typed), or None when
    nothing opened, and whether the browser's session wants its idle window
    slid."""
    try:
        result = _pipeline(conn, _opening_steps(conn, token, workspace))[-1]
    except psycopg.errors.InvalidSqlStatementName:
        # psycopg deallocates every prepared statement after a rollback it
        # runs itself (ours included): prepare the opening again, once.
        conn._cajex_prepared = set()
        result = _pipeline(conn, _opening_steps(conn, token, workspace))[-1]
    row = _opened_row(conn, result)
    # A browser's opening says whether its session was last seen long ago.
    stale = (
        row is not None and token.startswith("v2.") and result.get_value(0, 4) == b"t"
    )
    return row, stale


def _opened(conn: psycopg.Connection, row: tuple | None) -> OpenedContext:
    if row is None:
        return NO_CONTEXT
    return OpenedContext(*row, _permissions_of(conn, row[2]))


def _opened_row(conn: psycopg.Connection, result) -> tuple | None:
    """An opening's row, typed; None when nothing opened."""
    if not result.ntuples or (
        result.get_value(0, 0) is None and result.get_value(0, 3) is None
    ):
        return None
    loader = _loader(conn)
    loader.set_pgresult(result)
    return loader.load_row(0, tuple)[:4]


def _loader(conn: psycopg.Connection) -> Transformer:
    """The connection's own loader of result rows (kept: making one per
    result costs more than loading a row)."""
    loader = conn.__dict__.get("_cajex_loader")
    if loader is None:
        loader = conn._cajex_loader = Transformer.from_context(conn)
    return loader


def commit_with(
    conn: psycopg.Connection,
    token: str,
    workspace: str | None,
    query: str,
    params: tuple = (),
    *,
    expect: uuid.UUID | None = None,
) -> tuple[OpenedContext, list[dict]]:
    """A whole transaction in one round trip: BEGIN, the opening, `query` and
    COMMIT, sent as one pipeline.

    For short writes on a contended row (the AI budget's counter): the row
    lock is held only while the server works, and the transaction costs one
    round trip instead of two. `query` takes its `params` as $1, $2, ...:
    they are bound by the server, and the statement is prepared once per
    connection. With `expect` (a workspace id), nothing runs unless the
    context opened that workspace (the opening raises CXNCX). Returns what
    was opened and the query's rows; an error rolls back and is raised.
    """
    if conn.pgconn.transaction_status != _IDLE:
        raise RuntimeError("commit_with() must start its own transaction")
    pgconn = conn.pgconn
    dumper = Transformer.from_context(conn)
    values = dumper.dump_sequence(params, [PyFormat.AUTO] * len(params))
    types, formats = list(dumper.types), list(dumper.formats)
    text = query.encode()
    name = (
        b"cajex_q_"
        + hashlib.sha256(text + repr(types).encode()).hexdigest()[:24].encode()
    )

    def steps():
        _prepare(conn, name, text, types)
        return [
            *_opening_steps(conn, token, workspace, expect),
            lambda: pgconn.send_query_prepared(name, values, formats),
            lambda: pgconn.send_query_params(b"COMMIT", None),
        ]

    try:
        results = _pipeline(conn, steps())
    except psycopg.errors.InvalidSqlStatementName:
        conn._cajex_prepared = set()
        results = _pipeline(conn, steps())
    opening, result = results[-3], results[-2]
    row = _opened_row(conn, opening)
    opened = _opened(conn, row)
    loader = _loader(conn)
    loader.set_pgresult(result)
    names = [result.fname(i).decode() for i in range(result.nfields)]
    rows = [
        dict(zip(names, loader.load_row(i, tuple), strict=True))
        for i in range(result.ntuples)
    ]
    return opened, rows


def _pipeline(conn: psycopg.Connection, steps: list[Callable[[], None]]) -> list:
    """Send `steps` (each queues one command) in one pipeline, with one sync;
    the last result of each, or the error the first failing one raised (the
    transaction rolled back).

    The waits go through psycopg's, which release the GIL while the server
    works.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    try:
        pgconn.enter_pipeline_mode()
        try:
            for step in steps:
                step()
            pgconn.pipeline_sync()
            results = conn.wait(_pipeline_results(pgconn, len(steps)))
        finally:
            pgconn.exit_pipeline_mode()
    except psycopg.OperationalError:
        raise
    except BaseException:
        # Interrupted while waiting: the connection's state is unknown.
        conn.close()
        raise
    failed = next((r for r in results if r.status not in _OK), None)
    if failed is None:
        return results
    if pgconn.status != psycopg.pq.ConnStatus.OK:
        # The server went away: what psycopg raises for a lost connection.
        message = (failed.error_message or pgconn.error_message).decode(
            errors="replace"
        )
        raise psycopg.OperationalError(message.strip() or "the connection was lost")
    _rollback(conn)
    raise psycopg.errors.error_from_result(failed, encoding=pgconn._encoding)


_OK = (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK)


def _pipeline_results(pgconn, count: int):
    """A psycopg wait generator: the last result of each of `count` pipelined
    commands, up to and including the pipeline's sync. A command that
    failed, or was skipped after another failed, gives its error result."""
    # Send what libpq could not send at once.
    while pgconn.flush():
        while not (ready := (yield generators.WAIT_RW)):
            continue
        if ready & generators.READY_R:
            pgconn.consume_input()
    results = []
    last = None
    while True:
        while pgconn.is_busy():
            while not (yield generators.WAIT_R):
                continue
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            # The end of one command's results.
            results.append(last)
            last = None
            continue
        if result.status == ExecStatus.PIPELINE_SYNC:
            if len(results) != count:  # pragma: no cover - a protocol error
                raise psycopg.OperationalError("the pipeline lost a result")
            return results
        if last is None or last.status in _OK:
            last = result


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
    if not conn.closed and conn.pgconn.transaction_status != _IDLE:
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
