-- Test helpers for pgTAP files, created inside each file's transaction (and
-- so rolled back with it). Run as the superuser that pg_prove connects as:
--   tests.user(email)                  a user with a live session
--   tests.workspace(owner, slug, plan) an organisation and a workspace
--   tests.member(slug, email, role)    a membership
--   tests.become(email, slug)          act as that member: open their verified
--                                      context and switch to cajex_app
--   tests.become_job(slug)             act as a job of that workspace
--   tests.unbecome()                   back to the superuser, no context
\set QUIET on
set client_min_messages = warning;
create extension if not exists pgtap;
create schema tests;
grant usage on schema tests to public;
-- pgTAP lives in public, which requests cannot use; this grant is rolled back
-- with the test.
grant usage on schema public to public;

-- A fixture: made as the test's superuser whatever role the test has become
-- (users and sessions are the sign-in role's to make).
create function tests.user(p_email text) returns uuid language plpgsql security definer as $$
declare
  v_user uuid := cajex_private.ensure_user(p_email);
begin
  if not exists (select from cajex.sessions where user_id = v_user and auth_method = 'pgtap') then
    perform cajex_private.create_session(v_user, extensions.gen_random_bytes(32), 'pgtap');
  end if;
  return v_user;
end $$;

create function tests.sign(p_body text) returns text language sql as $$
  select p_body || '.' || encode(extensions.hmac(convert_to(p_body, 'UTF8'),
    (select secret from cajex_private.context_keys where key_id = 'k1'), 'sha256'), 'hex');
$$;

create function tests.user_token(p_email text, p_ttl integer default 300) returns text language sql as $$
  select tests.sign(format('v1.u.%s.%s.%s', u.id, s.id, extract(epoch from now())::bigint + p_ttl))
  from cajex.users u join cajex.sessions s on s.user_id = u.id and s.auth_method = 'pgtap'
  where u.email = lower(p_email)
  order by s.created_at desc limit 1;
$$;

create function tests.workspace(p_owner text, p_slug text, p_plan text default 'free') returns uuid
language plpgsql as $$
declare
  v_owner uuid := tests.user(p_owner);
  v_org uuid;
  v_ws uuid;
begin
  insert into cajex.organisations (name, created_by) values (p_slug || ' org', v_owner) returning id into v_org;
  insert into cajex.organisation_members values (v_org, v_owner, 'owner');
  insert into cajex.workspaces (organisation_id, slug, name, plan) values (v_org, p_slug, p_slug, p_plan)
    returning id into v_ws;
  insert into cajex.memberships (workspace_id, user_id, role) values (v_ws, v_owner, 'owner');
  return v_ws;
end $$;

create function tests.member(p_slug text, p_email text, p_role text default 'member') returns void
language sql as $$
  insert into cajex.memberships (workspace_id, user_id, role)
  select w.id, tests.user(p_email), p_role from cajex.workspaces w where w.slug = p_slug;
$$;

create function tests.workspace_id(p_slug text) returns uuid language sql as $$
  select id from cajex.workspaces where slug = p_slug;
$$;

create function tests.become(p_email text, p_slug text default null) returns text language plpgsql as $$
declare
  v_slug text;
begin
  execute 'reset role';
  select workspace_slug into v_slug from cajex_private.open_context(tests.user_token(p_email), p_slug);
  execute 'set local role cajex_app';
  return coalesce(v_slug, '(no workspace)');
end $$;

create function tests.become_job(p_slug text) returns text language plpgsql as $$
declare
  v_slug text;
begin
  execute 'reset role';
  select workspace_slug into v_slug from cajex_private.open_context(
    tests.sign(format('v1.s.%s.pgtap.%s', tests.workspace_id(p_slug), extract(epoch from now())::bigint + 300)),
    p_slug);
  execute 'set local role cajex_app';
  return coalesce(v_slug, '(no workspace)');
end $$;

create function tests.unbecome() returns void language plpgsql as $$
begin
  execute 'reset role';
  perform set_config('cajex.context', '', true);
end $$;

grant execute on all functions in schema tests to public;
\set QUIET off
