-- Sign-in for every plan: linked provider identities, magic links, rate-limit
-- counters, email deliveries, the workspace's allowed standard methods and
-- the workspace each user last opened.

--------------------------------------------------------------------------------
-- A provider identity (Google, Apple, GitHub) linked to a user. Keyed by
-- (issuer, subject), never by email: addresses change and get reassigned.
-- Written only by the sign-in definer functions; a user reads their own.
create table cajex.user_identities (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references cajex.users (id) on delete cascade,
  provider text not null check (provider in ('google', 'apple', 'github')),
  issuer text not null check (char_length(issuer) between 1 and 255),
  subject text not null check (char_length(subject) between 1 and 255),
  -- The address the provider asserted at link time, for display only.
  email text check (char_length(email) <= 320),
  email_verified boolean not null default false,
  created_at timestamptz not null default now(),
  last_used_at timestamptz not null default now()
);
alter table cajex.user_identities enable row level security;
alter table cajex.user_identities force row level security;
-- Sign-in: find the user of a provider identity.
create unique index user_identities_issuer_subject_key on cajex.user_identities (issuer, subject);
-- Linked accounts page.
create index user_identities_user_idx on cajex.user_identities (user_id);

--------------------------------------------------------------------------------
-- Magic links. Only the SHA-256 of the token is stored; the link is bound to
-- the address it was sent to and used at most once. Nobody reads this table
-- but the definer functions.
create table cajex.magic_links (
  id uuid primary key default gen_random_uuid(),
  token_hash bytea not null check (octet_length(token_hash) = 32),
  email text not null check (char_length(email) <= 320),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
alter table cajex.magic_links enable row level security;
alter table cajex.magic_links force row level security;
-- Redeeming a link.
create unique index magic_links_token_hash_key on cajex.magic_links (token_hash);
-- Cleanup of expired links.
create index magic_links_expires_idx on cajex.magic_links (expires_at);

--------------------------------------------------------------------------------
-- Rate-limit hits of sign-in requests. `bucket` is a keyed hash (of the
-- address or of the client address), never the value itself.
create table cajex.signin_rate_hits (
  bucket bytea not null check (octet_length(bucket) = 32),
  at timestamptz not null default now()
);
alter table cajex.signin_rate_hits enable row level security;
alter table cajex.signin_rate_hits force row level security;
-- Counting the hits of one bucket within the window.
create index signin_rate_hits_bucket_idx on cajex.signin_rate_hits (bucket, at);

--------------------------------------------------------------------------------
-- Every email handed to a transport, one row per outbox job: a redelivered
-- job finds its row and sends nothing twice. With no SMTP configured
-- (development) the message itself is kept here and shown at /dev/mailbox.
create table cajex.email_deliveries (
  outbox_id bigint primary key,
  workspace_id uuid references cajex.workspaces (id) on delete cascade,
  transport text not null check (transport in ('smtp', 'dev')),
  message_id text not null check (char_length(message_id) <= 255),
  template text not null check (char_length(template) <= 100),
  recipient text not null check (char_length(recipient) <= 320),
  subject text not null check (char_length(subject) <= 500),
  text_body text check (char_length(text_body) <= 200000),
  html_body text check (char_length(html_body) <= 400000),
  sent_at timestamptz not null default now()
);
alter table cajex.email_deliveries enable row level security;
alter table cajex.email_deliveries force row level security;
-- The dev mailbox lists the newest first.
create index email_deliveries_sent_idx on cajex.email_deliveries (sent_at desc);

--------------------------------------------------------------------------------
-- The standard sign-in methods a workspace allows its members (no row: all).
create table cajex.workspace_signin_methods (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  methods text[] not null
    check (methods <@ array['google', 'apple', 'github', 'magic_link']::text[]
           and cardinality(methods) >= 1),
  updated_at timestamptz not null default now(),
  primary key (workspace_id)
);
alter table cajex.workspace_signin_methods enable row level security;
alter table cajex.workspace_signin_methods force row level security;

--------------------------------------------------------------------------------
-- The workspace each user last opened, so that `/` opens it on any device.
-- Not workspace-owned (one row per user); written by cajex.remember_workspace,
-- read by its user only.
create table cajex.user_last_workspaces (
  user_id uuid primary key references cajex.users (id) on delete cascade,
  last_workspace_id uuid references cajex.workspaces (id) on delete set null,
  updated_at timestamptz not null default now()
);
alter table cajex.user_last_workspaces enable row level security;
alter table cajex.user_last_workspaces force row level security;
