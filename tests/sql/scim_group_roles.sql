-- Group-based roles: mappings, SSO group facts, the recompute, and the
-- cross-workspace denials beside each allow.
begin;
\ir helpers/setup.sql
select plan(16);

select tests.workspace('ann@a.test', 'alpha', 'enterprise');
select tests.workspace('bob@b.test', 'bravo', 'enterprise');
select tests.member('alpha', 'max@a.test', 'member');
select tests.member('alpha', 'vic@a.test', 'viewer');
select tests.member('bravo', 'max@a.test', 'viewer');

select tests.become('ann@a.test', 'alpha');
select lives_ok($$ select cajex.set_group_role_mapping('Architects', 'admin') $$,
  'an owner maps a group to admin');
select throws_ok($$ select cajex.set_group_role_mapping('Owners', 'owner') $$, 'CXINV', null,
  'owner is never granted by a group');
select is((select count(*)::int from cajex.group_role_mappings), 1, 'alpha sees its mapping');

select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.group_role_mappings), 0, 'bravo sees none of alpha''s');
select throws_ok(format('select cajex.delete_group_role_mapping(%L)',
                        (select id from cajex.group_role_mappings where workspace_id = tests.workspace_id('alpha'))),
  'CXNFD', null, 'bravo cannot delete alpha''s mapping');

select tests.become('vic@a.test', 'alpha');
select throws_ok($$ select cajex.set_group_role_mapping('x', 'admin') $$, 'CXFBD', null,
  'a viewer cannot map groups');

select tests.unbecome();
select is(cajex_private.set_member_groups(tests.workspace_id('alpha'),
            (select id from cajex.users where email = 'max@a.test'), 'sso', array['architects', 'other']),
  'admin', 'an SSO group matching a mapping (any case) grants its role');
select is(cajex_private.set_member_groups(tests.workspace_id('bravo'),
            (select id from cajex.users where email = 'max@a.test'), 'sso', array['architects']),
  'viewer', 'the same group in bravo grants nothing: alpha''s mapping stays in alpha');
select is((select role from cajex.memberships where workspace_id = tests.workspace_id('bravo')
             and user_id = (select id from cajex.users where email = 'max@a.test')),
  'viewer', 'bravo''s membership is untouched');
select is(cajex_private.set_member_groups(tests.workspace_id('alpha'),
            (select id from cajex.users where email = 'max@a.test'), 'sso', array['other']),
  'member', 'leaving the mapped group gives back the role from before');
select is(cajex_private.set_member_groups(tests.workspace_id('alpha'),
            (select id from cajex.users where email = 'ann@a.test'), 'sso', array['Architects']),
  'owner', 'the owner is never changed by a group');
select is((select count(*)::int from cajex.audit_log
           where workspace_id = tests.workspace_id('alpha') and action = 'member.role_changed'
             and details ->> 'reason' = 'group_mapping'), 2, 'both changes are audited');
select throws_ok(format('select cajex_private.set_member_groups(%L, %L, %L, %L)',
                        tests.workspace_id('alpha'), (select id from cajex.users where email = 'max@a.test'),
                        'ldap', '{x}'),
  'CXINV', null, 'an unknown source is refused');
select is(cajex_private.set_member_groups(tests.workspace_id('alpha'), gen_random_uuid(), 'sso', '{x}'),
  null, 'not a member: nothing happens');

-- A mapping created later applies at once to members already in the group.
select cajex_private.set_member_groups(tests.workspace_id('alpha'),
  (select id from cajex.users where email = 'vic@a.test'), 'sso', array['readers']);
select tests.become('ann@a.test', 'alpha');
select cajex.set_group_role_mapping('READERS', 'member');
select is((select role from cajex.memberships m join cajex.users u on u.id = m.user_id
           where u.email = 'vic@a.test'), 'member', 'a new mapping recomputes existing members');
select lives_ok(format('select cajex.delete_group_role_mapping(%L)',
                       (select id from cajex.group_role_mappings where group_key = 'READERS')),
  'deleting the mapping');
select tests.unbecome();
select * from finish();
rollback;
