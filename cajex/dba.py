"""Helpers for a DBA at a psql prompt."""

from __future__ import annotations

import hashlib
import secrets

from psycopg import sql

from cajex import context


def as_member_sql(
    conn, context_secret: str, slug: str, email: str, ttl: int = 3600
) -> str:
    """SQL that opens `email`'s context in workspace `slug` for one transaction.

    Opens a real, short-lived session for the member (auth method
    'dba_as_member'), so the context goes through every check a request's
    does and shows up on the member's sessions page. Run as an administrator:
    it looks the member up across workspaces.
    """
    row = conn.execute(
        "select u.id as user_id, m.role from cajex.users u"
        " join cajex.memberships m on m.user_id = u.id"
        " join cajex.workspaces w on w.id = m.workspace_id"
        " where u.email = lower(%s) and w.slug = %s and m.status = 'active' and w.status = 'active'",
        (email, slug),
    ).fetchone()
    if row is None:
        raise LookupError(f"no active member with that email in workspace {slug}")
    user_id = row[0]
    session_id = conn.execute(
        "select cajex_private.create_session(%s, %s, 'dba_as_member', %s::interval, %s::interval)",
        (
            user_id,
            hashlib.sha256(secrets.token_bytes(32)).digest(),
            f"{ttl} seconds",
            f"{ttl} seconds",
        ),
    ).fetchone()[0]
    conn.commit()
    token = context.user_token(context_secret, user_id, session_id, ttl=ttl)
    open_stmt = sql.SQL("select * from cajex_private.open_context({}, {});").format(
        sql.Literal(token), sql.Literal(slug)
    )
    return "\n".join(
        [
            f"-- Sees exactly what the member sees in {slug} (role: {row[1]}) until rollback.",
            "begin;",
            "set local role cajex_app;",
            open_stmt.as_string(conn),
        ]
    )
