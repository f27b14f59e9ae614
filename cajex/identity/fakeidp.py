"""A small, real OpenID Connect and GitHub-style OAuth provider on loopback.

Tests (and a developer without internet) run it as a real HTTP server in a
thread: discovery, JWKS with key rotation, an authorization endpoint that
approves `next_user` at once (query or form_post), a token endpoint that
checks the client and the PKCE verifier, and GitHub's `/user` and
`/user/emails`. Hooks let a hostile test tamper with what is signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cajex.localservices import free_port


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int, length: int | None = None) -> str:
    length = length or (n.bit_length() + 7) // 8
    return _b64(n.to_bytes(length, "big"))


class SigningKey:
    """An RSA (RS256) or EC P-256 (ES256) key with its public JWK."""

    def __init__(self, kid: str, kind: str = "RSA"):
        self.kid = kid
        self.kind = kind
        if kind == "RSA":
            self.private = rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            )
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"

    def public_jwk(self) -> dict:
        numbers = self.private.public_key().public_numbers()
        if self.kind == "RSA":
            return {
                "kty": "RSA",
                "kid": self.kid,
                "use": "sig",
                "alg": "RS256",
                "n": _int_b64(numbers.n),
                "e": _int_b64(numbers.e),
            }
        return {
            "kty": "EC",
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
            "crv": "P-256",
            "x": _int_b64(numbers.x, 32),
            "y": _int_b64(numbers.y, 32),
        }

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def sign(self, data: bytes) -> bytes:
        if self.kind == "RSA":
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        r, s = utils.decode_dss_signature(
            self.private.sign(data, ec.ECDSA(hashes.SHA256()))
        )
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def make_jwt(
    header: dict,
    claims: dict,
    key: SigningKey | None,
    *,
    hs_secret: bytes | None = None,
) -> str:
    """Sign `claims`: with `key`, with HMAC over `hs_secret`, or unsigned (alg none)."""
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    if hs_secret is not None:
        signature = hmac.new(hs_secret, signing_input.encode(), hashlib.sha256).digest()
    elif key is None:
        signature = b""
    else:
        signature = key.sign(signing_input.encode())
    return signing_input + "." + _b64(signature)


class FakeProvider:
    """An identity provider served on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        *,
        client_id: str = "cajex-client",
        client_secret: str = "s3cret",  # noqa: S107 (test provider)
        key_kind: str = "RSA",
        issuer_path: str = "",
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = self.url + issuer_path
        self.client_id = client_id
        self.client_secret = client_secret
        self.key_kind = key_kind
        self.keys: list[SigningKey] = [SigningKey("k1", key_kind)]
        #: Claims the next approved sign-in gets (sub, email, email_verified, name...).
        self.next_user: dict = {
            "sub": "user-1",
            "email": "ada@example.com",
            "email_verified": True,
        }
        #: GitHub-style profile and emails for the OAuth 2 endpoints.
        self.github_user: dict = {"id": 4242, "login": "ada"}
        self.github_emails: list[dict] = [
            {"email": "ada@example.com", "primary": True, "verified": True}
        ]
        #: (header, claims) -> (header, claims, mode): lets a test tamper with the ID token.
        #: mode is "key", "none" or "hs256_public".
        self.tamper: Callable[[dict, dict], tuple[dict, dict, str]] | None = None
        #: Extra fields (Apple's `user` JSON) posted alongside a form_post callback.
        self.form_extra: dict = {}
        self.codes: dict[str, dict] = {}
        self.jwks_requests = 0
        self.token_requests: list[dict] = []
        self.check_client_secret: Callable[[str], bool] | None = None
        self._server = None
        self._thread = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeProvider:
        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True)
        # A short poll: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def rotate(self, drop_old: bool = True) -> SigningKey:
        """Make a new current signing key (the JWKS then lists it)."""
        key = SigningKey(f"k{len(self.keys) + 1}-{secrets.token_hex(2)}", self.key_kind)
        self.keys = [key] if drop_old else [key, *self.keys]
        return key

    @property
    def current_key(self) -> SigningKey:
        return self.keys[0]

    # -- tokens ------------------------------------------------------------

    def id_token(self, nonce: str | None, user: dict | None = None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 600,
            **(user or self.next_user),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(overrides)
        key = self.current_key
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        mode = "key"
        if self.tamper is not None:
            header, claims, mode = self.tamper(dict(header), dict(claims))
        if mode == "none":
            return make_jwt(header, claims, None)
        if mode == "hs256_public":
            return make_jwt(header, claims, None, hs_secret=key.public_pem())
        return make_jwt(header, claims, key)

    # -- HTTP ----------------------------------------------------------------

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        routes = {
            "/.well-known/openid-configuration": self._discovery,
            "/jwks": self._jwks,
            "/authorize": self._authorize,
            "/token": self._token,
            "/login/oauth/authorize": self._gh_authorize,
            "/login/oauth/access_token": self._gh_token,
            "/user": self._gh_user,
            "/user/emails": self._gh_emails,
        }
        path = request.path
        if self.issuer != self.url and path.startswith(self.issuer[len(self.url) :]):
            path = path[len(self.issuer) - len(self.url) :] or "/"
        handler = routes.get(path)
        response = handler(request) if handler else Response("not found", status=404)
        return response(environ, start_response)

    def _json(self, data, status: int = 200) -> Response:
        return Response(json.dumps(data), status=status, mimetype="application/json")

    def _discovery(self, request: Request) -> Response:
        base = self.issuer
        return self._json(
            {
                "issuer": self.issuer,
                "authorization_endpoint": base + "/authorize",
                "token_endpoint": base + "/token",
                "jwks_uri": base + "/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.current_key.alg],
                "code_challenge_methods_supported": ["S256"],
                "response_modes_supported": ["query", "form_post"],
                # RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
                "end_session_endpoint": base + "/logout",
            }
        )

    def _jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        return self._json({"keys": [k.public_jwk() for k in self.keys]})

    def _authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("client_id") != self.client_id:
            return Response("unknown client", status=400)
        if args.get("code_challenge_method") != "S256" or not args.get(
            "code_challenge"
        ):
            return Response("PKCE required", status=400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "redirect_uri": args.get("redirect_uri"),
            "challenge": args.get("code_challenge"),
            "nonce": args.get("nonce"),
            "user": dict(self.next_user),
        }
        values = {"code": code, "state": args.get("state", "")}
        values.update(self.form_extra)
        if args.get("response_mode") == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in values.items()
            )
            page = (
                f'<form method="post" action="{html.escape(args["redirect_uri"])}">'
                f"{inputs}</form>"
            )
            return Response(page, mimetype="text/html")
        target = args["redirect_uri"] + "?" + urllib.parse.urlencode(values)
        return Response(status=302, headers={"Location": target})

    def _token(self, request: Request) -> Response:
        form = request.form
        self.token_requests.append(dict(form))
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None:
            return self._json({"error": "invalid_grant"}, 400)
        secret = form.get("client_secret")
        if request.authorization and request.authorization.password:
            secret = request.authorization.password
        ok = (
            self.check_client_secret(secret or "")
            if self.check_client_secret
            else secret == self.client_secret
        )
        if form.get("client_id") != self.client_id or not ok:
            return self._json({"error": "invalid_client"}, 401)
        if form.get("redirect_uri") != entry["redirect_uri"]:
            return self._json({"error": "invalid_grant"}, 400)
        verifier = form.get("code_verifier", "")
        if _b64(hashlib.sha256(verifier.encode()).digest()) != entry["challenge"]:
            return self._json(
                {"error": "invalid_grant", "error_description": "pkce"}, 400
            )
        return self._json(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 600,
                "id_token": self.id_token(entry["nonce"], entry["user"]),
            }
        )

    # -- GitHub-style OAuth 2 ----------------------------------------------

    def _gh_authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("client_id") != self.client_id:
            return Response("unknown client", status=400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "redirect_uri": args.get("redirect_uri"),
            "challenge": args.get("code_challenge"),
        }
        target = (
            args["redirect_uri"]
            + "?"
            + urllib.parse.urlencode({"code": code, "state": args.get("state", "")})
        )
        return Response(status=302, headers={"Location": target})

    def _gh_token(self, request: Request) -> Response:
        form = request.form
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None or form.get("client_secret") != self.client_secret:
            return self._json({"error": "bad_verification_code"})
        if entry.get("challenge"):
            verifier = form.get("code_verifier", "")
            if _b64(hashlib.sha256(verifier.encode()).digest()) != entry["challenge"]:
                return self._json({"error": "bad_verification_code"})
        token = "gho_" + secrets.token_urlsafe(16)
        self.codes["token:" + token] = {}
        return self._json(
            {"access_token": token, "token_type": "bearer", "scope": "user:email"}
        )

    def _bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.split(" ", 1)[1] if " " in header else ""
        return ("token:" + token) in self.codes

    def _gh_user(self, request: Request) -> Response:
        if not self._bearer_ok(request):
            return self._json({"message": "Bad credentials"}, 401)
        return self._json(self.github_user)

    def _gh_emails(self, request: Request) -> Response:
        if not self._bearer_ok(request):
            return self._json({"message": "Bad credentials"}, 401)
        return self._json(self.github_emails)
