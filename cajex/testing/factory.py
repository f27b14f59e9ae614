"""Build users, sessions, organisations, workspaces and projects for tests,
through the same SQL functions and verified contexts the app uses."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import secrets
import uuid

import psycopg
from psycopg.rows import dict_row

from cajex import context, db
from cajex.config import role_url

_seq = itertools.count(1)


@dataclasses.dataclass
class TestUser:
    id: uuid.UUID
    email: str
    session_id: uuid.UUID
    session_secret: str
    secret_hex: str

    def token(self, ttl: int = 300) -> str:
        """The credential the web app would use for this user's browser."""
        return context.session_credential(self.session_id, self.session_secret)

    def signed_token(self, ttl: int = 300) -> str:
        """A signed context token (as the DBA's as-member and jobs use)."""
        return context.user_token(self.secret_hex, self.id, self.session_id, ttl=ttl)


@dataclasses.dataclass
class TestWorkspace:
    id: uuid.UUID
    slug: str
    organisation_id: uuid.UUID
    owner: TestUser


class World:
    """A handle on one test database: connections and factories."""

    def __init__(self, admin_url: str, app_url: str, secret_hex: str):
        self.admin_url = admin_url
        self.app_url = app_url
        self.secret = secret_hex
        #: The sign-in pages', the worker's and the Stripe webhook's logins
        #: (db/bootstrap.sql).
        self.signin_url = role_url(app_url, "cajex_signin")
        self.worker_url = role_url(app_url, "cajex_worker")
        self.webhook_url = role_url(app_url, "cajex_webhook")
        self.conn = psycopg.connect(app_url, row_factory=dict_row)
        #: Users and sessions are made as the sign-in pages make them.
        self.signin = psycopg.connect(self.signin_url, row_factory=dict_row)
        self.admin = psycopg.connect(admin_url, row_factory=dict_row, autocommit=True)

    def close(self) -> None:
        self.conn.close()
        self.signin.close()
        self.admin.close()

    # -- connections -----------------------------------------------------------

    def app_connection(self) -> psycopg.Connection:
        return psycopg.connect(self.app_url, row_factory=dict_row)

    def worker_connection(self) -> psycopg.Connection:
        return psycopg.connect(self.worker_url, row_factory=dict_row)

    @contextlib.contextmanager
    def as_user(
        self, user: TestUser, workspace: TestWorkspace | str | None = None, conn=None
    ):
        """A transaction in `user`'s context (optionally in `workspace`).

        A test may expect a refusal inside it and catch the error; the
        transaction then ends in a rollback (db.in_context would raise).
        """
        conn = conn or self.conn
        ref = workspace.slug if isinstance(workspace, TestWorkspace) else workspace
        with db.in_context(conn, user.token(), ref) as opened:
            yield conn, opened
            _end_refused(conn)

    @contextlib.contextmanager
    def as_job(self, workspace: TestWorkspace, label: str = "test", conn=None):
        conn = conn or self.conn
        with db.in_context(
            conn,
            context.service_token(self.secret, workspace.id, label),
            str(workspace.id),
        ) as opened:
            yield conn, opened
            _end_refused(conn)

    def scope(self, user: TestUser, workspace: TestWorkspace, conn=None) -> db.Scope:
        """Where `user`'s whole-message transactions in `workspace` run (db.Scope)."""
        conn = conn or self.conn
        return db.Scope(
            lambda: contextlib.nullcontext(conn),
            user.token(),
            workspace.slug,
            workspace.id,
        )

    # -- factories -------------------------------------------------------------

    def user(self, email: str | None = None, name: str | None = None) -> TestUser:
        n = next(_seq)
        email = email or f"user{n}-{secrets.token_hex(3)}@example.test"
        secret = secrets.token_urlsafe(32)
        with self.signin.transaction():
            uid = self.signin.execute(
                "select cajex_private.ensure_user(%s, %s) as id", (email, name)
            ).fetchone()["id"]
            sid = self.signin.execute(
                "select cajex_private.create_session(%s, %s, 'test') as id",
                (uid, hashlib.sha256(secret.encode()).digest()),
            ).fetchone()["id"]
        return TestUser(uid, email.lower(), sid, secret, self.secret)

    def workspace(
        self,
        owner: TestUser | None = None,
        slug: str | None = None,
        plan: str = "free",
        organisation_id: uuid.UUID | None = None,
    ) -> TestWorkspace:
        owner = owner or self.user()
        slug = slug or f"ws-{next(_seq)}-{secrets.token_hex(3)}"
        with self.as_user(owner) as (conn, _):
            org = (
                organisation_id
                or conn.execute(
                    "select cajex.create_organisation('Org') as id"
                ).fetchone()["id"]
            )
            wid = conn.execute(
                "select cajex.create_workspace(%s, %s, %s, %s) as id",
                (org, slug, slug.title(), plan),
            ).fetchone()["id"]
        return TestWorkspace(wid, slug, org, owner)

    def member(
        self,
        workspace: TestWorkspace,
        user: TestUser | None = None,
        role: str = "member",
    ) -> TestUser:
        """`user` (or a new one) made a member of `workspace`, as a fixture:
        written directly, past the plan's seats and the rules of the ways in
        (invitations, SSO, SCIM and cajex_private.add_member), which their
        own tests exercise. The seat counter follows (its trigger)."""
        user = user or self.user()
        self.admin.execute(
            "insert into cajex.memberships (workspace_id, user_id, role) values (%s, %s, %s)"
            " on conflict (workspace_id, user_id) do update"
            " set role = excluded.role, status = 'active'"
            " where cajex.memberships.role <> 'owner'",
            (workspace.id, user.id, role),
        )
        return user

    def project(
        self,
        workspace: TestWorkspace,
        user: TestUser | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
    ) -> dict:
        user = user or workspace.owner
        with self.as_user(user, workspace) as (conn, _):
            return conn.execute(
                "select * from cajex.create_project(%s, %s, %s)",
                (name or f"Project {next(_seq)}", "", tags or []),
            ).fetchone()

    # -- the browser -----------------------------------------------------------

    def login(self, client, user: TestUser) -> None:
        """Sign a Flask test client in as `user` (the cookie a sign-in sets)."""
        with client.session_transaction() as sess:
            sess.clear()
            sess["_user_id"] = str(user.id)
            sess["_fresh"] = True
            sess["sid"] = str(user.session_id)
            sess["sk"] = user.session_secret
            sess["csrf"] = "test-csrf-token"


def _end_refused(conn: psycopg.Connection) -> None:
    """Roll back a transaction whose expected error the test caught."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.pgconn.exec_(b"ROLLBACK")
