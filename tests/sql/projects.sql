-- cajex.projects and its functions, each allow beside a cross-workspace deny.
begin;
\ir helpers/setup.sql
select plan(12);

select tests.workspace('ann@a.test', 'alpha');
select tests.workspace('bob@b.test', 'bravo');
select tests.member('alpha', 'vic@a.test', 'viewer');

select tests.become('ann@a.test', 'alpha');
select lives_ok($$ select cajex.create_project('Alpha plan', 'd', '{strategy}') $$,
  'a member can create a project in their workspace');
select is((select count(*)::int from cajex.projects), 1, 'and sees it');

select tests.become('bob@b.test', 'bravo');
select lives_ok($$ select cajex.create_project('Bravo secret') $$, 'bob creates one in bravo');
select is((select count(*)::int from cajex.projects), 1, 'bob sees only bravo''s project');
select is((select name from cajex.projects), 'Bravo secret', 'and it is bravo''s');

select tests.become('bob@b.test', 'alpha');
select is((select count(*)::int from cajex.projects), 0, 'bob cannot open alpha: zero rows');
select throws_ok($$ select cajex.create_project('sneaky') $$, 'CXNCX', null,
  'and cannot write to alpha');

select tests.become('ann@a.test', 'alpha');
select throws_ok(
  format('select cajex.update_project(%L, %L)',
         (select id from cajex.projects limit 1), '{"colour": "red"}'),
  'CXINV', 'unknown field colour', 'an unknown field is refused');
select throws_ok($$ select cajex.create_project('') $$, 'CXINV', null, 'an empty name is refused');

select tests.become('vic@a.test', 'alpha');
select is((select count(*)::int from cajex.projects), 1, 'a viewer reads');
select throws_ok($$ select cajex.create_project('viewer write') $$, 'CXFBD', null, 'a viewer cannot write');

select tests.unbecome();
select set_config('cajex.workspace_id', tests.workspace_id('alpha')::text, true);
set local role cajex_app;
select is((select count(*)::int from cajex.projects), 0, 'a plain setting opens nothing');

select * from finish();
rollback;
