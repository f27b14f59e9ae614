"""Stripe webhooks: the signature check, and the event reduced to what SQL applies.

Stripe signs `"<t>.<raw body>"` with HMAC-SHA256 under the endpoint's secret
and sends `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]` (several
v1 values while a secret is being rolled). The check runs on the raw bytes
as received: a body parsed and serialised again no longer matches. Several
endpoint secrets may be configured (STRIPE_WEBHOOK_SECRETS, comma
separated) so a secret can be rolled without dropping events. A timestamp
further than TOLERANCE from now, in either direction, is refused: a replay
of an old delivery, or a clock far off.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from cajex.billing import stripe_api

#: Seconds a signed timestamp may be from now (Stripe's own default).
TOLERANCE = 300


class SignatureError(Exception):
    """The request is not a delivery we can trust; `reason` says why (for logs)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def verify(
    raw_body: bytes,
    header: str | None,
    secrets: tuple[str, ...],
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> dict:
    """The event, if `header` signs `raw_body` under one of `secrets` and is fresh."""
    if not secrets:
        raise SignatureError("no_secret_configured")
    if not header:
        raise SignatureError("missing_signature")
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("malformed_signature")
    signed = str(timestamp).encode() + b"." + raw_body
    expected = [
        hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        for secret in secrets
    ]
    if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
        raise SignatureError("bad_signature")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            "stale_timestamp" if timestamp < now else "future_timestamp"
        )
    try:
        event = json.loads(raw_body)
    except ValueError:
        raise SignatureError("malformed_body") from None
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise SignatureError("malformed_body")
    return event


def _id(value) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


def reduce(event: dict, settings) -> tuple[str | None, dict]:
    """(customer id, the fields apply_stripe_event reads) of a verified event."""
    obj = event["data"].get("object") or {}
    kind = event.get("type", "")
    if kind.startswith("customer.subscription."):
        state = stripe_api.subscription_state(obj, settings)
        return state.pop("customer_id"), state
    if kind == "checkout.session.completed":
        return _id(obj.get("customer")), {
            "subscription_id": _id(obj.get("subscription")),
            "client_reference_id": obj.get("client_reference_id"),
            "plan": (obj.get("metadata") or {}).get("plan"),
        }
    if kind.startswith("invoice."):
        return _id(obj.get("customer")), {
            "subscription_id": _id(obj.get("subscription"))
        }
    return _id(obj.get("customer")), {}


def apply(conn, event: dict, settings) -> str:
    """Apply a verified event once (cajex_private.apply_stripe_event); the outcome.

    With Stripe configured, a subscription event's state is re-fetched from
    Stripe rather than read from the event: whatever order events arrive in
    (even two within one second, which their timestamps cannot order), what
    is applied is the subscription as it is now. The event still decides
    which workspace (by its customer) and whether it is stale. Costs one
    Stripe read per subscription event; a failed read answers 500 and
    Stripe delivers again later.
    """
    from cajex import billing

    customer, fields = reduce(event, settings)
    kind = event.get("type", "")
    if (
        kind.startswith("customer.subscription.")
        and billing.online(settings)
        and fields.get("subscription_id")
    ):
        fetched = stripe_api.retrieve_subscription(settings, fields["subscription_id"])
        if fetched["customer_id"] == customer:
            fetched.pop("customer_id")
            fields = fetched
    row = conn.execute(
        "select cajex_private.apply_stripe_event(%s, %s, %s, %s, %s::jsonb) as outcome",
        (
            str(event.get("id") or "")[:255] or None,
            event.get("type"),
            event.get("created"),
            customer,
            json.dumps(fields),
        ),
    ).fetchone()
    return row["outcome"]
