"""Error codes: SQLSTATEs raised by the SQL functions, mapped to HTTP once.

Business rules raise their own five-character SQLSTATE (class CX) with a
readable message; the web layer answers with the HTTP status and stable code
below, and never with a database message it did not write itself.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ErrorCode:
    status: int
    code: str


#: SQLSTATE -> (HTTP status, stable error code). Areas add their own rows.
SQLSTATES: dict[str, ErrorCode] = {
    "CXNCX": ErrorCode(401, "no_context"),
    "CXFBD": ErrorCode(403, "forbidden"),
    "CXNFD": ErrorCode(404, "not_found"),
    "CXINV": ErrorCode(422, "invalid"),
    "CXSLG": ErrorCode(409, "slug_taken"),
    "CXOWN": ErrorCode(409, "owner_required"),
    "CXDUP": ErrorCode(409, "duplicate"),
    "CXAPO": ErrorCode(409, "append_only"),
    "CXMIG": ErrorCode(500, "migration_edited"),
    "CXPLN": ErrorCode(402, "plan_limit"),
    "CXFTR": ErrorCode(402, "plan_feature"),
    "CXQTA": ErrorCode(429, "quota_exceeded"),
    "CXSTL": ErrorCode(409, "conflict"),
    "CXEXP": ErrorCode(410, "expired"),
    "CXRTL": ErrorCode(429, "rate_limited"),
    "CXLST": ErrorCode(409, "last_sign_in_method"),
    # PostgreSQL's own, for the few a request can reach.
    "23505": ErrorCode(409, "duplicate"),
    "23514": ErrorCode(422, "invalid"),
    # A NUL character in text or JSON, which PostgreSQL cannot hold.
    "22P05": ErrorCode(400, "invalid_text"),
    "22P02": ErrorCode(400, "malformed"),
    "22001": ErrorCode(422, "too_long"),
    "40001": ErrorCode(503, "retry"),
    "40P01": ErrorCode(503, "retry"),
    "55P03": ErrorCode(503, "retry"),
    "57014": ErrorCode(503, "timeout"),
}

#: Codes whose database message was written by us and may be shown.
OWN_MESSAGES = {code for code in SQLSTATES if code.startswith("CX")}


class AppError(Exception):
    """An error the web layer answers with `status` and the stable `code`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def to_json(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return {"error": body}


def from_database(exc) -> AppError | None:
    """The AppError for a psycopg error, or None when it is not a known one."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None and "NUL (0x00)" in str(exc):
        # psycopg refuses a NUL character in text before anything is sent
        # (PostgreSQL cannot store one): bad input, and nothing was written.
        return AppError(400, "invalid_text", "text may not contain NUL characters")
    known = SQLSTATES.get(sqlstate or "")
    if known is None:
        return None
    diag = getattr(exc, "diag", None)
    if sqlstate in OWN_MESSAGES and diag is not None and diag.message_primary:
        message = diag.message_primary
        field = diag.message_detail
    else:
        message = {
            "duplicate": "that already exists",
            "invalid": "a value is not allowed",
            "malformed": "a value is malformed",
            "too_long": "a value is too long",
            "invalid_text": "text may not contain NUL characters",
            "retry": "the database is busy; try again",
            "timeout": "the request took too long; try again",
        }.get(known.code, "the request cannot be done")
        field = None
    return AppError(known.status, known.code, message, field)
