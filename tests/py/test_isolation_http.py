"""The isolation battery over HTTP: every /w/<slug>/ route in app.url_map,
discovered at run time, asked by random actors with the other workspace's ids.
"""

from __future__ import annotations

import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_isolation_support import (
    build,
    changed_outside,
    fill_tenant,
    fingerprint,
    scoped_tables,
    soft_delete,
)

BATTERY = settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def workspace_rules(app, methods: set[str], scoped: bool | None = None) -> list:
    """Every rule under /w/<slug>/ answering one of `methods`; with `scoped`, only
    those that open the workspace's context (workspace_view) or only the others."""
    rules = []
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/w/<slug>") and rule.methods & methods):
            continue
        is_scoped = is_workspace_view(app.view_functions[rule.endpoint])
        if scoped is None or scoped == is_scoped:
            rules.append(rule)
    return rules


def is_workspace_view(func) -> bool:
    """Whether `func` (or a function it wraps) is the workspace_view wrapper."""
    while func is not None:
        # functools.wraps copies the view's name; the code object keeps its own.
        code = getattr(func, "__code__", None)
        if code is not None and code.co_qualname.startswith("workspace_view."):
            return True
        func = getattr(func, "__wrapped__", None)
    return False


def fill(rule, slug: str, tenant) -> str:
    """The rule's path with `slug` and every other parameter taken from `tenant`'s rows."""
    values = {}
    for name in rule.arguments:
        if name == "slug":
            values[name] = slug
            continue
        converter = type(rule._converters[name]).__name__
        if converter == "IntegerConverter":
            values[name] = (
                tenant.outbox_ids[0] if getattr(tenant, "outbox_ids", None) else 1
            )
        elif "workspace" in name:
            values[name] = str(tenant.ws.id)
        elif "user" in name or "member" in name:
            values[name] = str(tenant.members["member"].id)
        else:
            values[name] = str(tenant.projects[0]["id"]) if tenant.projects else "0"
    path = rule.rule
    for name, value in values.items():
        path = path.replace(f"<{name}>", str(value))
        for conv in ("uuid", "int", "string", "path"):
            path = path.replace(f"<{conv}:{name}>", str(value))
    return path


def secrets_of(world, tenant, viewer_ws=None) -> list[str]:
    """Strings only that tenant's data holds: its canary and the addresses of its
    members who are not also members of `viewer_ws` (those the viewer may see)."""
    emails = [
        r["email"]
        for r in world.admin.execute(
            "select u.email from cajex.users u join cajex.memberships m on m.user_id = u.id"
            " where m.workspace_id = %s and not exists (select from cajex.memberships o"
            "   where o.user_id = u.id and o.workspace_id = %s)",
            (tenant.ws.id, viewer_ws),
        ).fetchall()
    ]
    return [tenant.canary, *emails]


def exposed(response, strings: list[str]) -> list[str]:
    body = response.get_data(as_text=True)
    return [s for s in strings if s in body]


@pytest.fixture
def dataset(world):
    return build(world, workspaces=3)


def test_can_discover_the_workspace_routes(app):
    """The url map holds the core projects routes under /w/<slug>/."""
    rules = {r.rule for r in workspace_rules(app, {"GET"}, scoped=True)}
    assert "/w/<slug>/api/v1/projects" in rules


def test_can_read_own_workspace_on_every_route(world, app, signed_in, dataset):
    """An owner's GETs of their own workspace answer without a server error and show their data."""
    a = dataset.tenants[0]
    client = signed_in(a.members["owner"])
    listed = client.get(f"/w/{a.ws.slug}/api/v1/projects")
    assert listed.status_code == 200 and a.canary in listed.get_data(as_text=True)


@pytest.mark.parametrize(
    "bad_slug", ["%00", "a%00b", "ab%00", "%C3%A9t%C3%A9", "a" * 65, "-ab", "AB", "a"]
)
def test_cannot_name_an_impossible_workspace_on_any_route(
    world, app, signed_in, dataset, bad_slug
):
    """A slug no workspace can have is never a 500 on any GET route, and every
    route that opens a workspace answers it as it answers an absent workspace."""
    a = dataset.tenants[0]
    client = signed_in(a.members["owner"])
    for rule in workspace_rules(app, {"GET"}):
        response = client.get(fill(rule, bad_slug, a))
        assert response.status_code < 500, (rule.rule, response.status_code)
    for rule in workspace_rules(app, {"GET"}, scoped=True):
        response = client.get(fill(rule, bad_slug, a))
        absent = client.get(fill(rule, "no-such-workspace", a))
        assert response.status_code == absent.status_code == 404, rule.rule


@BATTERY
@given(data=st.data(), role=st.sampled_from(["owner", "admin", "member", "viewer"]))
def test_cannot_read_another_workspace_on_any_route(
    world, app, signed_in, dataset, data, role
):
    """A member's GET of any /w/ route, aimed at another workspace or its ids, shows none of it."""
    a = dataset.tenants[0]
    victim = data.draw(
        st.sampled_from(dataset.tenants[1:] + [dataset.deleted]), label="victim"
    )
    rule = data.draw(st.sampled_from(workspace_rules(app, {"GET"})), label="rule")
    client = signed_in(a.members[role])
    hidden = secrets_of(world, victim, a.ws.id)
    # Their ids in my workspace's address: not found, or my own data only.
    mine = client.get(fill(rule, a.ws.slug, victim))
    assert exposed(mine, hidden) == []
    # Their workspace's address: answered like a workspace that does not exist.
    theirs = client.get(fill(rule, victim.ws.slug, victim))
    missing = client.get(fill(rule, f"no-such-{secrets.token_hex(4)}", victim))
    assert theirs.status_code == missing.status_code
    if is_workspace_view(app.view_functions[rule.endpoint]):
        assert theirs.status_code in (302, 401, 403, 404)
    assert exposed(theirs, hidden) == []


@settings(
    deadline=None,
    max_examples=12,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), role=st.sampled_from(["owner", "admin", "member"]))
def test_cannot_change_another_workspace_on_any_route(
    world, app, signed_in, dataset, csrf_headers, data, role
):
    """Any write route, aimed at another workspace or at its ids, changes nothing of it."""
    rules = workspace_rules(app, WRITES)
    if not rules:
        pytest.skip("no write routes under /w/")
    # A throwaway workspace acts, so a destructive route hurts no other example.
    mine = fill_tenant(world, projects=1, jobs=0)
    victim = data.draw(st.sampled_from(dataset.tenants), label="victim")
    rule = data.draw(st.sampled_from(rules), label="rule")
    method = data.draw(st.sampled_from(sorted(rule.methods & WRITES)), label="method")
    body = data.draw(
        st.sampled_from(
            [
                {"name": "pwned"},
                {"name": "pwned", "workspace_id": str(victim.ws.id)},
                {"role": "owner", "user_id": str(mine.members["owner"].id)},
                {},
            ]
        ),
        label="body",
    )
    tables = scoped_tables(world.admin)
    before = fingerprint(world.admin, tables)
    client = signed_in(mine.members[role])
    for slug in (mine.ws.slug, victim.ws.slug):
        client.open(
            fill(rule, slug, victim), method=method, json=body, headers=csrf_headers
        )
    after = fingerprint(world.admin, tables)
    assert changed_outside(before, after, {str(mine.ws.id)}) == []


LOST = st.sampled_from(["removed", "deactivated", "revoked", "expired", "deleted"])


@BATTERY
@given(data=st.data(), how=LOST)
def test_cannot_read_after_losing_access(world, app, signed_in, dataset, data, how):
    """Removed, deactivated, revoked, expired or in a deleted workspace: no route shows its data."""
    if how == "deleted":
        user, tenant = dataset.deleted.members["owner"], dataset.deleted
    else:
        user, tenant = dataset.lost[how], dataset.tenants[0]
    rule = data.draw(st.sampled_from(workspace_rules(app, {"GET"})), label="rule")
    client = signed_in(user)
    response = client.get(fill(rule, tenant.ws.slug, tenant))
    if is_workspace_view(app.view_functions[rule.endpoint]):
        assert response.status_code in (302, 401, 403, 404)
    assert exposed(response, secrets_of(world, tenant)) == []


def test_cannot_return_after_being_removed(world, signed_in):
    """A member removed between two requests is refused on the very next one."""
    ws = fill_tenant(world)
    user = ws.members["member"]
    client = signed_in(user)
    url = f"/w/{ws.ws.slug}/api/v1/projects"
    assert client.get(url).status_code == 200
    world.admin.execute(
        "delete from cajex.memberships where workspace_id = %s and user_id = %s",
        (ws.ws.id, user.id),
    )
    assert client.get(url).status_code == 404


def test_cannot_return_after_deactivation(world, signed_in):
    """A membership deactivated between two requests opens nothing on the next one."""
    ws = fill_tenant(world)
    user = ws.members["viewer"]
    client = signed_in(user)
    url = f"/w/{ws.ws.slug}/api/v1/projects"
    assert client.get(url).status_code == 200
    world.admin.execute(
        "update cajex.memberships set status = 'deactivated' where workspace_id = %s and user_id = %s",
        (ws.ws.id, user.id),
    )
    assert client.get(url).status_code == 404


def test_cannot_return_after_session_revocation(world, signed_in):
    """A revoked session is refused on the very next request."""
    ws = fill_tenant(world)
    user = ws.members["admin"]
    client = signed_in(user)
    url = f"/w/{ws.ws.slug}/api/v1/projects"
    assert client.get(url).status_code == 200
    with world.signin.transaction():
        world.signin.execute(
            "select cajex_private.revoke_sessions(%s, 'test', %s)",
            (user.id, user.session_id),
        )
    assert client.get(url).status_code == 401


def test_cannot_see_a_soft_deleted_workspace_anywhere(world, signed_in):
    """After a soft delete, the workspace is gone from its routes, /api/v1/me and every table."""
    ws = fill_tenant(world)
    other = fill_tenant(world)
    owner = ws.members["owner"]
    world.member(other.ws, owner, role="member")
    client = signed_in(owner)
    assert client.get(f"/w/{ws.ws.slug}/api/v1/projects").status_code == 200
    soft_delete(world, ws.ws)
    assert client.get(f"/w/{ws.ws.slug}/api/v1/projects").status_code == 404
    me = client.get("/api/v1/me").json
    assert [w["slug"] for w in me["workspaces"]] == [other.ws.slug]
    with world.as_user(owner, other.ws) as (conn, _):
        assert (
            conn.execute(
                "select count(*) as n from cajex.workspaces where id = %s", (ws.ws.id,)
            ).fetchone()["n"]
            == 0
        )
        assert (
            conn.execute(
                "select count(*) as n from cajex.projects where workspace_id = %s",
                (ws.ws.id,),
            ).fetchone()["n"]
            == 0
        )
