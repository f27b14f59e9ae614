-- Per-workspace AI: settings (with the provider API key sealed by
-- cajex/crypto.py), the token budget's counters, and the usage record.
-- Written only by the functions in functions/610_ai.sql.

--------------------------------------------------------------------------------
-- One row per workspace that configured AI. The API key is a cajex.crypto
-- ciphertext (row id: the workspace id); only its last four characters are
-- kept in the clear, for the settings page.
create table cajex.ai_settings (
  workspace_id uuid primary key references cajex.workspaces (id) on delete cascade,
  enabled boolean not null default false,
  provider text not null default 'anthropic'
    check (provider in ('anthropic', 'openai', 'openai_compatible')),
  model text not null default 'claude-sonnet-4-5'
    check (model ~ '^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$'),
  base_url text check (char_length(base_url) <= 300 and base_url ~ '^https?://[^\s]+$'),
  api_key bytea check (octet_length(api_key) <= 4096),
  api_key_last4 text check (char_length(api_key_last4) <= 8),
  budget_tokens bigint not null default 200000 check (budget_tokens >= 0),
  budget_period text not null default 'month' check (budget_period in ('day', 'month')),
  -- Optional per-task budgets in the same period: {"project_summary": 50000}.
  task_budgets jsonb not null default '{}' check (jsonb_typeof(task_budgets) = 'object'),
  max_output_tokens integer not null default 1024 check (max_output_tokens between 16 and 32000),
  timeout_seconds integer not null default 60 check (timeout_seconds between 1 and 600),
  updated_at timestamptz not null default now(),
  updated_by uuid
);
alter table cajex.ai_settings enable row level security;
alter table cajex.ai_settings force row level security;

--------------------------------------------------------------------------------
-- Budget counters: one row per workspace, period and scope ('all', the
-- workspace's own budget; 'task:<name>' for a per-task budget; 'plan', the
-- plan's monthly quota when the workspace's own period is a day). A reservation is one conditional
-- update of this row (used + reserved + n <= limit), so concurrent requests
-- queue on the row lock and can never overspend; settling moves the actual
-- tokens from reserved to used. notified_at: the admins were told this
-- period's budget is spent (once per period).
create table cajex.ai_budget_counters (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  period_start date not null,
  scope text not null check (scope ~ '^(all|plan|task:[a-z_]{1,40})$'),
  reserved_tokens bigint not null default 0 check (reserved_tokens >= 0),
  used_tokens bigint not null default 0 check (used_tokens >= 0),
  notified_at timestamptz,
  primary key (workspace_id, period_start, scope)
);
alter table cajex.ai_budget_counters enable row level security;
alter table cajex.ai_budget_counters force row level security;

--------------------------------------------------------------------------------
-- Usage: actual input and output tokens by workspace, day, model and task
-- (billing shows it). Failed calls count requests but no tokens.
create table cajex.ai_usage (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  day date not null,
  model text not null check (char_length(model) <= 100),
  task text not null check (task ~ '^[a-z_]{1,40}$'),
  requests integer not null default 0,
  failed_requests integer not null default 0,
  input_tokens bigint not null default 0,
  output_tokens bigint not null default 0,
  primary key (workspace_id, day, model, task)
);
alter table cajex.ai_usage enable row level security;
alter table cajex.ai_usage force row level security;
-- The usage page and billing: a workspace's recent days (served by the primary key).

-- Register the sealed column for data key rotation (functions are applied
-- after the versioned files, so the registry row is written here directly).
alter table cajex_private.encrypted_columns no force row level security;
insert into cajex_private.encrypted_columns (table_name, column_name, key_columns)
values ('cajex.ai_settings', 'api_key', '{workspace_id}')
on conflict do nothing;
alter table cajex_private.encrypted_columns force row level security;

--------------------------------------------------------------------------------
-- Reservations in flight: what a call took from the budget before calling
-- the provider, returned (settled) by id when it ends, so a settlement is
-- safe to repeat and can return only what was taken.
create table cajex.ai_reservations (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  period_start date not null,
  task text not null check (task ~ '^[a-z_]{1,40}$'),
  task_scoped boolean not null,
  -- The month whose plan quota the call also counts against (a daily budget
  -- under a plan with a monthly quota), else null.
  plan_month date,
  tokens bigint not null check (tokens > 0),
  created_at timestamptz not null default now(),
  primary key (workspace_id, id)
);
alter table cajex.ai_reservations enable row level security;
alter table cajex.ai_reservations force row level security;
