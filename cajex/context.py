"""Signed workspace-context tokens.

The web app and the workers sign a short-lived token naming who acts; the
database verifies it in `cajex_private.open_context` with the same secret,
which the database role of a request cannot read. See
db/functions/000_context.sql for the layout and the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid

#: How long a token is good for. A token only ever opens one transaction's
#: context, so a minute is plenty; the DBA's `as-member` asks for longer.
DEFAULT_TTL = 60

_LABEL = re.compile(r"^[a-z0-9_:-]{1,64}$")


def _sign(secret_hex: str, parts: list[str]) -> str:
    body = ".".join(parts)
    mac = hmac.new(bytes.fromhex(secret_hex), body.encode("ascii"), hashlib.sha256)
    return f"{body}.{mac.hexdigest()}"


def user_token(
    secret_hex: str,
    user_id: uuid.UUID | str,
    session_id: uuid.UUID | str,
    ttl: int = DEFAULT_TTL,
) -> str:
    """A token for a signed-in user's session; the workspace is named on opening."""
    exp = int(time.time()) + ttl
    return _sign(
        secret_hex,
        [
            "v1",
            "u",
            str(uuid.UUID(str(user_id))),
            str(uuid.UUID(str(session_id))),
            str(exp),
        ],
    )


def session_credential(session_id: uuid.UUID | str, session_secret: str) -> str:
    """A signed-in browser's context credential: its session id and secret.

    The secret is the one in the browser's cookie; the database keeps only
    its SHA-256 and checks it on every statement (cajex_private.context).
    """
    return f"v2.{uuid.UUID(str(session_id))}.{session_secret}"


def service_token(
    secret_hex: str, workspace_id: uuid.UUID | str, label: str, ttl: int = DEFAULT_TTL
) -> str:
    """A token for a job acting for one workspace; `label` names the job in the audit log."""
    if not _LABEL.match(label):
        raise ValueError("a job label has 1-64 of a-z, 0-9, _, : and -")
    exp = int(time.time()) + ttl
    return _sign(
        secret_hex, ["v1", "s", str(uuid.UUID(str(workspace_id))), label, str(exp)]
    )
