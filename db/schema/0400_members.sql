-- Members: invitations, the onboarding wizard's saved progress and each
-- workspace's branding. Written only by the functions in
-- db/functions/400_members.sql; policies in db/policies/400_members.sql.

--------------------------------------------------------------------------------
-- Invitations: an admin invites an address with a role. The token is random
-- and only its SHA-256 is stored; the link carries the token itself, so a
-- copy of this table opens nothing. Single use: accepting, declining,
-- revoking or resending ends a token. Pending invitations reserve a seat
-- (cajex_private.invite_one counts them), so a plan cannot be oversold by
-- invitations that are accepted later; acceptance checks the seat again.
create table cajex.invitations (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  email text not null
    check (char_length(email) <= 320 and email = lower(email) and email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
  role text not null check (role in ('admin', 'member', 'viewer')),
  token_hash bytea not null check (octet_length(token_hash) = 32),
  status text not null default 'pending'
    check (status in ('pending', 'accepted', 'declined', 'revoked', 'replaced')),
  invited_by uuid references cajex.users (id) on delete set null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  ended_at timestamptz,
  accepted_by uuid references cajex.users (id) on delete set null,
  primary key (workspace_id, id),
  check ((status = 'pending') = (ended_at is null))
);
alter table cajex.invitations enable row level security;
alter table cajex.invitations force row level security;
-- "Already invited": at most one pending invitation per address.
create unique index invitations_pending_email_key on cajex.invitations (workspace_id, email)
  where status = 'pending';
-- The accept link: a token names its invitation (the workspace is checked
-- against the link's slug after the lookup).
create index invitations_token_idx on cajex.invitations (token_hash);
-- The members page lists pending invitations, newest first.
create index invitations_recent_idx on cajex.invitations (workspace_id, created_at desc);

--------------------------------------------------------------------------------
-- The onboarding wizard's progress, one row per user, so leaving and coming
-- back resumes at the step where they stopped. A platform table keyed by the
-- user: the workspace does not exist before the wizard's second step.
create table cajex.onboarding_drafts (
  user_id uuid primary key references cajex.users (id) on delete cascade,
  step text not null check (step in ('organisation', 'plan', 'team', 'defaults', 'done')),
  data jsonb not null default '{}' check (jsonb_typeof(data) = 'object' and pg_column_size(data) < 65536),
  workspace_id uuid references cajex.workspaces (id) on delete set null,
  updated_at timestamptz not null default now()
);
alter table cajex.onboarding_drafts enable row level security;
alter table cajex.onboarding_drafts force row level security;

--------------------------------------------------------------------------------
-- Branding: brand colours and the logo, re-encoded by the server before it
-- gets here (cajex/branding.py), so the bytes are always a clean image of the
-- stated type.
create table cajex.workspace_branding (
  workspace_id uuid primary key references cajex.workspaces (id) on delete cascade,
  primary_colour text check (primary_colour ~ '^#[0-9a-f]{6}$'),
  accent_colour text check (accent_colour ~ '^#[0-9a-f]{6}$'),
  logo bytea check (octet_length(logo) <= 1048576),
  logo_type text check (logo_type in ('image/png', 'image/jpeg', 'image/webp')),
  logo_width integer check (logo_width between 1 and 4096),
  logo_height integer check (logo_height between 1 and 4096),
  logo_sha256 text check (logo_sha256 ~ '^[0-9a-f]{64}$'),
  updated_by uuid references cajex.users (id) on delete set null,
  updated_at timestamptz not null default now(),
  check ((logo is null) = (logo_type is null) and (logo is null) = (logo_sha256 is null))
);
alter table cajex.workspace_branding enable row level security;
alter table cajex.workspace_branding force row level security;

--------------------------------------------------------------------------------
-- The matrix rows of this area that the core file does not have: moving
-- projects to another workspace of the same organisation, which needs the
-- permission in both workspaces (cajex.move_projects checks the second one
-- against this same table).
alter table cajex.role_permissions no force row level security;
insert into cajex.role_permissions (permission, role) values
  ('project.move', 'owner'),
  ('project.move', 'admin');
alter table cajex.role_permissions force row level security;
