"""The OpenID Connect relying-party core against a real provider on loopback.

Every check of cajex.identity.oidc has a hostile test that makes it fire.
"""

from __future__ import annotations

import time
import urllib.parse

import httpx
import pytest

from cajex.identity import oidc
from cajex.identity.fakeidp import FakeProvider, SigningKey, make_jwt

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture()
def provider():
    oidc.clear_caches()
    idp = FakeProvider().start()
    yield idp
    idp.stop()
    oidc.clear_caches()


def _rp(idp: FakeProvider, **kw) -> oidc.RelyingParty:
    args = dict(
        issuer=idp.issuer,
        client_id=idp.client_id,
        client_secret=idp.client_secret,
        redirect_uri=REDIRECT,
        allowed_algs=["RS256"],
        clock_skew=30,
    )
    args.update(kw)
    return oidc.RelyingParty(**args)


def _authorize(url: str) -> dict:
    """Follow the authorization URL to the provider like a browser; the callback params."""
    response = httpx.get(url, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def _flow(idp, rp=None):
    rp = rp or _rp(idp)
    request = rp.begin()
    return rp, request, _authorize(request.url)


def test_happy_path_returns_verified_claims(provider):
    rp, req, params = _flow(provider)
    url, state, nonce, verifier = req
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == oidc.pkce_challenge(verifier)
    assert query["nonce"] == nonce and query["state"] == state
    result = rp.complete(params, state, nonce, verifier)
    assert result.claims["sub"] == "user-1"
    assert result.claims["email"] == "ada@example.com"
    assert provider.token_requests[-1]["code_verifier"] == verifier


def test_wrong_state_is_rejected(provider):
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.StateMismatch) as caught:
        rp.complete(params, "another-state", req.nonce, req.code_verifier)
    assert caught.value.code == "oidc_state_mismatch"
    # The code was never sent to the token endpoint.
    assert provider.token_requests == []


def test_missing_state_and_code_are_rejected(provider):
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.MissingParameter):
        rp.complete({"code": params["code"]}, req.state, req.nonce, req.code_verifier)
    with pytest.raises(oidc.MissingParameter):
        rp.complete({"state": req.state}, req.state, req.nonce, req.code_verifier)
    with pytest.raises(oidc.OversizeValue):
        rp.complete(
            {"state": req.state, "code": "x" * 5000},
            req.state,
            req.nonce,
            req.code_verifier,
        )
    with pytest.raises(oidc.ProviderDenied):
        rp.complete(
            {"state": req.state, "error": "access_denied"},
            req.state,
            req.nonce,
            req.code_verifier,
        )


def test_reused_code_is_refused_by_the_provider(provider):
    rp, req, params = _flow(provider)
    rp.complete(params, req.state, req.nonce, req.code_verifier)
    with pytest.raises(oidc.TokenExchangeFailed):
        rp.complete(params, req.state, req.nonce, req.code_verifier)


def test_wrong_pkce_verifier_is_refused(provider):
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.TokenExchangeFailed):
        rp.complete(params, req.state, req.nonce, "not-the-verifier-" * 3)


def test_wrong_nonce_is_rejected(provider):
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.NonceMismatch) as caught:
        rp.complete(params, req.state, "some-other-nonce", req.code_verifier)
    assert caught.value.code == "oidc_nonce_mismatch"


def test_missing_nonce_claim_is_rejected(provider):
    provider.tamper = lambda h, c: (
        h,
        {k: v for k, v in c.items() if k != "nonce"},
        "key",
    )
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.NonceMismatch):
        rp.complete(params, req.state, req.nonce, req.code_verifier)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"iss": "http://127.0.0.1:1/evil"}, oidc.IssuerMismatch),
        ({"aud": "another-client"}, oidc.AudienceMismatch),
        ({"aud": ["cajex-client", "another"]}, oidc.AzpMismatch),
        ({"aud": ["cajex-client", "another"], "azp": "another"}, oidc.AzpMismatch),
        ({"azp": "another"}, oidc.AzpMismatch),
        ({"exp": int(time.time()) - 120}, oidc.TokenExpired),
        ({"iat": int(time.time()) + 600}, oidc.IssuedInFuture),
        ({"exp": None}, oidc.MissingClaim),
        ({"sub": ""}, oidc.MissingClaim),
        ({"exp": "soon"}, oidc.MalformedToken),
    ],
)
def test_each_claim_check_fires(provider, change, error):
    def tamper(header, claims):
        claims.update(change)
        return header, {k: v for k, v in claims.items() if v is not None}, "key"

    provider.tamper = tamper
    rp, req, params = _flow(provider)
    with pytest.raises(error):
        rp.complete(params, req.state, req.nonce, req.code_verifier)


def test_multiple_audiences_with_our_azp_pass(provider):
    provider.tamper = lambda h, c: (
        h,
        {**c, "aud": ["cajex-client", "x"], "azp": "cajex-client"},
        "key",
    )
    rp, req, params = _flow(provider)
    assert (
        rp.complete(params, req.state, req.nonce, req.code_verifier).claims["sub"]
        == "user-1"
    )


def test_clock_skew_tolerates_small_drift(provider):
    provider.tamper = lambda h, c: (
        h,
        {**c, "exp": int(time.time()) - 10, "iat": int(time.time()) + 10},
        "key",
    )
    rp, req, params = _flow(provider)
    assert rp.complete(params, req.state, req.nonce, req.code_verifier).claims


def test_alg_none_is_rejected(provider):
    provider.tamper = lambda h, c: ({**h, "alg": "none"}, c, "none")
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.AlgorithmRejected) as caught:
        rp.complete(params, req.state, req.nonce, req.code_verifier)
    assert caught.value.code == "oidc_alg_rejected"


def test_hs256_signed_with_the_public_key_is_rejected(provider):
    provider.tamper = lambda h, c: ({**h, "alg": "HS256"}, c, "hs256_public")
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.AlgorithmRejected):
        rp.complete(params, req.state, req.nonce, req.code_verifier)


def test_hs256_is_rejected_even_when_discovery_advertises_it(provider):
    rp = _rp(provider, allowed_algs=None)
    provider.tamper = lambda h, c: ({**h, "alg": "HS256"}, c, "hs256_public")
    req = rp.begin()
    params = _authorize(req.url)
    with pytest.raises(oidc.AlgorithmRejected):
        rp.complete(params, req.state, req.nonce, req.code_verifier)


def test_symmetric_or_none_algs_cannot_be_pinned(provider):
    for algs in (["HS256"], ["none"], []):
        with pytest.raises(ValueError):
            _rp(provider, allowed_algs=algs)


def test_alg_outside_the_pinned_set_is_rejected(provider):
    rp = _rp(provider, allowed_algs=["ES256"])
    req = rp.begin()
    with pytest.raises(oidc.AlgorithmRejected):
        rp.complete(_authorize(req.url), req.state, req.nonce, req.code_verifier)


def test_embedded_jwk_header_is_rejected(provider):
    attacker = SigningKey("k1")
    provider.tamper = lambda h, c: ({**h, "jwk": attacker.public_jwk()}, c, "key")
    rp, req, params = _flow(provider)
    with pytest.raises(oidc.AlgorithmRejected):
        rp.complete(params, req.state, req.nonce, req.code_verifier)


def test_token_signed_by_another_key_with_a_known_kid_is_rejected(provider):
    rp = _rp(provider)
    rp.keyset().keys_for("k1", "RS256")  # warm the cache
    attacker = SigningKey("k1")
    token = make_jwt(
        {"alg": "RS256", "kid": "k1"},
        {
            "iss": provider.issuer,
            "aud": provider.client_id,
            "sub": "x",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        attacker,
    )
    with pytest.raises(oidc.BadTokenSignature):
        oidc.verify_jwt(
            token,
            keys=rp.keyset(),
            allowed_algs=["RS256"],
            issuer=provider.issuer,
            audience=provider.client_id,
        )


def test_rotated_key_is_fetched_once_and_then_rate_limited(provider):
    rp = _rp(provider, jwks_refresh_seconds=0)
    rp1, req, params = _flow(provider, rp)
    rp.complete(params, req.state, req.nonce, req.code_verifier)
    fetched = provider.jwks_requests
    provider.rotate()
    req = rp.begin()
    rp.complete(_authorize(req.url), req.state, req.nonce, req.code_verifier)
    assert provider.jwks_requests == fetched + 1

    # An unknown kid right after a fetch does not refetch within the window.
    keys = oidc.KeySet(provider.issuer + "/jwks", refresh_seconds=3600)
    keys.keys_for(provider.current_key.kid, "RS256")
    before = provider.jwks_requests
    for _ in range(5):
        with pytest.raises(oidc.UnknownKey):
            keys.keys_for("random-kid", "RS256")
    assert provider.jwks_requests == before


def test_unknown_kid_after_the_window_refetches_once():
    ticks = [0.0]
    idp = FakeProvider().start()
    try:
        keys = oidc.KeySet(
            idp.issuer + "/jwks", refresh_seconds=60, clock=lambda: ticks[0]
        )
        keys.keys_for("k1", "RS256")
        new = idp.rotate()
        with pytest.raises(oidc.UnknownKey):
            keys.keys_for(new.kid, "RS256")  # inside the window: no refetch
        assert keys.fetches == 1
        ticks[0] = 61.0
        assert keys.keys_for(new.kid, "RS256")
        assert keys.fetches == 2
    finally:
        idp.stop()


def test_discovery_for_another_issuer_is_refused(provider):
    rp = _rp(
        provider,
        issuer="http://127.0.0.1:1/other",
        discovery_url=provider.issuer + "/.well-known/openid-configuration",
    )
    with pytest.raises(oidc.DiscoveryFailed) as caught:
        rp.begin()
    assert caught.value.code == "oidc_discovery_failed"


def test_unreachable_provider_is_a_clear_error():
    rp = oidc.RelyingParty(
        issuer="http://127.0.0.1:9", client_id="c", redirect_uri=REDIRECT
    )
    with pytest.raises(oidc.DiscoveryFailed):
        rp.begin()


def test_malformed_tokens_are_rejected(provider):
    rp = _rp(provider)
    for token in ("", "a.b", "###.###.###", "x" * 20000):
        with pytest.raises(oidc.MalformedToken):
            oidc.verify_jwt(
                token,
                keys=rp.keyset(),
                allowed_algs=["RS256"],
                issuer=provider.issuer,
                audience="c",
            )


def test_form_post_and_es256_with_a_secret_factory():
    idp = FakeProvider(key_kind="EC").start()
    try:
        team_key = SigningKey("team", "EC")
        seen = []

        def check(secret):
            seen.append(secret)
            return secret.count(".") == 2

        idp.check_client_secret = check
        factory = lambda: oidc.apple_client_secret(  # noqa: E731
            team_id="TEAM",
            key_id="team",
            client_id=idp.client_id,
            private_key_pem=team_key.private_pem(),
        )
        rp = oidc.RelyingParty(
            issuer=idp.issuer,
            client_id=idp.client_id,
            client_secret=factory,
            redirect_uri=REDIRECT,
            allowed_algs=["ES256"],
            response_mode="form_post",
        )
        req = rp.begin()
        page = httpx.get(req.url)
        assert page.status_code == 200 and 'method="post"' in page.text
        import re

        params = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
        result = rp.complete(params, req.state, req.nonce, req.code_verifier)
        assert result.claims["sub"] == "user-1"
        # The client secret was an ES256 JWT verifiable with the team's public key.
        header = oidc.decode_header(seen[0])
        assert header == {"alg": "ES256", "kid": "team", "typ": "JWT"}
    finally:
        idp.stop()


def test_verify_jwt_for_logout_tokens_without_exp(provider):
    rp = _rp(provider)
    now = int(time.time())
    token = make_jwt(
        {"alg": "RS256", "kid": "k1"},
        {
            "iss": provider.issuer,
            "aud": provider.client_id,
            "sub": "u",
            "iat": now,
            "jti": "j",
            "events": {},
        },
        provider.current_key,
    )
    claims = oidc.verify_jwt(
        token,
        keys=rp.keyset(),
        allowed_algs=["RS256"],
        issuer=provider.issuer,
        audience=provider.client_id,
        require_exp=False,
    )
    assert claims["jti"] == "j"
    with pytest.raises(oidc.MissingClaim):
        oidc.verify_jwt(
            token,
            keys=rp.keyset(),
            allowed_algs=["RS256"],
            issuer=provider.issuer,
            audience=provider.client_id,
        )
