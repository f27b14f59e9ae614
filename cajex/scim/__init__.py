"""SCIM 2.0 provisioning (RFC 7643/7644) for one workspace per token.

`filter` parses and compiles filters, `resources` turns rows into SCIM
resources and SCIM input (including PATCH operations) into the plain fields
the SQL functions in db/functions/310_scim.sql take, and `tokens` makes and
hashes bearer tokens. The HTTP endpoints are in web/views/scim.py.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "cxscim_"  # noqa: S105 (a prefix, not a secret)

SCHEMA_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCHEMA_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCHEMA_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCHEMA_LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SCHEMA_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCHEMA_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def new_token() -> str:
    """A new bearer token: only its hash (token_hash) is ever stored."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_token(conn, label: str) -> tuple[str, str]:
    """Create a token in the open workspace's context; returns (id, token)."""
    token = new_token()
    row = conn.execute(
        "select cajex.create_scim_token(%s, %s) as id", (label, token_hash(token))
    ).fetchone()
    token_id = row["id"] if isinstance(row, dict) else row[0]
    return str(token_id), token
