-- cajex_private.context: a browser's session credential, checked by the
-- policies on every statement. Each allow beside a deny.
begin;
\ir helpers/setup.sql
select plan(14);

select tests.workspace('ann@a.test', 'alpha');
select tests.workspace('bob@b.test', 'bravo');
insert into cajex.projects (workspace_id, name) values
  (tests.workspace_id('alpha'), 'alpha plan'), (tests.workspace_id('bravo'), 'bravo plan');

-- A session with a known secret for each user.
create function tests.session_with_secret(p_email text, p_secret text) returns uuid language sql as $$
  select cajex_private.create_session(tests.user(p_email), sha256(convert_to(p_secret, 'UTF8')), 'pgtap-v2');
$$;
create table tests.creds as
  select 'ann'::text as who, 'v2.' || tests.session_with_secret('ann@a.test', 'ann-secret') || '.ann-secret' as cred
  union all
  select 'bob', 'v2.' || tests.session_with_secret('bob@b.test', 'bob-secret') || '.bob-secret';
grant select on tests.creds to public;

create function tests.as_browser(p_who text, p_slug text) returns void language plpgsql as $$
begin
  execute 'reset role';
  delete from cajex_private.active_contexts where backend_pid = pg_backend_pid();
  perform set_config('cajex.context', (select cred from tests.creds where who = p_who), true);
  perform set_config('cajex.workspace', p_slug, true);
  execute 'set local role cajex_app';
end $$;
create function tests.as_raw(p_context text, p_slug text) returns void language plpgsql as $$
begin
  execute 'reset role';
  delete from cajex_private.active_contexts where backend_pid = pg_backend_pid();
  perform set_config('cajex.context', p_context, true);
  perform set_config('cajex.workspace', p_slug, true);
  execute 'set local role cajex_app';
end $$;
grant execute on all functions in schema tests to public;

select tests.as_browser('ann', 'alpha');
select is((select name from cajex.projects), 'alpha plan', 'ann''s session opens alpha');
select is((select member_role from cajex_private.context), 'owner', 'with her role');

select tests.as_browser('ann', 'bravo');
select is((select count(*)::int from cajex.projects), 0, 'ann''s session cannot open bravo');
select is((select workspace_id from cajex_private.context), null, 'and names no workspace');

select tests.as_browser('bob', 'bravo');
select is((select name from cajex.projects), 'bravo plan', 'bob''s session opens bravo');

-- Forgeries, each must open nothing.
select tests.as_raw(replace((select cred from tests.creds where who = 'bob'), 'bob-secret', 'guess'), 'bravo');
select is((select count(*)::int from cajex.projects), 0, 'a wrong secret opens nothing');
select tests.as_raw('v2.' || (select id from cajex.sessions where auth_method = 'pgtap-v2' limit 1) || '.ann-secret', 'bravo');
select is((select count(*)::int from cajex.projects), 0, 'another session''s secret opens nothing');
select tests.as_raw('v2.not-a-uuid.x', 'alpha');
select is((select count(*)::int from cajex.projects), 0, 'a malformed credential opens nothing, without an error');
select tests.as_raw(tests.workspace_id('alpha')::text, 'alpha');
select is((select count(*)::int from cajex.projects), 0, 'a bare workspace id opens nothing');

-- Revocation, removal and deletion take effect on the next statement.
select tests.unbecome();
update cajex.sessions set revoked_at = now() where user_id = tests.user('bob@b.test') and auth_method = 'pgtap-v2';
select tests.as_browser('bob', 'bravo');
select is((select count(*)::int from cajex.projects), 0, 'a revoked session opens nothing');

select tests.unbecome();
select tests.member('bravo', 'ann@a.test', 'member');
select tests.as_browser('ann', 'bravo');
select is((select name from cajex.projects), 'bravo plan', 'a member of two workspaces opens the second');
select tests.unbecome();
update cajex.memberships set status = 'deactivated'
  where workspace_id = tests.workspace_id('bravo') and user_id = tests.user('ann@a.test');
select tests.as_browser('ann', 'bravo');
select is((select count(*)::int from cajex.projects), 0, 'a deactivated member opens nothing');

select tests.unbecome();
update cajex.workspaces set status = 'deleted', deleted_at = now(), purge_after = now() + interval '30 days'
  where slug = 'alpha';
select tests.as_browser('ann', 'alpha');
select is((select count(*)::int from cajex.projects), 0, 'a deleted workspace opens nothing');

select tests.as_browser('ann', 'alpha');
select throws_ok($$ insert into cajex_private.active_contexts values (pg_backend_pid(), now(), null, null, null, 'owner', 'x') $$,
  '42501', null, 'a request cannot write the context table');

select * from finish();
rollback;
