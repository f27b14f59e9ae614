"""The projects JSON API, each allow-test beside its cross-workspace deny-test."""

import uuid

import pytest


@pytest.fixture
def two(world):
    a = world.workspace()
    b = world.workspace()
    return a, b


def test_member_can_create_and_list_projects(world, signed_in, two):
    a, _ = two
    client = signed_in(a.owner)
    created = client.post(
        f"/w/{a.slug}/api/v1/projects",
        json={"name": "Threat model", "tags": ["security"]},
    )
    assert created.status_code == 201, created.json
    listed = client.get(f"/w/{a.slug}/api/v1/projects").json
    assert [p["name"] for p in listed["items"]] == ["Threat model"]


def test_cannot_list_another_workspaces_projects(world, signed_in, two):
    a, b = two
    world.project(b, name="B secret")
    client = signed_in(a.owner)
    response = client.get(f"/w/{b.slug}/api/v1/projects")
    assert response.status_code == 404
    assert "B secret" not in response.get_data(as_text=True)


def test_other_workspace_answers_like_a_missing_one(world, signed_in, two):
    a, b = two
    client = signed_in(a.owner)
    theirs = client.get(f"/w/{b.slug}/api/v1/projects")
    missing = client.get("/w/no-such-workspace/api/v1/projects")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json == missing.json


def test_cannot_get_another_workspaces_project_by_id(world, signed_in, two):
    a, b = two
    theirs = world.project(b)
    client = signed_in(a.owner)
    assert client.get(f"/w/{a.slug}/api/v1/projects/{theirs['id']}").status_code == 404
    assert (
        client.patch(
            f"/w/{a.slug}/api/v1/projects/{theirs['id']}", json={"name": "x"}
        ).status_code
        == 404
    )
    assert (
        client.delete(f"/w/{a.slug}/api/v1/projects/{theirs['id']}").status_code == 404
    )
    with world.as_user(b.owner, b) as (conn, _):
        row = conn.execute(
            "select name from cajex.projects where id = %s", (theirs["id"],)
        ).fetchone()
    assert row["name"] == theirs["name"]


def test_update_and_delete_own_project(world, signed_in, two):
    a, _ = two
    mine = world.project(a)
    client = signed_in(a.owner)
    updated = client.patch(
        f"/w/{a.slug}/api/v1/projects/{mine['id']}", json={"status": "archived"}
    )
    assert updated.status_code == 200 and updated.json["status"] == "archived"
    assert client.delete(f"/w/{a.slug}/api/v1/projects/{mine['id']}").status_code == 204
    assert client.get(f"/w/{a.slug}/api/v1/projects/{mine['id']}").status_code == 404


def test_pagination_walks_every_project_once(world, signed_in, two):
    a, _ = two
    names = {world.project(a, name=f"p{i}")["name"] for i in range(7)}
    client = signed_in(a.owner)
    seen, cursor = [], None
    while True:
        page = client.get(
            f"/w/{a.slug}/api/v1/projects",
            query_string={"limit": 3, **({"cursor": cursor} if cursor else {})},
        ).json
        seen += [p["name"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(names)


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"name": "x", "colour": "red"}, 400, "unknown_field"),
        ({"description": "no name"}, 400, "missing_field"),
        ({"name": "x" * 201}, 422, "invalid"),
        ({"name": "x", "tags": "not-a-list"}, 422, "invalid"),
        ({"name": "x", "status": "finished"}, 422, "invalid"),
        ({"name": "x", "tags": ["<script>"]}, 422, "invalid"),
        ({"name": "a\u0000b"}, 400, "invalid_text"),
        ({"name": "x", "description": "\u0000"}, 400, "invalid_text"),
        ({"name": "x", "tags": ["a\u0000"]}, 400, "invalid_text"),
        ({"name": "a\ud800b"}, 400, "invalid_text"),
        ({"name": "x", "tags": ["\udfff"]}, 400, "invalid_text"),
    ],
)
def test_bad_input_gets_a_stable_code_and_writes_nothing(
    world, signed_in, two, body, status, code
):
    a, _ = two
    client = signed_in(a.owner)
    response = client.post(f"/w/{a.slug}/api/v1/projects", json=body)
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    with world.as_user(a.owner, a) as (conn, _):
        assert (
            conn.execute("select count(*) as n from cajex.projects").fetchone()["n"]
            == 0
        )


def test_malformed_ids_and_cursors_are_400(world, signed_in, two):
    a, _ = two
    client = signed_in(a.owner)
    assert (
        client.get(f"/w/{a.slug}/api/v1/projects/not-a-uuid").json["error"]["code"]
        == "invalid_id"
    )
    assert (
        client.get(f"/w/{a.slug}/api/v1/projects?cursor=%%%").json["error"]["code"]
        == "invalid_cursor"
    )
    # Digits that are not ASCII (str.isdigit() takes them, int() does not), and
    # an endless run of digits, are bad limits too, not 500s.
    for limit in ("1000", "\u00b2", "\u0661", "9" * 5000, "-1", " 5"):
        resp = client.get(f"/w/{a.slug}/api/v1/projects", query_string={"limit": limit})
        assert (resp.status_code, resp.json["error"]["code"]) == (
            400,
            "invalid_limit",
        ), limit


def test_viewer_cannot_write(world, signed_in, two):
    a, _ = two
    viewer = world.member(a, role="viewer")
    client = signed_in(viewer)
    assert client.get(f"/w/{a.slug}/api/v1/projects").status_code == 200
    response = client.post(f"/w/{a.slug}/api/v1/projects", json={"name": "x"})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"


def test_signed_out_is_401(client, world):
    a = world.workspace()
    assert client.get(f"/w/{a.slug}/api/v1/projects").status_code == 401


def test_me_lists_workspaces_with_roles(world, signed_in):
    a = world.workspace()
    b = world.workspace()
    user = world.member(b, world.member(a, role="viewer"), role="admin")
    me = signed_in(user).get("/api/v1/me").json
    assert me["id"] == str(user.id) and me["email"] == user.email
    assert {(w["slug"], w["role"]) for w in me["workspaces"]} == {
        (a.slug, "viewer"),
        (b.slug, "admin"),
    }


def test_revoked_session_is_refused_on_the_next_request(world, signed_in):
    a = world.workspace()
    client = signed_in(a.owner)
    assert client.get(f"/w/{a.slug}/api/v1/projects").status_code == 200
    with world.signin.transaction():
        world.signin.execute(
            "select cajex_private.revoke_sessions(%s, 'test')", (a.owner.id,)
        )
    assert client.get(f"/w/{a.slug}/api/v1/projects").status_code == 401


def test_healthz_reports_database_and_redis(client):
    body = client.get("/healthz").json
    assert body["checks"] == {"database": "ok", "redis": "ok"}


def test_development_sign_in_is_absent_in_production(client):
    assert client.get("/dev/login").status_code == 404
    assert client.post("/dev/login", data={"email": "a@b.c"}).status_code in (400, 404)


def test_unknown_uuid_is_404_not_500(world, signed_in):
    a = world.workspace()
    response = signed_in(a.owner).get(f"/w/{a.slug}/api/v1/projects/{uuid.uuid4()}")
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_the_list_keeps_one_plan_per_connection_on_an_analyzed_table(world, two):
    """The list's statements are planned once per connection and reused: a
    page size passed as a parameter made the server plan the list again on
    every request once the table had statistics."""
    from cajex.web.views.projects import list_page

    from cajex import db

    for ws in two:
        world.admin.execute(
            "insert into cajex.projects (workspace_id, name, created_at)"
            " select %s, 'Project ' || g, now() - g * interval '1 minute'"
            " from generate_series(1, 5000) g",
            (ws.id,),
        )
    world.admin.execute("analyze cajex.projects")
    a, _ = two
    with world.app_connection() as conn:
        for _ in range(15):
            with db.in_context(conn, a.owner.token(), a.slug):
                first, cursor = list_page(conn, 20, None)
                second, _ = list_page(conn, 20, cursor)
                assert len(first) == len(second) == 20 and cursor
        plans = conn.execute(
            "select statement, generic_plans, custom_plans from pg_prepared_statements"
            " where statement like '%from cajex.projects%order by created_at desc%'"
        ).fetchall()
        conn.rollback()
    assert len(plans) == 2, plans
    for plan in plans:
        assert plan["custom_plans"] <= 5 and plan["generic_plans"] >= 5, plan
