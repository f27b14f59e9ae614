"""Connections, and the one way a request or a job touches workspace data.

`in_context()` opens a transaction whose first statement installs the
verified context. Nothing else in the code base filters by workspace: RLS
does, inside PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
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


def _last_row(cur: psycopg.Cursor) -> dict | None:
    """The first row of the last result of a multi-statement query, if any."""
    while True:
        row = (
            cur.fetchone()
            if cur.pgresult is not None and cur.pgresult.ntuples
            else None
        )
        if not cur.nextset():
            return row


@contextlib.contextmanager
def in_context(
    conn: psycopg.Connection,
    token: str,
    workspace: str | None = None,
) -> Iterator[OpenedContext]:
    """Run a transaction in the verified context named by `token`.

    Yields what was opened; when nothing was (bad token, dead session, not a
    member, workspace deleted) the transaction still runs, and RLS shows it
    nothing. Commits on success, rolls back on error.

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
    if not token.startswith("v2."):
        opening = sql.SQL(
            "begin; select c.workspace_id, c.workspace_slug, c.member_role as role, c.user_id, "
            + _PERMISSIONS
            + " from cajex_private.open_context({}, {}) c"
        ).format(sql.Literal(token), sql.Literal(workspace))
    else:
        _prepare(conn)
        opening = sql.SQL(
            "begin; select set_config('cajex.context', {}, true), set_config('cajex.workspace', {}, true);"
            " execute {}"
        ).format(
            sql.Literal(token), sql.Literal(workspace or ""), sql.Identifier(_CHECK)
        )
    # Autocommit for the duration: psycopg then sends no BEGIN of its own,
    # and ours travels with the context.
    conn.autocommit = True
    try:
        try:
            row = _open(conn, opening)
            if row:
                row["permissions"] = frozenset(row["permissions"] or ())
            yield OpenedContext(**row) if row else NO_CONTEXT
        except BaseException:
            _rollback(conn)
            raise
        else:
            # The body may have committed itself (a statement pipelined with
            # its COMMIT, cajex.ai.gateway), so no lock waits a round trip.
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.commit()
    finally:
        if (
            not conn.closed
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            conn.autocommit = False


def _open(conn: psycopg.Connection, opening) -> dict | None:
    cur = conn.cursor(row_factory=dict_row)
    try:
        cur.execute(opening)
    except psycopg.errors.InvalidSqlStatementName:
        # psycopg deallocates every prepared statement after a rollback it
        # runs itself; prepare the check again and retry once.
        _rollback(conn)
        conn._cajex_check_prepared = False
        conn.autocommit = False
        _prepare(conn)
        conn.autocommit = True
        cur.execute(opening)
    return _last_row(cur)


def _rollback(conn: psycopg.Connection) -> None:
    """ROLLBACK without psycopg's reaction to it (deallocating all prepared
    statements, ours included): nothing here changed the schema."""
    if (
        not conn.closed
        and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    ):
        conn.pgconn.exec_(b"ROLLBACK")


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
