-- First-run defaults, onboarding drafts and branding in SQL, each allow
-- beside a deny from another workspace or person.
begin;
\ir helpers/setup.sql
select plan(27);

select tests.workspace('ann@a.test', 'alpha');
select tests.workspace('bob@b.test', 'bravo');
select tests.member('alpha', 'mia@a.test', 'member');
select tests.member('alpha', 'ada@a.test', 'admin');

--------------------------------------------------------------------------------
-- cajex.apply_onboarding_defaults

select tests.become('ann@a.test', 'alpha');
select lives_ok(
  $$ select cajex.apply_onboarding_defaults('viewer', '{magic_link,github}', false,
                                            array['strategy', ' Strategy ', 'threat model', '', 'vendor']) $$,
  'the owner can set the first-run defaults');
select is((select w.settings ->> 'default_role' from cajex.workspaces w), 'viewer',
  'the default role is stored');
select is((select project_tags from cajex.workspace_defaults()), '{strategy,"threat model",vendor}'::text[],
  'tags are trimmed and deduplicated case-insensitively, in their order');
select is((select methods from cajex.workspace_signin_methods), '{github,magic_link}'::text[],
  'the allowed sign-in methods are the ones the sign-in flows check');
select is((select count(*)::int from cajex.audit_log where action = 'workspace.defaults_set'), 1,
  'and the change is audited');

select throws_ok($$ select cajex.apply_onboarding_defaults('owner', '{magic_link}', false, '{}') $$,
  'CXINV', 'the default role is admin, member or viewer', 'ownership is not a default role');
select throws_ok($$ select cajex.apply_onboarding_defaults('member', '{}', false, '{}') $$,
  'CXINV', null, 'at least one sign-in method');
select throws_ok($$ select cajex.apply_onboarding_defaults('member', '{magic_link,carrier_pigeon}', false, '{}') $$,
  'CXINV', null, 'an unknown sign-in method is refused');
select throws_ok($$ select cajex.apply_onboarding_defaults('member', '{magic_link}', false, '{"<script>"}') $$,
  'CXINV', null, 'a tag with markup is refused');
select throws_ok($$ select cajex.apply_onboarding_defaults('member', '{magic_link}', null, '{}') $$,
  'CXINV', 'say whether AI features start on or off', 'AI must be said on or off');

select tests.become('mia@a.test', 'alpha');
select throws_ok($$ select cajex.apply_onboarding_defaults('admin', '{magic_link}', false, '{}') $$,
  'CXFBD', null, 'a member cannot set the defaults');
select is((select project_tags from cajex.workspace_defaults()), '{strategy,"threat model",vendor}'::text[],
  'but reads the starter tags');

select tests.become('bob@b.test', 'alpha');
select throws_ok($$ select cajex.apply_onboarding_defaults('admin', '{magic_link}', false, '{}') $$,
  'CXNCX', null, 'bravo''s owner cannot open alpha to set its defaults');
select is((select count(*)::int from cajex.workspace_defaults()), 0, 'nor read them');

select tests.become('bob@b.test', 'bravo');
select lives_ok($$ select cajex.apply_onboarding_defaults('admin', '{google}', false, '{bravo-only}') $$,
  'bravo''s owner sets bravo''s defaults');
select is((select project_tags from cajex.workspace_defaults()), '{bravo-only}'::text[],
  'and sees only bravo''s');
select tests.unbecome();
select is((select settings ->> 'default_role' from cajex.workspaces where slug = 'alpha'), 'viewer',
  'alpha is untouched by bravo''s change');

--------------------------------------------------------------------------------
-- onboarding drafts: a person's own

select tests.become('ann@a.test');
select lives_ok($$ select cajex.save_onboarding_draft('plan', '{"note": "ann"}', null) $$,
  'a signed-in person saves their draft');
select is((select data ->> 'note' from cajex.onboarding_drafts), 'ann', 'and reads it back');
select tests.become('bob@b.test');
select is((select count(*)::int from cajex.onboarding_drafts), 0, 'another person sees no draft of theirs');
select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.onboarding_drafts), 0, 'not even from inside a workspace');

--------------------------------------------------------------------------------
-- branding

select tests.become('ada@a.test', 'alpha');
select lives_ok($$ select cajex.set_brand_colours('#5B21B6', '#0f766e') $$, 'an admin sets the colours');
select lives_ok($$ select cajex.set_logo('\x89504e47'::bytea, 'image/png', 64, 32) $$, 'and the logo');
select tests.become('mia@a.test', 'alpha');
select throws_ok($$ select cajex.set_brand_colours('#000000', '#000000') $$, 'CXFBD', null,
  'a member cannot change the colours');
select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.workspace_branding), 0,
  'bravo''s owner reads no branding row of alpha');
select lives_ok($$ select cajex.set_brand_colours('#111111', '#222222') $$,
  'bravo''s owner brands bravo');
select tests.unbecome();
select is((select primary_colour || ' ' || logo_type from cajex.workspace_branding
           where workspace_id = tests.workspace_id('alpha')), '#5b21b6 image/png',
  'alpha keeps its own branding');

select * from finish();
rollback;
