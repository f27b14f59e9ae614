-- Billing: policies and grants (tables in schema/0500, functions in
-- functions/500). Owners and admins (billing.read) read their workspace's
-- billing row; nobody reads another's. Writes go through the functions.

drop policy if exists "billing readers can read their workspace's billing" on cajex.workspace_billing;
create policy "billing readers can read their workspace's billing" on cajex.workspace_billing
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c)
                    and (select cajex.has_permission('billing.read')));

-- The business functions that act in the open workspace run as cajex_owner,
-- which forced RLS binds: they may update the context's own row only.
drop policy if exists "the context can update its billing" on cajex.workspace_billing;
create policy "the context can update its billing" on cajex.workspace_billing
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

-- Stripe events are a platform table: only the definer role (which
-- bypasses RLS) reads or writes them, so no policy opens them to anyone.

grant select on cajex.workspace_billing to cajex_app, cajex_api;
grant select, insert, update, delete on cajex.workspace_billing, cajex_private.stripe_events
  to cajex_definer;

grant execute on function
  cajex.plan_change_blockers(text)
  to cajex_app, cajex_api;

grant execute on function
  cajex.change_plan(text, text),
  cajex.record_stripe_customer(text),
  cajex.record_cancellation(boolean),
  cajex_private.seat_sync_state(),
  cajex_private.lock_seat_sync(),
  cajex_private.record_seat_sync(bigint, integer),
  cajex.record_subscription(text, bigint, jsonb)
  to cajex_app;
-- Stripe's webhook applies an event to whichever workspace has the event's
-- customer, so it is the webhook's own login (cajex_webhook), which can do
-- nothing else. A request records only its own workspace's subscription
-- (cajex.record_subscription, which calls this as cajex_owner).
grant usage on schema cajex_private to cajex_webhook;
grant execute on function cajex_private.apply_stripe_event(text, text, bigint, text, jsonb)
  to cajex_webhook, cajex_owner;
revoke execute on function cajex_private.apply_stripe_event(text, text, bigint, text, jsonb)
  from cajex_app, cajex_api, public;
-- A deleted workspace's billing follow-up is the worker's, fenced by its job.
grant execute on function
  cajex_private.deletion_billing_state(uuid, boolean, bigint),
  cajex_private.record_deletion_cancel(uuid, boolean, bigint)
  to cajex_worker;
grant execute on all functions in schema cajex_private to cajex_definer;
-- Called from the business functions, which run as cajex_owner.
grant execute on function
  cajex.seat_count(uuid),
  cajex_private.context_billing_limited()
  to cajex_owner;

grant select on api.billing to cajex_api;
