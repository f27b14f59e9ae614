"""A workspace's standard sign-in methods: which of Google, Apple, GitHub and
email links its members may use (workspace.settings).

The choice is enforced where the workspace's context is opened
(cajex_private.context): a session made by a method the workspace left out
opens the workspace for nothing, in every process at once. The per-workspace
sign-in page, /w/<slug>/login, offers only the chosen methods.
"""

from __future__ import annotations

from cajex.web.middleware import json_body, register_nav, workspace_view
from flask import Blueprint, g, jsonify, redirect, render_template, request, url_for

from cajex.errors import AppError
from cajex.identity import providers

bp = Blueprint("signin_settings", __name__)

METHODS = ("google", "apple", "github", "magic_link")


def init_app(app) -> None:
    register_nav(app, "Sign-in", "signin_settings.page", "workspace.settings")


def _current() -> list[str]:
    row = g.db.execute(
        "select methods from cajex.workspace_signin_methods"
        " where workspace_id = cajex.current_workspace_id()"
    ).fetchone()
    return list(row["methods"]) if row else list(METHODS)


def _save(methods) -> list[str]:
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise AppError(422, "invalid", "methods must be a list of names", "methods")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise AppError(
            422, "invalid", f"unknown sign-in method {unknown[0][:40]}", "methods"
        )
    g.db.execute("select cajex.set_signin_methods(%s)", (sorted(set(methods)),))
    return sorted(set(methods))


@bp.get("/w/<slug>/settings/signin")
@workspace_view("workspace.settings")
def page():
    return render_template(
        "signin/workspace_methods.html",
        chosen=_current(),
        methods=[(m, providers.LABELS[m]) for m in METHODS],
        mine=g.db.execute(
            "select s.auth_method from cajex.sessions s"
            " where s.id = (select c.session_id from cajex_private.context c)"
        ).fetchone(),
    )


@bp.post("/w/<slug>/settings/signin")
@workspace_view("workspace.settings")
def save_from_form():
    _save(request.form.getlist("methods"))
    return redirect(url_for("signin_settings.page", slug=g.workspace.workspace_slug))


@bp.get("/w/<slug>/api/v1/signin-methods")
@workspace_view("workspace.settings")
def api_get():
    return jsonify({"methods": _current()})


@bp.put("/w/<slug>/api/v1/signin-methods")
@workspace_view("workspace.settings")
def api_put():
    data = json_body({"methods"}, {"methods"})
    return jsonify({"methods": _save(data["methods"])})
