"""Statements are planned once per connection and then reused.

PostgreSQL plans a prepared statement (and each statement inside a PL/pgSQL
function) for its first five executions with the values given, then keeps
one general plan, unless those first plans looked cheaper than the general
one: then it plans again on every execution. A null that folds a check
away, or a page size given as a parameter, is enough, and planning the
queries under RLS costs more than running them. pg_stat_statements (loaded
in the test cluster, cajex.testing.services.PG_SETTINGS) counts both.
"""

from __future__ import annotations

import pytest

CALLS = 25


@pytest.fixture
def settings(settings):
    """The AI provider stand-in listens on loopback: allow it, as for a
    self-hosted model."""
    import dataclasses

    return dataclasses.replace(settings, ai_allow_private_hosts=True)


@pytest.fixture
def statements(world):
    """This test database's statement counts, from zero."""
    world.admin.execute("create extension if not exists pg_stat_statements")
    loaded = world.admin.execute(
        "select setting from pg_settings where name = 'shared_preload_libraries'"
    ).fetchone()
    assert "pg_stat_statements" in (loaded["setting"] if loaded else ""), (
        "the test cluster runs without pg_stat_statements: start it through"
        " cajex.testing.services (./dev test does)"
    )
    world.admin.execute("select pg_stat_statements_reset()")

    def replanned() -> list[tuple[int, int, str]]:
        rows = world.admin.execute(
            "select calls, plans, query from pg_stat_statements s"
            " where s.dbid = (select oid from pg_database where datname = current_database())"
            " and s.calls >= %s and s.plans >= s.calls * 0.8",
            (CALLS - 5,),
        ).fetchall()
        return [(r["calls"], r["plans"], r["query"][:160]) for r in rows]

    return replanned


def test_a_members_requests_plan_each_statement_once(world, signed_in, statements):
    """The member's everyday requests, 25 times each, on a workspace
    whose projects table has statistics and whose other tables have none
    (a fresh deployment's): no statement is planned on every execution."""
    ws = world.workspace(plan="team")
    other = world.workspace(plan="team")
    for w in (ws, other):
        world.admin.execute(
            "insert into cajex.projects (workspace_id, name, created_at)"
            " select %s, 'Project ' || g, now() - g * interval '1 minute'"
            " from generate_series(1, 5000) g",
            (w.id,),
        )
    world.admin.execute("analyze cajex.projects")
    client = signed_in(ws.owner)
    base = f"/w/{ws.slug}/api/v1/projects"
    replanned_before = statements()
    for n in range(CALLS):
        page = client.get(base)
        assert page.status_code == 200 and page.json["next_cursor"]
        assert (
            client.get(
                base, query_string={"cursor": page.json["next_cursor"]}
            ).status_code
            == 200
        )
        created = client.post(base, json={"name": f"Decision {n}", "tags": ["adr"]})
        assert created.status_code == 201, created.json
        pid = created.json["id"]
        assert client.get(f"{base}/{pid}").status_code == 200
        assert (
            client.patch(f"{base}/{pid}", json={"status": "archived"}).status_code
            == 200
        )
        assert client.get(f"/w/{ws.slug}/api/v1/members").status_code == 200
        assert client.get("/api/v1/me").status_code == 200
    assert replanned_before == []
    assert statements() == []


#: Pages that sign in or hand out files, not pages of a signed-in member.
_NOT_MEMBER_PAGES = {
    "home.login",
    "signin.workspace_login",
    "signin.confirm_link",
    "sso.sign_in_with_sso",
    "exports.download",
}


def test_every_page_of_a_workspace_owner_plans_each_statement_once(
    world, app, signed_in, statements
):
    """Every GET page and API of the app that needs no more than the
    workspace's slug, 25 times each as the owner of an Enterprise workspace."""
    ws = world.workspace(plan="enterprise")
    world.member(ws, role="member")
    world.project(ws)
    client = signed_in(ws.owner)
    paths = sorted(
        rule.rule.replace("<slug>", ws.slug)
        for rule in app.url_map.iter_rules()
        if "GET" in rule.methods
        and set(rule.arguments) <= {"slug"}
        and rule.endpoint not in _NOT_MEMBER_PAGES
        and not rule.endpoint.startswith("static")
    )
    assert len(paths) > 25, paths
    for _ in range(CALLS):
        for path in paths:
            response = client.get(path)
            assert response.status_code < 500, (path, response.status_code)
    assert statements() == []


def test_an_admins_writes_and_a_scim_client_plan_each_statement_once(
    world, client, signed_in, statements
):
    """Invitations, branding colours and SCIM provisioning, 25 times each."""
    from cajex import scim

    ws = world.workspace(plan="enterprise")
    with world.as_user(ws.owner, ws) as (conn, _):
        _, token = scim.create_token(conn, "planning")
    owner = signed_in(ws.owner)
    bearer = {"Authorization": f"Bearer {token}"}
    base = f"/scim/v2/{ws.slug}"
    user_schema = "urn:ietf:params:scim:schemas:core:2.0:User"
    patch_schema = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    for n in range(CALLS):
        invited = owner.post(
            f"/w/{ws.slug}/api/v1/invitations",
            json={"email": f"invitee{n}@example.test", "role": "member"},
        )
        assert invited.status_code == 201, invited.json
        colours = owner.put(
            f"/w/{ws.slug}/api/v1/branding/colours",
            json={"primary": "#1f4e79", "accent": "#7a2e0b"},
        )
        assert colours.status_code == 200, colours.json
        made = client.post(
            f"{base}/Users",
            headers=bearer,
            json={
                "schemas": [user_schema],
                "userName": f"scim{n}@example.test",
                "active": True,
            },
        )
        assert made.status_code == 201, made.get_json()
        uid = made.get_json()["id"]
        assert client.get(f"{base}/Users/{uid}", headers=bearer).status_code == 200
        found = client.get(
            f"{base}/Users",
            headers=bearer,
            query_string={"filter": f'userName eq "scim{n}@example.test"'},
        )
        assert found.get_json()["totalResults"] == 1
        renamed = client.patch(
            f"{base}/Users/{uid}",
            headers=bearer,
            json={
                "schemas": [patch_schema],
                "Operations": [
                    {"op": "replace", "path": "displayName", "value": f"P{n}"}
                ],
            },
        )
        assert renamed.status_code == 200, renamed.get_json()
    assert statements() == []


def test_ai_drafts_plan_each_statement_once(world, signed_in, statements):
    """A member's drafts through the gateway (reserve, the provider on
    loopback, settle), 25 times, on a workspace whose AI an admin set up."""
    from cajex.ai.fakeprovider import FakeProvider

    key = "sk-planning-" + "k" * 24
    ws = world.workspace(plan="pro")
    member = world.member(ws, role="member")
    with world.as_user(ws.owner, ws) as (conn, _):
        pid = conn.execute(
            "select id from cajex.create_project('Payments', 'The ledger.', '{}', 'active')"
        ).fetchone()["id"]
    with FakeProvider(api_key=key) as provider:
        owner = signed_in(ws.owner)
        saved = owner.patch(
            f"/w/{ws.slug}/api/v1/ai/settings",
            json={
                "enabled": True,
                "provider": "anthropic",
                "model": "claude-test",
                "base_url": provider.url,
                "budget_tokens": 10**7,
                "max_output_tokens": 100,
                "timeout_seconds": 5,
                "api_key": key,
            },
        )
        assert saved.status_code == 200, saved.get_json()
        client = signed_in(member)
        for _ in range(CALLS):
            drafted = client.post(
                f"/w/{ws.slug}/api/v1/projects/{pid}/ai-drafts",
                json={"kind": "summary"},
            )
            assert drafted.status_code == 201, drafted.get_json()
            assert client.get(f"/w/{ws.slug}/api/v1/ai/status").status_code == 200
    assert statements() == []
