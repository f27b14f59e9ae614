"""The signed-in user: flask-login on top of server-side sessions.

The cookie (signed by Flask) holds the user id, the session id and the
session secret. Whether the session is still alive is decided by the
database on every request, when the request's context is opened
(cajex_private.browser_opening): a revoked session opens nothing, in every
process at once. The same opening says when the session was last seen, and
the request slides its idle window at most once a minute (cajex.db.in_context).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import uuid

from flask import Flask, abort, current_app, g, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from cajex import context

login_manager = LoginManager()
# No IP/user-agent binding: sessions are server-side and revocable at once,
# and a binding would sign out people whose address changes (mobile, VPN)
# while rewriting the cookie on every response.
login_manager.session_protection = None


@dataclasses.dataclass
class User(UserMixin):
    """The user named by the cookie; not yet verified against the database."""

    id: str
    session_id: str

    def get_id(self) -> str:
        return self.id


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    session_id = session.get("sid")
    if not session_id:
        return None
    return User(id=user_id, session_id=session_id)


@login_manager.unauthorized_handler
def unauthorized():
    from cajex.web.errors import wants_json

    if wants_json():
        abort(401)
    from flask import redirect, url_for

    return redirect(
        url_for(current_app.config.get("LOGIN_VIEW", "home.login"), next=request.path)
    )


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.before_request(_check_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token


def hash_session_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def start_session(conn, user_id, auth_method: str, **sso) -> str:
    """Open a server-side session for `user_id` and sign the browser in.

    Rotates the session: whatever the cookie held before is dropped, so a
    session id planted before sign-in never becomes a signed-in one.
    """
    secret = secrets.token_urlsafe(32)
    idle, absolute = session_limits()
    row = conn.execute(
        "select cajex_private.create_session(%(user)s, %(hash)s, %(method)s,"
        " p_idle => make_interval(mins => %(idle)s),"
        " p_absolute => make_interval(mins => %(absolute)s),"
        " p_user_agent => %(ua)s, p_sso_workspace_id => %(ws)s,"
        " p_sso_connection_id => %(conn)s, p_idp_session_id => %(sid)s,"
        " p_idp_subject => %(sub)s) as id",
        {
            "user": user_id,
            "hash": hash_session_secret(secret),
            "method": auth_method,
            "idle": idle,
            "absolute": absolute,
            "ua": (request.user_agent.string or "")[:512],
            "ws": sso.get("sso_workspace_id"),
            "conn": sso.get("sso_connection_id"),
            "sid": sso.get("idp_session_id"),
            "sub": sso.get("idp_subject"),
        },
    ).fetchone()
    # The last used workspace belongs to the browser, not to the session:
    # it survives signing in again (home.index checks it is still yours).
    last = session.get("last_workspace")
    session.clear()
    if isinstance(last, str) and len(last) <= 64:
        session["last_workspace"] = last
    session["sid"] = str(row["id"])
    session["sk"] = secret
    login_user(User(id=str(user_id), session_id=str(row["id"])))
    return str(row["id"])


def session_limits() -> tuple[int, int]:
    """(idle, absolute) lifetime of a new session, in minutes.

    CAJEX_SESSION_IDLE_MINUTES (default 480: a working day without a request
    signs out) and CAJEX_SESSION_MAX_HOURS (default 720: thirty days, then
    sign in again whatever the activity); Settings.extra may override both.
    """
    extra = current_app.extensions["cajex.settings"].extra or {}

    def read(key: str, env: str, default: int) -> int:
        try:
            value = int(extra.get(key) or os.environ.get(env) or default)
        except (TypeError, ValueError):
            value = default
        return max(value, 1)

    idle = read("session_idle_minutes", "CAJEX_SESSION_IDLE_MINUTES", 480)
    absolute = read("session_max_hours", "CAJEX_SESSION_MAX_HOURS", 720) * 60
    return min(idle, absolute), absolute


def refuse_sign_in_method(conn, slug: str):
    """The answer when a workspace stayed closed because of its sign-in methods.

    A member signed in by a method the workspace does not allow is told so:
    a 403 `signin_method_not_allowed` for the API, the workspace's sign-in
    page for a browser. None when that is not the reason (then the caller
    answers 404, as for a workspace that does not exist).
    """
    sid, secret = session.get("sid"), session.get("sk")
    try:
        session_id = uuid.UUID(str(sid))
    except ValueError:
        return None
    row = conn.execute(
        "select cajex_private.signin_methods_required(%s, %s, %s) as m",
        (session_id, secret, slug),
    ).fetchone()
    if row is None or row["m"] is None:
        return None
    from cajex.web.errors import wants_json
    from flask import redirect, url_for

    from cajex.errors import AppError

    if wants_json():
        raise AppError(
            403,
            "signin_method_not_allowed",
            "this workspace asks you to sign in with: " + ", ".join(row["m"]),
        )
    return redirect(
        url_for("signin.workspace_login", slug=slug, next=request.path, method="refused")
    )


def end_session(conn, reason: str = "sign_out") -> None:
    """Revoke this browser's session and clear the cookie."""
    if current_user.is_authenticated:
        conn.execute(
            "select cajex_private.revoke_sessions(%s, %s, %s)",
            (current_user.id, reason, current_user.session_id),
        )
    logout_user()
    last = session.get("last_workspace")
    session.clear()
    if isinstance(last, str) and len(last) <= 64:
        session["last_workspace"] = last


def user_token() -> str | None:
    """The context credential of the signed-in browser, or None.

    Read from the cookie's session as flask-login's user loader reads it
    (load_user), without going through the current_user proxy.
    """
    sid, secret = session.get("sid"), session.get("sk")
    if not sid or not secret or not session.get("_user_id"):
        return None
    return context.session_credential(sid, secret)


def current_user_uuid() -> uuid.UUID | None:
    return uuid.UUID(current_user.id) if current_user.is_authenticated else None


# ---------------------------------------------------------------------------
# CSRF: every POST from a form carries the session's token. A cross-site page
# can send neither a JSON POST nor PUT, PATCH or DELETE without a CORS
# preflight, which this app never allows, so those need no token.

_SAFE = {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"}


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _check_csrf():
    if request.method in _SAFE or getattr(g, "csrf_exempt", False):
        return None
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, "csrf_exempt", False):
        return None
    if request.mimetype == "application/json":
        return None
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, description="csrf")
    return None


def csrf_exempt(view):
    """For endpoints other servers post to (webhooks, SAML ACS, SCIM)."""
    view.csrf_exempt = True
    return view
