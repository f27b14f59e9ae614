-- SCIM tokens and the context they open: each allow beside a deny from
-- another workspace, a plain member, another plan or a revoked token.
begin;
\ir helpers/setup.sql
select plan(22);

select tests.workspace('ann@a.test', 'alpha', 'enterprise');
select tests.workspace('bob@b.test', 'bravo', 'enterprise');
select tests.workspace('cat@c.test', 'charlie', 'team');
select tests.member('alpha', 'meg@a.test', 'member');

-- Act as a SCIM client: the token's hash opens its workspace's context.
create function tests.become_scim(p_token text) returns uuid language plpgsql as $$
declare
  v_ws uuid;
begin
  execute 'reset role';
  perform set_config('cajex.context', '', true);
  execute 'set local role cajex_app';
  select workspace_id into v_ws from cajex_private.open_scim_context(sha256(convert_to(p_token, 'UTF8')));
  return v_ws;
end $$;
grant execute on function tests.become_scim(text) to public;

select tests.become('ann@a.test', 'alpha');
select lives_ok($$ select cajex.create_scim_token('Entra', sha256('alpha-token'::bytea)) $$,
  'an owner of an Enterprise workspace can create a SCIM token');
select lives_ok($$ select cajex.create_scim_token('Rotation', sha256('alpha-token-2'::bytea)) $$,
  'and a second one, for rotation');
select is((select count(*)::int from cajex.scim_tokens), 2, 'and sees both');
select is((select count(*)::int from cajex.scim_tokens where token_hash = sha256('alpha-token'::bytea)),
  1, 'only the hash is stored');

select tests.become('bob@b.test', 'bravo');
select lives_ok($$ select cajex.create_scim_token('Okta', sha256('bravo-token'::bytea)) $$,
  'bravo''s owner creates its own token');
select is((select count(*)::int from cajex.scim_tokens), 1, 'bravo sees none of alpha''s tokens');
select throws_ok(format('select cajex.revoke_scim_token(%L)',
                        (select id from cajex.scim_tokens where workspace_id = tests.workspace_id('alpha')
                         and label = 'Rotation')),
  'CXNFD', null, 'bravo cannot revoke alpha''s token');

select tests.become('meg@a.test', 'alpha');
select throws_ok($$ select cajex.create_scim_token('x', sha256('meg'::bytea)) $$, 'CXFBD', null,
  'a plain member cannot create a token');

select tests.become('cat@c.test', 'charlie');
select throws_ok($$ select cajex.create_scim_token('x', sha256('cat'::bytea)) $$, 'CXFTR', null,
  'a Team workspace cannot: SCIM is gated to Enterprise in SQL');

select is(tests.become_scim('alpha-token'), tests.workspace_id('alpha'),
  'alpha''s token opens alpha''s context');
select lives_ok($$ select cajex.scim_create_user('{"user_name": "Zed@a.test", "email": "zed@a.test",
  "emails": [{"value": "zed@a.test", "type": "work"}]}') $$, 'and provisions a user there');
select throws_ok($$ select cajex.scim_create_user('{"user_name": "zed@A.TEST", "email": "zed@a.test"}') $$,
  'CXDUP', null, 'the same userName in any letter case is a duplicate');
select is((select actor from cajex.audit_log where action = 'scim.user_created'),
  'scim:' || (select id from cajex.scim_tokens where token_hash = sha256('alpha-token'::bytea))::text,
  'the audit log names the token');

select is(tests.become_scim('bravo-token'), tests.workspace_id('bravo'),
  'bravo''s token opens bravo''s context');
select is((select count(*)::int from cajex.scim_users), 0, 'where alpha''s users are invisible');
select throws_ok(format('select cajex.scim_delete_user(%L)',
                        (select id from cajex.scim_users where workspace_id = tests.workspace_id('alpha'))),
  'CXNFD', null, 'bravo''s token cannot delete alpha''s user');
select lives_ok($$ select cajex.scim_create_user('{"user_name": "zed@a.test", "email": "zed@a.test"}') $$,
  'the same userName in another workspace is fine');
select is((select count(*)::int from cajex.memberships m join cajex.users u on u.id = m.user_id
           where u.email = 'zed@a.test'), 1, 'bravo sees only its own membership of that person');

select tests.become('ann@a.test', 'alpha');
select throws_ok($$ select cajex.scim_create_user('{"user_name": "eve@a.test", "email": "eve@a.test"}') $$,
  'CXFBD', null, 'a member''s session cannot provision: only a SCIM token can');
select lives_ok(format('select cajex.revoke_scim_token(%L)',
                       (select id from cajex.scim_tokens where label = 'Entra')),
  'the owner revokes a token');
select is(tests.become_scim('alpha-token'), null, 'a revoked token opens nothing');
select is(tests.become_scim('no-such-token'), null, 'nor does an unknown one');

select tests.unbecome();
select * from finish();
rollback;
