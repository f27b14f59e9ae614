"""Billing stays exact when things go wrong: a seat sync whose answer was
lost, two syncs of one workspace at once, seats changed during Checkout,
repeated owner actions under Stripe's idempotency keys, a plan change that
the locked check refuses or Stripe fails, and a failed job with a pending
twin. Against localstripe; where it cannot show a behaviour (it ignores
Idempotency-Key, it sends no Checkout events) the input is built as Stripe
sends it."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import stripe
from cajex.web.middleware import close_pools
from test_billing_stripe import billing_row, pending_syncs, stripe_sub, subscribe

from cajex import billing
from cajex.billing import stripe_api
from cajex.testing.billing import (
    PRICES,
    IdempotencyProxy,
    attach_card,
    event,
    post_event,
    run_jobs,
)


def _plan(world, ws) -> str:
    return world.admin.execute(
        "select plan from cajex.workspaces where id = %s", (ws.id,)
    ).fetchone()["plan"]


def _retry_pending(world, ws, settings) -> None:
    """Run the workspace's pending syncs now, failed ones included (their
    backoff skipped), until none is left."""
    for _ in range(3):
        if pending_syncs(world, ws) == 0:
            return
        world.admin.execute(
            "update cajex.outbox set started_at = null, enqueued_at = null"
            " where workspace_id = %s and done_at is null",
            (ws.id,),
        )
        run_jobs(settings, world)


# -- 1. the seat sync ------------------------------------------------------------


def test_a_lost_answer_then_a_change_back_still_bills_the_seat_count(
    world, billing_settings, billing_app, monkeypatch
):
    """Stripe applied 1 seat but the answer was lost, then the member came
    back: the count (2) equals the stale recorded quantity, yet Stripe bills 1."""
    ws = world.workspace()
    m = world.member(ws)
    row = subscribe(world, ws, billing_settings, billing_app)
    sub_id = row["stripe_subscription_id"]
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.remove_member(%s)", (m.id,))
    real = stripe_api.set_quantity

    def answer_lost(*args, **kwargs):
        real(*args, **kwargs)
        raise stripe.APIConnectionError("the answer was lost after Stripe applied it")

    monkeypatch.setattr(stripe_api, "set_quantity", answer_lost)
    with pytest.raises(stripe.APIConnectionError):
        run_jobs(billing_settings, world)
    monkeypatch.setattr(stripe_api, "set_quantity", real)
    assert stripe_sub(billing_settings, sub_id)["quantity"] == 1
    assert billing_row(world, ws)["seats_paid"] == 2  # not recorded

    world.member(ws, m)
    _retry_pending(world, ws, billing_settings)
    after = billing_row(world, ws)
    assert pending_syncs(world, ws) == 0
    assert after["seats_used"] == 2 and after["seats_paid"] == 2
    assert after["synced_sequence"] == after["seat_sequence"]
    assert stripe_sub(billing_settings, sub_id)["quantity"] == 2


def test_two_syncs_of_one_workspace_run_one_after_the_other(
    world, billing_settings, billing_app, monkeypatch
):
    """While one sync waits for Stripe a member joins and the new row's job
    starts: it waits, then sends the newer count; the older never lands last."""
    from cajex.jobs import registry
    from cajex.jobs.billing import sync_seats

    from cajex import db

    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    sub_id = row["stripe_subscription_id"]
    world.member(ws)  # 2 seats: the first job's count
    real = stripe_api.set_quantity
    pool = db.make_pool(billing_settings.worker_url, 1, 2, name="test-second-sync")
    second: dict = {}

    def run_second(job_id: int) -> None:
        ctx = registry.JobContext(
            job_id, "billing.sync_seats", str(ws.id), {}, 1, pool, billing_settings
        )
        sync_seats(ctx)
        second["done"] = True

    def slow_first_call(*args, **kwargs):
        if not second:
            world.member(ws)  # 3 seats, committed; a new pending row
            job = world.admin.execute(
                "select id from cajex.outbox where workspace_id = %s"
                " and kind = 'billing.sync_seats' and done_at is null"
                " and started_at is null",
                (ws.id,),
            ).fetchone()["id"]
            second["thread"] = threading.Thread(target=run_second, args=(job,))
            second["thread"].start()
            # Without serialising, the second job finishes meanwhile.
            second["thread"].join(2)
        return real(*args, **kwargs)

    monkeypatch.setattr(stripe_api, "set_quantity", slow_first_call)
    try:
        assert run_jobs(billing_settings, world) == ["done"]
        second["thread"].join(30)
    finally:
        pool.close()
    assert second.get("done")
    after = billing_row(world, ws)
    assert after["seats_used"] == 3 and after["seats_paid"] == 3
    assert stripe_sub(billing_settings, sub_id)["quantity"] == 3


# -- 3. seats changed while the owner is in Checkout ---------------------------


def test_a_member_added_during_checkout_is_billed(
    world, billing_settings, billing_app, stripe_counter
):
    ws = world.workspace()
    client = billing_app.test_client()
    world.login(client, ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "basic"})
    assert "checkout_url" in resp.get_json()
    sent = stripe_counter.writes("/v1/checkout/sessions")[0]["body"]
    assert "line_items[0][quantity]=1" in sent
    customer = billing_row(world, ws)["stripe_customer_id"]
    # While the owner types their card number, a member joins: no
    # subscription yet, so the seat trigger queues nothing.
    world.member(ws)
    assert pending_syncs(world, ws) == 0

    # Stripe creates the subscription Checkout described (1 seat) and sends
    # its events (localstripe has no Checkout: built as Stripe sends them).
    attach_card(billing_settings.stripe_api_base, customer)
    sub = stripe_api.create_subscription(
        billing_settings, customer, PRICES["basic"], 1, str(ws.id), f"co-{ws.id}"
    )
    session = {
        "id": "cs_test_gap",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": customer,
        "subscription": sub["subscription_id"],
        "client_reference_id": str(ws.id),
        "metadata": {"workspace_id": str(ws.id), "plan": "basic"},
    }
    hook = billing_app.test_client()
    applied = {"outcome": "applied"}
    assert (
        post_event(hook, event("checkout.session.completed", session)).get_json()
        == applied
    )
    raw = (
        stripe_api.client(billing_settings)
        .v1.subscriptions.retrieve(sub["subscription_id"])
        .to_dict()
    )
    assert (
        post_event(hook, event("customer.subscription.created", raw)).get_json()
        == applied
    )
    assert billing_row(world, ws)["seats_paid"] == 1
    assert pending_syncs(world, ws) == 1
    run_jobs(billing_settings, world)
    row = billing_row(world, ws)
    assert row["seats_used"] == 2 and row["seats_paid"] == 2
    assert pending_syncs(world, ws) == 0
    assert stripe_sub(billing_settings, sub["subscription_id"])["quantity"] == 2


def test_checkout_at_the_seat_count_makes_no_quantity_update(
    world, billing_settings, billing_app, stripe_counter
):
    """Checkout's completion queues a sync (the quantity is not in that
    event); the job finds Stripe billing the count and writes nothing."""
    ws = world.workspace()
    world.member(ws)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "basic"})
    assert "checkout_url" in resp.get_json()
    customer = billing_row(world, ws)["stripe_customer_id"]
    attach_card(billing_settings.stripe_api_base, customer)
    sub = stripe_api.create_subscription(
        billing_settings, customer, PRICES["basic"], 2, str(ws.id), f"co-{ws.id}"
    )
    session = {
        "id": "cs_test_even",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": customer,
        "subscription": sub["subscription_id"],
        "client_reference_id": str(ws.id),
        "metadata": {"workspace_id": str(ws.id), "plan": "basic"},
    }
    hook = billing_app.test_client()
    outcome = post_event(hook, event("checkout.session.completed", session))
    assert outcome.get_json() == {"outcome": "applied"}
    assert pending_syncs(world, ws) == 1
    stripe_counter.reset()
    assert run_jobs(billing_settings, world) == ["done"]
    assert stripe_counter.writes() == []
    row = billing_row(world, ws)
    assert row["seats_paid"] == 2 and row["synced_sequence"] == row["seat_sequence"]
    assert pending_syncs(world, ws) == 0


def test_a_subscription_recorded_at_the_seat_count_queues_no_sync(
    world, billing_settings, billing_app
):
    ws = world.workspace()
    world.member(ws)
    subscribe(world, ws, billing_settings, billing_app)
    assert pending_syncs(world, ws) == 0


# -- 2. idempotency keys of owner actions --------------------------------------


@pytest.fixture
def idempotent(stripe_counter):
    """Stripe's Idempotency-Key behaviour, in front of the counting proxy."""
    proxy = IdempotencyProxy(stripe_counter.server.server_address[1])
    yield proxy
    proxy.close()


@pytest.fixture
def idem_settings(billing_settings, idempotent):
    return dataclasses.replace(billing_settings, stripe_api_base=idempotent.url)


@pytest.fixture
def idem_app(idem_settings):
    from cajex.web import create_app

    application = create_app(idem_settings, {"TESTING": True})
    yield application
    close_pools(application)


def test_cancel_keep_cancel_cancels_in_stripe(
    world, idem_settings, idem_app, idempotent
):
    ws = world.workspace()
    sub_id = subscribe(world, ws, idem_settings, idem_app)["stripe_subscription_id"]
    client = idem_app.test_client()
    world.login(client, ws.owner)
    for at_period_end in (True, False, True):
        resp = client.post(
            f"/w/{ws.slug}/api/v1/billing/cancel", json={"at_period_end": at_period_end}
        )
        assert resp.status_code == 200, resp.get_json()
        assert (
            stripe_sub(idem_settings, sub_id)["cancel_at_period_end"] is at_period_end
        )
    assert idempotent.replayed == []
    assert billing_row(world, ws)["cancel_at_period_end"] is True


def test_a_plan_chosen_again_moves_stripe_again(
    world, idem_settings, idem_app, idempotent
):
    ws = world.workspace()
    sub_id = subscribe(world, ws, idem_settings, idem_app)["stripe_subscription_id"]
    client = idem_app.test_client()
    world.login(client, ws.owner)
    for plan in ("pro", "team", "pro", "basic"):
        resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": plan})
        assert resp.status_code == 200, resp.get_json()
        assert _plan(world, ws) == plan
        assert stripe_sub(idem_settings, sub_id)["plan"] == plan
    assert idempotent.replayed == []


def test_the_proxy_replays_a_repeated_key_as_stripe_does(idem_settings, idempotent):
    """The fixture itself: a repeated key is answered, not executed again."""
    customer = stripe_api.create_customer(idem_settings, "ws-proxy-check", "proxy")
    attach_card(idem_settings.stripe_api_base, customer)
    sub = stripe_api.create_subscription(
        idem_settings, customer, PRICES["basic"], 1, "ws-proxy-check", "k-proxy-1"
    )
    args = (idem_settings, sub["subscription_id"])
    stripe_api.set_cancel_at_period_end(*args, True, "k-proxy-2")
    stripe_api.set_cancel_at_period_end(*args, False, "k-proxy-3")
    replay = stripe_api.set_cancel_at_period_end(*args, True, "k-proxy-2")
    assert replay["cancel_at_period_end"] is True  # the first answer
    assert stripe_sub(*args)["cancel_at_period_end"] is False  # nothing done
    assert [k for k, _ in idempotent.replayed] == ["k-proxy-2"]


# -- 4. the plan change: the locked check before Stripe --------------------------


def test_a_downgrade_refused_under_the_lock_leaves_stripe_untouched(
    world, billing_settings, billing_app, stripe_counter, monkeypatch
):
    """A member joins after the first (unlocked) look at the limits and
    before Stripe is asked: the locked check refuses, Stripe is not moved."""
    ws = world.workspace(plan="pro")
    for _ in range(9):
        world.member(ws)
    sub_id = subscribe(world, ws, billing_settings, billing_app, plan="pro")[
        "stripe_subscription_id"
    ]
    stripe_counter.reset()
    real = billing.price_for

    def someone_joins_meanwhile(settings, plan):
        world.member(ws)  # 11 seats: Basic allows 10
        return real(settings, plan)

    monkeypatch.setattr(billing, "price_for", someone_joins_meanwhile)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "basic"})
    assert resp.status_code == 402, resp.get_json()
    assert resp.get_json()["error"]["code"] == "plan_limit"
    assert stripe_counter.writes() == []
    assert _plan(world, ws) == "pro"
    assert stripe_sub(billing_settings, sub_id)["plan"] == "pro"


def test_a_plan_change_stripe_fails_is_not_recorded(
    world, billing_settings, billing_app, monkeypatch
):
    ws = world.workspace()
    sub_id = subscribe(world, ws, billing_settings, billing_app)[
        "stripe_subscription_id"
    ]

    def stripe_down(*args, **kwargs):
        raise stripe.APIConnectionError("Stripe is unreachable")

    monkeypatch.setattr(stripe_api, "set_price", stripe_down)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    try:
        resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "pro"})
        assert resp.status_code >= 500
    except stripe.APIConnectionError:
        pass  # propagated by the testing app: the transaction rolled back first
    assert _plan(world, ws) == "basic"
    assert stripe_sub(billing_settings, sub_id)["plan"] == "basic"


# -- 5. a failed job with a pending twin ---------------------------------------


def _claimed_sync_with_a_pending_twin(world, ws) -> int:
    world.member(ws)
    job = world.admin.execute(
        "select id from cajex.outbox where workspace_id = %s"
        " and kind = 'billing.sync_seats' and done_at is null",
        (ws.id,),
    ).fetchone()["id"]
    with world.worker_connection() as conn:
        conn.execute(
            "select * from cajex_private.claim_outbox_row(%s, '10 minutes')", (job,)
        )
    world.member(ws)  # a second, pending row with the same dedupe key
    return job


def test_a_failure_with_a_pending_twin_is_recorded_and_the_twin_syncs(
    world, billing_settings, billing_app
):
    ws = world.workspace()
    sub_id = subscribe(world, ws, billing_settings, billing_app)[
        "stripe_subscription_id"
    ]
    job = _claimed_sync_with_a_pending_twin(world, ws)
    with world.worker_connection() as conn:
        conn.execute("select cajex_private.finish_outbox_job(%s, 'Stripe 503')", (job,))
    failed = world.admin.execute(
        "select done_at, last_error from cajex.outbox where id = %s", (job,)
    ).fetchone()
    assert failed["done_at"] is not None
    assert failed["last_error"] == "superseded: Stripe 503"
    assert pending_syncs(world, ws) == 1
    assert run_jobs(billing_settings, world) == ["done"]
    assert stripe_sub(billing_settings, sub_id)["quantity"] == 3


def test_a_failure_without_a_twin_goes_back_to_the_relay(
    world, billing_settings, billing_app
):
    ws = world.workspace()
    subscribe(world, ws, billing_settings, billing_app)
    world.member(ws)
    job = world.admin.execute(
        "select id from cajex.outbox where workspace_id = %s"
        " and kind = 'billing.sync_seats' and done_at is null",
        (ws.id,),
    ).fetchone()["id"]
    with world.worker_connection() as conn:
        conn.execute(
            "select * from cajex_private.claim_outbox_row(%s, '10 minutes')", (job,)
        )
        conn.execute("select cajex_private.finish_outbox_job(%s, 'Stripe 503')", (job,))
    row = world.admin.execute(
        "select done_at, started_at, last_error, run_after > now() as later"
        " from cajex.outbox where id = %s",
        (job,),
    ).fetchone()
    assert row == {
        "done_at": None,
        "started_at": None,
        "last_error": "Stripe 503",
        "later": True,
    }


def test_the_runner_records_a_failure_with_a_pending_twin(
    world, billing_settings, billing_app, monkeypatch
):
    """Through the real runner: the job's own error is raised, not a 23505."""
    ws = world.workspace()
    subscribe(world, ws, billing_settings, billing_app)
    world.member(ws)

    def stripe_503(*args, **kwargs):
        world.member(ws)  # a change meanwhile: the pending twin
        raise stripe.APIConnectionError("Stripe 503")

    monkeypatch.setattr(stripe_api, "set_quantity", stripe_503)
    with pytest.raises(stripe.APIConnectionError):
        run_jobs(billing_settings, world)
    rows = world.admin.execute(
        "select done_at is not null as done, last_error from cajex.outbox"
        " where workspace_id = %s and kind = 'billing.sync_seats' order by id",
        (ws.id,),
    ).fetchall()
    assert rows[-2]["done"] and rows[-2]["last_error"].startswith("superseded: ")
    assert not rows[-1]["done"] and rows[-1]["last_error"] is None
