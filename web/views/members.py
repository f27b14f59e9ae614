"""Members: the members page, invitations (single, bulk, accept, decline,
revoke, resend), roles, removal, leaving and ownership transfer.

Every change is one SQL function call (db/functions/400_members.sql), which
checks the role, validates, writes and audits; this module turns forms and
JSON into those calls and their outcomes into pages.
"""

from __future__ import annotations

import uuid

from cajex.web.middleware import (
    json_body,
    parse_uuid,
    pool,
    register_nav,
    user_transaction,
    valid_slug,
    workspace_view,
)
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user

from cajex import branding, log, members
from cajex.errors import AppError

bp = Blueprint("members", __name__, url_prefix="/w/<slug>")
_logger = log.get("cajex.members")

OUTCOME_TEXT = {
    "invited": "Invited",
    "already_member": "Already a member",
    "already_invited": "Already invited",
    "invalid_address": "Invalid address",
    "invalid_role": "Invalid role (admin, member or viewer; only the owner invites admins)",
    "over_seat_limit": "Over the seat limit of the plan",
}


def init_app(app) -> None:
    register_nav(app, "Members", "members.page", "member.read")
    app.jinja_env.globals.setdefault("invitation_outcome_text", OUTCOME_TEXT)


def _public_url() -> str:
    return current_app.extensions["cajex.settings"].public_url


def _members():
    return g.db.execute(
        "select m.user_id, u.email, u.display_name, m.role, m.status, m.created_at"
        " from cajex.memberships m join cajex.users u on u.id = m.user_id"
        " where m.workspace_id = %s"
        " order by case m.role when 'owner' then 0 when 'admin' then 1 when 'member' then 2 else 3 end,"
        " u.email",
        (g.workspace.workspace_id,),
    ).fetchall()


def _invitations():
    return g.db.execute(
        "select id, email, role, created_at, expires_at, expires_at <= now() as expired"
        " from cajex.invitations where status = 'pending' order by created_at desc limit 500"
    ).fetchall()


def _seats():
    return g.db.execute(
        "select cajex.context_seat_count() as used, p.max_seats, p.name as plan"
        " from cajex.workspaces w join cajex.plans p on p.code = w.plan where w.id = %s",
        (g.workspace.workspace_id,),
    ).fetchone()


# -- the page ------------------------------------------------------------------


@bp.get("/members")
@workspace_view("member.read")
def page():
    return render_template(
        "members/index.html",
        members=_members(),
        invitations=_invitations() if g.workspace.can("member.invite") else [],
        seats=_seats(),
        me=uuid.UUID(current_user.id),
        max_rows=members.MAX_BULK_ROWS,
        chunk=members.CHUNK_SIZE,
    )


@bp.get("/api/v1/members")
@workspace_view("member.read")
def api_list():
    return jsonify(items=[
        {"user_id": str(m["user_id"]), "email": m["email"], "role": m["role"], "status": m["status"]}
        for m in _members()
    ])


# -- inviting --------------------------------------------------------------------


def _invite_one(email: str, role: str) -> dict:
    token, digest = members.new_token()
    row = g.db.execute(
        "select outcome, invitation_id from cajex.invite_member(%s, %s, %s, %s)",
        (email, role, digest, members.accept_link(_public_url(), g.workspace.workspace_slug, token)),
    ).fetchone()
    _logger.info("invitation.sent", outcome=row["outcome"], invitation_id=str(row["invitation_id"] or ""),
                 workspace_id=str(g.workspace.workspace_id))
    return {"outcome": row["outcome"], "invitation_id": str(row["invitation_id"]) if row["invitation_id"] else None}


@bp.post("/members/invite")
@workspace_view("member.invite")
def invite_form():
    result = _invite_one(request.form.get("email", ""), request.form.get("role", "member"))
    outcome = result["outcome"]
    flash(OUTCOME_TEXT.get(outcome, outcome) + ".", "info" if outcome == "invited" else "error")
    return redirect(url_for("members.page", slug=g.workspace.workspace_slug))


@bp.post("/api/v1/invitations")
@workspace_view("member.invite")
def api_invite():
    data = json_body({"email", "role"}, {"email"})
    if not isinstance(data["email"], str) or not isinstance(data.get("role", "member"), str):
        raise AppError(422, "invalid", "email and role are strings")
    result = _invite_one(data["email"], data.get("role", "member"))
    status = {"invited": 201, "already_member": 409, "already_invited": 409, "over_seat_limit": 402}.get(
        result["outcome"], 422)
    return jsonify(result), status


def _bulk_rows_from_request() -> list[members.BulkRow]:
    upload = request.files.get("file")
    default_role = request.form.get("role", "member")
    if upload is not None and upload.filename:
        limit = members.MAX_BULK_ROWS * 400
        raw = upload.read(limit + 1)
        if len(raw) > limit:
            # Cut off, a file would lose its last rows silently: refuse it.
            raise members.BulkListError(
                "too_large", f"a list has at most {members.MAX_BULK_ROWS} rows; split the file and upload the parts")
        return members.parse_bulk(raw, default_role)
    return members.parse_bulk(request.form.get("list", ""), default_role)


@bp.post("/members/bulk")
@workspace_view("member.invite")
def bulk_form():
    """Paste or CSV upload, processed in one request (the page's script sends
    large lists in chunks to the JSON endpoint instead, to show progress)."""
    try:
        rows = _bulk_rows_from_request()
    except members.BulkListError as err:
        raise AppError(422, err.code, err.message, "list") from None
    # One call for the whole list: it is one transaction either way, and the
    # function checks and writes a list in a few statements.
    results = members.invite_rows(g.db, _public_url(), g.workspace.workspace_slug, rows)
    _logger.info("invitation.bulk", rows=len(rows), invited=sum(r["outcome"] == "invited" for r in results),
                 workspace_id=str(g.workspace.workspace_id))
    if request.form.get("format") == "csv":
        return Response(
            members.results_csv(results),
            mimetype="text/csv",
            headers={"Content-Disposition": 'attachment; filename="invitations.csv"'},
        )
    return render_template("members/bulk_results.html", results=results,
                           summary=_summary(results))


def _summary(results: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


@bp.post("/api/v1/invitations/bulk")
@workspace_view("member.invite")
def api_bulk():
    """One chunk of a bulk list: {"rows": [{"line", "email", "role"}]}."""
    data = json_body({"rows"}, {"rows"})
    rows = data["rows"]
    if not isinstance(rows, list):
        raise AppError(422, "invalid", "rows is a list", "rows")
    if len(rows) > members.MAX_BULK_ROWS:
        raise AppError(422, "too_many_rows", f"a list has at most {members.MAX_BULK_ROWS} rows", "rows")
    parsed = []
    for i, r in enumerate(rows, start=1):
        if not isinstance(r, dict) or not isinstance(r.get("email", ""), str) \
                or not isinstance(r.get("role", "member"), str):
            raise AppError(422, "invalid", "each row is {line, email, role}", "rows")
        line = r.get("line", i)
        parsed.append(members.BulkRow(line if isinstance(line, int) and 0 < line < 10**9 else i, r.get("email", "")[:400],
                                      (r.get("role") or "member")[:40].lower()))
    results = members.invite_rows(g.db, _public_url(), g.workspace.workspace_slug, parsed)
    return jsonify(results=results, summary=_summary(results))


@bp.post("/members/invitations/<invitation_id>/revoke")
@workspace_view("member.invite")
def revoke(invitation_id):
    g.db.execute("select cajex.revoke_invitation(%s)", (parse_uuid(invitation_id, "invitation"),))
    flash("Invitation withdrawn.", "info")
    return redirect(url_for("members.page", slug=g.workspace.workspace_slug))


@bp.post("/members/invitations/<invitation_id>/resend")
@workspace_view("member.invite")
def resend(invitation_id):
    token, digest = members.new_token()
    g.db.execute(
        "select cajex.resend_invitation(%s, %s, %s)",
        (parse_uuid(invitation_id, "invitation"), digest,
         members.accept_link(_public_url(), g.workspace.workspace_slug, token)),
    )
    flash("Invitation sent again; the earlier link no longer works.", "info")
    return redirect(url_for("members.page", slug=g.workspace.workspace_slug))


# -- roles, removal, leaving, ownership -------------------------------------------------


@bp.post("/members/<user_id>/role")
@workspace_view("member.change_role")
def change_role(user_id):
    g.db.execute("select cajex.change_member_role(%s, %s)",
                 (parse_uuid(user_id, "member"), request.form.get("role", "")))
    flash("Role changed.", "info")
    return redirect(url_for("members.page", slug=g.workspace.workspace_slug))


@bp.post("/members/<user_id>/remove")
@workspace_view("member.remove")
def remove(user_id):
    g.db.execute("select cajex.remove_member(%s)", (parse_uuid(user_id, "member"),))
    flash("Member removed.", "info")
    return redirect(url_for("members.page", slug=g.workspace.workspace_slug))


@bp.post("/members/leave")
@workspace_view()
def leave():
    g.db.execute("select cajex.leave_workspace()")
    session.pop("last_workspace", None)
    flash("You left the workspace.", "info")
    return redirect(url_for("home.index"))


@bp.post("/members/transfer")
@workspace_view("ownership.transfer")
def transfer():
    if request.form.get("confirm") != g.workspace.workspace_slug:
        raise AppError(422, "confirm", "type the workspace address to confirm", "confirm")
    g.db.execute("select cajex.transfer_ownership(%s)", (parse_uuid(request.form.get("user_id", ""), "member"),))
    flash("Ownership transferred. You are now an admin.", "info")
    return redirect(url_for("members.page", slug=g.workspace.workspace_slug))


# -- accepting ------------------------------------------------------------------
#
# The link leads here, signed in or not. Without a session the token is kept
# in the Flask session and the sign-in page is shown with `next` pointing back
# here; as sign-in rotates the session (session fixation), the token also
# travels in that `next` link, so any sign-in method that honours `next`
# brings the person back to finish.


PENDING_KEY = "pending_invitation"


def _preview(slug: str, token: str):
    if not valid_slug(slug) or not members.valid_token(token):
        return None
    with pool().connection() as conn:
        return conn.execute(
            "select * from cajex.invitation_preview(%s, %s)", (slug, members.token_hash(token))
        ).fetchone()


def _sign_in_url(slug: str, token: str) -> str:
    """The workspace's own sign-in page (its methods, its branding), coming
    back to the invitation afterwards."""
    return url_for("signin.workspace_login", slug=slug, next=url_for("members.join", slug=slug, token=token))


@bp.get("/join/<token>")
def join(slug, token):
    invitation = _preview(slug, token)
    if invitation is None:
        raise AppError(404, "not_found", "this invitation does not exist")
    with pool().connection() as conn:
        brand = branding.for_slug(conn, slug)
    if not current_user.is_authenticated:
        session[PENDING_KEY] = {"slug": slug, "token": token}
        return render_template("members/join.html", invitation=invitation, token=token, signed_in=False,
                               brand=brand, email=None,
                               login_url=_sign_in_url(slug, token))
    try:
        with user_transaction() as (conn, opened):
            email = conn.execute("select email from cajex.users where id = %s", (opened.user_id,)).fetchone()
    except Exception:  # a dead session: treat as signed out
        email = None
    return render_template("members/join.html", invitation=invitation, token=token, signed_in=True,
                           brand=brand, email=email["email"] if email else None, login_url=None)


@bp.post("/join/<token>/accept")
def accept(slug, token):
    if not members.valid_token(token) or not valid_slug(slug):
        raise AppError(404, "not_found", "this invitation does not exist")
    if not current_user.is_authenticated:
        session[PENDING_KEY] = {"slug": slug, "token": token}
        return redirect(_sign_in_url(slug, token))
    from cajex.web.middleware import _Unauthorized

    try:
        with user_transaction() as (conn, _):
            row = conn.execute("select * from cajex.accept_invitation(%s, %s)",
                               (slug, members.token_hash(token))).fetchone()
    except _Unauthorized:
        return current_app.login_manager.unauthorized()
    session.pop(PENDING_KEY, None)
    _logger.info("invitation.accepted", workspace_id=str(row["workspace_id"]))
    flash("Welcome! You joined the workspace.", "info")
    return redirect(url_for("projects.page", slug=row["workspace_slug"]))


@bp.post("/join/<token>/decline")
def decline(slug, token):
    if not members.valid_token(token) or not valid_slug(slug):
        raise AppError(404, "not_found", "this invitation does not exist")
    with pool().connection() as conn:
        conn.execute("select cajex.decline_invitation(%s, %s)", (slug, members.token_hash(token)))
    session.pop(PENDING_KEY, None)
    return render_template("members/declined.html")
