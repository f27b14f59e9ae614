"""HS256 JSON Web Tokens for PostgREST (its `jwt-secret`).

Only what PostgREST needs: sign with HS256, and verify HS256 for the tests
that replay what PostgREST checks. `alg` is pinned; nothing else is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: dict, secret: str) -> str:
    header = _b64(
        json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()
    )
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(
        secret.encode(), f"{header}.{body}".encode(), hashlib.sha256
    ).digest()
    return f"{header}.{body}.{_b64(mac)}"


class InvalidToken(ValueError):
    pass


#: The audience PostgREST is configured to accept (its `jwt-aud`).
AUDIENCE = "cajex-postgrest"


def verify(
    token: str, secret: str, leeway: int = 0, audience: str | None = AUDIENCE
) -> dict:
    """The claims of a token PostgREST would accept: HS256 under `secret`,
    an expiry that has not passed, and `audience` as its aud (None: any)."""
    try:
        header_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        claims = json.loads(_unb64(body_b64))
    except ValueError as exc:
        raise InvalidToken("malformed") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidToken("alg")
    mac = hmac.new(
        secret.encode(), f"{header_b64}.{body_b64}".encode(), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(_b64(mac), sig_b64):
        raise InvalidToken("signature")
    if not isinstance(claims, dict):
        raise InvalidToken("malformed")
    expiry = claims.get("exp")
    if not isinstance(expiry, int) or isinstance(expiry, bool):
        raise InvalidToken("no_expiry")
    if expiry + leeway < time.time():
        raise InvalidToken("expired")
    if audience is not None and claims.get("aud") != audience:
        raise InvalidToken("audience")
    return claims


def postgrest_token(
    secret: str, user_id: str, session_id: str, workspace_id: str, ttl: int = 300
) -> str:
    """A short-lived token for one member's workspace, for PostgREST."""
    now = int(time.time())
    return sign(
        {
            "role": "cajex_api",
            "sub": str(user_id),
            "sid": str(session_id),
            "workspace_id": str(workspace_id),
            "iat": now,
            "exp": now + ttl,
            "aud": AUDIENCE,
        },
        secret,
    )
