-- Enterprise SSO: per-workspace OIDC and SAML 2.0 connections, the email
-- domains that route "Sign in with SSO", the identities the IdPs vouched for,
-- pending SAML requests and the replay cache. Written only by the functions
-- in db/functions/200_sso.sql; policies in db/policies/200_sso.sql.

--------------------------------------------------------------------------------
-- SSO connections: one identity provider of one workspace. Written by admins
-- (sso.configure) and the `cajex sso` command (a job context). The OIDC
-- client secret is stored sealed with the workspace's data key
-- (cajex/crypto.py), never in clear. SAML signing certificates are pinned
-- from the IdP's metadata: several at once for a rollover.
create table cajex.sso_connections (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  type text not null check (type in ('oidc', 'saml')),
  name text not null check (char_length(btrim(name)) between 1 and 200),
  status text not null default 'draft' check (status in ('draft', 'enabled', 'disabled')),
  -- OIDC
  oidc_issuer text check (char_length(oidc_issuer) <= 2000),
  oidc_discovery_url text check (char_length(oidc_discovery_url) <= 2000),
  oidc_client_id text check (char_length(oidc_client_id) <= 500),
  oidc_client_secret bytea,
  -- SAML
  saml_idp_entity_id text check (char_length(saml_idp_entity_id) <= 2000),
  saml_sso_url text check (char_length(saml_sso_url) <= 2000),
  saml_slo_url text check (char_length(saml_slo_url) <= 2000),
  saml_certificates text[] not null default '{}'
    check (cardinality(saml_certificates) <= 8 and array_position(saml_certificates, null) is null),
  saml_metadata_url text check (char_length(saml_metadata_url) <= 2000),
  allow_idp_initiated boolean not null default false,
  allow_sha1 boolean not null default false,
  sign_requests boolean not null default false,
  -- Both
  default_role text not null default 'member' check (default_role in ('admin', 'member', 'viewer')),
  clock_skew_seconds integer not null default 120 check (clock_skew_seconds between 0 and 600),
  -- Free-form provider settings: group attribute name, Entra tenant id.
  settings jsonb not null default '{}' check (jsonb_typeof(settings) = 'object'),
  created_by uuid references cajex.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_tested_at timestamptz,
  primary key (workspace_id, id),
  check (type <> 'oidc' or (oidc_issuer is not null and oidc_client_id is not null)),
  check (type <> 'saml' or (saml_idp_entity_id is not null and saml_sso_url is not null
                            and cardinality(saml_certificates) >= 1))
);
alter table cajex.sso_connections enable row level security;
alter table cajex.sso_connections force row level security;
-- The settings page lists a workspace's connections.
create index sso_connections_list_idx on cajex.sso_connections (workspace_id, created_at);
-- Routing an unauthenticated callback by connection id (definer lookup).
create index sso_connections_by_id_idx on cajex.sso_connections (id);

--------------------------------------------------------------------------------
-- Email domains a workspace claims for one of its connections. The unique
-- key leads with workspace_id like every other; that a domain routes to
-- exactly ONE connection platform-wide is kept by cajex_private.sso_domain_routes
-- below, written only by a trigger (definer) on this table.
create table cajex.sso_domains (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  domain text not null
    check (char_length(domain) between 3 and 253 and domain = lower(domain)
           and domain ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$'),
  connection_id uuid not null,
  created_at timestamptz not null default now(),
  primary key (workspace_id, domain),
  foreign key (workspace_id, connection_id)
    references cajex.sso_connections (workspace_id, id) on delete cascade
);
alter table cajex.sso_domains enable row level security;
alter table cajex.sso_domains force row level security;
-- The settings page shows each connection's domains.
create index sso_domains_connection_idx on cajex.sso_domains (workspace_id, connection_id);

-- The platform-wide routing table: domain -> the one connection. A platform
-- table (no workspace owns a domain name), readable by nobody but the
-- definer role; "Sign in with SSO" asks cajex.sso_route_for_email().
create table cajex_private.sso_domain_routes (
  domain text primary key,
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  connection_id uuid not null
);
alter table cajex_private.sso_domain_routes enable row level security;
alter table cajex_private.sso_domain_routes force row level security;

--------------------------------------------------------------------------------
-- Who an IdP vouched for: (connection, subject) -> user. A returning person
-- is found by subject, never by email; the groups of the last sign-in are
-- kept whole (multi-valued attributes) for the role mapping and the page.
create table cajex.sso_identities (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  connection_id uuid not null,
  subject text not null check (char_length(subject) between 1 and 1024),
  user_id uuid not null references cajex.users (id) on delete cascade,
  groups text[] not null default '{}' check (cardinality(groups) <= 1000),
  groups_known boolean not null default true,
  created_at timestamptz not null default now(),
  last_sign_in_at timestamptz not null default now(),
  primary key (workspace_id, connection_id, subject),
  foreign key (workspace_id, connection_id)
    references cajex.sso_connections (workspace_id, id) on delete cascade
);
alter table cajex.sso_identities enable row level security;
alter table cajex.sso_identities force row level security;
-- Removing a member ends their identities' sessions; "who is this user here".
create index sso_identities_user_idx on cajex.sso_identities (workspace_id, user_id);

--------------------------------------------------------------------------------
-- Pending SP-initiated requests: SAML AuthnRequest/LogoutRequest ids
-- (InResponseTo) and OIDC state. Consumed once; expired rows are swept on
-- each new request.
create table cajex.sso_requests (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  request_id text not null check (char_length(request_id) between 16 and 200),
  connection_id uuid not null,
  kind text not null check (kind in ('authn', 'logout')),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  primary key (workspace_id, request_id),
  foreign key (workspace_id, connection_id)
    references cajex.sso_connections (workspace_id, id) on delete cascade
);
alter table cajex.sso_requests enable row level security;
alter table cajex.sso_requests force row level security;
-- The sweep of expired requests.
create index sso_requests_expiry_idx on cajex.sso_requests (workspace_id, expires_at);

--------------------------------------------------------------------------------
-- The replay cache: SAML assertion ids, logout request ids and back-channel
-- logout token jtis seen, each kept until the message would have expired
-- anyway. In the database, so a replay is refused after a restart and in
-- every process.
create table cajex.sso_replay_cache (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  connection_id uuid not null,
  kind text not null check (kind in ('saml_assertion', 'saml_logout', 'oidc_logout_jti')),
  item_id text not null check (char_length(item_id) between 1 and 512),
  expires_at timestamptz not null,
  primary key (workspace_id, connection_id, kind, item_id),
  foreign key (workspace_id, connection_id)
    references cajex.sso_connections (workspace_id, id) on delete cascade
);
alter table cajex.sso_replay_cache enable row level security;
alter table cajex.sso_replay_cache force row level security;
-- The sweep of expired entries.
create index sso_replay_cache_expiry_idx on cajex.sso_replay_cache (workspace_id, expires_at);

--------------------------------------------------------------------------------
-- Permissions: signing people in through an IdP is done by a job context
-- of the workspace (the callback has no user yet); the `cajex sso` command
-- configures connections as a job.
alter table cajex.role_permissions no force row level security;
insert into cajex.role_permissions (permission, role) values
  ('sso.configure', 'system'),
  ('sso.signin', 'system'),
  ('sso.read', 'owner'),
  ('sso.read', 'admin'),
  ('sso.read', 'system')
on conflict do nothing;
alter table cajex.role_permissions force row level security;
