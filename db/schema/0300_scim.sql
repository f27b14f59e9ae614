-- SCIM provisioning and group-based roles. Written only by the functions in
-- db/functions/300_scim.sql; policies and grants in db/policies/300_scim.sql.

--------------------------------------------------------------------------------
-- Group-based role mapping, shared by SCIM and SSO: an identity provider's
-- group (its id or its name, compared case-insensitively) grants a role to
-- the workspace members in it. Owner is never granted by a group: ownership
-- moves only by transfer. Written by owners and admins
-- (cajex.set_group_role_mapping).
create table cajex.group_role_mappings (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  group_key text not null check (char_length(btrim(group_key)) between 1 and 256),
  role text not null check (role in ('admin', 'member', 'viewer')),
  created_by uuid references cajex.users (id) on delete set null,
  created_at timestamptz not null default now(),
  primary key (workspace_id, id)
);
alter table cajex.group_role_mappings enable row level security;
alter table cajex.group_role_mappings force row level security;
-- One mapping per group key; recomputing a role looks keys up by lower().
create unique index group_role_mappings_key_key
  on cajex.group_role_mappings (workspace_id, lower(group_key));

--------------------------------------------------------------------------------
-- Group membership facts reported at sign-in by an identity provider (the
-- SAML/OIDC groups claim), one row per member and group. SCIM's own groups
-- live in scim_groups/scim_group_members below; the role recompute reads
-- both. Written by cajex_private.set_member_groups.
create table cajex.member_group_facts (
  workspace_id uuid not null,
  user_id uuid not null,
  source text not null check (source in ('sso')),
  group_key text not null check (char_length(group_key) between 1 and 256),
  updated_at timestamptz not null default now(),
  primary key (workspace_id, user_id, source, group_key),
  foreign key (workspace_id, user_id) references cajex.memberships (workspace_id, user_id)
    on delete cascade
);
alter table cajex.member_group_facts enable row level security;
alter table cajex.member_group_facts force row level security;

--------------------------------------------------------------------------------
-- What a group mapping changed: the role the member had before a mapped
-- group granted them another, so that leaving the last mapped group gives
-- back the role an admin (or the default) set. No row: the role is the
-- admin's. Written by cajex_private.recompute_member_role.
create table cajex.group_role_grants (
  workspace_id uuid not null,
  user_id uuid not null,
  base_role text not null check (base_role in ('admin', 'member', 'viewer')),
  granted_role text not null check (granted_role in ('admin', 'member', 'viewer')),
  updated_at timestamptz not null default now(),
  primary key (workspace_id, user_id),
  foreign key (workspace_id, user_id) references cajex.memberships (workspace_id, user_id)
    on delete cascade
);
alter table cajex.group_role_grants enable row level security;
alter table cajex.group_role_grants force row level security;

--------------------------------------------------------------------------------
-- SCIM bearer tokens of a workspace. Only the SHA-256 of the token is kept;
-- several may be live at once (rotation); revoking sets revoked_at. The
-- token names its workspace: cajex_private.open_scim_context looks the hash
-- up before any context exists.
create table cajex.scim_tokens (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  label text not null check (char_length(btrim(label)) between 1 and 100),
  token_hash bytea not null check (octet_length(token_hash) = 32),
  created_by uuid references cajex.users (id) on delete set null,
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at timestamptz,
  revoked_by uuid references cajex.users (id) on delete set null,
  primary key (workspace_id, id)
);
alter table cajex.scim_tokens enable row level security;
alter table cajex.scim_tokens force row level security;
-- Every SCIM request: the bearer token's hash names its row (and workspace).
create index scim_tokens_hash_idx on cajex.scim_tokens (token_hash) where revoked_at is null;

--------------------------------------------------------------------------------
-- A provisioned user's SCIM resource in one workspace. The person is the
-- global cajex.users row (found by email); this row holds what the identity
-- provider said about them here, and its own id, so the same person has a
-- different SCIM id in each workspace. active is memberships.status.
create table cajex.scim_users (
  workspace_id uuid not null,
  id uuid not null default gen_random_uuid(),
  user_id uuid not null,
  user_name text not null check (char_length(btrim(user_name)) between 1 and 320),
  external_id text check (char_length(external_id) <= 256),
  display_name text check (char_length(display_name) <= 256),
  given_name text check (char_length(given_name) <= 256),
  family_name text check (char_length(family_name) <= 256),
  formatted_name text check (char_length(formatted_name) <= 512),
  emails jsonb not null default '[]' check (jsonb_typeof(emails) = 'array' and pg_column_size(emails) < 16384),
  employee_number text check (char_length(employee_number) <= 256),
  department text check (char_length(department) <= 256),
  manager_id text check (char_length(manager_id) <= 256),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (workspace_id, id),
  foreign key (workspace_id, user_id) references cajex.memberships (workspace_id, user_id)
    on delete cascade
);
alter table cajex.scim_users enable row level security;
alter table cajex.scim_users force row level security;
-- userName is unique per workspace, case-insensitively; filter userName eq.
create unique index scim_users_user_name_key on cajex.scim_users (workspace_id, lower(user_name));
-- One SCIM resource per member.
create unique index scim_users_user_key on cajex.scim_users (workspace_id, user_id);
-- filter externalId eq (Okta and Entra ID look users up by it).
create index scim_users_external_idx on cajex.scim_users (workspace_id, external_id);
-- The list, paginated in creation order.
create index scim_users_created_idx on cajex.scim_users (workspace_id, created_at, id);

--------------------------------------------------------------------------------
-- SCIM groups of a workspace and their members.
create table cajex.scim_groups (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  display_name text not null check (char_length(btrim(display_name)) between 1 and 256),
  external_id text check (char_length(external_id) <= 256),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (workspace_id, id)
);
alter table cajex.scim_groups enable row level security;
alter table cajex.scim_groups force row level security;
-- displayName is unique per workspace (filter displayName eq, uniqueness).
create unique index scim_groups_name_key on cajex.scim_groups (workspace_id, lower(display_name));
-- The list, paginated in creation order.
create index scim_groups_created_idx on cajex.scim_groups (workspace_id, created_at, id);

create table cajex.scim_group_members (
  workspace_id uuid not null,
  group_id uuid not null,
  scim_user_id uuid not null,
  primary key (workspace_id, group_id, scim_user_id),
  foreign key (workspace_id, group_id) references cajex.scim_groups (workspace_id, id) on delete cascade,
  foreign key (workspace_id, scim_user_id) references cajex.scim_users (workspace_id, id) on delete cascade
);
alter table cajex.scim_group_members enable row level security;
alter table cajex.scim_group_members force row level security;
-- A user's groups (the role recompute, the User resource's groups).
create index scim_group_members_user_idx on cajex.scim_group_members (workspace_id, scim_user_id);
