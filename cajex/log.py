"""Structured logs: one JSON object a line, a fixed event name plus fields.

Never log an email address, token, key or secret: log ids. `scrub()` is the
last line of defence and masks anything that looks like one.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

_EMAIL = re.compile(r"[^\s@\"'<>]+@[^\s@\"'<>]+\.[A-Za-z]{2,}")
_SECRETISH = re.compile(
    r"(v1\.[us]\.[0-9a-f-]{36}\.[^.\s]+\.\d+\.[0-9a-f]{64}"  # context tokens
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
    r"|(?:sk|rk|pk|whsec)_[A-Za-z0-9_]{8,}"  # Stripe keys and secrets
    r"|\b[0-9a-f]{64}\b)"  # hex secrets
)
_SENSITIVE_KEYS = {"email", "token", "password", "secret", "api_key", "authorization", "cookie"}


def scrub_text(value: str) -> str:
    return _SECRETISH.sub("[secret]", _EMAIL.sub("[email]", value))


def scrub(_logger, _method, event: dict) -> dict:
    for key, value in list(event.items()):
        if key.lower() in _SENSITIVE_KEYS:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = scrub_text(value)
    return event


_configured = False


def configure(level: int = logging.INFO, stream=None) -> None:
    """Send structlog and the standard library's logging to JSON lines."""
    global _configured
    if _configured:
        return
    _configured = True
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Werkzeug's access log repeats what the request log says, with the query
    # string (which may hold a token): keep it quiet.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def get(name: str | None = None):
    return structlog.get_logger(name)
