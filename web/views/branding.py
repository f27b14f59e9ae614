"""Branding: a workspace's logo and colours, the page that changes them, and
the two public addresses every page, sign-in page and email loads them from.

The logo and the theme stylesheet are public on purpose: the sign-in page
and emails show them to people who are not signed in (an email client
fetches the logo without any cookie). They hold nothing but the image and
two colours. Everything else here runs in the workspace's verified context,
and changing anything needs `branding.change`, checked again in SQL.
"""

from __future__ import annotations

from cajex.web.middleware import (
    json_body,
    pool,
    register_nav,
    valid_slug,
    workspace_view,
)
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from cajex import branding, log
from cajex.errors import AppError

bp = Blueprint("branding", __name__, url_prefix="/w/<slug>")
_logger = log.get("cajex.branding")

IMMUTABLE, SHORT = branding.IMMUTABLE, branding.SHORT


def init_app(app) -> None:
    register_nav(app, "Branding", "branding.page", "branding.change")

    @app.context_processor
    def _branding_helpers():
        return {"workspace_branding": workspace_branding}


def workspace_branding() -> branding.Branding | None:
    """The open workspace's branding for base.html (one query per page)."""
    if "workspace_branding" not in g:
        workspace, conn = g.get("workspace"), g.get("db")
        g.workspace_branding = (
            branding.for_slug(conn, workspace.workspace_slug)
            if workspace is not None and conn is not None
            else None
        )
    return g.workspace_branding


def public_branding(slug: str) -> branding.Branding | None:
    """A workspace's branding before anyone signs in (sign-in and invitation
    pages); None for an address that names no active workspace."""
    if not valid_slug(slug):
        return None
    with pool().connection() as conn:
        return branding.for_slug(conn, slug)


# -- the public addresses --------------------------------------------------------


@bp.get("/branding/logo")
def logo(slug: str):
    if not valid_slug(slug):
        abort(404)
    with pool().connection() as conn:
        row = conn.execute("select * from cajex.public_logo(%s)", (slug,)).fetchone()
    if row is None:
        abort(404)
    etag = row["logo_sha256"]
    versioned = request.args.get("v") == etag[:16]
    headers = {
        # The bytes are a re-encoded image of exactly this type; nosniff
        # (set for every response) stops a browser from guessing otherwise,
        # and the sandbox CSP makes the address useless as a document.
        "Content-Type": row["logo_type"],
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Content-Disposition": "inline; filename=logo." + row["logo_type"].split("/")[1],
        "Cache-Control": IMMUTABLE if versioned else SHORT,
        # Webmail shows the logo from another origin.
        "Cross-Origin-Resource-Policy": "cross-origin",
        "ETag": f'"{etag}"',
    }
    if request.if_none_match.contains(etag):
        return Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    return Response(bytes(row["logo"]), headers=headers)


@bp.get("/branding/theme.css")
def theme(slug: str):
    """The workspace's colours as CSS custom properties (the CSP allows no
    inline style). An address that names no workspace gets the product's
    colours, as its sign-in page does not reveal which workspaces exist."""
    found = public_branding(slug)
    if found is None:
        found = branding.default_branding(slug)
    versioned = request.args.get("v") == found.version
    return Response(
        branding.stylesheet(found),
        mimetype="text/css",
        headers={"Cache-Control": IMMUTABLE if versioned else SHORT},
    )


# -- the settings page -----------------------------------------------------------


def _current() -> dict:
    row = g.db.execute(
        "select primary_colour, accent_colour, logo_type, logo_width, logo_height, updated_at"
        " from cajex.workspace_branding"
    ).fetchone()
    return dict(row) if row else {}


def _render(status: int = 200, primary: str | None = None, accent: str | None = None,
            checks: dict | None = None):
    current = _current()
    brand = workspace_branding()
    primary = primary or brand.primary
    accent = accent or brand.accent
    checks = checks or {"primary": branding.check_colour(primary), "accent": branding.check_colour(accent)}
    return render_template(
        "branding/settings.html",
        current=current,
        brand=brand,
        primary=primary,
        accent=accent,
        checks=checks,
        max_kb=branding.MAX_LOGO_BYTES // 1024,
        max_side=branding.MAX_SIDE,
    ), status


@bp.get("/settings/branding")
@workspace_view("branding.change")
def page():
    return _render()


def _colours(values: dict) -> tuple[str, str]:
    out = []
    for field in ("primary", "accent"):
        raw = values.get(field)
        colour = branding.normalise_colour(raw if isinstance(raw, str) else None)
        if colour is None:
            raise AppError(422, "invalid_colour", f"the {field} colour is written #rrggbb", field)
        out.append(colour)
    return out[0], out[1]


def _save_colours(primary: str, accent: str) -> None:
    g.db.execute("select cajex.set_brand_colours(%s, %s)", (primary, accent))
    _logger.info("branding.colours_changed", workspace_id=str(g.workspace.workspace_id))


@bp.post("/settings/branding/colours")
@workspace_view("branding.change")
def save_colours():
    """Save both colours. A colour that white text cannot be read on is not
    saved at once: the page warns, offers the nearest accessible shade, and
    saves the original only when the admin confirms it."""
    primary, accent = _colours(request.form)
    checks = {"primary": branding.check_colour(primary), "accent": branding.check_colour(accent)}
    if not all(c.ok for c in checks.values()) and request.form.get("keep_low_contrast") != "yes":
        return _render(422, primary, accent, checks)
    _save_colours(primary, accent)
    flash("Colours saved.", "info")
    return redirect(url_for("branding.page", slug=g.workspace.workspace_slug))


def _upload() -> bytes:
    upload = request.files.get("logo")
    if upload is not None and upload.filename:
        return upload.read(branding.MAX_LOGO_BYTES + 1)
    if request.mimetype in branding.FORMATS.values():
        return request.get_data()[: branding.MAX_LOGO_BYTES + 1]
    raise AppError(422, "empty", "choose an image file", "logo")


def _save_logo(raw: bytes) -> branding.Logo:
    try:
        clean = branding.process_logo(raw)
    except branding.LogoError as err:
        _logger.info("branding.logo_refused", reason=err.code,
                     workspace_id=str(g.workspace.workspace_id))
        raise AppError(422, err.code, err.message, "logo") from None
    g.db.execute("select cajex.set_logo(%s, %s, %s, %s)",
                 (clean.data, clean.content_type, clean.width, clean.height))
    _logger.info("branding.logo_changed", workspace_id=str(g.workspace.workspace_id),
                 bytes=len(clean.data))
    return clean


@bp.post("/settings/branding/logo")
@workspace_view("branding.change")
def upload_logo():
    _save_logo(_upload())
    flash("Logo saved.", "info")
    return redirect(url_for("branding.page", slug=g.workspace.workspace_slug))


@bp.post("/settings/branding/logo/remove")
@workspace_view("branding.change")
def remove_logo():
    g.db.execute("select cajex.remove_logo()")
    flash("Logo removed.", "info")
    return redirect(url_for("branding.page", slug=g.workspace.workspace_slug))


# -- JSON ------------------------------------------------------------------------


def _json(found: branding.Branding) -> dict:
    return {
        "name": found.name,
        "primary": found.primary,
        "accent": found.accent,
        "on_brand": found.on_brand,
        "logo_url": found.logo_url,
        "stylesheet_url": found.stylesheet_url,
    }


def _check_json(check: branding.ColourCheck) -> dict:
    return {"colour": check.colour, "text": check.text, "ratio": check.ratio, "ok": check.ok,
            "suggestion": check.suggestion}


@bp.get("/api/v1/branding")
@workspace_view()
def api_get():
    return jsonify(_json(workspace_branding()))


@bp.put("/api/v1/branding/colours")
@workspace_view("branding.change")
def api_colours():
    """{"primary", "accent", "keep_low_contrast"?}: 422 low_contrast with the
    nearest accessible shades unless keep_low_contrast is true."""
    data = json_body({"primary", "accent", "keep_low_contrast"}, {"primary", "accent"})
    primary, accent = _colours(data)
    checks = {"primary": branding.check_colour(primary), "accent": branding.check_colour(accent)}
    if not all(c.ok for c in checks.values()) and data.get("keep_low_contrast") is not True:
        failing = next(k for k, c in checks.items() if not c.ok)
        body = AppError(422, "low_contrast", "white text is hard to read on this colour",
                        failing).to_json()
        body["checks"] = {k: _check_json(c) for k, c in checks.items()}
        return jsonify(body), 422
    _save_colours(primary, accent)
    g.pop("workspace_branding", None)
    return jsonify({**_json(workspace_branding()),
                    "checks": {k: _check_json(c) for k, c in checks.items()}})


@bp.put("/api/v1/branding/logo")
@workspace_view("branding.change")
def api_logo():
    """The image as the body (Content-Type image/png, image/jpeg or image/webp)."""
    clean = _save_logo(_upload())
    g.pop("workspace_branding", None)
    return jsonify({**_json(workspace_branding()), "width": clean.width, "height": clean.height})


@bp.delete("/api/v1/branding/logo")
@workspace_view("branding.change")
def api_remove_logo():
    g.db.execute("select cajex.remove_logo()")
    return "", 204

