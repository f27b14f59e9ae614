"""Members and invitations: tokens, links, bulk lists and the permission doc.

The rules themselves live in SQL (db/functions/400_members.sql); this module
makes what SQL must not see (the invitation token, which only its hash
reaches the database), reads bulk lists (CSV or pasted text) into rows, and
renders docs/permissions.md from cajex.role_permissions.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import secrets
from urllib.parse import quote

from psycopg.rows import tuple_row

MAX_BULK_ROWS = 1000
#: Bulk invitations go to the database in chunks of this many rows, so a
#: large list shows progress and no transaction holds many locks for long.
CHUNK_SIZE = 100
ROLES = ("admin", "member", "viewer")
ALL_ROLES = ("owner", "admin", "member", "viewer", "system")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


class BulkListError(ValueError):
    """A list that cannot be read at all (not a row-level problem)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def new_token() -> tuple[str, bytes]:
    """A fresh invitation token and the SHA-256 the database stores."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def valid_token(token: str) -> bool:
    return bool(_TOKEN.match(token or ""))


def accept_link(public_url: str, slug: str, token: str) -> str:
    """The link an invitation email carries (built from settings.public_url)."""
    return f"{public_url.rstrip('/')}/w/{quote(slug)}/join/{token}"


@dataclasses.dataclass
class BulkRow:
    line: int
    email: str
    role: str


def parse_bulk(data: bytes | str, default_role: str = "member") -> list[BulkRow]:
    """Rows of a pasted list or CSV file: `email[,role]` per line.

    A header line (email, role) is skipped; blank lines are ignored. Raises
    BulkListError for bytes that are not UTF-8 text and for more than
    MAX_BULK_ROWS rows. Row-level problems (a bad address, an unknown role)
    are left to the database to answer per row.
    """
    if isinstance(data, bytes):
        if b"\x00" in data:
            raise BulkListError("bad_encoding", "the file is not text: save it as CSV in UTF-8")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BulkListError(
                "bad_encoding", "the file is not UTF-8 text: save it as CSV in UTF-8 and upload it again"
            ) from None
    else:
        text = data
    rows: list[BulkRow] = []
    reader = csv.reader(io.StringIO(text.replace(";", ",")) if "," not in text else io.StringIO(text))
    for index, fields in enumerate(reader, start=1):
        cells = [c.strip() for c in fields]
        if not any(cells):
            continue
        email = cells[0]
        role = (cells[1].lower() if len(cells) > 1 and cells[1] else default_role)
        if not rows and email.lower() in ("email", "e-mail", "address") and index == 1:
            continue
        rows.append(BulkRow(index, email[:400], role[:40]))
        if len(rows) > MAX_BULK_ROWS:
            raise BulkListError(
                "too_many_rows",
                f"a list has at most {MAX_BULK_ROWS} rows; split it and invite the rest in another list",
            )
    if not rows:
        raise BulkListError("empty", "the list has no addresses")
    return rows


def safe_cell(value: str) -> str:
    """A value that spreadsheet programs will not run as a formula."""
    value = value or ""
    if value[:1] in ("=", "+", "-", "@", "\t", "\r", "|", "%"):
        return "'" + value
    return value


def results_csv(results: list[dict]) -> str:
    """Per-row results as CSV, safe to open in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "email", "role", "result"])
    for r in results:
        writer.writerow([r["line"], safe_cell(r["email"]), safe_cell(r.get("role", "")), r["outcome"]])
    return out.getvalue()


def invite_rows(conn, public_url: str, slug: str, rows: list[BulkRow]) -> list[dict]:
    """Invite `rows` in the open workspace (one SQL call); per-row outcomes.

    The five lists travel in binary and the answer comes back as tuples: for
    a thousand rows, text-quoting each element and building a dict per row
    cost more than the statement itself.
    """
    tokens = [new_token() for _ in rows]
    base = accept_link(public_url, slug, "")
    cur = conn.cursor(row_factory=tuple_row)
    found = cur.execute(
        "select line, email, outcome, invitation_id from cajex.invite_members(%s, %s, %s, %s, %s)",
        (
            [r.line for r in rows],
            [r.email for r in rows],
            [r.role for r in rows],
            [digest for _, digest in tokens],
            [base + token for token, _ in tokens],
        ),
        binary=True,
    ).fetchall()
    roles = {r.line: r.role for r in rows}
    return [
        {
            "line": line,
            "email": email or "",
            "role": roles.get(line, ""),
            "outcome": outcome,
            "invitation_id": str(invitation_id) if invitation_id else None,
        }
        for line, email, outcome, invitation_id in found
    ]


# -- the permission matrix ----------------------------------------------------


def permission_matrix(conn) -> tuple[list[str], dict[str, set[str]]]:
    """(permissions in order, permission -> roles) from cajex.role_permissions."""
    rows = conn.execute("select permission, role from cajex.role_permissions order by permission").fetchall()
    matrix: dict[str, set[str]] = {}
    for r in rows:
        matrix.setdefault(r["permission"], set()).add(r["role"])
    return sorted(matrix), matrix


def render_permissions_doc(conn) -> str:
    """docs/permissions.md, generated from the matrix in SQL."""
    permissions, matrix = permission_matrix(conn)
    lines = [
        "# Permissions",
        "",
        "Generated from `cajex.role_permissions` by `cajex members permissions-doc`;",
        "a test fails when this file and the table disagree. Every SQL function that",
        "changes something checks its row with `cajex_private.require_permission()`.",
        "`system` is a background job acting for the workspace.",
        "",
        "| Permission | " + " | ".join(ALL_ROLES) + " |",
        "|---|" + "---|" * len(ALL_ROLES),
    ]
    for p in permissions:
        cells = ["yes" if role in matrix[p] else "no" for role in ALL_ROLES]
        lines.append(f"| `{p}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Rules beyond the matrix, enforced in the same functions:",
        "",
        "- Only the owner grants or withdraws the admin role, and removes an admin.",
        "- The owner's role changes only by transferring ownership; the owner can",
        "  neither leave nor be removed before transferring.",
        "- Moving projects needs `project.move` in both workspaces of the organisation.",
        "- Any member may leave a workspace.",
        "",
    ]
    return "\n".join(lines)
