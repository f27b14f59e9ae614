"""Workspace-aware middleware: every /w/<slug>/ view runs in the verified
context of that workspace, opened before its first query.

`workspace_view` resolves the workspace from the URL, checks the signed-in
user's membership and session (both in the opening, in the same round trip
as BEGIN), and hands the view a connection whose transaction is scoped to
that workspace. A workspace the user is not in answers exactly like one
that does not exist.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
import uuid

import structlog
from cajex.web import auth
from flask import Flask, abort, current_app, g, request, session
from flask_login import logout_user

from cajex import db, log, metrics
from cajex.errors import AppError

_logger = log.get("cajex.web")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")
#: The shape cajex.workspaces.slug allows (db/schema/0001_core.sql).
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,46}[a-z0-9]")


def valid_slug(slug: str) -> bool:
    """Whether `slug` could name a workspace at all.

    Anything else is answered like a workspace that does not exist, before
    any query: a NUL byte, say, would otherwise reach PostgreSQL (which
    refuses it in text) and fail the request with a 500.
    """
    return _SLUG.fullmatch(slug) is not None


_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def pool():
    return current_app.extensions["cajex.pool"]


def signin_pool():
    """Connections of the sign-in pages (cajex_signin), which alone may open
    sessions, link identities and provision members from SSO."""
    return current_app.extensions["cajex.signin_pool"]


def webhook_pool():
    """Connections of Stripe's webhook (cajex_webhook): they may apply a
    verified event to any workspace, and do nothing else."""
    return current_app.extensions["cajex.webhook_pool"]


def close_pools(app) -> None:
    for name in ("cajex.pool", "cajex.signin_pool", "cajex.webhook_pool"):
        app.extensions[name].close()


def settings():
    return current_app.extensions["cajex.settings"]


def register_nav(
    app: Flask, label: str, endpoint: str, permission: str | None = None
) -> None:
    """Add a section to a workspace's navigation (shown when the role has `permission`)."""
    app.extensions.setdefault("cajex.nav", []).append((label, endpoint, permission))


def init_app(app: Flask) -> None:
    app.extensions.setdefault("cajex.nav", [])

    @app.context_processor
    def _template_helpers():
        def my_workspaces():
            if "my_workspaces" not in g:
                conn = g.get("db")
                g.my_workspaces = (
                    conn.execute("select * from cajex.my_workspaces()").fetchall()
                    if conn is not None
                    else []
                )
            return g.my_workspaces

        def workspace_nav():
            from flask import url_for

            workspace, conn = g.get("workspace"), g.get("db")
            if workspace is None or conn is None:
                return []
            items = []
            for label, endpoint, permission in app.extensions["cajex.nav"]:
                if permission is not None and not workspace.can(permission):
                    continue
                items.append(
                    {
                        "label": label,
                        "url": url_for(endpoint, slug=workspace.workspace_slug),
                    }
                )
            return items

        def can(permission: str) -> bool:
            workspace = g.get("workspace")
            return workspace is not None and workspace.can(permission)

        return {
            "my_workspaces": my_workspaces,
            "workspace_nav": workspace_nav,
            "can": can,
        }

    @app.before_request
    def _start():
        sent = request.headers.get("X-Request-Id", "")
        g.request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        g.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def _finish(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        # No view sets these, so they are added without looking for them.
        headers.extend(_SECURITY_HEADERS)
        headers.add("X-Request-Id", g.get("request_id", ""))
        if request.path.startswith(("/api/", "/w/")) or "/api/" in request.path:
            headers.setdefault("Cache-Control", "no-store")
        workspace = g.get("workspace")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        metrics.LATENCY.labels(route).observe(elapsed)
        _logger.info(
            "request",
            method=request.method,
            route=route,
            status=response.status_code,
            duration_ms=round(elapsed * 1000, 2),
            workspace_id=str(workspace.workspace_id) if workspace else None,
            # As flask-login's loader reads it (cajex.web.auth.load_user).
            user_id=session.get("_user_id") if session.get("sid") else None,
        )
        return response


def _signed_out():
    """The cookie names a session the database no longer honours."""
    logout_user()
    from flask import session

    session.clear()
    return current_app.login_manager.unauthorized()


@contextlib.contextmanager
def user_transaction(connections=None):
    """A transaction in the signed-in user's own context (no workspace), on
    a connection of `connections` (default: the requests' pool).

    Raises 401 (or redirects to sign-in) when the session is dead.
    """
    token = auth.user_token()
    if token is None:
        raise _Unauthorized()
    source = connections or pool
    with source().connection() as conn, db.in_context(conn, token) as opened:
        if not opened.opened:
            raise _Unauthorized()
        yield conn, opened


class _Unauthorized(Exception):
    pass


def user_view(view):
    """A view that needs a signed-in user and a transaction in their context."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            with user_transaction() as (conn, opened):
                g.db = conn
                g.user_context = opened
                return view(*args, **kwargs)
        except _Unauthorized:
            return _signed_out()
        finally:
            # The connection is back in the pool (see workspace_view).
            g.pop("db", None)

    return wrapper


def workspace_view(permission: str | None = None):
    """Decorate a view under /w/<slug>/: open that workspace's context first.

    `permission` names a row of the permission matrix the member's role must
    hold (checked here for a clear 403; the SQL functions check it again).
    """

    def decorate(view):
        @functools.wraps(view)
        def wrapper(slug: str, *args, **kwargs):
            token = auth.user_token()
            if token is None:
                return current_app.login_manager.unauthorized()
            if not valid_slug(slug):
                abort(404)
            try:
                with pool().connection() as conn:
                    with db.in_context(conn, token, slug) as opened:
                        if not opened.opened:
                            return _signed_out()
                        if opened.workspace_id is None:
                            refused = auth.refuse_sign_in_method(conn, slug)
                            if refused is not None:
                                return refused
                            abort(404)
                        g.db = conn
                        g.workspace = opened
                        structlog.contextvars.bind_contextvars(
                            workspace_id=str(opened.workspace_id)
                        )
                        if permission is not None and not opened.can(permission):
                            raise AppError(
                                403, "forbidden", f"your role may not {permission}"
                            )
                        return view(*args, **kwargs)
            finally:
                # The connection is back in the pool: an error page rendered
                # after this must not run queries on it.
                g.pop("db", None)

        return wrapper

    return decorate


def parse_uuid(value: str, what: str = "id") -> uuid.UUID:
    """A path or body id, or a 400 with a stable code."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise AppError(
            400, "invalid_id", f"that is not a valid {what}", field=what
        ) from None


def json_body(allowed: set[str], required: set[str] = frozenset()) -> dict:
    """The request's JSON object, checked for unknown and missing fields."""
    if request.mimetype != "application/json":
        raise AppError(
            415,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        )
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise AppError(400, "invalid_json", "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise AppError(
            400, "unknown_field", f"unknown field {unknown[0]}", field=unknown[0]
        )
    missing = sorted(required - set(data))
    if missing:
        raise AppError(
            400, "missing_field", f"{missing[0]} is required", field=missing[0]
        )
    return data
