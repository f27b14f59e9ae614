-- SSO connections, domains, pending requests and the replay cache, each
-- allow beside a cross-workspace deny.
begin;
\ir helpers/setup.sql
select plan(20);

select tests.workspace('ann@a.test', 'alpha', 'enterprise');
select tests.workspace('bob@b.test', 'bravo', 'free');
select tests.workspace('carl@a.test', 'charlie', 'enterprise');
select tests.member('alpha', 'meg@a.test', 'member');

\set cert '''["-----BEGIN CERTIFICATE-----\\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnRlc3RDQTAeFw0y\\n-----END CERTIFICATE-----\\n"]'''

select tests.become('ann@a.test', 'alpha');
select lives_ok(format($$ select cajex.create_sso_connection('saml', jsonb_build_object(
  'name', 'Okta', 'saml_idp_entity_id', 'https://idp.a.test', 'saml_sso_url', 'https://idp.a.test/sso',
  'saml_certificates', %s::jsonb)) $$, quote_literal(:cert)),
  'an admin of an Enterprise workspace can add a SAML connection');
select is((select count(*)::int from cajex.sso_connections), 1, 'and sees it');
select throws_ok($$ select cajex.create_sso_connection('saml', '{"name": "x", "colour": "red"}') $$,
  'CXINV', 'unknown field colour', 'an unknown field is refused');
select throws_ok($$ select cajex.create_sso_connection('saml', '{"name": "x"}') $$,
  'CXINV', null, 'a SAML connection without entity id, URL and certificate is refused');
select throws_ok($$ select cajex.create_sso_connection('oidc', '{"name": "x", "oidc_issuer": "javascript:alert(1)", "oidc_client_id": "c"}') $$,
  'CXINV', null, 'a non-http issuer is refused');

select lives_ok($$ select cajex.claim_sso_domain((select id from cajex.sso_connections), 'a.test') $$,
  'an admin claims the domain of their own address');
select throws_ok($$ select cajex.claim_sso_domain((select id from cajex.sso_connections), 'other.test') $$,
  'CXFBD', null, 'but not another domain');
select is((select count(*)::int from cajex.sso_route_for_email('zoe@a.test')), 0,
  'a draft connection routes nobody');
select throws_ok($$ select cajex.set_sso_enforced(true) $$, 'CXINV', null,
  'SSO cannot be enforced before a connection is enabled');

select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.sso_connections), 0, 'bravo sees none of alpha''s connections');
select throws_ok(format($$ select cajex.create_sso_connection('saml', jsonb_build_object(
  'name', 'Okta', 'saml_idp_entity_id', 'https://idp.b.test', 'saml_sso_url', 'https://idp.b.test/sso',
  'saml_certificates', %s::jsonb)) $$, quote_literal(:cert)),
  'CXFTR', null, 'a Free workspace cannot add one: the plan gate is in SQL');

select tests.become('meg@a.test', 'alpha');
select is((select count(*)::int from cajex.sso_connections), 0, 'a plain member does not see the configuration');
select throws_ok($$ select cajex.set_sso_enforced(false) $$, 'CXFBD', null, 'nor change it');

select tests.become('carl@a.test', 'charlie');
select throws_ok(format($$ select cajex.claim_sso_domain(c.id, 'a.test') from cajex.create_sso_connection('saml',
  jsonb_build_object('name', 'Other', 'saml_idp_entity_id', 'https://idp.c.test', 'saml_sso_url',
  'https://idp.c.test/sso', 'saml_certificates', %s::jsonb)) c $$, quote_literal(:cert)),
  'CXDUP', null, 'a domain routes to one connection only, platform-wide');

select tests.become_job('alpha');
select lives_ok($$ select cajex.sso_begin_request((select id from cajex.sso_connections), '_request_0123456789', 'authn') $$,
  'the sign-in context records a pending request');
select ok((select cajex.sso_remember_once((select id from cajex.sso_connections), 'saml_assertion', '_a1', now() + interval '5 minutes')),
  'an assertion id is new the first time');
select ok(not (select cajex.sso_remember_once((select id from cajex.sso_connections), 'saml_assertion', '_a1', now() + interval '5 minutes')),
  'and a replay the second time');

select tests.become_job('charlie');
select ok(not (select cajex.sso_consume_request(
  (select id from cajex.sso_connections where workspace_id = tests.workspace_id('alpha')),
  '_request_0123456789', 'authn')), 'another workspace cannot consume alpha''s request');

select tests.become_job('alpha');
select ok((select cajex.sso_consume_request((select id from cajex.sso_connections), '_request_0123456789', 'authn')),
  'alpha consumes its request once');
select ok(not (select cajex.sso_consume_request((select id from cajex.sso_connections), '_request_0123456789', 'authn')),
  'and only once');

select * from finish();
rollback;
