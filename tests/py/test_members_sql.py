"""Members in SQL: invitations (with the hostile cases), roles, removal,
leaving, ownership and moving projects. Each allow sits beside a deny from
another workspace. The permission matrix is in test_members_matrix.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from pathlib import Path

import psycopg
import pytest

from cajex import members

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "http://cajex.test"


@contextlib.contextmanager
def raises_sql(sqlstate: str):
    """Expect a database error with this SQLSTATE."""
    with pytest.raises(psycopg.Error) as info:
        yield info
    assert info.value.sqlstate == sqlstate, (info.value.sqlstate, str(info.value))


def invite(conn, slug, email, role="member"):
    token, digest = members.new_token()
    row = conn.execute(
        "select * from cajex.invite_member(%s, %s, %s, %s)",
        (email, role, digest, members.accept_link(PUBLIC, slug, token)),
    ).fetchone()
    return token, row


def accept(world, user, slug, token):
    with world.as_user(user) as (conn, _):
        return conn.execute(
            "select * from cajex.accept_invitation(%s, %s)", (slug, members.token_hash(token))
        ).fetchone()


# -- invitations ------------------------------------------------------------------


def test_invite_and_accept(world):
    ws = world.workspace()
    newcomer = world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        token, row = invite(conn, ws.slug, newcomer.email.upper(), "viewer")
        assert row["outcome"] == "invited"
        stored = conn.execute("select email, token_hash, status from cajex.invitations").fetchone()
        outbox = conn.execute("select kind, payload from cajex.outbox where kind = 'email.send'").fetchone()
    assert stored["email"] == newcomer.email and stored["token_hash"] == members.token_hash(token)
    assert token.encode() not in bytes(stored["token_hash"])
    assert outbox["payload"]["template"] == "invitation"
    assert outbox["payload"]["to"] == newcomer.email
    assert outbox["payload"]["params"]["accept_url"].startswith(f"{PUBLIC}/w/{ws.slug}/join/")
    accepted = accept(world, newcomer, ws.slug, token)
    assert accepted["role"] == "viewer"
    with world.as_user(newcomer, ws) as (conn, opened):
        assert opened.role == "viewer"


def test_invitations_are_invisible_from_another_workspace(world):
    a, b = world.workspace(), world.workspace()
    with world.as_user(a.owner, a) as (conn, _):
        invite(conn, a.slug, "someone@example.test")
    with world.as_user(b.owner, b) as (conn, _):
        assert conn.execute("select count(*) as n from cajex.invitations").fetchone()["n"] == 0


def test_member_cannot_invite_and_viewer_cannot_read_invitations(world):
    ws = world.workspace()
    member = world.member(ws, role="member")
    with world.as_user(ws.owner, ws) as (conn, _):
        invite(conn, ws.slug, "x@example.test")
    with world.as_user(member, ws) as (conn, _):
        with raises_sql("CXFBD"):
            invite(conn, ws.slug, "y@example.test")
    with world.as_user(member, ws) as (conn, _):
        assert conn.execute("select count(*) as n from cajex.invitations").fetchone()["n"] == 0


def test_already_member_and_already_invited_say_so(world):
    ws = world.workspace()
    existing = world.member(ws)
    with world.as_user(ws.owner, ws) as (conn, _):
        assert invite(conn, ws.slug, existing.email)[1]["outcome"] == "already_member"
        assert invite(conn, ws.slug, "new@example.test")[1]["outcome"] == "invited"
        assert invite(conn, ws.slug, "NEW@example.test")[1]["outcome"] == "already_invited"
        assert invite(conn, ws.slug, "not an address")[1]["outcome"] == "invalid_address"
        assert invite(conn, ws.slug, "ok@example.test", "owner")[1]["outcome"] == "invalid_role"
        assert conn.execute("select count(*) as n from cajex.invitations").fetchone()["n"] == 1


def test_seat_limit_before_sending_and_at_acceptance(world):
    ws = world.workspace(plan="free")  # 3 seats: the owner holds one
    with world.as_user(ws.owner, ws) as (conn, _):
        t1, r1 = invite(conn, ws.slug, "a@example.test")
        _, r2 = invite(conn, ws.slug, "b@example.test")
        _, r3 = invite(conn, ws.slug, "c@example.test")
    assert [r1["outcome"], r2["outcome"], r3["outcome"]] == ["invited", "invited", "over_seat_limit"]
    # Seats fill up behind the invitation's back: acceptance checks again.
    world.member(ws)
    world.member(ws)
    a = world.user("a@example.test")
    with raises_sql("CXPLN"):
        accept(world, a, ws.slug, t1)


def test_token_is_single_use(world):
    ws = world.workspace()
    newcomer = world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        token, _ = invite(conn, ws.slug, newcomer.email)
    accept(world, newcomer, ws.slug, token)
    with raises_sql("CXEXP"):
        accept(world, newcomer, ws.slug, token)


def test_expired_token_is_refused(world):
    ws = world.workspace()
    newcomer = world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        token, row = invite(conn, ws.slug, newcomer.email)
    world.admin.execute(
        "update cajex.invitations set expires_at = now() - interval '1 minute' where id = %s",
        (row["invitation_id"],),
    )
    with raises_sql("CXEXP"):
        accept(world, newcomer, ws.slug, token)


def test_default_expiry_is_seven_days(world):
    ws = world.workspace()
    with world.as_user(ws.owner, ws) as (conn, _):
        invite(conn, ws.slug, "week@example.test")
        row = conn.execute("select expires_at - created_at as ttl from cajex.invitations").fetchone()
    assert row["ttl"] == dt.timedelta(days=7)


def test_revoked_token_is_refused(world):
    ws = world.workspace()
    newcomer = world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        token, row = invite(conn, ws.slug, newcomer.email)
        conn.execute("select cajex.revoke_invitation(%s)", (row["invitation_id"],))
    with raises_sql("CXEXP"):
        accept(world, newcomer, ws.slug, token)


def test_revoke_from_another_workspace_finds_nothing(world):
    a, b = world.workspace(), world.workspace()
    with world.as_user(a.owner, a) as (conn, _):
        _, row = invite(conn, a.slug, "v@example.test")
    with world.as_user(b.owner, b) as (conn, _):
        with raises_sql("CXNFD"):
            conn.execute("select cajex.revoke_invitation(%s)", (row["invitation_id"],))


def test_other_workspace_token_is_refused(world):
    a, b = world.workspace(), world.workspace()
    newcomer = world.user()
    with world.as_user(a.owner, a) as (conn, _):
        token, _ = invite(conn, a.slug, newcomer.email)
    with raises_sql("CXNFD"):
        accept(world, newcomer, b.slug, token)
    with world.as_user(newcomer, b) as (_, opened):
        assert opened.workspace_id is None


def test_accepting_as_a_different_email_is_refused(world):
    ws = world.workspace()
    invited, intruder = world.user(), world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        token, _ = invite(conn, ws.slug, invited.email)
    with raises_sql("CXFBD"):
        accept(world, intruder, ws.slug, token)
    # The invitation is still good for the right person.
    assert accept(world, invited, ws.slug, token)["role"] == "member"


def test_resend_kills_the_old_token(world):
    ws = world.workspace()
    newcomer = world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        old, row = invite(conn, ws.slug, newcomer.email)
        new, digest = members.new_token()
        conn.execute(
            "select cajex.resend_invitation(%s, %s, %s)",
            (row["invitation_id"], digest, members.accept_link(PUBLIC, ws.slug, new)),
        )
        emails = conn.execute("select count(*) as n from cajex.outbox where kind = 'email.send'").fetchone()
    assert emails["n"] == 2
    with raises_sql("CXEXP"):
        accept(world, newcomer, ws.slug, old)
    assert accept(world, newcomer, ws.slug, new)["role"] == "member"


def test_decline(world):
    ws = world.workspace()
    with world.as_user(ws.owner, ws) as (conn, _):
        token, _ = invite(conn, ws.slug, "no@example.test")
    world.conn.execute("select cajex.decline_invitation(%s, %s)", (ws.slug, members.token_hash(token)))
    world.conn.commit()
    with world.as_user(ws.owner, ws) as (conn, _):
        assert conn.execute("select status from cajex.invitations").fetchone()["status"] == "declined"


def test_bulk_mixed_rows(world):
    ws = world.workspace(plan="basic")  # 10 seats
    existing = world.member(ws)
    rows = [members.BulkRow(i + 1, e, r) for i, (e, r) in enumerate([
        ("one@example.test", "member"),
        (existing.email, "member"),
        ("broken", "member"),
        ("two@example.test", "boss"),
        ("=HYPERLINK(\"x\")@example.test", "viewer"),
    ] + [(f"n{i}@example.test", "viewer") for i in range(12)])]
    with world.as_user(ws.owner, ws) as (conn, _):
        results = members.invite_rows(conn, PUBLIC, ws.slug, rows)
        sent = conn.execute("select count(*) as n from cajex.outbox where kind = 'email.send'").fetchone()["n"]
    outcomes = [r["outcome"] for r in results]
    assert outcomes[:4] == ["invited", "already_member", "invalid_address", "invalid_role"]
    assert outcomes.count("over_seat_limit") > 0
    assert sent == outcomes.count("invited") == 10 - 2  # owner and existing hold two seats


# -- roles, removal, leaving --------------------------------------------------------


def test_change_role_and_cross_workspace_deny(world):
    a, b = world.workspace(), world.workspace()
    m = world.member(a)
    with world.as_user(a.owner, a) as (conn, _):
        conn.execute("select cajex.change_member_role(%s, 'viewer')", (m.id,))
    with world.as_user(m, a) as (_, opened):
        assert opened.role == "viewer"
    with world.as_user(b.owner, b) as (conn, _):
        with raises_sql("CXNFD"):
            conn.execute("select cajex.change_member_role(%s, 'member')", (m.id,))


def test_admin_cannot_promote_to_admin_or_touch_the_owner(world):
    ws = world.workspace()
    admin, m = world.member(ws, role="admin"), world.member(ws)
    with world.as_user(admin, ws) as (conn, _):
        with raises_sql("CXFBD"):
            conn.execute("select cajex.change_member_role(%s, 'admin')", (m.id,))
    with world.as_user(admin, ws) as (conn, _):
        with raises_sql("CXOWN"):
            conn.execute("select cajex.change_member_role(%s, 'viewer')", (ws.owner.id,))
    with world.as_user(admin, ws) as (conn, _):
        with raises_sql("CXINV"):
            conn.execute("select cajex.change_member_role(%s, 'owner')", (m.id,))


def test_remove_member_ends_their_access_and_sso_sessions(world):
    ws = world.workspace(plan="enterprise")
    m = world.member(ws)
    sso_sid = world.admin.execute(
        "select cajex_private.create_session(%s, %s, 'saml', p_sso_workspace_id => %s) as id",
        (m.id, b"\x01" * 32, ws.id),
    ).fetchone()["id"]
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.remove_member(%s)", (m.id,))
        audit = conn.execute("select action from cajex.audit_log where action = 'member.removed'").fetchall()
    assert audit
    with world.as_user(m, ws) as (_, opened):
        assert opened.workspace_id is None
    revoked = world.admin.execute("select revoked_at from cajex.sessions where id = %s", (sso_sid,)).fetchone()
    assert revoked["revoked_at"] is not None
    # The global session lives on (it opens the user's other workspaces).
    live = world.admin.execute("select revoked_at from cajex.sessions where id = %s", (m.session_id,)).fetchone()
    assert live["revoked_at"] is None


def test_remove_from_another_workspace_finds_nothing(world):
    a, b = world.workspace(), world.workspace()
    m = world.member(a)
    with world.as_user(b.owner, b) as (conn, _):
        with raises_sql("CXNFD"):
            conn.execute("select cajex.remove_member(%s)", (m.id,))
    with world.as_user(m, a) as (_, opened):
        assert opened.workspace_id == a.id


def test_owner_cannot_leave_or_be_removed(world):
    ws = world.workspace()
    admin = world.member(ws, role="admin")
    with world.as_user(ws.owner, ws) as (conn, _):
        with raises_sql("CXOWN"):
            conn.execute("select cajex.leave_workspace()")
    with world.as_user(admin, ws) as (conn, _):
        with raises_sql("CXOWN"):
            conn.execute("select cajex.remove_member(%s)", (ws.owner.id,))


def test_member_leaves(world):
    ws = world.workspace()
    m = world.member(ws)
    with world.as_user(m, ws) as (conn, _):
        conn.execute("select cajex.leave_workspace()")
    with world.as_user(m, ws) as (_, opened):
        assert opened.workspace_id is None
    with world.as_user(ws.owner, ws) as (conn, _):
        assert conn.execute("select count(*) as n from cajex.audit_log where action = 'member.left'").fetchone()["n"] == 1


# -- ownership -------------------------------------------------------------------


def owners(world, ws):
    return [r["user_id"] for r in world.admin.execute(
        "select user_id from cajex.memberships where workspace_id = %s and role = 'owner'", (ws.id,))]


def test_transfer_ownership(world):
    ws = world.workspace()
    heir = world.member(ws)
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.transfer_ownership(%s)", (heir.id,))
    assert owners(world, ws) == [heir.id]
    with world.as_user(ws.owner, ws) as (_, opened):
        assert opened.role == "admin"


def test_transfer_needs_an_active_member_of_this_workspace(world):
    a, b = world.workspace(), world.workspace()
    outsider = world.member(b)
    with world.as_user(a.owner, a) as (conn, _):
        with raises_sql("CXNFD"):
            conn.execute("select cajex.transfer_ownership(%s)", (outsider.id,))
    admin = world.member(a, role="admin")
    with world.as_user(admin, a) as (conn, _):
        with raises_sql("CXFBD"):
            conn.execute("select cajex.transfer_ownership(%s)", (admin.id,))
    assert owners(world, a) == [a.owner.id]


def test_concurrent_transfers_leave_exactly_one_owner(world):
    ws = world.workspace(plan="pro")
    heirs = [world.member(ws) for _ in range(4)]
    barrier = threading.Barrier(len(heirs))
    outcomes: list[str] = []

    def attempt(heir):
        conn = world.app_connection()
        try:
            barrier.wait()
            with world.as_user(ws.owner, ws, conn=conn) as (c, _):
                c.execute("select cajex.transfer_ownership(%s)", (heir.id,))
            outcomes.append("ok")
        except psycopg.Error as exc:
            outcomes.append(exc.sqlstate or "error")
        finally:
            conn.close()

    threads = [threading.Thread(target=attempt, args=(h,)) for h in heirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1, outcomes
    assert len(owners(world, ws)) == 1
    assert owners(world, ws)[0] in {h.id for h in heirs}


# -- moving projects ---------------------------------------------------------------


def test_move_projects_between_workspaces_of_an_organisation(world):
    src = world.workspace(plan="pro")
    dst = world.workspace(owner=src.owner, plan="pro", organisation_id=src.organisation_id)
    member = world.member(src)
    p1, p2, keep = world.project(src), world.project(src), world.project(src)
    with world.as_user(src.owner, src) as (conn, _):
        moved = conn.execute(
            "select cajex.move_projects(%s, %s) as n", (dst.slug, [p1["id"], p2["id"]])
        ).fetchone()["n"]
    assert moved == 2
    with world.as_user(member, src) as (conn, _):
        names = {r["name"] for r in conn.execute("select name from cajex.projects")}
    assert names == {keep["name"]}
    with world.as_user(src.owner, dst) as (conn, _):
        assert {r["name"] for r in conn.execute("select name from cajex.projects")} == {p1["name"], p2["name"]}
        assert conn.execute("select count(*) as n from cajex.audit_log where action = 'project.moved_in'").fetchone()["n"] == 1
    with world.as_user(src.owner, src) as (conn, _):
        assert conn.execute("select count(*) as n from cajex.audit_log where action = 'project.moved_out'").fetchone()["n"] == 1


def test_move_needs_admin_in_both_and_same_organisation(world):
    src = world.workspace(plan="pro")
    foreign = world.workspace(plan="pro")  # another organisation, not the caller's
    sibling = world.workspace(plan="pro", organisation_id=src.organisation_id, owner=src.owner)
    member_there = world.member(sibling)
    world.member(src, member_there, role="admin")
    p = world.project(src)
    with world.as_user(src.owner, src) as (conn, _):
        with raises_sql("CXNFD"):
            conn.execute("select cajex.move_projects(%s, %s)", (foreign.slug, [p["id"]]))
    with world.as_user(member_there, src) as (conn, _):
        with raises_sql("CXNFD"):
            conn.execute("select cajex.move_projects(%s, %s)", (sibling.slug, [p["id"]]))
    other = world.project(foreign)
    with world.as_user(src.owner, src) as (conn, _):
        with raises_sql("CXNFD"):
            conn.execute("select cajex.move_projects(%s, %s)", (sibling.slug, [other["id"]]))


def test_concurrent_acceptances_cannot_overfill_the_plan(world):
    """Two invitations from when the plan was bigger, one seat left: accepted
    at the same instant on two connections, exactly one gets in."""
    ws = world.workspace(plan="free")  # three seats
    world.member(ws)
    people = [world.user(), world.user()]
    tokens = []
    for person in people:
        token, digest = members.new_token()
        world.admin.execute(
            "insert into cajex.invitations (workspace_id, email, role, token_hash, expires_at)"
            " values (%s, %s, 'member', %s, now() + interval '1 day')",
            (ws.id, person.email, digest),
        )
        tokens.append(token)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(person, token):
        conn = world.app_connection()
        try:
            with world.as_user(person, conn=conn) as (c, _):
                barrier.wait()
                c.execute("select * from cajex.accept_invitation(%s, %s)", (ws.slug, members.token_hash(token)))
            outcomes.append("ok")
        except psycopg.Error as exc:
            outcomes.append(exc.sqlstate or "error")
        finally:
            conn.close()

    threads = [threading.Thread(target=attempt, args=pair) for pair in zip(people, tokens, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["CXPLN", "ok"], outcomes
    seats = world.admin.execute("select cajex.seat_count(%s) as n", (ws.id,)).fetchone()["n"]
    assert seats == 3


def test_bulk_list_answers_each_row_as_single_invitations_would(world):
    """Repeated addresses, an expired invitation and a pending one in one list."""
    ws = world.workspace(plan="basic")  # ten seats
    with world.as_user(ws.owner, ws) as (conn, _):
        _, stale = invite(conn, ws.slug, "stale@example.test")
        _, pending = invite(conn, ws.slug, "pending@example.test")
    world.admin.execute("update cajex.invitations set expires_at = now() - interval '1 minute' where id = %s",
                        (stale["invitation_id"],))
    rows = [members.BulkRow(n, e, r) for n, (e, r) in enumerate([
        ("twice@example.test", "member"),
        ("TWICE@example.test", "viewer"),
        ("stale@example.test", "member"),
        ("pending@example.test", "member"),
        ("twice@example.test", "emperor"),
    ], start=1)]
    with world.as_user(ws.owner, ws) as (conn, _):
        results = members.invite_rows(conn, PUBLIC, ws.slug, rows)
        audits = conn.execute(
            "select action, details from cajex.audit_log where action like 'invitation.%created'"
            " order by id").fetchall()
    assert [r["outcome"] for r in results] == [
        "invited", "already_invited", "invited", "already_invited", "invalid_role"]
    assert results[1]["invitation_id"] == results[0]["invitation_id"]
    assert results[3]["invitation_id"] == str(pending["invitation_id"])
    assert results[4]["invitation_id"] is None
    # Two single invitations, then one event for the list naming its two.
    assert [a["action"] for a in audits] == ["invitation.created"] * 2 + ["invitation.bulk_created"]
    assert audits[2]["details"]["count"] == 2
    assert set(audits[2]["details"]["invitations"]) == {results[0]["invitation_id"], results[2]["invitation_id"]}
    statuses = {r["email"]: r["status"] for r in world.admin.execute(
        "select email, status from cajex.invitations where workspace_id = %s and status <> 'replaced'", (ws.id,))}
    assert statuses == {"twice@example.test": "pending", "stale@example.test": "pending",
                        "pending@example.test": "pending"}


def test_bulk_list_from_another_workspace_is_refused(world):
    a, b = world.workspace(), world.workspace()
    with world.as_user(a.owner, b) as (conn, opened):
        assert opened.workspace_id is None
        with raises_sql("CXNCX"):
            members.invite_rows(conn, PUBLIC, b.slug, [members.BulkRow(1, "x@example.test", "member")])
    assert world.admin.execute(
        "select count(*) as n from cajex.invitations where workspace_id = %s", (b.id,)).fetchone()["n"] == 0


# -- the rules of every way in ------------------------------------------------------


def limit_for_non_payment(world, ws) -> None:
    world.admin.execute(
        "insert into cajex.workspace_billing (workspace_id, payment_failed_at, grace_until)"
        " values (%s, now() - interval '8 days', now() - interval '1 second')"
        " on conflict (workspace_id) do update set payment_failed_at = excluded.payment_failed_at,"
        " grace_until = excluded.grace_until",
        (ws.id,),
    )


def test_a_direct_addition_takes_a_seat_and_only_the_owner_makes_admins(world):
    ws = world.workspace(plan="free")  # three seats: the owner holds one
    admin = world.member(ws, role="admin")
    people = [world.user(), world.user()]
    with world.as_user(admin, ws) as (conn, _):
        with raises_sql("CXFBD"):
            conn.execute("select cajex_private.add_member(%s, 'admin')", (people[0].id,))
    with world.as_user(admin, ws) as (conn, _):
        conn.execute("select cajex_private.add_member(%s, 'member')", (people[0].id,))
        # Already a member: a role change, no new seat.
        conn.execute("select cajex_private.add_member(%s, 'viewer')", (people[0].id,))
    with world.as_user(ws.owner, ws) as (conn, _):
        with raises_sql("CXPLN"):
            conn.execute("select cajex_private.add_member(%s, 'member')", (people[1].id,))
    seats = world.admin.execute("select cajex.seat_count(%s) as n", (ws.id,)).fetchone()["n"]
    assert seats == 3


def test_a_bulk_list_in_a_workspace_limited_for_non_payment_invites_nobody(world):
    ws, other = world.workspace(plan="basic"), world.workspace(plan="basic")
    limit_for_non_payment(world, ws)
    rows = [members.BulkRow(i + 1, f"b{i}@example.test", "member") for i in range(3)]
    with world.as_user(ws.owner, ws) as (conn, _):
        single = invite(conn, ws.slug, "single@example.test")[1]["outcome"]
        results = members.invite_rows(conn, PUBLIC, ws.slug, rows)
        sent = conn.execute(
            "select count(*) as n from cajex.outbox where kind = 'email.send'"
        ).fetchone()["n"]
    assert single == "over_seat_limit"
    assert [r["outcome"] for r in results] == ["over_seat_limit"] * 3 and sent == 0
    # The other workspace invites as usual.
    with world.as_user(other.owner, other) as (conn, _):
        results = members.invite_rows(conn, PUBLIC, other.slug, rows)
    assert [r["outcome"] for r in results] == ["invited"] * 3


def test_a_downgrade_waits_for_an_acceptance_and_then_sees_its_seat(world):
    """Basic (ten seats) to Free (three) while an invitation is being
    accepted: the plan change reads the seats after the acceptance commits,
    and refuses, rather than leaving four members on a three-seat plan."""
    ws = world.workspace(plan="basic")
    world.member(ws)
    person = world.user()
    token, digest = members.new_token()
    world.admin.execute(
        "insert into cajex.invitations (workspace_id, email, role, token_hash, expires_at)"
        " values (%s, %s, 'member', %s, now() + interval '1 day')",
        (ws.id, person.email, digest),
    )
    world.member(ws)  # three of three seats on Free, four with the invitee
    accepting = world.app_connection()
    outcome: list[str] = []

    def downgrade():
        conn = world.app_connection()
        try:
            with world.as_user(ws.owner, ws, conn=conn) as (c, _):
                c.execute("select cajex.change_plan('free', 'offline')")
            outcome.append("changed")
        except psycopg.Error as exc:
            outcome.append(exc.sqlstate or "error")
        finally:
            conn.close()

    try:
        with world.as_user(person, conn=accepting) as (c, _):
            c.execute(
                "select * from cajex.accept_invitation(%s, %s)",
                (ws.slug, members.token_hash(token)),
            )
            thread = threading.Thread(target=downgrade)
            thread.start()
            thread.join(1.0)
            assert thread.is_alive()  # waiting for the acceptance's lock
        thread.join(30)
    finally:
        accepting.close()
    assert outcome == ["CXPLN"]
    row = world.admin.execute(
        "select w.plan, cajex.seat_count(w.id) as seats from cajex.workspaces w where w.id = %s",
        (ws.id,),
    ).fetchone()
    assert row == {"plan": "basic", "seats": 4}


def test_a_move_holds_to_the_target_workspaces_sign_in_rules(world):
    """An owner of both workspaces whose session the target would not let in
    (it enforces SSO, or chose other sign-in methods) cannot move projects
    into it from the source either."""
    src = world.workspace(plan="enterprise")
    dst = world.workspace(
        owner=src.owner, plan="enterprise", organisation_id=src.organisation_id
    )
    p = world.project(src)

    def move():
        with world.as_user(src.owner, src) as (conn, _):
            return conn.execute(
                "select cajex.move_projects(%s, %s) as n", (dst.slug, [p["id"]])
            ).fetchone()["n"]

    world.admin.execute(
        "update cajex.workspaces set sso_enforced = true where id = %s", (dst.id,)
    )
    with raises_sql("CXFBD"):
        move()
    world.admin.execute(
        "update cajex.workspaces set sso_enforced = false where id = %s", (dst.id,)
    )
    world.admin.execute(
        "update cajex.sessions set auth_method = 'magic_link' where id = %s",
        (src.owner.session_id,),
    )
    world.admin.execute(
        "insert into cajex.workspace_signin_methods (workspace_id, methods)"
        " values (%s, '{google}')",
        (dst.id,),
    )
    with raises_sql("CXFBD"):
        move()
    remaining = world.admin.execute(
        "select workspace_id from cajex.projects where id = %s", (p["id"],)
    ).fetchall()
    assert remaining == [{"workspace_id": src.id}]
    world.admin.execute(
        "update cajex.workspace_signin_methods set methods = '{google,magic_link}'"
        " where workspace_id = %s",
        (dst.id,),
    )
    assert move() == 1


# -- invitations and the other ways in ------------------------------------------------


def _membership(world, ws, user):
    row = world.admin.execute(
        "select role, status from cajex.memberships where workspace_id = %s and user_id = %s",
        (ws.id, user.id)).fetchone()
    return row and (row["role"], row["status"])


def _invitation_status(world, invitation_id):
    return world.admin.execute(
        "select status from cajex.invitations where id = %s", (invitation_id,)).fetchone()["status"]


def _bulk(conn, slug, rows):
    return members.invite_rows(conn, PUBLIC, slug, [members.BulkRow(n, e, r) for n, (e, r) in enumerate(rows, 1)])


def test_only_the_owner_invites_admins_single_or_bulk(world):
    ws = world.workspace(plan="basic")
    admin = world.member(ws, role="admin")
    # The owner may (allow) ...
    with world.as_user(ws.owner, ws) as (conn, _):
        assert invite(conn, ws.slug, "boss1@example.test", "admin")[1]["outcome"] == "invited"
        assert [r["outcome"] for r in _bulk(conn, ws.slug, [("boss2@example.test", "admin")])] == ["invited"]
    # ... an admin may not (deny): the single call raises, a list refuses the row only.
    with world.as_user(admin, ws) as (conn, _):
        with raises_sql("CXFBD"):
            invite(conn, ws.slug, "boss3@example.test", "admin")
    with world.as_user(admin, ws) as (conn, _):
        results = _bulk(conn, ws.slug, [("boss4@example.test", "admin"), ("worker@example.test", "member")])
        assert [r["outcome"] for r in results] == ["invalid_role", "invited"]
        assert results[0]["invitation_id"] is None
    assert {r["email"]: r["role"] for r in world.admin.execute(
        "select email, role from cajex.invitations where workspace_id = %s", (ws.id,))} == {
        "boss1@example.test": "admin", "boss2@example.test": "admin", "worker@example.test": "member"}


def test_joining_another_way_ends_the_pending_invitations_of_that_workspace_only(world):
    a, b = world.workspace(), world.workspace()
    person = world.user()
    with world.as_user(a.owner, a) as (conn, _):
        token_a, row_a = invite(conn, a.slug, person.email)
    with world.as_user(b.owner, b) as (conn, _):
        token_b, row_b = invite(conn, b.slug, person.email)
    with world.as_user(a.owner, a) as (conn, _):
        conn.execute("select cajex_private.add_member(%s, 'viewer')", (person.id,))
    # A's invitation is replaced and its link dead; B's is untouched and still works.
    assert _invitation_status(world, row_a["invitation_id"]) == "replaced"
    assert _invitation_status(world, row_b["invitation_id"]) == "pending"
    with raises_sql("CXEXP"):
        accept(world, person, a.slug, token_a)
    assert _membership(world, a, person) == ("viewer", "active")
    assert accept(world, person, b.slug, token_b)["role"] == "member"
    assert _invitation_status(world, row_b["invitation_id"]) == "accepted"


def test_an_invitation_never_brings_back_a_deactivated_membership(world):
    ws = world.workspace(plan="pro")
    person, removed = world.user(), world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        token, row = invite(conn, ws.slug, person.email)
        token_r, _ = invite(conn, ws.slug, removed.email)
    world.member(ws, person)
    world.admin.execute("update cajex.memberships set status = 'deactivated' where workspace_id = %s"
                        " and user_id = %s", (ws.id, person.id))  # as scim_set_active(false)
    # Even an invitation left pending (written before joining ended them):
    world.admin.execute("update cajex.invitations set status = 'pending', ended_at = null where id = %s",
                        (row["invitation_id"],))
    seats = world.admin.execute("select cajex.seat_count(%s) as n", (ws.id,)).fetchone()["n"]
    with raises_sql("CXFBD"):
        accept(world, person, ws.slug, token)
    assert _membership(world, ws, person) == ("member", "deactivated")
    assert world.admin.execute("select cajex.seat_count(%s) as n", (ws.id,)).fetchone()["n"] == seats
    # Re-inviting the deactivated member is 'already_member', single or bulk.
    with world.as_user(ws.owner, ws) as (conn, _):
        assert invite(conn, ws.slug, person.email)[1]["outcome"] == "already_member"
        assert [r["outcome"] for r in _bulk(conn, ws.slug, [(person.email, "member")])] == ["already_member"]
    # A removed member has no membership left: a new invitation brings them back.
    world.member(ws, removed)
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.remove_member(%s)", (removed.id,))
        token_r, _ = invite(conn, ws.slug, removed.email)
    assert accept(world, removed, ws.slug, token_r)["role"] == "member"
    assert _membership(world, ws, removed) == ("member", "active")


def test_invitations_of_people_who_are_members_hold_no_seat(world):
    ws = world.workspace(plan="free")  # three seats: the owner holds one
    joined = world.user()
    with world.as_user(ws.owner, ws) as (conn, _):
        _, row = invite(conn, ws.slug, joined.email)
    world.member(ws, joined)  # joined by SSO, SCIM or directly: two seats taken
    assert _invitation_status(world, row["invitation_id"]) == "replaced"
    # A leftover pending one (written before joining ended them) holds none either.
    world.admin.execute("update cajex.invitations set status = 'pending', ended_at = null where id = %s",
                        (row["invitation_id"],))
    with world.as_user(ws.owner, ws) as (conn, _):
        _, first = invite(conn, ws.slug, "third@example.test")
        # A real pending invitation does hold the last seat, single or bulk.
        _, second = invite(conn, ws.slug, "fourth@example.test")
        assert [r["outcome"] for r in _bulk(conn, ws.slug, [("fifth@example.test", "member")])] == [
            "over_seat_limit"]
    assert (first["outcome"], second["outcome"]) == ("invited", "over_seat_limit")
