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

    @property
    def opened(self) -> bool:
        return self.user_id is not None or self.workspace_id is not None


NO_CONTEXT = OpenedContext(None, None, None, None)


def make_pool(url: str, min_size: int = 2, max_size: int = 10, name: str = "cajex") -> ConnectionPool:
    """A pool of cajex_app connections.

    Connections come back to the pool outside any transaction (the pool rolls
    back an open one), and the context row of a finished transaction never
    matches the next (it is keyed by the transaction's start time), so no
    context outlives its transaction. The pool reconnects after a database
    restart: `check` tests each connection as it is handed out.
    """
    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=True,
        kwargs={"row_factory": dict_row, "autocommit": False},
        check=ConnectionPool.check_connection,
        timeout=10,
        reconnect_timeout=60,
    )


@contextlib.contextmanager
def in_context(
    conn: psycopg.Connection,
    token: str,
    workspace: str | None = None,
) -> Iterator[OpenedContext]:
    """Run a transaction in the verified context named by `token`.

    Yields what was opened; when nothing was (bad token, not a member,
    workspace deleted) the transaction still runs, and RLS shows it nothing.
    Commits on success, rolls back on error. Costs one statement, sent in the
    same round trip as BEGIN.
    """
    with conn.transaction():
        row = conn.execute(
            "select workspace_id, workspace_slug, member_role as role, user_id"
            " from cajex_private.open_context(%s, %s)",
            (token, workspace),
        ).fetchone()
        yield OpenedContext(**row) if row else NO_CONTEXT


@contextlib.contextmanager
def as_service(
    pool: ConnectionPool, secret: str, workspace_id: uuid.UUID | str, label: str
) -> Iterator[tuple[psycopg.Connection, OpenedContext]]:
    """A job's transaction acting for one workspace (audit actor `job:<label>`)."""
    token = context.service_token(secret, workspace_id, label)
    with pool.connection() as conn, in_context(conn, token, str(workspace_id)) as opened:
        yield conn, opened
