"""The isolation battery's dataset, actors and checks (no tests of its own).

Workspace-owned tables are discovered from the catalog (a NOT NULL
workspace_id column, the same rule as `cajex db doctor`), plus the outbox
(workspace_id is null for platform jobs), so tables added later are covered
without touching this file.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid

import psycopg
from psycopg import errors, sql

from cajex.testing.factory import TestUser, TestWorkspace, World

#: Tables scoped by workspace_id although the column may be null.
EXTRA_SCOPED = ("cajex.outbox",)
#: Errors that mean "you may not even look": no rows returned, which is fine.
DENIED = (errors.InsufficientPrivilege,)


def scoped_tables(admin) -> list[tuple[str, str]]:
    """(schema, table) of every workspace-owned table, discovered from the catalog."""
    rows = admin.execute(
        """
        select n.nspname as schema, c.relname as name
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attname = 'workspace_id'
          and not a.attisdropped
        where c.relkind in ('r', 'p')
          and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'extensions')
          and n.nspname not like 'pg_temp%%'
          and (a.attnotnull or format('%%I.%%I', n.nspname, c.relname) = any (%s))
        order by 1, 2
        """,
        (list(EXTRA_SCOPED),),
    ).fetchall()
    return [(r["schema"], r["name"]) for r in rows]


def api_relations(admin) -> list[tuple[str, str]]:
    """(schema, view) of every relation PostgREST exposes in the api schema."""
    rows = admin.execute(
        "select n.nspname as schema, c.relname as name from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'api' and c.relkind in ('r', 'v', 'm') order by 2"
    ).fetchall()
    return [(r["schema"], r["name"]) for r in rows]


def has_column(admin, schema: str, table: str, column: str) -> bool:
    return bool(
        admin.execute(
            "select 1 from information_schema.columns"
            " where table_schema = %s and table_name = %s and column_name = %s",
            (schema, table, column),
        ).fetchone()
    )


def fingerprint(admin, tables: list[tuple[str, str]]) -> dict:
    """{(table, workspace_id): md5 of its rows}, read as the superuser."""
    prints = {}
    for schema, table in tables:
        rows = admin.execute(
            sql.SQL(
                "select t.workspace_id::text as ws, md5(string_agg(t::text, '|' order by t::text)) as h,"
                " count(*) as n from {}.{} t group by 1"
            ).format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchall()
        for r in rows:
            prints[(f"{schema}.{table}", r["ws"])] = (r["n"], r["h"])
    return prints


def changed_outside(before: dict, after: dict, allowed: set) -> list:
    """Keys whose rows changed, for workspaces not in `allowed` (ids as text)."""
    keys = set(before) | set(after)
    return sorted(
        (k for k in keys if k[1] not in allowed and before.get(k) != after.get(k)),
        key=str,
    )


@dataclasses.dataclass
class Tenant:
    ws: TestWorkspace
    members: dict  # role -> TestUser
    projects: list  # dicts
    canary: str


@dataclasses.dataclass
class Dataset:
    tenants: list
    #: Users whose access to tenants[0] was taken away, by how.
    lost: dict
    #: A user who belongs to tenants[0] and tenants[1].
    multi: TestUser
    #: A signed-in user who belongs to no workspace.
    stranger: TestUser
    #: A soft-deleted workspace and its (still active) member.
    deleted: Tenant | None = None

    def __repr__(self) -> str:
        # Hypothesis prints its arguments on failure: no session secrets there.
        return f"Dataset({len(self.tenants)} tenants)"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))

    def tenant_of(self, ws_id) -> Tenant | None:
        return next((t for t in self.all_tenants() if t.ws.id == ws_id), None)

    def all_tenants(self) -> list:
        return self.tenants + ([self.deleted] if self.deleted else [])


def fill_tenant(world: World, projects: int = 2, jobs: int = 1, plan: str = "free") -> Tenant:
    """A workspace with one member of each role and canary rows in every table we can fill."""
    canary = f"canary-{secrets.token_hex(4)}"
    owner = world.user()
    ws = world.workspace(owner, slug=f"iso-{secrets.token_hex(4)}", plan=plan)
    members = {"owner": owner}
    for role in ("admin", "member", "viewer"):
        members[role] = world.member(ws, role=role)
    rows = [world.project(ws, name=f"{canary} project {i}") for i in range(projects)]
    with world.as_user(owner, ws) as (conn, _):
        for i in range(jobs):
            conn.execute(
                "select cajex_private.enqueue_job('isolation.canary', %s::jsonb)",
                (f'{{"canary": "{canary}", "n": {i}}}',),
            )
    return Tenant(ws, members, rows, canary)


def build(world: World, workspaces: int = 3, projects: int = 2, jobs: int = 1) -> Dataset:
    """Several tenants, people who lost access to the first one, and a deleted workspace."""
    plans = ["free", "pro", "enterprise", "team", "basic"]
    tenants = [fill_tenant(world, projects, jobs, plans[i % len(plans)]) for i in range(workspaces)]
    a, b = tenants[0], tenants[1]
    admin = world.admin
    lost = {}
    lost["removed"] = world.member(a.ws, role="member")
    admin.execute(
        "delete from cajex.memberships where workspace_id = %s and user_id = %s",
        (a.ws.id, lost["removed"].id),
    )
    lost["deactivated"] = world.member(a.ws, role="member")
    admin.execute(
        "update cajex.memberships set status = 'deactivated' where workspace_id = %s and user_id = %s",
        (a.ws.id, lost["deactivated"].id),
    )
    lost["revoked"] = world.member(a.ws, role="admin")
    with world.signin.transaction():
        world.signin.execute(
            "select cajex_private.revoke_sessions(%s, 'test', %s)",
            (lost["revoked"].id, lost["revoked"].session_id),
        )
    lost["expired"] = world.member(a.ws, role="member")
    admin.execute(
        "update cajex.sessions set idle_expires_at = now() - interval '1 second' where id = %s",
        (lost["expired"].session_id,),
    )
    multi = world.member(a.ws, role="viewer")
    world.member(b.ws, multi, role="admin")
    deleted = fill_tenant(world, projects, jobs)
    # The deleted workspace's member also belongs to tenant a, so a leak of
    # the deleted workspace would show in a context they can still open.
    world.member(a.ws, deleted.members["member"], role="member")
    soft_delete(world, deleted.ws)
    return Dataset(tenants, lost, multi, world.user(), deleted)


def soft_delete(world: World, ws: TestWorkspace) -> None:
    world.admin.execute(
        "update cajex.workspaces set status = 'deleted', deleted_at = now(),"
        " purge_after = now() + interval '30 days' where id = %s",
        (ws.id,),
    )


@dataclasses.dataclass
class Leak:
    table: str
    row: dict


def savepointed(conn, statement, params=None, expected=DENIED):
    """Run one statement under a savepoint; None when refused with an expected error."""
    conn.execute("savepoint probe")
    try:
        cur = conn.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
    except expected:
        conn.execute("rollback to savepoint probe")
        return None
    conn.execute("release savepoint probe")
    return rows


def leaks(conn, tables, admin_view: dict, user_id, workspace_id) -> list[Leak]:
    """Rows visible on `conn` that belong to a workspace other than `workspace_id`.

    The only allowed exception is the user's own membership rows (the
    workspace switcher lists them); `admin_view` maps (schema, table) to
    whether it has a user_id column.
    """
    found = []
    for schema, table in tables:
        rows = savepointed(
            conn,
            sql.SQL("select to_jsonb(t) as row from {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)
            ),
        )
        for r in rows or []:
            row = r["row"] if isinstance(r, dict) else r[0]
            ws = row.get("workspace_id")
            if workspace_id is not None and ws == str(workspace_id):
                continue
            if (schema, table) == ("cajex", "memberships") and row.get("user_id") == str(user_id):
                continue
            found.append(Leak(f"{schema}.{table}", row))
    return found


def global_leaks(conn, world: World, dataset: Dataset, user_id, workspace_id) -> list[Leak]:
    """Workspaces, users and organisations the context may not see."""
    found = []
    active_mine = (
        {
            r["workspace_id"]
            for r in world.admin.execute(
                "select m.workspace_id from cajex.memberships m join cajex.workspaces w on w.id = m.workspace_id"
                " where m.user_id = %s and m.status = 'active' and w.status = 'active'",
                (user_id,),
            ).fetchall()
        }
        if user_id
        else set()
    )
    allowed_ws = active_mine | ({workspace_id} if workspace_id else set())
    for r in savepointed(conn, "select id, status from cajex.workspaces") or []:
        if r["id"] not in allowed_ws or r["status"] != "active":
            found.append(Leak("cajex.workspaces", dict(r)))
    colleagues = (
        {
            r["user_id"]
            for r in world.admin.execute(
                "select user_id from cajex.memberships where workspace_id = %s", (workspace_id,)
            ).fetchall()
        }
        if workspace_id
        else set()
    )
    for r in savepointed(conn, "select id from cajex.users") or []:
        if r["id"] != user_id and r["id"] not in colleagues:
            found.append(Leak("cajex.users", dict(r)))
    return found


def attempt_writes(conn, tables, victim: Tenant) -> list[str]:
    """Try to change `victim`'s rows every way a request role could; what succeeded."""
    succeeded = []
    project = victim.projects[0]["id"] if victim.projects else uuid.uuid4()
    refusals = (errors.InsufficientPrivilege, errors.RaiseException, psycopg.errors.DatabaseError)
    probes = [
        ('select cajex.update_project(%s, \'{"name": "pwned"}\'::jsonb)', (project,)),
        ("select cajex.delete_project(%s)", (project,)),
    ]
    for schema, table in tables:
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        probes.append(
            (
                sql.SQL("update {} set workspace_id = workspace_id where workspace_id = %s").format(
                    ident
                ),
                (victim.ws.id,),
            )
        )
        probes.append(
            (sql.SQL("delete from {} where workspace_id = %s").format(ident), (victim.ws.id,))
        )
    for statement, params in probes:
        conn.execute("savepoint probe")
        try:
            cur = conn.execute(statement, params)
            if cur.description or (cur.rowcount and cur.rowcount > 0):
                succeeded.append(str(statement))
            conn.execute("release savepoint probe")
        except refusals:
            conn.execute("rollback to savepoint probe")
    return succeeded


def rows_of(admin, ws_id) -> dict:
    """What the superuser sees of one workspace, for a change check."""
    return {
        "projects": admin.execute(
            "select id, name, updated_at from cajex.projects where workspace_id = %s order by id",
            (ws_id,),
        ).fetchall(),
        "memberships": admin.execute(
            "select user_id, role, status from cajex.memberships where workspace_id = %s order by user_id",
            (ws_id,),
        ).fetchall(),
    }


__all__ = [
    "Dataset",
    "Leak",
    "Tenant",
    "TestUser",
    "attempt_writes",
    "build",
    "changed_outside",
    "fill_tenant",
    "fingerprint",
    "global_leaks",
    "has_column",
    "leaks",
    "scoped_tables",
]
