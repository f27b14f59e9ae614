-- Per-workspace AI in SQL: settings, reservation, settlement, the budget's
-- notice, permissions; each allow beside a deny from another workspace.
begin;
\ir helpers/setup.sql
select plan(43);

select tests.workspace('ann@a.test', 'alpha', 'pro');
select tests.workspace('bob@b.test', 'bravo', 'pro');
select tests.member('alpha', 'adm@a.test', 'admin');
select tests.member('alpha', 'mem@a.test', 'member');
select tests.member('alpha', 'vic@a.test', 'viewer');

-- A stand-in for a sealed key: SQL only checks its size (cajex.crypto seals it).
create function tests.sealed() returns bytea language sql as $$
  select decode(repeat('ab', 40), 'hex');
$$;
grant execute on function tests.sealed() to public;
-- Reservations kept between statements (a request role cannot make temporary tables).
create table tests.held (name text primary key, status text, reservation_id uuid, reserved_tokens bigint);
grant select, insert on tests.held to public;

-- Settings ------------------------------------------------------------------------

select tests.become('ann@a.test', 'alpha');
select throws_ok($$ select cajex.ai_update_settings('{"enabled": true}') $$, 'CXINV', null,
  'AI cannot be switched on without a key');
select lives_ok($$ select cajex.ai_update_settings(
    '{"enabled": true, "model": "claude-test", "budget_tokens": 1000, "max_output_tokens": 100}',
    tests.sealed(), '…LAST') $$,
  'an owner can switch AI on with a sealed key');
select is((select api_key_last4 from cajex.ai_settings), '…LAST', 'and reads the last four back');
select throws_ok($$ select cajex.ai_update_settings('{"provider": "skynet"}') $$, 'CXINV', null,
  'an unknown provider is refused');
select throws_ok($$ select cajex.ai_update_settings('{"colour": "red"}') $$, 'CXINV',
  'unknown field colour', 'an unknown field is refused');
select throws_ok($$ select cajex.ai_update_settings('{"provider": "openai_compatible"}') $$, 'CXINV',
  'an OpenAI-compatible provider needs its base URL', 'a compatible provider needs a base URL');
select is((select count(*)::int from cajex.audit_log where action = 'ai.settings_changed'), 1,
  'the change is audited once (refused changes are not)');

select tests.become('adm@a.test', 'alpha');
select lives_ok($$ select cajex.ai_update_settings('{"timeout_seconds": 30}') $$,
  'an admin can change the settings');

select tests.become('mem@a.test', 'alpha');
select throws_ok($$ select cajex.ai_update_settings('{"enabled": false}') $$, 'CXFBD', null,
  'a member cannot change the settings');
select is((select count(*)::int from cajex.ai_settings), 0, 'nor read the settings row');
select is((select (cajex.ai_status() ->> 'enabled')::boolean), true,
  'but learns from ai_status that AI is on');
select ok(not (cajex.ai_status() ? 'api_key'), 'and ai_status carries no key material');

select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.ai_settings), 0, 'another workspace sees no settings');
select is((select (cajex.ai_status() ->> 'enabled')::boolean), false,
  'and its own AI is off');
select tests.become('bob@b.test', 'alpha');
select throws_ok($$ select cajex.ai_update_settings('{"enabled": false}') $$, 'CXNCX', null,
  'a non-member cannot change another workspace''s settings');

-- Reservation ---------------------------------------------------------------------

select tests.become('mem@a.test', 'alpha');
insert into tests.held
  select 'r1', status, reservation_id, reserved_tokens from cajex_private.ai_reserve('project_summary', 200);
select is((select status from tests.held where name = 'r1'), 'ok', 'a member reserves');
select is((select reserved_tokens from tests.held where name = 'r1'), 300::bigint,
  'the estimated input plus the answer limit');
select is((select reserved_tokens from cajex.ai_budget_counters where scope = 'all'), 300::bigint,
  'and the counter holds it');
select throws_ok($$ select * from cajex_private.ai_reserve('Bad Task', 10) $$, 'CXINV', null,
  'a bad task name is refused');
select throws_ok($$ select * from cajex_private.ai_reserve('project_summary', 0) $$, 'CXINV', null,
  'an empty reservation is refused');

select tests.become('vic@a.test', 'alpha');
select throws_ok($$ select * from cajex_private.ai_reserve('project_summary', 10) $$, 'CXFBD', null,
  'a viewer cannot use AI');

-- Settlement --------------------------------------------------------------------

select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex_private.ai_settle(
    (select reservation_id from tests.held where name = 'r1'), 'm', 10, 10)), 0,
  'another workspace cannot settle the reservation');
select is((select count(*)::int from cajex.ai_budget_counters), 0,
  'and sees no counters of it');

select tests.become('mem@a.test', 'alpha');
select results_eq(
  $$ select input_tokens, output_tokens from cajex_private.ai_settle((select reservation_id from tests.held where name = 'r1'),
       'claude-test', 40, 9999) $$,
  $$ values (40::bigint, 260::bigint) $$,
  'settling charges the actual tokens, capped at the reservation');
select is((select count(*)::int from cajex_private.ai_settle((select reservation_id from tests.held where name = 'r1'),
    'claude-test', 40, 25)), 0, 'settling twice does nothing');
select results_eq(
  $$ select used_tokens, reserved_tokens from cajex.ai_budget_counters where scope = 'all' $$,
  $$ values (300::bigint, 0::bigint) $$, 'the counter moved from reserved to used');

insert into tests.held
  select 'r2', status, reservation_id, reserved_tokens from cajex_private.ai_reserve('decision_record', 100);
select results_eq(
  $$ select input_tokens, output_tokens from cajex_private.ai_settle((select reservation_id from tests.held where name = 'r2'),
       'claude-test', 50, 50, true) $$,
  $$ values (0::bigint, 0::bigint) $$, 'a failed call charges nothing');
select is((select reserved_tokens from cajex.ai_budget_counters where scope = 'all'), 0::bigint,
  'and returns its reservation');

select tests.become('ann@a.test', 'alpha');
select results_eq(
  $$ select task, requests, failed_requests, input_tokens, output_tokens from cajex.ai_usage order by task $$,
  $$ values ('decision_record', 0, 1, 0::bigint, 0::bigint), ('project_summary', 1, 0, 40::bigint, 260::bigint) $$,
  'usage is recorded by model, task and day');

-- The budget --------------------------------------------------------------------

-- 1000 tokens, 300 used: a 600-token call fits, the next does not.
select tests.become('mem@a.test', 'alpha');
select is((select status from cajex_private.ai_reserve('project_summary', 500)), 'ok',
  'a call the budget covers is reserved');
select is((select status from cajex_private.ai_reserve('project_summary', 500)), 'budget',
  'a call past the budget is refused');
select ok((select used_tokens + reserved_tokens <= 1000 from cajex.ai_budget_counters where scope = 'all'),
  'and nothing was taken past the budget');
select is((select status from cajex_private.ai_reserve('project_summary', 500)), 'budget',
  'a second refusal');
select tests.unbecome();
select is(
  (select array_agg(payload ->> 'to' order by payload ->> 'to') from cajex.outbox
   where kind = 'email.send' and payload ->> 'template' = 'ai_budget'),
  array['adm@a.test', 'ann@a.test'],
  'the owner and admins are told once, the member is not');
select tests.become('mem@a.test', 'alpha');
select is((cajex.ai_status() ->> 'paused')::boolean, true, 'the status says paused');

select tests.become('ann@a.test', 'alpha');
select lives_ok($$ select cajex.ai_update_settings('{"budget_tokens": 100000}') $$,
  'an owner raises the budget');
select is((select status from cajex_private.ai_reserve('project_summary', 500)), 'ok',
  'which resumes AI at once');

select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.ai_usage), 0, 'another workspace sees no usage');
select is((select status from cajex_private.ai_reserve('project_summary', 10)), 'off',
  'and its own AI stays off');

-- Off, and the plan ------------------------------------------------------------------

select tests.become('ann@a.test', 'alpha');
select lives_ok($$ select cajex.ai_update_settings('{"enabled": false}') $$, 'an owner switches AI off');
select results_eq(
  $$ select status, api_key from cajex_private.ai_reserve('project_summary', 10) $$,
  $$ values ('off'::text, null::bytea) $$, 'AI off: refused, and no key leaves the database');
select throws_ok($$ update cajex.ai_budget_counters set used_tokens = 0 $$, '42501', null,
  'a request cannot write the counters directly');

select tests.unbecome();
update cajex.workspaces set plan = 'free' where slug = 'alpha';
select tests.become('ann@a.test', 'alpha');
select is((select status from cajex_private.ai_reserve('project_summary', 10)), 'plan',
  'a plan without AI refuses first');

select * from finish();
rollback;
