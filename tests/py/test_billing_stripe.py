"""Billing against localstripe (a real process on loopback) with the official
stripe library: customers and subscriptions, seat changes reaching the
subscription's quantity, coalescing, cancellation, deletion follow-up and a
crash between the membership commit and the Stripe call."""

from __future__ import annotations

import stripe

from cajex.billing import stripe_api
from cajex.testing.billing import PRICES, attach_card, run_jobs


def stripe_sub(settings, sub_id: str) -> dict:
    """The subscription as localstripe holds it (read back from the server)."""
    return stripe_api.retrieve_subscription(settings, sub_id)


def billing_row(world, ws) -> dict:
    return world.admin.execute(
        "select * from cajex.workspace_billing where workspace_id = %s", (ws.id,)
    ).fetchone()


def subscribe(world, ws, billing_settings, billing_app, plan: str = "basic") -> dict:
    """Customer with a card on file, then the owner picks a paid plan."""
    customer = stripe_api.create_customer(billing_settings, str(ws.id), ws.slug)
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.record_stripe_customer(%s)", (customer,))
    attach_card(billing_settings.stripe_api_base, customer)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": plan})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"done": True}
    return billing_row(world, ws)


def pending_syncs(world, ws) -> int:
    return world.admin.execute(
        "select count(*) as n from cajex.outbox where workspace_id = %s"
        " and kind = 'billing.sync_seats' and done_at is null",
        (ws.id,),
    ).fetchone()["n"]


def test_a_card_on_file_subscribes_at_the_seat_count(
    world, billing_settings, billing_app
):
    ws = world.workspace()
    world.member(ws)
    world.member(ws)
    row = subscribe(world, ws, billing_settings, billing_app)
    sub = stripe_sub(billing_settings, row["stripe_subscription_id"])
    assert sub["quantity"] == 3 and row["seats_used"] == 3
    assert sub["plan"] == "basic" and sub["status"] == "active"
    assert row["seats_paid"] == 3 and row["stripe_item_id"] == sub["item_id"]
    plan = world.admin.execute(
        "select plan from cajex.workspaces where id = %s", (ws.id,)
    ).fetchone()["plan"]
    assert plan == "basic"


def test_another_workspace_cannot_change_this_plan(
    world, billing_settings, billing_app
):
    ws = world.workspace()
    other = world.workspace()
    member = world.member(ws)
    client = billing_app.test_client()
    world.login(client, other.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "basic"})
    assert resp.status_code == 404
    world.login(client, member)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "basic"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    assert billing_row(world, ws)["stripe_customer_id"] is None


def test_seat_changes_reach_the_quantity_in_one_update(
    world, billing_settings, billing_app, stripe_counter
):
    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    stripe_counter.reset()
    a, b, c = world.member(ws), world.member(ws), world.member(ws)
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.remove_member(%s)", (a.id,))
        conn.execute("select cajex.change_member_role(%s, 'admin')", (b.id,))
    world.admin.execute(
        "update cajex.memberships set status = 'deactivated' where workspace_id = %s and user_id = %s",
        (ws.id, c.id),
    )
    # Five changes, four of them seat changes: one pending sync.
    assert pending_syncs(world, ws) == 1
    assert run_jobs(billing_settings, world) == ["done"]
    after = billing_row(world, ws)
    assert after["seats_used"] == 2
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])["quantity"] == 2
    updates = stripe_counter.writes()
    assert len(updates) == 1
    assert updates[0]["idempotency_key"] == f"seats-{ws.id}-{after['seat_sequence']}"
    assert (
        after["seats_paid"] == 2 and after["synced_sequence"] == after["seat_sequence"]
    )


def test_a_burst_of_changes_makes_one_update(
    world, billing_settings, billing_app, stripe_counter
):
    ws = world.workspace(plan="team")
    row = subscribe(world, ws, billing_settings, billing_app, plan="team")
    stripe_counter.reset()
    for _ in range(60):
        world.member(ws)
    assert pending_syncs(world, ws) == 1
    run_jobs(billing_settings, world)
    assert len(stripe_counter.writes()) == 1
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])["quantity"] == 61


def test_crash_before_the_stripe_call_recovers_exactly_once(
    world, billing_settings, billing_app, stripe_counter
):
    """The worker dies after claiming the job: the lease expires, the outbox hands
    the job over again, and the quantity is set once, to the current count."""
    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    stripe_counter.reset()
    world.member(ws)
    world.member(ws)
    job = world.admin.execute(
        "select id from cajex.outbox where workspace_id = %s and kind = 'billing.sync_seats'"
        " and done_at is null",
        (ws.id,),
    ).fetchone()["id"]
    # A worker claims the row and is killed before it reaches Stripe.
    with world.worker_connection() as conn:
        conn.execute(
            "select * from cajex_private.claim_outbox_row(%s, '10 minutes')", (job,)
        )
    # A change committed while the job is claimed starts a new pending row.
    world.member(ws)
    assert stripe_counter.writes() == []
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])["quantity"] == 1
    # Recovery: the dead worker's lease runs out.
    world.admin.execute(
        "update cajex.outbox set started_at = now() - interval '1 hour',"
        " enqueued_at = now() - interval '1 hour' where id = %s",
        (job,),
    )
    outcomes = run_jobs(billing_settings, world)
    assert sorted(outcomes) == ["done", "done"]
    assert len(stripe_counter.writes()) == 1
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])["quantity"] == 4
    assert pending_syncs(world, ws) == 0


def test_crash_after_the_stripe_call_repeats_the_same_request(
    world, billing_settings, billing_app, stripe_counter
):
    """Stripe was updated but the worker died before recording it: the retry sends
    the same idempotency key and the same absolute quantity."""
    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    stripe_counter.reset()
    world.member(ws)
    run_jobs(billing_settings, world)
    # Forget the recording, as if the worker had died after Stripe answered.
    world.admin.execute(
        "update cajex.workspace_billing set seats_paid = 1, synced_sequence = 0"
        " where workspace_id = %s",
        (ws.id,),
    )
    world.admin.execute(
        "insert into cajex.outbox (workspace_id, kind, dedupe_key) values (%s, 'billing.sync_seats', 'seats')",
        (ws.id,),
    )
    run_jobs(billing_settings, world)
    updates = stripe_counter.writes()
    assert (
        len(updates) == 2
        and updates[0]["idempotency_key"] == updates[1]["idempotency_key"]
    )
    assert updates[0]["body"] == updates[1]["body"]
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])["quantity"] == 2


def test_cancel_at_period_end_reaches_stripe(world, billing_settings, billing_app):
    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    resp = client.post(
        f"/w/{ws.slug}/api/v1/billing/cancel", json={"at_period_end": True}
    )
    assert resp.status_code == 200
    assert resp.get_json()["subscription"]["cancel_at_period_end"] is True
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])[
        "cancel_at_period_end"
    ]
    assert billing_row(world, ws)["cancel_reason"] == "owner"
    resp = client.post(
        f"/w/{ws.slug}/api/v1/billing/cancel", json={"at_period_end": False}
    )
    assert resp.status_code == 200
    assert not stripe_sub(billing_settings, row["stripe_subscription_id"])[
        "cancel_at_period_end"
    ]


def test_another_workspace_cannot_cancel(world, billing_settings, billing_app):
    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    other = world.workspace()
    client = billing_app.test_client()
    world.login(client, other.owner)
    resp = client.post(
        f"/w/{ws.slug}/api/v1/billing/cancel", json={"at_period_end": True}
    )
    assert resp.status_code == 404
    assert not stripe_sub(billing_settings, row["stripe_subscription_id"])[
        "cancel_at_period_end"
    ]


def test_a_paid_plan_change_moves_the_price(world, billing_settings, billing_app):
    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "pro"})
    assert resp.status_code == 200
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])["plan"] == "pro"
    history = client.get(f"/w/{ws.slug}/api/v1/billing").get_json()["history"]
    assert [(h["from"], h["to"]) for h in history[:2]] == [
        ("basic", "pro"),
        ("free", "basic"),
    ]


def test_deleting_the_workspace_ends_the_subscription_and_restoring_keeps_it(
    world, billing_settings, billing_app
):
    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.delete_workspace(%s)", (ws.slug.title(),))
    run_jobs(billing_settings, world, ("billing.workspace_deleted",))
    assert stripe_sub(billing_settings, row["stripe_subscription_id"])[
        "cancel_at_period_end"
    ]
    assert billing_row(world, ws)["cancel_reason"] == "workspace_deleted"
    with world.as_user(ws.owner) as (conn, _):
        conn.execute("select cajex.restore_workspace(%s)", (ws.id,))
    run_jobs(billing_settings, world, ("billing.workspace_restored",))
    assert not stripe_sub(billing_settings, row["stripe_subscription_id"])[
        "cancel_at_period_end"
    ]
    assert billing_row(world, ws)["cancel_reason"] is None


def test_localstripe_knows_every_configured_price(billing_settings):
    client = stripe_api.client(billing_settings)
    for plan_id in PRICES.values():
        assert client.v1.plans.retrieve(plan_id).id == plan_id
    try:
        client.v1.plans.retrieve("cajex-nonexistent")
    except stripe.InvalidRequestError as exc:
        assert exc.http_status == 404
    else:
        raise AssertionError("an unknown plan was found")


def test_localstripe_webhooks_reach_the_endpoint_signed(
    world, billing_settings, billing_app
):
    """localstripe itself signs and delivers subscription events to the app
    served on loopback: created applies the plan, deleted returns to Free."""
    import threading
    import time
    import urllib.parse
    import urllib.request

    from werkzeug.serving import make_server

    from cajex.testing.billing import WEBHOOK_SECRETS

    server = make_server("127.0.0.1", 0, billing_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{server.server_port}/api/v1/stripe/webhook"
        form = urllib.parse.urlencode(
            {
                "url": hook,
                "secret": WEBHOOK_SECRETS[1],
                "events[0]": "customer.subscription.created",
                "events[1]": "customer.subscription.deleted",
            }
        ).encode()
        base = billing_settings.stripe_api_base
        config_url = f"{base}/_config/webhooks/cajex-{server.server_port}"
        urllib.request.urlopen(config_url, form)  # noqa: S310  (loopback http)

        ws = world.workspace()
        world.member(ws)
        customer = stripe_api.create_customer(billing_settings, str(ws.id), ws.slug)
        with world.as_user(ws.owner, ws) as (conn, _):
            conn.execute("select cajex.record_stripe_customer(%s)", (customer,))
        attach_card(base, customer)
        sub = stripe_api.create_subscription(
            billing_settings, customer, PRICES["pro"], 2, str(ws.id), f"hook-{ws.id}"
        )

        def wait_for(predicate):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                row = billing_row(world, ws)
                if predicate(row):
                    return row
                time.sleep(0.2)
            raise AssertionError(f"no webhook applied: {row}")

        row = wait_for(lambda r: r["stripe_subscription_id"] == sub["subscription_id"])
        assert row["seats_paid"] == 2 and row["subscription_status"] == "active"
        plan = world.admin.execute(
            "select plan from cajex.workspaces where id = %s", (ws.id,)
        ).fetchone()["plan"]
        assert plan == "pro"

        stripe_api.client(billing_settings).v1.subscriptions.cancel(
            sub["subscription_id"]
        )
        row = wait_for(lambda r: r["subscription_status"] == "canceled")
        plan = world.admin.execute(
            "select plan from cajex.workspaces where id = %s", (ws.id,)
        ).fetchone()["plan"]
        assert plan == "free"
        outcomes = world.admin.execute(
            "select event_type, outcome from cajex_private.stripe_events"
            " where workspace_id = %s order by received_at",
            (ws.id,),
        ).fetchall()
        assert [(o["event_type"], o["outcome"]) for o in outcomes] == [
            ("customer.subscription.created", "applied"),
            ("customer.subscription.deleted", "applied"),
        ]
    finally:
        server.shutdown()


def test_same_second_updates_in_either_order_apply_stripes_current_state(
    world, billing_settings, billing_app
):
    """Two updates within one second cannot be ordered by time: the endpoint
    re-fetches the subscription, so the older one arriving last changes nothing."""
    import time

    from cajex.testing.billing import event, post_event, subscription_object

    ws = world.workspace()
    row = subscribe(world, ws, billing_settings, billing_app)
    for _ in range(4):
        world.member(ws)
    run_jobs(billing_settings, world)
    sub_id, customer = row["stripe_subscription_id"], row["stripe_customer_id"]
    assert stripe_sub(billing_settings, sub_id)["quantity"] == 5
    now = int(time.time()) + 1
    newer = event(
        "customer.subscription.updated",
        subscription_object(
            sub_id, customer, PRICES["basic"], 5, item_id=row["stripe_item_id"]
        ),
        created=now,
    )
    older = event(
        "customer.subscription.updated",
        subscription_object(
            sub_id, customer, PRICES["basic"], 1, item_id=row["stripe_item_id"]
        ),
        created=now,
    )
    client = billing_app.test_client()
    assert post_event(client, newer).get_json() == {"outcome": "applied"}
    assert post_event(client, older).get_json() == {"outcome": "applied"}
    assert billing_row(world, ws)["seats_paid"] == 5


def test_the_billing_page_shows_seats_paid_and_the_next_invoice(
    world, billing_settings, billing_app
):
    ws = world.workspace()
    world.member(ws)
    subscribe(world, ws, billing_settings, billing_app)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    html = client.get(f"/w/{ws.slug}/billing").get_data(as_text=True)
    assert "Billing is offline" not in html
    assert "Seats: 2 in use of 10 allowed, 2 billed." in html
    # Two Basic seats at 8.00 USD.
    assert 'id="next-invoice"' in html and "about 16.00 USD" in html
    assert "Cards and invoices" in html and "Cancel at the end of the period" in html
    body = client.get(f"/w/{ws.slug}/api/v1/billing").get_json()
    assert body["mode"] == "stripe" and body["next_invoice"]["amount_cents"] == 1600
