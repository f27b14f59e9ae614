"""Deleting a workspace (its owner, after typing its name), the owner's
list of deleted workspaces, and restoring one in a click."""

from __future__ import annotations

from cajex.web.middleware import (
    json_body,
    parse_uuid,
    register_nav,
    user_view,
    workspace_view,
)
from flask import Blueprint, g, jsonify, redirect, render_template, request, url_for

from cajex import retention
from cajex.errors import AppError

bp = Blueprint("workspace_admin", __name__)


def init_app(app) -> None:
    register_nav(
        app, "Delete workspace", "workspace_admin.delete_page", "workspace.delete"
    )


def _delete(confirm_name) -> str:
    if not isinstance(confirm_name, str) or not confirm_name.strip():
        raise AppError(
            422, "invalid", "type the workspace's name to delete it", "confirm_name"
        )
    purge_after = g.db.execute(
        "select cajex.delete_workspace(%s, %s) as purge_after",
        (confirm_name, retention.retention_days()),
    ).fetchone()["purge_after"]
    return purge_after.isoformat()


@bp.get("/w/<slug>/settings/delete")
@workspace_view("workspace.delete")
def delete_page():
    name = g.db.execute(
        "select name from cajex.workspaces where id = cajex.current_workspace_id()"
    ).fetchone()["name"]
    return render_template(
        "workspace_admin/delete.html", name=name, days=retention.retention_days()
    )


@bp.post("/w/<slug>/settings/delete")
@workspace_view("workspace.delete")
def delete_from_form():
    _delete(request.form.get("confirm_name"))
    return redirect(url_for("workspace_admin.deleted_page"))


@bp.post("/w/<slug>/api/v1/workspace/delete")
@workspace_view("workspace.delete")
def api_delete():
    data = json_body({"confirm_name"}, {"confirm_name"})
    return jsonify(status="deleted", purge_after=_delete(data["confirm_name"]))


def _deleted(conn) -> list[dict]:
    return [
        {
            "id": str(r["workspace_id"]),
            "slug": r["slug"],
            "name": r["name"],
            "deleted_at": r["deleted_at"].isoformat(),
            "purge_after": r["purge_after"].isoformat(),
        }
        for r in conn.execute("select * from cajex.my_deleted_workspaces()").fetchall()
    ]


@bp.get("/workspaces/deleted")
@user_view
def deleted_page():
    return render_template("workspace_admin/deleted.html", workspaces=_deleted(g.db))


@bp.get("/api/v1/workspaces/deleted")
@user_view
def api_deleted():
    return jsonify(items=_deleted(g.db))


def _restore(workspace_id: str) -> str:
    wid = parse_uuid(workspace_id, "workspace id")
    return g.db.execute(
        "select cajex.restore_workspace(%s) as slug", (wid,)
    ).fetchone()["slug"]


@bp.post("/workspaces/deleted/<workspace_id>/restore")
@user_view
def restore_from_form(workspace_id):
    slug = _restore(workspace_id)
    return redirect(url_for("projects.page", slug=slug))


@bp.post("/api/v1/workspaces/<workspace_id>/restore")
@user_view
def api_restore(workspace_id):
    return jsonify(status="active", slug=_restore(workspace_id))
