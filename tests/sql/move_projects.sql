-- Many workspaces: the organisation listing, move targets and moving
-- projects between workspaces of one organisation; each allow beside a deny.
begin;
\ir helpers/setup.sql
select plan(17);

select tests.workspace('olga@o.test', 'north', 'pro');
-- A second workspace of the same organisation, owned by olga too.
insert into cajex.workspaces (organisation_id, slug, name, plan)
select w.organisation_id, 'south', 'south', 'team' from cajex.workspaces w where w.slug = 'north';
insert into cajex.memberships (workspace_id, user_id, role)
values (tests.workspace_id('south'), tests.user('olga@o.test'), 'owner');
select tests.workspace('xavier@x.test', 'elsewhere', 'pro');         -- another organisation
select tests.member('north', 'ada@o.test', 'admin');
select tests.member('south', 'ada@o.test', 'member');
select tests.member('north', 'mo@o.test', 'member');
select tests.member('elsewhere', 'olga@o.test', 'admin');

select tests.become('olga@o.test', 'north');
select cajex.create_project('Keep');
select cajex.create_project('Move me');
select cajex.create_project('Me too');

-- The organisation page ------------------------------------------------------------

select results_eq(
  format('select slug, plan, seats from cajex.organisation_workspaces(%L)',
         (select organisation_id from cajex.workspaces where slug = 'north')),
  $$ values ('north', 'pro', 3), ('south', 'team', 2) $$,
  'the organisation owner sees its workspaces with plan and seats');
select tests.become('ada@o.test', 'north');
select is((select count(*)::int from cajex.organisation_workspaces(
             (select organisation_id from cajex.workspaces where slug = 'north'))), 0,
  'a workspace admin who does not own the organisation sees none');
select tests.become('xavier@x.test', 'elsewhere');
select is((select count(*)::int from cajex.organisation_workspaces(
             (select w.organisation_id from cajex.my_workspaces() w where w.slug = 'north'))), 0,
  'another organisation''s owner sees none');

-- Targets ---------------------------------------------------------------------------

select tests.become('olga@o.test', 'north');
select results_eq('select slug from cajex.project_move_targets()', $$ values ('south') $$,
  'targets are the other workspaces of the organisation where the caller may move');
select tests.become('ada@o.test', 'north');
select is((select count(*)::int from cajex.project_move_targets()), 0,
  'a member of the target is offered nothing');

-- Moving ------------------------------------------------------------------------------

select tests.become('mo@o.test', 'north');
select throws_ok(format('select cajex.move_projects(%L, %L)', 'south',
                        array(select id from cajex.projects where name = 'Move me')),
  'CXFBD', null, 'a member cannot move projects');
select tests.become('ada@o.test', 'north');
select throws_ok(format('select cajex.move_projects(%L, %L)', 'south',
                        array(select id from cajex.projects where name = 'Move me')),
  'CXNFD', null, 'an admin of the source only cannot move into the target');
select tests.become('olga@o.test', 'north');
select throws_ok(format('select cajex.move_projects(%L, %L)', 'elsewhere',
                        array(select id from cajex.projects where name = 'Move me')),
  'CXNFD', null, 'nor can anyone move into another organisation');
select throws_ok(format('select cajex.move_projects(%L, %L)', 'south', array[gen_random_uuid()]),
  'CXNFD', null, 'projects not in the open workspace are not found');
select throws_ok($$ select cajex.move_projects('south', '{}') $$, 'CXINV', null, 'an empty choice is invalid');

select is((select cajex.move_projects('south',
             array(select id from cajex.projects where name in ('Move me', 'Me too')))), 2,
  'the owner of both moves two projects');
select results_eq('select name from cajex.projects order by name', $$ values ('Keep') $$,
  'they are gone from the source');
select is((select count(*)::int from cajex.audit_log where action = 'project.moved_out'), 1,
  'the source records the move');
select tests.become('mo@o.test', 'north');
select results_eq('select name from cajex.projects order by name', $$ values ('Keep') $$,
  'for every member of the source');
select tests.become('olga@o.test', 'south');
select results_eq('select name from cajex.projects order by name', $$ values ('Me too'), ('Move me') $$,
  'and are in the target');
select is((select count(*)::int from cajex.audit_log where action = 'project.moved_in'), 1,
  'which records the move too');
select tests.become('ada@o.test', 'south');
select is((select count(*)::int from cajex.audit_log), 0, 'a plain member of the target reads no audit log');

select * from finish();
rollback;
