"""The front door: the home page, the sign-in page and sign-out."""

from __future__ import annotations

from cajex.web import auth
from cajex.web.middleware import signin_pool, user_view
from flask import (
    Blueprint,
    redirect,
    render_template,
    session,
    url_for,
)
from flask_login import current_user

bp = Blueprint("home", __name__)


@bp.get("/")
@user_view
def index():
    from flask import g

    workspaces = g.db.execute("select * from cajex.my_workspaces()").fetchall()
    last = session.get("last_workspace")
    if last and any(w["slug"] == last for w in workspaces):
        return redirect(url_for("projects.page", slug=last))
    # A new browser: the workspace this account opened last, if still its own.
    remembered = g.db.execute(
        "select last_workspace_id from cajex.user_last_workspaces"
    ).fetchone()
    for w in workspaces:
        if remembered and w["workspace_id"] == remembered["last_workspace_id"]:
            return redirect(url_for("projects.page", slug=w["slug"]))
    if len(workspaces) == 1:
        return redirect(url_for("projects.page", slug=workspaces[0]["slug"]))
    setup = g.db.execute("select step from cajex.onboarding_drafts").fetchone()
    return render_template("home.html", workspaces=workspaces, setup=setup)


@bp.get("/login")
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    from cajex.web.views.signin import render_login

    return render_login()


@bp.post("/logout")
def logout():
    with signin_pool().connection() as conn:
        auth.end_session(conn)
    return redirect(url_for("home.login"))
