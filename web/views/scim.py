"""SCIM 2.0 endpoints (/scim/v2/<workspace>/...) and the SCIM settings page.

A request authenticates with a bearer token; cajex_private.open_scim_context
looks its hash up and opens that token's workspace's context (actor
'scim:<token id>'), and everything after runs under RLS like any other
request. The workspace in the URL (slug or id) must be the token's: any other
answers 401, exactly like an unknown token. Writes go through the SQL
functions in db/functions/310_scim.sql.
"""

from __future__ import annotations

import functools
import json
import uuid

import psycopg
from cajex.web import auth
from cajex.web.middleware import pool, register_nav, settings, workspace_view
from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from psycopg import sql

from cajex import log
from cajex import scim as scim_lib
from cajex.errors import AppError
from cajex.scim import (
    SCHEMA_ENTERPRISE,
    SCHEMA_ERROR,
    SCHEMA_GROUP,
    SCHEMA_LIST,
    SCHEMA_USER,
)
from cajex.scim import filter as scim_filter
from cajex.scim import resources as res
from cajex.scim.resources import ScimError

_logger = log.get("cajex.scim")

bp = Blueprint("scim", __name__)

MAX_COUNT = 1000
DEFAULT_COUNT = 100
CONTENT_TYPE = "application/scim+json"

# -- the resource queries (fixed SQL; filters add parameterised conditions) --------

_USER_FROM = (
    "from cajex.scim_users su"
    " join cajex.memberships m on m.workspace_id = su.workspace_id and m.user_id = su.user_id"
)
_USER_GROUPS = (
    "(select coalesce(jsonb_agg(jsonb_build_object('value', g.id, 'display', g.display_name)"
    " order by g.display_name), '[]') from cajex.scim_group_members gm"
    " join cajex.scim_groups g on g.workspace_id = gm.workspace_id and g.id = gm.group_id"
    " where gm.workspace_id = su.workspace_id and gm.scim_user_id = su.id) as groups"
)
_USER_COLUMNS = "su.*, m.status"

USER_SCHEMA = scim_filter.Schema(
    attrs={
        "id": scim_filter.Attr("su.id", "uuid"),
        # userName eq is every client's lookup: the folded column is indexed
        # (db/schema/0310_scim_folded_names.sql).
        "username": scim_filter.Attr("su.user_name_folded", "folded"),
        "externalid": scim_filter.Attr("su.external_id", "exact"),
        "displayname": scim_filter.Attr("su.display_name"),
        "name.givenname": scim_filter.Attr("su.given_name"),
        "name.familyname": scim_filter.Attr("su.family_name"),
        "name.formatted": scim_filter.Attr("su.formatted_name"),
        "active": scim_filter.Attr("(m.status = 'active')", "bool"),
        "meta.created": scim_filter.Attr("su.created_at", "datetime"),
        "meta.lastmodified": scim_filter.Attr("su.updated_at", "datetime"),
        "employeenumber": scim_filter.Attr("su.employee_number", "exact"),
        "department": scim_filter.Attr("su.department"),
        "manager": scim_filter.Attr("su.manager_id", "exact"),
        "manager.value": scim_filter.Attr("su.manager_id", "exact"),
    },
    multis={
        "emails": scim_filter.Multi(
            "jsonb_array_elements(su.emails) e",
            {
                "value": scim_filter.Attr("(e ->> 'value')"),
                "type": scim_filter.Attr("(e ->> 'type')"),
                "display": scim_filter.Attr("(e ->> 'display')"),
                "primary": scim_filter.Attr(
                    "(case when jsonb_typeof(e -> 'primary') = 'boolean' then (e ->> 'primary')::boolean end)",
                    "bool",
                ),
            },
        ),
        "groups": scim_filter.Multi(
            "(select gm.group_id::text as value, g.display_name as display"
            " from cajex.scim_group_members gm"
            " join cajex.scim_groups g on g.workspace_id = gm.workspace_id and g.id = gm.group_id"
            " where gm.workspace_id = su.workspace_id and gm.scim_user_id = su.id) e",
            {
                "value": scim_filter.Attr("e.value"),
                "display": scim_filter.Attr("e.display"),
            },
        ),
    },
)
USER_SORT = {
    "id": "su.id",
    "username": "su.user_name_folded",
    "externalid": "su.external_id",
    "displayname": "lower(su.display_name)",
    "name.familyname": "lower(su.family_name)",
    "name.givenname": "lower(su.given_name)",
    "meta.created": "su.created_at",
    "meta.lastmodified": "su.updated_at",
}

GROUP_SCHEMA = scim_filter.Schema(
    attrs={
        "id": scim_filter.Attr("g.id", "uuid"),
        "displayname": scim_filter.Attr("g.display_name_folded", "folded"),
        "externalid": scim_filter.Attr("g.external_id", "exact"),
        "meta.created": scim_filter.Attr("g.created_at", "datetime"),
        "meta.lastmodified": scim_filter.Attr("g.updated_at", "datetime"),
    },
    multis={
        "members": scim_filter.Multi(
            "(select gm.scim_user_id::text as value from cajex.scim_group_members gm"
            " where gm.workspace_id = g.workspace_id and gm.group_id = g.id) e",
            {"value": scim_filter.Attr("e.value")},
        ),
    },
)
GROUP_SORT = {
    "id": "g.id",
    "displayname": "g.display_name_folded",
    "externalid": "g.external_id",
    "meta.created": "g.created_at",
    "meta.lastmodified": "g.updated_at",
}

# SQLSTATE -> (HTTP status, scimType)
_SQL_ERRORS = {
    "CXDUP": (409, "uniqueness"),
    "23505": (409, "uniqueness"),
    "CXINV": (400, "invalidValue"),
    "23514": (400, "invalidValue"),
    "22001": (400, "invalidValue"),
    "22P02": (400, "invalidValue"),
    # A NUL character in text or JSON, which PostgreSQL cannot hold.
    "22P05": (400, "invalidValue"),
    "CXNFD": (404, None),
    "CXSTL": (412, None),
    "CXOWN": (400, "mutability"),
    "CXFBD": (403, None),
    "CXFTR": (403, None),
    "CXPLN": (403, None),
    "CXNCX": (401, None),
    "40001": (503, None),
    "40P01": (503, None),
    "55P03": (503, None),
}


def scim_response(body, status: int = 200, headers: dict | None = None) -> Response:
    resp = Response(json.dumps(body), status=status, content_type=CONTENT_TYPE)
    resp.headers["Cache-Control"] = "no-store"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def scim_error(err: ScimError) -> Response:
    body = {"schemas": [SCHEMA_ERROR], "status": str(err.status), "detail": err.detail}
    if err.scim_type:
        body["scimType"] = err.scim_type
    headers = {"WWW-Authenticate": 'Bearer realm="scim"'} if err.status == 401 else None
    return scim_response(body, err.status, headers)


def _from_database(exc: psycopg.Error) -> ScimError:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if not sqlstate and "NUL (0x00)" in str(exc):
        # Refused by psycopg before anything was sent (RFC 7644 section 3.12).
        return ScimError(400, "text may not contain NUL characters", "invalidValue")
    status, scim_type = _SQL_ERRORS.get(sqlstate, (500, None))
    if status == 500:
        _logger.error("scim.database_error", sqlstate=sqlstate)
        return ScimError(500, "something went wrong; it was logged")
    diag = getattr(exc, "diag", None)
    detail = (
        diag.message_primary
        if sqlstate.startswith("CX") and diag and diag.message_primary
        else {
            409: "that already exists",
            400: "a value is not valid",
            503: "try again",
        }.get(status, "refused")
    )
    if status == 404:
        detail = "not found"
    return ScimError(status, detail, scim_type)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        return None
    return token


def scim_endpoint(view):
    """Authenticate the bearer token, open its context, map errors to SCIM."""

    @functools.wraps(view)
    def wrapper(workspace: str, *args, **kwargs):
        token = _bearer()
        if token is None:
            return scim_error(ScimError(401, "a bearer token is required"))
        try:
            with pool().connection() as conn:
                try:
                    with conn.transaction():
                        row = conn.execute(
                            "select * from cajex_private.open_scim_context(%s)",
                            (scim_lib.token_hash(token),),
                        ).fetchone()
                        if (
                            not row
                            or row["workspace_id"] is None
                            or workspace
                            not in (row["workspace_slug"], str(row["workspace_id"]))
                        ):
                            raise ScimError(
                                401, "the token is not valid for this service"
                            )
                        conn.execute("select cajex_private.require_scim()")
                        g.db = conn
                        g.scim = row
                        g.scim_base = (
                            f"{settings().public_url.rstrip('/')}/scim/v2/{workspace}"
                        )
                        return view(*args, **kwargs)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    raise _from_database(exc) from None
                except UnicodeEncodeError:
                    # A lone surrogate: refused before anything was sent.
                    raise ScimError(
                        400, "text must be valid Unicode (no lone surrogates)", "invalidValue"
                    ) from None
        except ScimError as err:
            return scim_error(err)
        except psycopg.OperationalError:
            return scim_error(
                ScimError(503, "the database is unavailable; try again shortly")
            )

    return auth.csrf_exempt(wrapper)


def _body():
    data = request.get_json(force=True, silent=True)
    if data is None:
        raise res.invalid("the body must be JSON", "invalidSyntax")
    return data


def _uuid(value: str) -> uuid.UUID:
    """An id from the path; anything else is simply not found."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError):
        raise ScimError(404, "not found") from None


def _page_args() -> tuple[int, int]:
    try:
        start = int(request.args.get("startIndex", "1"))
        count = int(request.args.get("count", str(DEFAULT_COUNT)))
    except ValueError:
        raise res.invalid("startIndex and count are integers") from None
    return max(start, 1), min(max(count, 0), MAX_COUNT)


def _where(schema) -> tuple[sql.Composable, list]:
    text = request.args.get("filter")
    if text is None:
        return sql.SQL("true"), []
    try:
        return scim_filter.compile_filter(scim_filter.parse(text), schema)
    except scim_filter.FilterError as exc:
        raise ScimError(400, f"invalid filter: {exc}", "invalidFilter") from None


def _order(sort_map: dict, default: str, tiebreak: str) -> sql.Composable:
    sort_by = request.args.get("sortBy")
    if not sort_by:
        return sql.SQL(default)
    key = scim_filter.normalise_path(sort_by) if sort_by.strip() else ""
    expr = sort_map.get(key)
    if expr is None:
        raise res.invalid(f"cannot sort by {sort_by[:60]}")
    direction = (
        "desc" if request.args.get("sortOrder", "").lower() == "descending" else "asc"
    )
    return sql.SQL(f"{expr} {direction} nulls last, {tiebreak}")


def _list(items: list[dict], total: int, start: int) -> Response:
    attrs, excluded = (
        request.args.get("attributes"),
        request.args.get("excludedAttributes"),
    )
    return scim_response(
        {
            "schemas": [SCHEMA_LIST],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": len(items),
            "Resources": [res.project(i, attrs, excluded) for i in items],
        }
    )


def _one(resource: dict, status: int = 200) -> Response:
    attrs, excluded = (
        request.args.get("attributes"),
        request.args.get("excludedAttributes"),
    )
    headers = {"ETag": resource["meta"]["version"]}
    if status == 201:
        headers["Location"] = resource["meta"]["location"]
    return scim_response(res.project(resource, attrs, excluded), status, headers)


# -- discovery ---------------------------------------------------------------------


@bp.route("/scim/v2/<workspace>/ServiceProviderConfig", methods=["GET"])
@scim_endpoint
def service_provider_config():
    return scim_response(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": f"{settings().public_url.rstrip('/')}/docs/scim",
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": MAX_COUNT},
            "changePassword": {"supported": False},
            "sort": {"supported": True},
            "etag": {"supported": True},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "A workspace SCIM token from Settings > SCIM.",
                    "primary": True,
                }
            ],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": f"{g.scim_base}/ServiceProviderConfig",
            },
        }
    )


def _resource_types() -> list[dict]:
    return [
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "schema": SCHEMA_USER,
            "schemaExtensions": [{"schema": SCHEMA_ENTERPRISE, "required": False}],
            "meta": {
                "resourceType": "ResourceType",
                "location": f"{g.scim_base}/ResourceTypes/User",
            },
        },
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "schema": SCHEMA_GROUP,
            "meta": {
                "resourceType": "ResourceType",
                "location": f"{g.scim_base}/ResourceTypes/Group",
            },
        },
    ]


@bp.route("/scim/v2/<workspace>/ResourceTypes", methods=["GET"])
@bp.route("/scim/v2/<workspace>/ResourceTypes/<name>", methods=["GET"])
@scim_endpoint
def resource_types(name: str | None = None):
    types = _resource_types()
    if name is not None:
        for t in types:
            if t["id"] == name:
                return scim_response(t)
        raise ScimError(404, "not found")
    return scim_response(
        {
            "schemas": [SCHEMA_LIST],
            "totalResults": len(types),
            "startIndex": 1,
            "itemsPerPage": len(types),
            "Resources": types,
        }
    )


def _attr(name, type_="string", **kw):
    out = {
        "name": name,
        "type": type_,
        "multiValued": False,
        "required": False,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    }
    out.update(kw)
    return out


def _schemas() -> list[dict]:
    sub = [_attr("value"), _attr("type"), _attr("primary", "boolean"), _attr("display")]
    user = [
        _attr("userName", required=True, uniqueness="server"),
        _attr("externalId", caseExact=True),
        _attr(
            "name",
            "complex",
            subAttributes=[_attr("formatted"), _attr("familyName"), _attr("givenName")],
        ),
        _attr("displayName"),
        _attr("emails", "complex", multiValued=True, subAttributes=sub),
        _attr("active", "boolean"),
        _attr(
            "groups",
            "complex",
            multiValued=True,
            mutability="readOnly",
            subAttributes=[_attr("value"), _attr("display")],
        ),
    ]
    group = [
        _attr("displayName", required=True, uniqueness="server"),
        _attr("externalId", caseExact=True),
        _attr(
            "members",
            "complex",
            multiValued=True,
            subAttributes=[_attr("value"), _attr("display")],
        ),
    ]
    enterprise = [
        _attr("employeeNumber"),
        _attr("department"),
        _attr("manager", "complex", subAttributes=[_attr("value")]),
    ]
    out = []
    for sid, name, attrs in (
        (SCHEMA_USER, "User", user),
        (SCHEMA_GROUP, "Group", group),
        (SCHEMA_ENTERPRISE, "EnterpriseUser", enterprise),
    ):
        out.append(
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
                "id": sid,
                "name": name,
                "attributes": attrs,
                "meta": {
                    "resourceType": "Schema",
                    "location": f"{g.scim_base}/Schemas/{sid}",
                },
            }
        )
    return out


@bp.route("/scim/v2/<workspace>/Schemas", methods=["GET"])
@bp.route("/scim/v2/<workspace>/Schemas/<sid>", methods=["GET"])
@scim_endpoint
def schemas(sid: str | None = None):
    items = _schemas()
    if sid is not None:
        for s in items:
            if s["id"].lower() == sid.lower():
                return scim_response(s)
        raise ScimError(404, "not found")
    return scim_response(
        {
            "schemas": [SCHEMA_LIST],
            "totalResults": len(items),
            "startIndex": 1,
            "itemsPerPage": len(items),
            "Resources": items,
        }
    )


# -- Users -------------------------------------------------------------------------


def _user_row(conn, scim_id: uuid.UUID, lock: bool = False) -> dict:
    row = conn.execute(
        f"select {_USER_COLUMNS}, {_USER_GROUPS} {_USER_FROM} where su.id = %s",
        (scim_id,),
    ).fetchone()
    if row is None:
        raise ScimError(404, "not found")
    return row


def _get_user(scim_id: uuid.UUID) -> dict:
    return res.render_user(_user_row(g.db, scim_id), g.scim_base)


@bp.route("/scim/v2/<workspace>/Users", methods=["GET"])
@scim_endpoint
def list_users():
    where, params = _where(USER_SCHEMA)
    start, count = _page_args()
    total = g.db.execute(
        sql.SQL("select count(*) as n " + _USER_FROM + " where {}").format(where),
        params,
    ).fetchone()["n"]
    rows = []
    if count:
        rows = g.db.execute(
            sql.SQL(
                f"select {_USER_COLUMNS}, {_USER_GROUPS} {_USER_FROM} where {{}} order by {{}} "
                "limit {} offset {}"
            ).format(
                where,
                _order(USER_SORT, "su.created_at, su.id", "su.id"),
                sql.Literal(count),
                sql.Literal(start - 1),
            ),
            params,
        ).fetchall()
    return _list([res.render_user(r, g.scim_base) for r in rows], total, start)


@bp.route("/scim/v2/<workspace>/Users/<scim_id>", methods=["GET"])
@scim_endpoint
def get_user(scim_id: str):
    return _one(_get_user(_uuid(scim_id)))


@bp.route("/scim/v2/<workspace>/Users", methods=["POST"])
@scim_endpoint
def create_user():
    fields = res.user_fields(_body())
    new_id = g.db.execute(
        "select cajex.scim_create_user(%s) as id", (psycopg.types.json.Jsonb(fields),)
    ).fetchone()["id"]
    _logger.info(
        "scim.user_created", scim_user_id=str(new_id), token_id=str(g.scim["token_id"])
    )
    return _one(_get_user(new_id), 201)


def _replace_user(scim_id: uuid.UUID, resource: dict) -> Response:
    fields = res.user_fields(resource)
    version = res.parse_if_match(request.headers.get("If-Match"))
    g.db.execute(
        "select cajex.scim_replace_user(%s, %s, %s)",
        (scim_id, psycopg.types.json.Jsonb(fields), version),
    )
    return _one(_get_user(scim_id))


@bp.route("/scim/v2/<workspace>/Users/<scim_id>", methods=["PUT"])
@scim_endpoint
def put_user(scim_id: str):
    sid = _uuid(scim_id)
    body = _body()
    _user_row(g.db, sid)
    return _replace_user(sid, body)


@bp.route("/scim/v2/<workspace>/Users/<scim_id>", methods=["PATCH"])
@scim_endpoint
def patch_user(scim_id: str):
    sid = _uuid(scim_id)
    ops = res.parse_ops(_body())
    current = _get_user(sid)
    current.pop("groups", None)
    patched = res.apply_user_patch(current, ops)
    return _replace_user(sid, patched)


@bp.route("/scim/v2/<workspace>/Users/<scim_id>", methods=["DELETE"])
@scim_endpoint
def delete_user(scim_id: str):
    sid = _uuid(scim_id)
    version = res.parse_if_match(request.headers.get("If-Match"))
    g.db.execute("select cajex.scim_delete_user(%s, %s)", (sid, version))
    _logger.info(
        "scim.user_deleted", scim_user_id=str(sid), token_id=str(g.scim["token_id"])
    )
    return Response(status=204)


# -- Groups ------------------------------------------------------------------------


def _members(conn, group_ids: list) -> dict:
    out: dict = {gid: [] for gid in group_ids}
    if not group_ids:
        return out
    for r in conn.execute(
        "select gm.group_id, su.id, coalesce(su.display_name, su.user_name) as display"
        " from cajex.scim_group_members gm"
        " join cajex.scim_users su on su.workspace_id = gm.workspace_id and su.id = gm.scim_user_id"
        " where gm.group_id = any(%s) order by su.user_name",
        (group_ids,),
    ):
        out[r["group_id"]].append(r)
    return out


def _get_group(gid: uuid.UUID) -> dict:
    row = g.db.execute(
        "select g.* from cajex.scim_groups g where g.id = %s", (gid,)
    ).fetchone()
    if row is None:
        raise ScimError(404, "not found")
    want = res.wants_members(
        request.args.get("attributes"), request.args.get("excludedAttributes")
    )
    members = _members(g.db, [gid])[gid] if want else None
    return res.render_group(row, g.scim_base, members)


@bp.route("/scim/v2/<workspace>/Groups", methods=["GET"])
@scim_endpoint
def list_groups():
    where, params = _where(GROUP_SCHEMA)
    start, count = _page_args()
    total = g.db.execute(
        sql.SQL("select count(*) as n from cajex.scim_groups g where {}").format(where),
        params,
    ).fetchone()["n"]
    rows = []
    if count:
        rows = g.db.execute(
            sql.SQL(
                "select g.* from cajex.scim_groups g where {} order by {} limit {} offset {}"
            ).format(
                where,
                _order(GROUP_SORT, "g.created_at, g.id", "g.id"),
                sql.Literal(count),
                sql.Literal(start - 1),
            ),
            params,
        ).fetchall()
    want = res.wants_members(
        request.args.get("attributes"), request.args.get("excludedAttributes")
    )
    members = _members(g.db, [r["id"] for r in rows]) if want else {}
    return _list(
        [
            res.render_group(r, g.scim_base, members.get(r["id"]) if want else None)
            for r in rows
        ],
        total,
        start,
    )


@bp.route("/scim/v2/<workspace>/Groups/<gid>", methods=["GET"])
@scim_endpoint
def get_group(gid: str):
    return _one(_get_group(_uuid(gid)))


@bp.route("/scim/v2/<workspace>/Groups", methods=["POST"])
@scim_endpoint
def create_group():
    fields = res.group_fields(_body())
    new_id = g.db.execute(
        "select cajex.scim_create_group(%s) as id", (psycopg.types.json.Jsonb(fields),)
    ).fetchone()["id"]
    return _one(_get_group(new_id), 201)


@bp.route("/scim/v2/<workspace>/Groups/<gid>", methods=["PUT"])
@scim_endpoint
def put_group(gid: str):
    group_id = _uuid(gid)
    fields = res.group_fields(_body())
    version = res.parse_if_match(request.headers.get("If-Match"))
    g.db.execute(
        "select cajex.scim_update_group(%s, %s, %s)",
        (group_id, psycopg.types.json.Jsonb(fields), version),
    )
    return _one(_get_group(group_id))


@bp.route("/scim/v2/<workspace>/Groups/<gid>", methods=["PATCH"])
@scim_endpoint
def patch_group(gid: str):
    group_id = _uuid(gid)
    change = res.group_patch(res.parse_ops(_body()))
    version = res.parse_if_match(request.headers.get("If-Match"))
    g.db.execute(
        "select cajex.scim_update_group(%s, %s, %s)",
        (group_id, psycopg.types.json.Jsonb(change), version),
    )
    # Entra ID and Okta read no body back from a group PATCH; 204 keeps a
    # large group's member list off the wire unless asked for.
    if request.args.get("attributes") or request.args.get("excludedAttributes"):
        return _one(_get_group(group_id))
    return Response(status=204)


@bp.route("/scim/v2/<workspace>/Groups/<gid>", methods=["DELETE"])
@scim_endpoint
def delete_group(gid: str):
    group_id = _uuid(gid)
    version = res.parse_if_match(request.headers.get("If-Match"))
    g.db.execute("select cajex.scim_delete_group(%s, %s)", (group_id, version))
    return Response(status=204)


@bp.route(
    "/scim/v2/<workspace>/<path:rest>",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
)
@scim_endpoint
def unknown_endpoint(rest: str):
    raise ScimError(404, "not found")


# -- the settings page -------------------------------------------------------------


@bp.route("/w/<slug>/settings/scim", methods=["GET"])
@workspace_view("scim.configure")
def settings_page():
    tokens = g.db.execute(
        "select id, label, created_at, last_used_at, revoked_at from cajex.scim_tokens"
        " order by revoked_at is not null, created_at desc"
    ).fetchall()
    activity = g.db.execute(
        "select occurred_at, actor, action, target_type, target_id from cajex.audit_log"
        " where actor like 'scim:%%' or action like 'scim.%%'"
        " order by occurred_at desc limit 50"
    ).fetchall()
    mappings = g.db.execute(
        "select id, group_key, role from cajex.group_role_mappings order by lower(group_key)"
    ).fetchall()
    has_feature = g.db.execute(
        "select cajex.workspace_has_feature('scim') as ok"
    ).fetchone()["ok"]
    base_url = (
        f"{settings().public_url.rstrip('/')}/scim/v2/{g.workspace.workspace_slug}"
    )
    new_token = request.args.get("created") and _pop_new_token()
    return render_template(
        "scim/settings.html",
        tokens=tokens,
        activity=activity,
        mappings=mappings,
        base_url=base_url,
        has_feature=has_feature,
        new_token=new_token,
    )


def _pop_new_token() -> str | None:
    from flask import session

    return session.pop("scim_new_token", None)


@bp.route("/w/<slug>/settings/scim/tokens", methods=["POST"])
@workspace_view("scim.configure")
def create_token_view():
    from flask import session

    label = (request.form.get("label") or "").strip() or "SCIM token"
    _, token = scim_lib.create_token(g.db, label)
    # Shown once, on the next page, then gone: it is never stored.
    session["scim_new_token"] = token
    return redirect(
        url_for("scim.settings_page", slug=g.workspace.workspace_slug, created=1)
    )


@bp.route("/w/<slug>/settings/scim/tokens/<token_id>/revoke", methods=["POST"])
@workspace_view("scim.configure")
def revoke_token_view(token_id: str):
    try:
        tid = uuid.UUID(token_id)
    except ValueError:
        raise AppError(404, "not_found", "no such token") from None
    g.db.execute("select cajex.revoke_scim_token(%s)", (tid,))
    return redirect(url_for("scim.settings_page", slug=g.workspace.workspace_slug))


@bp.route("/w/<slug>/settings/scim/mappings", methods=["POST"])
@workspace_view("scim.configure")
def set_mapping_view():
    g.db.execute(
        "select cajex.set_group_role_mapping(%s, %s)",
        (request.form.get("group_key", ""), request.form.get("role", "")),
    )
    return redirect(url_for("scim.settings_page", slug=g.workspace.workspace_slug))


@bp.route("/w/<slug>/settings/scim/mappings/<mapping_id>/delete", methods=["POST"])
@workspace_view("scim.configure")
def delete_mapping_view(mapping_id: str):
    try:
        mid = uuid.UUID(mapping_id)
    except ValueError:
        raise AppError(404, "not_found", "no such mapping") from None
    g.db.execute("select cajex.delete_group_role_mapping(%s)", (mid,))
    return redirect(url_for("scim.settings_page", slug=g.workspace.workspace_slug))


def init_app(app) -> None:
    register_nav(app, "SCIM", "scim.settings_page", "scim.configure")
