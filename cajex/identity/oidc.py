"""OpenID Connect relying party: authorization code flow with PKCE, verified here.

One `RelyingParty` per provider connection (Google, Apple, an enterprise IdP).
`begin()` returns the authorization URL plus the `state`, `nonce` and PKCE
`code_verifier` the caller must keep (server-side or in the signed cookie);
`complete()` takes the callback parameters and those three values back and
returns the ID token's claims once every check below has passed:

- `state` equals the one issued (constant-time compare);
- the code is exchanged at the token endpoint with the PKCE verifier;
- the ID token's `alg` is one of the pinned algorithms (never `none`, never a
  symmetric HS* algorithm: a provider's public key must not double as an HMAC
  secret), its `kid` names a key of the provider's JWKS (an unknown `kid`
  refetches the JWKS at most once per `jwks_refresh_seconds`: key rotation
  without letting an attacker hammer the provider), and the signature holds;
- `iss` equals the configured issuer, `aud` contains the client id, `azp`
  equals the client id when there are several audiences (or when present),
  `exp` is in the future and `iat` not in the future, both within
  `clock_skew` seconds, and `nonce` equals the one issued.

The `oic` package (pyoidc) builds and parses the protocol messages and
`jwkest` (its JOSE library) parses keys and checks signatures; every claim is
checked by this module itself, because oic's own verification skips checks in
some call paths (the nonce, for instance, when the request was built with
`construct_AuthorizationRequest`).

`verify_jwt()` is the same verification for other signed tokens (back-channel
logout tokens), and `apple_client_secret()` makes Apple's ES256 client secret.
Errors are `OIDCError` subclasses, each with a stable `code`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from jwkest import BadSignature
from jwkest.jws import JWS, NoSuitableSigningKeys
from oic.oauth2.message import AccessTokenResponse, SchemeError
from oic.oic.message import AuthorizationRequest, ProviderConfigurationResponse
from oic.utils.keyio import KeyBundle

from cajex import log

_logger = log.get("cajex.identity.oidc")

#: Asymmetric algorithms a relying party may pin. HS* and `none` are absent on
#: purpose: they are never accepted for tokens signed by a provider's key pair.
ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)

#: Upper bounds on what a provider or a callback may hand us.
MAX_TOKEN_BYTES = 16_384
MAX_PARAM_BYTES = 4_096
MAX_DOCUMENT_BYTES = 262_144


# ---------------------------------------------------------------------------
# Errors


class OIDCError(Exception):
    """A sign-in that must not proceed. `code` is stable; the message is for logs/UI."""

    code = "oidc_error"
    status = 400

    def __init__(self, message: str | None = None):
        super().__init__(message or self.code)
        self.message = message or self.code


class MissingParameter(OIDCError):
    code = "oidc_missing_parameter"


class OversizeValue(OIDCError):
    code = "oidc_oversize"


class StateMismatch(OIDCError):
    code = "oidc_state_mismatch"


class ProviderDenied(OIDCError):
    """The provider answered the authorization request with an `error`."""

    code = "oidc_provider_error"


class TokenExchangeFailed(OIDCError):
    code = "oidc_token_exchange_failed"
    status = 502


class DiscoveryFailed(OIDCError):
    code = "oidc_discovery_failed"
    status = 502


class MalformedToken(OIDCError):
    code = "oidc_malformed_token"


class AlgorithmRejected(OIDCError):
    code = "oidc_alg_rejected"


class UnknownKey(OIDCError):
    code = "oidc_unknown_key"


class BadTokenSignature(OIDCError):
    code = "oidc_bad_signature"


class IssuerMismatch(OIDCError):
    code = "oidc_issuer_mismatch"


class AudienceMismatch(OIDCError):
    code = "oidc_audience_mismatch"


class AzpMismatch(OIDCError):
    code = "oidc_azp_mismatch"


class TokenExpired(OIDCError):
    code = "oidc_token_expired"


class IssuedInFuture(OIDCError):
    code = "oidc_iat_in_future"


class MissingClaim(OIDCError):
    code = "oidc_missing_claim"


class NonceMismatch(OIDCError):
    code = "oidc_nonce_mismatch"


# ---------------------------------------------------------------------------
# Small helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _same(a: str | None, b: str | None) -> bool:
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def _get_json(http: httpx.Client, url: str, what: str) -> dict:
    try:
        response = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise DiscoveryFailed(f"{what} unreachable") from exc
    if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
        raise DiscoveryFailed(f"{what} answered {response.status_code}")
    try:
        data = response.json()
    except ValueError as exc:
        raise DiscoveryFailed(f"{what} is not JSON") from exc
    if not isinstance(data, dict):
        raise DiscoveryFailed(f"{what} is not a JSON object")
    return data


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def default_http(timeout: float = 10.0) -> httpx.Client:
    # Redirects are not followed: a discovery or token endpoint that redirects
    # elsewhere is a misconfiguration, not something to chase.
    return httpx.Client(timeout=timeout, follow_redirects=False)


# ---------------------------------------------------------------------------
# Keys


class KeySet:
    """A provider's JWKS, fetched over HTTP, cached, refetched on key rotation.

    An unknown `kid` triggers one refetch, but never more often than once per
    `refresh_seconds` (a forged token with random `kid`s must not turn us into
    a load generator against the provider). `max_age` bounds how long a
    fetched set is trusted before it is refreshed anyway.
    """

    def __init__(
        self,
        jwks_uri: str,
        *,
        http: httpx.Client | None = None,
        refresh_seconds: float = 60.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.jwks_uri = jwks_uri
        self._http = http or default_http()
        self.refresh_seconds = refresh_seconds
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list = []
        self._fetched_at: float | None = None
        #: How many times the JWKS was fetched (tests and metrics read it).
        self.fetches = 0

    def _fetch(self) -> None:
        document = _get_json(self._http, self.jwks_uri, "jwks")
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise DiscoveryFailed("jwks has no keys")
        # Symmetric keys in a public JWKS make no sense and would let HS*
        # tokens verify: drop them.
        usable = [
            k for k in raw if isinstance(k, dict) and k.get("kty") in ("RSA", "EC")
        ]
        bundle = KeyBundle(keys=usable)
        self._keys = [
            k for k in bundle.keys() if getattr(k, "use", "") in ("", "sig", None)
        ]
        self._fetched_at = self._clock()
        self.fetches += 1
        _logger.info("oidc.jwks_fetched", keys=len(self._keys), fetches=self.fetches)

    def keys_for(self, kid: str | None, alg: str) -> list:
        """Keys that may have signed a token with this header, refetching once if needed."""
        kty = "RSA" if alg[:2] in ("RS", "PS") else "EC"
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at > self.max_age:
                self._fetch()
            found = self._match(kid, kty)
            if not found and now - (self._fetched_at or 0) >= self.refresh_seconds:
                self._fetch()
                found = self._match(kid, kty)
        if not found:
            raise UnknownKey("no key of the provider matches this token")
        return found

    def _match(self, kid: str | None, kty: str) -> list:
        same_type = [k for k in self._keys if k.kty == kty]
        if kid is None:
            # Without a kid only an unambiguous key set is acceptable.
            return same_type if len(same_type) == 1 else []
        return [k for k in same_type if k.kid == kid]


# ---------------------------------------------------------------------------
# Token verification, reusable for logout tokens


def decode_header(token: str) -> dict:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise MalformedToken("token missing or too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("not a compact JWS")
    try:
        header = json.loads(_unb64url(parts[0]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedToken("bad header") from exc
    if not isinstance(header, dict):
        raise MalformedToken("bad header")
    return header


def verify_jwt(
    token: str,
    *,
    keys: KeySet,
    allowed_algs: Iterable[str],
    issuer: str,
    audience: str,
    clock_skew: int = 60,
    require_exp: bool = True,
    require_iat: bool = True,
    require_sub: bool = True,
    nonce: str | None = None,
    check_nonce: bool = False,
    now: float | None = None,
) -> dict:
    """The claims of `token` after checking alg, key, signature, iss, aud, azp, exp, iat.

    With `check_nonce` the `nonce` claim must equal `nonce`. Raises an
    `OIDCError` subclass naming the first check that failed.
    """
    allowed = set(allowed_algs)
    header = decode_header(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed or alg not in ASYMMETRIC_ALGS:
        raise AlgorithmRejected(f"alg {alg!r} is not accepted")
    if "jku" in header or "x5u" in header or "jwk" in header:
        # Keys named inside the token itself are the attacker's keys.
        raise AlgorithmRejected("embedded or remote keys are not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedToken("bad kid")
    candidates = keys.keys_for(kid, alg)
    try:
        claims = JWS().verify_compact(token, keys=candidates, sigalg=alg)
    except (BadSignature, NoSuitableSigningKeys) as exc:
        raise BadTokenSignature("signature does not verify") from exc
    except Exception as exc:  # jwkest raises a zoo of types on garbage input
        raise BadTokenSignature("signature does not verify") from exc
    if not isinstance(claims, dict):
        raise MalformedToken("claims are not an object")
    check_claims(
        claims,
        issuer=issuer,
        audience=audience,
        clock_skew=clock_skew,
        require_exp=require_exp,
        require_iat=require_iat,
        require_sub=require_sub,
        nonce=nonce,
        check_nonce=check_nonce,
        now=now,
    )
    return claims


def check_claims(
    claims: dict,
    *,
    issuer: str,
    audience: str,
    clock_skew: int,
    require_exp: bool = True,
    require_iat: bool = True,
    require_sub: bool = True,
    nonce: str | None = None,
    check_nonce: bool = False,
    now: float | None = None,
) -> None:
    """Check the registered claims of an already signature-verified token."""
    now = time.time() if now is None else now
    if claims.get("iss") != issuer:
        raise IssuerMismatch("the token was issued by someone else")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(
        isinstance(a, str) for a in audiences
    ):
        raise AudienceMismatch("the token has no valid audience")
    if audience not in audiences:
        raise AudienceMismatch("the token is for another client")
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise AzpMismatch("several audiences and no authorized party")
    if azp is not None and azp != audience:
        raise AzpMismatch("the token was issued to another client")
    exp = claims.get("exp")
    if exp is None:
        if require_exp:
            raise MissingClaim("exp")
    elif not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise MalformedToken("exp is not a number")
    elif exp + clock_skew < now:
        raise TokenExpired("the token has expired")
    iat = claims.get("iat")
    if iat is None:
        if require_iat:
            raise MissingClaim("iat")
    elif not isinstance(iat, (int, float)) or isinstance(iat, bool):
        raise MalformedToken("iat is not a number")
    elif iat - clock_skew > now:
        raise IssuedInFuture("the token was issued in the future")
    # A back-channel logout token may name a session (`sid`) without a
    # subject; when `sub` is there it is checked all the same.
    if (require_sub or "sub" in claims) and (
        not isinstance(claims.get("sub"), str)
        or not claims["sub"]
        or len(claims["sub"]) > 255
    ):
        raise MissingClaim("sub")
    if check_nonce and not _same(claims.get("nonce"), nonce):
        raise NonceMismatch("the nonce does not match this sign-in")


# ---------------------------------------------------------------------------
# Apple's client secret


def apple_client_secret(
    *,
    team_id: str,
    key_id: str,
    client_id: str,
    private_key_pem: str | bytes,
    ttl: int = 300,
) -> str:
    """Apple's client secret: an ES256 JWT signed with the team's private key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    if isinstance(private_key_pem, str):
        private_key_pem = private_key_pem.encode()
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("Apple's key must be an EC P-256 key")
    now = int(time.time())
    header = {"alg": "ES256", "kid": key_id, "typ": "JWT"}
    claims = {
        "iss": team_id,
        "iat": now,
        "exp": now + ttl,
        "aud": "https://appleid.apple.com",
        "sub": client_id,
    }
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


# ---------------------------------------------------------------------------
# The relying party


@dataclasses.dataclass(frozen=True)
class AuthRequest:
    """What `begin()` hands back: send the browser to `url`, keep the rest."""

    url: str
    state: str
    nonce: str
    code_verifier: str

    def __iter__(self):
        return iter((self.url, self.state, self.nonce, self.code_verifier))


@dataclasses.dataclass
class Result:
    """A completed sign-in: verified ID token claims plus the raw token response."""

    claims: dict
    id_token: str
    access_token: str | None
    extra: dict


_DISCOVERY_CACHE: dict[str, tuple[float, dict]] = {}
_KEYSETS: dict[str, KeySet] = {}
_CACHE_LOCK = threading.Lock()


def clear_caches() -> None:
    """Forget discovery documents and key sets (tests, configuration changes)."""
    with _CACHE_LOCK:
        _DISCOVERY_CACHE.clear()
        _KEYSETS.clear()


class RelyingParty:
    """One OpenID Connect client registration at one provider."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        redirect_uri: str,
        client_secret: str | Callable[[], str] | None = None,
        allowed_algs: Iterable[str] | None = None,
        clock_skew: int = 60,
        response_mode: str | None = None,
        scope: str = "openid email profile",
        discovery_url: str | None = None,
        token_auth: str = "client_secret_post",  # noqa: S107 (a method name)
        jwks_refresh_seconds: float = 60.0,
        discovery_max_age: float = 3600.0,
        http: httpx.Client | None = None,
    ):
        if not issuer or not client_id or not redirect_uri:
            raise ValueError("issuer, client_id and redirect_uri are required")
        if allowed_algs is not None:
            pinned = set(allowed_algs)
            bad = pinned - ASYMMETRIC_ALGS
            if bad or not pinned:
                raise ValueError(f"algorithms not allowed for ID tokens: {sorted(bad)}")
            self._pinned: frozenset[str] | None = frozenset(pinned)
        else:
            self._pinned = None
        if response_mode not in (None, "query", "form_post"):
            raise ValueError("response_mode must be query or form_post")
        if token_auth not in ("client_secret_post", "client_secret_basic", "none"):
            raise ValueError(
                "token_auth must be client_secret_post, client_secret_basic or none"
            )
        self.issuer = issuer
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self._client_secret = client_secret
        self.clock_skew = int(clock_skew)
        self.response_mode = response_mode
        self.scope = scope
        self.discovery_url = (
            discovery_url or issuer.rstrip("/") + "/.well-known/openid-configuration"
        )
        self.token_auth = token_auth
        self.jwks_refresh_seconds = jwks_refresh_seconds
        self.discovery_max_age = discovery_max_age
        self._http = http or default_http()

    # -- configuration -----------------------------------------------------

    def client_secret(self) -> str | None:
        secret = self._client_secret
        return secret() if callable(secret) else secret

    def metadata(self) -> dict:
        """The provider's discovery document, cached for `discovery_max_age`."""
        now = time.monotonic()
        with _CACHE_LOCK:
            cached = _DISCOVERY_CACHE.get(self.discovery_url)
        if cached and now - cached[0] < self.discovery_max_age:
            return cached[1]
        document = _get_json(self._http, self.discovery_url, "discovery")
        try:
            ProviderConfigurationResponse(**document).verify()
        except SchemeError as exc:
            # oic insists on https; plain http is accepted for loopback
            # providers only (development and tests), never for a real host.
            if not _is_loopback(self.issuer):
                raise DiscoveryFailed("the provider is not served over https") from exc
        except Exception as exc:
            raise DiscoveryFailed("discovery document is invalid") from exc
        if document.get("issuer") != self.issuer:
            # The discovery document must speak for the configured issuer.
            raise DiscoveryFailed("discovery document names another issuer")
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(field), str):
                raise DiscoveryFailed(f"discovery document lacks {field}")
        with _CACHE_LOCK:
            _DISCOVERY_CACHE[self.discovery_url] = (now, document)
        return document

    def keyset(self) -> KeySet:
        uri = self.metadata()["jwks_uri"]
        with _CACHE_LOCK:
            found = _KEYSETS.get(uri)
            if found is None:
                found = _KEYSETS[uri] = KeySet(
                    uri, http=self._http, refresh_seconds=self.jwks_refresh_seconds
                )
        return found

    def allowed_algs(self) -> frozenset[str]:
        """The pinned algorithms, else the provider's advertised asymmetric ones."""
        if self._pinned is not None:
            return self._pinned
        advertised = self.metadata().get("id_token_signing_alg_values_supported") or [
            "RS256"
        ]
        algs = frozenset(a for a in advertised if a in ASYMMETRIC_ALGS)
        if not algs:
            raise DiscoveryFailed(
                "the provider advertises no acceptable signing algorithm"
            )
        return algs

    # -- the flow ----------------------------------------------------------

    def begin(self, *, extra_params: dict | None = None) -> AuthRequest:
        """A fresh authorization request: URL plus the state, nonce and PKCE verifier."""
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        args: dict[str, Any] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if self.response_mode:
            args["response_mode"] = self.response_mode
        if extra_params:
            args.update(extra_params)
        request = AuthorizationRequest(**args)
        url = request.request(self.metadata()["authorization_endpoint"])
        return AuthRequest(url=url, state=state, nonce=nonce, code_verifier=verifier)

    def complete(
        self,
        params: dict,
        expected_state: str | None,
        expected_nonce: str | None,
        code_verifier: str | None,
    ) -> Result:
        """Verify the callback `params` (query or form) and return the verified claims."""
        params = check_callback(params, expected_state)
        if not expected_nonce or not code_verifier:
            raise StateMismatch("this sign-in was not started here")
        tokens = self.exchange_code(params["code"], code_verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise TokenExchangeFailed("the provider returned no ID token")
        claims = verify_jwt(
            id_token,
            keys=self.keyset(),
            allowed_algs=self.allowed_algs(),
            issuer=self.issuer,
            audience=self.client_id,
            clock_skew=self.clock_skew,
            nonce=expected_nonce,
            check_nonce=True,
        )
        access = tokens.get("access_token")
        extra = {
            k: v for k, v in tokens.items() if k not in ("id_token", "access_token")
        }
        return Result(
            claims=claims, id_token=id_token, access_token=access, extra=extra
        )

    def exchange_code(self, code: str, code_verifier: str) -> dict:
        """POST the code to the token endpoint; the parsed JSON answer."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self.client_id,
        }
        auth = None
        secret = self.client_secret()
        if self.token_auth == "client_secret_post" and secret:  # noqa: S105
            form["client_secret"] = secret
        elif self.token_auth == "client_secret_basic" and secret:  # noqa: S105
            auth = (self.client_id, secret)
        try:
            response = self._http.post(
                self.metadata()["token_endpoint"],
                data=form,
                auth=auth,
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise TokenExchangeFailed("token endpoint unreachable") from exc
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            _logger.warning("oidc.token_exchange_refused", status=response.status_code)
            raise TokenExchangeFailed("the provider refused the code")
        try:
            data = response.json()
            AccessTokenResponse(**data).verify()
        except Exception as exc:
            raise TokenExchangeFailed("the token response is malformed") from exc
        return data


def check_callback(params: dict, expected_state: str | None) -> dict:
    """Validate an authorization callback's parameters; returns them as plain strings.

    Order matters: size and shape first, then `state` (so a forged callback
    learns nothing else), then the provider's `error`, then the `code`.
    """
    clean: dict[str, str] = {}
    for key in ("state", "code", "error", "error_description", "iss", "user"):
        value = params.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise MissingParameter(f"{key} is malformed")
        if len(value) > MAX_PARAM_BYTES:
            raise OversizeValue(f"{key} is too large")
        clean[key] = value
    if "state" not in clean:
        raise MissingParameter("state is missing")
    if not _same(clean["state"], expected_state):
        raise StateMismatch("the state does not match this sign-in")
    if "error" in clean:
        raise ProviderDenied("the provider did not sign you in")
    if not clean.get("code"):
        raise MissingParameter("code is missing")
    return clean
