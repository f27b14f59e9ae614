"""AI of a workspace: the settings page and its JSON API (admins, ai.configure),
the status any member may read (ai.use), and the usage record (ai.configure
or billing.read).

The API key is sealed (cajex.crypto) before it reaches SQL; no page or
response carries it, only its last four characters. Nothing here decrypts
a key: only the gateway does, and only for a call it has reserved.
"""

from __future__ import annotations

import re

from cajex.web import auth
from cajex.web.middleware import (
    json_body,
    pool,
    register_nav,
    settings,
    workspace_view,
)
from flask import Blueprint, current_app, g, jsonify, render_template, request

from cajex import crypto, db
from cajex.ai import drafts
from cajex.ai import settings as ai_settings
from cajex.ai.gateway import Gateway
from cajex.errors import AppError, from_database

bp = Blueprint("ai", __name__, url_prefix="/w/<slug>")

PROVIDERS = {
    "anthropic": "Anthropic (Messages API)",
    "openai": "OpenAI (chat completions)",
    "openai_compatible": "OpenAI-compatible endpoint (base URL)",
}

#: What PATCH /api/v1/ai/settings accepts: the SQL function's fields and the key.
API_FIELDS = {
    "enabled",
    "provider",
    "model",
    "base_url",
    "budget_tokens",
    "budget_period",
    "task_budgets",
    "max_output_tokens",
    "timeout_seconds",
    "clear_api_key",
    "api_key",
}

# A provider key is one printable token: nothing that could smuggle a header.
_KEY_SHAPE = re.compile(r"^[\x21-\x7e]{8,2000}$")
# ASCII digits only (str.isdigit() takes '²', which int() refuses), and few
# enough that int() stays cheap; SQL checks the range.
_DIGITS = re.compile(r"[0-9]{1,18}")

DEFAULTS = {
    "enabled": False,
    "provider": "anthropic",
    "model": "claude-sonnet-4-5",
    "base_url": None,
    "budget_tokens": 200000,
    "budget_period": "month",
    "task_budgets": {},
    "max_output_tokens": 1024,
    "timeout_seconds": 60,
    "api_key_last4": None,
    "api_key_set": False,
    "updated_at": None,
}


def init_app(app) -> None:
    register_nav(app, "AI", "ai.settings_page", "ai.configure")


# -- shared with the AI features' views ----------------------------------------


def gateway() -> Gateway:
    """The app's gateway (one per app; the keyring is read from settings)."""
    ext = current_app.extensions
    if "cajex.ai_gateway" not in ext:
        ext["cajex.ai_gateway"] = Gateway(
            crypto.master_key_from_settings(settings()),
            context_secret=settings().context_secret,
            allow_private_hosts=settings().ai_allow_private_hosts,
        )
    return ext["cajex.ai_gateway"]


def request_scope() -> db.Scope:
    """Where the gateway's transactions run: the requesting member's context.

    Each is its own pooled connection and commits on its own, so the
    reservation is visible to concurrent requests before the provider is
    called and no transaction stays open across the call. The view's own
    transaction (g.db) only read the project by then. A member signed out
    or removed meanwhile opens nothing, and nothing is reserved.
    """
    return db.Scope(
        pool().connection,
        auth.user_token(),
        g.workspace.workspace_slug,
        g.workspace.workspace_id,
    )


# -- reading ---------------------------------------------------------------------


def _current() -> dict:
    return ai_settings.read(g.db) or dict(DEFAULTS)


def _usage(days: int = 31) -> list[dict]:
    return g.db.execute(
        "select day, model, task, requests, failed_requests, input_tokens, output_tokens"
        " from cajex.ai_usage where day > (now() at time zone 'utc')::date - %s"
        " order by day desc, model, task limit 500",
        (days,),
    ).fetchall()


def _usage_json(rows: list[dict]) -> list[dict]:
    return [{**r, "day": r["day"].isoformat()} for r in rows]


def _status_json(status: dict) -> dict:
    return {
        k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in status.items()
    }


# -- writing -------------------------------------------------------------------


def _whole(raw, field: str) -> int:
    text = str(raw if raw is not None else "").strip().replace("_", "")
    if not _DIGITS.fullmatch(text):
        raise AppError(
            422, "invalid", f"{field.replace('_', ' ')} is a whole number", field
        )
    return int(text)


def _check_key(api_key) -> str | None:
    if api_key is None or api_key == "":
        return None
    if not isinstance(api_key, str) or not _KEY_SHAPE.match(api_key.strip()):
        # Never echo the value: it may be a real key pasted wrongly.
        raise AppError(
            422,
            "invalid",
            "the API key is 8 to 2000 printable characters without spaces",
            "api_key",
        )
    return api_key.strip()


def _form_changes(form, current: dict) -> tuple[dict, str | None]:
    """The settings form as changes for cajex.ai_update_settings, and the new key if any."""
    changes = {
        "enabled": form.get("enabled") == "on",
        "provider": form.get("provider", ""),
        "model": form.get("model", "").strip(),
        "base_url": form.get("base_url", "").strip() or None,
        "budget_period": form.get("budget_period", ""),
    }
    for name in ("budget_tokens", "max_output_tokens", "timeout_seconds"):
        changes[name] = _whole(form.get(name), name)
    # The form edits the budgets of the product's tasks; others (set through
    # the API) are kept.
    task_budgets = {
        k: v
        for k, v in (current.get("task_budgets") or {}).items()
        if k not in drafts.TASKS
    }
    for task in drafts.TASKS:
        raw = (form.get(f"task_budget_{task}") or "").strip()
        if raw:
            task_budgets[task] = _whole(raw, f"task_budget_{task}")
    changes["task_budgets"] = task_budgets
    if form.get("clear_api_key") == "on":
        changes["clear_api_key"] = True
    return changes, _check_key(form.get("api_key"))


def _save(changes: dict, api_key: str | None) -> dict:
    master = crypto.master_key_from_settings(settings()) if api_key else None
    return ai_settings.save(
        g.db,
        master,
        g.workspace.workspace_id,
        changes,
        api_key=api_key,
        allow_private_hosts=settings().ai_allow_private_hosts,
    )


# -- the page --------------------------------------------------------------------


def _page(
    message: str | None = None, error: AppError | None = None, form: dict | None = None
):
    status = ai_settings.status(g.db)
    current = _current()
    return render_template(
        "ai/settings.html",
        current=form or current,
        last4=current.get("api_key_last4"),
        key_set=current.get("api_key_set"),
        status=status,
        usage=_usage(),
        providers=PROVIDERS,
        tasks=drafts.TASKS,
        message=message,
        error=error,
    ), (error.status if error else 200)


@bp.get("/settings/ai")
@workspace_view("ai.configure")
def settings_page():
    return _page()


@bp.post("/settings/ai")
@workspace_view("ai.configure")
def settings_save():
    current = _current()
    try:
        with g.db.transaction():
            changes, api_key = _form_changes(request.form, current)
            _save(changes, api_key)
    except AppError as exc:
        return _page(error=exc, form=_redisplay(request.form, current))
    except Exception as exc:
        known = from_database(exc)
        if known is None:
            raise
        return _page(error=known, form=_redisplay(request.form, current))
    return _page("Saved.")


def _redisplay(form, current: dict) -> dict:
    """What the person typed (never the key), to show again beside the error."""
    shown = dict(current)
    for name in (
        "provider",
        "model",
        "base_url",
        "budget_period",
        "budget_tokens",
        "max_output_tokens",
        "timeout_seconds",
    ):
        if name in form:
            shown[name] = form.get(name)
    shown["enabled"] = form.get("enabled") == "on"
    shown["task_budgets"] = {
        t: form.get(f"task_budget_{t}")
        for t in drafts.TASKS
        if form.get(f"task_budget_{t}")
    }
    return shown


# -- the JSON API ------------------------------------------------------------------


@bp.get("/api/v1/ai/settings")
@workspace_view("ai.configure")
def api_settings():
    return jsonify(settings=_current(), status=_status_json(ai_settings.status(g.db)))


@bp.patch("/api/v1/ai/settings")
@workspace_view("ai.configure")
def api_update_settings():
    data = json_body(API_FIELDS)
    api_key = _check_key(data.pop("api_key", None))
    saved = _save(data, api_key)
    return jsonify(settings=saved, status=_status_json(ai_settings.status(g.db)))


@bp.get("/api/v1/ai/status")
@workspace_view("ai.use")
def api_status():
    return jsonify(status=_status_json(ai_settings.status(g.db)))


@bp.get("/api/v1/ai/usage")
@workspace_view()
def api_usage():
    if not (g.workspace.can("ai.configure") or g.workspace.can("billing.read")):
        raise AppError(403, "forbidden", "your role may not read the AI usage")
    days = request.args.get("days", "31")
    if not _DIGITS.fullmatch(days) or not 1 <= int(days) <= 400:
        raise AppError(
            400, "invalid_days", "days is a whole number from 1 to 400", "days"
        )
    return jsonify(usage=_usage_json(_usage(int(days))))
