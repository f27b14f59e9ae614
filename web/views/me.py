"""The signed-in user: /api/v1/me, and PostgREST tokens for a workspace."""

from __future__ import annotations

from cajex.web.middleware import user_view, workspace_view
from flask import Blueprint, current_app, g, jsonify
from flask_login import current_user

from cajex import jwt

bp = Blueprint("me", __name__)


@bp.get("/api/v1/me")
@user_view
def me():
    user = g.db.execute(
        "select id, email, display_name from cajex.users where id = cajex.current_user_id()"
    ).fetchone()
    workspaces = g.db.execute("select * from cajex.my_workspaces()").fetchall()
    return jsonify(
        id=str(user["id"]),
        email=user["email"],
        display_name=user["display_name"],
        workspaces=[
            {
                "id": str(w["workspace_id"]),
                "slug": w["slug"],
                "name": w["name"],
                "role": w["role"],
                "plan": w["plan"],
            }
            for w in workspaces
        ],
    )


@bp.post("/w/<slug>/api/v1/postgrest-token")
@workspace_view()
def postgrest_token():
    """A five-minute JWT that lets PostgREST act as this member here."""
    settings = current_app.extensions["cajex.settings"]
    token = jwt.postgrest_token(
        settings.jwt_secret,
        current_user.id,
        current_user.session_id,
        str(g.workspace.workspace_id),
    )
    return jsonify(token=token, expires_in=300, role="cajex_api")
