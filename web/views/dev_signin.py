"""Development sign-in: pick a demo user. Registered only in development
mode (`cajex up`); production never registers this module, whatever its
settings say."""

from __future__ import annotations

import json

from cajex.web import auth
from cajex.web.middleware import pool
from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)

development_only = True
bp = Blueprint("dev_signin", __name__, url_prefix="/dev")


def _demo_users() -> list[dict]:
    settings = current_app.extensions["cajex.settings"]
    path = settings.data_dir / "demo.json"
    if not path.exists():
        return []
    return json.loads(path.read_text()).get("users", [])


@bp.get("/login")
def page():
    return render_template(
        "dev_login.html", users=_demo_users(), next=request.args.get("next", "")
    )


@bp.post("/login")
def sign_in():
    email = (request.form.get("email") or "").strip().lower()
    if not email or len(email) > 320:
        abort(400)
    with pool().connection() as conn:
        user_id = conn.execute(
            "select cajex_private.ensure_user(%s) as id", (email,)
        ).fetchone()["id"]
        auth.start_session(conn, user_id, "development")
    nxt = request.form.get("next", "")
    return redirect(
        nxt
        if nxt.startswith("/") and not nxt.startswith("//")
        else url_for("home.index")
    )
