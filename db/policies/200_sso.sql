-- Policies and grants of the SSO tables (db/schema/0200_sso.sql). Every
-- table is workspace-owned: the context reads its own workspace's rows, and
-- writes go through the functions in db/functions/200_sso.sql.

--------------------------------------------------------------------------------
-- Connections: configuration is for admins (sso.read); the sign-in job
-- context reads them too.

drop policy if exists "admins can read the workspace's SSO connections" on cajex.sso_connections;
create policy "admins can read the workspace's SSO connections" on cajex.sso_connections
  for select using (
    workspace_id = (select c.workspace_id from cajex_private.context c)
    and (select cajex.has_permission('sso.read'))
  );

drop policy if exists "the context can add SSO connections" on cajex.sso_connections;
create policy "the context can add SSO connections" on cajex.sso_connections
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can change SSO connections" on cajex.sso_connections;
create policy "the context can change SSO connections" on cajex.sso_connections
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can remove SSO connections" on cajex.sso_connections;
create policy "the context can remove SSO connections" on cajex.sso_connections
  for delete using (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Domains

drop policy if exists "admins can read the workspace's SSO domains" on cajex.sso_domains;
create policy "admins can read the workspace's SSO domains" on cajex.sso_domains
  for select using (
    workspace_id = (select c.workspace_id from cajex_private.context c)
    and (select cajex.has_permission('sso.read'))
  );

drop policy if exists "the context can claim SSO domains" on cajex.sso_domains;
create policy "the context can claim SSO domains" on cajex.sso_domains
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can release SSO domains" on cajex.sso_domains;
create policy "the context can release SSO domains" on cajex.sso_domains
  for delete using (workspace_id = (select c.workspace_id from cajex_private.context c));

-- The routing table is the definer role's alone (it bypasses RLS); no policy
-- lets any other role see it.

--------------------------------------------------------------------------------
-- Identities, pending requests, the replay cache

drop policy if exists "admins can read the workspace's SSO identities" on cajex.sso_identities;
create policy "admins can read the workspace's SSO identities" on cajex.sso_identities
  for select using (
    workspace_id = (select c.workspace_id from cajex_private.context c)
    and (select cajex.has_permission('sso.read'))
  );

drop policy if exists "the context can manage SSO requests" on cajex.sso_requests;
create policy "the context can manage SSO requests" on cajex.sso_requests
  for all
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can manage the SSO replay cache" on cajex.sso_replay_cache;
create policy "the context can manage the SSO replay cache" on cajex.sso_replay_cache
  for all
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Grants

grant select on cajex.sso_connections, cajex.sso_domains, cajex.sso_identities
  to cajex_app, cajex_api;
grant select, insert, update, delete on cajex.sso_connections, cajex.sso_domains,
  cajex.sso_identities, cajex.sso_requests, cajex.sso_replay_cache,
  cajex_private.sso_domain_routes
  to cajex_definer;

grant execute on function
  cajex.create_sso_connection(text, jsonb),
  cajex.update_sso_connection(uuid, jsonb),
  cajex.set_sso_client_secret(uuid, bytea),
  cajex.set_sso_connection_status(uuid, text),
  cajex.mark_sso_connection_tested(uuid),
  cajex.delete_sso_connection(uuid),
  cajex.set_sso_enforced(boolean),
  cajex.claim_sso_domain(uuid, text),
  cajex.recheck_sso_domain(text),
  cajex.release_sso_domain(text),
  cajex.sso_connection_route(uuid),
  cajex.sso_route_for_email(text),
  cajex.sso_begin_request(uuid, text, text, integer),
  cajex.sso_consume_request(uuid, text, text),
  cajex.sso_remember_once(uuid, text, text, timestamptz),
  cajex_private.sso_provision(uuid, text, text, text, text[], boolean),
  cajex_private.sso_logout(uuid, text, text, text),
  cajex_private.sso_workspace_by_slug(text)
  to cajex_app;
-- The configuration functions (cajex_owner) end a connection's sessions.
grant execute on function cajex_private.sso_end_connection_sessions(uuid, text) to cajex_owner;
grant execute on function cajex_private.sso_domain_route() to cajex_owner;
grant execute on function cajex_private.is_public_mail_domain(text) to cajex_owner;
-- DNS proof of a claimed domain is the worker's to record.
grant execute on function cajex_private.record_sso_domain_check(uuid, text, text[]) to cajex_worker;

-- The OIDC client secret is sealed with the workspace's data key; data key
-- rotation re-seals it.
select cajex_private.register_encrypted_column('cajex.sso_connections', 'oidc_client_secret', '{id}');
