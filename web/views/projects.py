"""Projects: the JSON API and the projects page of a workspace."""

from __future__ import annotations

import base64
import datetime as dt
import json

from cajex.web.middleware import json_body, parse_uuid, workspace_view
from flask import (
    Blueprint,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from cajex.errors import AppError

bp = Blueprint("projects", __name__, url_prefix="/w/<slug>")

FIELDS = {"name", "description", "tags", "status"}
MAX_LIMIT = 100

_COLUMNS = "id, name, description, tags, status, created_by, created_at, updated_at"


def to_json(row: dict) -> dict:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "tags": row["tags"],
        "status": row["status"],
        "created_by": str(row["created_by"]) if row["created_by"] else None,
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _encode_cursor(row: dict) -> str:
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str):
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return dt.datetime.fromisoformat(created_at), parse_uuid(row_id)
    except (ValueError, TypeError, AppError):
        raise AppError(
            400, "invalid_cursor", "the cursor is not one this API gave out", "cursor"
        ) from None


def list_page(conn, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """Newest first, keyset-paginated; RLS scopes it to the open workspace.

    The page size goes into the statement as a number, not a parameter: with
    a parameter the server would plan the query again on every request (a
    plan for a known limit looks cheaper to it than the general one), which
    costs more than running it.
    """
    fetch = int(limit) + 1  # an int: nothing else can reach the text
    if cursor:
        created_at, row_id = _decode_cursor(cursor)
        rows = conn.execute(
            f"select {_COLUMNS} from cajex.projects"
            " where (created_at, id) < (%s, %s)"
            f" order by created_at desc, id desc limit {fetch}",
            (created_at, row_id),
        ).fetchall()
    else:
        rows = conn.execute(
            f"select {_COLUMNS} from cajex.projects"
            f" order by created_at desc, id desc limit {fetch}"
        ).fetchall()
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _limit() -> int:
    raw = request.args.get("limit", "20") if request.query_string else "20"
    # ASCII digits, few of them: str.isdigit() takes '²', which int() refuses.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not (
        1 <= int(raw) <= MAX_LIMIT
    ):
        raise AppError(
            400,
            "invalid_limit",
            f"limit is a whole number from 1 to {MAX_LIMIT}",
            "limit",
        )
    return int(raw)


def _check_fields(data: dict) -> None:
    if "name" in data and not isinstance(data["name"], str):
        raise AppError(422, "invalid", "name is a string", "name")
    if "description" in data and not isinstance(data["description"], str):
        raise AppError(422, "invalid", "description is a string", "description")
    if "status" in data and not isinstance(data["status"], str):
        raise AppError(422, "invalid", "status is a string", "status")
    if "tags" in data and (
        not isinstance(data["tags"], list)
        or not all(isinstance(t, str) for t in data["tags"])
    ):
        raise AppError(422, "invalid", "tags is a list of strings", "tags")


@bp.get("/api/v1/projects")
@workspace_view("project.read")
def api_list():
    cursor = request.args.get("cursor") if request.query_string else None
    items, next_cursor = list_page(g.db, _limit(), cursor or None)
    return jsonify(items=[to_json(r) for r in items], next_cursor=next_cursor)


@bp.post("/api/v1/projects")
@workspace_view("project.write")
def api_create():
    data = json_body(FIELDS, {"name"})
    _check_fields(data)
    row = g.db.execute(
        f"select {_COLUMNS} from cajex.create_project(%s, %s, %s, %s)",
        (
            data["name"],
            data.get("description", ""),
            data.get("tags", []),
            data.get("status", "active"),
        ),
    ).fetchone()
    return jsonify(to_json(row)), 201


@bp.get("/api/v1/projects/<project_id>")
@workspace_view("project.read")
def api_get(project_id):
    pid = parse_uuid(project_id, "project id")
    row = g.db.execute(
        f"select {_COLUMNS} from cajex.projects where id = %s", (pid,)
    ).fetchone()
    if row is None:
        raise AppError(404, "not_found", "project not found")
    return jsonify(to_json(row))


@bp.patch("/api/v1/projects/<project_id>")
@workspace_view("project.write")
def api_update(project_id):
    pid = parse_uuid(project_id, "project id")
    data = json_body(FIELDS)
    _check_fields(data)
    row = g.db.execute(
        f"select {_COLUMNS} from cajex.update_project(%s, %s::jsonb)",
        (pid, json.dumps(data)),
    ).fetchone()
    return jsonify(to_json(row))


@bp.delete("/api/v1/projects/<project_id>")
@workspace_view("project.write")
def api_delete(project_id):
    pid = parse_uuid(project_id, "project id")
    g.db.execute("select cajex.delete_project(%s)", (pid,))
    return "", 204


# -- HTML ---------------------------------------------------------------------


@bp.get("/projects")
@workspace_view("project.read")
def page():
    if session.get("last_workspace") != g.workspace.workspace_slug:
        # Switching workspace: remembered for the account too (any device).
        g.db.execute("select cajex.remember_workspace()")
        session["last_workspace"] = g.workspace.workspace_slug
    items, next_cursor = list_page(g.db, 50, request.args.get("cursor") or None)
    can_write = g.workspace.can("project.write")
    # The starter tags chosen in the onboarding wizard, offered on the form.
    starter_tags = g.db.execute(
        "select project_tags from cajex.workspace_defaults()"
    ).fetchone()
    return render_template(
        "projects.html",
        projects=items,
        next_cursor=next_cursor,
        can_write=can_write,
        starter_tags=starter_tags["project_tags"] if starter_tags else [],
    )


@bp.post("/projects")
@workspace_view("project.write")
def create_from_form():
    tags = [t.strip() for t in (request.form.get("tags") or "").split(",") if t.strip()]
    g.db.execute(
        "select cajex.create_project(%s, %s, %s, 'active')",
        (request.form.get("name", ""), request.form.get("description", ""), tags),
    )
    return redirect(url_for("projects.page", slug=g.workspace.workspace_slug))


@bp.get("/")
@workspace_view()
def workspace_home():
    return redirect(url_for("projects.page", slug=g.workspace.workspace_slug))
