"""The `email.send` job: render a template and deliver it once.

Payload: {"template", "to", "workspace_id", "params"}. The address lives in
the payload (the database), never in a log line: logs name the outbox id.
A delivery is recorded per outbox id, so a redelivered job sends nothing.
With no SMTP configured the message goes to the development mailbox.
"""

from __future__ import annotations

import uuid

from cajex.jobs import registry

from cajex import branding, log, mail

_logger = log.get("cajex.jobs.email")


class BadEmailJob(ValueError):
    """The payload cannot be sent (retrying will not help)."""


def _branding(ctx: registry.JobContext, workspace_id: str | None) -> dict:
    if not workspace_id:
        return mail.branding_of(None)
    try:
        with ctx.pool.connection() as conn:
            found = branding.for_workspace(conn, workspace_id, ctx.settings.public_url)
        return mail.branding_of(found.mail_keys() if found else None)
    except Exception:  # branding is a nicety: mail still goes out plain
        _logger.warning("email.branding_unavailable", job_id=ctx.id)
        return mail.branding_of(None)


@registry.handler("email.send")
def send_email(ctx: registry.JobContext) -> None:
    payload = ctx.payload or {}
    template, to = payload.get("template"), payload.get("to")
    params = payload.get("params") or {}
    if not isinstance(template, str) or not isinstance(to, str) or "@" not in to:
        raise BadEmailJob("payload needs template and to")
    if not isinstance(params, dict):
        raise BadEmailJob("params must be an object")
    with ctx.pool.connection() as conn:
        done = conn.execute(
            "select cajex_private.email_delivery_of(%s) as m", (ctx.id,)
        ).fetchone()["m"]
    if done is not None:
        _logger.info("email.already_sent", job_id=ctx.id)
        return
    workspace_id = payload.get("workspace_id") or ctx.workspace_id
    subject, text, html = mail.render(template, params, _branding(ctx, workspace_id))
    settings = ctx.settings
    domain = (settings.mail_from.rsplit("@", 1)[-1].strip("> ") or "cajex.local")
    message_id = f"<outbox-{ctx.id}.{uuid.uuid5(uuid.NAMESPACE_URL, str(ctx.id)).hex[:12]}@{domain}>"
    if settings.smtp_url:
        message = mail.build_message(sender=settings.mail_from, to=to, subject=subject,
                                     text=text, html=html, message_id=message_id)
        mail.send_smtp(settings.smtp_url, message)
        transport, bodies = "smtp", (None, None)
    elif settings.development:
        transport, bodies = "dev", (text, html)
    else:
        # Production without SMTP is a misconfiguration: fail (and retry
        # with backoff) rather than drop mail silently.
        raise RuntimeError("no SMTP configured (CAJEX_SMTP_URL)")
    with ctx.pool.connection() as conn:
        conn.execute(
            "select cajex_private.record_email_delivery(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (ctx.id, workspace_id, transport, message_id, template, to, subject, *bodies),
        )
    _logger.info("email.sent", job_id=ctx.id, template=template, transport=transport)
