"""The Stripe webhook endpoint: deliveries built and signed exactly the way
Stripe signs them (t=<time>,v1=HMAC-SHA256 of "<t>.<raw body>"), refused
when the signature or its time is wrong, applied once, never backwards, and
only to the workspace that owns the customer."""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time

import pytest
from cajex.web.middleware import close_pools

from cajex.testing.billing import (
    PRICES,
    WEBHOOK_SECRETS,
    event,
    post_event,
    sign,
    subscription_object,
)


@pytest.fixture
def hook_settings(settings):
    """Webhook secrets and prices configured; no API key (webhooks call nothing)."""
    return dataclasses.replace(
        settings,
        stripe_webhook_secrets=WEBHOOK_SECRETS,
        stripe_prices=dict(PRICES),
        pool_max=12,
    )


@pytest.fixture
def hook_app(hook_settings):
    from cajex.web import create_app

    application = create_app(hook_settings, {"TESTING": True})
    yield application
    close_pools(application)


@pytest.fixture
def client(hook_app):
    return hook_app.test_client()


def with_customer(world, ws, customer: str) -> None:
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.record_stripe_customer(%s)", (customer,))


def billing(world, ws) -> dict:
    return world.admin.execute(
        "select b.*, w.plan from cajex.workspace_billing b join cajex.workspaces w"
        " on w.id = b.workspace_id where b.workspace_id = %s",
        (ws.id,),
    ).fetchone()


def recorded(world, event_id: str) -> list[dict]:
    return world.admin.execute(
        "select * from cajex_private.stripe_events where event_id = %s", (event_id,)
    ).fetchall()


def sub_event(kind, customer, quantity=3, price="cajex-basic", created=None, **kw):
    return event(
        kind,
        subscription_object("sub_" + customer[4:], customer, price, quantity, **kw),
        created=created,
    )


# -- signatures -----------------------------------------------------------------


def test_a_signed_event_is_applied(world, client):
    ws = world.workspace()
    with_customer(world, ws, "cus_signed1")
    evt = sub_event("customer.subscription.created", "cus_signed1")
    resp = post_event(client, evt)
    assert resp.status_code == 200 and resp.get_json() == {"outcome": "applied"}
    row = billing(world, ws)
    assert row["plan"] == "basic" and row["seats_paid"] == 3
    assert row["stripe_subscription_id"] == "sub_signed1"


def test_the_second_endpoint_secret_is_accepted_while_rolling(world, client):
    ws = world.workspace()
    with_customer(world, ws, "cus_rolling")
    evt = sub_event("customer.subscription.created", "cus_rolling")
    resp = post_event(client, evt, secret=WEBHOOK_SECRETS[1])
    assert resp.get_json() == {"outcome": "applied"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Stripe-Signature": ""},
        {"Stripe-Signature": "t=123"},
        {"Stripe-Signature": "v1=abcdef"},
        {"Stripe-Signature": "garbage"},
    ],
    ids=["missing", "empty", "no-v1", "no-t", "garbage"],
)
def test_a_missing_or_malformed_signature_is_refused(world, client, headers):
    ws = world.workspace()
    with_customer(world, ws, "cus_nosig")
    evt = sub_event("customer.subscription.created", "cus_nosig")
    resp = client.post(
        "/api/v1/stripe/webhook", data=json.dumps(evt).encode(), headers=headers
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "bad_signature"
    assert recorded(world, evt["id"]) == []
    assert billing(world, ws)["plan"] == "free"


def test_a_signature_by_another_secret_is_refused(world, client):
    ws = world.workspace()
    with_customer(world, ws, "cus_badsig")
    evt = sub_event("customer.subscription.created", "cus_badsig")
    resp = post_event(client, evt, secret="whsec_notoursatall0000")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "bad_signature"
    assert recorded(world, evt["id"]) == []


@pytest.mark.parametrize("offset", [-301, 301, -86400, 86400], ids=str)
def test_a_timestamp_outside_the_tolerance_is_refused(world, client, offset):
    """Stale (a replayed delivery) and future (a clock far off) alike."""
    ws = world.workspace()
    with_customer(world, ws, "cus_stale")
    evt = sub_event("customer.subscription.created", "cus_stale")
    resp = post_event(client, evt, timestamp=int(time.time()) + offset)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "bad_signature"
    assert recorded(world, evt["id"]) == []


def test_a_timestamp_inside_the_tolerance_is_accepted(world, client):
    ws = world.workspace()
    with_customer(world, ws, "cus_fresh")
    evt = sub_event("customer.subscription.created", "cus_fresh")
    resp = post_event(client, evt, timestamp=int(time.time()) - 200)
    assert resp.get_json() == {"outcome": "applied"}


def test_a_re_serialised_body_is_refused(world, client):
    """The signature covers the raw bytes: the same JSON spelt differently fails."""
    ws = world.workspace()
    with_customer(world, ws, "cus_reser")
    evt = sub_event("customer.subscription.created", "cus_reser")
    original = json.dumps(evt).encode()
    header = sign(original, WEBHOOK_SECRETS[0])
    reserialised = json.dumps(json.loads(original), indent=2, sort_keys=True).encode()
    assert reserialised != original and json.loads(reserialised) == evt
    resp = client.post(
        "/api/v1/stripe/webhook",
        data=reserialised,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    assert recorded(world, evt["id"]) == []


# -- applied once, in order, to the right workspace ------------------------------


def test_the_same_event_ten_times_at_once_is_applied_once(world, hook_app):
    ws = world.workspace()
    with_customer(world, ws, "cus_tenfold")
    evt = sub_event("customer.subscription.created", "cus_tenfold", price="cajex-pro")
    payload = json.dumps(evt).encode()
    header = sign(payload, WEBHOOK_SECRETS[0])
    outcomes, barrier = [], threading.Barrier(10)

    def deliver():
        c = hook_app.test_client()
        barrier.wait()
        resp = c.post(
            "/api/v1/stripe/webhook",
            data=payload,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        outcomes.append((resp.status_code, resp.get_json()["outcome"]))

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == [(200, "applied")] + [(200, "duplicate")] * 9
    assert len(recorded(world, evt["id"])) == 1
    changes = world.admin.execute(
        "select count(*) as n from cajex.audit_log where workspace_id = %s"
        " and action = 'billing.plan_changed'",
        (ws.id,),
    ).fetchone()["n"]
    assert changes == 1 and billing(world, ws)["plan"] == "pro"


def test_updates_delivered_newest_first_never_move_backwards(world, client):
    ws = world.workspace()
    with_customer(world, ws, "cus_order")
    now = int(time.time())
    first = sub_event("customer.subscription.updated", "cus_order", 3, created=now - 20)
    second = sub_event(
        "customer.subscription.updated", "cus_order", 5, created=now - 10
    )
    third = sub_event(
        "customer.subscription.updated", "cus_order", 7, price="cajex-team", created=now
    )
    outcomes = [
        post_event(client, e).get_json()["outcome"] for e in (third, second, first)
    ]
    assert outcomes == ["applied", "stale", "stale"]
    row = billing(world, ws)
    assert row["seats_paid"] == 7 and row["plan"] == "team"
    assert [r["outcome"] for r in recorded(world, second["id"])] == ["stale"]


def test_an_event_for_another_workspaces_customer_changes_only_that_workspace(
    world, client
):
    a, b = world.workspace(), world.workspace()
    with_customer(world, a, "cus_alpha")
    with_customer(world, b, "cus_bravo")
    evt = sub_event("customer.subscription.created", "cus_bravo", 4, price="cajex-pro")
    # Metadata naming workspace a is never trusted: the customer decides.
    evt["data"]["object"]["metadata"] = {"workspace_id": str(a.id)}
    assert post_event(client, evt).get_json() == {"outcome": "applied"}
    assert billing(world, b)["plan"] == "pro"
    row_a = billing(world, a)
    assert row_a["plan"] == "free" and row_a["stripe_subscription_id"] is None
    assert recorded(world, evt["id"])[0]["workspace_id"] == b.id


def test_an_event_for_an_unmapped_customer_changes_nothing(world, client):
    ws = world.workspace()
    before = billing(world, ws)
    evt = sub_event(
        "customer.subscription.created", "cus_nobodys", 9, price="cajex-team"
    )
    assert post_event(client, evt).get_json() == {"outcome": "unmapped"}
    assert billing(world, ws) == before
    assert recorded(world, evt["id"])[0]["workspace_id"] is None


# -- Checkout and the customer portal, as Stripe reports them ------------------


def test_checkout_completion_subscribes_the_workspace(world, client):
    ws = world.workspace()
    world.member(ws)
    with_customer(world, ws, "cus_checkout")
    session = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": "cus_checkout",
        "subscription": "sub_checkout",
        "client_reference_id": str(ws.id),
        "metadata": {"workspace_id": str(ws.id), "plan": "pro"},
    }
    assert post_event(
        client, event("checkout.session.completed", session)
    ).get_json() == {"outcome": "applied"}
    row = billing(world, ws)
    assert row["plan"] == "pro" and row["stripe_subscription_id"] == "sub_checkout"
    created = sub_event(
        "customer.subscription.created", "cus_checkout", 2, price="cajex-pro"
    )
    assert post_event(client, created).get_json() == {"outcome": "applied"}
    assert billing(world, ws)["seats_paid"] == 2


def test_a_second_checkout_does_not_replace_a_live_subscription(world, client):
    ws = world.workspace()
    with_customer(world, ws, "cus_twice")
    post_event(client, sub_event("customer.subscription.created", "cus_twice", 1))
    session = {
        "id": "cs_test_3",
        "object": "checkout.session",
        "customer": "cus_twice",
        "subscription": "sub_another",
        "client_reference_id": str(ws.id),
        "metadata": {"plan": "enterprise"},
    }
    outcome = post_event(
        client, event("checkout.session.completed", session)
    ).get_json()
    assert outcome == {"outcome": "ignored"}
    row = billing(world, ws)
    assert row["plan"] == "basic" and row["stripe_subscription_id"] == "sub_twice"


def test_checkout_naming_another_workspace_is_not_applied(world, client):
    a, b = world.workspace(), world.workspace()
    with_customer(world, a, "cus_ckoa")
    session = {
        "id": "cs_test_2",
        "object": "checkout.session",
        "customer": "cus_ckoa",
        "subscription": "sub_ckoa",
        "client_reference_id": str(b.id),
        "metadata": {"plan": "enterprise"},
    }
    assert post_event(
        client, event("checkout.session.completed", session)
    ).get_json() == {"outcome": "ignored"}
    assert billing(world, a)["plan"] == "free" and billing(world, b)["plan"] == "free"


def test_portal_plan_switch_cancel_and_end(world, client):
    """What Stripe sends when the owner uses the customer portal."""
    ws = world.workspace()
    with_customer(world, ws, "cus_portal")
    now = int(time.time())
    post_event(
        client,
        sub_event("customer.subscription.created", "cus_portal", 1, created=now - 30),
    )
    switched = sub_event(
        "customer.subscription.updated",
        "cus_portal",
        1,
        price="cajex-team",
        created=now - 20,
    )
    assert post_event(client, switched).get_json() == {"outcome": "applied"}
    assert billing(world, ws)["plan"] == "team"
    cancelled = sub_event(
        "customer.subscription.updated",
        "cus_portal",
        1,
        price="cajex-team",
        created=now - 10,
        cancel_at_period_end=True,
    )
    post_event(client, cancelled)
    row = billing(world, ws)
    assert row["cancel_at_period_end"] and row["cancel_reason"] == "owner"
    ended = sub_event(
        "customer.subscription.deleted",
        "cus_portal",
        1,
        price="cajex-team",
        status="canceled",
        created=now,
    )
    assert post_event(client, ended).get_json() == {"outcome": "applied"}
    row = billing(world, ws)
    assert row["plan"] == "free" and row["subscription_status"] == "canceled"
    assert not row["cancel_at_period_end"]
    history = world.admin.execute(
        "select details ->> 'to' as plan from cajex.audit_log where workspace_id = %s"
        " and action = 'billing.plan_changed' order by id",
        (ws.id,),
    ).fetchall()
    assert [h["plan"] for h in history] == ["basic", "team", "free"]


# -- payment failure and the grace period ---------------------------------------


def test_a_failed_payment_opens_a_grace_period_then_limits_without_losing_data(
    world, client
):
    ws = world.workspace()
    world.member(ws)
    with_customer(world, ws, "cus_unpaid")
    post_event(client, sub_event("customer.subscription.created", "cus_unpaid", 2))
    failed = event(
        "invoice.payment_failed",
        {"object": "invoice", "customer": "cus_unpaid", "subscription": "sub_unpaid"},
    )
    assert post_event(client, failed).get_json() == {"outcome": "applied"}
    row = billing(world, ws)
    assert row["payment_failed_at"] is not None
    assert row["grace_until"] - row["payment_failed_at"] == datetime.timedelta(days=7)

    def invite():
        with world.as_user(ws.owner, ws) as (conn, _):
            return conn.execute(
                "select outcome from cajex.invite_member(%s, 'member', %s, 'http://x')",
                (f"new{time.monotonic_ns()}@example.test", bytes(32)),
            ).fetchone()["outcome"]

    def ai_allowed():
        with world.as_user(ws.owner, ws) as (conn, _):
            return conn.execute(
                "select cajex.workspace_has_feature('ai') as ok"
            ).fetchone()["ok"]

    # Inside the grace period nothing is limited.
    assert invite() == "invited" and ai_allowed()
    # The grace period ends.
    world.admin.execute(
        "update cajex.workspace_billing set grace_until = now() - interval '1 second'"
        " where workspace_id = %s",
        (ws.id,),
    )
    assert invite() == "over_seat_limit" and not ai_allowed()
    with world.as_user(ws.owner, ws) as (conn, _):
        members = conn.execute(
            "select count(*) as n from cajex.memberships"
        ).fetchone()["n"]
    assert members == 2 and billing(world, ws)["seats_used"] == 2
    paid = event(
        "invoice.paid",
        {"object": "invoice", "customer": "cus_unpaid", "subscription": "sub_unpaid"},
    )
    assert post_event(client, paid).get_json() == {"outcome": "applied"}
    assert invite() == "invited" and ai_allowed()


def test_a_payment_failure_of_another_workspace_limits_only_that_one(world, client):
    a, b = world.workspace(), world.workspace()
    with_customer(world, a, "cus_paya")
    with_customer(world, b, "cus_payb")
    failed = event(
        "invoice.payment_failed", {"object": "invoice", "customer": "cus_payb"}
    )
    post_event(client, failed)
    assert billing(world, a)["payment_failed_at"] is None
    assert billing(world, b)["payment_failed_at"] is not None


def test_a_subscription_ended_by_stripe_lifts_sso_enforcement_it_no_longer_pays_for(
    world, client
):
    """Stripe can end an Enterprise subscription whatever our plan-change
    checks say; a workspace enforcing SSO would then lock everyone out (SSO
    sign-in needs the plan). Enforcement is lifted, and the audit log says so."""
    ws, other = world.workspace(), world.workspace(plan="enterprise")
    with_customer(world, ws, "cus_ssoend")
    now = int(time.time())
    created = sub_event(
        "customer.subscription.created",
        "cus_ssoend",
        1,
        price="cajex-enterprise",
        created=now - 30,
    )
    assert post_event(client, created).get_json() == {"outcome": "applied"}
    world.admin.execute(
        "update cajex.workspaces set sso_enforced = true where id = any(%s)",
        ([ws.id, other.id],),
    )
    with world.as_user(ws.owner, ws) as (_, opened):
        assert opened.workspace_id is None  # a password-style session, refused
    ended = sub_event(
        "customer.subscription.deleted",
        "cus_ssoend",
        1,
        price="cajex-enterprise",
        status="canceled",
        created=now,
    )
    assert post_event(client, ended).get_json() == {"outcome": "applied"}
    rows = world.admin.execute(
        "select id, plan, sso_enforced from cajex.workspaces where id = any(%s)",
        ([ws.id, other.id],),
    ).fetchall()
    assert {r["id"]: (r["plan"], r["sso_enforced"]) for r in rows} == {
        ws.id: ("free", False),
        other.id: ("enterprise", True),
    }
    with world.as_user(ws.owner, ws) as (_, opened):
        assert opened.workspace_id == ws.id
    lifted = world.admin.execute(
        "select workspace_id, details from cajex.audit_log"
        " where action = 'sso.enforcement_lifted'"
    ).fetchall()
    assert lifted == [
        {"workspace_id": ws.id, "details": {"reason": "plan", "plan": "free"}}
    ]
