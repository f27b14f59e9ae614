"""Billing jobs: the seat quantity sync (outbox kind `billing.sync_seats`,
written by the seat trigger) and the follow-up of a workspace's deletion and
restore (`billing.workspace_deleted`, `billing.workspace_restored`).

The sync sets Stripe's quantity to the counter's value as of a seat
sequence, with the idempotency key `seats-<workspace>-<sequence>`: a job
retried after a crash makes the very same request, and, the quantity being
absolute, a repeated request changes nothing. Every seat change inside the
coalescing window joins one pending outbox row, so a burst makes one call.

In step means the recorded sync names the current sequence and Stripe's
recorded quantity is the count; equal numbers alone are not (a sync whose
answer was lost left Stripe on a count the recording does not show). The
syncs of one workspace run one at a time (cajex_private.lock_seat_sync, held
from reading the state to recording the result), so an older count never
lands after a newer one.
"""

from __future__ import annotations

import time

from cajex.jobs import registry

from cajex import billing, log
from cajex.billing import stripe_api

_logger = log.get("cajex.jobs.billing")


@registry.handler("billing.sync_seats")
def sync_seats(ctx: registry.JobContext) -> None:
    """Bring the subscription's quantity to the workspace's seat count."""
    started = time.perf_counter()
    if not billing.online(ctx.settings):
        _logger.info(
            "billing.sync_skipped", workspace_id=ctx.workspace_id, reason="offline"
        )
        return
    with ctx.service("billing") as (conn, opened):
        if opened.workspace_id is None:
            # Deleted meanwhile: its subscription is being cancelled.
            _logger.info(
                "billing.sync_skipped",
                workspace_id=ctx.workspace_id,
                reason="no_context",
            )
            return
        # Held until this transaction ends, across the Stripe call: another
        # sync of this workspace waits here and then reads what this one
        # recorded. Seat changes do not wait (an advisory lock).
        conn.execute("select cajex_private.lock_seat_sync()")
        state = conn.execute("select * from cajex_private.seat_sync_state()").fetchone()
        if (
            state is None
            or state["stripe_subscription_id"] is None
            or state["subscription_status"] in ("canceled", "incomplete_expired")
        ):
            _logger.info(
                "billing.sync_skipped",
                workspace_id=ctx.workspace_id,
                reason="no_subscription",
            )
            return
        quantity, sequence = state["seats_used"], state["seat_sequence"]
        caught_up = state["synced_sequence"] >= sequence
        if caught_up and state["seats_paid"] == quantity and state["stripe_item_id"]:
            _logger.info(
                "billing.sync_skipped", workspace_id=ctx.workspace_id, reason="in_step"
            )
            return
        item_id, billed = state["stripe_item_id"], None
        if item_id is None:
            # Not recorded yet (queued by Checkout's completion): Stripe's
            # own answer says the item and what it bills already.
            current = stripe_api.retrieve_subscription(
                ctx.settings, state["stripe_subscription_id"]
            )
            item_id, billed = current["item_id"], current["quantity"]
        if billed == quantity:
            conn.execute(
                "select cajex_private.record_seat_sync(%s, %s)", (sequence, quantity)
            )
            _logger.info(
                "billing.sync_skipped", workspace_id=ctx.workspace_id, reason="billed"
            )
            return
        # This sequence was synced already, yet Stripe reports another
        # quantity (a webhook recorded it): the sequence's key would only
        # replay the earlier answer, so this job's own key is used.
        key = f"seats-{ctx.workspace_id}-{sequence}"
        if caught_up:
            key += f"-job{ctx.id}"
        stripe_api.set_quantity(
            ctx.settings,
            state["stripe_subscription_id"],
            item_id,
            quantity,
            idempotency_key=key,
        )
        conn.execute(
            "select cajex_private.record_seat_sync(%s, %s)", (sequence, quantity)
        )
    _logger.info(
        "billing.seats_synced",
        workspace_id=ctx.workspace_id,
        job_id=ctx.id,
        quantity=quantity,
        sequence=sequence,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _deletion_follow_up(ctx: registry.JobContext, deleted: bool) -> None:
    if not billing.online(ctx.settings):
        return
    with ctx.pool.connection() as conn:
        row = conn.execute(
            "select * from cajex_private.deletion_billing_state(%s, %s, %s)",
            (ctx.workspace_id, deleted, ctx.id),
        ).fetchone()
        conn.commit()
    if row is None:
        return
    if not deleted and row["cancel_reason"] != "workspace_deleted":
        # The owner cancelled on their own: a restore keeps that.
        return
    if deleted and row["cancel_at_period_end"]:
        return
    stripe_api.set_cancel_at_period_end(
        ctx.settings,
        row["stripe_subscription_id"],
        deleted,
        idempotency_key=f"deletion-{ctx.workspace_id}-{ctx.id}",
    )
    with ctx.pool.connection() as conn:
        conn.execute(
            "select cajex_private.record_deletion_cancel(%s, %s, %s)",
            (ctx.workspace_id, deleted, ctx.id),
        )
        conn.commit()
    _logger.info(
        "billing.deletion_follow_up",
        workspace_id=ctx.workspace_id,
        job_id=ctx.id,
        cancel_at_period_end=deleted,
    )


@registry.handler("billing.workspace_deleted")
def workspace_deleted(ctx: registry.JobContext) -> None:
    """A deleted workspace's subscription ends at its period's end (restorable)."""
    _deletion_follow_up(ctx, True)


@registry.handler("billing.workspace_restored")
def workspace_restored(ctx: registry.JobContext) -> None:
    """A restore withdraws the cancellation that the deletion asked for."""
    _deletion_follow_up(ctx, False)
