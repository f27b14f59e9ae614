-- cajex_private.context: a context is opened once per transaction by
-- cajex_private.open_context and sealed; the view yields it only while the
-- seal matches. Each allow beside a deny.
begin;
\ir helpers/setup.sql
select plan(25);

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

-- Open a browser's context as a request does (as cajex_app); the opened slug.
create function tests.as_browser(p_who text, p_slug text) returns text language plpgsql as $$
begin
  execute 'reset role';
  execute 'set local role cajex_app';
  return (select workspace_slug from cajex_private.open_context(
    (select cred from tests.creds where who = p_who), p_slug));
end $$;
create function tests.as_raw(p_credential text, p_slug text) returns text language plpgsql as $$
begin
  execute 'reset role';
  execute 'set local role cajex_app';
  return (select coalesce(workspace_slug, '') || '/' || coalesce(user_id::text, '')
          from cajex_private.open_context(p_credential, p_slug));
end $$;
-- The HMAC-SHA256 of a context's fields, computed independently (pgcrypto's
-- hmac over the key that the stored pads were made from).
create function tests.expected_seal(p_fields text) returns text language sql security definer as $$
  select encode(extensions.hmac(convert_to(p_fields, 'UTF8') || int4send(pg_backend_pid())
                                || timestamptz_send(now()),
                                substring(k from 1 for 32), 'sha256'), 'hex')
  from (select (select string_agg(lpad(to_hex(get_byte(inner_pad, i) # 54), 2, '0'), '' order by i)
                from generate_series(0, 63) i) as hex
        from cajex_private.seal_key) h,
       lateral (select decode(h.hex, 'hex') as k) d;
$$;
grant execute on all functions in schema tests to public;

select is(tests.as_browser('ann', 'alpha'), 'alpha', 'ann''s session opens alpha');
select is((select name from cajex.projects), 'alpha plan', 'and shows alpha''s rows');
select is((select member_role from cajex_private.context), 'owner', 'with her role');
select is(split_part(current_setting('cajex.context'), '|', 8),
  tests.expected_seal(left(current_setting('cajex.context'), -65)),
  'the seal is the HMAC-SHA256 of the fields, the backend and the transaction''s start');

select is(tests.as_browser('ann', 'bravo'), null, 'ann''s session cannot open bravo');
select is((select count(*)::int from cajex.projects), 0, 'which shows no rows');
select is((select user_id from cajex_private.context), tests.user('ann@a.test'),
  'while she stays signed in');

select is(tests.as_browser('bob', 'bravo'), 'bravo', 'bob''s session opens bravo');
select is((select name from cajex.projects), 'bravo plan', 'and shows bravo''s rows');

-- Forged credentials open nothing, and clear what was open.
select is(tests.as_raw(replace((select cred from tests.creds where who = 'bob'), 'bob-secret', 'guess'), 'bravo'),
  '/', 'a wrong secret opens nothing');
select is((select count(*)::int from cajex.projects), 0, 'and closes what the transaction had open');
select is(tests.as_raw('v2.' || (select id from cajex.sessions where auth_method = 'pgtap-v2'
                                  and user_id = tests.user('bob@b.test')) || '.ann-secret', 'bravo'),
  '/', 'another session''s secret opens nothing');
select is(tests.as_raw('v2.not-a-uuid.x', 'alpha'), '/', 'a malformed credential opens nothing, without an error');
select is(tests.as_raw(tests.workspace_id('alpha')::text, 'alpha'), '/', 'a bare workspace id opens nothing');
select is(tests.as_raw(null, 'alpha'), '/', 'no credential opens nothing');

-- Forged settings: the view checks the seal on every statement.
select tests.as_browser('bob', 'bravo');
select set_config('cajex.context',
  replace(current_setting('cajex.context'), tests.workspace_id('bravo')::text, tests.workspace_id('alpha')::text),
  true);
select is((select count(*)::int from cajex.projects), 0, 'a sealed context with another workspace swapped in opens nothing');
select set_config('cajex.context', format('v3|%s|%s||owner|user|alpha|%s', tests.workspace_id('alpha'),
  tests.user('ann@a.test'), repeat('0', 64)), true);
select is((select count(*)::int from cajex.projects), 0, 'a made-up context opens nothing');
select set_config('cajex.context', 'v3|not-a-uuid|x|y|owner|user|alpha|' || repeat('a', 64), true);
select is((select count(*)::int from cajex.projects), 0, 'a malformed one neither, without an error');
select throws_ok($$ select * from cajex_private.seal_key $$, '42501', null,
  'a request cannot read the seal''s key');
select throws_ok($$ select cajex_private.seal_context(tests.workspace_id('alpha'), null, null, 'owner', 'user', 'alpha') $$,
  '42501', null, 'nor seal a context itself');
select throws_ok($$ select * from cajex_private.install_context(
    (select id from cajex.sessions limit 1), tests.user('ann@a.test'), 'alpha', 'user', false) $$,
  '42501', null, 'nor open a session without its secret');

-- Revocation, removal and deletion take effect at the next opening.
select tests.unbecome();
update cajex.sessions set revoked_at = now() where user_id = tests.user('bob@b.test') and auth_method = 'pgtap-v2';
select is(tests.as_raw((select cred from tests.creds where who = 'bob'), 'bravo'), '/', 'a revoked session opens nothing');

select tests.unbecome();
select tests.member('bravo', 'ann@a.test', 'member');
select is(tests.as_browser('ann', 'bravo'), 'bravo', 'a member of two workspaces opens the second');
select tests.unbecome();
update cajex.memberships set status = 'deactivated'
  where workspace_id = tests.workspace_id('bravo') and user_id = tests.user('ann@a.test');
select is(tests.as_browser('ann', 'bravo'), null, 'a deactivated member opens nothing');

select tests.unbecome();
update cajex.workspaces set status = 'deleted', deleted_at = now(), purge_after = now() + interval '30 days'
  where slug = 'alpha';
select is(tests.as_browser('ann', 'alpha'), null, 'a deleted workspace opens nothing');

select * from finish();
rollback;
