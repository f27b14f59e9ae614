-- Sign-in in SQL: a workspace's standard methods (chosen, offered, enforced
-- where the context opens), linked identities, ending sessions and sliding
-- the idle window; each allow beside a deny from another workspace or user.
begin;
\ir helpers/setup.sql
select plan(52);

select tests.workspace('ann@a.test', 'alpha');
select tests.workspace('bob@b.test', 'bravo');
select tests.member('alpha', 'mia@a.test', 'member');

-- Choosing methods ------------------------------------------------------------

select tests.become('mia@a.test', 'alpha');
select throws_ok($$ select cajex.set_signin_methods(array['github']) $$,
  'CXFBD', null, 'a member cannot choose the sign-in methods');

select tests.become('ann@a.test', 'alpha');
select throws_ok($$ select cajex.set_signin_methods(array['password']) $$,
  'CXINV', null, 'an unknown method is refused');
select throws_ok($$ select cajex.set_signin_methods(array[]::text[]) $$,
  'CXINV', null, 'so is choosing none');
select lives_ok($$ select cajex.set_signin_methods(array['magic_link', 'github', 'github']) $$,
  'the owner chooses the methods');
select is((select methods from cajex.workspace_signin_methods), array['github', 'magic_link'],
  'each stored once');
select is((select count(*)::int from cajex.audit_log where action = 'signin.methods_changed'), 1,
  'and the change is audited');

select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.workspace_signin_methods), 0,
  'another workspace''s owner cannot read that choice');
select lives_ok($$ select cajex.set_signin_methods(array['google']) $$,
  'and choosing for his own workspace');
select tests.unbecome();
select is((select methods from cajex.workspace_signin_methods where workspace_id = tests.workspace_id('alpha')),
  array['github', 'magic_link'], 'leaves alpha''s choice alone');
select is(cajex_private.workspace_signin_methods('alpha'), array['github', 'magic_link'],
  'the workspace''s sign-in page offers the chosen methods');
select is(cajex_private.workspace_signin_methods('nowhere'),
  array['google', 'apple', 'github', 'magic_link'],
  'an unknown workspace offers every method (its existence is not revealed)');

-- Enforcement where the context opens -----------------------------------------

select cajex_private.create_session(tests.user('ann@a.test'), sha256('ann-secret'::bytea), 'magic_link')
  as ann_sid \gset
set local role cajex_app;
select is((select workspace_slug from cajex_private.open_context('v2.' || :'ann_sid' || '.ann-secret', 'alpha')),
  'alpha', 'a magic-link session opens a workspace that allows email links');
select throws_ok($$ select cajex.set_signin_methods(array['github']) $$,
  'CXINV', null, 'an admin cannot leave out the method of their own session');
reset role;
update cajex.workspace_signin_methods set methods = array['github']
  where workspace_id = tests.workspace_id('alpha');
set local role cajex_app;
select is((select workspace_id from cajex_private.open_context('v2.' || :'ann_sid' || '.ann-secret', 'alpha')),
  null, 'once alpha leaves email links out, that session opens it for nothing');
select is((select workspace_id from cajex_private.context), null, 'and no workspace is open');
select is((select user_id from cajex_private.context), tests.user('ann@a.test'),
  'while the session itself stays signed in');
reset role;
select is((select workspace_id from cajex_private.open_context(
    tests.sign(format('v1.u.%s.%s.%s', tests.user('ann@a.test'), :'ann_sid',
                      extract(epoch from now())::bigint + 300)), 'alpha')),
  null, 'a signed token of that session opens nothing either');
select is(cajex_private.signin_methods_required(:'ann_sid', 'ann-secret', 'alpha'), array['github'],
  'the member is told which methods alpha asks for');
select is(cajex_private.signin_methods_required(:'ann_sid', 'wrong-secret', 'alpha'), null,
  'nobody without the session''s secret is told anything');
select is(cajex_private.signin_methods_required(:'ann_sid', 'ann-secret', 'bravo'), null,
  'nor about a workspace the user is not in');
select tests.unbecome();
select set_config('cajex.context', '', true);
select is(tests.become('ann@a.test', 'alpha'), 'alpha',
  'a session of another kind (not a standard method) still opens alpha');
select tests.unbecome();

-- Linked identities ------------------------------------------------------------

insert into cajex.user_identities (user_id, provider, issuer, subject, email, email_verified) values
  (tests.user('ann@a.test'), 'google', 'https://accounts.google.com', 'g-ann', 'ann@a.test', true),
  (tests.user('ann@a.test'), 'github', 'https://github.com', '101', 'ann@a.test', true),
  (tests.user('bob@b.test'), 'google', 'https://accounts.google.com', 'g-bob', 'bob@b.test', true);
select id as ann_google from cajex.user_identities where subject = 'g-ann' \gset
select id as ann_github from cajex.user_identities where subject = '101' \gset

select tests.become('bob@b.test');
select is((select count(*)::int from cajex.user_identities), 1, 'a user reads only their own identities');
select throws_ok(format('select cajex.remove_identity(%L)', :'ann_google'),
  'CXNFD', null, 'and cannot remove someone else''s');
select tests.become('ann@a.test');
select is((select count(*)::int from cajex.user_identities), 2, 'ann reads her two');
select lives_ok(format('select cajex.remove_identity(%L)', :'ann_google'), 'and removes one');
select throws_ok(format('select cajex.remove_identity(%L)', :'ann_github'),
  'CXLST', null, 'but never the last');
select tests.unbecome();
select is((select count(*)::int from cajex.user_identities where subject = 'g-bob'), 1,
  'bob''s identity is untouched');

select throws_ok($$ select * from cajex_private.signin_with_identity(
    'google', 'https://accounts.google.com', 'g-attacker', 'bob@b.test', false) $$,
  'CXFBD', null, 'an unverified address matching an account neither links nor signs in');
select is((select outcome from cajex_private.signin_with_identity(
    'google', 'https://accounts.google.com', 'g-other', 'bob@b.test', true)),
  'confirm_link', 'a verified one asks the person to confirm linking');
select is((select count(*)::int from cajex.user_identities where subject in ('g-attacker', 'g-other')), 0,
  'and neither writes an identity');

select throws_ok(format($$ select cajex_private.link_identity(%L, 'github', 'https://github.com', '555',
                                'bob@elsewhere.test', false, true) $$, tests.user('bob@b.test')),
  'CXFBD', null, 'linking while signed in still needs an address the provider verified');
select lives_ok(format($$ select cajex_private.link_identity(%L, 'github', 'https://github.com', '555',
                               'bob@elsewhere.test', true, true) $$, tests.user('bob@b.test')),
  'with one, a signed-in user links that provider');
select throws_ok(format($$ select cajex_private.link_identity(%L, 'github', 'https://github.com', '555',
                                'ann@a.test', true, false) $$, tests.user('ann@a.test')),
  'CXDUP', null, 'an identity linked to one account cannot be linked to another');

-- Sessions ---------------------------------------------------------------------

select cajex_private.create_session(tests.user('bob@b.test'), sha256('bob-secret'::bytea), 'github')
  as bob_sid \gset
select tests.become('ann@a.test');
select throws_ok(format('select cajex.end_my_session(%L)', :'bob_sid'),
  'CXNFD', null, 'a user cannot end someone else''s session');
select ok(cajex.end_all_my_sessions() >= 2, 'sign out everywhere ends all of ann''s sessions');
select tests.unbecome();
select is((select count(*)::int from cajex.sessions s
            where s.user_id = tests.user('ann@a.test') and s.revoked_at is null), 0,
  'none of hers is left');
select ok((select revoked_at is null from cajex.sessions where id = :'bob_sid'), 'bob''s session lives on');

update cajex.sessions set last_seen_at = now() - interval '5 minutes',
                          idle_expires_at = now() + interval '1 minute'
  where id = :'bob_sid';
set local role cajex_app;
select is(cajex_private.touch_context_session(), false,
  'without a context no session is kept alive');
select is((select workspace_slug from cajex_private.open_context('v2.' || :'bob_sid' || '.not-the-secret', null)),
  null, 'nor with a context the wrong secret failed to open');
select is(cajex_private.touch_context_session(), false, 'so nothing is touched');
select is((select user_id from cajex_private.open_context('v2.' || :'bob_sid' || '.bob-secret', null)),
  tests.user('bob@b.test'), 'the holder of the secret opens the session''s context');
select is(cajex_private.touch_context_session(), true, 'which keeps the session alive');
reset role;
select ok((select idle_expires_at > now() + interval '1 minute' and idle_expires_at <= absolute_expires_at
             from cajex.sessions where id = :'bob_sid'),
  'which slides the idle window, never past the absolute limit');

-- The last used workspace -----------------------------------------------------

select tests.become('bob@b.test', 'bravo');
select lives_ok($$ select cajex.remember_workspace() $$, 'a member remembers the workspace he opened');
select tests.become('bob@b.test');
select is((select last_workspace_id from cajex.user_last_workspaces), tests.workspace_id('bravo'),
  'and reads it back on any device');
select throws_ok($$ select cajex.remember_workspace() $$, 'CXNCX', null,
  'there is nothing to remember outside a workspace');
select tests.become('mia@a.test');
select is((select count(*)::int from cajex.user_last_workspaces), 0,
  'another user cannot read it');
select tests.unbecome();

-- Account functions need a signed-in user -------------------------------------

select tests.become_job('alpha');
select throws_ok($$ select cajex.remove_identity(gen_random_uuid()) $$, 'CXNCX', null,
  'a job has no account whose sign-in methods it could remove');
select throws_ok($$ select cajex.end_my_session(gen_random_uuid()) $$, 'CXNCX', null,
  'nor a session of its own to end');
select throws_ok($$ select cajex.end_all_my_sessions() $$, 'CXNCX', null,
  'nor sessions to end everywhere');
select throws_ok($$ select cajex.save_onboarding_draft('organisation', '{}') $$, 'CXNCX', null,
  'nor an onboarding draft');
select tests.unbecome();
set local role cajex_app;
select throws_ok($$ select cajex.end_all_my_sessions() $$, 'CXNCX', null,
  'and a request without a context is refused the same way');
reset role;

select * from finish();
rollback;
