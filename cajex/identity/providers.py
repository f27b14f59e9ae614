"""Google, Apple (OpenID Connect) and GitHub (OAuth 2) from settings.

Each provider is configured by `Settings.extra[<name>]` (a dict) or by
environment variables CAJEX_<NAME>_CLIENT_ID, _CLIENT_SECRET, _ISSUER (OIDC),
CAJEX_APPLE_TEAM_ID, _KEY_ID, _PRIVATE_KEY (PEM text or a file path),
CAJEX_<NAME>_CLOCK_SKEW and _JWKS_REFRESH_SECONDS, and CAJEX_GITHUB_URL,
CAJEX_GITHUB_API_URL (docs/signin.md lists them all). A provider without a client id is not
offered. Issuers and URLs are configurable so tests use loopback servers.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import urllib.parse
from pathlib import Path

import httpx

from cajex.identity import oidc

NAMES = ("google", "apple", "github")
LABELS = {
    "google": "Google",
    "apple": "Apple",
    "github": "GitHub",
    "magic_link": "Email link",
}
DEFAULT_ISSUERS = {
    "google": "https://accounts.google.com",
    "apple": "https://appleid.apple.com",
}


@dataclasses.dataclass(frozen=True)
class Provider:
    name: str
    client_id: str
    client_secret: str = ""
    issuer: str = ""
    discovery_url: str = ""
    team_id: str = ""
    key_id: str = ""
    private_key: str = ""
    base_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    clock_skew: int = 60
    #: How soon after a JWKS fetch an unknown `kid` may fetch it again.
    jwks_refresh_seconds: float = 60.0

    @property
    def label(self) -> str:
        return LABELS[self.name]


def _env(name: str, key: str) -> str:
    return os.environ.get(f"CAJEX_{name.upper()}_{key.upper()}", "")


def configured(settings) -> dict[str, Provider]:
    """The providers with a client id, by name."""
    found: dict[str, Provider] = {}
    for name in NAMES:
        extra = dict((settings.extra or {}).get(name) or {})
        fields = {f.name for f in dataclasses.fields(Provider)} - {"name"}
        values = {}
        for field in fields:
            value = extra.get(field, _env(name, field))
            if value not in ("", None):
                values[field] = value
        if name == "github":
            values.setdefault(
                "base_url", os.environ.get("CAJEX_GITHUB_URL") or "https://github.com"
            )
            values.setdefault(
                "api_url",
                os.environ.get("CAJEX_GITHUB_API_URL") or "https://api.github.com",
            )
        else:
            values.setdefault("issuer", DEFAULT_ISSUERS[name])
        if not values.get("client_id"):
            continue
        if "clock_skew" in values:
            values["clock_skew"] = int(values["clock_skew"])
        if "jwks_refresh_seconds" in values:
            values["jwks_refresh_seconds"] = float(values["jwks_refresh_seconds"])
        found[name] = Provider(name=name, **values)
    return found


def _apple_key(provider: Provider) -> str:
    key = provider.private_key
    if key and "BEGIN" not in key and Path(key).is_file():
        return Path(key).read_text()
    return key


def relying_party(provider: Provider, redirect_uri: str) -> oidc.RelyingParty:
    """The OIDC relying party of Google or Apple."""
    if provider.name == "apple":

        def secret() -> str:
            return oidc.apple_client_secret(
                team_id=provider.team_id,
                key_id=provider.key_id,
                client_id=provider.client_id,
                private_key_pem=_apple_key(provider),
            )

        return oidc.RelyingParty(
            issuer=provider.issuer,
            client_id=provider.client_id,
            client_secret=secret,
            redirect_uri=redirect_uri,
            allowed_algs=["RS256", "ES256"],
            clock_skew=provider.clock_skew,
            response_mode="form_post",
            scope="openid email name",
            discovery_url=provider.discovery_url or None,
            jwks_refresh_seconds=provider.jwks_refresh_seconds,
        )
    return oidc.RelyingParty(
        issuer=provider.issuer,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        redirect_uri=redirect_uri,
        allowed_algs=["RS256"],
        clock_skew=provider.clock_skew,
        discovery_url=provider.discovery_url or None,
        jwks_refresh_seconds=provider.jwks_refresh_seconds,
    )


def email_verified(claims: dict) -> bool:
    """`email_verified` as a boolean (Apple sends the string "true")."""
    value = claims.get("email_verified")
    return value is True or value == "true"


# ---------------------------------------------------------------------------
# GitHub: OAuth 2, not OpenID Connect


class GitHubError(oidc.OIDCError):
    code = "github_error"


class GitHubNoVerifiedEmail(oidc.OIDCError):
    code = "github_no_verified_email"


def github_begin(provider: Provider, redirect_uri: str) -> oidc.AuthRequest:
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(48)
    query = urllib.parse.urlencode(
        {
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": "read:user user:email",
            "state": state,
            "allow_signup": "true",
            "code_challenge": oidc.pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    url = provider.base_url.rstrip("/") + "/login/oauth/authorize?" + query
    return oidc.AuthRequest(url=url, state=state, nonce="", code_verifier=verifier)


def github_complete(
    provider: Provider,
    redirect_uri: str,
    params: dict,
    expected_state: str | None,
    code_verifier: str | None,
    http: httpx.Client | None = None,
) -> dict:
    """{"sub", "email", "email_verified", "name"} of the GitHub user, email = verified primary."""
    params = oidc.check_callback(params, expected_state)
    http = http or oidc.default_http()
    try:
        response = http.post(
            provider.base_url.rstrip("/") + "/login/oauth/access_token",
            data={
                "client_id": provider.client_id,
                "client_secret": provider.client_secret,
                "code": params["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier or "",
            },
            headers={"Accept": "application/json"},
        )
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise oidc.TokenExchangeFailed("GitHub did not answer") from exc
    token = data.get("access_token") if isinstance(data, dict) else None
    if response.status_code != 200 or not isinstance(token, str):
        raise oidc.TokenExchangeFailed("GitHub refused the code")
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
    }
    api = provider.api_url.rstrip("/")
    try:
        user = http.get(api + "/user", headers=headers)
        emails = http.get(api + "/user/emails", headers=headers)
        user_data, email_data = user.json(), emails.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise GitHubError("GitHub's API did not answer") from exc
    if (
        user.status_code != 200
        or not isinstance(user_data, dict)
        or "id" not in user_data
    ):
        raise GitHubError("GitHub's API refused the token")
    primary = None
    if emails.status_code == 200 and isinstance(email_data, list):
        primary = next(
            (
                e
                for e in email_data
                if isinstance(e, dict)
                and e.get("primary")
                and e.get("verified") is True
                and isinstance(e.get("email"), str)
            ),
            None,
        )
    if primary is None:
        raise GitHubNoVerifiedEmail("your GitHub account has no verified primary email")
    return {
        "sub": str(user_data["id"]),
        "email": primary["email"],
        "email_verified": True,
        "name": user_data.get("name") or user_data.get("login"),
    }


def github_issuer(provider: Provider) -> str:
    return provider.base_url.rstrip("/")
