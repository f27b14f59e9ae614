"""SCIM over HTTP: RFC 7644 examples, Entra ID and Okta request shapes,
lifecycle, group roles, and isolation between two workspaces' tokens."""

from __future__ import annotations

import json
import urllib.parse
import uuid

import pytest

from cajex import scim as scim_lib

CT = "application/scim+json"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


class Scim:
    """A SCIM client for one workspace: its base path and bearer token."""

    def __init__(self, client, ws, token, token_id=None):
        self.client, self.ws, self.token, self.token_id = client, ws, token, token_id
        self.base = f"/scim/v2/{ws.slug}"

    def call(self, method, path, body=None, token=None, base=None, **headers):
        headers = {"Authorization": f"Bearer {token or self.token}", **headers}
        kwargs = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
            headers["Content-Type"] = CT
        return self.client.open((base or self.base) + path, method=method, **kwargs)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.call("POST", path, body, **kw)

    def patch(self, path, ops, **kw):
        return self.call("PATCH", path, {"schemas": [PATCH], "Operations": ops}, **kw)

    def user(self, user_name, **extra):
        body = {
            "schemas": [USER],
            "userName": user_name,
            "active": True,
            "emails": [{"value": user_name, "type": "work", "primary": True}],
            **extra,
        }
        resp = self.post("/Users", body)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()


def _token(world, ws):
    with world.as_user(ws.owner, ws) as (conn, _):
        return scim_lib.create_token(conn, "test")


@pytest.fixture
def two(world, client):
    a = world.workspace(plan="enterprise")
    b = world.workspace(plan="enterprise")
    ta = _token(world, a)
    tb = _token(world, b)
    return Scim(client, a, ta[1], ta[0]), Scim(client, b, tb[1], tb[0])


def _count(world, sql, *args):
    return world.admin.execute(sql, args).fetchone()["n"]


def test_discovery_endpoints(two):
    a, _ = two
    spc = a.get("/ServiceProviderConfig")
    assert spc.status_code == 200 and spc.content_type.startswith(CT)
    assert spc.get_json()["patch"]["supported"] is True
    assert spc.get_json()["filter"]["supported"] is True
    types = a.get("/ResourceTypes").get_json()
    assert {t["id"] for t in types["Resources"]} == {"User", "Group"}
    schemas = a.get("/Schemas").get_json()
    assert USER in {s["id"] for s in schemas["Resources"]}
    assert a.get(f"/Schemas/{USER}").status_code == 200


def test_rfc_create_get_replace_delete_user(two, world):
    a, _ = two
    # RFC 7644 section 3.3, the example POST.
    resp = a.post(
        "/Users",
        {
            "schemas": [USER],
            "userName": "bjensen@example.com",
            "externalId": "bjensen",
            "name": {
                "formatted": "Ms. Barbara J Jensen III",
                "familyName": "Jensen",
                "givenName": "Barbara",
            },
        },
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["userName"] == "bjensen@example.com" and body["active"] is True
    assert resp.headers["Location"].endswith(f"/Users/{body['id']}")
    assert resp.headers["ETag"] == body["meta"]["version"]
    uid = body["id"]
    got = a.get(f"/Users/{uid}").get_json()
    assert got["name"]["givenName"] == "Barbara"

    # RFC 7644 section 3.5.1, PUT replaces.
    put = a.call(
        "PUT",
        f"/Users/{uid}",
        {
            "schemas": [USER],
            "id": uid,
            "userName": "bjensen@example.com",
            "externalId": "bjensen",
            "name": {"familyName": "Jensen", "givenName": "Babs"},
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": True}
            ],
        },
    )
    assert put.status_code == 200 and put.get_json()["name"] == {
        "familyName": "Jensen",
        "givenName": "Babs",
    }

    # A stale If-Match is refused, the current one accepted.
    stale = a.call(
        "PUT",
        f"/Users/{uid}",
        {"userName": "bjensen@example.com"},
        **{"If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412
    assert a.call("DELETE", f"/Users/{uid}").status_code == 204
    assert a.get(f"/Users/{uid}").status_code == 404
    # The person stays; only the membership went.
    assert (
        _count(
            world,
            "select count(*) as n from cajex.users where email = 'bjensen@example.com'",
        )
        == 1
    )


def test_duplicate_user_name_is_uniqueness_but_fine_in_another_workspace(two):
    a, b = two
    a.user("dup@example.com")
    resp = a.post("/Users", {"schemas": [USER], "userName": "DUP@example.com"})
    assert resp.status_code == 409
    assert resp.get_json()["scimType"] == "uniqueness"
    assert resp.get_json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert resp.get_json()["status"] == "409"
    b.user("dup@example.com")  # the same person, a second membership


@pytest.mark.parametrize("name", ["nul\u0000@example.com", "half\ud800@example.com"])
def test_text_postgresql_cannot_hold_is_invalid_value_and_creates_nothing(two, world, name):
    """A NUL character or a lone surrogate is refused in the SCIM error
    format, not a 500."""
    a, _ = two
    resp = a.post("/Users", {"schemas": [USER], "userName": name})
    assert resp.status_code == 400 and resp.get_json()["scimType"] == "invalidValue"
    listed = a.get("/Users").get_json()
    assert listed["totalResults"] == 0


def test_filters_pagination_projection_sorting(two):
    a, b = two
    for i in range(5):
        a.user(
            f"user{i}@corp.example",
            displayName=f"User {i}",
            emails=[
                {"value": f"user{i}@corp.example", "type": "work" if i % 2 else "home"}
            ],
        )
    b.user("user0@corp.example")
    resp = a.get('/Users?filter=userName eq "USER3@corp.example"')
    body = resp.get_json()
    assert (
        body["totalResults"] == 1
        and body["Resources"][0]["userName"] == "user3@corp.example"
    )
    assert (
        a.get(
            '/Users?filter=userName sw "user" and not (userName ew "0@corp.example")'
        ).get_json()["totalResults"]
        == 4
    )
    assert a.get('/Users?filter=emails[type eq "work"]').get_json()["totalResults"] == 2
    assert (
        a.get('/Users?filter=emails[type eq "work"].value co "user1"').get_json()[
            "totalResults"
        ]
        == 1
    )
    assert (
        a.get(
            '/Users?filter=(displayName eq "User 1" or displayName eq "User 2")'
        ).get_json()["totalResults"]
        == 2
    )
    assert (
        a.get('/Users?filter=meta.created gt "2000-01-01T00:00:00Z"').get_json()[
            "totalResults"
        ]
        == 5
    )
    assert (
        a.get('/Users?filter=meta.created lt "2000-01-01T00:00:00Z"').get_json()[
            "totalResults"
        ]
        == 0
    )
    assert a.get("/Users?filter=externalId pr").get_json()["totalResults"] == 0
    assert a.get("/Users?filter=active eq true").get_json()["totalResults"] == 5
    page = a.get(
        "/Users?startIndex=2&count=2&sortBy=userName&sortOrder=descending"
    ).get_json()
    assert page["totalResults"] == 5
    assert page["startIndex"] == 2 and page["itemsPerPage"] == 2
    names = [r["userName"] for r in page["Resources"]]
    assert names == sorted(names, reverse=True)
    only = a.get("/Users?attributes=userName&count=1").get_json()["Resources"][0]
    assert set(only) == {"schemas", "id", "userName"}
    excl = a.get("/Users?excludedAttributes=emails,meta&count=1").get_json()[
        "Resources"
    ][0]
    assert "emails" not in excl and "meta" not in excl and "userName" in excl
    assert a.get("/Users?count=0").get_json()["totalResults"] == 5


@pytest.mark.parametrize(
    "bad",
    [
        "userName eq",
        'userName zz "x"',
        '(userName eq "x"',
        'userName eq "x" and',
        'emails[type eq "w"',
        'meta.created gt "not a date"',
        'active eq "yes"',
        'nosuch eq "x"',
        "userName eq 'x'",
        "",
        'userName eq "x"; drop table cajex.users',
        'emails[type eq "work"[value eq "x"]]',
    ],
)
def test_bad_filters_are_invalid_filter(two, bad):
    a, _ = two
    resp = a.get("/Users?" + urllib.parse.urlencode({"filter": bad}))
    assert resp.status_code == 400, bad
    assert resp.get_json()["scimType"] == "invalidFilter"


def test_entra_id_request_shapes(two, world):
    a, _ = two
    # Entra ID checks for the user first, by userName.
    probe = a.get(
        '/Users?filter=userName eq "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"'
    )
    assert probe.status_code == 200 and probe.get_json()["totalResults"] == 0
    created = a.post(
        "/Users",
        {
            "schemas": [USER, ENT],
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
            "active": True,
            "emails": [
                {
                    "primary": True,
                    "type": "work",
                    "value": "Test_User_fd0ea19b@testuser.com",
                }
            ],
            "meta": {"resourceType": "User"},
            "name": {
                "formatted": "givenName familyName",
                "familyName": "familyName",
                "givenName": "givenName",
            },
            "roles": [],
            ENT: {
                "employeeNumber": "701984",
                "department": "Tour Operations",
                "manager": {"value": "123"},
            },
        },
    )
    assert created.status_code == 201, created.get_json()
    uid = created.get_json()["id"]
    assert created.get_json()[ENT]["department"] == "Tour Operations"
    # Entra ID PATCH: capitalised ops, string booleans, a filter path, a URN path.
    resp = a.patch(
        f"/Users/{uid}",
        [
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "updatedEmail@microsoft.com",
            },
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
            {"op": "Add", "path": f"{ENT}:department", "value": "Finance"},
            {"op": "Replace", "path": "active", "value": "False"},
        ],
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["emails"][0]["value"] == "updatedEmail@microsoft.com"
    assert body["name"]["familyName"] == "updatedFamilyName"
    assert body[ENT]["department"] == "Finance"
    assert body["active"] is False
    # Deactivated: still returned, with active false.
    assert a.get(f"/Users/{uid}").get_json()["active"] is False
    # Pathless replace with a dotted key, and the string "True".
    resp = a.patch(
        f"/Users/{uid}",
        [
            {
                "op": "replace",
                "value": {
                    "active": "True",
                    "name.givenName": "Back",
                    "displayName": "Back Again",
                },
            },
        ],
    )
    assert resp.status_code == 200, resp.get_json()
    assert (
        resp.get_json()["active"] is True
        and resp.get_json()["name"]["givenName"] == "Back"
    )

    # Groups: Entra ID creates, then adds and removes members by value list.
    g = a.post(
        "/Groups",
        {
            "schemas": [GROUP],
            "externalId": "8aa1a0c0",
            "displayName": "Group1DisplayName",
            "members": [],
        },
    )
    assert g.status_code == 201, g.get_json()
    gid = g.get_json()["id"]
    found = a.get(
        '/Groups?excludedAttributes=members&filter=displayName eq "Group1DisplayName"'
    ).get_json()
    assert found["totalResults"] == 1 and "members" not in found["Resources"][0]
    assert (
        a.patch(
            f"/Groups/{gid}",
            [{"op": "Add", "path": "members", "value": [{"value": uid}]}],
        ).status_code
        == 204
    )
    assert [m["value"] for m in a.get(f"/Groups/{gid}").get_json()["members"]] == [uid]
    assert (
        a.patch(
            f"/Groups/{gid}",
            [{"op": "Remove", "path": "members", "value": [{"value": uid}]}],
        ).status_code
        == 204
    )
    assert a.get(f"/Groups/{gid}").get_json()["members"] == []
    assert (
        a.patch(
            f"/Groups/{gid}",
            [{"op": "Replace", "path": "displayName", "value": "Renamed"}],
        ).status_code
        == 204
    )
    assert a.get(f"/Groups/{gid}").get_json()["displayName"] == "Renamed"


def test_okta_request_shapes(two):
    a, _ = two
    probe = a.get(
        '/Users?filter=userName eq "test.user@okta.local"&startIndex=1&count=100'
    )
    assert probe.get_json()["totalResults"] == 0
    created = a.post(
        "/Users",
        {
            "schemas": [USER],
            "userName": "test.user@okta.local",
            "name": {"givenName": "Test", "familyName": "User"},
            "emails": [
                {"primary": True, "value": "test.user@okta.local", "type": "work"}
            ],
            "displayName": "Test User",
            "locale": "en-US",
            "externalId": "00ujl29u0le5T6Aj10h7",
            "groups": [],
            "password": "1mz050nq",
            "active": True,
        },
    )
    assert created.status_code == 201, created.get_json()
    uid = created.get_json()["id"]
    # Okta deactivates with a pathless replace.
    resp = a.patch(f"/Users/{uid}", [{"op": "replace", "value": {"active": False}}])
    assert resp.status_code == 200 and resp.get_json()["active"] is False
    # Okta's PUT carries the whole user back.
    full = a.get(f"/Users/{uid}").get_json()
    full["name"]["givenName"] = "Another"
    full["active"] = True
    put = a.call("PUT", f"/Users/{uid}", full)
    assert put.status_code == 200 and put.get_json()["name"]["givenName"] == "Another"
    assert put.get_json()["active"] is True
    # Okta groups: create, add members, remove with a filter path, rename pathless.
    g = a.post(
        "/Groups", {"schemas": [GROUP], "displayName": "Test SCIMv2", "members": []}
    ).get_json()
    other = a.user("second@okta.local")["id"]
    assert (
        a.patch(
            f"/Groups/{g['id']}",
            [
                {
                    "op": "add",
                    "path": "members",
                    "value": [
                        {"value": uid, "display": "test.user@okta.local"},
                        {"value": other},
                    ],
                }
            ],
        ).status_code
        == 204
    )
    assert (
        a.patch(
            f"/Groups/{g['id']}",
            [{"op": "remove", "path": f'members[value eq "{uid}"]'}],
        ).status_code
        == 204
    )
    assert [m["value"] for m in a.get(f"/Groups/{g['id']}").get_json()["members"]] == [
        other
    ]
    assert (
        a.patch(
            f"/Groups/{g['id']}",
            [
                {
                    "op": "replace",
                    "value": {"id": g["id"], "displayName": "Test SCIMv2 renamed"},
                }
            ],
        ).status_code
        == 204
    )
    assert (
        a.get(f"/Groups/{g['id']}").get_json()["displayName"] == "Test SCIMv2 renamed"
    )
    # Okta PUT of a group replaces the member list.
    put = a.call(
        "PUT",
        f"/Groups/{g['id']}",
        {"schemas": [GROUP], "displayName": "Final", "members": []},
    )
    assert put.status_code == 200 and put.get_json()["members"] == []
    assert a.call("DELETE", f"/Groups/{g['id']}").status_code == 204


def test_group_mapping_drives_roles(two, world):
    a, _ = two
    with world.as_user(a.ws.owner, a.ws) as (conn, _):
        conn.execute("select cajex.set_group_role_mapping('Architects', 'admin')")
    u = a.user("role.person@corp.example")
    role = (
        "select m.role as n from cajex.memberships m join cajex.users x on x.id = m.user_id"
        " where x.email = 'role.person@corp.example' and m.workspace_id = %s"
    )
    assert _count(world, role, a.ws.id) == "member"
    g = a.post(
        "/Groups", {"displayName": "architects", "members": [{"value": u["id"]}]}
    ).get_json()
    assert _count(world, role, a.ws.id) == "admin"
    a.patch(
        f"/Groups/{g['id']}",
        [{"op": "remove", "path": "members", "value": [{"value": u["id"]}]}],
    )
    assert _count(world, role, a.ws.id) == "member"
    audit = _count(
        world,
        "select count(*) as n from cajex.audit_log where workspace_id = %s"
        " and action = 'member.role_changed' and actor like 'scim:%%'",
        a.ws.id,
    )
    assert audit == 2


def test_group_mappings_are_an_sso_or_scim_feature_and_admin_mappings_the_owners(
    world,
):
    import psycopg

    def mapping(user, ws, sql, *args):
        with world.as_user(user, ws) as (conn, _):
            return conn.execute(sql, args).fetchone()

    def refused(user, ws, sql, *args) -> str:
        try:
            mapping(user, ws, sql, *args)
        except psycopg.Error as exc:
            return exc.sqlstate
        return "ok"

    pro, ent = world.workspace(plan="pro"), world.workspace(plan="enterprise")
    set_map = "select cajex.set_group_role_mapping(%s, %s) as id"
    # No SSO or SCIM on the plan: no groups to map.
    assert refused(pro.owner, pro, set_map, "eng", "member") == "CXFTR"
    admin = world.member(ent, role="admin")
    assert refused(admin, ent, set_map, "eng", "admin") == "CXFBD"
    member_map = mapping(admin, ent, set_map, "eng", "member")["id"]
    assert member_map
    admin_map = mapping(ent.owner, ent, set_map, "leads", "admin")["id"]
    # An admin can neither change nor remove the owner's admin mapping.
    assert refused(admin, ent, set_map, "LEADS", "viewer") == "CXFBD"
    assert (
        refused(admin, ent, "select cajex.delete_group_role_mapping(%s)", admin_map)
        == "CXFBD"
    )
    assert (
        refused(admin, ent, "select cajex.delete_group_role_mapping(%s)", member_map)
        == "ok"
    )
    # The other workspace's mappings are out of reach.
    assert (
        refused(pro.owner, pro, "select cajex.delete_group_role_mapping(%s)", admin_map)
        == "CXNFD"
    )
    roles = world.admin.execute(
        "select group_key, role from cajex.group_role_mappings where workspace_id = %s",
        (ent.id,),
    ).fetchall()
    assert roles == [{"group_key": "leads", "role": "admin"}]


def test_deactivation_refuses_the_next_request_and_frees_the_seat(
    two, world, signed_in
):
    a, b = two
    person = world.user("live.person@corp.example")
    u = a.user("live.person@corp.example")
    b.user("live.person@corp.example")
    browser = signed_in(person)
    assert browser.get(f"/w/{a.ws.slug}/projects").status_code == 200
    seats = "select cajex.seat_count(%s) as n"
    before = _count(world, seats, a.ws.id)
    resp = a.patch(
        f"/Users/{u['id']}", [{"op": "replace", "path": "active", "value": False}]
    )
    assert resp.status_code == 200
    assert _count(world, seats, a.ws.id) == before - 1
    assert browser.get(f"/w/{a.ws.slug}/projects").status_code in (302, 401, 404)
    # The other workspace is untouched: membership active, still opens.
    assert (
        _count(
            world,
            "select count(*) as n from cajex.memberships m join cajex.users x on x.id = m.user_id"
            " where x.email = 'live.person@corp.example' and m.status = 'active'",
        )
        == 1
    )
    assert browser.get(f"/w/{b.ws.slug}/projects").status_code == 200
    # Reactivation restores access.
    a.patch(f"/Users/{u['id']}", [{"op": "replace", "path": "active", "value": True}])
    assert browser.get(f"/w/{a.ws.slug}/projects").status_code == 200
    # Each change is in the audit log with the token that made it.
    actions = world.admin.execute(
        "select action, actor from cajex.audit_log where workspace_id = %s"
        " and action like 'scim.user_%%' order by id",
        (a.ws.id,),
    ).fetchall()
    assert [r["action"] for r in actions] == [
        "scim.user_created",
        "scim.user_deactivated",
        "scim.user_updated",
        "scim.user_activated",
        "scim.user_updated",
    ]
    assert {r["actor"] for r in actions} == {f"scim:{a.token_id}"}


def test_cross_workspace_ids_and_tokens(two, world):
    a, b = two
    ua = a.user("alice@a.example")
    ga = a.post(
        "/Groups", {"displayName": "A team", "members": [{"value": ua["id"]}]}
    ).get_json()
    snapshot = world.admin.execute(
        "select (select count(*) from cajex.scim_users) + (select count(*) from cajex.scim_groups)"
        " + (select count(*) from cajex.scim_group_members) + (select count(*) from cajex.memberships) as n"
    ).fetchone()["n"]
    user_body = {"schemas": [USER], "userName": "alice@a.example"}
    group_body = {"displayName": "hijack", "members": []}
    ops = [{"op": "replace", "path": "active", "value": False}]
    gops = [{"op": "replace", "path": "displayName", "value": "hijack"}]
    # B's token with A's ids: 404, indistinguishable from an id never issued.
    never = str(uuid.uuid4())
    for rid, kind, body, patch in (
        (ua["id"], "Users", user_body, ops),
        (ga["id"], "Groups", group_body, gops),
    ):
        for target in (rid, never):
            assert b.get(f"/{kind}/{target}").status_code == 404
            assert b.call("PUT", f"/{kind}/{target}", body).status_code == 404
            assert b.patch(f"/{kind}/{target}", patch).status_code == 404
            assert b.call("DELETE", f"/{kind}/{target}").status_code == 404
        assert (
            b.get(f"/{kind}/{rid}").get_json() == b.get(f"/{kind}/{never}").get_json()
        )
    assert b.get(f'/Users?filter=id eq "{ua["id"]}"').get_json()["totalResults"] == 0
    # B cannot put A's user into B's group.
    assert (
        b.post(
            "/Groups", {"displayName": "x", "members": [{"value": ua["id"]}]}
        ).status_code
        == 400
    )
    # B's token on A's URL (and a bad or revoked token): 401 on every endpoint and verb.
    paths = [
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/Schemas",
        "/Users",
        f"/Users/{ua['id']}",
        "/Groups",
        f"/Groups/{ga['id']}",
    ]
    for token in (b.token, "cxscim_nope", ""):
        for path in paths:
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                resp = a.call(
                    method, path, {"Operations": ops, **user_body}, token=token or " "
                )
                assert resp.status_code == 401, (method, path)
    after = world.admin.execute(
        "select (select count(*) from cajex.scim_users) + (select count(*) from cajex.scim_groups)"
        " + (select count(*) from cajex.scim_group_members) + (select count(*) from cajex.memberships) as n"
    ).fetchone()["n"]
    assert after == snapshot
    assert a.get(f"/Groups/{ga['id']}").get_json()["displayName"] == "A team"


def test_revoked_token_and_plan_gate(two, world):
    a, _ = two
    tid, token = _token(world, a.ws)
    assert a.get("/Users", token=token).status_code == 200
    with world.as_user(a.ws.owner, a.ws) as (conn, _):
        conn.execute("select cajex.revoke_scim_token(%s)", (tid,))
    assert a.get("/Users", token=token).status_code == 401
    assert (
        world.admin.execute(
            "select last_used_at from cajex.scim_tokens where id = %s", (tid,)
        ).fetchone()["last_used_at"]
        is not None
    )
    world.admin.execute(
        "update cajex.workspaces set plan = 'team' where id = %s", (a.ws.id,)
    )
    resp = a.get("/Users")
    assert resp.status_code == 403


def test_token_creation_needs_enterprise(world):
    ws = world.workspace(plan="team")
    import psycopg

    with pytest.raises(psycopg.Error) as exc:
        _token(world, ws)
    assert exc.value.sqlstate == "CXFTR"


def test_settings_page(two, world, signed_in, csrf_headers):
    a, b = two
    owner = signed_in(a.ws.owner)
    page = owner.get(f"/w/{a.ws.slug}/settings/scim")
    assert page.status_code == 200 and b"/scim/v2/" in page.data
    resp = owner.post(
        f"/w/{a.ws.slug}/settings/scim/tokens",
        data={"label": "Okta"},
        headers=csrf_headers,
    )
    assert resp.status_code == 302
    shown = owner.get(resp.headers["Location"])
    assert b"cxscim_" in shown.data
    member = world.member(a.ws)
    assert signed_in(member).get(f"/w/{a.ws.slug}/settings/scim").status_code == 403
    # B's owner cannot see A's page.
    assert signed_in(b.ws.owner).get(f"/w/{a.ws.slug}/settings/scim").status_code == 404


def test_etags_and_if_match_on_every_write(two):
    a, _ = two
    u = a.user("etag.person@corp.example")
    uid, v1 = u["id"], u["meta"]["version"]
    got = a.get(f"/Users/{uid}")
    assert got.headers["ETag"] == v1 == got.get_json()["meta"]["version"]
    ops = [{"op": "replace", "path": "displayName", "value": "Changed"}]
    ok = a.patch(f"/Users/{uid}", ops, **{"If-Match": v1})
    assert ok.status_code == 200
    v2 = ok.headers["ETag"]
    assert v2 != v1 and ok.get_json()["meta"]["version"] == v2
    # The old version is stale for PATCH, PUT and DELETE alike; nothing changes.
    stale_patch = a.patch(
        f"/Users/{uid}",
        [{"op": "replace", "path": "displayName", "value": "Lost"}],
        **{"If-Match": v1},
    )
    assert stale_patch.status_code == 412
    assert a.call("DELETE", f"/Users/{uid}", **{"If-Match": v1}).status_code == 412
    assert a.get(f"/Users/{uid}").get_json()["displayName"] == "Changed"
    assert a.call("DELETE", f"/Users/{uid}", **{"If-Match": v2}).status_code == 204

    g = a.post("/Groups", {"displayName": "Versioned", "members": []})
    gid, gv1 = g.get_json()["id"], g.headers["ETag"]
    gops = [{"op": "replace", "path": "displayName", "value": "Versioned 2"}]
    assert a.patch(f"/Groups/{gid}", gops, **{"If-Match": gv1}).status_code == 204
    gv2 = a.get(f"/Groups/{gid}").headers["ETag"]
    assert gv2 != gv1
    stale = a.call(
        "PUT", f"/Groups/{gid}", {"displayName": "Lost"}, **{"If-Match": gv1}
    )
    assert stale.status_code == 412
    assert a.call("DELETE", f"/Groups/{gid}", **{"If-Match": gv1}).status_code == 412
    assert a.get(f"/Groups/{gid}").get_json()["displayName"] == "Versioned 2"
    assert a.call("DELETE", f"/Groups/{gid}", **{"If-Match": "*"}).status_code == 204
    garbled = a.call("DELETE", f"/Users/{u['id']}", **{"If-Match": "nonsense"})
    assert garbled.status_code in (404, 412)


def test_sorting_is_advertised_and_refused_on_unknown_attributes(two):
    a, _ = two
    assert a.get("/ServiceProviderConfig").get_json()["sort"]["supported"] is True
    for name in ("b@corp.example", "C@corp.example", "a@corp.example"):
        a.user(name)
    names = [
        r["userName"] for r in a.get("/Users?sortBy=userName").get_json()["Resources"]
    ]
    assert names == ["a@corp.example", "b@corp.example", "C@corp.example"]
    bad = a.get("/Users?sortBy=password")
    assert bad.status_code == 400 and bad.get_json()["scimType"] == "invalidValue"


def test_another_workspaces_user_cannot_join_a_group_by_patch(two, world):
    a, b = two
    ua = a.user("stay.home@a.example")
    gb = b.post("/Groups", {"displayName": "B team", "members": []}).get_json()
    r = b.patch(
        f"/Groups/{gb['id']}",
        [{"op": "add", "path": "members", "value": [{"value": ua["id"]}]}],
    )
    assert r.status_code in (400, 404), r.get_json()
    assert b.get(f"/Groups/{gb['id']}").get_json()["members"] == []
    assert (
        _count(
            world,
            "select count(*) as n from cajex.scim_group_members where workspace_id = %s",
            b.ws.id,
        )
        == 0
    )
    # Allowed beside it: A's own group takes A's user.
    ga = a.post("/Groups", {"displayName": "A team", "members": []}).get_json()
    assert (
        a.patch(
            f"/Groups/{ga['id']}",
            [{"op": "add", "path": "members", "value": [{"value": ua["id"]}]}],
        ).status_code
        == 204
    )


def test_user_name_filter_is_an_index_lookup_under_rls(two, world, db_urls):
    """The folded column keeps `userName eq` an index condition beside the policy."""
    import hashlib

    import psycopg
    from cajex.web.views.scim import _USER_FROM, USER_SCHEMA
    from psycopg import sql

    from cajex.scim import filter as scim_filter

    a, _ = two
    a.user("indexed@corp.example")
    # Enough rows that the planner's choice means something.
    world.admin.execute(
        "insert into cajex.users (email)"
        " select 'bulk' || g || '@corp.example' from generate_series(1, 3000) g"
    )
    world.admin.execute(
        "insert into cajex.memberships (workspace_id, user_id, role)"
        " select %s, id, 'member' from cajex.users where email like 'bulk%%'",
        (a.ws.id,),
    )
    world.admin.execute(
        "insert into cajex.scim_users (workspace_id, user_id, user_name)"
        " select m.workspace_id, m.user_id, u.email from cajex.memberships m"
        " join cajex.users u on u.id = m.user_id where u.email like 'bulk%%'"
    )
    world.admin.execute("analyze cajex.scim_users")
    world.admin.execute("analyze cajex.memberships")
    where, params = scim_filter.compile_filter(
        scim_filter.parse('userName eq "INDEXED@corp.example"'), USER_SCHEMA
    )
    with psycopg.connect(db_urls["app"]) as conn:
        conn.execute(
            "select cajex_private.open_scim_context(%s)",
            (hashlib.sha256(a.token.encode()).digest(),),
        )
        query = sql.SQL(
            "explain (format json) select count(*) " + _USER_FROM + " where {}"
        ).format(where)
        plan = json.dumps(conn.execute(query, params).fetchone()[0])
        count = conn.execute(
            sql.SQL("select count(*) " + _USER_FROM + " where {}").format(where),
            params,
        ).fetchone()[0]
        conn.rollback()
    assert "scim_users_user_name_folded_key" in plan, plan
    assert count == 1


def test_cli_token_create_prints_json_for_its_workspace_only(
    two, world, db_urls, settings, monkeypatch
):
    from click.testing import CliRunner

    from cajex import cli as cli_module

    if "scim" not in cli_module.cli.commands:
        cli_module._register_areas()
    a, b = two
    monkeypatch.setenv("CAJEX_CONTEXT_SECRET", settings.context_secret)
    monkeypatch.setenv("CAJEX_PUBLIC_URL", "http://cajex.test")
    runner = CliRunner()
    out = runner.invoke(
        cli_module.cli,
        [
            "scim",
            "token",
            "create",
            "--workspace",
            a.ws.slug,
            "--label",
            "Entra",
            "--database-url",
            db_urls["app"],
        ],
    )
    assert out.exit_code == 0, out.output
    made = json.loads(out.output)
    assert made["base_url"] == f"http://cajex.test/scim/v2/{a.ws.slug}"
    assert made["token"].startswith("cxscim_")
    assert a.get("/Users", token=made["token"]).status_code == 200
    # The new token is A's alone.
    assert b.get("/Users", token=made["token"]).status_code == 401
    assert (
        _count(
            world,
            "select count(*) as n from cajex.scim_tokens where id = %s"
            " and workspace_id = %s and label = 'Entra'",
            made["token_id"],
            a.ws.id,
        )
        == 1
    )
    team = world.workspace(plan="team")
    refused = runner.invoke(
        cli_module.cli,
        [
            "scim",
            "token",
            "create",
            "--workspace",
            team.slug,
            "--database-url",
            db_urls["app"],
        ],
    )
    assert refused.exit_code != 0 and "Enterprise" in refused.output
    assert (
        _count(
            world,
            "select count(*) as n from cajex.scim_tokens where workspace_id = %s",
            team.id,
        )
        == 0
    )


def test_settings_page_explains_the_plan_gate_on_other_plans(world, signed_in, client):
    ws = world.workspace(plan="team")
    page = signed_in(ws.owner).get(f"/w/{ws.slug}/settings/scim")
    assert page.status_code == 200
    assert b"Enterprise plan" in page.data and b"cxscim_" not in page.data
    # And its SCIM service answers no token, whatever is presented.
    resp = client.get(
        f"/scim/v2/{ws.slug}/Users", headers={"Authorization": "Bearer cxscim_x"}
    )
    assert resp.status_code == 401


def test_settings_page_revokes_a_token_and_not_another_workspaces(
    two, world, signed_in, csrf_headers
):
    a, b = two
    revoke = "/w/{}/settings/scim/tokens/{}/revoke"
    # B's owner names A's token on B's page: not found there, A's token lives.
    r = signed_in(b.ws.owner).post(
        revoke.format(b.ws.slug, a.token_id), headers=csrf_headers
    )
    assert r.status_code == 404
    assert a.get("/Users").status_code == 200
    r = signed_in(a.ws.owner).post(
        revoke.format(a.ws.slug, a.token_id), headers=csrf_headers
    )
    assert r.status_code == 302
    assert a.get("/Users").status_code == 401
    assert b.get("/Users").status_code == 200


def test_provisioning_ends_open_invitations_so_an_old_link_cannot_undo_a_deactivation(two, world):
    from test_members_sql import accept, invite

    a, b = two
    person = world.user("invited.first@corp.example")
    with world.as_user(a.ws.owner, a.ws) as (conn, _):
        token_a, _ = invite(conn, a.ws.slug, person.email)
    with world.as_user(b.ws.owner, b.ws) as (conn, _):
        token_b, _ = invite(conn, b.ws.slug, person.email)
    u = a.user(person.email)
    assert a.patch(f"/Users/{u['id']}", [{"op": "replace", "path": "active", "value": False}]).status_code == 200
    seats = _count(world, "select cajex.seat_count(%s) as n", a.ws.id)
    # Deny: A's invitation ended when SCIM provisioned the person.
    person = world.user(email=person.email)  # signs in again (SCIM ended the sessions)
    with pytest.raises(Exception) as refused:
        accept(world, person, a.ws.slug, token_a)
    assert refused.value.sqlstate == "CXEXP"
    status = "select m.status as n from cajex.memberships m where m.workspace_id = %s and m.user_id = %s"
    assert _count(world, status, a.ws.id, person.id) == "deactivated"
    assert _count(world, "select cajex.seat_count(%s) as n", a.ws.id) == seats
    assert a.get(f"/Users/{u['id']}").get_json()["active"] is False
    # Allow: B's SCIM never saw the person, so B's invitation still works.
    assert accept(world, person, b.ws.slug, token_b)["role"] == "member"
    assert _count(world, status, b.ws.id, person.id) == "active"
