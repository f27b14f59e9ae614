"""Billing: the billing page and its JSON API (plan, seats used and paid,
next invoice, AI usage this period, plan history), plan changes, Checkout,
cancellation, the customer portal, and the Stripe webhook endpoint.

Rules live in SQL (db/functions/500_billing.sql); Stripe calls live in
cajex.billing.stripe_api. Owners manage billing (billing.manage); owners and
admins read it (billing.read).
"""

from __future__ import annotations

import json
import uuid

from cajex.web.auth import csrf_exempt
from cajex.web.middleware import (
    json_body,
    register_nav,
    settings,
    webhook_pool,
    workspace_view,
)
from flask import (
    Blueprint,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from cajex import billing, log
from cajex.billing import stripe_api, webhooks
from cajex.errors import AppError

bp = Blueprint("billing", __name__)
_logger = log.get("cajex.billing")


def init_app(app) -> None:
    register_nav(app, "Billing", "billing.page", "billing.read")


# -- reading -------------------------------------------------------------------


def overview(conn) -> dict:
    """Everything the page and the API show, read through RLS."""
    s = settings()
    row = conn.execute(
        "select w.plan, p.name as plan_name, p.max_seats, p.seat_price_cents, p.currency,"
        " p.ai_monthly_tokens, b.seats_used, b.seats_paid, b.subscription_status,"
        " b.current_period_end, b.cancel_at_period_end, b.cancel_reason,"
        " b.payment_failed_at, b.grace_until, b.stripe_customer_id is not null as has_customer,"
        " b.stripe_subscription_id is not null as has_subscription,"
        " coalesce(b.grace_until <= now(), false) as limited"
        " from cajex.workspaces w join cajex.plans p on p.code = w.plan"
        " left join cajex.workspace_billing b on b.workspace_id = w.id"
        " where w.id = cajex.current_workspace_id()"
    ).fetchone()
    live = row["subscription_status"] in ("active", "trialing", "past_due", "unpaid")
    next_invoice = None
    if live and not row["cancel_at_period_end"] and row["current_period_end"]:
        next_invoice = {
            "date": row["current_period_end"].isoformat(),
            # An estimate: seats x the plan's price, before prorations and tax.
            "amount_cents": (row["seats_paid"] or 0) * row["seat_price_cents"],
            "currency": row["currency"],
        }
    usage = conn.execute(
        "select model, task, sum(requests)::bigint as requests,"
        " sum(input_tokens)::bigint as input_tokens, sum(output_tokens)::bigint as output_tokens"
        " from cajex.ai_usage"
        " where day >= date_trunc('month', now() at time zone 'utc')::date"
        " group by model, task order by model, task"
    ).fetchall()
    history = conn.execute(
        "select occurred_at, actor, details from cajex.audit_log"
        " where action = 'billing.plan_changed' order by occurred_at desc, id desc limit 50"
    ).fetchall()
    plans = conn.execute(
        "select code, name, rank, max_seats, seat_price_cents, currency, ai_monthly_tokens, features"
        " from cajex.plans order by rank"
    ).fetchall()
    for plan in plans:
        plan["blockers"] = (
            []
            if plan["code"] == row["plan"]
            else conn.execute(
                "select limit_name, message from cajex.plan_change_blockers(%s)",
                (plan["code"],),
            ).fetchall()
        )
        plan["purchasable"] = (
            plan["code"] == "free"
            or not billing.online(s)
            or bool(billing.price_for(s, plan["code"]))
        )
    return {
        "mode": "stripe" if billing.online(s) else "offline",
        "plan": row["plan"],
        "plan_name": row["plan_name"],
        "seats": {
            "used": row["seats_used"] or 0,
            "paid": row["seats_paid"],
            "max": row["max_seats"],
        },
        "subscription": {
            "status": row["subscription_status"],
            "current_period_end": row["current_period_end"].isoformat()
            if row["current_period_end"]
            else None,
            "cancel_at_period_end": row["cancel_at_period_end"] or False,
        },
        "payment": {
            "failed_at": row["payment_failed_at"].isoformat()
            if row["payment_failed_at"]
            else None,
            "grace_until": row["grace_until"].isoformat()
            if row["grace_until"]
            else None,
            "limited": row["limited"],
        },
        "has_customer": row["has_customer"],
        "has_subscription": row["has_subscription"] and live,
        "next_invoice": next_invoice,
        "ai_quota_tokens": row["ai_monthly_tokens"],
        "ai_usage": [dict(u) for u in usage],
        "history": [
            {
                "at": h["occurred_at"].isoformat(),
                "actor": h["actor"],
                "from": h["details"].get("from"),
                "to": h["details"].get("to"),
                "source": h["details"].get("source"),
            }
            for h in history
        ],
        "plans": [
            {
                "code": p["code"],
                "name": p["name"],
                "max_seats": p["max_seats"],
                "seat_price_cents": p["seat_price_cents"],
                "currency": p["currency"],
                "ai_monthly_tokens": p["ai_monthly_tokens"],
                "features": list(p["features"]),
                "purchasable": p["purchasable"],
                "blockers": [dict(b) for b in p["blockers"]],
            }
            for p in plans
        ],
    }


@bp.get("/w/<slug>/billing")
@workspace_view("billing.read")
def page():
    if request.args.get("checkout") == "done":
        flash(CHECKOUT_DONE, "info")
    return render_template("billing/page.html", b=overview(g.db))


@bp.get("/w/<slug>/api/v1/billing")
@workspace_view("billing.read")
def api_get():
    return jsonify(overview(g.db))


# -- changing ------------------------------------------------------------------


#: What a page says when Stripe Checkout has sent the customer back.
CHECKOUT_DONE = (
    "Your payment details are with Stripe. The plan changes as soon as Stripe "
    "confirms the subscription, usually within a minute."
)


def _page_url() -> str:
    return f"{settings().public_url}/w/{g.workspace.workspace_slug}/billing"


def _ensure_customer(conn) -> str:
    row = conn.execute(
        "select b.stripe_customer_id, w.name from cajex.workspace_billing b"
        " join cajex.workspaces w on w.id = b.workspace_id"
        " where b.workspace_id = cajex.current_workspace_id()"
    ).fetchone()
    if row["stripe_customer_id"]:
        return row["stripe_customer_id"]
    customer = stripe_api.create_customer(
        settings(), str(g.workspace.workspace_id), row["name"]
    )
    conn.execute("select cajex.record_stripe_customer(%s)", (customer,))
    return customer


def _action_key(action: str) -> str:
    """An idempotency key for one owner's action, made once per request.

    Stripe answers a repeated key with its first answer and does nothing,
    so a key must not outlive the action: cancel, keep, cancel again (or
    basic, pro, basic) are three requests Stripe must carry out. The stripe
    library's own retries within the request reuse it. Only the seat sync
    keys by the seat sequence (jobs/billing.py): its retries are the same
    request by design.
    """
    return f"{action}-{g.workspace.workspace_id}-{uuid.uuid4().hex}"


def _apply_api_state(conn, state: dict, kind: str) -> None:
    """Record a subscription the API just returned, as its webhook would
    (for the open workspace's own customer: cajex.record_subscription)."""
    fields = {k: v for k, v in state.items() if k != "customer_id"}
    conn.execute(
        "select cajex.record_subscription(%s, %s, %s::jsonb)",
        (kind, state["created"] or 0, json.dumps(fields)),
    )


def change_plan(
    conn, plan: str, success_url: str | None = None, cancel_url: str | None = None
) -> dict:
    """Move the open workspace to `plan`: {"done": True} or {"checkout_url": ...}.

    Offline, the plan is simply set. With Stripe: a live subscription moves
    to the plan's price (Free: it ends at the period's end); without one,
    a card on file subscribes at once, otherwise Stripe Checkout is opened.
    Checkout comes back to `success_url` (or `cancel_url`), the billing page
    unless the caller names another page. Every path checks the plan's
    limits in SQL first (CXPLN names which); a move Stripe bills is made in
    SQL, under the workspace's lock, before Stripe is asked, so a refusal
    leaves Stripe untouched and a failed Stripe call rolls the move back.
    """
    s = settings()
    if not isinstance(plan, str) or not plan:
        raise AppError(422, "invalid", "choose a plan", field="plan")
    blockers = conn.execute(
        "select limit_name, message from cajex.plan_change_blockers(%s)", (plan,)
    ).fetchall()
    if blockers:
        raise AppError(
            402,
            "plan_limit",
            "this plan change would break a limit: "
            + "; ".join(b["message"] for b in blockers),
            field=blockers[0]["limit_name"],
        )
    if not billing.online(s):
        conn.execute("select cajex.change_plan(%s, 'offline')", (plan,))
        return {"done": True}
    state = _subscription_state(conn)
    live = _live(state)
    # Nothing to do, unless a paid plan chosen while billing was offline now
    # needs its subscription.
    if state["plan"] == plan and (live or plan == "free"):
        return {"done": True}
    ws = str(g.workspace.workspace_id)
    if plan == "free":
        if live:
            stripe_api.set_cancel_at_period_end(
                s, state["stripe_subscription_id"], True, _action_key("cancel")
            )
            conn.execute("select cajex.record_cancellation(true)")
        else:
            conn.execute("select cajex.change_plan('free', 'offline')")
        return {"done": True}
    price = billing.price_for(s, plan)
    if not price:
        raise AppError(
            422,
            "plan_unavailable",
            "this plan has no Stripe price configured",
            field="plan",
        )
    customer = None
    if not live:
        customer = _ensure_customer(conn)
        if not stripe_api.default_payment_method(s, customer):
            return _open_checkout(
                conn, s, customer, price, state, plan, success_url, cancel_url
            )
    # The move, checked under the workspace's row lock (which invitations
    # being accepted and subscriptions being recorded take too), before
    # Stripe hears of it; the state is read again under that lock.
    conn.execute("select cajex.change_plan(%s, 'stripe')", (plan,))
    state = _subscription_state(conn)
    if _live(state):
        item = (
            state["stripe_item_id"]
            or stripe_api.retrieve_subscription(s, state["stripe_subscription_id"])[
                "item_id"
            ]
        )
        stripe_api.set_price(
            s, state["stripe_subscription_id"], item, price, _action_key("plan")
        )
        return {"done": True}
    created = stripe_api.create_subscription(
        s,
        customer or _ensure_customer(conn),
        price,
        max(state["seats_used"], 1),
        ws,
        _action_key("subscribe"),
    )
    _apply_api_state(conn, created, "customer.subscription.created")
    return {"done": True}


def _subscription_state(conn) -> dict:
    return conn.execute(
        "select b.stripe_subscription_id, b.stripe_item_id, b.subscription_status,"
        " b.seats_used, w.plan from cajex.workspace_billing b"
        " join cajex.workspaces w on w.id = b.workspace_id"
        " where b.workspace_id = cajex.current_workspace_id()"
    ).fetchone()


def _live(state: dict) -> bool:
    return bool(state["stripe_subscription_id"]) and state[
        "subscription_status"
    ] not in ("canceled", "incomplete_expired")


def _open_checkout(
    conn, s, customer, price, state, plan, success_url, cancel_url
) -> dict:
    """Stripe Checkout for a first subscription; the plan changes when its
    webhook arrives (apply_stripe_event)."""
    url = stripe_api.create_checkout_session(
        s,
        customer,
        price,
        max(state["seats_used"], 1),
        str(g.workspace.workspace_id),
        plan,
        success_url=success_url or _page_url() + "?checkout=done",
        cancel_url=cancel_url or _page_url(),
    )
    return {"checkout_url": url}


@bp.post("/w/<slug>/billing/plan")
@workspace_view("billing.manage")
def plan_from_form():
    try:
        outcome = change_plan(g.db, request.form.get("plan", ""))
    except AppError as err:
        if err.status != 402:
            raise
        flash(err.message, "error")
        return redirect(url_for("billing.page", slug=g.workspace.workspace_slug))
    if "checkout_url" in outcome:
        return redirect(outcome["checkout_url"], 303)
    flash("The plan is changed.", "ok")
    return redirect(url_for("billing.page", slug=g.workspace.workspace_slug))


@bp.post("/w/<slug>/api/v1/billing/plan")
@workspace_view("billing.manage")
def api_plan():
    body = json_body({"plan"}, {"plan"})
    return jsonify(change_plan(g.db, body["plan"]))


def _set_cancel(cancel: bool) -> None:
    s = settings()
    if not billing.online(s):
        raise AppError(
            409, "billing_offline", "billing is offline: choose a plan instead"
        )
    state = g.db.execute(
        "select stripe_subscription_id from cajex.workspace_billing"
        " where workspace_id = cajex.current_workspace_id()"
    ).fetchone()
    if not state or not state["stripe_subscription_id"]:
        raise AppError(404, "not_found", "this workspace has no subscription")
    stripe_api.set_cancel_at_period_end(
        s,
        state["stripe_subscription_id"],
        cancel,
        _action_key("cancel" if cancel else "resume"),
    )
    g.db.execute("select cajex.record_cancellation(%s)", (cancel,))


@bp.post("/w/<slug>/billing/cancel")
@workspace_view("billing.manage")
def cancel():
    _set_cancel(request.form.get("resume") != "1")
    return redirect(url_for("billing.page", slug=g.workspace.workspace_slug))


@bp.post("/w/<slug>/api/v1/billing/cancel")
@workspace_view("billing.manage")
def api_cancel():
    body = json_body({"at_period_end"}, {"at_period_end"})
    if not isinstance(body["at_period_end"], bool):
        raise AppError(
            422, "invalid", "at_period_end is true or false", field="at_period_end"
        )
    _set_cancel(body["at_period_end"])
    return jsonify(overview(g.db))


@bp.post("/w/<slug>/billing/portal")
@workspace_view("billing.manage")
def portal():
    s = settings()
    if not billing.online(s):
        raise AppError(409, "billing_offline", "billing is offline: there is no portal")
    customer = _ensure_customer(g.db)
    return redirect(stripe_api.create_portal_session(s, customer, _page_url()), 303)


# -- the webhook ---------------------------------------------------------------


@bp.post("/api/v1/stripe/webhook")
@csrf_exempt
def webhook():
    """Stripe's deliveries: 400 unless signed and fresh; each event applied once."""
    raw = request.get_data(cache=False)
    try:
        event = webhooks.verify(
            raw,
            request.headers.get("Stripe-Signature"),
            settings().stripe_webhook_secrets,
        )
    except webhooks.SignatureError as err:
        _logger.warning("stripe.webhook_refused", reason=err.reason)
        raise AppError(
            400, "bad_signature", "the Stripe signature does not verify"
        ) from None
    with webhook_pool().connection() as conn:
        outcome = webhooks.apply(conn, event, settings())
    _logger.info(
        "stripe.webhook_applied",
        event_id=str(event.get("id"))[:64],
        event_type=str(event.get("type"))[:100],
        outcome=outcome,
    )
    return jsonify(outcome=outcome)
