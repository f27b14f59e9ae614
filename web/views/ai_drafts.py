"""AI drafts of a project (cajex.ai.drafts): a page offering a project summary
or a decision record, and the same as JSON. Each draft goes through the one
gateway and is shown with its token cost; nothing is stored.

The project is read in the view's own transaction (RLS: the open workspace
only); the gateway then runs its two short transactions on connections of
its own (cajex.web.views.ai.request_scope).
"""

from __future__ import annotations

from cajex.web.middleware import json_body, parse_uuid, workspace_view
from cajex.web.views.ai import gateway, request_scope
from flask import Blueprint, g, jsonify, render_template, request

from cajex.ai import drafts
from cajex.ai import settings as ai_settings
from cajex.errors import AppError

bp = Blueprint("ai_drafts", __name__, url_prefix="/w/<slug>")


def _project(project_id: str) -> dict:
    pid = parse_uuid(project_id, "project id")
    row = g.db.execute(
        "select id, name, description, tags, status from cajex.projects where id = %s",
        (pid,),
    ).fetchone()
    if row is None:
        raise AppError(404, "not_found", "project not found")
    return row


def _kind(value) -> str:
    # A JSON list or object is unhashable: `in` on the dict would raise.
    if not isinstance(value, str) or value not in drafts.KINDS:
        raise AppError(422, "invalid", "kind is summary or decision_record", "kind")
    return value


def _draft(project: dict, kind: str):
    return drafts.draft(gateway(), request_scope(), kind, project)


def _page(project, result=None, kind=None, error=None):
    return render_template(
        "ai/draft.html",
        project=project,
        status=ai_settings.status(g.db),
        labels=drafts.LABELS,
        kind=kind,
        result=result,
        error=error,
    ), (error.status if error else 200)


@bp.get("/projects/<project_id>/ai")
@workspace_view("ai.use")
def page(project_id):
    return _page(_project(project_id))


@bp.post("/projects/<project_id>/ai")
@workspace_view("ai.use")
def create_from_form(project_id):
    project = _project(project_id)
    kind = _kind(request.form.get("kind"))
    try:
        result = _draft(project, kind)
    except AppError as exc:
        return _page(project, kind=kind, error=exc)
    return _page(project, result=result, kind=kind)


@bp.post("/api/v1/projects/<project_id>/ai-drafts")
@workspace_view("ai.use")
def api_create(project_id):
    data = json_body({"kind"}, {"kind"})
    project = _project(project_id)
    result = _draft(project, _kind(data["kind"]))
    return jsonify(
        draft={
            **result.as_json(),
            "kind": data["kind"],
            "project_id": str(project["id"]),
        }
    ), 201
