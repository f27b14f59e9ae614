"""SSO connections and sign-ins, between the web layer, the CLI and SQL.

Contract: configuration functions take a connection already in the
workspace's context (an admin's, or a job's for the CLI) and change nothing
when they raise. Sign-in functions take the pool and open a job context of
the workspace that owns the connection named in the URL, so one
workspace's IdP can only ever answer for its own connection: the URL picks
the connection, the connection pins the issuer and certificates, and the
database scopes every row to that workspace.

Errors: `SSOError(reason, message)`; `reason` is stable and logged (with
ids only, never an address or token), `message` is for people.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import re
import time
import urllib.parse
import uuid

import httpx

from cajex import crypto, db, log
from cajex.errors import AppError
from cajex.identity import oidc
from cajex.sso import saml

_log = log.get("cajex.sso")

CONNECTION_COLUMNS = (
    "id, workspace_id, type, name, status, oidc_issuer, oidc_discovery_url, oidc_client_id,"
    " oidc_client_secret is not null as has_client_secret, saml_idp_entity_id, saml_sso_url,"
    " saml_slo_url, saml_certificates, saml_metadata_url, allow_idp_initiated, allow_sha1,"
    " sign_requests, default_role, clock_skew_seconds, settings, created_at, last_tested_at"
)
SECRET_TABLE = "cajex.sso_connections"  # noqa: S105 - a table name, not a secret
SECRET_COLUMN = "oidc_client_secret"  # noqa: S105 - a column name


class SSOError(Exception):
    def __init__(self, reason: str, message: str, status: int = 400):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


def endpoints(public_url: str, connection_id) -> dict:
    """What the IdP needs for this connection: all URLs are per connection."""
    base = f"{public_url.rstrip('/')}/sso"
    cid = str(connection_id)
    return {
        "connection_id": cid,
        "entity_id": f"{base}/saml/{cid}/metadata",
        "acs_url": f"{base}/saml/{cid}/acs",
        "slo_url": f"{base}/saml/{cid}/slo",
        "metadata_url": f"{base}/saml/{cid}/metadata",
        "redirect_uri": f"{base}/oidc/{cid}/callback",
        "backchannel_logout_uri": f"{base}/oidc/{cid}/backchannel-logout",
        "login_url": f"{base}/{cid}/login",
    }


def sp_config(public_url: str, connection_id) -> saml.SPConfig:
    e = endpoints(public_url, connection_id)
    return saml.SPConfig(e["entity_id"], e["acs_url"], e["slo_url"], e["metadata_url"])


def idp_config(row: dict) -> saml.IdPConfig:
    return saml.IdPConfig(
        connection_id=str(row["id"]),
        entity_id=row["saml_idp_entity_id"],
        sso_url=row["saml_sso_url"],
        slo_url=row["saml_slo_url"],
        certificates=tuple(row["saml_certificates"]),
        allow_sha1=row["allow_sha1"],
        clock_skew=row["clock_skew_seconds"],
        group_attribute=(row["settings"] or {}).get("group_attribute"),
    )


def list_connections(conn) -> list[dict]:
    return conn.execute(
        f"select {CONNECTION_COLUMNS} from cajex.sso_connections order by created_at"
    ).fetchall()


def get_connection(conn, connection_id) -> dict:
    row = conn.execute(
        f"select {CONNECTION_COLUMNS} from cajex.sso_connections where id = %s",
        (connection_id,),
    ).fetchone()
    if row is None:
        raise AppError(404, "not_found", "no such SSO connection")
    return row


# ---------------------------------------------------------------------------
# Configuration


def fetch(url: str, what: str, max_bytes: int = saml.MAX_METADATA_BYTES) -> bytes:
    """GET a metadata document; a clear error for an admin when it fails."""
    if not url.startswith(("https://", "http://")):
        raise AppError(
            422, "invalid", f"the {what} URL must start with https://", "url"
        )
    try:
        with httpx.Client(timeout=10.0, follow_redirects=False) as client:
            response = client.get(url)
    except httpx.HTTPError:
        raise AppError(
            422,
            "unreachable",
            f"the {what} URL could not be reached: check it and retry",
            "url",
        ) from None
    if response.status_code != 200:
        raise AppError(
            422,
            "unreachable",
            f"the {what} URL answered HTTP {response.status_code}",
            "url",
        )
    if len(response.content) > max_bytes:
        raise AppError(422, "invalid", f"the {what} is too large", "url")
    return response.content


def read_metadata(
    source: str | bytes, entity_id: str | None = None
) -> tuple[saml.IdPMetadata, str | None]:
    """Parse metadata from bytes, a URL or a file path; (metadata, url or None)."""
    url = None
    if isinstance(source, str) and source.startswith(("https://", "http://")):
        url = source
        source = fetch(source, "metadata")
    elif isinstance(source, str):
        try:
            with open(source, "rb") as f:
                source = f.read(saml.MAX_METADATA_BYTES + 1)
        except OSError:
            raise AppError(
                422, "invalid", "the metadata file cannot be read", "metadata"
            ) from None
    try:
        return saml.parse_metadata(source, entity_id), url
    except saml.MetadataError as exc:
        raise AppError(422, "invalid_metadata", exc.message, "metadata") from None


def create_saml(
    conn,
    metadata: saml.IdPMetadata,
    *,
    name: str | None = None,
    metadata_url=None,
    allow_idp_initiated: bool = False,
    default_role: str = "member",
) -> dict:
    row = conn.execute(
        "select id from cajex.create_sso_connection('saml', %s::jsonb)",
        (
            _json(
                {
                    "name": name or metadata.entity_id[:200],
                    "saml_idp_entity_id": metadata.entity_id,
                    "saml_sso_url": metadata.sso_url,
                    "saml_slo_url": metadata.slo_url,
                    "saml_certificates": list(metadata.certificates),
                    "saml_metadata_url": metadata_url,
                    "allow_idp_initiated": allow_idp_initiated,
                    "default_role": default_role,
                }
            ),
        ),
    ).fetchone()
    return get_connection(conn, row["id"])


def refresh_saml_metadata(conn, connection_id, metadata: saml.IdPMetadata) -> dict:
    """Certificate rollover: replace the pinned certificates and endpoints."""
    current = get_connection(conn, connection_id)
    if current["saml_idp_entity_id"] != metadata.entity_id:
        raise AppError(
            422,
            "invalid_metadata",
            "the metadata describes another identity provider",
            "metadata",
        )
    conn.execute(
        "select cajex.update_sso_connection(%s, %s::jsonb)",
        (
            connection_id,
            _json(
                {
                    "saml_sso_url": metadata.sso_url,
                    "saml_slo_url": metadata.slo_url,
                    "saml_certificates": list(metadata.certificates),
                }
            ),
        ),
    )
    return get_connection(conn, connection_id)


def check_oidc_provider(issuer: str, discovery_url: str | None = None) -> dict:
    """Fetch and check the provider's discovery document and keys (no change)."""
    rp = oidc.RelyingParty(
        issuer=issuer,
        client_id="check",
        redirect_uri="https://check.invalid/",
        discovery_url=discovery_url,
        discovery_max_age=0,
    )
    try:
        document = rp.metadata()
        try:
            rp.keyset().keys_for(None, "RS256")
        except oidc.UnknownKey:
            pass  # several keys and no kid asked for: the set itself loaded
    except oidc.OIDCError as exc:
        raise AppError(
            422,
            "invalid_provider",
            f"the provider's discovery document cannot be used ({exc.code}): "
            "check the issuer URL",
            "issuer",
        ) from None
    return document


def create_oidc(
    conn,
    master,
    *,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    name: str | None = None,
    discovery_url: str | None = None,
    default_role: str = "member",
    settings: dict | None = None,
) -> dict:
    issuer, discovery_url, found = resolve_oidc_provider(issuer, discovery_url)
    check_oidc_provider(issuer, discovery_url)
    row = conn.execute(
        "select id, workspace_id from cajex.create_sso_connection('oidc', %s::jsonb)",
        (
            _json(
                {
                    "name": name or issuer[:200],
                    "oidc_issuer": issuer,
                    "oidc_client_id": client_id,
                    "oidc_discovery_url": discovery_url,
                    "default_role": default_role,
                    "settings": settings or found,
                }
            ),
        ),
    ).fetchone()
    if client_secret:
        set_client_secret(conn, master, row["workspace_id"], row["id"], client_secret)
    return get_connection(conn, row["id"])


def set_client_secret(conn, master, workspace_id, connection_id, secret: str) -> None:
    sealed = crypto.encrypt(
        conn,
        master,
        workspace_id,
        SECRET_TABLE,
        SECRET_COLUMN,
        str(connection_id),
        secret,
    )
    conn.execute("select cajex.set_sso_client_secret(%s, %s)", (connection_id, sealed))


def client_secret(conn, master, workspace_id, connection_id) -> str | None:
    row = conn.execute(
        "select oidc_client_secret from cajex.sso_connections where id = %s",
        (connection_id,),
    ).fetchone()
    if row is None or row["oidc_client_secret"] is None:
        return None
    return crypto.decrypt(
        conn,
        master,
        workspace_id,
        SECRET_TABLE,
        SECRET_COLUMN,
        str(connection_id),
        bytes(row["oidc_client_secret"]),
    ).decode()


# Microsoft Entra ID's sign-in hosts (the public cloud, US Government, China)
# and its v1 token issuer host.
ENTRA_HOSTS = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
)
ENTRA_V1_ISSUER_HOST = "sts.windows.net"
# Entra's multi-tenant endpoints: their tokens come from any tenant, so they
# can never stand for one workspace's IdP.
ENTRA_MULTI_TENANT = ("common", "organizations", "consumers", "{tenantid}")
WELL_KNOWN = "/.well-known/openid-configuration"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _entra_tenant(url: str) -> str | None:
    """The tenant segment of an Entra ID URL, or None for another provider."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if host not in ENTRA_HOSTS and host != ENTRA_V1_ISSUER_HOST:
        return None
    tenant = parts.path.strip("/").split("/", 1)[0]
    if not tenant or tenant.lower() in ENTRA_MULTI_TENANT:
        raise AppError(
            422,
            "invalid",
            "use your tenant's own Entra ID address "
            "(https://login.microsoftonline.com/<tenant id>/v2.0), "
            "not a multi-tenant one such as /common or /organizations",
            "issuer",
        )
    return tenant


def resolve_oidc_provider(
    given: str, discovery_url: str | None = None
) -> tuple[str, str | None, dict]:
    """(issuer, discovery URL, provider settings) from what an admin pasted.

    Accepted: an issuer (`https://acme.okta.com`), a discovery document URL
    (`.../.well-known/openid-configuration`, the form Okta, Auth0 and Entra
    ID show), and Entra ID's documented forms: the v2.0 issuer
    `https://login.microsoftonline.com/<tenant>/v2.0`, its discovery URL
    (with or without `?appid=`), the v1 discovery URL
    `https://login.microsoftonline.com/<tenant>/.well-known/openid-configuration`
    and the v1 issuer `https://sts.windows.net/<tenant id>/`. A tenant named
    by its domain (contoso.onmicrosoft.com) is resolved through its discovery
    document, whose issuer carries the tenant id that tokens are checked
    against. Multi-tenant endpoints are refused. Fetches at most one
    document; changes nothing.
    """
    given = (given or "").strip()
    if not given.startswith(("https://", "http://")):
        raise AppError(422, "invalid", "the issuer must be an https:// URL", "issuer")
    issuer: str | None = given
    path = urllib.parse.urlsplit(given).path
    if path.endswith(WELL_KNOWN):
        discovery_url = discovery_url or given
        issuer = None
    tenant = _entra_tenant(given)
    if tenant is not None and issuer is not None and not _GUID.match(tenant.lower()):
        # Entra tokens name the tenant by id: ask the tenant's document.
        discovery_url = discovery_url or issuer.rstrip("/") + WELL_KNOWN
        issuer = None
    if issuer is None:
        try:
            document = json.loads(
                fetch(discovery_url, "discovery document", 512 * 1024)
            )
        except ValueError:
            raise AppError(
                422,
                "invalid_provider",
                "the discovery document is not JSON: check the URL",
                "issuer",
            ) from None
        issuer = document.get("issuer") if isinstance(document, dict) else None
        if not isinstance(issuer, str) or not issuer.startswith(
            ("https://", "http://")
        ):
            raise AppError(
                422,
                "invalid_provider",
                "the discovery document names no issuer: check the URL",
                "issuer",
            )
    return issuer, discovery_url, entra_settings(issuer)


def entra_settings(issuer: str) -> dict:
    """Entra ID: the tenant of a tenant-specific issuer (checked against `tid`).

    Entra's v2.0 issuer is `https://login.microsoftonline.com/<tid>/v2.0` and
    its v1 issuer `https://sts.windows.net/<tid>/`; every token it issues
    carries the tenant id again in `tid`, which the callback compares, so a
    token from another tenant is refused even if an app registration were
    shared. Another provider: no settings.
    """
    tenant = _entra_tenant(issuer)
    if tenant is None:
        return {}
    return {"provider": "entra", "tenant_id": tenant.lower()}


def test_connection(conn, connection_id) -> dict:
    """Check what can be checked without a person: endpoints, certificates, discovery."""
    row = get_connection(conn, connection_id)
    report: dict = {
        "connection_id": str(row["id"]),
        "type": row["type"],
        "ok": True,
        "problems": [],
    }
    if row["type"] == "saml":
        report["certificates"] = [
            saml.certificate_summary(c) for c in row["saml_certificates"]
        ]
        if all(c["expired"] for c in report["certificates"]):
            report["ok"] = False
            report["problems"].append(
                "every signing certificate has expired: upload fresh metadata"
            )
    else:
        try:
            check_oidc_provider(row["oidc_issuer"], row["oidc_discovery_url"])
        except AppError as exc:
            report["ok"] = False
            report["problems"].append(exc.message)
        if not row["has_client_secret"]:
            report["problems"].append("no client secret is set")
    if report["ok"]:
        conn.execute("select cajex.mark_sso_connection_tested(%s)", (connection_id,))
    return report


def _json(value) -> str:
    return json.dumps(value)


# ---------------------------------------------------------------------------
# Signing in


@dataclasses.dataclass(frozen=True)
class Route:
    connection_id: uuid.UUID
    workspace_id: uuid.UUID
    workspace_slug: str
    type: str


def route(pool, connection_id: str) -> Route:
    """The enabled connection named in a URL, or SSOError (404)."""
    try:
        cid = uuid.UUID(connection_id)
    except (ValueError, TypeError):
        raise SSOError("unknown_connection", "no such SSO connection", 404) from None
    with pool.connection() as conn:
        row = conn.execute(
            "select * from cajex.sso_connection_route(%s)", (cid,)
        ).fetchone()
        conn.rollback()
    if row is None:
        raise SSOError("unknown_connection", "no such SSO connection", 404)
    return Route(cid, row["workspace_id"], row["workspace_slug"], row["type"])


def route_for_email(pool, email: str) -> Route | None:
    with pool.connection() as conn:
        row = conn.execute(
            "select * from cajex.sso_route_for_email(%s)", (email,)
        ).fetchone()
        conn.rollback()
    if row is None:
        return None
    return Route(
        row["connection_id"], row["workspace_id"], row["workspace_slug"], row["type"]
    )


def browser_binding(settings, request_id: str) -> str:
    """What the browser that started a SAML sign-in keeps in a cookie (an
    HMAC of the request id), so that the answer is taken only from it: an
    answer posted from any other browser (a hostile page signing a victim
    into the attacker's account) is refused."""
    return hmac.new(
        settings.secret_key.encode(), b"saml-authn:" + request_id.encode(), hashlib.sha256
    ).hexdigest()


def saml_login_url(pool, settings, r: Route, relay_state: str | None = None) -> str:
    """SP-initiated sign-in: record the request id, redirect to the IdP."""
    return saml_login(pool, settings, r, relay_state)[0]


def saml_login(
    pool, settings, r: Route, relay_state: str | None = None
) -> tuple[str, str]:
    """(the IdP URL to redirect to, the browser binding of the request)."""
    request_id = saml.new_id()
    with db.as_service(pool, settings.context_secret, r.workspace_id, "sso") as (
        conn,
        _,
    ):
        row = get_connection(conn, r.connection_id)
        conn.execute(
            "select cajex.sso_begin_request(%s, %s, 'authn', 600)",
            (r.connection_id, request_id),
        )
    sp = sp_config(settings.public_url, r.connection_id)
    idp = idp_config(row)
    xml = saml.authn_request(sp, idp, request_id, dt.datetime.now(dt.UTC))
    key = saml.sp_signing_key(settings.data_dir)[0] if row["sign_requests"] else None
    return (
        saml.redirect_url(idp.sso_url, "SAMLRequest", xml, relay_state, key),
        browser_binding(settings, request_id),
    )


@dataclasses.dataclass(frozen=True)
class SignIn:
    user_id: uuid.UUID
    workspace_id: uuid.UUID
    workspace_slug: str
    connection_id: uuid.UUID
    subject: str
    idp_session_id: str | None
    auth_method: str
    role: str
    created: bool


def _refuse(reason: str, r: Route | None, message: str, status: int = 400):
    _log.warning(
        "sso.signin_refused",
        reason=reason,
        connection_id=str(r.connection_id) if r else None,
        workspace_id=str(r.workspace_id) if r else None,
    )
    raise SSOError(reason, message, status)


def decode_post_binding(value: str | None) -> bytes:
    if not value or len(value) > saml.MAX_XML_BYTES * 4 // 3 + 4:
        raise SSOError("bad_encoding", "the SAML message is missing or too large")
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise SSOError("bad_encoding", "the SAML message is not base64") from None


def saml_acs(
    pool, settings, r: Route, saml_response: str | None, binding: str | None = None
) -> SignIn:
    """Verify a Response posted to this connection's ACS and provision the person.

    `binding` is the browser's cookie from saml_login: an answer to a
    sign-in started here must come back through the browser that started it.
    """
    try:
        data = decode_post_binding(saml_response)
    except SSOError as exc:
        _refuse(exc.reason, r, exc.message)
    try:
        with db.as_service(pool, settings.context_secret, r.workspace_id, "sso") as (
            conn,
            _,
        ):
            row = get_connection(conn, r.connection_id)
            sp = sp_config(settings.public_url, r.connection_id)
            try:
                result = saml.verify_response(data, sp=sp, idp=idp_config(row))
            except saml.SAMLError as exc:
                _refuse(
                    exc.reason,
                    r,
                    "the identity provider's answer was refused: " + exc.message,
                )
            if result.in_response_to is None:
                if not row["allow_idp_initiated"]:
                    _refuse(
                        "idp_initiated",
                        r,
                        "sign-in must start here, not at the identity provider",
                    )
            elif not conn.execute(
                "select cajex.sso_consume_request(%s, %s, 'authn') as ok",
                (r.connection_id, result.in_response_to),
            ).fetchone()["ok"]:
                _refuse(
                    "in_response_to",
                    r,
                    "this answer is for no sign-in started here (or it was used)",
                )
            elif not hmac.compare_digest(
                binding or "", browser_binding(settings, result.in_response_to)
            ):
                _refuse(
                    "browser",
                    r,
                    "this sign-in was started in another browser: start it again here",
                    403,
                )
            if not conn.execute(
                "select cajex.sso_remember_once(%s, 'saml_assertion', %s, %s) as ok",
                (r.connection_id, result.assertion_id, result.not_on_or_after),
            ).fetchone()["ok"]:
                _refuse("replay", r, "this answer was already used")
            if not result.email:
                _refuse("no_email", r, "the identity provider sent no email address")
            prov = conn.execute(
                "select * from cajex_private.sso_provision(%s, %s, %s, %s, %s, %s)",
                (
                    r.connection_id,
                    result.name_id,
                    result.email,
                    result.display_name,
                    result.groups,
                    result.groups_known,
                ),
            ).fetchone()
    except SSOError:
        raise
    except Exception as exc:
        from cajex.errors import from_database

        known = from_database(exc) if hasattr(exc, "sqlstate") else None
        if known is None:
            raise
        _refuse("provision_" + known.code, r, known.message, 403)
    _log.info(
        "sso.signed_in",
        connection_id=str(r.connection_id),
        workspace_id=str(r.workspace_id),
        user_id=str(prov["user_id"]),
        created=prov["created"],
    )
    return SignIn(
        prov["user_id"],
        r.workspace_id,
        r.workspace_slug,
        r.connection_id,
        result.name_id,
        result.session_index,
        "sso_saml",
        prov["role"],
        prov["created"],
    )


def saml_logout_request_url(
    pool, settings, r: Route, name_id: str, session_index: str | None
) -> str | None:
    """SP-initiated single logout: the redirect to the IdP, or None without an SLO URL."""
    request_id = saml.new_id()
    with db.as_service(pool, settings.context_secret, r.workspace_id, "sso") as (
        conn,
        _,
    ):
        row = get_connection(conn, r.connection_id)
        if not row["saml_slo_url"]:
            return None
        conn.execute(
            "select cajex.sso_begin_request(%s, %s, 'logout', 600)",
            (r.connection_id, request_id),
        )
    sp = sp_config(settings.public_url, r.connection_id)
    xml = saml.logout_request(
        sp, idp_config(row), request_id, name_id, session_index, dt.datetime.now(dt.UTC)
    )
    key = saml.sp_signing_key(settings.data_dir)[0]
    return saml.redirect_url(row["saml_slo_url"], "SAMLRequest", xml, None, key)


def saml_slo(
    pool, settings, r: Route, *, xml: bytes | None, redirect_query: bytes | None
) -> tuple[str, str | None]:
    """Handle a LogoutRequest (end the sessions, answer) or a LogoutResponse.

    `xml` comes from the POST binding; with the redirect binding pass the
    raw query instead, and the message is read from the very parameter
    whose signature was checked. Returns ("request", redirect URL of our
    LogoutResponse or None) or ("response", None).
    """
    with db.as_service(pool, settings.context_secret, r.workspace_id, "sso") as (
        conn,
        _,
    ):
        row = get_connection(conn, r.connection_id)
        idp = idp_config(row)
        sp = sp_config(settings.public_url, r.connection_id)
        try:
            if redirect_query is not None:
                xml = saml.inflate_b64(
                    saml.verify_redirect_signature(redirect_query, idp)
                )
            if xml is None:
                raise saml.SAMLError("bad_encoding", "no SAML message")
            message = saml.verify_logout(
                xml, sp=sp, idp=idp, redirect_signed=redirect_query is not None
            )
        except saml.SAMLError as exc:
            _refuse(exc.reason, r, "the logout message was refused: " + exc.message)
        if message.kind == "response":
            if (
                not message.in_response_to
                or not conn.execute(
                    "select cajex.sso_consume_request(%s, %s, 'logout') as ok",
                    (r.connection_id, message.in_response_to),
                ).fetchone()["ok"]
            ):
                _refuse(
                    "in_response_to",
                    r,
                    "this logout answer is for no logout started here",
                )
            return "response", None
        if not conn.execute(
            "select cajex.sso_remember_once(%s, 'saml_logout', %s, %s) as ok",
            (r.connection_id, message.id, message.not_on_or_after),
        ).fetchone()["ok"]:
            _refuse("replay", r, "this logout request was already used")
        ended = 0
        if message.session_indexes:
            for index in message.session_indexes:
                ended += conn.execute(
                    "select cajex_private.sso_logout(%s, %s, %s, 'saml_slo') as n",
                    (r.connection_id, message.name_id, index),
                ).fetchone()["n"]
        else:
            ended = conn.execute(
                "select cajex_private.sso_logout(%s, %s, null, 'saml_slo') as n",
                (r.connection_id, message.name_id),
            ).fetchone()["n"]
    _log.info(
        "sso.logout",
        connection_id=str(r.connection_id),
        workspace_id=str(r.workspace_id),
        sessions=ended,
        via="saml_slo",
    )
    if not idp.slo_url:
        return "request", None
    answer = saml.logout_response(sp, idp, message.id, dt.datetime.now(dt.UTC))
    key = saml.sp_signing_key(settings.data_dir)[0]
    return "request", saml.redirect_url(idp.slo_url, "SAMLResponse", answer, None, key)


def oidc_provision(
    pool,
    settings,
    r: Route,
    subject: str,
    email: str | None,
    name: str | None,
    groups: list[str],
    groups_known: bool,
    sid: str | None,
) -> SignIn:
    """Provision the person an OIDC provider vouched for (claims already verified)."""
    if not email:
        _refuse("no_email", r, "the identity provider sent no email address")
    try:
        with db.as_service(pool, settings.context_secret, r.workspace_id, "sso") as (
            conn,
            _,
        ):
            prov = conn.execute(
                "select * from cajex_private.sso_provision(%s, %s, %s, %s, %s, %s)",
                (r.connection_id, subject, email, name, groups, groups_known),
            ).fetchone()
    except Exception as exc:
        from cajex.errors import from_database

        known = from_database(exc) if hasattr(exc, "sqlstate") else None
        if known is None:
            raise
        _refuse("provision_" + known.code, r, known.message, 403)
    _log.info(
        "sso.signed_in",
        connection_id=str(r.connection_id),
        workspace_id=str(r.workspace_id),
        user_id=str(prov["user_id"]),
        created=prov["created"],
    )
    return SignIn(
        prov["user_id"],
        r.workspace_id,
        r.workspace_slug,
        r.connection_id,
        subject,
        sid,
        "sso_oidc",
        prov["role"],
        prov["created"],
    )


BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_MAX_AGE = 600  # seconds


def oidc_backchannel_logout(
    pool, settings, r: Route, rp: oidc.RelyingParty, token: str | None
) -> int:
    """OpenID Connect Back-Channel Logout 1.0 section 2.6: verify, then end the sessions.

    Refused (SSOError, nothing changed): a bad signature, another issuer or
    audience, an `iat` out of the skew, a `jti` seen before, a `typ` other than
    logout+jwt, no back-channel event, a `nonce`, neither `sid` nor `sub`,
    an `iat` older than ten minutes.
    """
    if not token:
        _refuse("logout_token_missing", r, "no logout token")
    try:
        header = oidc.decode_header(token)
        typ = header.get("typ")
        if typ is not None and str(typ).lower() not in (
            "logout+jwt",
            "application/logout+jwt",
        ):
            _refuse("logout_typ", r, "the token is not a logout token")
        claims = oidc.verify_jwt(
            token,
            keys=rp.keyset(),
            allowed_algs=rp.allowed_algs(),
            issuer=rp.issuer,
            audience=rp.client_id,
            clock_skew=rp.clock_skew,
            require_exp=False,
            require_sub=False,
        )
    except oidc.OIDCError as exc:
        _refuse("logout_" + exc.code, r, "the logout token was refused")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(
        events.get(BACKCHANNEL_EVENT), dict
    ):
        _refuse("logout_event", r, "the token carries no back-channel logout event")
    if "nonce" in claims:
        _refuse("logout_nonce", r, "a logout token must not carry a nonce")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 512:
        _refuse("logout_jti", r, "the logout token has no jti")
    sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
    sub = claims.get("sub") if isinstance(claims.get("sub"), str) else None
    if sid is None and sub is None:
        _refuse("logout_subject", r, "the logout token names neither sid nor sub")
    iat = claims.get("iat")
    # A logout token is sent once, at logout: an old one is refused, so the
    # jti cache (kept an hour at least) covers every token still accepted.
    if float(iat) < time.time() - LOGOUT_TOKEN_MAX_AGE - rp.clock_skew:
        _refuse("logout_stale", r, "the logout token is too old")
    kept_until = dt.datetime.fromtimestamp(float(iat), dt.UTC) + dt.timedelta(hours=1)
    with db.as_service(pool, settings.context_secret, r.workspace_id, "sso") as (
        conn,
        _,
    ):
        if not conn.execute(
            "select cajex.sso_remember_once(%s, 'oidc_logout_jti', %s, %s) as ok",
            (r.connection_id, jti, kept_until),
        ).fetchone()["ok"]:
            _refuse("logout_replay", r, "this logout token was already used")
        ended = conn.execute(
            "select cajex_private.sso_logout(%s, %s, %s, 'oidc_backchannel') as n",
            (r.connection_id, sub, sid),
        ).fetchone()["n"]
    _log.info(
        "sso.logout",
        connection_id=str(r.connection_id),
        workspace_id=str(r.workspace_id),
        sessions=ended,
        via="oidc_backchannel",
    )
    return ended
