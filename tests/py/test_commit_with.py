"""db.commit_with: a whole transaction (BEGIN, the context, one statement,
COMMIT) sent as one message. It opens exactly what in_context opens, runs
nothing when the context is not the expected workspace, and a failure
anywhere commits nothing and leaves the connection usable."""

from __future__ import annotations

import psycopg
import pytest

from cajex import context, db

CREATE = "select id, name from cajex.create_project($1, '', '{}', 'active')"


def names(world, ws) -> list[str]:
    return [
        r["name"]
        for r in world.admin.execute(
            "select name from cajex.projects where workspace_id = %s order by name",
            (ws.id,),
        ).fetchall()
    ]


def idle(conn) -> bool:
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.fixture
def two(world):
    return world.workspace(plan="team"), world.workspace(plan="team")


def test_can_write_in_ones_own_workspace_and_get_the_rows_back(world, two):
    a, _ = two
    with world.app_connection() as conn:
        opened, rows = db.commit_with(
            conn, a.owner.token(), a.slug, CREATE, ("roadmap",), expect=a.id
        )
        assert idle(conn)
    assert opened.workspace_id == a.id and opened.user_id == a.owner.id
    assert opened.role == "owner" and opened.can("project.read")
    assert [r["name"] for r in rows] == ["roadmap"] and rows[0]["id"]
    assert names(world, a) == ["roadmap"]


def test_cannot_write_in_another_workspace_by_naming_it(world, two):
    """B's owner asks for A (by slug, and expecting A's id): nothing runs."""
    a, b = two
    with world.app_connection() as conn:
        with pytest.raises(psycopg.Error) as err:
            db.commit_with(
                conn, b.owner.token(), a.slug, CREATE, ("intruder",), expect=a.id
            )
        assert err.value.sqlstate == "CXNCX" and idle(conn)
        # Without an expected id the statement runs with no context: RLS
        # shows it nothing and the write function refuses.
        with pytest.raises(psycopg.Error) as err:
            db.commit_with(conn, b.owner.token(), a.slug, CREATE, ("intruder",))
        assert err.value.sqlstate == "CXNCX" and idle(conn)
        opened, rows = db.commit_with(
            conn, b.owner.token(), a.slug, "select count(*) as n from cajex.projects"
        )
        assert opened.workspace_id is None and rows == [{"n": 0}]
    assert names(world, a) == [] and names(world, b) == []


def test_runs_nothing_when_the_context_opens_another_workspace_than_expected(
    world, two
):
    """The slug now names B (say it changed hands): the request resolved A, so nothing runs."""
    a, b = two
    member = world.member(b, role="admin")
    world.admin.execute(
        "insert into cajex.memberships (workspace_id, user_id, role, status)"
        " values (%s, %s, 'member', 'active')",
        (a.id, member.id),
    )
    with world.app_connection() as conn:
        with pytest.raises(psycopg.Error) as err:
            db.commit_with(
                conn, member.token(), b.slug, CREATE, ("misfiled",), expect=a.id
            )
        assert err.value.sqlstate == "CXNCX" and idle(conn)
    assert names(world, a) == [] and names(world, b) == []


def test_a_signed_out_session_writes_nothing(world, two):
    a, _ = two
    token = a.owner.token()
    world.admin.execute(
        "update cajex.sessions set revoked_at = now() where id = %s",
        (a.owner.session_id,),
    )
    with world.app_connection() as conn:
        with pytest.raises(psycopg.Error) as err:
            db.commit_with(conn, token, a.slug, CREATE, ("late",), expect=a.id)
        assert err.value.sqlstate == "CXNCX" and idle(conn)
    assert names(world, a) == []


def test_a_failing_statement_commits_nothing_and_the_connection_goes_on(world, two):
    a, _ = two
    with world.app_connection() as conn:
        with pytest.raises(psycopg.Error) as err:
            db.commit_with(
                conn,
                a.owner.token(),
                a.slug,
                # The project is made, then the statement fails.
                "select 1 / (length(p.name) - 4)"
                " from cajex.create_project('half', '', '{}', 'active') p",
                expect=a.id,
            )
        assert isinstance(err.value, psycopg.errors.DivisionByZero) and idle(conn)
        opened, _ = db.commit_with(
            conn, a.owner.token(), a.slug, CREATE, ("whole",), expect=a.id
        )
        assert opened.workspace_id == a.id
        # The ordinary path on the same connection still works, too.
        with db.in_context(conn, a.owner.token(), a.slug) as opened:
            assert opened.workspace_id == a.id
    assert names(world, a) == ["whole"]


@pytest.mark.parametrize(
    "name",
    ["it's; drop table cajex.projects; --", "back\\slash", "$$dollar$$", "é ☃"],
)
def test_parameters_are_bound_not_spliced(world, two, name):
    a, _ = two
    with world.app_connection() as conn:
        _, rows = db.commit_with(
            conn, a.owner.token(), a.slug, CREATE, (name,), expect=a.id
        )
    assert rows[0]["name"] == name and names(world, a) == [name]


def test_hostile_credentials_and_slugs_open_nothing(world, two):
    a, _ = two
    token = a.owner.token()
    with world.app_connection() as conn:
        for credential, slug in [
            (token + "'; set role postgres; --", a.slug),
            (token, a.slug + "'; select 1; --"),
            (token.replace(".", ".'", 1), a.slug),
        ]:
            opened, rows = db.commit_with(
                conn,
                credential,
                slug,
                "select current_user as u, count(*) as n from cajex.projects",
            )
            assert opened.workspace_id is None and rows == [{"u": "cajex_app", "n": 0}]
            assert idle(conn)


def test_a_service_token_opens_only_its_workspace(world, two):
    a, b = two
    job = context.service_token(world.secret, a.id, "test")
    with world.app_connection() as conn:
        opened, _ = db.commit_with(
            conn, job, str(a.id), CREATE, ("by job",), expect=a.id
        )
        assert opened.workspace_id == a.id
        with pytest.raises(psycopg.Error) as err:
            db.commit_with(conn, job, str(a.id), CREATE, ("elsewhere",), expect=b.id)
        assert err.value.sqlstate == "CXNCX" and idle(conn)
    assert names(world, a) == ["by job"] and names(world, b) == []


def test_a_lost_connection_is_an_operational_error(world, two):
    a, _ = two
    conn = world.app_connection()
    try:
        pid = conn.info.backend_pid
        world.admin.execute("select pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            db.commit_with(
                conn, a.owner.token(), a.slug, CREATE, ("gone",), expect=a.id
            )
    finally:
        conn.close()
    assert names(world, a) == []


def test_must_start_its_own_transaction(world, two):
    a, _ = two
    with world.app_connection() as conn:
        conn.execute("select 1")  # psycopg opened a transaction
        with pytest.raises(RuntimeError):
            db.commit_with(conn, a.owner.token(), a.slug, "select 1")


def test_every_opening_keeps_one_plan_on_a_database_without_statistics(world, two):
    """The server plans each opening once per connection and then reuses it,
    with or without an expected workspace, for a browser and for a signed
    token. (Given a null workspace to expect, the planner would find its own
    folded plan cheaper than the general one and plan it again on every
    transaction: half a millisecond each on tables never analyzed.)"""
    a, _ = two
    service = context.service_token(world.secret, a.id, "plans")
    with world.app_connection() as conn:
        for _ in range(12):
            with db.in_context(conn, a.owner.token(), a.slug) as opened:
                assert opened.workspace_id == a.id
            with db.in_context(conn, service, str(a.id)) as opened:
                assert opened.workspace_id == a.id
            for token in (a.owner.token(), service):
                opened, _ = db.commit_with(conn, token, a.slug, "select 1", expect=a.id)
                assert opened.workspace_id == a.id
        plans = {
            r["name"]: (r["generic_plans"], r["custom_plans"])
            for r in conn.execute(
                "select name, generic_plans, custom_plans from pg_prepared_statements"
                " where name like 'cajex_open_%'"
            ).fetchall()
        }
        conn.rollback()
    assert set(plans) == {
        "cajex_open_browser",
        "cajex_open_browser_for",
        "cajex_open_token",
        "cajex_open_token_for",
    }
    for name, (generic, custom) in plans.items():
        # PostgreSQL tries five custom plans before it weighs the generic one.
        assert custom <= 5 and generic >= 7, (name, generic, custom)
