-- Policies and grants of SCIM provisioning and group-based roles. Every
-- table is workspace-owned and readable only in its own workspace's context;
-- writes go through the functions in db/functions/300_*.sql.

drop policy if exists "the context can read group role mappings" on cajex.group_role_mappings;
create policy "the context can read group role mappings" on cajex.group_role_mappings
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));
drop policy if exists "the context can add group role mappings" on cajex.group_role_mappings;
create policy "the context can add group role mappings" on cajex.group_role_mappings
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));
drop policy if exists "the context can change group role mappings" on cajex.group_role_mappings;
create policy "the context can change group role mappings" on cajex.group_role_mappings
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));
drop policy if exists "the context can remove group role mappings" on cajex.group_role_mappings;
create policy "the context can remove group role mappings" on cajex.group_role_mappings
  for delete using (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can read member group facts" on cajex.member_group_facts;
create policy "the context can read member group facts" on cajex.member_group_facts
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can read group role grants" on cajex.group_role_grants;
create policy "the context can read group role grants" on cajex.group_role_grants
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));

-- SCIM tables: one policy per command, each the same workspace check.
do $$
declare
  t text;
  cmd text;
begin
  foreach t in array array['scim_tokens', 'scim_users', 'scim_groups', 'scim_group_members'] loop
    foreach cmd in array array['select', 'insert', 'update', 'delete'] loop
      execute format('drop policy if exists %I on cajex.%I',
                     format('the context can %s %s', cmd, replace(t, '_', ' ')), t);
      if cmd = 'insert' then
        execute format('create policy %I on cajex.%I for insert with check '
                       '(workspace_id = (select c.workspace_id from cajex_private.context c))',
                       format('the context can %s %s', cmd, replace(t, '_', ' ')), t);
      elsif cmd = 'update' then
        execute format('create policy %I on cajex.%I for update using '
                       '(workspace_id = (select c.workspace_id from cajex_private.context c)) with check '
                       '(workspace_id = (select c.workspace_id from cajex_private.context c))',
                       format('the context can %s %s', cmd, replace(t, '_', ' ')), t);
      else
        execute format('create policy %I on cajex.%I for %s using '
                       '(workspace_id = (select c.workspace_id from cajex_private.context c))',
                       format('the context can %s %s', cmd, replace(t, '_', ' ')), t, cmd);
      end if;
    end loop;
  end loop;
end;
$$;

grant select on cajex.group_role_mappings, cajex.member_group_facts, cajex.group_role_grants,
  cajex.scim_tokens, cajex.scim_users, cajex.scim_groups, cajex.scim_group_members
  to cajex_app, cajex_api;
grant select, insert, update, delete on cajex.group_role_mappings, cajex.member_group_facts,
  cajex.group_role_grants, cajex.scim_tokens, cajex.scim_users, cajex.scim_groups,
  cajex.scim_group_members
  to cajex_definer;

grant execute on function
  cajex_private.role_rank(text),
  cajex.set_group_role_mapping(text, text),
  cajex.delete_group_role_mapping(uuid)
  to cajex_app;
-- These take any workspace's id and act without its context: only the
-- provisioning functions (cajex_definer) call them.
revoke execute on function
  cajex_private.recompute_member_role(uuid, uuid),
  cajex_private.set_member_groups(uuid, uuid, text, text[])
  from cajex_app;
grant execute on function
  cajex_private.role_rank(text),
  cajex_private.recompute_member_role(uuid, uuid),
  cajex_private.recompute_workspace_roles(uuid),
  cajex_private.require_group_mapping_permission()
  to cajex_definer, cajex_owner;

-- SCIM requests (cajex_app) open their context and call the SCIM functions;
-- the functions run as cajex_owner and call the definer helpers below.
grant execute on function
  cajex_private.open_scim_context(bytea),
  cajex.create_scim_token(text, bytea),
  cajex.revoke_scim_token(uuid),
  cajex.scim_create_user(jsonb),
  cajex.scim_replace_user(uuid, jsonb, integer),
  cajex.scim_delete_user(uuid, integer),
  cajex.scim_create_group(jsonb),
  cajex.scim_update_group(uuid, jsonb, integer),
  cajex.scim_delete_group(uuid, integer)
  to cajex_app;
grant execute on function
  cajex_private.ensure_user(text, text),
  cajex_private.revoke_sessions(uuid, text, uuid, uuid, text),
  cajex_private.require_seat(uuid, integer),
  cajex_private.has_other_active_membership(uuid, uuid)
  to cajex_owner;
grant execute on function cajex_private.require_scim() to cajex_app;
grant execute on function cajex_private.scim_workspace_id(text) to cajex_app;
