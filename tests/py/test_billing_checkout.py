"""Stripe Checkout, where a workspace without a card chooses a paid plan:
what the session asks Stripe for (price, quantity, workspace, and the pages
Stripe sends the customer back to), from the billing page and from the
onboarding wizard, and that nothing changes until Stripe confirms.

localstripe has no Checkout; the proxy in front of it answers Checkout
Session creation as Stripe does (cajex.testing.billing.checkout_session),
and records the request the app sent."""

from __future__ import annotations

from test_onboarding_http import CSRF, new_slug, org_form

from cajex.testing.billing import PRICES, event, form_params, post_event


def billing_row(world, workspace_id) -> dict:
    return world.admin.execute(
        "select b.*, w.plan from cajex.workspace_billing b join cajex.workspaces w"
        " on w.id = b.workspace_id where b.workspace_id = %s",
        (workspace_id,),
    ).fetchone()


def checkout_sent(stripe_counter) -> dict:
    sessions = stripe_counter.writes("/v1/checkout/sessions")
    assert len(sessions) == 1
    return form_params(sessions[0]["body"])


def complete(client, world, workspace_id, plan: str) -> None:
    """What Stripe sends when the customer has paid."""
    row = billing_row(world, workspace_id)
    session = {
        "id": "cs_test_done",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": row["stripe_customer_id"],
        "subscription": "sub_" + str(workspace_id).replace("-", "")[:16],
        "client_reference_id": str(workspace_id),
        "metadata": {"workspace_id": str(workspace_id), "plan": plan},
    }
    answer = post_event(client, event("checkout.session.completed", session))
    assert answer.get_json() == {"outcome": "applied"}


def test_the_billing_page_opens_checkout_and_stripe_returns_there(
    world, billing_settings, billing_app, stripe_counter
):
    ws = world.workspace()
    world.member(ws)
    client = billing_app.test_client()
    world.login(client, ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/billing/plan", json={"plan": "pro"})
    assert resp.status_code == 200
    assert resp.get_json()["checkout_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")

    sent = checkout_sent(stripe_counter)
    page = f"{billing_settings.public_url}/w/{ws.slug}/billing"
    assert sent["success_url"] == page + "?checkout=done"
    assert sent["cancel_url"] == page
    assert sent["mode"] == "subscription"
    assert sent["client_reference_id"] == str(ws.id)
    assert sent["line_items[0][price]"] == PRICES["pro"]
    assert sent["line_items[0][quantity]"] == "2"  # the owner and the member
    assert sent["metadata[plan]"] == "pro"
    # Nothing changes before Stripe confirms.
    assert billing_row(world, ws.id)["plan"] == "free"

    back = client.get(f"/w/{ws.slug}/billing?checkout=done")
    assert back.status_code == 200
    assert "confirms the subscription" in back.get_data(as_text=True)
    complete(client, world, ws.id, "pro")
    assert billing_row(world, ws.id)["plan"] == "pro"


def test_checkout_from_the_wizard_returns_to_the_wizard(
    world, billing_settings, billing_app, stripe_counter
):
    user = world.user()
    client = billing_app.test_client()
    world.login(client, user)
    slug = new_slug()
    resp = client.post("/onboarding/organisation", data={**org_form(slug), "csrf_token": CSRF})
    assert resp.status_code == 302

    resp = client.post("/onboarding/plan", data={"plan": "pro", "csrf_token": CSRF})
    assert resp.status_code == 303
    assert resp.headers["Location"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    ws_id = world.admin.execute(
        "select id from cajex.workspaces where slug = %s", (slug,)
    ).fetchone()["id"]
    sent = checkout_sent(stripe_counter)
    wizard = f"{billing_settings.public_url}/onboarding"
    assert sent["success_url"] == f"{wizard}/defaults?checkout=done"
    assert sent["cancel_url"] == f"{wizard}/plan"
    assert sent["client_reference_id"] == str(ws_id)
    assert billing_row(world, ws_id)["plan"] == "free"

    # Stripe sends the customer back: the wizard carries on at its next step.
    back = client.get("/onboarding/defaults?checkout=done")
    assert back.status_code == 200
    page = back.get_data(as_text=True)
    assert "confirms the subscription" in page and 'name="default_role"' in page
    complete(client, world, ws_id, "pro")
    assert billing_row(world, ws_id)["plan"] == "pro"


def test_another_persons_checkout_return_does_not_open_their_wizard(
    world, billing_settings, billing_app
):
    """The return address carries nothing of the workspace: someone else
    following it sees their own wizard (or none), not the payer's."""
    payer, other = world.user(), world.user()
    client = billing_app.test_client()
    world.login(client, payer)
    slug = new_slug()
    client.post("/onboarding/organisation", data={**org_form(slug), "csrf_token": CSRF})
    client.post("/onboarding/plan", data={"plan": "pro", "csrf_token": CSRF})

    stranger = billing_app.test_client()
    world.login(stranger, other)
    resp = stranger.get("/onboarding/defaults?checkout=done")
    assert resp.status_code in (302, 303)
    assert slug not in resp.get_data(as_text=True)
