"""Sign-in test helpers: the app wired to fake providers, and a browser's steps.

`provider_app` starts one loopback provider each for Google, Apple and GitHub
(cajex.identity.fakeidp, real HTTP servers) and builds the app configured to
use them. `sign_in_with` walks a Flask test client through a provider flow
the way a browser does: our redirect to the provider, the provider's redirect
(or Apple's auto-submitted form_post) back to our callback.
"""

from __future__ import annotations

import dataclasses
import html
import re
import urllib.parse

import httpx

from cajex.identity import oidc
from cajex.identity.fakeidp import FakeProvider, SigningKey

PUBLIC = "http://cajex.test"


@dataclasses.dataclass
class Providers:
    google: FakeProvider
    apple: FakeProvider
    github: FakeProvider
    #: The Apple team's key: the client secret is an ES256 JWT signed with it.
    apple_team_key: SigningKey

    def all(self):
        return (self.google, self.apple, self.github)

    def reset(self) -> None:
        """Back to a fresh provider's behaviour (servers and keys are kept:
        starting them is what makes a test slow)."""
        for idp in self.all():
            idp.keys = idp.keys[-1:]
            idp.next_user = {
                "sub": "user-1",
                "email": "ada@example.com",
                "email_verified": True,
            }
            idp.github_user = {"id": 4242, "login": "ada"}
            idp.github_emails = [
                {"email": "ada@example.com", "primary": True, "verified": True}
            ]
            idp.tamper = None
            idp.form_extra = {}
            idp.codes.clear()
            idp.token_requests.clear()
            idp.check_client_secret = None
            idp.jwks_requests = 0
        oidc.clear_caches()


def start_providers() -> Providers:
    oidc.clear_caches()
    team_key = SigningKey("TEAMKEY1", "EC")
    return Providers(
        google=FakeProvider(client_id="google-client").start(),
        apple=FakeProvider(client_id="com.example.cajex", key_kind="EC").start(),
        github=FakeProvider(client_id="github-client").start(),
        apple_team_key=team_key,
    )


def provider_settings(idps: Providers, **overrides) -> dict:
    """Settings.extra naming the three loopback providers."""
    extra = {
        "google": {
            "client_id": idps.google.client_id,
            "client_secret": idps.google.client_secret,
            "issuer": idps.google.issuer,
            "jwks_refresh_seconds": 300,
        },
        "apple": {
            "client_id": idps.apple.client_id,
            "issuer": idps.apple.issuer,
            "team_id": "TEAM123456",
            "key_id": idps.apple_team_key.kid,
            "private_key": idps.apple_team_key.private_pem(),
        },
        "github": {
            "client_id": idps.github.client_id,
            "client_secret": idps.github.client_secret,
            "base_url": idps.github.url,
            "api_url": idps.github.url,
        },
    }
    for name, values in overrides.items():
        extra[name] = {**extra.get(name, {}), **values}
    return extra


def _local(url: str) -> str:
    """Our public URL as a path the test client can request."""
    assert url.startswith(PUBLIC + "/"), url
    return url[len(PUBLIC) :]


def start(client, provider: str, **query):
    """GET /login/<provider>: the redirect to the provider's authorization URL."""
    path = f"/login/{provider}"
    if query:
        path += "?" + urllib.parse.urlencode(query)
    return client.get(path)


def authorize(authorization_url: str) -> tuple[str, dict]:
    """The provider's answer to the browser: ("get", params) or ("post", fields)."""
    answer = httpx.get(authorization_url, follow_redirects=False)
    if answer.status_code == 302:
        target = answer.headers["location"]
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
        return _local(target.split("?", 1)[0]), query
    assert answer.status_code == 200, answer.text
    action = html.unescape(re.search(r'action="([^"]+)"', answer.text).group(1))
    fields = {
        html.unescape(k): html.unescape(v)
        for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', answer.text)
    }
    return _local(action), {"__post__": "1", **fields}


def callback(client, path: str, params: dict, json: bool = True):
    """Deliver the provider's callback to our app; follows form_post's 303."""
    headers = {"Accept": "application/json"} if json else {}
    params = dict(params)
    if params.pop("__post__", None):
        posted = client.post(path, data=params, headers=headers)
        if posted.status_code != 303:
            return posted
        return client.get(_local_or_path(posted.headers["Location"]), headers=headers)
    return client.get(path + "?" + urllib.parse.urlencode(params), headers=headers)


def _local_or_path(location: str) -> str:
    return location[len(PUBLIC) :] if location.startswith(PUBLIC) else location


def sign_in_with(client, provider: str, **query):
    """The whole browser round trip; the response to the callback."""
    begun = start(client, provider, **query)
    assert begun.status_code == 302, begun.get_data(as_text=True)
    path, params = authorize(begun.headers["Location"])
    return callback(client, path, params)


def link_with(client, provider: str):
    """A signed-in browser links `provider` from the linked accounts page."""
    with client.session_transaction() as sess:
        csrf = sess.setdefault("csrf", "link-csrf-token")
    begun = client.post(f"/login/{provider}/link", data={"csrf_token": csrf})
    assert begun.status_code == 303, begun.get_data(as_text=True)
    path, params = authorize(begun.headers["Location"])
    return callback(client, path, params)


def signed_in_user(client) -> str | None:
    with client.session_transaction() as sess:
        return sess.get("_user_id")


def apple_secret_checker(idps: Providers, seen: list | None = None):
    """A client-secret check for the fake Apple: an ES256 JWT by the team's key.

    Verifies the signature with the team's public key and the claims Apple
    requires (iss = team id, sub = client id, aud = Apple, a short life).
    """
    import base64
    import json as _json
    import time

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    def check(secret: str) -> bool:
        if seen is not None:
            seen.append(secret)
        try:
            head, body, sig = secret.split(".")
            header, claims = _json.loads(unb64(head)), _json.loads(unb64(body))
            raw = unb64(sig)
            der = utils.encode_dss_signature(
                int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            )
            idps.apple_team_key.private.public_key().verify(
                der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())
            )
        except (ValueError, InvalidSignature):
            return False
        now = time.time()
        return (
            header.get("alg") == "ES256"
            and header.get("kid") == idps.apple_team_key.kid
            and claims.get("iss") == "TEAM123456"
            and claims.get("sub") == idps.apple.client_id
            and claims.get("aud") == "https://appleid.apple.com"
            and isinstance(claims.get("iat"), int)
            and claims["iat"] <= now + 5
            and isinstance(claims.get("exp"), int)
            and claims["exp"] > now
        )

    return check
