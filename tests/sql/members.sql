-- Members and invitations: invite, accept, decline, revoke, resend, the seat
-- limit, roles, removal, leaving and ownership, each allow beside a deny from
-- another workspace.
begin;
\ir helpers/setup.sql
select plan(47);

select tests.workspace('ann@a.test', 'alpha', 'free');   -- three seats
select tests.workspace('bob@b.test', 'bravo', 'pro');
select tests.member('alpha', 'adam@a.test', 'admin');
select tests.member('alpha', 'vic@a.test', 'viewer');
select tests.user('new@a.test');
select tests.user('eve@b.test');
select tests.member('bravo', 'eve@b.test', 'admin');

-- Inviting --------------------------------------------------------------------

select tests.become('vic@a.test', 'alpha');
select throws_ok($$ select * from cajex.invite_member('x@a.test', 'member', sha256('v'::bytea), 'l') $$,
  'CXFBD', null, 'a viewer cannot invite');
select is((select count(*)::int from cajex.invitations), 0, 'nor read invitations');

select tests.become('ann@a.test', 'alpha');
select is((select outcome from cajex.invite_member('vic@a.test', 'member', sha256('m'::bytea), 'l')),
  'already_member', 'inviting a member says so');
select is((select outcome from cajex.invite_member('not an address', 'member', sha256('b'::bytea), 'l')),
  'invalid_address', 'a bad address is an outcome, not an error');
select is((select outcome from cajex.invite_member('x@a.test', 'owner', sha256('o'::bytea), 'l')),
  'invalid_role', 'ownership is not given by invitation');
select is((select outcome from cajex.invite_member('over@a.test', 'member', sha256('s'::bytea), 'l')),
  'over_seat_limit', 'three of three seats are taken: over the limit before sending');
select tests.unbecome();
update cajex.workspaces set plan = 'basic' where slug = 'alpha';  -- ten seats
select tests.become('ann@a.test', 'alpha');
select is((select outcome from cajex.invite_member('New@A.test', 'viewer', sha256('tok-new'::bytea), 'l')),
  'invited', 'the owner invites an address (case folded)');
select is((select outcome from cajex.invite_member('new@a.test', 'member', sha256('tok-2'::bytea), 'l')),
  'already_invited', 'inviting it again says so');
select is((select count(*)::int from cajex.invitations where email = 'new@a.test'), 1, 'and adds nothing');
select is((select token_hash from cajex.invitations where email = 'new@a.test'), sha256('tok-new'::bytea),
  'only the hash of the token is stored');
select is((select expires_at - created_at from cajex.invitations where email = 'new@a.test'),
  interval '7 days', 'an invitation lasts seven days by default');
select is((select count(*)::int from cajex.outbox where kind = 'email.send' and payload ->> 'to' = 'new@a.test'),
  1, 'the email waits in the outbox');
select is((select count(*)::int from cajex.audit_log where action = 'invitation.created'), 1, 'and is audited');

select tests.become('eve@b.test', 'bravo');
select is((select count(*)::int from cajex.invitations), 0, 'another workspace''s admin sees no invitations');
select throws_ok(format('select cajex.revoke_invitation(%L)',
                        (select id from cajex.invitations where email = 'new@a.test')),
  'CXNFD', null, 'nor revokes them');
select tests.become('eve@b.test', 'alpha');
select throws_ok($$ select * from cajex.invite_member('y@a.test', 'member', sha256('e'::bytea), 'l') $$,
  'CXNCX', null, 'nor invites into a workspace she is not in');

-- Accepting -------------------------------------------------------------------

select tests.become('eve@b.test');
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-new'::bytea)) $$,
  'CXFBD', 'this invitation is for another email address', 'another signed-in address cannot accept');
select tests.become('new@a.test');
select throws_ok($$ select * from cajex.accept_invitation('bravo', sha256('tok-new'::bytea)) $$,
  'CXNFD', null, 'the token is bound to its workspace');
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('forged'::bytea)) $$,
  'CXNFD', null, 'an unknown token is not found');
select is((select role from cajex.accept_invitation('alpha', sha256('tok-new'::bytea))), 'viewer',
  'the invited address accepts with the invited role');
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-new'::bytea)) $$,
  'CXEXP', null, 'a token works once');
select is(tests.become('new@a.test', 'alpha'), 'alpha', 'the new member opens the workspace');

select tests.unbecome();
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-new'::bytea)) $$,
  'CXNCX', null, 'accepting needs a signed-in user');

-- Expired, revoked, declined, resent ------------------------------------------

select tests.become('ann@a.test', 'alpha');
select cajex.invite_member('late@a.test', 'member', sha256('tok-late'::bytea), 'l');
select cajex.invite_member('gone@a.test', 'member', sha256('tok-gone'::bytea), 'l');
select cajex.invite_member('shy@a.test', 'member', sha256('tok-shy'::bytea), 'l');
select cajex.invite_member('again@a.test', 'member', sha256('tok-old'::bytea), 'l');
select lives_ok(format('select cajex.revoke_invitation(%L)', (select id from cajex.invitations where email = 'gone@a.test')),
  'an admin revokes an invitation');
select lives_ok(format('select cajex.resend_invitation(%L, %L, %L)',
                       (select id from cajex.invitations where email = 'again@a.test'), sha256('tok-new2'::bytea), 'l'),
  'and sends one again with a new token');
select tests.unbecome();
update cajex.invitations set expires_at = now() - interval '1 second' where email = 'late@a.test';

select tests.user('late@a.test');
select tests.become('late@a.test');
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-late'::bytea)) $$,
  'CXEXP', 'this invitation has expired', 'an expired token is refused');
select tests.user('gone@a.test');
select tests.become('gone@a.test');
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-gone'::bytea)) $$,
  'CXEXP', null, 'a revoked token is refused');
select tests.user('again@a.test');
select tests.become('again@a.test');
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-old'::bytea)) $$,
  'CXEXP', null, 'the old token of a resent invitation is dead');
select lives_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-new2'::bytea)) $$,
  'the new one works');

select tests.unbecome();
select throws_ok($$ select cajex.decline_invitation('bravo', sha256('tok-shy'::bytea)) $$,
  'CXNFD', null, 'declining through another workspace''s address finds nothing');
select lives_ok($$ select cajex.decline_invitation('alpha', sha256('tok-shy'::bytea)) $$,
  'whoever holds the link may decline, signed in or not');
select is((select status from cajex.invitations where email = 'shy@a.test'), 'declined', 'and it is declined');

-- The seat limit again at acceptance --------------------------------------------

update cajex.workspaces set plan = 'free' where slug = 'alpha';
insert into cajex.invitations (workspace_id, email, role, token_hash, expires_at)
values (tests.workspace_id('alpha'), 'seat@a.test', 'member', sha256('tok-seat'::bytea), now() + interval '1 day');
select tests.user('seat@a.test');
select tests.become('seat@a.test');
select throws_ok($$ select * from cajex.accept_invitation('alpha', sha256('tok-seat'::bytea)) $$,
  'CXPLN', null, 'a full plan refuses the acceptance');
select tests.unbecome();
update cajex.workspaces set plan = 'basic' where slug = 'alpha';

-- Roles, removal, leaving ---------------------------------------------------------

select tests.become('adam@a.test', 'alpha');
select throws_ok(format('select cajex.change_member_role(%L, %L)', tests.user('vic@a.test'), 'admin'),
  'CXFBD', null, 'an admin cannot make admins');
select lives_ok(format('select cajex.change_member_role(%L, %L)', tests.user('vic@a.test'), 'member'),
  'an admin changes a viewer to member');
select throws_ok(format('select cajex.remove_member(%L)', tests.user('ann@a.test')),
  'CXOWN', null, 'the owner cannot be removed');
select tests.become('eve@b.test', 'bravo');
select throws_ok(format('select cajex.remove_member(%L)', tests.user('vic@a.test')),
  'CXNFD', null, 'another workspace''s admin cannot remove a member here');
select tests.become('adam@a.test', 'alpha');
select lives_ok(format('select cajex.remove_member(%L)', tests.user('vic@a.test')), 'an admin removes a member');
select is(tests.become('vic@a.test', 'alpha'), '(no workspace)', 'whose next context opens nothing');

select tests.become('ann@a.test', 'alpha');
select throws_ok('select cajex.leave_workspace()', 'CXOWN', null, 'the owner cannot leave');

-- Ownership -----------------------------------------------------------------------

select tests.become('adam@a.test', 'alpha');
select throws_ok(format('select cajex.transfer_ownership(%L)', tests.user('adam@a.test')),
  'CXFBD', null, 'an admin cannot take ownership');
select tests.become('ann@a.test', 'alpha');
select throws_ok(format('select cajex.transfer_ownership(%L)', tests.user('eve@b.test')),
  'CXNFD', null, 'ownership goes only to a member of this workspace');
select lives_ok(format('select cajex.transfer_ownership(%L)', tests.user('adam@a.test')),
  'the owner transfers ownership to an active member');
select tests.unbecome();
select results_eq(
  $$ select u.email, m.role from cajex.memberships m join cajex.users u on u.id = m.user_id
     where m.workspace_id = tests.workspace_id('alpha') and m.role in ('owner', 'admin') order by u.email $$,
  $$ values ('adam@a.test', 'owner'), ('ann@a.test', 'admin') $$,
  'the old owner is an admin, the new one the only owner');

-- Admins by invitation, and joining another way -------------------------------------

select tests.become('ann@a.test', 'alpha');  -- an admin since the transfer
select throws_ok($$ select * from cajex.invite_member('boss@a.test', 'admin', sha256('adm-1'::bytea), 'l') $$,
  'CXFBD', null, 'an admin cannot invite an admin');
select tests.become('adam@a.test', 'alpha');  -- the owner
select is((select outcome from cajex.invite_member('boss@a.test', 'admin', sha256('adm-2'::bytea), 'l')),
  'invited', 'the owner invites an admin');
select tests.unbecome();
select tests.member('alpha', 'boss@a.test', 'member');  -- joined by SSO or SCIM meanwhile
select is((select status from cajex.invitations where email = 'boss@a.test'), 'replaced',
  'joining another way ends the pending invitation');

select * from finish();
rollback;
