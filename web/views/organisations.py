"""Many workspaces: the organisation page and moving projects between the
workspaces of one organisation.

An organisation owner sees the names, plans, states and seat counts of the
organisation's workspaces (cajex.organisation_workspaces), never their data:
opening a workspace still needs a membership there. Moving projects is one
call to cajex.move_projects, which checks project.move in both workspaces.
"""

from __future__ import annotations

from cajex.web.middleware import (
    json_body,
    parse_uuid,
    register_nav,
    user_view,
    workspace_view,
)
from flask import (
    Blueprint,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from cajex import log
from cajex.errors import AppError

bp = Blueprint("organisations", __name__)
_logger = log.get("cajex.organisations")
MAX_MOVE = 1000


def init_app(app) -> None:
    register_nav(app, "Move projects", "organisations.move_page", "project.move")

    @app.context_processor
    def _organisations():
        def my_organisations():
            conn = g.get("db")
            if "my_organisations" not in g:
                g.my_organisations = (
                    conn.execute("select * from cajex.my_organisations() where role = 'owner'").fetchall()
                    if conn is not None
                    else []
                )
            return g.my_organisations

        return {"my_organisations": my_organisations}


def _owned_organisation(organisation_id: str) -> dict:
    """The organisation if the signed-in user owns it; 404 otherwise (the same
    answer for one that does not exist)."""
    org = g.db.execute(
        "select organisation_id, name from cajex.my_organisations()"
        " where organisation_id = %s and role = 'owner'",
        (parse_uuid(organisation_id, "organisation"),),
    ).fetchone()
    if org is None:
        raise AppError(404, "not_found", "not found")
    return org


def _workspaces(organisation_id) -> list[dict]:
    member_of = {w["workspace_id"] for w in g.db.execute("select workspace_id from cajex.my_workspaces()")}
    rows = g.db.execute(
        "select workspace_id, slug, name, plan, status, seats from cajex.organisation_workspaces(%s)",
        (organisation_id,),
    ).fetchall()
    return [dict(r, member=r["workspace_id"] in member_of) for r in rows]


@bp.get("/organisations/<organisation_id>")
@user_view
def page(organisation_id):
    org = _owned_organisation(organisation_id)
    return render_template("organisations/page.html", organisation=org,
                           workspaces=_workspaces(org["organisation_id"]))


@bp.get("/api/v1/organisations/<organisation_id>/workspaces")
@user_view
def api_workspaces(organisation_id):
    org = _owned_organisation(organisation_id)
    return jsonify(items=[
        {"id": str(w["workspace_id"]), "slug": w["slug"], "name": w["name"], "plan": w["plan"],
         "status": w["status"], "seats": w["seats"]}
        for w in _workspaces(org["organisation_id"])
    ])


# -- moving projects -----------------------------------------------------------


def _move(target: str, ids: list) -> int:
    if not isinstance(target, str) or not target or len(target) > 64:
        raise AppError(422, "invalid", "choose the workspace to move the projects to", "target")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_MOVE:
        raise AppError(422, "invalid", f"choose 1 to {MAX_MOVE} projects", "project_ids")
    project_ids = [parse_uuid(i if isinstance(i, str) else "", "project") for i in ids]
    moved = g.db.execute("select cajex.move_projects(%s, %s) as n", (target, project_ids)).fetchone()["n"]
    _logger.info("projects.moved", workspace_id=str(g.workspace.workspace_id), count=moved)
    return moved


@bp.get("/w/<slug>/projects/move")
@workspace_view("project.move")
def move_page():
    projects = g.db.execute("select id, name, status from cajex.projects order by name limit 1000").fetchall()
    targets = g.db.execute("select slug, name from cajex.project_move_targets()").fetchall()
    return render_template("organisations/move.html", projects=projects, targets=targets)


@bp.post("/w/<slug>/projects/move")
@workspace_view("project.move")
def move_form():
    target = request.form.get("target", "")
    moved = _move(target, request.form.getlist("project_id"))
    flash(f"Moved {moved} project{'s' if moved != 1 else ''} to {target}.", "info")
    return redirect(url_for("projects.page", slug=g.workspace.workspace_slug))


@bp.post("/w/<slug>/api/v1/projects/move")
@workspace_view("project.move")
def api_move():
    data = json_body({"target", "project_ids"}, {"target", "project_ids"})
    return jsonify(moved=_move(data["target"], data["project_ids"]), target=data["target"])
