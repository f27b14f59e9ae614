-- Roles, schemas, extensions and the migration ledger. Idempotent; runs at
-- the start of every migration as the connecting (administrative) role, then
-- hands over to cajex_owner so that every object is owned by it.
--
-- Roles (see docs/architecture.md):
--   cajex_owner          owns every object; never used by a request
--   cajex_definer        BYPASSRLS, NOLOGIN; owns only the few security
--                        definer functions that must work across workspaces
--                        (context, sign-in lookups, outbox relay, purge)
--   cajex_app            web and jobs: logs in, reads and writes through RLS
--   cajex_signin         the sign-in pages: logs in; cajex_app's rights and
--                        the functions that vouch for an identity (open a
--                        session, link an identity, provision from SSO)
--   cajex_worker         the job worker: logs in; cajex_app's rights and the
--                        job queue (claim, finish, read a job's email)
--   cajex_webhook        Stripe's webhook: logs in; applies a verified event
--                        to the workspace of its customer, and nothing else
--   cajex_authenticator  PostgREST logs in as it (NOINHERIT) and switches to
--   cajex_api            the role of every PostgREST request
--   cajex_anon           PostgREST requests without a JWT: sees nothing
do $bootstrap$
begin
  if not exists (select from pg_roles where rolname = 'cajex_owner') then
    create role cajex_owner nologin nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_definer') then
    create role cajex_definer nologin bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_app') then
    create role cajex_app login nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_signin') then
    create role cajex_signin login nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_worker') then
    create role cajex_worker login nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_webhook') then
    create role cajex_webhook login nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_authenticator') then
    create role cajex_authenticator login noinherit nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_api') then
    create role cajex_api nologin nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'cajex_anon') then
    create role cajex_anon nologin nobypassrls;
  end if;
end
$bootstrap$;

-- The owner may hand a function to the definer role (alter ... owner to).
grant cajex_definer to cajex_owner;
-- Only PostgREST's authenticator may become the API roles; cajex_app may not.
grant cajex_api, cajex_anon to cajex_authenticator;
-- The sign-in pages and the worker do what requests do, and more; a request
-- (cajex_app) can become neither.
grant cajex_app to cajex_signin, cajex_worker;

do $db$
begin
  execute format('grant create, connect on database %I to cajex_owner', current_database());
  execute format('grant connect on database %I to cajex_app, cajex_signin, cajex_worker, cajex_webhook, cajex_authenticator',
                 current_database());
  -- Nothing a request runs needs temporary tables.
  execute format('revoke temporary on database %I from public', current_database());
end
$db$;

create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;
grant usage on schema extensions to cajex_owner, cajex_definer;

create schema if not exists cajex authorization cajex_owner;
create schema if not exists cajex_private authorization cajex_owner;
create schema if not exists api authorization cajex_owner;
create schema if not exists cajex_migrations authorization cajex_owner;
-- The definer role creates nothing, but owning a function needs the right to
-- create in its schema.
grant usage, create on schema cajex, cajex_private, api to cajex_definer;
revoke all on schema public from public;

set local role cajex_owner;

-- Functions are not executable by PUBLIC unless a grant says so.
alter default privileges for role cajex_owner revoke execute on functions from public;
alter default privileges for role cajex_definer revoke execute on functions from public;

create table if not exists cajex_migrations.applied (
  file text primary key,
  kind text not null check (kind in ('versioned', 'repeatable')),
  checksum text not null,
  applied_at timestamptz not null default now()
);

alter table cajex_migrations.applied enable row level security;
alter table cajex_migrations.applied force row level security;
drop policy if exists "the migration can manage its ledger" on cajex_migrations.applied;
create policy "the migration can manage its ledger" on cajex_migrations.applied
  for all to cajex_owner using (true) with check (true);

create or replace function cajex_migrations.needs_versioned(p_file text, p_checksum text)
returns boolean
language plpgsql
as $$
declare
  v_recorded text;
begin
  select checksum into v_recorded
  from cajex_migrations.applied
  where file = p_file and kind = 'versioned';
  if v_recorded is null then
    return true;
  end if;
  if v_recorded <> p_checksum then
    raise exception 'applied migration % was edited after it was applied', p_file
      using errcode = 'CXMIG',
        hint = 'Versioned files never change once applied: revert the edit '
               'and put the change in a new numbered file.';
  end if;
  return false;
end;
$$;

create or replace function cajex_migrations.needs_repeatable(p_file text, p_checksum text)
returns boolean
language sql
stable
as $$
  select not exists (
    select from cajex_migrations.applied
    where file = p_file and kind = 'repeatable' and checksum = p_checksum
  );
$$;

create or replace function cajex_migrations.record(p_file text, p_checksum text, p_kind text)
returns void
language plpgsql
as $$
begin
  insert into cajex_migrations.applied (file, kind, checksum)
  values (p_file, p_kind, p_checksum)
  on conflict (file) do update
    set checksum = excluded.checksum, applied_at = now();
  if p_kind = 'versioned' then
    perform set_config('cajex_migrations.versioned_applied', 'on', true);
  elsif p_file like 'functions/%' then
    perform set_config('cajex_migrations.functions_applied', 'on', true);
  end if;
end;
$$;

create or replace function cajex_migrations.begin_repeatables()
returns boolean
language sql
stable
as $$
  select coalesce(current_setting('cajex_migrations.versioned_applied', true), '') = 'on';
$$;

-- Before the policies: they re-apply, every one, when a functions file did
-- (a functions file may drop and create a view or function that a policy
-- file grants or refers to).
create or replace function cajex_migrations.begin_policies()
returns boolean
language sql
stable
as $$
  select cajex_migrations.begin_repeatables()
      or coalesce(current_setting('cajex_migrations.functions_applied', true), '') = 'on';
$$;
