"""SCIM resources: rows to JSON, JSON to the SQL functions' plain fields,
PATCH operations, and attribute projection.

Attribute names are case-insensitive in SCIM (RFC 7643 section 2.1), so every
lookup here goes through `_get`/`_key`, never a plain dict index.
"""

from __future__ import annotations

import copy
import re

from cajex.scim import SCHEMA_ENTERPRISE, SCHEMA_GROUP, SCHEMA_USER
from cajex.scim import filter as scim_filter


class ScimError(Exception):
    """An error answered in the SCIM error format."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type


def invalid(detail: str, scim_type: str = "invalidValue") -> ScimError:
    return ScimError(400, detail, scim_type)


# -- case-insensitive dict helpers -------------------------------------------------


def _key(obj: dict, name: str) -> str | None:
    low = name.lower()
    for k in obj:
        if isinstance(k, str) and k.lower() == low:
            return k
    return None


def _get(obj, name: str, default=None):
    if not isinstance(obj, dict):
        return default
    k = _key(obj, name)
    return obj[k] if k is not None else default


def _set(obj: dict, name: str, value) -> None:
    k = _key(obj, name)
    if k is not None and k != name:
        del obj[k]
    obj[name] = value


def _del(obj: dict, name: str) -> None:
    k = _key(obj, name)
    if k is not None:
        del obj[k]


def to_bool(value, field: str) -> bool:
    """A boolean, also from the strings Entra ID sends ("True", "False")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise invalid(f"{field} must be true or false")


def _text(value, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise invalid(f"{field} must be a string")
    text = str(value)
    if len(text) > limit:
        raise invalid(f"{field} is longer than {limit} characters")
    return text


# -- rendering ---------------------------------------------------------------------


def etag(version: int) -> str:
    return f'W/"{version}"'


def parse_if_match(header: str | None) -> int | None:
    """The version an If-Match header asks for (None: any)."""
    if not header or header.strip() == "*":
        return None
    m = re.fullmatch(r'\s*(?:W/)?"(\d{1,9})"\s*', header)
    if not m:
        raise ScimError(412, "If-Match names no version of this resource")
    return int(m.group(1))


def _iso(ts) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def render_user(row: dict, base_url: str) -> dict:
    out: dict = {
        "schemas": [SCHEMA_USER],
        "id": str(row["id"]),
        "userName": row["user_name"],
    }
    if row.get("external_id") is not None:
        out["externalId"] = row["external_id"]
    name = {
        k: v
        for k, v in (
            ("formatted", row.get("formatted_name")),
            ("familyName", row.get("family_name")),
            ("givenName", row.get("given_name")),
        )
        if v is not None
    }
    if name:
        out["name"] = name
    if row.get("display_name") is not None:
        out["displayName"] = row["display_name"]
    if row.get("emails"):
        out["emails"] = row["emails"]
    out["active"] = row["status"] == "active"
    if row.get("groups") is not None:
        out["groups"] = [
            {
                "value": str(g["value"]),
                "display": g["display"],
                "$ref": f"{base_url}/Groups/{g['value']}",
            }
            for g in row["groups"]
        ]
    ext = {
        k: v
        for k, v in (
            ("employeeNumber", row.get("employee_number")),
            ("department", row.get("department")),
        )
        if v is not None
    }
    if row.get("manager_id") is not None:
        ext["manager"] = {"value": row["manager_id"]}
    if ext:
        out["schemas"].append(SCHEMA_ENTERPRISE)
        out[SCHEMA_ENTERPRISE] = ext
    out["meta"] = {
        "resourceType": "User",
        "created": _iso(row["created_at"]),
        "lastModified": _iso(row["updated_at"]),
        "location": f"{base_url}/Users/{row['id']}",
        "version": etag(row["version"]),
    }
    return out


def render_group(row: dict, base_url: str, members: list[dict] | None) -> dict:
    out: dict = {
        "schemas": [SCHEMA_GROUP],
        "id": str(row["id"]),
        "displayName": row["display_name"],
    }
    if row.get("external_id") is not None:
        out["externalId"] = row["external_id"]
    if members is not None:
        out["members"] = [
            {
                "value": str(m["id"]),
                "display": m["display"],
                "$ref": f"{base_url}/Users/{m['id']}",
                "type": "User",
            }
            for m in members
        ]
    out["meta"] = {
        "resourceType": "Group",
        "created": _iso(row["created_at"]),
        "lastModified": _iso(row["updated_at"]),
        "location": f"{base_url}/Groups/{row['id']}",
        "version": etag(row["version"]),
    }
    return out


# -- input -------------------------------------------------------------------------


def _enterprise(obj: dict) -> dict:
    ext = _get(obj, SCHEMA_ENTERPRISE)
    return ext if isinstance(ext, dict) else {}


def _emails(value) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 20:
        raise invalid("emails must be a list of at most 20 addresses")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise invalid("each email is an object with a value")
        email = {"value": _text(_get(item, "value"), "emails.value", 320)}
        if email["value"] is None:
            raise invalid("each email has a value")
        if _get(item, "type") is not None:
            email["type"] = _text(_get(item, "type"), "emails.type", 64)
        if _get(item, "primary") is not None:
            email["primary"] = to_bool(_get(item, "primary"), "emails.primary")
        if _get(item, "display") is not None:
            email["display"] = _text(_get(item, "display"), "emails.display", 320)
        out.append(email)
    return out


def user_fields(obj) -> dict:
    """The SQL functions' plain fields of a SCIM User (POST, PUT, or the
    result of a PATCH); raises ScimError(400) for a malformed one."""
    if not isinstance(obj, dict):
        raise invalid("the body must be a JSON object", "invalidSyntax")
    user_name = _text(_get(obj, "userName"), "userName", 320)
    if not user_name or not user_name.strip():
        raise invalid("userName is required")
    name = _get(obj, "name") or {}
    if not isinstance(name, dict):
        raise invalid("name must be an object")
    emails = _emails(_get(obj, "emails"))
    primary = next((e["value"] for e in emails if e.get("primary")), None)
    work = next(
        (e["value"] for e in emails if (e.get("type") or "").lower() == "work"), None
    )
    ext = _enterprise(obj)
    manager = _get(ext, "manager")
    if isinstance(manager, dict):
        manager = _get(manager, "value")
    fields = {
        "user_name": user_name.strip(),
        "external_id": _text(_get(obj, "externalId"), "externalId", 256),
        "display_name": _text(_get(obj, "displayName"), "displayName", 256),
        "given_name": _text(_get(name, "givenName"), "name.givenName", 256),
        "family_name": _text(_get(name, "familyName"), "name.familyName", 256),
        "formatted_name": _text(_get(name, "formatted"), "name.formatted", 512),
        "emails": emails,
        "employee_number": _text(_get(ext, "employeeNumber"), "employeeNumber", 256),
        "department": _text(_get(ext, "department"), "department", 256),
        "manager_id": _text(manager, "manager", 256),
        "email": primary or work or (emails[0]["value"] if emails else None),
    }
    active = _get(obj, "active")
    if active is not None:
        fields["active"] = to_bool(active, "active")
    return fields


def group_fields(obj) -> dict:
    """displayName, externalId and member ids of a SCIM Group (POST, PUT)."""
    if not isinstance(obj, dict):
        raise invalid("the body must be a JSON object", "invalidSyntax")
    display = _text(_get(obj, "displayName"), "displayName", 256)
    if not display or not display.strip():
        raise invalid("displayName is required")
    return {
        "display_name": display,
        "external_id": _text(_get(obj, "externalId"), "externalId", 256),
        "members": member_ids(_get(obj, "members") or []),
    }


def member_ids(value) -> list[str]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or len(value) > 10000:
        raise invalid("members must be a list")
    ids = []
    for item in value:
        ref = _get(item, "value") if isinstance(item, dict) else item
        if not isinstance(ref, str):
            raise invalid("each member has a value (a user id)")
        ids.append(ref.strip().lower())
    return ids


# -- PATCH -------------------------------------------------------------------------

_PATH = re.compile(
    r"^(?P<attr>(?:urn:[A-Za-z0-9.:_-]+:)?[A-Za-z$][\w$-]*)"
    r"(?:\[(?P<filter>.*)\])?"
    r"(?:\.(?P<sub>[A-Za-z$][\w$-]*))?$",
    re.S,
)


def parse_ops(body) -> list[dict]:
    """The operations of a PatchOp body: op lowercased, path and value."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", "invalidSyntax")
    ops = _get(body, "Operations")
    if not isinstance(ops, list) or not ops or len(ops) > 1000:
        raise invalid("Operations must be a non-empty list", "invalidSyntax")
    out = []
    for op in ops:
        if not isinstance(op, dict):
            raise invalid("each operation is an object", "invalidSyntax")
        name = _get(op, "op")
        if not isinstance(name, str) or name.lower() not in (
            "add",
            "remove",
            "replace",
        ):
            raise invalid("op is add, remove or replace", "invalidSyntax")
        path = _get(op, "path")
        if path is not None and (not isinstance(path, str) or not path.strip()):
            raise invalid("path must be a string", "invalidPath")
        if name.lower() != "remove" and _key(op, "value") is None:
            raise invalid(f"{name} needs a value", "invalidValue")
        if path is None and name.lower() == "remove":
            raise ScimError(400, "remove needs a path", "noTarget")
        out.append(
            {
                "op": name.lower(),
                "path": path.strip() if path else None,
                "value": _get(op, "value"),
            }
        )
    return out


def split_path(path: str):
    """(schema URN or None, attribute, value filter AST or None, sub-attribute)."""
    if len(path) > 1024:
        raise invalid("the path is too long", "invalidPath")
    m = _PATH.match(path)
    if not m:
        raise invalid("that path is not one this service understands", "invalidPath")
    attr = m.group("attr")
    urn = None
    if attr.lower().startswith("urn:"):
        urn, _, attr = attr.rpartition(":")
    sub = m.group("sub")
    if "." in attr:
        attr, _, sub2 = attr.partition(".")
        sub = sub2 if sub is None else sub
    flt = None
    if m.group("filter") is not None:
        try:
            flt = scim_filter.parse(m.group("filter"))
        except scim_filter.FilterError:
            raise invalid("the path's filter is malformed", "invalidPath") from None
    # "name.givenName" written with a dot inside the attribute group.
    return urn, attr, flt, sub


def matches(node, item: dict) -> bool:
    """Evaluate a value filter against one element of a multi-valued attribute."""
    if isinstance(node, scim_filter.Logical):
        if node.op == "and":
            return matches(node.left, item) and matches(node.right, item)
        return matches(node.left, item) or matches(node.right, item)
    if isinstance(node, scim_filter.Not):
        return not matches(node.inner, item)
    if isinstance(node, scim_filter.Compare):
        have = _get(item, node.path.split(".")[-1])
        if node.op == "pr":
            return have not in (None, "", [])
        want = node.value
        if isinstance(have, bool) or isinstance(want, bool):
            try:
                return (to_bool(have, "value") == to_bool(want, "value")) == (
                    node.op == "eq"
                )
            except ScimError:
                return node.op == "ne"
        a = "" if have is None else str(have).lower()
        b = "" if want is None else str(want).lower()
        return {
            "eq": a == b,
            "ne": a != b,
            "co": b in a,
            "sw": a.startswith(b),
            "ew": a.endswith(b),
            "gt": a > b,
            "ge": a >= b,
            "lt": a < b,
            "le": a <= b,
        }[node.op]
    raise invalid("value filters do not nest", "invalidPath")


def _container(resource: dict, urn: str | None) -> dict:
    if urn and urn.lower() == SCHEMA_ENTERPRISE.lower():
        ext = _get(resource, SCHEMA_ENTERPRISE)
        if not isinstance(ext, dict):
            ext = {}
            _set(resource, SCHEMA_ENTERPRISE, ext)
        return ext
    if urn and urn.lower() not in (SCHEMA_USER.lower(), SCHEMA_GROUP.lower()):
        raise invalid("unknown schema in path", "invalidPath")
    return resource


_MULTI = {"emails", "members", "phonenumbers", "addresses", "groups"}


def _apply(resource: dict, op: str, path: str, value) -> None:
    urn, attr, flt, sub = split_path(path)
    if urn is None and attr.lower() == "manager" and _key(resource, "manager") is None:
        # Okta and Entra ID send the enterprise attributes without their URN
        # only with it; be lenient for manager, department, employeeNumber.
        urn = SCHEMA_ENTERPRISE
    if urn is None and attr.lower() in ("department", "employeenumber"):
        urn = SCHEMA_ENTERPRISE
    target = _container(resource, urn)
    if attr.lower() in ("id", "meta", "schemas", "groups"):
        raise ScimError(400, f"{attr} cannot be changed", "mutability")
    if flt is not None:
        items = _get(target, attr)
        items = items if isinstance(items, list) else []
        hits = [i for i in items if isinstance(i, dict) and matches(flt, i)]
        if op == "remove":
            if sub is None:
                _set(
                    target,
                    attr,
                    [i for i in items if not (isinstance(i, dict) and matches(flt, i))],
                )
            else:
                for i in hits:
                    _del(i, sub)
            return
        if not hits:
            # Entra ID: replace emails[type eq "work"].value creates the
            # work address when there is none.
            new = {}
            if isinstance(flt, scim_filter.Compare) and flt.op == "eq":
                new[flt.path.split(".")[-1]] = flt.value
            items.append(new)
            hits = [new]
            _set(target, attr, items)
        for i in hits:
            if sub is not None:
                _set(i, sub, value)
            elif isinstance(value, dict):
                for k, v in value.items():
                    _set(i, k, v)
        return
    if sub is not None:
        parent = _get(target, attr)
        if op == "remove":
            if isinstance(parent, dict):
                _del(parent, sub)
            elif isinstance(parent, list):
                for i in parent:
                    if isinstance(i, dict):
                        _del(i, sub)
            return
        if not isinstance(parent, dict):
            parent = {}
            _set(target, attr, parent)
        _set(parent, sub, value)
        return
    if op == "remove":
        _del(target, attr)
        return
    current = _get(target, attr)
    if op == "add" and attr.lower() in _MULTI and isinstance(current, list):
        incoming = value if isinstance(value, list) else [value]
        _set(target, attr, current + [v for v in incoming if v not in current])
    elif op == "add" and isinstance(current, dict) and isinstance(value, dict):
        for k, v in value.items():
            _set(current, k, v)
    else:
        _set(target, attr, value)


def apply_user_patch(resource: dict, ops: list[dict]) -> dict:
    """The User resource after the operations (a copy)."""
    out = copy.deepcopy(resource)
    for op in ops:
        if op["path"] is not None:
            _apply(out, op["op"], op["path"], op["value"])
            continue
        if not isinstance(op["value"], dict):
            raise invalid("an operation without a path needs an object value")
        for k, v in op["value"].items():
            if not isinstance(k, str):
                raise invalid("attribute names are strings")
            if k.lower() == SCHEMA_ENTERPRISE.lower() and isinstance(v, dict):
                for ek, ev in v.items():
                    _apply(out, op["op"], f"{SCHEMA_ENTERPRISE}:{ek}", ev)
            else:
                # Dotted keys ("name.givenName") and URN-prefixed keys are paths.
                _apply(out, op["op"], k, v)
    return out


def group_patch(ops: list[dict]) -> dict:
    """The changes for cajex.scim_update_group from a Group PATCH: keys
    display_name, external_id, members (replace), add, remove."""
    change: dict = {}

    def add(ids):
        change.setdefault("add", []).extend(ids)

    def remove(ids):
        change.setdefault("remove", []).extend(ids)

    def setattr_(name: str, value, op: str):
        low = name.lower()
        if low == "displayname":
            change["display_name"] = _text(value, "displayName", 256)
        elif low == "externalid":
            change["external_id"] = (
                _text(value, "externalId", 256) if op != "remove" else None
            )
        elif low == "members":
            ids = member_ids(value or [])
            if op == "add":
                add(ids)
            elif op == "replace":
                change.pop("add", None)
                change.pop("remove", None)
                change["members"] = ids
            else:
                remove(ids) if ids else change.update(members=[])
        elif low in ("id", "meta", "schemas"):
            if op != "replace" or low != "id":
                raise ScimError(400, f"{name} cannot be changed", "mutability")
        else:
            raise invalid(f"unknown attribute {name}", "invalidPath")

    for op in ops:
        if op["path"] is None:
            if not isinstance(op["value"], dict):
                raise invalid("an operation without a path needs an object value")
            for k, v in op["value"].items():
                setattr_(
                    k.rsplit(":", 1)[-1] if isinstance(k, str) else "", v, op["op"]
                )
            continue
        urn, attr, flt, sub = split_path(op["path"])
        if flt is not None:
            if attr.lower() != "members" or op["op"] != "remove":
                raise invalid("only members can be removed by a filter", "invalidPath")
            remove(_filter_ids(flt))
            continue
        if sub is not None:
            raise invalid("unknown attribute", "invalidPath")
        setattr_(attr, op["value"], op["op"])
    return change


def _filter_ids(node) -> list[str]:
    """The member ids a removal filter names: value eq "x" (or of several)."""
    if (
        isinstance(node, scim_filter.Compare)
        and node.op == "eq"
        and node.path == "value"
    ):
        if not isinstance(node.value, str):
            raise invalid("a member value is a string", "invalidFilter")
        return [node.value.strip().lower()]
    if isinstance(node, scim_filter.Logical) and node.op == "or":
        return _filter_ids(node.left) + _filter_ids(node.right)
    raise invalid('members are removed with members[value eq "<id>"]', "invalidFilter")


# -- projection --------------------------------------------------------------------

_ALWAYS = {"id", "schemas"}


def _split_list(text: str | None) -> list[tuple[str | None, str, str | None]]:
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        urn = None
        if part.lower().startswith("urn:"):
            head, _, tail = part.rpartition(":")
            if (
                tail.lower() == SCHEMA_ENTERPRISE.rsplit(":", 1)[1].lower()
                and head.lower() + ":" + tail.lower() == SCHEMA_ENTERPRISE.lower()
            ):
                out.append((SCHEMA_ENTERPRISE, "*", None))
                continue
            urn, part = head, tail
        attr, _, sub = part.partition(".")
        out.append((urn, attr, sub or None))
    return out


def project(resource: dict, attributes: str | None, excluded: str | None) -> dict:
    """Apply `attributes` / `excludedAttributes` (RFC 7644 section 3.9)."""
    if attributes:
        wanted = _split_list(attributes)
        out = {k: v for k, v in resource.items() if k.lower() in _ALWAYS}
        for urn, attr, sub in wanted:
            src, dst = resource, out
            if (
                urn
                and urn.lower() == SCHEMA_ENTERPRISE.lower()
                or (urn is None and attr == "*")
            ):
                src = _get(resource, SCHEMA_ENTERPRISE)
                if not isinstance(src, dict):
                    continue
                dst = out.setdefault(SCHEMA_ENTERPRISE, {})
                if attr == "*":
                    dst.update(src)
                    continue
            k = _key(src, attr)
            if k is None:
                continue
            if sub is None or not isinstance(src[k], (dict, list)):
                dst[k] = src[k]
            elif isinstance(src[k], dict):
                sk = _key(src[k], sub)
                if sk is not None:
                    dst.setdefault(k, {})[sk] = src[k][sk]
            else:
                dst[k] = [
                    {sk: i[sk] for sk in i if sk.lower() == sub.lower()}
                    for i in src[k]
                    if isinstance(i, dict)
                ]
        return out
    if excluded:
        out = copy.deepcopy(resource)
        for urn, attr, sub in _split_list(excluded):
            target = out
            if urn and urn.lower() == SCHEMA_ENTERPRISE.lower():
                target = _get(out, SCHEMA_ENTERPRISE) or {}
            if attr == "*":
                _del(out, SCHEMA_ENTERPRISE)
                continue
            if attr.lower() in _ALWAYS:
                continue
            if sub is None:
                _del(target, attr)
            elif isinstance(_get(target, attr), dict):
                _del(_get(target, attr), sub)
        return out
    return resource


def wants_members(attributes: str | None, excluded: str | None) -> bool:
    """Whether a Group response needs its members loaded at all."""
    if attributes:
        return any(a.lower() == "members" for _, a, _ in _split_list(attributes))
    if excluded:
        return not any(a.lower() == "members" for _, a, _ in _split_list(excluded))
    return True
