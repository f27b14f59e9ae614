-- Billing: plan prices and AI quotas, each workspace's seats and Stripe
-- subscription, and the Stripe events already applied.

--------------------------------------------------------------------------------
-- Plans as data, continued. The Stripe price id of each plan is
-- configuration (STRIPE_PRICE_<PLAN>), not data: test and live mode differ.
-- ai_monthly_tokens is the AI quota per workspace and calendar month (null:
-- no quota); the AI area reads it.
alter table cajex.plans
  add column seat_price_cents integer not null default 0 check (seat_price_cents >= 0),
  add column currency text not null default 'usd' check (currency ~ '^[a-z]{3}$'),
  add column ai_monthly_tokens bigint check (ai_monthly_tokens >= 0);

alter table cajex.plans no force row level security;
update cajex.plans p set seat_price_cents = v.price, ai_monthly_tokens = v.tokens
from (values
  ('free', 0, 0::bigint),
  ('basic', 800, 200000),
  ('pro', 1500, 1000000),
  ('team', 2500, 5000000),
  ('enterprise', 4000, 20000000)
) as v (code, price, tokens)
where p.code = v.code;
alter table cajex.plans force row level security;

--------------------------------------------------------------------------------
-- One row per workspace: the seat counter (maintained by a trigger on
-- memberships, functions/500), what Stripe bills, and the payment state.
-- Written only by definer functions and the seat trigger.
create table cajex.workspace_billing (
  workspace_id uuid primary key references cajex.workspaces (id) on delete cascade,
  -- Active memberships, kept by the trigger; seat_sequence counts seat
  -- changes and names each quantity sync (idempotency keys).
  seats_used integer not null default 0 check (seats_used >= 0),
  seat_sequence bigint not null default 0,
  -- The quantity Stripe bills, and the seat_sequence it was synced at.
  seats_paid integer check (seats_paid >= 0),
  synced_sequence bigint not null default 0,
  stripe_customer_id text check (char_length(stripe_customer_id) between 1 and 255),
  stripe_subscription_id text check (char_length(stripe_subscription_id) between 1 and 255),
  -- The subscription's one item, whose quantity is the seat count.
  stripe_item_id text check (char_length(stripe_item_id) between 1 and 255),
  subscription_status text check (subscription_status in (
    'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled',
    'unpaid', 'paused')),
  current_period_end timestamptz,
  cancel_at_period_end boolean not null default false,
  -- Why a cancellation was asked for: the owner, or the workspace's deletion
  -- (a restore undoes only the latter).
  cancel_reason text check (cancel_reason in ('owner', 'workspace_deleted')),
  -- A failed payment opens a grace period; after it the workspace is limited.
  payment_failed_at timestamptz,
  grace_until timestamptz,
  -- The newest Stripe object timestamp applied: older events never move the
  -- subscription backwards.
  last_event_created bigint not null default 0,
  updated_at timestamptz not null default now()
);
alter table cajex.workspace_billing enable row level security;
alter table cajex.workspace_billing force row level security;
-- A webhook finds its workspace by Stripe customer id.
create index workspace_billing_customer_idx on cajex.workspace_billing (stripe_customer_id)
  where stripe_customer_id is not null;

-- Every existing workspace gets its row, counted once here; from now on the
-- trigger keeps it.
alter table cajex.workspace_billing no force row level security;
insert into cajex.workspace_billing (workspace_id, seats_used)
select w.id, (select count(*) from cajex.memberships m
              where m.workspace_id = w.id and m.status = 'active')
from cajex.workspaces w;
alter table cajex.workspace_billing force row level security;

--------------------------------------------------------------------------------
-- Stripe events received: the event id makes each one apply once. A
-- platform table (an event may belong to no workspace); only definer
-- functions touch it.
create table cajex_private.stripe_events (
  event_id text primary key check (char_length(event_id) between 1 and 255),
  event_type text not null check (char_length(event_type) between 1 and 100),
  workspace_id uuid references cajex.workspaces (id) on delete cascade,
  outcome text not null check (outcome in ('applied', 'stale', 'ignored', 'unmapped')),
  received_at timestamptz not null default now()
);
alter table cajex_private.stripe_events enable row level security;
alter table cajex_private.stripe_events force row level security;
-- The billing page's recent events, and the purge of a workspace.
create index stripe_events_workspace_idx on cajex_private.stripe_events (workspace_id, received_at desc);
