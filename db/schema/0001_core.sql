-- The isolated core: people, organisations, workspaces, memberships, the
-- architecture work items (projects), sessions, the audit log, the job
-- outbox, per-workspace data keys and the verified request context.
--
-- Table units follow db/CONVENTIONS.md: intent, table, RLS on the next line,
-- indexes with the query they serve. Policies and grants live in
-- db/policies/, functions and triggers in db/functions/.

--------------------------------------------------------------------------------
-- Secrets that sign the request context. Only cajex_definer reads them: the
-- web app and workers hold the same secret outside the database, so SQL run
-- as cajex_app (an injection, say) cannot mint a context of its own.
create table cajex_private.context_keys (
  key_id text primary key,
  secret bytea not null check (octet_length(secret) >= 32),
  created_at timestamptz not null default now()
);
alter table cajex_private.context_keys enable row level security;
alter table cajex_private.context_keys force row level security;

--------------------------------------------------------------------------------
-- The verified context of the transaction running on each backend. Written
-- only by cajex_private.open_context (a definer function) after it checked
-- the signed token, the session and the membership; read by every policy
-- through cajex.current_workspace_id(). A row counts only for the transaction
-- that wrote it (opened_at = now(), the transaction's start), so a pooled
-- connection never carries a context into its next transaction. Unlogged:
-- it is meaningless after a crash, and skipping WAL keeps opening cheap.
create unlogged table cajex_private.active_contexts (
  backend_pid integer primary key,
  opened_at timestamptz not null,
  user_id uuid,
  session_id uuid,
  workspace_id uuid,
  member_role text,
  actor text not null
);
alter table cajex_private.active_contexts enable row level security;
alter table cajex_private.active_contexts force row level security;

--------------------------------------------------------------------------------
-- Global identities: a person is one user across all workspaces. Emails are
-- stored lowercased; sign-in identities (issuer, subject) live in
-- user_identities.
create table cajex.users (
  id uuid primary key default gen_random_uuid(),
  email text not null
    check (char_length(email) <= 320 and email = lower(email) and email ~ '^[^@\s]+@[^@\s]+$'),
  display_name text check (char_length(display_name) <= 200),
  created_at timestamptz not null default now(),
  disabled_at timestamptz
);
alter table cajex.users enable row level security;
alter table cajex.users force row level security;
-- Sign-in and invitation lookups by address.
create unique index users_email_key on cajex.users (email);

--------------------------------------------------------------------------------
-- Organisations group workspaces (a consultancy: one workspace per client).
-- An organisation owner sees the names, plans and seat counts of its
-- workspaces, never their data.
create table cajex.organisations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (char_length(btrim(name)) between 1 and 200),
  created_by uuid references cajex.users (id) on delete set null,
  created_at timestamptz not null default now()
);
alter table cajex.organisations enable row level security;
alter table cajex.organisations force row level security;

create table cajex.organisation_members (
  organisation_id uuid not null references cajex.organisations (id) on delete cascade,
  user_id uuid not null references cajex.users (id) on delete cascade,
  role text not null check (role in ('owner', 'member')),
  created_at timestamptz not null default now(),
  primary key (organisation_id, user_id)
);
alter table cajex.organisation_members enable row level security;
alter table cajex.organisation_members force row level security;
-- "Which organisations am I in?"
create index organisation_members_user_idx on cajex.organisation_members (user_id);

--------------------------------------------------------------------------------
-- Plans as data. The billing module adds prices and Stripe ids; the limits
-- and features here are what SQL gates check.
create table cajex.plans (
  code text primary key check (code ~ '^[a-z]+$'),
  name text not null,
  rank integer not null unique,
  max_seats integer check (max_seats > 0),
  features text[] not null default '{}'
);
alter table cajex.plans enable row level security;
alter table cajex.plans force row level security;

-- Seed rows: the owner is bound by forced RLS like everyone, so seeding
-- lifts the force for the statement and restores it at once.
alter table cajex.plans no force row level security;
insert into cajex.plans (code, name, rank, max_seats, features) values
  ('free', 'Free', 0, 3, '{social_login,magic_link}'),
  ('basic', 'Basic', 1, 10, '{social_login,magic_link,ai}'),
  ('pro', 'Pro', 2, 50, '{social_login,magic_link,ai,export}'),
  ('team', 'Team', 3, 250, '{social_login,magic_link,ai,export}'),
  ('enterprise', 'Enterprise', 4, null, '{social_login,magic_link,ai,export,sso,scim}');
alter table cajex.plans force row level security;

--------------------------------------------------------------------------------
-- Workspaces: the unit of isolation. `id` is the workspace_id every owned row
-- carries. Soft delete keeps the row with status 'deleted' and a purge date;
-- the purge job later leaves only a tombstone (status 'purged').
create table cajex.workspaces (
  id uuid primary key default gen_random_uuid(),
  organisation_id uuid not null references cajex.organisations (id) on delete restrict,
  slug text not null check (slug ~ '^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$'),
  name text not null check (char_length(btrim(name)) between 1 and 200),
  plan text not null default 'free' references cajex.plans (code) on delete restrict,
  status text not null default 'active' check (status in ('active', 'deleted', 'purged')),
  -- When set, members reach this workspace only with a session that its own
  -- identity provider opened (see cajex_private.open_context).
  sso_enforced boolean not null default false,
  settings jsonb not null default '{}' check (jsonb_typeof(settings) = 'object'),
  created_at timestamptz not null default now(),
  deleted_at timestamptz,
  deleted_by uuid,
  purge_after timestamptz,
  purged_at timestamptz,
  check ((status = 'active') = (deleted_at is null))
);
alter table cajex.workspaces enable row level security;
alter table cajex.workspaces force row level security;
-- Routing: every /w/<slug>/ request resolves its workspace by slug.
create unique index workspaces_slug_key on cajex.workspaces (slug);
-- The organisation page lists its workspaces.
create index workspaces_organisation_idx on cajex.workspaces (organisation_id);
-- The purge job finds workspaces past their date.
create index workspaces_purge_idx on cajex.workspaces (purge_after) where status = 'deleted';

--------------------------------------------------------------------------------
-- Memberships: a user's role in a workspace. Exactly one owner per workspace
-- (the unique index below allows at most one; a deferred trigger in
-- functions/020 checks at least one at commit). Deactivated memberships
-- (SCIM active=false) keep their row but open no context and take no seat.
create table cajex.memberships (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  user_id uuid not null references cajex.users (id) on delete cascade,
  role text not null check (role in ('owner', 'admin', 'member', 'viewer')),
  status text not null default 'active' check (status in ('active', 'deactivated')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (workspace_id, user_id),
  check (role <> 'owner' or status = 'active')
);
alter table cajex.memberships enable row level security;
alter table cajex.memberships force row level security;
create unique index memberships_one_owner_key on cajex.memberships (workspace_id) where role = 'owner';
-- "My workspaces" (switcher, /api/v1/me) and opening a context.
create index memberships_user_idx on cajex.memberships (user_id, workspace_id);

--------------------------------------------------------------------------------
-- Projects: the architecture work items members create.
create table cajex.projects (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null check (char_length(btrim(name)) between 1 and 200),
  description text not null default '' check (char_length(description) <= 20000),
  tags text[] not null default '{}'
    check (cardinality(tags) <= 32 and array_position(tags, null) is null),
  status text not null default 'active' check (status in ('draft', 'active', 'archived')),
  created_by uuid references cajex.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (workspace_id, id)
);
alter table cajex.projects enable row level security;
alter table cajex.projects force row level security;
-- The projects list: newest first, keyset-paginated on (created_at, id).
create index projects_newest_idx on cajex.projects (workspace_id, created_at desc, id desc);

--------------------------------------------------------------------------------
-- Server-side sessions. A session is global to the user (one sign-in opens
-- every workspace they belong to) unless an identity provider opened it, in
-- which case sso_workspace_id names the workspace whose IdP vouched for it.
-- Revocation takes effect on the very next request: every request's context
-- is opened through this row.
create table cajex.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references cajex.users (id) on delete cascade,
  -- sha256 of the cookie's secret part; the secret itself is never stored.
  token_hash bytea not null,
  auth_method text not null,
  sso_workspace_id uuid references cajex.workspaces (id) on delete cascade,
  sso_connection_id uuid,
  idp_session_id text,
  idp_subject text,
  user_agent text check (char_length(user_agent) <= 512),
  created_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  idle_expires_at timestamptz not null,
  absolute_expires_at timestamptz not null,
  revoked_at timestamptz,
  revoked_reason text
);
alter table cajex.sessions enable row level security;
alter table cajex.sessions force row level security;
create unique index sessions_token_hash_key on cajex.sessions (token_hash);
-- "My sessions" page and sign-out-everywhere.
create index sessions_user_idx on cajex.sessions (user_id) where revoked_at is null;
-- Single logout by IdP session id or subject.
create index sessions_idp_idx on cajex.sessions (sso_workspace_id, idp_session_id)
  where revoked_at is null;

--------------------------------------------------------------------------------
-- The audit log: who did what, append-only. Every change made through the
-- business functions writes one row in the same transaction.
create table cajex.audit_log (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id bigint generated always as identity,
  occurred_at timestamptz not null default now(),
  actor_user_id uuid,
  actor text not null,
  action text not null check (action ~ '^[a-z_]+\.[a-z_.]+$'),
  target_type text,
  target_id text,
  details jsonb not null default '{}' check (jsonb_typeof(details) = 'object'),
  primary key (workspace_id, id)
);
alter table cajex.audit_log enable row level security;
alter table cajex.audit_log force row level security;
-- The activity views list the newest events of a workspace.
create index audit_log_recent_idx on cajex.audit_log (workspace_id, occurred_at desc);

--------------------------------------------------------------------------------
-- Organisation-level audit: events about workspaces as a whole that must
-- outlive the workspace (created, deleted, restored, purged).
create table cajex.organisation_audit_log (
  organisation_id uuid not null references cajex.organisations (id) on delete cascade,
  id bigint generated always as identity,
  occurred_at timestamptz not null default now(),
  actor_user_id uuid,
  action text not null check (action ~ '^[a-z_]+\.[a-z_.]+$'),
  workspace_id uuid,
  details jsonb not null default '{}' check (jsonb_typeof(details) = 'object'),
  primary key (organisation_id, id)
);
alter table cajex.organisation_audit_log enable row level security;
alter table cajex.organisation_audit_log force row level security;

--------------------------------------------------------------------------------
-- The transactional outbox: a job is written here in the same transaction as
-- the change that causes it, and the relay (jobs/outbox.py) hands it to RQ.
-- A job is never lost when Redis is down and never enqueued for a
-- transaction that rolled back. workspace_id is null for jobs that belong to
-- no workspace (a sign-in email), so this is a platform table, not a
-- workspace-owned one; its policies still scope reads by workspace.
create table cajex.outbox (
  id bigint generated always as identity primary key,
  workspace_id uuid references cajex.workspaces (id) on delete cascade,
  kind text not null check (kind ~ '^[a-z_]+(\.[a-z_]+)*$'),
  payload jsonb not null default '{}' check (jsonb_typeof(payload) = 'object'),
  -- Pending jobs with the same key coalesce into one (a burst of seat
  -- changes makes one Stripe update).
  dedupe_key text,
  created_at timestamptz not null default now(),
  run_after timestamptz not null default now(),
  enqueued_at timestamptz,
  started_at timestamptz,
  done_at timestamptz,
  attempts integer not null default 0,
  last_error text
);
alter table cajex.outbox enable row level security;
alter table cajex.outbox force row level security;
-- The relay's sweep: pending jobs in order.
create index outbox_pending_idx on cajex.outbox (run_after, id) where done_at is null;
create unique index outbox_dedupe_key on cajex.outbox (workspace_id, kind, dedupe_key)
  nulls not distinct where dedupe_key is not null and done_at is null and started_at is null;
-- A workspace's job history (export page, billing page).
create index outbox_workspace_idx on cajex.outbox (workspace_id, created_at desc);

--------------------------------------------------------------------------------
-- Per-workspace data keys for envelope encryption (cajex/crypto.py). The key
-- is stored only wrapped by the master key, which lives outside the
-- database. Purging a workspace deletes its keys: every ciphertext of that
-- workspace, in backups too, becomes unreadable.
create table cajex.workspace_keys (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  version integer not null check (version > 0),
  wrapped_key bytea not null,
  master_key_id text not null,
  state text not null default 'active' check (state in ('active', 'retired')),
  created_at timestamptz not null default now(),
  primary key (workspace_id, version)
);
alter table cajex.workspace_keys enable row level security;
alter table cajex.workspace_keys force row level security;
create unique index workspace_keys_one_active_key on cajex.workspace_keys (workspace_id)
  where state = 'active';

--------------------------------------------------------------------------------
-- The permission matrix: which role may do what, in one place. Functions
-- check it through cajex_private.require_permission(); docs/permissions.md
-- is generated from it. 'system' is a job acting for the workspace.
create table cajex.role_permissions (
  permission text not null check (permission ~ '^[a-z_]+\.[a-z_]+$'),
  role text not null check (role in ('owner', 'admin', 'member', 'viewer', 'system')),
  primary key (permission, role)
);
alter table cajex.role_permissions enable row level security;
alter table cajex.role_permissions force row level security;

alter table cajex.role_permissions no force row level security;
insert into cajex.role_permissions (permission, role)
select p.permission, r.role
from (values
  ('project.read',       '{owner,admin,member,viewer,system}'),
  ('project.write',      '{owner,admin,member,system}'),
  ('member.read',        '{owner,admin,member,viewer,system}'),
  ('member.invite',      '{owner,admin,system}'),
  ('member.change_role', '{owner,admin,system}'),
  ('member.remove',      '{owner,admin,system}'),
  ('ownership.transfer', '{owner}'),
  ('branding.change',    '{owner,admin}'),
  ('billing.manage',     '{owner,system}'),
  ('billing.read',       '{owner,admin,system}'),
  ('ai.configure',       '{owner,admin}'),
  ('ai.use',             '{owner,admin,member,system}'),
  ('sso.configure',      '{owner,admin}'),
  ('scim.configure',     '{owner,admin}'),
  ('export.request',     '{owner,admin}'),
  ('audit.read',         '{owner,admin,system}'),
  ('workspace.settings', '{owner,admin}'),
  ('workspace.delete',   '{owner}')
) as p (permission, roles)
cross join lateral unnest(p.roles::text[]) as r (role);
alter table cajex.role_permissions force row level security;
