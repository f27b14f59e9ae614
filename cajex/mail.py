"""Email: render a template in the workspace's branding and hand it to a transport.

`render(template, params, branding)` reads web/templates/email/<template>.txt
(whose first line is `Subject: ...`) and <template>.html (extending
email/base.html). `send_smtp()` delivers one message over SMTP; with no SMTP
configured the email job keeps the message in the development mailbox
instead. Addresses and links never reach the logs: callers log outbox ids.
"""

from __future__ import annotations

import email.message
import email.utils
import smtplib
import urllib.parse

import jinja2

from cajex import ROOT

_TEMPLATES = ROOT / "web" / "templates" / "email"

#: Branding keys a workspace row may carry (added by the branding area);
#: each is optional and absent ones fall back to the product's defaults.
BRANDING_KEYS = ("name", "brand_name", "brand_color", "logo_url", "support_email",
                 "accent_color", "on_brand_color")
_COLOUR_DEFAULTS = {"brand_color": "#1f4b99", "accent_color": "#0f766e", "on_brand_color": "#ffffff"}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_TEMPLATES.parent)),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


class UnknownTemplate(ValueError):
    """No such email template."""


def branding_of(workspace_row: dict | None) -> dict:
    """The branding values of a workspace row (jsonb of the row), tolerating absent columns."""
    row = workspace_row or {}
    # Every key is present (None when unset) so templates can test any of them.
    brand = {k: row.get(k) or None for k in BRANDING_KEYS}
    brand["display_name"] = brand["brand_name"] or brand["name"] or "cajex"
    # Only a plain hex colour reaches a style attribute.
    for key, default in _COLOUR_DEFAULTS.items():
        color = str(brand.get(key) or "")
        if not (len(color) in (4, 7) and color.startswith("#")
                and all(c in "0123456789abcdefABCDEF" for c in color[1:])):
            brand[key] = default
    logo = str(brand.get("logo_url") or "")
    if not logo.startswith(("https://", "http://")):
        brand["logo_url"] = None
    return brand


def render(template: str, params: dict, branding: dict | None = None) -> tuple[str, str, str]:
    """(subject, text body, html body) of `template` with `params`."""
    if not template.replace("_", "").isalnum() or len(template) > 100:
        raise UnknownTemplate(template)
    brand = branding or branding_of(None)
    try:
        text = _env.get_template(f"email/{template}.txt").render(params=params, brand=brand)
        html = _env.get_template(f"email/{template}.html").render(params=params, brand=brand)
    except jinja2.TemplateNotFound as exc:
        raise UnknownTemplate(template) from exc
    first, _, body = text.partition("\n")
    if not first.startswith("Subject: "):
        raise UnknownTemplate(f"{template}: the text template must start with Subject:")
    subject = first[len("Subject: "):].strip().replace("\r", " ").replace("\n", " ")
    return subject, body.lstrip("\n"), html


def build_message(*, sender: str, to: str, subject: str, text: str, html: str,
                  message_id: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    # A stable Message-ID per outbox job lets a receiving server drop a
    # duplicate if a crash between sending and recording made us resend.
    message["Message-ID"] = message_id
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def send_smtp(smtp_url: str, message: email.message.EmailMessage, timeout: float = 30.0) -> None:
    """Deliver over SMTP. smtp_url: smtp://[user:pass@]host:port, smtps://... or
    smtp+starttls://...; raises smtplib/OSError on failure (the job retries)."""
    parts = urllib.parse.urlsplit(smtp_url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    if parts.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, timeout=timeout)
    elif parts.scheme in ("smtp", "smtp+starttls"):
        client = smtplib.SMTP(host, port or 25, timeout=timeout)
    else:
        raise ValueError("smtp_url must start with smtp://, smtp+starttls:// or smtps://")
    with client:
        if parts.scheme == "smtp+starttls":
            client.starttls()
        if parts.username:
            client.login(urllib.parse.unquote(parts.username),
                         urllib.parse.unquote(parts.password or ""))
        client.send_message(message)
