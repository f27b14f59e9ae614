-- Policies and grants of the core tables. Re-applied idempotently: each
-- policy is dropped and created again in the migration's transaction.
--
-- Naming: "<subject> can <command> <what>", so that a denial in a plan or a
-- log reads as a sentence. Every workspace-scoped policy compares to
-- (select c.workspace_id from cajex_private.context c): a sub-select, so it is evaluated once
-- per statement as an InitPlan, and null (no verified context) matches no row.

--------------------------------------------------------------------------------
-- Private tables

drop policy if exists "the migration can manage context keys" on cajex_private.context_keys;
create policy "the migration can manage context keys" on cajex_private.context_keys
  for all to cajex_owner using (true) with check (true);

drop policy if exists "the migration can manage the seal key" on cajex_private.seal_key;
create policy "the migration can manage the seal key" on cajex_private.seal_key
  for all to cajex_owner using (true) with check (true);

--------------------------------------------------------------------------------
-- Reference tables: readable by everyone who may log in.

drop policy if exists "anyone can read plans" on cajex.plans;
create policy "anyone can read plans" on cajex.plans for select using (true);

drop policy if exists "anyone can read the permission matrix" on cajex.role_permissions;
create policy "anyone can read the permission matrix" on cajex.role_permissions
  for select using (true);

--------------------------------------------------------------------------------
-- Users: a user sees themself and the members of the workspace open in the
-- context. Users are written only by definer functions (sign-in, SCIM).

drop policy if exists "users can read themselves and their workspace's members" on cajex.users;
create policy "users can read themselves and their workspace's members" on cajex.users
  for select using (
    id = (select c.user_id from cajex_private.context c)
    or exists (
      select from cajex.memberships m
      where m.workspace_id = (select c.workspace_id from cajex_private.context c) and m.user_id = users.id)
  );

--------------------------------------------------------------------------------
-- Organisations

drop policy if exists "members can read their organisations" on cajex.organisations;
create policy "members can read their organisations" on cajex.organisations
  for select using (
    exists (
      select from cajex.organisation_members om
      where om.organisation_id = organisations.id and om.user_id = (select c.user_id from cajex_private.context c))
    or id = (select w.organisation_id from cajex.workspaces w
             where w.id = (select c.workspace_id from cajex_private.context c))
  );

drop policy if exists "users can read their organisation memberships" on cajex.organisation_members;
create policy "users can read their organisation memberships" on cajex.organisation_members
  for select using (user_id = (select c.user_id from cajex_private.context c));

drop policy if exists "organisation owners can read the organisation audit" on cajex.organisation_audit_log;
create policy "organisation owners can read the organisation audit" on cajex.organisation_audit_log
  for select using (
    exists (
      select from cajex.organisation_members om
      where om.organisation_id = organisation_audit_log.organisation_id
        and om.user_id = (select c.user_id from cajex_private.context c)
        and om.role = 'owner')
  );

--------------------------------------------------------------------------------
-- Workspaces: the open workspace, and the names of the user's other ones
-- (for the switcher). Settings change through functions in context.

drop policy if exists "members can read their workspaces" on cajex.workspaces;
create policy "members can read their workspaces" on cajex.workspaces
  for select using (
    id = (select c.workspace_id from cajex_private.context c)
    or exists (
      select from cajex.memberships m
      where m.workspace_id = workspaces.id
        and m.user_id = (select c.user_id from cajex_private.context c)
        and m.status = 'active')
      -- A soft-deleted workspace is invisible to its members too.
      and workspaces.status = 'active'
  );

drop policy if exists "the context can update its workspace" on cajex.workspaces;
create policy "the context can update its workspace" on cajex.workspaces
  for update
  using (id = (select c.workspace_id from cajex_private.context c))
  with check (id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Memberships

drop policy if exists "members can read the workspace's memberships and their own" on cajex.memberships;
create policy "members can read the workspace's memberships and their own" on cajex.memberships
  for select using (
    workspace_id = (select c.workspace_id from cajex_private.context c)
    or user_id = (select c.user_id from cajex_private.context c)
  );

drop policy if exists "the context can add memberships" on cajex.memberships;
create policy "the context can add memberships" on cajex.memberships
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can change memberships" on cajex.memberships;
create policy "the context can change memberships" on cajex.memberships
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can remove memberships" on cajex.memberships;
create policy "the context can remove memberships" on cajex.memberships
  for delete using (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Projects

drop policy if exists "the context can read projects" on cajex.projects;
create policy "the context can read projects" on cajex.projects
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can add projects" on cajex.projects;
create policy "the context can add projects" on cajex.projects
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can change projects" on cajex.projects;
create policy "the context can change projects" on cajex.projects
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can remove projects" on cajex.projects;
create policy "the context can remove projects" on cajex.projects
  for delete using (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Sessions: a user sees their own (the sessions page).

drop policy if exists "users can read their own sessions" on cajex.sessions;
create policy "users can read their own sessions" on cajex.sessions
  for select using (user_id = (select c.user_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Audit log: readable by the roles the matrix allows, appended in context.

drop policy if exists "the context can read the audit log" on cajex.audit_log;
create policy "the context can read the audit log" on cajex.audit_log
  for select using (
    workspace_id = (select c.workspace_id from cajex_private.context c)
    and (select cajex.has_permission('audit.read'))
  );

drop policy if exists "the context can append to the audit log" on cajex.audit_log;
create policy "the context can append to the audit log" on cajex.audit_log
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Outbox: the context sees and adds its workspace's jobs; the relay works
-- through definer functions.

drop policy if exists "the context can read its jobs" on cajex.outbox;
create policy "the context can read its jobs" on cajex.outbox
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can add jobs" on cajex.outbox;
create policy "the context can add jobs" on cajex.outbox
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Workspace data keys (wrapped; useless without the master key).

drop policy if exists "the context can read its data keys" on cajex.workspace_keys;
create policy "the context can read its data keys" on cajex.workspace_keys
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can add data keys" on cajex.workspace_keys;
create policy "the context can add data keys" on cajex.workspace_keys
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can retire data keys" on cajex.workspace_keys;
create policy "the context can retire data keys" on cajex.workspace_keys
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Grants. Requests read tables through RLS and write only through functions.

grant usage on schema cajex, cajex_private to cajex_app, cajex_api;
grant usage on schema api to cajex_api, cajex_anon;

grant select on cajex_private.context to cajex_app, cajex_api, cajex_owner;
grant select on cajex.users, cajex.organisations, cajex.organisation_members,
  cajex.organisation_audit_log, cajex.plans, cajex.role_permissions, cajex.workspaces,
  cajex.memberships, cajex.projects, cajex.sessions, cajex.audit_log, cajex.outbox,
  cajex.workspace_keys
  to cajex_app, cajex_api;

-- The definer role bypasses RLS but still needs privileges.
grant select, insert, update, delete on all tables in schema cajex, cajex_private to cajex_definer;

grant execute on function
  cajex.current_workspace_id(), cajex.current_user_id(), cajex.current_member_role(),
  cajex.current_actor(), cajex.has_permission(text)
  to cajex_app, cajex_api, cajex_definer;
grant execute on function cajex_private.open_context(text, text) to cajex_app;
grant execute on function cajex_private.refuse_context() to cajex_app;
grant execute on function cajex_private.check_permission(uuid, boolean, text) to cajex_owner, cajex_definer;
grant execute on function cajex_private.open_api_context() to cajex_api;
-- Only the openers (owned by cajex_definer) check claims, sessions and seal.
revoke execute on function cajex_private.api_claims()
  from cajex_app, cajex_api, cajex_anon, cajex_owner;
grant execute on function cajex_private.api_claims() to cajex_definer;
grant execute on function
  cajex_private.install_context(uuid, uuid, text, text, boolean),
  cajex_private.seal_context(uuid, uuid, uuid, text, text, text)
  to cajex_definer;
-- A browser's opening (the view checks the credential it was given).
grant select on cajex_private.browser_opening to cajex_app;
grant execute on function cajex_private.session_may_open(text, uuid, uuid, boolean, text[])
  to cajex_app, cajex_api, cajex_definer;
-- Expanded into every statement's check of the context, as its reader.
grant execute on function cajex_private.seal(text, bytea, bytea)
  to cajex_app, cajex_api, cajex_anon, cajex_owner, cajex_definer;

grant execute on function
  cajex.create_organisation(text),
  cajex.create_workspace(uuid, text, text, text),
  cajex.my_workspaces(),
  cajex.my_organisations(),
  cajex.organisation_workspaces(uuid),
  cajex.context_seat_count(),
  cajex.create_project(text, text, text[], text),
  cajex.update_project(uuid, jsonb),
  cajex.delete_project(uuid)
  to cajex_app, cajex_api;

grant execute on function
  cajex_private.resolve_session(bytea),
  cajex_private.outbox_lag(),
  cajex_private.outbox_job_done(bigint)
  to cajex_app;
-- Users and sessions are made, and ended for anyone, by the sign-in pages
-- (cajex_signin) only; the job queue (every workspace's jobs and payloads)
-- is the worker's (cajex_worker). A request (cajex_app) has neither: from
-- one workspace's transaction it could otherwise sign in as anyone, or read
-- another workspace's invitation links.
grant execute on function
  cajex_private.ensure_user(text, text),
  cajex_private.create_session(uuid, bytea, text, interval, interval, text, uuid, uuid, text, text),
  cajex_private.revoke_sessions(uuid, text, uuid, uuid, text)
  to cajex_signin;
grant execute on function
  cajex_private.claim_outbox(integer, interval),
  cajex_private.claim_outbox_row(bigint, interval),
  cajex_private.release_outbox(bigint[]),
  cajex_private.finish_outbox_job(bigint, text),
  cajex_private.take_outbox_effect(bigint),
  cajex_private.record_heartbeat(bigint)
  to cajex_worker;
revoke execute on function
  cajex_private.ensure_user(text, text),
  cajex_private.create_session(uuid, bytea, text, interval, interval, text, uuid, uuid, text, text),
  cajex_private.revoke_sessions(uuid, text, uuid, uuid, text),
  cajex_private.enqueue_platform_job(uuid, text, jsonb, text, timestamptz),
  cajex_private.claim_outbox(integer, interval),
  cajex_private.claim_outbox_row(bigint, interval),
  cajex_private.release_outbox(bigint[]),
  cajex_private.finish_outbox_job(bigint, text),
  cajex_private.take_outbox_effect(bigint),
  cajex_private.record_heartbeat(bigint)
  from cajex_app;
-- Business functions (owned by cajex_owner) fence their jobs' effects too.
grant execute on function cajex_private.take_outbox_effect(bigint) to cajex_owner;

-- Functions called from inside other definer functions run as their owner:
-- the definer role calls private helpers, never the request roles.
grant execute on all functions in schema cajex_private to cajex_definer;
grant execute on function cajex_private.enqueue_job(text, jsonb, text, timestamptz) to cajex_app;

-- PostgREST
grant select on api.projects, api.members, api.workspace to cajex_api;
-- Anonymous requests run the pre-request too (it does nothing for them).
grant execute on function api.pre_request() to cajex_anon;
grant execute on function
  api.pre_request(),
  api.create_project(text, text, text[], text),
  api.update_project(uuid, jsonb),
  api.delete_project(uuid)
  to cajex_api;
grant execute on function cajex_private.add_member(uuid, text) to cajex_app;
-- Helpers that answer for any workspace id, or act on one without its
-- context, are the functions' own: a request in one workspace could
-- otherwise read or change another's (seat counts, group facts, roles).
revoke execute on function cajex.seat_count(uuid) from cajex_app, cajex_api;
grant execute on function cajex.workspace_has_feature(text) to cajex_app, cajex_api;
