"""Branding over HTTP: logo upload (with hostile files), the public logo and
theme addresses, colours with the contrast check, and the branding on the
workspace's pages, its sign-in page and its emails. Each allow beside a deny
from another workspace."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cajex import branding, members
from cajex.testing.workspaces import image, png_claiming

HTML_SVG_POLYGLOT = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)">'
    b"<script>alert(1)</script></svg>"
)


@pytest.fixture
def two(world):
    """Workspaces A and B with an owner, an admin and a member in A."""
    a, b = world.workspace(), world.workspace()
    admin = world.member(a, role="admin")
    member = world.member(a, role="member")
    return a, b, admin, member


def upload(client, slug, data: bytes, filename="logo.png", headers=None):
    return client.post(
        f"/w/{slug}/settings/branding/logo",
        data={"logo": (io.BytesIO(data), filename), "csrf_token": "test-csrf-token"},
        content_type="multipart/form-data",
        headers=headers,
    )


def stored_logo(world, ws):
    return world.admin.execute(
        "select logo, logo_type, logo_sha256 from cajex.workspace_branding where workspace_id = %s",
        (ws.id,),
    ).fetchone()


# -- logo ------------------------------------------------------------------------


def test_can_upload_a_logo_that_is_re_encoded_and_served_with_strict_headers(two, signed_in, world):
    """An admin's PNG, carrying a script in a comment chunk and HTML after its
    end, is stored as a clean re-encoding and served as exactly image/png."""
    a, _, admin, _ = two
    hostile = image("PNG", text_chunk="<script>alert(1)</script>") + b"<html><script>alert(2)</script></html>"
    client = signed_in(admin)
    assert upload(client, a.slug, hostile).status_code == 302
    row = stored_logo(world, a)
    assert row["logo_type"] == "image/png"
    assert b"<script" not in bytes(row["logo"]) and b"<html" not in bytes(row["logo"])
    served = client.get(f"/w/{a.slug}/branding/logo?v={row['logo_sha256'][:16]}")
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served.headers["Content-Security-Policy"]
    assert served.headers["Cache-Control"] == branding.IMMUTABLE
    with Image.open(io.BytesIO(served.data)) as img:
        assert img.format == "PNG" and img.size == (64, 32) and "Comment" not in img.info


def test_unversioned_logo_address_is_cached_briefly_and_revalidates(two, signed_in, world):
    """Without the current ?v= the logo is cached for minutes, and its ETag answers 304."""
    a, _, admin, _ = two
    client = signed_in(admin)
    upload(client, a.slug, image("JPEG"), "logo.jpg")
    served = client.get(f"/w/{a.slug}/branding/logo?v=stale")
    assert served.headers["Content-Type"] == "image/jpeg"
    assert served.headers["Cache-Control"] == branding.SHORT
    again = client.get(f"/w/{a.slug}/branding/logo", headers={"If-None-Match": served.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_cannot_upload_a_logo_to_another_workspace(two, signed_in, world):
    """B's owner posting a logo to A's address gets the answer of a missing workspace, and A has no logo."""
    a, b, _, _ = two
    client = signed_in(b.owner)
    response = upload(client, a.slug, image())
    missing = upload(client, "no-such-workspace", image())
    assert response.status_code == missing.status_code == 404
    assert stored_logo(world, a) is None
    assert client.get(f"/w/{a.slug}/branding/logo").status_code == 404


def test_member_cannot_change_the_logo(two, signed_in, world):
    """A plain member's upload is refused with 403 forbidden."""
    a, _, _, member = two
    response = upload(signed_in(member), a.slug, image(), headers={"Accept": "application/json"})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert stored_logo(world, a) is None


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (HTML_SVG_POLYGLOT, "svg_refused"),
        (b'<?xml version="1.0"?>\n' + HTML_SVG_POLYGLOT, "svg_refused"),
        (b"<!doctype html><html><body><script>alert(1)</script></body></html>", "not_an_image"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;<script>alert(1)</script>", "not_an_image"),
        (png_claiming(30000, 30000), "too_many_pixels"),
        (png_claiming(4000, 20), "bad_dimensions"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_an_image"),
        (b"", "empty"),
    ],
    ids=["svg-polyglot", "xml-svg", "html", "gif-with-script", "huge-dimensions", "too-wide",
         "truncated-png", "empty"],
)
def test_cannot_upload_a_hostile_logo(two, signed_in, world, data, code):
    """Script polyglots, SVG, HTML, bombs and broken files are refused with their code; nothing is stored."""
    a, _, admin, _ = two
    response = upload(signed_in(admin), a.slug, data, headers={"Accept": "application/json"})
    assert response.status_code == 422
    assert response.json["error"]["code"] == code
    assert stored_logo(world, a) is None


def test_cannot_upload_a_logo_over_one_megabyte(two, signed_in, world):
    """1.5 MB is refused as too_large by the logo rules; 3 MB by the request limit (413)."""
    a, _, admin, _ = two
    client = signed_in(admin)
    big = image("PNG") + b"\x00" * (1536 * 1024)
    response = upload(client, a.slug, big, headers={"Accept": "application/json"})
    assert response.status_code == 422 and response.json["error"]["code"] == "too_large"
    huge = upload(client, a.slug, b"\x00" * (3 * 1024 * 1024), headers={"Accept": "application/json"})
    assert huge.status_code == 413 and huge.json["error"]["code"] == "payload_too_large"
    assert stored_logo(world, a) is None


def test_can_put_and_delete_a_logo_through_the_api(two, signed_in, world):
    """PUT with an image body stores it; DELETE removes it and the address answers 404."""
    a, b, admin, _ = two
    client = signed_in(admin)
    put = client.put(f"/w/{a.slug}/api/v1/branding/logo", data=image("WEBP"),
                     content_type="image/webp")
    assert put.status_code == 200 and put.json["logo_url"].startswith(f"/w/{a.slug}/branding/logo?v=")
    assert client.get(put.json["logo_url"]).headers["Content-Type"] == "image/webp"
    # B's owner cannot delete it.
    assert signed_in(b.owner).delete(f"/w/{a.slug}/api/v1/branding/logo").status_code == 404
    assert stored_logo(world, a)["logo"] is not None
    assert client.delete(f"/w/{a.slug}/api/v1/branding/logo").status_code == 204
    assert client.get(f"/w/{a.slug}/branding/logo").status_code == 404


# -- colours -----------------------------------------------------------------------


def colours_of(world, ws):
    return world.admin.execute(
        "select primary_colour, accent_colour from cajex.workspace_branding where workspace_id = %s",
        (ws.id,),
    ).fetchone()


def test_can_save_accessible_colours_and_the_theme_carries_them(two, signed_in, world, client):
    """Readable colours are saved at once, and the public theme stylesheet holds them."""
    a, _, admin, _ = two
    response = signed_in(admin).put(f"/w/{a.slug}/api/v1/branding/colours",
                                    json={"primary": "#123456", "accent": "#7A1F5C"})
    assert response.status_code == 200
    assert response.json["checks"]["primary"]["ok"] is True
    assert colours_of(world, a) == {"primary_colour": "#123456", "accent_colour": "#7a1f5c"}
    theme = client.get(response.json["stylesheet_url"])
    assert theme.status_code == 200 and theme.mimetype == "text/css"
    assert "--brand: #123456;" in theme.get_data(as_text=True)
    assert theme.headers["Cache-Control"] == branding.IMMUTABLE


def test_low_contrast_colour_is_refused_with_the_nearest_accessible_shade(two, signed_in, world):
    """Yellow under white text: 422 low_contrast, a suggestion that passes 4.5:1, nothing saved."""
    a, _, admin, _ = two
    response = signed_in(admin).put(f"/w/{a.slug}/api/v1/branding/colours",
                                    json={"primary": "#ffee00", "accent": "#0f766e"})
    assert response.status_code == 422
    assert response.json["error"] == {"code": "low_contrast", "field": "primary",
                                      "message": "white text is hard to read on this colour"}
    suggestion = response.json["checks"]["primary"]["suggestion"]
    assert branding.contrast(suggestion, "#ffffff") >= branding.MIN_CONTRAST
    assert colours_of(world, a) is None


def test_low_contrast_colour_is_saved_when_confirmed(two, signed_in, world):
    """keep_low_contrast saves the admin's own colour after the warning."""
    a, _, admin, _ = two
    response = signed_in(admin).put(f"/w/{a.slug}/api/v1/branding/colours",
                                    json={"primary": "#ffee00", "accent": "#0f766e",
                                          "keep_low_contrast": True})
    assert response.status_code == 200
    assert colours_of(world, a)["primary_colour"] == "#ffee00"


def test_settings_page_warns_and_offers_the_accessible_shade(two, signed_in, world):
    """The form answers a low-contrast colour with the warning and a button for the shade."""
    a, _, admin, _ = two
    page = signed_in(admin).post(f"/w/{a.slug}/settings/branding/colours",
                                 data={"primary": "#ffee00", "accent": "#0f766e",
                                       "csrf_token": "test-csrf-token"})
    html = page.get_data(as_text=True)
    suggestion = branding.check_colour("#ffee00").suggestion
    assert page.status_code == 422
    assert 'id="contrast-warning"' in html and suggestion in html
    assert colours_of(world, a) is None


@pytest.mark.parametrize("bad", ["red", "#12345", "#1234567", "#12345g", "#123456; } body { x", ""])
def test_cannot_save_a_colour_that_is_not_a_colour(two, signed_in, world, bad):
    """Anything but #rgb or #rrggbb is 422 invalid_colour and changes nothing."""
    a, _, admin, _ = two
    response = signed_in(admin).put(f"/w/{a.slug}/api/v1/branding/colours",
                                    json={"primary": bad, "accent": "#0f766e"})
    assert response.status_code == 422 and response.json["error"]["code"] == "invalid_colour"
    assert colours_of(world, a) is None


def test_cannot_change_another_workspaces_colours(two, signed_in, world):
    """B's owner aiming at A: 404 like a missing workspace, A unchanged; A's member: 403."""
    a, b, _, member = two
    body = {"primary": "#123456", "accent": "#654321"}
    theirs = signed_in(b.owner).put(f"/w/{a.slug}/api/v1/branding/colours", json=body)
    assert theirs.status_code == 404 and theirs.json["error"]["code"] == "not_found"
    forbidden = signed_in(member).put(f"/w/{a.slug}/api/v1/branding/colours", json=body)
    assert forbidden.status_code == 403 and forbidden.json["error"]["code"] == "forbidden"
    assert colours_of(world, a) is None


def test_theme_of_an_unknown_address_is_the_products_own(client, two):
    """The theme of an address naming no workspace is the default one: it tells nothing."""
    unknown = client.get("/w/no-such-place/branding/theme.css")
    assert unknown.status_code == 200
    assert f"--brand: {branding.DEFAULT_PRIMARY};" in unknown.get_data(as_text=True)


# -- branding on pages, the sign-in page and emails ---------------------------------


def brand(world, ws, primary="#5b21b6"):
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.set_brand_colours(%s, '#0f766e')", (primary,))
        clean = branding.process_logo(image())
        conn.execute("select cajex.set_logo(%s, %s, %s, %s)",
                     (clean.data, clean.content_type, clean.width, clean.height))


def test_every_page_of_the_workspace_carries_its_branding(two, signed_in, world):
    """Projects, members and branding pages link A's theme and show A's logo and name; B's pages do not."""
    a, b, admin, _ = two
    brand(world, a)
    world.member(b, admin)
    client = signed_in(admin)
    for path in ("projects", "members", "settings/branding"):
        html = client.get(f"/w/{a.slug}/{path}").get_data(as_text=True)
        assert f"/w/{a.slug}/branding/theme.css?v=" in html, path
        assert f"/w/{a.slug}/branding/logo?v=" in html, path
    other = client.get(f"/w/{b.slug}/projects").get_data(as_text=True)
    assert f"/w/{a.slug}/branding" not in other
    assert f"/w/{b.slug}/branding/theme.css?v=" in other


def test_sign_in_page_of_the_workspace_shows_its_branding(two, client, world):
    """/w/<slug>/login shows the workspace's logo, name and theme before anyone signs in."""
    a, b, _, _ = two
    brand(world, a)
    html = client.get(f"/w/{a.slug}/login").get_data(as_text=True)
    assert f"/w/{a.slug}/branding/logo?v=" in html and f"/w/{a.slug}/branding/theme.css" in html
    assert f"Sign in to {a.slug.title()}" in html
    other = client.get(f"/w/{b.slug}/login").get_data(as_text=True)
    assert f"/w/{a.slug}/branding" not in other


def test_invitation_email_carries_the_workspaces_branding(world, mail_worker):
    """An invitation from A is rendered with A's colour and an absolute logo address; B's mail is plain."""
    a, b = world.workspace(), world.workspace()
    brand(world, a, primary="#5b21b6")
    for ws in (a, b):
        with world.as_user(ws.owner, ws) as (conn, _):
            token, digest = members.new_token()
            conn.execute("select * from cajex.invite_member(%s, 'member', %s, %s)",
                         (f"guest@{ws.slug}.test", digest,
                          members.accept_link("http://cajex.test", ws.slug, token)))
    assert mail_worker() == ["done", "done"]
    mails = {r["recipient"]: r for r in world.admin.execute(
        "select recipient, subject, html_body from cajex.email_deliveries").fetchall()}
    html_a = mails[f"guest@{a.slug}.test"]["html_body"]
    assert "#5b21b6" in html_a
    assert f"http://cajex.test/w/{a.slug}/branding/logo?v=" in html_a
    html_b = mails[f"guest@{b.slug}.test"]["html_body"]
    assert "#5b21b6" not in html_b and "/branding/logo" not in html_b
    assert mails[f"guest@{a.slug}.test"]["subject"].endswith(a.slug.title())


def test_magic_link_asked_on_a_workspace_sign_in_page_carries_its_branding(world, client, mail_worker):
    """A sign-in link asked for on A's sign-in page is mailed in A's colours; one asked on the
    plain sign-in page is not."""
    a = world.workspace()
    brand(world, a, primary="#5b21b6")
    with client.session_transaction() as sess:
        sess["csrf"] = "c" * 32
    for email, workspace in (("branded@example.test", a.slug), ("plain@example.test", None)):
        form = {"email": email, "csrf_token": "c" * 32, **({"workspace": workspace} if workspace else {})}
        assert client.post("/login/email", data=form).status_code == 200
    assert mail_worker() == ["done", "done"]
    mails = {r["recipient"]: r["html_body"] for r in world.admin.execute(
        "select recipient, html_body from cajex.email_deliveries").fetchall()}
    assert "#5b21b6" in mails["branded@example.test"]
    assert f"http://cajex.test/w/{a.slug}/branding/logo?v=" in mails["branded@example.test"]
    assert "#5b21b6" not in mails["plain@example.test"]
    assert "/branding/logo" not in mails["plain@example.test"]
