"""Per-seat billing: plans, the Stripe quantity sync, checkout and webhooks.

Every Stripe call lives in `stripe_api`; the rules (seat counting, gates,
which event changes what) live in SQL (db/functions/500_billing.sql). With no
STRIPE_API_KEY, billing is offline: plans are chosen on the billing page,
their limits apply, and no card is asked for.
"""

from __future__ import annotations


def online(settings) -> bool:
    """Whether Stripe is configured (an API key); otherwise billing is offline."""
    return bool(settings.stripe_api_key)


def price_for(settings, plan: str) -> str | None:
    """The configured Stripe price id of `plan` (STRIPE_PRICE_<PLAN>), if any."""
    return settings.stripe_prices.get(plan)


def plan_for_price(settings, price_id: str | None) -> str | None:
    """The plan whose configured price is `price_id`; None for a price we do not sell."""
    if not price_id:
        return None
    for plan, price in settings.stripe_prices.items():
        if price == price_id:
            return plan
    return None
