"""Errors answer with a stable code: JSON for the API, a page for people."""

from __future__ import annotations

import psycopg
from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from cajex import log
from cajex.errors import AppError, from_database

_logger = log.get("cajex.web")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def wants_json() -> bool:
    return (
        request.path.startswith("/api/")
        or "/api/" in request.path
        or request.accept_mimetypes.best == "application/json"
        or request.mimetype == "application/json"
    )


def _respond(err: AppError):
    if wants_json():
        return jsonify(err.to_json()), err.status
    return render_template("error.html", error=err), err.status


def _log_crash(app: Flask, exc_info) -> None:
    """Flask's own line for an unhandled error names the request's path,
    which on some routes holds a token (a sign-in or invitation link): log
    the route's rule instead, with the traceback."""
    rule = request.url_rule.rule if request.url_rule else "unmatched"
    _logger.error(
        "request.crashed",
        route=rule,
        method=request.method,
        error_class=exc_info[0].__name__ if exc_info and exc_info[0] else None,
        exc_info=exc_info,
    )


def init_app(app: Flask) -> None:
    app.log_exception = lambda exc_info: _log_crash(app, exc_info)
    @app.errorhandler(AppError)
    def handle_app_error(err: AppError):
        return _respond(err)

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException):
        code = _HTTP_CODES.get(exc.code or 500, "error")
        message = exc.description if exc.code != 404 else "not found"
        if exc.description == "csrf":
            code, message = (
                "csrf_failed",
                "the form expired; reload the page and try again",
            )
        return _respond(AppError(exc.code or 500, code, message))

    @app.errorhandler(psycopg.OperationalError)
    def handle_database_down(exc):
        _logger.warning("database.unavailable", error_class=type(exc).__name__)
        return _respond(
            AppError(
                503, "unavailable", "the database is unavailable; try again shortly"
            )
        )

    @app.errorhandler(psycopg.Error)
    def handle_database(exc):
        known = from_database(exc)
        if known is None:
            _logger.error("database.error", sqlstate=getattr(exc, "sqlstate", None))
            known = AppError(500, "internal", "something went wrong; it was logged")
        return _respond(known)

    @app.errorhandler(UnicodeEncodeError)
    def handle_unencodable_text(exc):
        # A lone surrogate (JSON's "\ud800"), which no UTF-8 text can hold:
        # refused while the statement was being built, so nothing was sent
        # and the transaction rolled back.
        return _respond(
            AppError(400, "invalid_text", "text must be valid Unicode (no lone surrogates)")
        )

    from psycopg_pool import PoolTimeout

    @app.errorhandler(PoolTimeout)
    def handle_pool_timeout(exc):
        _logger.warning("database.pool_timeout")
        return _respond(
            AppError(
                503, "unavailable", "the database is unavailable; try again shortly"
            )
        )
