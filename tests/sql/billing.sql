-- Billing in SQL: the seat counter, its sync job's outbox row, plan gates and
-- plan changes, the sync state, and Stripe events. Each allow beside a
-- cross-workspace deny; every throws_ok names its SQLSTATE.
begin;
\ir helpers/setup.sql
select plan(34);

select tests.workspace('ann@a.test', 'alpha', 'basic');
select tests.workspace('bob@b.test', 'bravo', 'free');

-- The counter ---------------------------------------------------------------
select is((select seats_used from cajex.workspace_billing where workspace_id = tests.workspace_id('alpha')),
  1, 'a new workspace counts its owner');
select tests.member('alpha', 'cat@a.test');
select tests.member('alpha', 'dan@a.test', 'viewer');
select is(cajex.seat_count(tests.workspace_id('alpha')), 3, 'each join takes a seat');
update cajex.memberships set status = 'deactivated'
where workspace_id = tests.workspace_id('alpha') and user_id = tests.user('dan@a.test');
select is(cajex.seat_count(tests.workspace_id('alpha')), 2, 'a deactivated member frees the seat');
update cajex.memberships set role = 'admin'
where workspace_id = tests.workspace_id('alpha') and user_id = tests.user('cat@a.test');
select is(cajex.seat_count(tests.workspace_id('alpha')), 2, 'a role change moves no seat');
delete from cajex.memberships
where workspace_id = tests.workspace_id('alpha') and user_id = tests.user('dan@a.test');
select is(cajex.seat_count(tests.workspace_id('alpha')), 2, 'removing a deactivated member moves no seat');
select is(cajex.seat_count(tests.workspace_id('bravo')), 1, 'another workspace''s count is its own');
select is((select count(*)::int from cajex.outbox where kind = 'billing.sync_seats'), 0,
  'no sync is written for a workspace Stripe does not bill');

-- A billed workspace: a burst of changes writes one pending sync.
update cajex.workspace_billing set stripe_customer_id = 'cus_alpha', stripe_subscription_id = 'sub_alpha',
  subscription_status = 'active', seats_paid = 2
where workspace_id = tests.workspace_id('alpha');
select tests.member('alpha', 'eve@a.test');
select tests.member('alpha', 'fay@a.test');
delete from cajex.memberships
where workspace_id = tests.workspace_id('alpha') and user_id = tests.user('fay@a.test');
select is((select count(*)::int from cajex.outbox
           where kind = 'billing.sync_seats' and workspace_id = tests.workspace_id('alpha') and done_at is null),
  1, 'three seat changes coalesce into one pending sync');
select ok((select run_after > now() from cajex.outbox
           where kind = 'billing.sync_seats' and workspace_id = tests.workspace_id('alpha')),
  'the sync waits for the coalescing window');

-- Reading billing -------------------------------------------------------------
select tests.become('ann@a.test', 'alpha');
select is((select seats_used from cajex.workspace_billing), 3, 'the owner reads the counter');
select is((select count(*)::int from cajex.workspace_billing), 1, 'and only their workspace''s row');
select tests.become('eve@a.test', 'alpha');
select is((select count(*)::int from cajex.workspace_billing), 0, 'a member reads no billing');
select tests.become('bob@b.test', 'alpha');
select is((select count(*)::int from cajex.workspace_billing), 0, 'another workspace''s owner reads nothing');

-- Plan changes ----------------------------------------------------------------
select tests.become('ann@a.test', 'alpha');
select is((select string_agg(limit_name, ',') from cajex.plan_change_blockers('free')), null,
  'three seats fit Free');
select tests.unbecome();
select tests.member('alpha', 'gus@a.test');
select tests.become('ann@a.test', 'alpha');
select is((select string_agg(limit_name, ',') from cajex.plan_change_blockers('free')), 'seats',
  'four seats do not fit Free, and the blocker says seats');
select throws_ok($$ select cajex.change_plan('free', 'offline') $$, 'CXPLN', null,
  'a downgrade that breaks a limit is refused');
select throws_ok($$ select cajex.change_plan('team', 'offline') $$, 'CXINV', null,
  'a workspace Stripe bills is not moved to a paid plan offline');
select lives_ok($$ select cajex.change_plan('pro', 'stripe') $$, 'the owner changes the plan after Stripe did');
select is((select details ->> 'to' from cajex.audit_log where action = 'billing.plan_changed'), 'pro',
  'the change is in the audit log');
select throws_ok($$ select cajex.change_plan('gold', 'offline') $$, 'CXINV', null, 'an unknown plan is refused');
select tests.become('eve@a.test', 'alpha');
select throws_ok($$ select cajex.change_plan('team', 'stripe') $$, 'CXFBD', null, 'a member cannot change the plan');
select tests.become('bob@b.test', 'alpha');
select throws_ok($$ select cajex.change_plan('team', 'offline') $$, 'CXNCX', null,
  'another workspace''s owner cannot change this plan');
select tests.become('bob@b.test', 'bravo');
select lives_ok($$ select cajex.change_plan('basic', 'offline') $$, 'an offline workspace chooses its plan');

-- The sync job's state ----------------------------------------------------------
select tests.become_job('alpha');
select is((select seats_used from cajex_private.seat_sync_state()), 4, 'the job reads the counter');
select lives_ok($$ select cajex_private.record_seat_sync(
  (select seat_sequence from cajex_private.seat_sync_state()), 4) $$, 'the job records what Stripe bills');
select is((select seats_paid from cajex.workspace_billing), 4, 'seats paid follow');
select lives_ok($$ select cajex_private.record_seat_sync(1, 1) $$, 'an older sync finishing late');
select is((select seats_paid from cajex.workspace_billing), 4, 'does not overwrite a newer one');
select tests.become('ann@a.test', 'alpha');
select throws_ok($$ select * from cajex_private.seat_sync_state() $$, 'CXFBD', null,
  'only a job reads the sync state');

-- Stripe events and the payment gate -------------------------------------------
select tests.unbecome();
select is(cajex_private.apply_stripe_event('evt_1', 'invoice.payment_failed', extract(epoch from now())::bigint,
  'cus_alpha', '{}'), 'applied', 'a failed payment is applied');
select is(cajex_private.apply_stripe_event('evt_1', 'invoice.payment_failed', extract(epoch from now())::bigint,
  'cus_alpha', '{}'), 'duplicate', 'the same event id is applied once');
select is(cajex_private.apply_stripe_event('evt_2', 'invoice.payment_failed', extract(epoch from now())::bigint,
  'cus_nobody', '{}'), 'unmapped', 'an unknown customer changes nothing');
update cajex.workspace_billing set grace_until = now() - interval '1 second'
where workspace_id = tests.workspace_id('alpha');
select throws_ok($$ select cajex_private.require_seat(tests.workspace_id('alpha')) $$, 'CXPLN',
  'a payment failed and the grace period is over: no new seats until it is paid',
  'past the grace period no seat is added');
select lives_ok($$ select cajex_private.require_seat(tests.workspace_id('bravo')) $$,
  'another workspace still adds seats');

select * from finish();
rollback;
