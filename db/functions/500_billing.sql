-- Billing: the seat counter, the Stripe quantity sync's state, plan changes,
-- and the application of Stripe webhook events. Stripe itself is called only
-- from Python (cajex/billing/stripe_api.py); these functions hold the rules.
--
-- The payment grace period (7 days) and the seat-sync coalescing window
-- (3 seconds) are written once, in the two small functions below.

--------------------------------------------------------------------------------
-- Constants

-- How long a workspace keeps every feature after a failed payment. After it,
-- the workspace is limited: no new seats, AI paused; nothing is deleted.
-- Constants without a SET clause, so that the planner inlines them (see
-- normalise_email).
create or replace function cajex_private.payment_grace_period()
returns interval
language sql
immutable
parallel safe
as $$ select interval '7 days' $$;

-- A seat change asks for a quantity sync this long after it; every change
-- inside the window joins the same pending outbox row (dedupe key 'seats'),
-- so a burst (a SCIM import of 500 users) makes one Stripe update.
create or replace function cajex_private.seat_sync_delay()
returns interval
language sql
immutable
parallel safe
as $$ select interval '3 seconds' $$;

--------------------------------------------------------------------------------
-- The seat counter. Runs for every row of every membership change, as the
-- definer role: a membership can change before any context exists (accepting
-- an invitation) or from a job. It adds the change's delta to the counter
-- (the row lock serialises concurrent changes of one workspace, so the count
-- stays exact), bumps the sequence that names each sync, and, for a
-- workspace Stripe bills, writes the sync job in the same transaction.
-- A role change moves no seat and does nothing.
create or replace function cajex_private.count_seats()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := coalesce(new.workspace_id, old.workspace_id);
  v_delta integer :=
    (case when tg_op <> 'DELETE' and new.status = 'active' then 1 else 0 end)
    - (case when tg_op <> 'INSERT' and old.status = 'active' then 1 else 0 end);
  v_subscription text;
begin
  if v_delta = 0 then
    return null;
  end if;
  update cajex.workspace_billing b
  set seats_used = b.seats_used + v_delta, seat_sequence = b.seat_sequence + 1, updated_at = now()
  where b.workspace_id = v_ws
  returning b.stripe_subscription_id into v_subscription;
  if not found then
    -- The workspace's first member (its owner, at creation). A workspace
    -- being deleted in this statement is gone already: insert nothing then.
    insert into cajex.workspace_billing (workspace_id, seats_used, seat_sequence)
    select w.id, greatest(v_delta, 0), 1 from cajex.workspaces w where w.id = v_ws
    on conflict (workspace_id) do update
      set seats_used = cajex.workspace_billing.seats_used + v_delta,
          seat_sequence = cajex.workspace_billing.seat_sequence + 1, updated_at = now();
  elsif v_subscription is not null then
    perform cajex_private.enqueue_platform_job(
      v_ws, 'billing.sync_seats', '{}'::jsonb, 'seats', now() + cajex_private.seat_sync_delay());
  end if;
  return null;
end;
$$;
alter function cajex_private.count_seats() owner to cajex_definer;

drop trigger if exists memberships_count_seats on cajex.memberships;
create trigger memberships_count_seats
  after insert or delete or update of status on cajex.memberships
  for each row execute function cajex_private.count_seats();

--------------------------------------------------------------------------------
-- Gates. Limited: the grace period after a failed payment is over. Checked
-- by cajex_private.require_seat, cajex.workspace_has_feature('ai') and
-- cajex_private.context_ai_terms, so every path that adds a seat or spends AI
-- tokens agrees. The billing row is for billing readers only, so a member's
-- call reads it here, as cajex_definer, and only the open workspace's.
drop function if exists cajex_private.billing_limited(uuid);
create or replace function cajex_private.context_billing_limited()
returns boolean
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce((select b.grace_until <= now() from cajex.workspace_billing b
                   where b.workspace_id = (select c.workspace_id from cajex_private.context c)),
                  false);
end;
$$;
alter function cajex_private.context_billing_limited() owner to cajex_definer;

-- What a move to p_plan would break, one row per limit: 'seats' (more active
-- members than the plan allows), 'sso' (an enabled SSO connection), 'scim'
-- (a live SCIM token), 'ai' (AI switched on). Empty: the move is possible.
create or replace function cajex.plan_change_blockers(p_plan text)
returns table (limit_name text, message text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_plan cajex.plans;
  v_used integer;
begin
  perform cajex_private.require_permission('billing.read');
  select p.* into v_plan from cajex.plans p where p.code = p_plan;
  if v_plan.code is null then
    raise exception 'unknown plan %', p_plan using errcode = 'CXINV', detail = 'plan';
  end if;
  v_used := cajex.seat_count(v_ws);
  if v_plan.max_seats is not null and v_used > v_plan.max_seats then
    limit_name := 'seats';
    message := format('%s allows %s seats and %s are in use: remove or deactivate %s members first',
                      v_plan.name, v_plan.max_seats, v_used, v_used - v_plan.max_seats);
    return next;
  end if;
  if not 'sso' = any (v_plan.features)
     and exists (select from cajex.sso_connections s where s.workspace_id = v_ws and s.status = 'enabled') then
    limit_name := 'sso';
    message := format('%s has no single sign-on: disable the SSO connection first', v_plan.name);
    return next;
  end if;
  if not 'scim' = any (v_plan.features)
     and exists (select from cajex.scim_tokens t where t.workspace_id = v_ws and t.revoked_at is null) then
    limit_name := 'scim';
    message := format('%s has no SCIM provisioning: revoke the SCIM tokens first', v_plan.name);
    return next;
  end if;
  if not 'ai' = any (v_plan.features)
     and exists (select from cajex.ai_settings a where a.workspace_id = v_ws and a.enabled) then
    limit_name := 'ai';
    message := format('%s has no AI features: switch AI off first', v_plan.name);
    return next;
  end if;
end;
$$;
comment on function cajex.plan_change_blockers(text) is
  'The limits of the open workspace a move to the plan would break (seats, sso, scim, ai).';

-- Change the open workspace's plan. p_source says why: 'offline' (billing
-- has no Stripe keys: the plan is simply chosen) or 'stripe' (the web app
-- changed the subscription's price first). Refuses, naming the first broken
-- limit in detail and all of them in the message, when the move would break
-- one. A workspace Stripe bills cannot be moved to a paid plan 'offline'.
-- Trusted to the web app: it is not exposed to PostgREST.
create or replace function cajex.change_plan(p_plan text, p_source text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_old text;
  v_first text;
  v_all text;
begin
  perform cajex_private.require_permission('billing.manage');
  if p_source is null or p_source not in ('offline', 'stripe') then
    raise exception 'a plan change comes from offline billing or Stripe'
      using errcode = 'CXINV', detail = 'source';
  end if;
  -- The workspace row first: invitations being accepted hold it, so the
  -- limits below are read after they commit (or before they start), never
  -- in between.
  select w.plan into v_old from cajex.workspaces w where w.id = v_ws for update;
  select min(b.limit_name), string_agg(b.message, '; ' order by b.limit_name)
  into v_first, v_all
  from cajex.plan_change_blockers(p_plan) b;
  if v_first is not null then
    raise exception 'this plan change would break a limit: %', v_all
      using errcode = 'CXPLN', detail = v_first, hint = 'Fix what is listed, then change the plan.';
  end if;
  if p_source = 'offline' and p_plan <> 'free' and exists (
       select from cajex.workspace_billing b
       where b.workspace_id = v_ws and b.stripe_subscription_id is not null
         and b.subscription_status not in ('canceled', 'incomplete_expired')) then
    raise exception 'this workspace is billed through Stripe: change the plan there'
      using errcode = 'CXINV', detail = 'source';
  end if;
  if v_old = p_plan then
    return;
  end if;
  update cajex.workspaces w set plan = p_plan where w.id = v_ws;
  perform cajex_private.write_audit('billing.plan_changed', 'workspace', v_ws::text,
                                    jsonb_build_object('from', v_old, 'to', p_plan, 'source', p_source));
end;
$$;

-- The Stripe customer made for the open workspace (before its first
-- Checkout). Set once: a second call with another id is refused.
create or replace function cajex.record_stripe_customer(p_customer_id text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_old text;
begin
  perform cajex_private.require_permission('billing.manage');
  if p_customer_id is null or p_customer_id !~ '^cus_[A-Za-z0-9]{1,250}$' then
    raise exception 'a Stripe customer id starts with cus_' using errcode = 'CXINV', detail = 'customer';
  end if;
  select b.stripe_customer_id into v_old from cajex.workspace_billing b where b.workspace_id = v_ws for update;
  if v_old = p_customer_id then
    return;
  end if;
  if v_old is not null then
    raise exception 'this workspace has a Stripe customer already' using errcode = 'CXDUP', detail = 'customer';
  end if;
  update cajex.workspace_billing b set stripe_customer_id = p_customer_id, updated_at = now()
  where b.workspace_id = v_ws;
  perform cajex_private.write_audit('billing.customer_created', 'workspace', v_ws::text, '{}'::jsonb);
end;
$$;

-- The owner asked Stripe to end (or keep) the subscription at the period's
-- end; recorded at once, and confirmed by the webhook that follows.
create or replace function cajex.record_cancellation(p_at_period_end boolean)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
begin
  perform cajex_private.require_permission('billing.manage');
  update cajex.workspace_billing b
  set cancel_at_period_end = coalesce(p_at_period_end, false),
      cancel_reason = case when p_at_period_end then 'owner' end, updated_at = now()
  where b.workspace_id = v_ws and b.stripe_subscription_id is not null;
  if not found then
    raise exception 'this workspace has no subscription' using errcode = 'CXNFD', detail = 'subscription';
  end if;
  perform cajex_private.write_audit(
    case when p_at_period_end then 'billing.cancel_requested' else 'billing.cancel_withdrawn' end,
    'workspace', v_ws::text, '{}'::jsonb);
end;
$$;

--------------------------------------------------------------------------------
-- The seat sync job (jobs/billing.py), in the job's context.

-- What the job needs: the counter, its sequence, what Stripe bills and the
-- subscription. Locks nothing: the job sets an absolute quantity, so a
-- change committed meanwhile simply makes the next sync.
create or replace function cajex_private.seat_sync_state()
returns table (seats_used integer, seat_sequence bigint, seats_paid integer, synced_sequence bigint,
               stripe_subscription_id text, stripe_item_id text, subscription_status text, plan text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select cajex.current_member_role()) is distinct from 'system' then
    raise exception 'only a job syncs seats' using errcode = 'CXFBD';
  end if;
  return query
  select b.seats_used, b.seat_sequence, b.seats_paid, b.synced_sequence,
         b.stripe_subscription_id, b.stripe_item_id, b.subscription_status, w.plan
  from cajex.workspace_billing b join cajex.workspaces w on w.id = b.workspace_id
  where b.workspace_id = (select cajex.current_workspace_id());
end;
$$;

-- Serialise the open workspace's seat syncs until the caller's transaction
-- ends: a job holds this across reading the state, calling Stripe and
-- recording the result, so two jobs of one workspace (a retry and the row a
-- later seat change queued) never interleave and leave Stripe billing the
-- older count. An advisory lock, not a row lock: seat changes (the trigger
-- above) go on while Stripe answers.
create or replace function cajex_private.lock_seat_sync()
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select cajex.current_member_role()) is distinct from 'system' then
    raise exception 'only a job syncs seats' using errcode = 'CXFBD';
  end if;
  perform pg_advisory_xact_lock(
    hashtextextended('cajex.billing.sync_seats:' || (select cajex.current_workspace_id())::text, 0));
end;
$$;

-- Stripe now bills p_quantity, as of seat sequence p_sequence. An older
-- sync finishing late never overwrites a newer one.
create or replace function cajex_private.record_seat_sync(p_sequence bigint, p_quantity integer)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select cajex.current_member_role()) is distinct from 'system' then
    raise exception 'only a job syncs seats' using errcode = 'CXFBD';
  end if;
  update cajex.workspace_billing b
  set seats_paid = p_quantity, synced_sequence = p_sequence, updated_at = now()
  where b.workspace_id = (select cajex.current_workspace_id()) and b.synced_sequence <= p_sequence;
  if found then
    perform cajex_private.write_audit('billing.seats_synced', 'workspace',
                                      (select cajex.current_workspace_id())::text,
                                      jsonb_build_object('quantity', p_quantity, 'sequence', p_sequence));
  end if;
end;
$$;

-- A deleted workspace opens no context, so its billing follow-up reads and
-- writes by id, fenced by its own job: only while the outbox job of that
-- workspace's deletion (p_deleted) or restore is running do these answer or
-- write, so a request can neither read another workspace's subscription nor
-- mark it cancelled. p_deleted: the workspace must be deleted (cancel) or
-- active again (undo). Returns the subscription to act on, or nothing.
drop function if exists cajex_private.deletion_billing_state(uuid, boolean);
drop function if exists cajex_private.record_deletion_cancel(uuid, boolean);

create or replace function cajex_private.deletion_job_running(
  p_workspace_id uuid, p_deleted boolean, p_job_id bigint)
returns boolean
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (
    select from cajex.outbox o
    where o.id = p_job_id and o.workspace_id = p_workspace_id
      and o.kind = case when p_deleted then 'billing.workspace_deleted' else 'billing.workspace_restored' end
      and o.started_at is not null and o.done_at is null);
end;
$$;
alter function cajex_private.deletion_job_running(uuid, boolean, bigint) owner to cajex_definer;

create or replace function cajex_private.deletion_billing_state(
  p_workspace_id uuid, p_deleted boolean, p_job_id bigint)
returns table (stripe_subscription_id text, cancel_at_period_end boolean, cancel_reason text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not cajex_private.deletion_job_running(p_workspace_id, p_deleted, p_job_id) then
    return;
  end if;
  return query
  select b.stripe_subscription_id, b.cancel_at_period_end, b.cancel_reason
  from cajex.workspace_billing b join cajex.workspaces w on w.id = b.workspace_id
  where b.workspace_id = p_workspace_id
    and w.status = case when p_deleted then 'deleted' else 'active' end
    and b.stripe_subscription_id is not null
    and b.subscription_status not in ('canceled', 'incomplete_expired');
end;
$$;
alter function cajex_private.deletion_billing_state(uuid, boolean, bigint) owner to cajex_definer;

create or replace function cajex_private.record_deletion_cancel(
  p_workspace_id uuid, p_cancel boolean, p_job_id bigint)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not cajex_private.deletion_job_running(p_workspace_id, p_cancel, p_job_id) then
    raise exception 'no running deletion follow-up of this workspace has that job id'
      using errcode = 'CXNFD', detail = 'job';
  end if;
  update cajex.workspace_billing b
  set cancel_at_period_end = p_cancel,
      cancel_reason = case when p_cancel then 'workspace_deleted' end, updated_at = now()
  from cajex.workspaces w
  where b.workspace_id = p_workspace_id and w.id = b.workspace_id
    and w.status = case when p_cancel then 'deleted' else 'active' end
    and (p_cancel or b.cancel_reason = 'workspace_deleted');
end;
$$;
alter function cajex_private.record_deletion_cancel(uuid, boolean, bigint) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Webhooks. The web app verified the signature and normalised the event's
-- object (p_object, see cajex/billing/webhooks.py); this applies it once.
--
-- Returns the outcome: 'duplicate' (this event id was applied before: nothing
-- happens), 'unmapped' (no workspace has this customer), 'stale' (older than
-- what was applied: a subscription never moves backwards), 'ignored' (not
-- ours to act on) or 'applied'. Runs as the definer role: a webhook has no
-- context, and the customer id alone names the workspace. Metadata in the
-- event is never trusted to pick a workspace.
--
-- Stripe timestamps events in whole seconds, so two updates of one
-- subscription within the same second cannot be ordered by time: with
-- Stripe configured the web app passes the subscription as re-fetched from
-- Stripe (cajex/billing/webhooks.py), so either order applies the same,
-- current state. Without a fetch they apply in arrival order.
create or replace function cajex_private.apply_stripe_event(
  p_event_id text,
  p_type text,
  p_created bigint,
  p_customer_id text,
  p_object jsonb
)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_b cajex.workspace_billing;
  v_plan text;
  v_new_plan text;
  v_status text;
  v_outcome text := 'applied';
  v_sub text := p_object ->> 'subscription_id';
begin
  if p_event_id is null or p_type is null or p_created is null then
    raise exception 'an event has an id, a type and a creation time' using errcode = 'CXINV', detail = 'event';
  end if;
  insert into cajex_private.stripe_events (event_id, event_type, outcome)
  values (p_event_id, left(p_type, 100), 'applied')
  on conflict (event_id) do nothing;
  if not found then
    return 'duplicate';
  end if;
  select b.* into v_b from cajex.workspace_billing b
  where b.stripe_customer_id = p_customer_id and p_customer_id is not null
  for update;
  if v_b.workspace_id is null then
    update cajex_private.stripe_events set outcome = 'unmapped' where event_id = p_event_id;
    return 'unmapped';
  end if;
  select w.plan into v_plan from cajex.workspaces w where w.id = v_b.workspace_id for update;

  if p_type in ('customer.subscription.created', 'customer.subscription.updated',
                'customer.subscription.deleted') then
    v_status := case when p_type = 'customer.subscription.deleted' then 'canceled'
                     else p_object ->> 'status' end;
    if v_sub is null or v_status is null then
      v_outcome := 'ignored';
    elsif v_b.stripe_subscription_id is not null and v_b.stripe_subscription_id <> v_sub
          and coalesce(v_b.subscription_status, 'active') not in ('canceled', 'incomplete_expired') then
      -- Another subscription of the same customer: not the one we bill by.
      v_outcome := 'ignored';
    elsif p_created < v_b.last_event_created then
      v_outcome := 'stale';
    else
      v_new_plan := case
        when v_status in ('canceled', 'incomplete_expired') then 'free'
        when v_status in ('active', 'trialing', 'past_due', 'unpaid')
             and exists (select from cajex.plans p where p.code = p_object ->> 'plan')
          then p_object ->> 'plan'
        else v_plan end;
      update cajex.workspace_billing b
      set stripe_subscription_id = v_sub,
          stripe_item_id = coalesce(p_object ->> 'item_id', b.stripe_item_id),
          subscription_status = v_status,
          seats_paid = coalesce((p_object ->> 'quantity')::integer, b.seats_paid),
          current_period_end = coalesce(to_timestamp((p_object ->> 'current_period_end')::bigint),
                                        b.current_period_end),
          cancel_at_period_end = v_status not in ('canceled', 'incomplete_expired')
                                 and coalesce((p_object ->> 'cancel_at_period_end')::boolean, false),
          cancel_reason = case
            when v_status in ('canceled', 'incomplete_expired') then null
            when coalesce((p_object ->> 'cancel_at_period_end')::boolean, false)
              then coalesce(b.cancel_reason, 'owner') end,
          -- The plan ended: nothing is owed any more.
          payment_failed_at = case when v_status = 'canceled' then null else b.payment_failed_at end,
          grace_until = case when v_status = 'canceled' then null else b.grace_until end,
          last_event_created = p_created,
          updated_at = now()
      where b.workspace_id = v_b.workspace_id;
    end if;

  elsif p_type = 'checkout.session.completed' then
    -- Our Checkout sessions carry the workspace id as client_reference_id;
    -- a session of this customer naming another workspace is not applied.
    v_new_plan := p_object ->> 'plan';
    if v_sub is null or (p_object ->> 'client_reference_id') is distinct from v_b.workspace_id::text
       or not exists (select from cajex.plans p where p.code = v_new_plan and p.code <> 'free')
       -- A second Checkout while another subscription is live: not ours to switch.
       or (v_b.stripe_subscription_id is not null and v_b.stripe_subscription_id <> v_sub
           and coalesce(v_b.subscription_status, 'active') not in ('canceled', 'incomplete_expired')) then
      v_outcome := 'ignored';
      v_new_plan := null;
    else
      update cajex.workspace_billing b
      set stripe_subscription_id = v_sub,
          subscription_status = case
            when b.stripe_subscription_id = v_sub then b.subscription_status else 'active' end,
          cancel_at_period_end = false, cancel_reason = null, updated_at = now()
      where b.workspace_id = v_b.workspace_id;
    end if;

  elsif p_type = 'invoice.payment_failed' then
    if v_b.payment_failed_at is null then
      update cajex.workspace_billing b
      set payment_failed_at = to_timestamp(p_created),
          grace_until = to_timestamp(p_created) + cajex_private.payment_grace_period(),
          updated_at = now()
      where b.workspace_id = v_b.workspace_id;
      insert into cajex.audit_log (workspace_id, actor, action, target_type, target_id, details)
      values (v_b.workspace_id, 'stripe', 'billing.payment_failed', 'workspace', v_b.workspace_id::text,
              jsonb_build_object('grace_until', to_timestamp(p_created) + cajex_private.payment_grace_period()));
    else
      v_outcome := 'ignored';
    end if;

  elsif p_type in ('invoice.paid', 'invoice.payment_succeeded') then
    if v_b.payment_failed_at is not null and to_timestamp(p_created) >= v_b.payment_failed_at then
      update cajex.workspace_billing b
      set payment_failed_at = null, grace_until = null, updated_at = now()
      where b.workspace_id = v_b.workspace_id;
      insert into cajex.audit_log (workspace_id, actor, action, target_type, target_id, details)
      values (v_b.workspace_id, 'stripe', 'billing.payment_recovered', 'workspace', v_b.workspace_id::text, '{}');
    else
      v_outcome := 'ignored';
    end if;

  else
    v_outcome := 'ignored';
  end if;

  -- Stripe bills a quantity other than the seat count (seats changed while
  -- the owner was in Checkout, or while a subscription was being created;
  -- a quantity edited in Stripe): queue the sync, which the seat trigger
  -- alone would not (it queues none until a subscription is recorded).
  -- After Checkout the quantity is not known yet (seats_paid may be an
  -- ended subscription's): the job reads it from Stripe.
  if v_outcome = 'applied' and (p_type like 'customer.subscription.%' or p_type = 'checkout.session.completed')
     and exists (
       select from cajex.workspace_billing b
       where b.workspace_id = v_b.workspace_id and b.stripe_subscription_id = v_sub
         and coalesce(b.subscription_status, 'active') not in ('canceled', 'incomplete_expired')
         and (b.seats_paid is distinct from b.seats_used
              or (p_type = 'checkout.session.completed' and v_b.stripe_subscription_id is distinct from v_sub))) then
    perform cajex_private.enqueue_platform_job(
      v_b.workspace_id, 'billing.sync_seats', '{}'::jsonb, 'seats', now() + cajex_private.seat_sync_delay());
  end if;

  if v_new_plan is not null and v_new_plan <> v_plan then
    update cajex.workspaces w set plan = v_new_plan where w.id = v_b.workspace_id;
    insert into cajex.audit_log (workspace_id, actor, action, target_type, target_id, details)
    values (v_b.workspace_id, 'stripe', 'billing.plan_changed', 'workspace', v_b.workspace_id::text,
            jsonb_build_object('from', v_plan, 'to', v_new_plan, 'source', p_type, 'event_id', p_event_id));
  end if;
  update cajex_private.stripe_events
  set outcome = v_outcome, workspace_id = v_b.workspace_id
  where event_id = p_event_id;
  return v_outcome;
end;
$$;
alter function cajex_private.apply_stripe_event(text, text, bigint, text, jsonb) owner to cajex_definer;
comment on function cajex_private.apply_stripe_event(text, text, bigint, text, jsonb) is
  'Apply a verified Stripe event once; returns duplicate, unmapped, stale, ignored or applied.';

-- A subscription the Stripe API has just returned to the open workspace's
-- owner (subscribing with a card on file, without Checkout), recorded as its
-- webhook will record it. It applies to the open workspace's own customer
-- only: the webhook (cajex_webhook) applies events for any customer, and a
-- request may not.
create or replace function cajex.record_subscription(p_kind text, p_created bigint, p_object jsonb)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_customer text;
begin
  perform cajex_private.require_permission('billing.manage');
  if p_kind is null or p_kind not in ('customer.subscription.created', 'customer.subscription.updated')
     or jsonb_typeof(p_object) is distinct from 'object'
     or coalesce(p_object ->> 'subscription_id', '') !~ '^sub_[A-Za-z0-9]{1,250}$' then
    raise exception 'that is not a subscription the Stripe API returned'
      using errcode = 'CXINV', detail = 'subscription';
  end if;
  select b.stripe_customer_id into v_customer from cajex.workspace_billing b where b.workspace_id = v_ws;
  if v_customer is null then
    raise exception 'this workspace has no Stripe customer yet'
      using errcode = 'CXINV', detail = 'customer',
            hint = 'Record the customer (cajex.record_stripe_customer) before its subscription.';
  end if;
  return cajex_private.apply_stripe_event(
    format('api:%s:%s:%s:%s', p_object ->> 'subscription_id', p_kind,
           p_object ->> 'quantity', p_object ->> 'plan'),
    p_kind, coalesce(p_created, 0), v_customer, p_object);
end;
$$;
comment on function cajex.record_subscription(text, bigint, jsonb) is
  'Record a subscription the Stripe API returned for the open workspace''s own customer.';

--------------------------------------------------------------------------------
-- PostgREST: the open workspace's billing, under the caller's RLS (owners
-- and admins see one row, everyone else none).
create or replace view api.billing
with (security_invoker = true)
as
  select b.workspace_id, w.plan, b.seats_used, b.seats_paid, b.subscription_status,
         b.current_period_end, b.cancel_at_period_end, b.grace_until,
         coalesce(b.grace_until <= now(), false) as limited
  from cajex.workspace_billing b
  join cajex.workspaces w on w.id = b.workspace_id;
