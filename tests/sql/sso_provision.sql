-- Signing people in through an IdP: just-in-time provisioning with the
-- connection's default role, group roles re-evaluated at every sign-in, the
-- claimed-domain rule, the plan gate and single logout, each allow beside a
-- deny from another workspace.
begin;
\ir helpers/setup.sql
select plan(15);

select tests.workspace('ann@a.test', 'alpha', 'enterprise');
select tests.workspace('bob@b.test', 'bravo', 'enterprise');

\set cert '''["-----BEGIN CERTIFICATE-----\\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnRlc3RDQTAeFw0y\\n-----END CERTIFICATE-----\\n"]'''

-- Alpha's connection, named the way an attacker in bravo could name it.
create function tests.alpha_connection() returns uuid language sql security definer as $$
  select id from cajex.sso_connections where workspace_id = tests.workspace_id('alpha')
$$;
grant execute on function tests.alpha_connection() to public;

-- The `cajex sso` command's job context sets alpha up.
select tests.become_job('alpha');
select lives_ok(format($$ select cajex.create_sso_connection('saml', jsonb_build_object(
  'name', 'Okta', 'saml_idp_entity_id', 'https://idp.a.test', 'saml_sso_url', 'https://idp.a.test/sso',
  'default_role', 'viewer', 'saml_certificates', %s::jsonb)) $$, quote_literal(:cert)),
  'a job context adds a connection whose new people join as viewers');
select cajex.claim_sso_domain((select id from cajex.sso_connections), 'a.test');
select cajex.set_sso_connection_status((select id from cajex.sso_connections), 'enabled');


select results_eq(
  $$ select role, created from cajex_private.sso_provision(
       tests.alpha_connection(), 'sub-zoe', 'Zoe@A.test', 'Zoe', '{Architects}', true) $$,
  $$ values ('viewer'::text, true) $$,
  'the first sign-in provisions the person with the default role');
select results_eq(
  $$ select role, created from cajex_private.sso_provision(
       tests.alpha_connection(), 'sub-zoe', 'zoe@a.test', 'Zoe', '{Architects}', true) $$,
  $$ values ('viewer'::text, false) $$,
  'the next sign-in finds them by subject');
select throws_ok($$ select cajex_private.sso_provision(
       tests.alpha_connection(), 'sub-eve', 'ceo@bigcorp.test', 'Eve', '{}', true) $$,
  'CXFBD', null, 'a new subject outside the claimed domains is refused');

select tests.become('ann@a.test', 'alpha');
select cajex.set_group_role_mapping('architects', 'admin');
select tests.become_job('alpha');
select is((select role from cajex_private.sso_provision(
             tests.alpha_connection(), 'sub-zoe', 'zoe@a.test', 'Zoe', '{Architects,Staff}', true)),
  'admin', 'a mapped group in the claim grants its role at sign-in');
select is((select role from cajex_private.sso_provision(
             tests.alpha_connection(), 'sub-zoe', 'zoe@a.test', 'Zoe', null, false)),
  'admin', 'unknown groups (Entra overage) change nothing');
select is((select groups from cajex.sso_identities where subject = 'sub-zoe'),
  '{Architects,Staff}'::text[], 'and keep the groups last known, whole');
select is((select role from cajex_private.sso_provision(
             tests.alpha_connection(), 'sub-zoe', 'zoe@a.test', 'Zoe', '{Staff}', true)),
  'viewer', 'leaving the group lowers the role at the next sign-in');

-- Bravo's job context names alpha's connection.
select tests.become_job('bravo');
select throws_ok($$ select cajex_private.sso_provision(
       tests.alpha_connection(), 'sub-zoe', 'zoe@a.test', 'Zoe', '{}', true) $$,
  'CXNFD', null, 'another workspace cannot sign anyone in through alpha''s connection');
select is((select count(*)::int from cajex.sso_identities), 0, 'nor see alpha''s identities');

-- Two IdP sessions of alpha's connection, one of bravo's.
select tests.unbecome();
insert into cajex.sessions (user_id, token_hash, auth_method, sso_workspace_id, sso_connection_id,
                            idp_session_id, idp_subject, idle_expires_at, absolute_expires_at)
select u.id, sha256(convert_to(s.tag, 'UTF8')), 'sso_saml', tests.workspace_id(s.slug),
       tests.alpha_connection(), s.sid, 'sub-zoe', now() + interval '1 hour', now() + interval '1 day'
from cajex.users u, (values ('one', 'alpha', '_s1'), ('two', 'alpha', '_s2'), ('three', 'bravo', '_s1')) s(tag, slug, sid)
where u.email = 'zoe@a.test';

select tests.become_job('bravo');
select throws_ok($$ select cajex_private.sso_logout(tests.alpha_connection(), 'sub-zoe', '_s1', 'test') $$,
  'CXNFD', null, 'bravo cannot end sessions through alpha''s connection, even its own rows naming it');
select tests.become_job('alpha');
select is(cajex_private.sso_logout(tests.alpha_connection(), 'sub-zoe', '_s1', 'test'), 1,
  'alpha''s logout by IdP session ends exactly that session');
select throws_ok($$ select cajex_private.sso_logout(tests.alpha_connection(), null, null, 'test') $$,
  'CXINV', null, 'a logout names a subject or a session');
select tests.unbecome();
select is((select array_agg(idp_session_id order by idp_session_id) from cajex.sessions
           where revoked_at is null and idp_subject = 'sub-zoe'),
  '{_s1,_s2}'::text[], 'alpha''s other session and bravo''s row stay live');

-- The plan gate holds at sign-in too.
update cajex.workspaces set plan = 'team' where id = tests.workspace_id('alpha');
select tests.become_job('alpha');
select throws_ok($$ select cajex_private.sso_provision(
       tests.alpha_connection(), 'sub-zoe', 'zoe@a.test', 'Zoe', '{}', true) $$,
  'CXFTR', null, 'a workspace off the Enterprise plan signs nobody in');

select tests.unbecome();
select * from finish();
rollback;
