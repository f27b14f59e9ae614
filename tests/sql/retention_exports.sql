-- Exports, soft delete, restore and purge: each allow beside a deny from
-- another workspace or role.
begin;
\ir helpers/setup.sql
select plan(26);

select tests.workspace('ann@a.test', 'alpha');
select tests.workspace('bob@b.test', 'bravo');
-- Ids read as the superuser: a request role without a context sees no workspace.
select tests.workspace_id('alpha') as alpha, tests.workspace_id('bravo') as bravo \gset
select tests.member('alpha', 'mia@a.test', 'member');

-- Exports ---------------------------------------------------------------------
select tests.become('ann@a.test', 'alpha');
select lives_ok($$ select cajex.request_export() $$, 'an owner requests an export (every plan)');
select is((select count(*)::int from cajex.exports), 1, 'and sees it');
select is((select count(*)::int from cajex.outbox where kind = 'export.run'), 1, 'the job is queued');
select is((select (cajex.request_export()).id) , (select id from cajex.exports), 'a second click returns the pending one');

select tests.become('mia@a.test', 'alpha');
select throws_ok($$ select cajex.request_export() $$, 'CXFBD', null, 'a member may not export');
select is((select count(*)::int from cajex.exports), 0, 'nor read exports');

select tests.become('bob@b.test', 'bravo');
select is((select count(*)::int from cajex.exports), 0, 'another workspace sees no export');
select throws_ok(format('select cajex.start_export(%L)', (select id from cajex.exports limit 1)),
  'CXFBD', null, 'a user cannot act as the export job');

select tests.become_job('bravo');
select throws_ok(
  format('select cajex.start_export(%L)', (select e.id from cajex.exports e limit 1)),
  'CXNFD', null, 'bravo''s job cannot take alpha''s export');

select tests.unbecome();
create temp table t_export on commit drop as select id from cajex.exports;
grant select on t_export to cajex_app;
select tests.become_job('alpha');
select is((select (cajex.start_export((select id from t_export))).status), 'running', 'alpha''s job takes it');
-- The job finishes the attempt start_export handed out (its number is
-- `attempts`), with objects under that attempt's own prefix.
select tests.unbecome();
create temp table t_key on commit drop as
  select (:'alpha')::uuid || '/exports/' || id || '/1/export.json' as key from t_export;
grant select on t_key to cajex_app;
select tests.become_job('alpha');
select throws_ok(
  format('select cajex.finish_export(%L, %L, %L, %L, p_attempt => 1)', (select id from t_export),
         jsonb_build_object('json', jsonb_build_object('key', (:'bravo')::uuid || '/x', 'sha256', repeat('a', 64))),
         '{}', 'v'),
  'CXINV', null, 'an object keyed under another workspace is refused');
select throws_ok(
  format('select cajex.finish_export(%L, %L, %L, %L, p_attempt => 1)', (select id from t_export),
         jsonb_build_object('json', jsonb_build_object('key', replace((select key from t_key), '/1/', '/2/'),
                                                       'sha256', repeat('a', 64))),
         '{}', 'v'),
  'CXINV', null, 'so is one under another attempt''s prefix');
select throws_ok(
  format('select cajex.finish_export(%L, %L, %L, %L, p_attempt => 2)', (select id from t_export),
         jsonb_build_object('json', jsonb_build_object('key', replace((select key from t_key), '/1/', '/2/'),
                                                       'sha256', repeat('a', 64))),
         '{}', 'v'),
  'CXSTL', null, 'an attempt that is not the current one cannot finish');
select lives_ok(
  format('select cajex.finish_export(%L, %L, %L, %L, p_attempt => 1)', (select id from t_export),
         jsonb_build_object('json', jsonb_build_object('key', (select key from t_key), 'sha256', repeat('a', 64))),
         '{"projects": 0}', 'v'),
  'the current attempt''s published object is accepted');

select tests.unbecome();
set local role cajex_app;
select ok(cajex_private.export_download_allowed((:'alpha')::uuid, (select key from t_key)),
  'the download check allows the workspace''s own object');
select ok(not cajex_private.export_download_allowed((:'bravo')::uuid, (select key from t_key)),
  'and refuses it under another workspace');

-- Soft delete -----------------------------------------------------------------
select tests.become('mia@a.test', 'alpha');
select throws_ok($$ select cajex.delete_workspace('alpha') $$, 'CXFBD', null, 'a member may not delete');
select tests.become('ann@a.test', 'alpha');
select throws_ok($$ select cajex.delete_workspace('wrong name') $$, 'CXINV', null, 'the name must be typed');
select lives_ok($$ select cajex.delete_workspace('alpha', 30) $$, 'the owner deletes');

select tests.become('ann@a.test', 'alpha');
select is((select count(*)::int from cajex.projects) + (select count(*)::int from cajex.exports), 0,
  'the deleted workspace opens no context');
select tests.become_job('alpha');
select is(cajex.current_workspace_id(), null, 'nor for a job');
select tests.unbecome();
set local role cajex_app;
select ok(not cajex_private.export_download_allowed((:'alpha')::uuid, (select key from t_key)),
  'nor for a download link');

-- Restore ---------------------------------------------------------------------
select tests.become('bob@b.test');
select throws_ok(format('select cajex.restore_workspace(%L)', (:'alpha')::uuid),
  'CXNFD', null, 'another user cannot restore it');
select is((select count(*)::int from cajex.my_deleted_workspaces()), 0, 'nor list it');
select tests.become('ann@a.test');
select is((select slug from cajex.my_deleted_workspaces()), 'alpha', 'the owner lists it');
select is(cajex.restore_workspace((:'alpha')::uuid), 'alpha', 'and restores it');

select * from finish();
rollback;
