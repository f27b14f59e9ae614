-- The sealed request context (see db/functions/000_context.sql).
--
-- Every way in (a browser's session, a job's or a DBA's signed token, a SCIM
-- bearer token, PostgREST's verified claims) is checked once per transaction
-- by a definer function, which then seals the result into a transaction-local
-- setting: the context's fields and an HMAC-SHA256 over them, the backend and
-- the transaction's start. Policies check the seal, not the credential again.
-- The key never leaves the database: nothing outside it needs to make a seal.

--------------------------------------------------------------------------------
-- The seal's key, stored as HMAC's two padded keys (the key XOR 0x36 and XOR
-- 0x5c, 64 bytes each), so that the check is two calls of the built-in
-- sha256(). One row. Only cajex_definer reads it (the context view is its
-- own); the migration makes it (cajex_private.ensure_seal_key).
create table cajex_private.seal_key (
  only_row boolean primary key default true check (only_row),
  inner_pad bytea not null check (octet_length(inner_pad) = 64),
  outer_pad bytea not null check (octet_length(outer_pad) = 64),
  created_at timestamptz not null default now()
);
alter table cajex_private.seal_key enable row level security;
alter table cajex_private.seal_key force row level security;

--------------------------------------------------------------------------------
-- The table that held each backend's opened context. The seal replaces it:
-- opening a context no longer writes, so read-only transactions (PostgREST's
-- GET) and every request's opening are pure reads. The context view read it;
-- until db/functions/000_context.sql replaces the view, later in this same
-- transaction, it stands as a view of no rows.
create or replace view cajex_private.context as
  select null::uuid as workspace_id, null::uuid as user_id, null::uuid as session_id,
         null::text as member_role, null::text as actor, null::text as workspace_slug
  where false;
drop table cajex_private.active_contexts;
