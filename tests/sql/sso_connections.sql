-- SSO connections, domains, pending requests and the replay cache, each
-- allow beside a cross-workspace deny.
begin;
\ir helpers/setup.sql
select plan(26);

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

select matches(cajex.claim_sso_domain((select id from cajex.sso_connections), 'a.test'),
  '^cajex-domain-verification=[0-9a-f]{32}$',
  'an admin claims a domain, and gets the TXT value that proves it');
select throws_ok($$ select cajex.claim_sso_domain((select id from cajex.sso_connections), 'gmail.com') $$,
  'CXINV', null, 'a public mail domain cannot be claimed');
select is((select count(*)::int from cajex.outbox where kind = 'sso.verify_domain'), 1, 'the DNS check is queued');
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

-- Another workspace may claim the same domain too; the first to prove it
-- routes it, and the other's proof then counts for nothing.
select tests.become('carl@a.test', 'charlie');
select lives_ok(format($$ select cajex.claim_sso_domain(c.id, 'a.test') from cajex.create_sso_connection('saml',
  jsonb_build_object('name', 'Other', 'saml_idp_entity_id', 'https://idp.c.test', 'saml_sso_url',
  'https://idp.c.test/sso', 'saml_certificates', %s::jsonb)) c $$, quote_literal(:cert)),
  'a claim of a domain another workspace claimed is pending too');
select tests.unbecome();
select is(cajex_private.record_sso_domain_check(tests.workspace_id('alpha'), 'a.test', array['unrelated']),
  'not_found', 'a TXT record without the claim''s value proves nothing');
select is((select count(*)::int from cajex_private.sso_domain_routes where domain = 'a.test'), 0,
  'and the domain routes nobody');
select is(cajex_private.record_sso_domain_check(tests.workspace_id('alpha'), 'a.test',
  array['cajex-domain-verification=' || (select verification_token from cajex.sso_domains
                                        where domain = 'a.test' and workspace_id = tests.workspace_id('alpha'))]),
  'verified', 'the claim''s own value proves it');
select is(cajex_private.record_sso_domain_check(tests.workspace_id('charlie'), 'a.test',
  array['cajex-domain-verification=' || (select verification_token from cajex.sso_domains
                                        where domain = 'a.test' and workspace_id = tests.workspace_id('charlie'))]),
  'claimed_elsewhere', 'a domain routes to one connection only, platform-wide');
select tests.workspace_id('charlie') as charlie \gset
set local role cajex_app;
select throws_ok(format($$ select cajex_private.record_sso_domain_check(%L, 'a.test', array['x']) $$, :'charlie'),
  '42501', null, 'a request cannot vouch for DNS');
reset role;

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
