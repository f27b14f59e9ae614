"""Structured logs: one JSON object a line, a fixed event name plus fields.

Never log an email address, token, key or secret: log ids. `scrub()` is the
last line of defence and masks anything that looks like one.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

import structlog

_EMAIL = re.compile(r"[^\s@\"'<>]+@[^\s@\"'<>]+\.[A-Za-z]{2,}")
_SECRETISH = re.compile(
    r"(v1\.[us]\.[0-9a-f-]{36}\.[^.\s]+\.\d+\.[0-9a-f]{64}"  # context tokens
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
    r"|(?:sk|rk|pk|whsec)_[A-Za-z0-9_]{8,}"  # Stripe keys and secrets
    r"|\b[0-9a-f]{64}\b)"  # hex secrets
)
# The user and password of a URL (scheme://user:pass@host): masked before the
# address check below, which would otherwise take "pass@host.tld" for one.
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@?#]+@")
_SENSITIVE_KEYS = {
    "email",
    "token",
    "password",
    "secret",
    "api_key",
    "authorization",
    "cookie",
}


def scrub_text(value: str) -> str:
    # Addresses and URL credentials both need an "@": most values have none,
    # and then one pass looks for everything else.
    if "@" in value:
        value = _EMAIL.sub("[email]", _URL_USERINFO.sub("[userinfo]@", value))
    return _SECRETISH.sub("[secret]", value)


def scrub(_logger, _method, event: dict) -> dict:
    for key, value in list(event.items()):
        if key.lower() in _SENSITIVE_KEYS:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = scrub_text(value)
    return event


_configured = False


class _Tee:
    """Writes log lines to the process's stream and to CAJEX_LOG_FILE."""

    def __init__(self, stream, path: str):
        self._stream = stream
        # Unbuffered appends of whole lines: several processes share the file,
        # and O_APPEND keeps each single write of a line in one piece.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # A partial line is kept per thread: print() writes a line and its
        # newline in two calls, and a pool thread may log in between.
        self._local = threading.local()

    def write(self, text: str) -> int:
        pending = getattr(self._local, "pending", "") + text
        if "\n" in pending:
            complete, _, pending = pending.rpartition("\n")
            os.write(self._fd, (complete + "\n").encode())
        self._local.pending = pending
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


def configure(level: int = logging.INFO, stream=None) -> None:
    """Send structlog and the standard library's logging to JSON lines."""
    global _configured
    if _configured:
        return
    _configured = True
    stream = stream or sys.stderr
    if os.environ.get("CAJEX_LOG_FILE"):
        # Every log line of a test run also lands in one file, which the
        # suite greps for addresses, tokens and secrets at the end.
        stream = _Tee(stream, os.environ["CAJEX_LOG_FILE"])
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
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
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
    # The AI providers' client libraries and their HTTP client log every request's
    # full URL at INFO (a provider base URL may carry a token); the gateway
    # logs its own line without it.
    for name in ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "anthropic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def get(name: str | None = None):
    return structlog.get_logger(name)


#: What must never appear in a log line: addresses, context tokens and
#: session credentials, JWTs, Stripe secrets, bearer tokens.
FORBIDDEN = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
    r"|v1\.[us]\.[0-9a-f-]{36}\."
    r"|v2\.[0-9a-f-]{36}\."
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\."
    r"|(?:sk|rk|whsec)_(?:test|live)?_?[A-Za-z0-9]{8,}"
    r"|Bearer\s+[A-Za-z0-9._~+/-]{16,}"
)


def find_leaks(lines) -> list[tuple[int, str]]:
    """(line number, what matched) for every line that holds a forbidden value."""
    found = []
    for number, line in enumerate(lines, 1):
        match = FORBIDDEN.search(line)
        if match:
            found.append((number, match.group(0)[:12] + "..."))
    return found
