"""Many workspaces over HTTP: the organisation page (plans and seats, never
data), the workspace switcher, and moving projects between workspaces of one
organisation, each allow beside its deny."""

from __future__ import annotations

import uuid

from psycopg import sql


def org_of(world, owner, *plans):
    """An organisation owned by `owner` with one workspace per plan."""
    first = world.workspace(owner=owner, plan=plans[0])
    rest = [world.workspace(owner=owner, plan=p, organisation_id=first.organisation_id) for p in plans[1:]]
    return [first, *rest]


# -- the organisation page ---------------------------------------------------------


def test_organisation_owner_sees_plans_and_seats(world, signed_in):
    boss = world.user()
    a, b = org_of(world, boss, "free", "pro")
    world.member(b)
    world.member(b)
    r = signed_in(boss).get(f"/api/v1/organisations/{a.organisation_id}/workspaces")
    assert r.status_code == 200
    found = {w["slug"]: (w["plan"], w["seats"]) for w in r.json["items"]}
    assert found == {a.slug: ("free", 1), b.slug: ("pro", 3)}
    page = signed_in(boss).get(f"/organisations/{a.organisation_id}").get_data(as_text=True)
    assert f'data-slug="{b.slug}"' in page and "pro" in page


def test_organisation_owner_gets_no_workspace_data_without_membership(world, signed_in):
    """The organisation owner hands a client workspace over and leaves it:
    the page still lists it, its data stays closed."""
    boss = world.user()
    a, client_ws = org_of(world, boss, "pro", "pro")
    heir = world.member(client_ws)
    secret = world.project(client_ws, heir, name="Client secret plan")
    with world.as_user(boss, client_ws) as (conn, _):
        conn.execute("select cajex.transfer_ownership(%s)", (heir.id,))
    with world.as_user(boss, client_ws) as (conn, _):
        conn.execute("select cajex.leave_workspace()")
    browser = signed_in(boss)
    listed = browser.get(f"/api/v1/organisations/{a.organisation_id}/workspaces").json["items"]
    assert client_ws.slug in {w["slug"] for w in listed}
    page = browser.get(f"/organisations/{a.organisation_id}").get_data(as_text=True)
    assert f'href="/w/{client_ws.slug}/projects"' not in page
    assert secret["name"] not in page
    for path in ("/projects", "/api/v1/projects", f"/api/v1/projects/{secret['id']}", "/members",
                 "/api/v1/members"):
        r = browser.get(f"/w/{client_ws.slug}{path}")
        assert r.status_code == 404, path
        assert secret["name"] not in r.get_data(as_text=True)


def test_another_organisations_page_is_not_found(world, signed_in):
    a, = org_of(world, world.user(), "pro")
    b, = org_of(world, world.user(), "pro")
    browser = signed_in(a.owner)
    theirs = browser.get(f"/api/v1/organisations/{b.organisation_id}/workspaces")
    missing = browser.get(f"/api/v1/organisations/{uuid.uuid4()}/workspaces")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json == missing.json
    assert browser.get(f"/organisations/{b.organisation_id}").status_code == 404
    assert browser.get("/organisations/not-a-uuid").status_code == 400


def test_workspace_members_who_do_not_own_the_organisation_see_no_page(world, signed_in):
    a, = org_of(world, world.user(), "pro")
    admin = world.member(a, role="admin")
    r = signed_in(admin).get(f"/api/v1/organisations/{a.organisation_id}/workspaces")
    assert r.status_code == 404


def test_the_switcher_lists_only_my_workspaces(world, signed_in):
    person = world.user()
    a, b, c = world.workspace(), world.workspace(), world.workspace()
    world.member(a, person)
    world.member(b, person, role="viewer")
    page = signed_in(person).get(f"/w/{a.slug}/projects").get_data(as_text=True)
    assert f'href="/w/{a.slug}/projects" aria-current="page"' in page
    assert f'href="/w/{b.slug}/projects"' in page
    assert f"/w/{c.slug}/" not in page


# -- moving projects ---------------------------------------------------------------


def move(client, src, target, ids):
    return client.post(f"/w/{src.slug}/api/v1/projects/move",
                       json={"target": target, "project_ids": [str(i) for i in ids]})


def names(world, user, ws) -> set[str]:
    with world.as_user(user, ws) as (conn, _):
        return {r["name"] for r in conn.execute("select name from cajex.projects")}


def test_admin_of_both_moves_projects(world, signed_in):
    boss = world.user()
    src, dst = org_of(world, boss, "pro", "pro")
    admin = world.member(src, role="admin")
    world.member(dst, admin, role="admin")
    onlooker = world.member(src, role="viewer")
    p1, p2, keep = world.project(src), world.project(src), world.project(src)
    page = signed_in(admin).get(f"/w/{src.slug}/projects/move").get_data(as_text=True)
    assert f'value="{dst.slug}"' in page and p1["name"] in page
    r = move(signed_in(admin), src, dst.slug, [p1["id"], p2["id"]])
    assert r.status_code == 200 and r.json["moved"] == 2
    assert names(world, onlooker, src) == {keep["name"]}
    assert names(world, boss, src) == {keep["name"]}
    assert names(world, admin, dst) == {p1["name"], p2["name"]}
    assert signed_in(onlooker).get(f"/w/{src.slug}/api/v1/projects/{p1['id']}").status_code == 404
    for ws, action in ((src, "project.moved_out"), (dst, "project.moved_in")):
        audit = world.admin.execute(
            "select actor_user_id, details from cajex.audit_log where workspace_id = %s and action = %s",
            (ws.id, action)).fetchall()
        assert len(audit) == 1 and audit[0]["actor_user_id"] == admin.id
        assert set(audit[0]["details"]["projects"]) == {str(p1["id"]), str(p2["id"])}


def test_the_form_moves_the_checked_projects(world, signed_in):
    boss = world.user()
    src, dst = org_of(world, boss, "pro", "pro")
    p = world.project(src)
    r = signed_in(boss).post(f"/w/{src.slug}/projects/move", data={
        "target": dst.slug, "project_id": [str(p["id"])], "csrf_token": "test-csrf-token"})
    assert r.status_code == 302
    assert names(world, boss, dst) == {p["name"]}


def test_admin_of_the_source_only_cannot_move(world, signed_in):
    boss = world.user()
    src, dst = org_of(world, boss, "pro", "pro")
    admin = world.member(src, role="admin")
    world.member(dst, admin, role="member")
    p = world.project(src)
    r = move(signed_in(admin), src, dst.slug, [p["id"]])
    assert r.status_code == 404 and r.json["error"]["field"] == "target"
    assert names(world, boss, src) == {p["name"]}
    page = signed_in(admin).get(f"/w/{src.slug}/projects/move").get_data(as_text=True)
    assert f'value="{dst.slug}"' not in page


def test_member_of_the_source_cannot_move(world, signed_in):
    boss = world.user()
    src, dst = org_of(world, boss, "pro", "pro")
    m = world.member(src)
    world.member(dst, m, role="admin")
    p = world.project(src)
    assert move(signed_in(m), src, dst.slug, [p["id"]]).status_code == 403
    assert names(world, boss, src) == {p["name"]}


def test_cannot_move_into_another_organisation(world, signed_in):
    person = world.user()
    src, = org_of(world, person, "pro")
    foreign, = org_of(world, person, "pro")  # owner of both, but two organisations
    p = world.project(src)
    r = move(signed_in(person), src, foreign.slug, [p["id"]])
    assert r.status_code == 404
    assert names(world, person, foreign) == set()


def test_cannot_move_another_workspaces_projects(world, signed_in):
    boss = world.user()
    src, dst, third = org_of(world, boss, "pro", "pro", "pro")
    theirs = world.project(third)
    mine = world.project(src)
    r = move(signed_in(boss), src, dst.slug, [mine["id"], theirs["id"]])
    assert r.status_code == 404 and r.json["error"]["field"] == "projects"
    # Nothing moved, not even the caller's own project: one transaction.
    assert names(world, boss, src) == {mine["name"]}
    assert names(world, boss, third) == {theirs["name"]}
    assert names(world, boss, dst) == set()


def test_bad_move_requests_are_clear(world, signed_in):
    boss = world.user()
    src, dst = org_of(world, boss, "pro", "pro")
    client = signed_in(boss)
    assert move(client, src, dst.slug, []).status_code == 422
    assert move(client, src, dst.slug, ["nope"]).status_code == 400
    assert client.post(f"/w/{src.slug}/api/v1/projects/move", json={"target": dst.slug}).status_code == 400


def test_related_rows_move_with_their_project(world, signed_in):
    """Any table whose foreign key (workspace_id, project_id) points at
    projects moves with them: one such table, made here."""
    table = sql.Identifier("project_notes_" + uuid.uuid4().hex[:8])
    world.admin.execute(sql.SQL("""
        create table cajex.{t} (
          workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
          id uuid not null default gen_random_uuid(),
          project_id uuid not null,
          body text not null,
          primary key (workspace_id, id),
          foreign key (workspace_id, project_id) references cajex.projects (workspace_id, id) on delete cascade
        );
        alter table cajex.{t} owner to cajex_owner;
        alter table cajex.{t} enable row level security;
        alter table cajex.{t} force row level security;
        create policy "the context can read notes" on cajex.{t}
          for select using (workspace_id = (select c.workspace_id from cajex_private.context c));
        grant select on cajex.{t} to cajex_app;
        grant select, update on cajex.{t} to cajex_definer;
    """).format(t=table))
    boss = world.user()
    src, dst = org_of(world, boss, "pro", "pro")
    p = world.project(src)
    world.admin.execute(sql.SQL("insert into cajex.{t} (workspace_id, project_id, body) values (%s, %s, 'n')")
                        .format(t=table), (src.id, p["id"]))
    assert move(signed_in(boss), src, dst.slug, [p["id"]]).status_code == 200
    for ws, expected in ((src, 0), (dst, 1)):
        with world.as_user(boss, ws) as (conn, _):
            n = conn.execute(sql.SQL("select count(*) as n from cajex.{t}").format(t=table)).fetchone()["n"]
        assert n == expected, ws.slug


def test_the_switcher_links_the_organisations_i_own(world, signed_in):
    boss = world.user()
    mine, = org_of(world, boss, "pro")
    theirs, = org_of(world, world.user(), "pro")
    world.member(theirs, boss, role="admin")  # a member there, not an owner of it
    page = signed_in(boss).get(f"/w/{mine.slug}/projects").get_data(as_text=True)
    assert f'href="/organisations/{mine.organisation_id}"' in page
    assert f"/organisations/{theirs.organisation_id}" not in page
