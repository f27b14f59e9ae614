"""Every call cajex makes to Stripe, through the official `stripe` library.

One small module so that the surface is easy to review and to point at a
stand-in (localstripe in tests: `STRIPE_API_BASE`). Each function takes the
settings, makes one request and returns plain values.

Quirks kept in mind here:
- A price id goes where Stripe takes a price. localstripe has no Price API
  but accepts a plan id in the same place (`items[].plan`, which Stripe
  also still accepts for prices), so the subscription calls send `plan`.
- Proration: seat changes rely on Stripe's default proration behaviour,
  `create_prorations`: a seat added mid-period is charged pro rata, a seat
  removed is credited, both on the next regular invoice (no invoice is
  issued per change). The parameter is not sent: Stripe's default is the
  choice, and localstripe refuses the parameter.
- Writes carry an idempotency key chosen by the caller, so a retried job
  makes the same request, which Stripe answers from its cache.
"""

from __future__ import annotations

import functools

import stripe

from cajex import log

_logger = log.get("cajex.billing.stripe")


@functools.lru_cache(maxsize=8)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    bases = {"api": api_base} if api_base else {}
    return stripe.StripeClient(api_key, base_addresses=bases, max_network_retries=2)


def client(settings) -> stripe.StripeClient:
    if not settings.stripe_api_key:
        raise RuntimeError("billing is offline: no STRIPE_API_KEY")
    return _client(settings.stripe_api_key, settings.stripe_api_base)


def subscription_state(sub, settings) -> dict:
    """The fields of a Stripe subscription cajex keeps (see apply_stripe_event)."""
    from cajex import billing

    sub = sub if isinstance(sub, dict) else sub.to_dict()
    items = (sub.get("items") or {}).get("data") or []
    item = items[0] if items else {}
    price = item.get("price") or item.get("plan") or {}
    price_id = price.get("id") if isinstance(price, dict) else price
    customer = sub.get("customer")
    return {
        "subscription_id": sub.get("id"),
        "customer_id": customer.get("id") if isinstance(customer, dict) else customer,
        "status": sub.get("status"),
        "item_id": item.get("id"),
        "quantity": item.get("quantity"),
        "plan": billing.plan_for_price(settings, price_id),
        # Newer API versions keep the period on the item.
        "current_period_end": sub.get("current_period_end")
        or item.get("current_period_end"),
        "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
        "created": sub.get("created"),
    }


def create_customer(settings, workspace_id: str, name: str) -> str:
    """A Stripe customer for a workspace; the same one however often it is retried."""
    customer = client(settings).v1.customers.create(
        params={"name": name, "metadata": {"workspace_id": workspace_id}},
        options={"idempotency_key": f"customer-{workspace_id}"},
    )
    _logger.info("stripe.customer_created", workspace_id=workspace_id)
    return customer.id


def default_payment_method(settings, customer_id: str) -> str | None:
    """The customer's card on file, if any (then no Checkout is needed)."""
    customer = client(settings).v1.customers.retrieve(customer_id).to_dict()
    invoice_settings = customer.get("invoice_settings") or {}
    return invoice_settings.get("default_payment_method") or customer.get(
        "default_source"
    )


def create_subscription(
    settings,
    customer_id: str,
    price: str,
    quantity: int,
    workspace_id: str,
    idempotency_key: str,
) -> dict:
    """Subscribe a customer with a card on file to `price` for `quantity` seats."""
    sub = client(settings).v1.subscriptions.create(
        params={
            "customer": customer_id,
            "items": [{"plan": price, "quantity": quantity}],
            "metadata": {"workspace_id": workspace_id},
        },
        options={"idempotency_key": idempotency_key},
    )
    _logger.info("stripe.subscription_created", workspace_id=workspace_id)
    return subscription_state(sub, settings)


def retrieve_subscription(settings, subscription_id: str) -> dict:
    return subscription_state(
        client(settings).v1.subscriptions.retrieve(subscription_id), settings
    )


def set_quantity(
    settings,
    subscription_id: str,
    item_id: str,
    quantity: int,
    idempotency_key: str,
) -> dict:
    """Bill `quantity` seats from now on (Stripe's default proration, see above)."""
    sub = client(settings).v1.subscriptions.update(
        subscription_id,
        params={"items": [{"id": item_id, "quantity": quantity}]},
        options={"idempotency_key": idempotency_key},
    )
    return subscription_state(sub, settings)


def set_price(
    settings, subscription_id: str, item_id: str, price: str, idempotency_key: str
) -> dict:
    """Move the subscription's seats to another plan's price."""
    sub = client(settings).v1.subscriptions.update(
        subscription_id,
        params={"items": [{"id": item_id, "plan": price}]},
        options={"idempotency_key": idempotency_key},
    )
    return subscription_state(sub, settings)


def set_cancel_at_period_end(
    settings, subscription_id: str, cancel: bool, idempotency_key: str
) -> dict:
    """End the subscription when its period ends (or withdraw that)."""
    sub = client(settings).v1.subscriptions.update(
        subscription_id,
        params={"cancel_at_period_end": cancel},
        options={"idempotency_key": idempotency_key},
    )
    return subscription_state(sub, settings)


def create_checkout_session(
    settings,
    customer_id: str,
    price: str,
    quantity: int,
    workspace_id: str,
    plan: str,
    success_url: str,
    cancel_url: str,
) -> str:
    """A Stripe Checkout page for a new subscription; returns its URL.

    client_reference_id names the workspace: the checkout.session.completed
    webhook is applied only when it matches the customer's workspace.
    """
    session = client(settings).v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": workspace_id,
            "line_items": [{"price": price, "quantity": quantity}],
            "metadata": {"workspace_id": workspace_id, "plan": plan},
            "subscription_data": {"metadata": {"workspace_id": workspace_id}},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
    )
    return session.url


def create_portal_session(settings, customer_id: str, return_url: str) -> str:
    """A link to Stripe's customer portal (cards, invoices); returns its URL."""
    session = client(settings).v1.billing_portal.sessions.create(
        params={"customer": customer_id, "return_url": return_url}
    )
    return session.url
