"""Seats and plans: the counter the trigger keeps, gates shared by every path,
the offline billing page and the plan-change API, each allow beside a deny
from another workspace."""

from __future__ import annotations

import threading

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def counted(world, ws) -> tuple[int, int]:
    """(the counter, a recount of active members) of a workspace."""
    row = world.admin.execute(
        "select b.seats_used, (select count(*) from cajex.memberships m"
        " where m.workspace_id = b.workspace_id and m.status = 'active')::int as active"
        " from cajex.workspace_billing b where b.workspace_id = %s",
        (ws.id,),
    ).fetchone()
    return row["seats_used"], row["active"]


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["join", "leave", "deactivate", "reactivate", "role", "rejoin"]
        ),
        st.integers(min_value=0, max_value=7),
        st.sampled_from(["admin", "member", "viewer"]),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_the_seat_count_is_the_number_of_active_members(world, ops):
    """After any sequence of joins, leaves, deactivations and role changes."""
    ws = world.workspace(plan="enterprise")
    people, gone = [], []
    for op, pick, role in ops:
        if op == "join" or not people:
            people.append(world.member(ws, role=role))
            continue
        user = people[pick % len(people)]
        if op == "leave":
            with world.as_user(ws.owner, ws) as (conn, _):
                conn.execute("select cajex.remove_member(%s)", (user.id,))
            people.remove(user)
            gone.append(user)
        elif op == "rejoin" and gone:
            back = gone.pop()
            world.member(ws, user=back, role=role)
            people.append(back)
        elif op in ("deactivate", "reactivate"):
            world.admin.execute(
                "update cajex.memberships set status = %s"
                " where workspace_id = %s and user_id = %s",
                ("deactivated" if op == "deactivate" else "active", ws.id, user.id),
            )
        elif op == "role":
            world.admin.execute(
                "update cajex.memberships set role = %s"
                " where workspace_id = %s and user_id = %s",
                (role, ws.id, user.id),
            )
        used, active = counted(world, ws)
        assert used == active
    used, active = counted(world, ws)
    assert used == active


def test_concurrent_joins_and_leaves_keep_the_count_exact(world):
    ws = world.workspace(plan="enterprise")
    users = [world.user() for _ in range(24)]
    errors = []

    def churn(batch):
        try:
            with psycopg.connect(world.admin_url, autocommit=True) as conn:
                for u in batch:
                    conn.execute(
                        "insert into cajex.memberships (workspace_id, user_id, role)"
                        " values (%s, %s, 'member')",
                        (ws.id, u.id),
                    )
                for u in batch[::2]:
                    conn.execute(
                        "delete from cajex.memberships where workspace_id = %s and user_id = %s",
                        (ws.id, u.id),
                    )
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(users[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert counted(world, ws) == (13, 13)


def test_a_role_change_is_no_seat_change(world):
    ws = world.workspace()
    member = world.member(ws)
    before = world.admin.execute(
        "select seat_sequence from cajex.workspace_billing where workspace_id = %s",
        (ws.id,),
    ).fetchone()["seat_sequence"]
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.change_member_role(%s, 'viewer')", (member.id,))
    after = world.admin.execute(
        "select seat_sequence from cajex.workspace_billing where workspace_id = %s",
        (ws.id,),
    ).fetchone()["seat_sequence"]
    assert before == after


def test_seat_changes_of_an_offline_workspace_enqueue_no_sync(world):
    ws = world.workspace()
    world.member(ws)
    n = world.admin.execute(
        "select count(*) as n from cajex.outbox where workspace_id = %s and kind = 'billing.sync_seats'",
        (ws.id,),
    ).fetchone()["n"]
    assert n == 0


# -- SQL: reading billing and changing plans ------------------------------------


def test_an_owner_reads_their_billing_and_not_anothers(world):
    a, b = world.workspace(), world.workspace()
    with world.as_user(a.owner, a) as (conn, _):
        rows = conn.execute(
            "select workspace_id from cajex.workspace_billing"
        ).fetchall()
    assert [r["workspace_id"] for r in rows] == [a.id]
    with world.as_user(a.owner, b) as (conn, opened):
        assert opened.workspace_id is None
        assert (
            conn.execute(
                "select count(*) as n from cajex.workspace_billing"
            ).fetchone()["n"]
            == 0
        )


def test_a_member_reads_no_billing(world):
    ws = world.workspace()
    member = world.member(ws)
    with world.as_user(member, ws) as (conn, _):
        assert (
            conn.execute(
                "select count(*) as n from cajex.workspace_billing"
            ).fetchone()["n"]
            == 0
        )


def test_a_downgrade_that_breaks_limits_says_which(world):
    ws = world.workspace(plan="pro")
    for _ in range(4):
        world.member(ws)
    with world.as_user(ws.owner, ws) as (conn, _):
        blockers = conn.execute(
            "select limit_name, message from cajex.plan_change_blockers('free')"
        ).fetchall()
        assert [b["limit_name"] for b in blockers] == ["seats"]
        assert "3 seats and 5 are in use" in blockers[0]["message"]
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("select cajex.change_plan('free', 'offline')")
    assert exc.value.sqlstate == "CXPLN" and exc.value.diag.message_detail == "seats"
    assert "remove or deactivate 2 members" in exc.value.diag.message_primary
    # Switching AI on adds the limit Free breaks by having no AI.
    world.admin.execute(
        "insert into cajex.ai_settings (workspace_id, enabled) values (%s, true)",
        (ws.id,),
    )
    with world.as_user(ws.owner, ws) as (conn, _):
        names = conn.execute(
            "select limit_name from cajex.plan_change_blockers('free')"
        ).fetchall()
        assert [n["limit_name"] for n in names] == ["seats", "ai"]


def test_another_workspace_cannot_change_the_plan_in_sql(world):
    a, b = world.workspace(), world.workspace()
    with world.as_user(b.owner, a) as (conn, _):
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("select cajex.change_plan('pro', 'offline')")
    assert exc.value.sqlstate in ("CXNCX", "CXFBD")
    plan = world.admin.execute(
        "select plan from cajex.workspaces where id = %s", (a.id,)
    ).fetchone()["plan"]
    assert plan == "free"


def test_an_admin_reads_but_cannot_change_the_plan(world):
    ws = world.workspace()
    admin = world.member(ws, role="admin")
    with world.as_user(admin, ws) as (conn, _):
        assert (
            conn.execute(
                "select count(*) as n from cajex.plan_change_blockers('pro')"
            ).fetchone()["n"]
            == 0
        )
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("select cajex.change_plan('pro', 'offline')")
    assert exc.value.sqlstate == "CXFBD"


# -- HTTP: the offline billing page ----------------------------------------------


def test_the_offline_page_shows_plan_seats_and_says_offline(world, signed_in):
    ws = world.workspace()
    world.member(ws)
    page = signed_in(ws.owner).get(f"/w/{ws.slug}/billing")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="billing-offline"' in html and "Billing is offline" in html
    assert "Seats: 2 in use of 3 allowed" in html


def test_the_billing_page_is_for_owners_and_admins_of_this_workspace(world, signed_in):
    ws, other = world.workspace(), world.workspace()
    admin = world.member(ws, role="admin")
    member = world.member(ws)
    assert signed_in(admin).get(f"/w/{ws.slug}/billing").status_code == 200
    resp = signed_in(member).get(f"/w/{ws.slug}/api/v1/billing")
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    resp = signed_in(other.owner).get(f"/w/{ws.slug}/api/v1/billing")
    assert resp.status_code == 404


def test_offline_plans_are_chosen_and_recorded(world, signed_in, csrf_headers):
    ws = world.workspace()
    client = signed_in(ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "team"})
    assert resp.status_code == 200 and resp.get_json() == {"done": True}
    body = client.get(f"/w/{ws.slug}/api/v1/billing").get_json()
    assert body["mode"] == "offline" and body["plan"] == "team"
    assert body["history"][0]["from"] == "free" and body["history"][0]["to"] == "team"
    assert body["history"][0]["source"] == "offline"
    resp = client.post(
        f"/w/{ws.slug}/billing/plan", data={"plan": "basic"}, headers=csrf_headers
    )
    assert resp.status_code == 302
    assert client.get(f"/w/{ws.slug}/api/v1/billing").get_json()["plan"] == "basic"


def test_an_offline_downgrade_over_a_limit_is_refused_with_the_limit(world, signed_in):
    ws = world.workspace(plan="basic")
    for _ in range(3):
        world.member(ws)
    client = signed_in(ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "free"})
    assert resp.status_code == 402
    error = resp.get_json()["error"]
    assert error["code"] == "plan_limit" and error["field"] == "seats"
    assert "4 are in use" in error["message"]
    assert client.get(f"/w/{ws.slug}/api/v1/billing").get_json()["plan"] == "basic"


def test_an_unknown_plan_is_refused(world, signed_in):
    ws = world.workspace()
    resp = signed_in(ws.owner).post(
        f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "gold"}
    )
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid"


def test_another_workspace_cannot_choose_a_plan_over_http(world, signed_in):
    ws, other = world.workspace(), world.workspace()
    resp = signed_in(other.owner).post(
        f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "enterprise"}
    )
    assert resp.status_code == 404
    assert (
        signed_in(ws.owner).get(f"/w/{ws.slug}/api/v1/billing").get_json()["plan"]
        == "free"
    )


def test_ai_usage_this_month_is_shown_by_model_and_task(world, signed_in):
    ws, other = world.workspace(plan="pro"), world.workspace(plan="pro")
    for w, tokens in ((ws, 120), (other, 999)):
        world.admin.execute(
            "insert into cajex.ai_usage (workspace_id, day, model, task, requests, input_tokens, output_tokens)"
            " values (%s, (now() at time zone 'utc')::date, 'claude-sonnet-4-5', 'project_summary', 2, %s, 30)",
            (w.id, tokens),
        )
    usage = (
        signed_in(ws.owner).get(f"/w/{ws.slug}/api/v1/billing").get_json()["ai_usage"]
    )
    assert usage == [
        {
            "model": "claude-sonnet-4-5",
            "task": "project_summary",
            "requests": 2,
            "input_tokens": 120,
            "output_tokens": 30,
        }
    ]


def test_cancel_and_portal_say_billing_is_offline(world, signed_in):
    ws = world.workspace()
    client = signed_in(ws.owner)
    resp = client.post(
        f"/w/{ws.slug}/api/v1/billing/cancel", json={"at_period_end": True}
    )
    assert (
        resp.status_code == 409
        and resp.get_json()["error"]["code"] == "billing_offline"
    )


def postgrest_billing(db_urls, settings, user, ws) -> list[dict]:
    """PostgREST's transaction for GET /billing (role, verified claims,
    pre-request) reading api.billing."""
    from cajex import jwt
    from cajex.testing import postgrest

    claims = jwt.verify(
        jwt.postgrest_token(settings.jwt_secret, user.id, user.session_id, str(ws.id)),
        settings.jwt_secret,
    )
    with postgrest.request(db_urls["authenticator"], "cajex_api", claims) as conn:
        return conn.execute(
            "select workspace_id, plan, seats_used from api.billing"
        ).fetchall()


def test_postgrest_reads_the_same_billing_and_nothing_of_another(
    world, db_urls, settings
):
    ws, other = world.workspace(plan="pro"), world.workspace()
    member = world.member(ws)
    assert postgrest_billing(db_urls, settings, ws.owner, ws) == [
        {"workspace_id": ws.id, "plan": "pro", "seats_used": 2}
    ]
    assert postgrest_billing(db_urls, settings, member, ws) == []
    assert postgrest_billing(db_urls, settings, other.owner, ws) == []
