"""The signed-in user's own pages: linked sign-in methods and sessions."""

from __future__ import annotations

from cajex.web.middleware import parse_uuid, settings, user_view
from flask import Blueprint, g, redirect, render_template, session, url_for
from flask_login import current_user, logout_user

from cajex.identity import providers

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.get("/linked")
@user_view
def linked():
    identities = g.db.execute(
        "select id, provider, email, created_at, last_used_at from cajex.user_identities"
        " order by created_at"
    ).fetchall()
    configured = providers.configured(settings())
    have = {i["provider"] for i in identities}
    return render_template(
        "account/linked.html",
        identities=identities,
        labels=providers.LABELS,
        can_add=[n for n in configured if n not in have],
    )


@bp.post("/linked/<identity_id>/remove")
@user_view
def remove_identity(identity_id: str):
    g.db.execute("select cajex.remove_identity(%s)", (parse_uuid(identity_id, "identity"),))
    return redirect(url_for("account.linked"))


@bp.get("/sessions")
@user_view
def sessions():
    rows = g.db.execute(
        "select id, auth_method, user_agent, created_at, last_seen_at, revoked_at"
        " from cajex.sessions where revoked_at is null"
        " and idle_expires_at > now() and absolute_expires_at > now()"
        " order by last_seen_at desc"
    ).fetchall()
    return render_template("account/sessions.html", sessions=rows,
                           current=current_user.session_id)


@bp.post("/sessions/<session_id>/end")
@user_view
def end_session(session_id: str):
    sid = parse_uuid(session_id, "session")
    g.db.execute("select cajex.end_my_session(%s)", (sid,))
    if str(sid) == current_user.session_id:
        g.db.commit()
        logout_user()
        session.clear()
        return redirect(url_for("home.login"))
    return redirect(url_for("account.sessions"))


@bp.post("/sessions/end-all")
@user_view
def end_all():
    g.db.execute("select cajex.end_all_my_sessions()")
    g.db.commit()
    logout_user()
    session.clear()
    return redirect(url_for("home.login"))
