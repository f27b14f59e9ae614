"""Enterprise SSO: the IdP-facing endpoints, "Sign in with SSO" and the settings page.

Every IdP-facing URL names its connection, and the connection names its
workspace: an answer is verified with that connection's pinned issuer and
keys only, so one workspace's IdP is never accepted at another's endpoint.
"""

from __future__ import annotations

import json
import uuid

from cajex.web import auth
from cajex.web.auth import csrf_exempt
from cajex.web.middleware import (
    parse_uuid,
    register_nav,
    settings,
    workspace_view,
)
from cajex.web.middleware import signin_pool as pool
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from cajex import crypto, log
from cajex.errors import AppError
from cajex.identity import oidc
from cajex.sso import dns as sso_dns
from cajex.sso import saml, service

bp = Blueprint("sso", __name__)
_log = log.get("cajex.web.sso")


def init_app(app) -> None:
    register_nav(app, "SSO", "sso.settings_page", "sso.configure")


def _error(exc: service.SSOError):
    return render_template("sso/error.html", message=exc.message), exc.status


def _route(connection_id: str) -> service.Route:
    return service.route(pool(), connection_id)


def _finish_sign_in(result: service.SignIn):
    with pool().connection() as conn:
        auth.start_session(
            conn,
            result.user_id,
            result.auth_method,
            sso_workspace_id=result.workspace_id,
            sso_connection_id=result.connection_id,
            idp_session_id=result.idp_session_id,
            idp_subject=result.subject,
        )
        conn.commit()
    session["sso"] = {
        "connection_id": str(result.connection_id),
        "subject": result.subject,
        "session_index": result.idp_session_id,
    }
    return redirect(
        url_for("projects.page", slug=result.workspace_slug)
        if "projects.page" in current_app.view_functions
        else "/"
    )


# ---------------------------------------------------------------------------
# "Sign in with SSO"


@bp.route("/sso", methods=["GET", "POST"])
def sign_in_with_sso():
    if request.method == "GET":
        return render_template("sso/signin.html", message=None)
    email = (request.form.get("email") or "").strip()
    r = (
        service.route_for_email(pool(), email)
        if "@" in email and len(email) <= 320
        else None
    )
    if r is None:
        return render_template(
            "sso/signin.html", message="No single sign-on is set up for that address."
        ), 404
    return redirect(url_for("sso.login", connection_id=r.connection_id))


@bp.route("/sso/<connection_id>/login")
def login(connection_id: str):
    try:
        r = _route(connection_id)
        if r.type == "saml":
            url, binding = service.saml_login(pool(), settings(), r)
            response = redirect(url)
            # The IdP posts the answer back cross-site: only a SameSite=None
            # cookie (which must be Secure) comes with it. Over plain http
            # (a local set-up, whose IdP is on the same site) Lax does.
            secure = settings().public_url.startswith("https://")
            response.set_cookie(
                _binding_cookie(r.connection_id),
                binding,
                max_age=600,
                path=f"/sso/saml/{r.connection_id}/acs",
                secure=secure,
                httponly=True,
                samesite="None" if secure else "Lax",
            )
            return response
        return redirect(_oidc_begin(r))
    except service.SSOError as exc:
        return _error(exc)


# ---------------------------------------------------------------------------
# SAML


@bp.route("/sso/saml/<connection_id>/metadata")
def saml_metadata(connection_id: str):
    try:
        parse_uuid(connection_id)
    except AppError:
        abort(404)
    sp = service.sp_config(settings().public_url, connection_id)
    cert = saml.sp_signing_key(settings().data_dir)[1]
    return Response(saml.sp_metadata(sp, cert), mimetype="application/samlmetadata+xml")


@bp.route("/sso/saml/<connection_id>/acs", methods=["POST"])
@csrf_exempt
def saml_acs(connection_id: str):
    try:
        r = _route(connection_id)
        if r.type != "saml":
            raise service.SSOError(
                "wrong_type", "this connection does not speak SAML", 404
            )
        result = service.saml_acs(
            pool(),
            settings(),
            r,
            request.form.get("SAMLResponse"),
            request.cookies.get(_binding_cookie(r.connection_id)),
        )
    except service.SSOError as exc:
        return _error(exc)
    response = _finish_sign_in(result)
    response.delete_cookie(
        _binding_cookie(r.connection_id), path=f"/sso/saml/{r.connection_id}/acs"
    )
    return response


def _binding_cookie(connection_id) -> str:
    """The cookie that ties a SAML sign-in to the browser that started it."""
    return f"cajex_saml_{str(connection_id).replace('-', '')}"


@bp.route("/sso/saml/<connection_id>/slo", methods=["GET", "POST"])
@csrf_exempt
def saml_slo(connection_id: str):
    try:
        r = _route(connection_id)
        if request.method == "GET":
            # The redirect binding: the message is read from the raw query,
            # from the parameter whose signature is checked, never from
            # request.args (which decodes names a second way).
            kind, answer = service.saml_slo(
                pool(), settings(), r, xml=None, redirect_query=request.query_string
            )
        else:
            value = request.form.get("SAMLRequest") or request.form.get("SAMLResponse")
            xml = service.decode_post_binding(value)
            kind, answer = service.saml_slo(
                pool(), settings(), r, xml=xml, redirect_query=None
            )
    except saml.SAMLError as exc:
        return _error(service.SSOError(exc.reason, exc.message))
    except service.SSOError as exc:
        return _error(exc)
    if answer:
        return redirect(answer)
    return render_template("sso/error.html", message="You are signed out."), 200


@bp.route("/sso/logout", methods=["POST"])
def sp_logout():
    """Sign out here, then at the IdP (SP-initiated single logout)."""
    info = session.get("sso") or {}
    with pool().connection() as conn:
        auth.end_session(conn, "sign_out")
        conn.commit()
    target = "/"
    try:
        r = _route(info.get("connection_id", ""))
        if r.type == "saml" and info.get("subject"):
            target = (
                service.saml_logout_request_url(
                    pool(), settings(), r, info["subject"], info.get("session_index")
                )
                or "/"
            )
        elif r.type == "oidc":
            target = _oidc_logout_url(r) or "/"
    except service.SSOError:
        pass
    return redirect(target)


# ---------------------------------------------------------------------------
# OIDC (the relying-party core is cajex.identity.oidc)


def _rp(r: service.Route, row: dict, secret_loader=None) -> oidc.RelyingParty:
    e = service.endpoints(settings().public_url, r.connection_id)
    return oidc.RelyingParty(
        issuer=row["oidc_issuer"],
        client_id=row["oidc_client_id"],
        redirect_uri=e["redirect_uri"],
        client_secret=secret_loader,
        clock_skew=row["clock_skew_seconds"],
        discovery_url=row["oidc_discovery_url"],
    )


def _load(r: service.Route):
    from cajex import db

    master = crypto.master_key_from_settings(settings())
    with db.as_service(pool(), settings().context_secret, r.workspace_id, "sso") as (
        conn,
        _,
    ):
        row = service.get_connection(conn, r.connection_id)
        secret = service.client_secret(conn, master, r.workspace_id, r.connection_id)
    return row, secret


def _oidc_begin(r: service.Route) -> str:
    row, _ = _load(r)
    try:
        started = _rp(r, row).begin()
    except oidc.OIDCError as exc:
        raise service.SSOError(
            "provider_unreachable", "the identity provider cannot be reached"
        ) from exc
    # Kept in the signed cookie, keyed by connection: a callback at another
    # connection's URL finds no state of its own (mix-up defence).
    session["sso_oidc"] = {
        "cid": str(r.connection_id),
        "state": started.state,
        "nonce": started.nonce,
        "verifier": started.code_verifier,
    }
    return started.url


@bp.route("/sso/oidc/<connection_id>/callback", methods=["GET", "POST"])
@csrf_exempt
def oidc_callback(connection_id: str):
    try:
        r = _route(connection_id)
        if r.type != "oidc":
            raise service.SSOError(
                "wrong_type", "this connection does not speak OIDC", 404
            )
        pending = session.pop("sso_oidc", None) or {}
        if pending.get("cid") != str(r.connection_id):
            service._refuse(
                "mix_up", r, "this answer is for a sign-in started elsewhere"
            )
        row, secret = _load(r)
        params = (
            request.form.to_dict()
            if request.method == "POST"
            else request.args.to_dict()
        )
        if params.get("iss") is not None and params["iss"] != row["oidc_issuer"]:
            service._refuse(
                "mix_up", r, "this answer comes from another identity provider"
            )
        try:
            result = _rp(r, row, secret).complete(
                params,
                pending.get("state"),
                pending.get("nonce"),
                pending.get("verifier"),
            )
        except oidc.OIDCError as exc:
            service._refuse(exc.code, r, "the identity provider's answer was refused")
        claims = result.claims
        tenant = (row["settings"] or {}).get("tenant_id")
        if tenant and str(claims.get("tid") or "").lower() != tenant.lower():
            service._refuse(
                "entra_tenant", r, "the token is from another Entra ID tenant"
            )
        if claims.get("email_verified") is False:
            service._refuse(
                "email_unverified",
                r,
                "the identity provider has not verified the address",
            )
        email = claims.get("email") or (
            claims.get("preferred_username") if tenant else None
        )
        # Entra ID's group overage: past its limit (200 groups in a JWT) it
        # sends `_claim_names: {"groups": ...}` (or `hasgroups: true` in the
        # implicit flow) instead of the groups. The groups are then unknown,
        # not empty: the recorded groups and the role stay as they were.
        claim_names = claims.get("_claim_names")
        groups_known = not (
            (isinstance(claim_names, dict) and "groups" in claim_names)
            or claims.get("hasgroups") is True
        )
        groups = claims.get("groups") if groups_known else []
        if not isinstance(groups, list) or not all(isinstance(x, str) for x in groups):
            groups = []
        sign_in = service.oidc_provision(
            pool(),
            settings(),
            r,
            claims["sub"],
            email,
            claims.get("name"),
            groups,
            groups_known,
            claims.get("sid"),
        )
    except service.SSOError as exc:
        return _error(exc)
    return _finish_sign_in(sign_in)


def _oidc_logout_url(r: service.Route) -> str | None:
    row, _ = _load(r)
    try:
        end = _rp(r, row).metadata().get("end_session_endpoint")
    except oidc.OIDCError:
        return None
    if not isinstance(end, str):
        return None
    from urllib.parse import urlencode

    return (
        end
        + ("&" if "?" in end else "?")
        + urlencode(
            {
                "client_id": row["oidc_client_id"],
                "post_logout_redirect_uri": settings().public_url + "/",
            }
        )
    )


@bp.route("/sso/oidc/<connection_id>/backchannel-logout", methods=["POST"])
@csrf_exempt
def oidc_backchannel_logout(connection_id: str):
    try:
        r = _route(connection_id)
        row, _ = _load(r)
        ended = service.oidc_backchannel_logout(
            pool(), settings(), r, _rp(r, row), request.form.get("logout_token")
        )
    except service.SSOError as exc:
        return {"error": exc.reason}, 400
    return {"ended": ended}, 200, {"Cache-Control": "no-store"}


# ---------------------------------------------------------------------------
# The settings page (sso.configure)


def _page(message: str | None = None, report: dict | None = None, status: int = 200):
    conn = g.db
    has_feature = conn.execute(
        "select cajex.workspace_has_feature('sso') as ok"
    ).fetchone()["ok"]
    rows = service.list_connections(conn) if has_feature else []
    domains = conn.execute(
        "select domain, connection_id, verified_at is not null as verified,"
        " verification_token, last_check from cajex.sso_domains order by domain"
    ).fetchall()
    enforced = conn.execute(
        "select sso_enforced from cajex.workspaces where id = %s",
        (g.workspace.workspace_id,),
    ).fetchone()["sso_enforced"]
    items = [
        dict(
            row,
            endpoints=service.endpoints(settings().public_url, row["id"]),
            domains=[
                dict(
                    d,
                    record_name=sso_dns.challenge_name(d["domain"]),
                    record_value=f"cajex-domain-verification={d['verification_token']}",
                )
                for d in domains
                if d["connection_id"] == row["id"]
            ],
        )
        for row in rows
    ]
    return render_template(
        "sso/settings.html",
        has_feature=has_feature,
        connections=items,
        enforced=enforced,
        message=message,
        report=report,
    ), status


@bp.route("/w/<slug>/settings/sso")
@workspace_view("sso.configure")
def settings_page():
    return _page()


@bp.route("/w/<slug>/settings/sso", methods=["POST"])
@workspace_view("sso.configure")
def settings_action():
    form = request.form
    action = form.get("action", "")
    conn = g.db
    try:
        with conn.transaction():
            if action == "add_saml":
                source = form.get("metadata_url") or (
                    request.files.get("metadata").read()
                    if request.files.get("metadata")
                    else None
                )
                if not source:
                    raise AppError(
                        422,
                        "invalid",
                        "upload the metadata XML or give its URL",
                        "metadata",
                    )
                metadata, url = service.read_metadata(source)
                service.create_saml(
                    conn,
                    metadata,
                    metadata_url=url,
                    allow_idp_initiated=form.get("allow_idp_initiated") == "on",
                    default_role=form.get("default_role") or "member",
                )
                message = "Connection added. Give the identity provider the values below, then test and enable it."
            elif action == "add_oidc":
                service.create_oidc(
                    conn,
                    crypto.master_key_from_settings(settings()),
                    issuer=form.get("issuer", ""),
                    client_id=form.get("client_id", ""),
                    client_secret=form.get("client_secret") or None,
                    default_role=form.get("default_role") or "member",
                )
                message = "Connection added."
            elif action == "test":
                report = service.test_connection(
                    conn, parse_uuid(form.get("connection_id", ""))
                )
                return _page("Test finished.", report)
            elif action in ("enable", "disable"):
                conn.execute(
                    "select cajex.set_sso_connection_status(%s, %s)",
                    (parse_uuid(form.get("connection_id", "")), action + "d"),
                )
                message = f"Connection {action}d."
            elif action == "remove":
                conn.execute(
                    "select cajex.delete_sso_connection(%s)",
                    (parse_uuid(form.get("connection_id", "")),),
                )
                message = "Connection removed."
            elif action == "set_default_role":
                conn.execute(
                    "select cajex.update_sso_connection(%s, %s::jsonb)",
                    (
                        parse_uuid(form.get("connection_id", "")),
                        json.dumps({"default_role": form.get("default_role", "")}),
                    ),
                )
                message = "Saved."
            elif action == "claim_domain":
                domain = form.get("domain", "").strip().lower()
                value = conn.execute(
                    "select cajex.claim_sso_domain(%s, %s) as value",
                    (parse_uuid(form.get("connection_id", "")), domain),
                ).fetchone()["value"]
                message = (
                    "Domain claimed."
                    if value is None
                    else f"Domain claimed, pending proof: publish a TXT record at "
                    f"{sso_dns.challenge_name(domain)} with the value {value}. "
                    "It is checked now and again over the next week; until then "
                    "the domain routes nobody."
                )
            elif action == "check_domain":
                conn.execute(
                    "select cajex.recheck_sso_domain(%s)", (form.get("domain", ""),)
                )
                message = "The domain's TXT record will be checked again shortly."
            elif action == "enforce":
                conn.execute(
                    "select cajex.set_sso_enforced(%s)", (form.get("enforced") == "on",)
                )
                message = "Saved."
            else:
                raise AppError(400, "invalid", "unknown action", "action")
    except AppError as exc:
        return _page(exc.message, status=exc.status)
    except Exception as exc:
        from cajex.errors import from_database

        known = from_database(exc)
        if known is None:
            raise
        return _page(known.message, status=known.status)
    return _page(message)


def _uuid(value) -> uuid.UUID:
    return parse_uuid(value)
