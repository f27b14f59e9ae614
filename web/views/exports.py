"""Data export: the export page, its JSON API, and the download endpoint
every download link points at (the local folder's files are served from it;
S3 objects through a redirect to a short-lived presigned GET)."""

from __future__ import annotations

import uuid

from cajex.web.middleware import (
    parse_uuid,
    pool,
    register_nav,
    settings,
    workspace_view,
)
from flask import (
    Blueprint,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)

from cajex import storage
from cajex.errors import AppError

bp = Blueprint("exports", __name__)

_COLUMNS = (
    "id, status, progress, row_counts, objects, schema_version, attempts, created_at,"
    " started_at, finished_at, expires_at"
)
_FORMATS = ("json", "csv", "manifest")


def init_app(app) -> None:
    register_nav(app, "Export", "exports.page", "export.request")


def _store():
    ext = current_app.extensions
    if "cajex.export_storage" not in ext:
        ext["cajex.export_storage"] = storage.from_settings(settings())
    return ext["cajex.export_storage"]


def to_json(row: dict, with_links: bool = True) -> dict:
    """An export for the page and the API; ready ones carry fresh download links."""
    body = {
        "id": str(row["id"]),
        "status": row["status"],
        "progress": row["progress"],
        "rows": row["row_counts"],
        "schema_version": row["schema_version"],
        "attempts": row["attempts"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "expires_at": row["expires_at"].isoformat() if row["expires_at"] else None,
        "files": {},
    }
    if row["status"] == "ready":
        ws = str(g.workspace.workspace_id)
        for fmt in _FORMATS:
            obj = (row["objects"] or {}).get(fmt)
            if obj:
                body["files"][fmt] = {
                    "sha256": obj["sha256"],
                    "bytes": obj.get("bytes"),
                    "url": _store().link(ws, obj["key"]) if with_links else None,
                }
    return body


def _list(conn) -> list[dict]:
    return conn.execute(
        f"select {_COLUMNS} from cajex.exports order by created_at desc limit 20"
    ).fetchall()


@bp.get("/w/<slug>/exports")
@workspace_view("export.request")
def page():
    items = [to_json(r) for r in _list(g.db)]
    busy = any(i["status"] in ("queued", "running") for i in items)
    return render_template("exports/page.html", exports=items, busy=busy)


@bp.post("/w/<slug>/exports")
@workspace_view("export.request")
def request_from_form():
    g.db.execute("select cajex.request_export()")
    return redirect(url_for("exports.page", slug=g.workspace.workspace_slug))


@bp.get("/w/<slug>/api/v1/exports")
@workspace_view("export.request")
def api_list():
    return jsonify(items=[to_json(r) for r in _list(g.db)])


@bp.post("/w/<slug>/api/v1/exports")
@workspace_view("export.request")
def api_request():
    row = g.db.execute(f"select {_COLUMNS} from cajex.request_export()").fetchone()
    return jsonify(to_json(row)), 202


@bp.get("/w/<slug>/api/v1/exports/<export_id>")
@workspace_view("export.request")
def api_get(export_id):
    eid = parse_uuid(export_id, "export id")
    row = g.db.execute(
        f"select {_COLUMNS} from cajex.exports where id = %s", (eid,)
    ).fetchone()
    if row is None:
        raise AppError(404, "not_found", "export not found")
    return jsonify(to_json(row))


@bp.get("/exports/download")
def download():
    """Serve an object for a signed link: the signature, the expiry, the key
    under the link's workspace, and a live ready export of that workspace
    holding the key are all checked on every use; no sign-in is needed.
    With S3 the answer is a redirect to a presigned GET of a minute, so
    nothing outside this check grants access for longer."""
    store = _store()
    args = request.args
    try:
        key = storage.verify_link(
            settings().secret_key,
            args.get("w", ""),
            args.get("k", ""),
            args.get("e", ""),
            args.get("s", ""),
        )
    except storage.LinkError as exc:
        raise AppError(exc.status, exc.code, str(exc)) from None
    workspace_id = uuid.UUID(args["w"])
    with pool().connection() as conn:
        allowed = conn.execute(
            "select cajex_private.export_download_allowed(%s, %s) as ok",
            (workspace_id, key),
        ).fetchone()["ok"]
        conn.rollback()
    if not allowed or not store.exists(key):
        # Deleted workspace, expired or unknown export: all look the same.
        raise AppError(404, "not_found", "this export is no longer available")
    if isinstance(store, storage.S3Storage):
        response = redirect(store.presigned(workspace_id, key), code=302)
        response.headers["Cache-Control"] = "no-store"
        return response
    name = key.rsplit("/", 1)[-1]
    mimetype = "application/zip" if name.endswith(".zip") else "application/json"
    response = send_file(
        store.open(key),
        mimetype=mimetype,
        as_attachment=True,
        download_name=name,
        conditional=False,
    )
    response.headers["Cache-Control"] = "no-store"
    return response
