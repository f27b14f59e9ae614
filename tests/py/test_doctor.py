"""The isolation audit (`cajex db doctor`): clean on the migrated schema, and
each of its findings proven by creating the bad object in this test's database.
"""

from __future__ import annotations

import contextlib

import pytest
from click.testing import CliRunner

from cajex import doctor
from cajex.cli import _register_areas, cli

_register_areas()


def run_doctor(url: str):
    """Run `cajex db doctor` against `url`; (exit code, output lines)."""
    result = CliRunner().invoke(cli, ["db", "doctor", "--database-url", url])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output
    )
    return result.exit_code, [
        line for line in result.output.splitlines() if line.strip()
    ]


def findings_of(lines: list[str], check: str) -> list[str]:
    return [line for line in lines if line.startswith(f"{check}: ")]


def test_can_pass_the_audit_on_a_migrated_database(db_urls):
    """A freshly migrated database has no finding and the command exits 0."""
    code, lines = run_doctor(db_urls["admin"])
    assert code == 0, "\n".join(lines)
    assert lines[-1] == "isolation audit: clean"


@pytest.mark.parametrize("table", sorted(doctor.PLATFORM_KEYED_TABLES))
def test_cannot_read_a_platform_keyed_table_as_a_request_role(admin_conn, table):
    """A table the key check exempts is still under forced RLS and unreadable to requests."""
    schema, name = table.split(".")
    row = admin_conn.execute(
        "select c.relrowsecurity and c.relforcerowsecurity from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s and c.relname = %s",
        (schema, name),
    ).fetchone()
    assert row == (True,)
    for role in doctor.APP_ROLES:
        (readable,) = admin_conn.execute(
            "select has_table_privilege(%s, %s, 'select, insert, update, delete')",
            (role, table),
        ).fetchone()
        assert readable is False, f"{role} can reach {table}"


# Each case: the finding kind, the SQL that creates one bad object, the name the
# finding must carry, and the SQL that undoes cluster-wide changes (roles).
WS = "workspace_id uuid not null references cajex.workspaces (id) on delete cascade"
RLS = "alter table {t} enable row level security; alter table {t} force row level security;"
CASES = {
    "rls_missing": (
        "create table cajex.doctor_no_rls (id integer primary key);",
        "cajex.doctor_no_rls",
        None,
    ),
    "key_without_workspace": (
        f"create table cajex.doctor_bad_key ({WS}, id uuid not null, primary key (id, workspace_id));"
        + RLS.format(t="cajex.doctor_bad_key"),
        "cajex.doctor_bad_key (doctor_bad_key_pkey)",
        None,
    ),
    "foreign_key_without_workspace": (
        f"create table cajex.doctor_parent ({WS}, id uuid not null, primary key (workspace_id, id));"
        "create unique index doctor_parent_id_key on cajex.doctor_parent (workspace_id, id) include (id);"
        "alter table cajex.doctor_parent add constraint doctor_parent_plain_key unique (id);"
        + RLS.format(t="cajex.doctor_parent")
        + f"create table cajex.doctor_child ({WS}, id uuid not null, parent_id uuid,"
        " primary key (workspace_id, id),"
        " constraint doctor_child_parent_fkey foreign key (parent_id)"
        " references cajex.doctor_parent (id) on delete cascade);"
        + RLS.format(t="cajex.doctor_child"),
        "cajex.doctor_child (doctor_child_parent_fkey)",
        None,
    ),
    "definer_without_search_path": (
        "create function cajex.doctor_loose() returns integer language sql security definer"
        " as 'select 1';"
        "revoke execute on function cajex.doctor_loose() from public;",
        "cajex.doctor_loose()",
        None,
    ),
    "definer_executable_by_public": (
        "create function cajex.doctor_public() returns integer language sql security definer"
        " set search_path = pg_catalog, pg_temp as 'select 1';"
        "grant execute on function cajex.doctor_public() to public;",
        "cajex.doctor_public()",
        None,
    ),
    "bypassing_function_takes_an_id": (
        "create function cajex_private.doctor_peek(p_workspace_id uuid) returns integer"
        " language sql security definer set search_path = pg_catalog, pg_temp as 'select 1';"
        "revoke execute on function cajex_private.doctor_peek(uuid) from public;"
        "alter function cajex_private.doctor_peek(uuid) owner to cajex_definer;"
        "grant execute on function cajex_private.doctor_peek(uuid) to cajex_app;",
        "cajex_private.doctor_peek(p_workspace_id uuid)",
        None,
    ),
    "view_without_security_invoker": (
        "create view cajex.doctor_owner_rights as select id from cajex.projects;",
        "cajex.doctor_owner_rights",
        None,
    ),
    "app_role_privileged": (
        "alter role cajex_anon bypassrls;",
        "cajex_anon",
        "alter role cajex_anon nobypassrls;",
    ),
    "app_role_owns_objects": (
        "create table cajex.doctor_app_owned (id integer primary key);"
        + RLS.format(t="cajex.doctor_app_owned")
        + "alter table cajex.doctor_app_owned owner to cajex_app;",
        "cajex_app owns cajex.doctor_app_owned",
        None,
    ),
    "policy_without_context": (
        f"create table cajex.doctor_open ({WS}, id uuid not null, primary key (workspace_id, id));"
        + RLS.format(t="cajex.doctor_open")
        + 'create policy "anyone can read everything" on cajex.doctor_open for select using (true);',
        "cajex.doctor_open (anyone can read everything)",
        None,
    ),
}


def test_covers_every_finding_kind():
    """Every check the audit runs has a case below that proves it."""
    assert set(CASES) == set(doctor.CHECKS)


@pytest.mark.parametrize("check", sorted(CASES))
def test_cannot_pass_the_audit_with_a_bad_object(world, db_urls, check):
    """Each bad object makes the audit exit non-zero with one line naming it."""
    create, name, undo = CASES[check]
    try:
        world.admin.execute(create)
        code, lines = run_doctor(db_urls["admin"])
    finally:
        # Roles are cluster-wide: undo their change whatever happened.
        if undo:
            with contextlib.suppress(Exception):
                world.admin.execute(undo)
    assert code != 0
    named = [line for line in findings_of(lines, check) if f": {name}: " in line]
    assert len(named) == 1, "\n".join(lines)


def test_cannot_pass_the_audit_when_an_app_role_inherits_the_owner(world, db_urls):
    """An application role that is a member of the owner role counts as privileged."""
    try:
        world.admin.execute("grant cajex_owner to cajex_api")
        code, lines = run_doctor(db_urls["admin"])
    finally:
        with contextlib.suppress(Exception):
            world.admin.execute("revoke cajex_owner from cajex_api")
    assert code != 0
    assert findings_of(lines, "app_role_privileged") == [
        line for line in lines if line.startswith("app_role_privileged: cajex_api: ")
    ]
    assert len(findings_of(lines, "app_role_privileged")) == 1
