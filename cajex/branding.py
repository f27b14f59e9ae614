"""Workspace branding: logo processing, colour checks and what renderers use.

A logo is decoded with Pillow and re-encoded from its pixels, so nothing of
the uploaded file survives but the image: metadata, trailing bytes and any
second format hidden in it (an HTML or script polyglot) are gone. SVG is
refused, because a safe SVG needs a real sanitiser and a logo does not need
vector graphics.
"""

from __future__ import annotations

import dataclasses
import io
import re

MAX_LOGO_BYTES = 1024 * 1024
MAX_SIDE = 2048
MIN_SIDE = 16
#: Decompression bombs: refuse anything above this many pixels before decoding.
MAX_PIXELS = 4096 * 4096
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# The product's own colours (web/static/app.css), for a workspace without branding.
DEFAULT_PRIMARY = "#2457c5"
DEFAULT_ACCENT = "#0f766e"
_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")
#: Cache-Control of the public logo and theme addresses. A versioned address
#: (?v= matches the current logo or theme) never changes content, so browsers
#: and mail proxies may keep it for a year; any other is re-checked after
#: five minutes.
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
#: WCAG 2.x AA for normal text.
MIN_CONTRAST = 4.5


class LogoError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Logo:
    data: bytes
    content_type: str
    width: int
    height: int


def process_logo(raw: bytes) -> Logo:
    """Decode, check and re-encode an uploaded logo, or raise LogoError.

    Costs one decode and one encode of at most MAX_SIDE x MAX_SIDE pixels
    (tens of milliseconds); the pixel count is checked from the header before
    any pixel is decoded, so a small file claiming huge dimensions costs
    nothing.
    """
    from PIL import Image

    configure_pillow()
    if not raw:
        raise LogoError("empty", "choose an image file")
    if len(raw) > MAX_LOGO_BYTES:
        raise LogoError("too_large", "a logo is at most 1 MB")
    head = raw[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        raise LogoError("svg_refused", "SVG logos are not accepted: upload a PNG, JPEG or WebP image")
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            fmt = probe.format
            width, height = probe.size
    except Image.DecompressionBombError:
        raise LogoError("too_many_pixels", "that image has too many pixels for a logo") from None
    except Exception:
        raise LogoError("not_an_image", "that file is not a PNG, JPEG or WebP image") from None
    if fmt not in FORMATS:
        raise LogoError("unsupported_format", "a logo is a PNG, JPEG or WebP image")
    if width * height > MAX_PIXELS:
        raise LogoError("too_many_pixels", "that image has too many pixels for a logo")
    if width < MIN_SIDE or height < MIN_SIDE or width > MAX_SIDE or height > MAX_SIDE:
        raise LogoError(
            "bad_dimensions", f"a logo is {MIN_SIDE} to {MAX_SIDE} pixels wide and high"
        )
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            clean = img.convert("RGBA" if has_alpha and fmt != "JPEG" else "RGB")
    except Exception:
        raise LogoError("not_an_image", "that image is damaged and cannot be read") from None
    # A fresh image from the pixels alone: no metadata, no trailing bytes.
    out = io.BytesIO()
    if fmt == "JPEG":
        clean.save(out, "JPEG", quality=90, optimize=True)
    elif fmt == "WEBP":
        clean.save(out, "WEBP", quality=90)
    else:
        clean.save(out, "PNG", optimize=True)
    data = out.getvalue()
    if len(data) > MAX_LOGO_BYTES:
        raise LogoError("too_large", "the logo is larger than 1 MB once converted; use a smaller image")
    return Logo(data, FORMATS[fmt], width, height)


def configure_pillow() -> None:
    """Make Pillow refuse decompression bombs outright instead of warning."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS


# -- colours -------------------------------------------------------------------


def normalise_colour(value: str | None) -> str | None:
    """'#rrggbb' in lowercase, or None when `value` is not a colour."""
    match = _HEX.match((value or "").strip())
    if not match:
        return None
    digits = match.group(1).lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return "#" + digits


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _hex(rgb) -> str:
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in rgb)


def luminance(colour: str) -> float:
    """WCAG 2.x relative luminance."""

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour_on(background: str) -> str:
    """The text colour (white or near-black) that reads best on `background`."""
    return "#ffffff" if contrast(background, "#ffffff") >= contrast(background, "#111111") else "#111111"


def nearest_accessible(colour: str, text: str, ratio: float = MIN_CONTRAST) -> str:
    """The closest shade of `colour` (darker or lighter) with `ratio` against `text`."""
    if contrast(colour, text) >= ratio:
        return colour
    r, g, b = _rgb(colour)
    target = (0, 0, 0) if luminance(text) > 0.5 else (255, 255, 255)
    for step in range(1, 101):
        t = step / 100
        mixed = _hex((r + (target[0] - r) * t, g + (target[1] - g) * t, b + (target[2] - b) * t))
        if contrast(mixed, text) >= ratio:
            return mixed
    return _hex(target)


@dataclasses.dataclass(frozen=True)
class ColourCheck:
    colour: str
    text: str
    ratio: float
    ok: bool
    suggestion: str | None


def check_colour(colour: str) -> ColourCheck:
    """Contrast of `colour` against the text the UI puts on it (white, as
    buttons and the top bar use), with the nearest accessible shade."""
    text = "#ffffff"
    ratio = contrast(colour, text)
    ok = ratio >= MIN_CONTRAST
    return ColourCheck(colour, text, round(ratio, 2), ok, None if ok else nearest_accessible(colour, text))


# -- what renderers use ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Branding:
    workspace_id: str
    slug: str
    name: str
    primary: str
    accent: str
    on_brand: str
    logo_url: str | None
    stylesheet_url: str
    version: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def mail_keys(self) -> dict:
        """The keys cajex.mail.branding_of reads (logo_url is absolute when
        the Branding was built with the public address)."""
        return {
            "name": self.name,
            "brand_color": self.primary,
            "accent_color": self.accent,
            "on_brand_color": self.on_brand,
            "logo_url": self.logo_url,
        }


def _from_row(row: dict, public_url: str = "") -> Branding:
    primary = row["primary_colour"] or DEFAULT_PRIMARY
    accent = row["accent_colour"] or DEFAULT_ACCENT
    version = (row["logo_sha256"] or "")[:12] + (
        row["updated_at"].strftime("%Y%m%d%H%M%S%f") if row["updated_at"] else "0"
    )
    base = f"{public_url.rstrip('/')}/w/{row['slug']}/branding"
    return Branding(
        workspace_id=str(row["workspace_id"]),
        slug=row["slug"],
        name=row["name"],
        primary=primary,
        accent=accent,
        on_brand=text_colour_on(primary),
        logo_url=f"{base}/logo?v={row['logo_sha256'][:16]}" if row["logo_sha256"] else None,
        stylesheet_url=f"{base}/theme.css?v={version}",
        version=version,
    )


def default_branding(slug: str, name: str = "cajex") -> Branding:
    """The product's own look, for an address with no active workspace."""
    return _from_row({"workspace_id": "", "slug": slug, "name": name, "primary_colour": None,
                      "accent_colour": None, "logo_sha256": None, "updated_at": None})


def for_workspace(conn, workspace_id, public_url: str = "") -> Branding | None:
    """The branding of a workspace for the mail renderer (absolute URLs when
    `public_url` is given), or None for a workspace that is not active."""
    row = conn.execute(
        "select * from cajex.public_branding_by_id(%s)", (str(workspace_id),)
    ).fetchone()
    return _from_row(_as_dict(conn, row), public_url) if row else None


def for_slug(conn, slug: str, public_url: str = "") -> Branding | None:
    """The same by slug: for a workspace's sign-in page, before sign-in."""
    row = conn.execute("select * from cajex.public_branding(%s)", (slug,)).fetchone()
    return _from_row(_as_dict(conn, row), public_url) if row else None


def _as_dict(conn, row) -> dict:
    if isinstance(row, dict):
        return row
    cols = ["workspace_id", "slug", "name", "primary_colour", "accent_colour", "logo_type",
            "logo_sha256", "updated_at"]
    return dict(zip(cols, row, strict=True))


def stylesheet(b: Branding) -> str:
    """The per-workspace stylesheet: custom properties only (the CSP allows no
    inline style, so the colours arrive as a stylesheet of their own)."""
    return (
        ":root {\n"
        f"  --brand: {b.primary};\n"
        f"  --accent: {b.accent};\n"
        f"  --on-brand: {b.on_brand};\n"
        "}\n"
    )
