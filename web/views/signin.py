"""Sign-in without passwords: Google, Apple, GitHub and magic links.

Provider flows keep their state, nonce and PKCE verifier in the signed
session cookie (one pending sign-in per browser, popped on the callback, so a
replayed callback finds nothing). Apple posts its callback cross-site
(form_post), where a SameSite=Lax cookie is not sent: that POST is turned
into a same-site GET on the callback URL, which carries the cookie.
Every error answers with a stable code and writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time

from cajex.web import auth
from cajex.web.auth import csrf_exempt
from cajex.web.middleware import settings, valid_slug
from cajex.web.middleware import signin_pool as pool
from flask import (
    Blueprint,
    abort,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from cajex import log
from cajex.errors import AppError
from cajex.identity import oidc, providers

_logger = log.get("cajex.signin")
bp = Blueprint("signin", __name__)

MAGIC_LINK_TTL_MINUTES = 15
PENDING_TTL = 600


def _settings_int(name: str, default: int) -> int:
    """Settings.extra[name], else the variable CAJEX_<NAME>, else `default`."""
    value = (settings().extra or {}).get(name) or os.environ.get("CAJEX_" + name.upper())
    try:
        return max(int(value), 1) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


# A path on this site and nothing else: no scheme, no host, no backslash,
# and no whitespace or control character (browsers and Werkzeug drop those,
# which turns "/\t/evil.example" into "//evil.example", another site).
_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?=&+:@,;!*'()$-]{0,510}")


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site, or ""."""
    value = value or ""
    return value if _NEXT.fullmatch(value) else ""


def _bucket(kind: str, value: str) -> bytes:
    """A keyed hash naming a rate-limit bucket (the value itself is never stored)."""
    key = settings().secret_key.encode() or b"cajex"
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).digest()


def available_methods(allowed: list[str] | None = None) -> list[dict]:
    """The sign-in methods to show: configured providers and magic links, filtered."""
    configured = providers.configured(settings())
    methods = [{"name": n, "label": providers.LABELS[n]} for n in providers.NAMES
               if n in configured]
    methods.append({"name": "magic_link", "label": providers.LABELS["magic_link"]})
    if allowed is not None:
        methods = [m for m in methods if m["name"] in allowed]
    return methods


def render_login(allowed: list[str] | None = None, workspace_slug: str | None = None,
                 status: int = 200, **extra):
    methods = available_methods(allowed)
    return render_template(
        "login.html",
        methods=methods,
        magic_link=any(m["name"] == "magic_link" for m in methods),
        providers=[m for m in methods if m["name"] != "magic_link"],
        workspace_slug=workspace_slug,
        next=_safe_next(request.values.get("next")),
        development=settings().development,
        **extra,
    ), status


@bp.get("/w/<slug>/login")
def workspace_login(slug: str):
    if not valid_slug(slug):
        abort(404)
    with pool().connection() as conn:
        allowed = conn.execute(
            "select cajex_private.workspace_signin_methods(%s) as m", (slug,)
        ).fetchone()["m"]
    from cajex.web.views.branding import public_branding

    return render_login(list(allowed), workspace_slug=slug, brand=public_branding(slug))


def _workspace_allows(method: str) -> None:
    slug = request.values.get("workspace") or ""
    if not slug:
        return
    if not valid_slug(slug):
        raise AppError(400, "invalid_workspace", "that workspace address is not valid")
    with pool().connection() as conn:
        allowed = conn.execute(
            "select cajex_private.workspace_signin_methods(%s) as m", (slug,)
        ).fetchone()["m"]
    if method not in allowed:
        raise AppError(403, "method_not_allowed", "this workspace does not allow that sign-in method")


# ---------------------------------------------------------------------------
# Magic links


@bp.post("/login/email")
def request_magic_link():
    email = (request.form.get("email") or "").strip().lower()
    if not email or len(email) > 320 or "@" not in email:
        raise AppError(422, "invalid_email", "enter a valid email address", field="email")
    _workspace_allows("magic_link")
    token = secrets.token_urlsafe(32)
    token_hash = hashlib.sha256(token.encode()).digest()
    # Built from the configured public address, never from the Host header.
    # `next` travels in the link, so a person who asked for it on the way to
    # somewhere (an invitation) lands there, even in another browser.
    next_path = _safe_next(request.form.get("next")) or None
    link = settings().public_url.rstrip("/") + url_for("signin.magic_link", token=token, next=next_path)
    ttl = min(_settings_int("magic_link_ttl_minutes", MAGIC_LINK_TTL_MINUTES), 24 * 60)
    # Asked for on a workspace's sign-in page: the email wears its branding.
    from cajex.web.views.branding import public_branding

    brand = public_branding(request.form.get("workspace") or "")
    with pool().connection() as conn:
        status = conn.execute(
            "select cajex_private.request_magic_link(%s, %s, %s, %s, %s, make_interval(mins => %s),"
            " %s, %s, %s) as s",
            (email, token_hash, link, _bucket("email", email),
             _bucket("client", request.remote_addr or ""), ttl,
             brand.workspace_id if brand else None,
             _settings_int("magic_link_per_address", 5), _settings_int("magic_link_per_client", 20)),
        ).fetchone()["s"]
    if status == "rate_limited":
        _logger.info("signin.magic_link_rate_limited")
        return render_template("signin/rate_limited.html"), 429
    _logger.info("signin.magic_link_requested")
    return render_template("signin/check_email.html", minutes=ttl)


def _token_hash(token: str) -> bytes:
    if not token or len(token) > 128:
        raise AppError(404, "not_found", "this sign-in link is not valid")
    return hashlib.sha256(token.encode()).digest()


@bp.get("/login/magic/<token>")
def magic_link(token: str):
    """A confirmation page: mail scanners that fetch links must not use them up."""
    token_hash = _token_hash(token)
    with pool().connection() as conn:
        conn.execute("select cajex_private.check_magic_link(%s)", (token_hash,))
    return render_template("signin/confirm_link.html", token=token,
                           next=_safe_next(request.args.get("next")))


@bp.post("/login/magic/<token>")
def use_magic_link(token: str):
    token_hash = _token_hash(token)
    with pool().connection() as conn:
        user_id = conn.execute(
            "select cajex_private.consume_magic_link(%s) as u", (token_hash,)
        ).fetchone()["u"]
        auth.start_session(conn, user_id, "magic_link")
    _logger.info("signin.signed_in", method="magic_link", user_id=str(user_id))
    return redirect(_safe_next(request.args.get("next")) or url_for("home.index"))


# ---------------------------------------------------------------------------
# Providers


def _provider(name: str) -> providers.Provider:
    if name not in providers.NAMES:
        raise AppError(404, "unknown_provider", "there is no such sign-in provider")
    found = providers.configured(settings()).get(name)
    if found is None:
        raise AppError(404, "unknown_provider", "this sign-in provider is not configured")
    return found


def _redirect_uri(name: str) -> str:
    return settings().public_url.rstrip("/") + url_for("signin.callback", provider=name)


@bp.get("/login/<provider>")
def begin(provider: str):
    return _begin(provider, link=False)


@bp.post("/login/<provider>/link")
def begin_link(provider: str):
    """A signed-in user links another provider (the linked accounts page).

    A POST with the form's CSRF token: the click is the user's confirmation,
    and no other site can start a linking flow in their browser.
    """
    if auth.current_user_uuid() is None:
        raise AppError(401, "unauthenticated", "sign in first")
    return _begin(provider, link=True)


def _begin(provider: str, link: bool):
    config = _provider(provider)
    if not link:
        _workspace_allows(provider)
    try:
        if provider == "github":
            started = providers.github_begin(config, _redirect_uri(provider))
        else:
            started = providers.relying_party(config, _redirect_uri(provider)).begin()
    except oidc.OIDCError as exc:
        raise AppError(exc.status, exc.code, "the sign-in provider is not available") from exc
    session["oauth"] = {
        "provider": provider,
        "state": started.state,
        "nonce": started.nonce,
        "verifier": started.code_verifier,
        "next": _safe_next(request.values.get("next")),
        "link": link,
        "at": int(time.time()),
    }
    return redirect(started.url, 303 if link else 302)


@bp.post("/login/<provider>/callback")
@csrf_exempt
def callback_post(provider: str):
    """Apple's form_post: hand the parameters to the same-site GET callback."""
    _provider(provider)
    wanted = ("code", "state", "error", "user")
    params = {k: request.form[k] for k in wanted if k in request.form}
    if any(len(v) > oidc.MAX_PARAM_BYTES for v in params.values()):
        raise AppError(400, oidc.OversizeValue.code, "a sign-in parameter is too large")
    from urllib.parse import urlencode

    return redirect(url_for("signin.callback", provider=provider) + "?" + urlencode(params), 303)


@bp.get("/login/<provider>/callback")
def callback(provider: str):
    config = _provider(provider)
    pending = session.pop("oauth", None)
    if not isinstance(pending, dict) or pending.get("provider") != provider:
        raise AppError(400, oidc.StateMismatch.code, "this sign-in was not started here or was already used")
    if int(time.time()) - int(pending.get("at", 0)) > PENDING_TTL:
        raise AppError(400, "signin_expired", "this sign-in took too long; start again")
    params = request.args.to_dict()
    try:
        if provider == "github":
            claims = providers.github_complete(
                config, _redirect_uri(provider), params, pending["state"], pending["verifier"])
            issuer, verified = providers.github_issuer(config), True
        else:
            rp = providers.relying_party(config, _redirect_uri(provider))
            result = rp.complete(params, pending["state"], pending["nonce"], pending["verifier"])
            claims, issuer = result.claims, rp.issuer
            verified = providers.email_verified(claims)
    except oidc.OIDCError as exc:
        _logger.info("signin.provider_refused", provider=provider, code=exc.code)
        raise AppError(exc.status, exc.code, "sign-in failed: " + exc.message) from exc
    name = claims.get("name")
    if provider == "apple" and params.get("user"):
        # Apple sends the name once, on first consent, outside the ID token.
        try:
            person = json.loads(params["user"]).get("name") or {}
            name = " ".join(p for p in (person.get("firstName"), person.get("lastName")) if p)
        except (ValueError, AttributeError):
            name = None
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    identity = {"provider": provider, "issuer": issuer, "subject": str(claims["sub"]),
                "email": email, "email_verified": verified,
                "name": name if isinstance(name, str) else None}
    if pending.get("link") and auth.current_user_uuid() is not None:
        return _link_signed_in(identity)
    with pool().connection() as conn:
        row = conn.execute(
            "select * from cajex_private.signin_with_identity(%s, %s, %s, %s, %s, %s)",
            (provider, issuer, identity["subject"], email, verified,
             (identity["name"] or "")[:200] or None),
        ).fetchone()
        if row["outcome"] == "confirm_link":
            session["pending_link"] = {**identity, "user_id": str(row["user_id"]),
                                       "at": int(time.time()), "next": pending.get("next")}
            return redirect(url_for("signin.confirm_link"))
        auth.start_session(conn, row["user_id"], provider)
    _logger.info("signin.signed_in", method=provider, outcome=row["outcome"],
                 user_id=str(row["user_id"]))
    return redirect(pending.get("next") or url_for("home.index"))


def _link_signed_in(identity: dict):
    """A signed-in user adds a provider from the linked accounts page."""
    from cajex.web.middleware import user_transaction

    # Linking vouches for an identity: the sign-in role's, in the user's context.
    with user_transaction(pool) as (conn, opened):
        conn.execute(
            "select cajex_private.link_identity(%s, %s, %s, %s, %s, %s, true)",
            (opened.user_id, identity["provider"], identity["issuer"], identity["subject"],
             identity["email"], identity["email_verified"]),
        )
    return redirect(url_for("account.linked"))


@bp.route("/login/link", methods=["GET", "POST"])
def confirm_link():
    """An account with the provider's verified address exists: link only if the user says so."""
    pending = session.get("pending_link")
    if not isinstance(pending, dict) or int(time.time()) - int(pending.get("at", 0)) > PENDING_TTL:
        session.pop("pending_link", None)
        raise AppError(400, "signin_expired", "nothing to confirm; start signing in again")
    if request.method == "GET":
        return render_template("signin/confirm_link_account.html", pending=pending,
                               label=providers.LABELS[pending["provider"]])
    session.pop("pending_link", None)
    if request.form.get("decision") != "link":
        return redirect(url_for("home.login"))
    with pool().connection() as conn:
        conn.execute(
            "select cajex_private.link_identity(%s, %s, %s, %s, %s, %s, false)",
            (pending["user_id"], pending["provider"], pending["issuer"], pending["subject"],
             pending["email"], pending["email_verified"]),
        )
        auth.start_session(conn, pending["user_id"], pending["provider"])
    _logger.info("signin.identity_linked", method=pending["provider"], user_id=pending["user_id"])
    return redirect(pending.get("next") or url_for("home.index"))
