-- SCIM provisioning: the request context of a bearer token, tokens, users,
-- groups. The web layer (cajex/scim/) parses SCIM JSON and PATCH operations
-- into plain fields; these functions check, write and audit in one step,
-- with the token as the actor ('scim:<token id>').

--------------------------------------------------------------------------------
-- Opening a SCIM request's context. Definer (cajex_definer): no context
-- exists yet, the token hash alone names the workspace. Seals the context
-- as open_context does for a job: role 'system', no user, actor
-- 'scim:<token id>'. A wrong, revoked or unknown token, or a workspace that
-- is not active, opens nothing (all nulls).
create or replace function cajex_private.open_scim_context(
  p_token_hash bytea,
  out workspace_id uuid,
  out workspace_slug text,
  out token_id uuid
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_last timestamptz;
begin
  perform set_config('cajex.context', '', true);
  if p_token_hash is null or octet_length(p_token_hash) <> 32 then
    return;
  end if;
  select t.workspace_id, w.slug, t.id, t.last_used_at
    into workspace_id, workspace_slug, token_id, v_last
  from cajex.scim_tokens t
  join cajex.workspaces w on w.id = t.workspace_id and w.status = 'active'
  where t.token_hash = p_token_hash and t.revoked_at is null
  limit 1;
  if workspace_id is null then
    return;
  end if;
  -- Last use, at most once a minute, so that a sync burst stays cheap.
  if v_last is null or v_last < now() - interval '1 minute' then
    update cajex.scim_tokens t set last_used_at = now()
    where t.workspace_id = open_scim_context.workspace_id and t.id = open_scim_context.token_id;
  end if;
  perform cajex_private.seal_context(open_scim_context.workspace_id, null, null, 'system',
                                     'scim:' || open_scim_context.token_id, workspace_slug);
end;
$$;
alter function cajex_private.open_scim_context(bytea) owner to cajex_definer;
comment on function cajex_private.open_scim_context(bytea) is
  'Verify a SCIM bearer token (its SHA-256) and open its workspace''s context for this '
  'transaction, actor ''scim:<token id>''. All nulls and no context for a bad token.';

-- Every SCIM function starts here: the context must be a SCIM token's and
-- the workspace's plan must include SCIM (checked on every request, so a
-- downgrade stops provisioning at once).
create or replace function cajex_private.require_scim()
returns uuid
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
begin
  if v_ws is null then
    raise exception 'no workspace is open for this request' using errcode = 'CXNCX';
  end if;
  if (select cajex.current_member_role()) is distinct from 'system'
     or coalesce((select cajex.current_actor()), '') not like 'scim:%' then
    raise exception 'only a SCIM token may provision' using errcode = 'CXFBD', detail = 'scim.provision';
  end if;
  perform cajex_private.require_feature('scim');
  return v_ws;
end;
$$;
comment on function cajex_private.require_scim() is
  'Raise unless the context is a SCIM token''s on a plan with SCIM; returns the workspace id.';

--------------------------------------------------------------------------------
-- Tokens, managed by owners and admins (and the CLI, acting as 'system').

create or replace function cajex.create_scim_token(p_label text, p_token_hash bytea)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_id uuid;
begin
  if (select cajex.current_member_role()) is distinct from 'system' then
    perform cajex_private.require_permission('scim.configure');
  elsif v_ws is null then
    raise exception 'no workspace is open for this request' using errcode = 'CXNCX';
  end if;
  perform cajex_private.hold_plan();
  perform cajex_private.require_feature('scim');
  if p_label is null or char_length(btrim(p_label)) not between 1 and 100 then
    raise exception 'a label of 1 to 100 characters' using errcode = 'CXINV', detail = 'label';
  end if;
  if p_token_hash is null or octet_length(p_token_hash) <> 32 then
    raise exception 'a SHA-256 token hash' using errcode = 'CXINV', detail = 'token_hash';
  end if;
  if (select count(*) from cajex.scim_tokens t where t.workspace_id = v_ws and t.revoked_at is null) >= 20 then
    raise exception 'at most 20 live SCIM tokens' using errcode = 'CXINV', detail = 'token',
      hint = 'Revoke a token you no longer use.';
  end if;
  insert into cajex.scim_tokens (workspace_id, label, token_hash, created_by)
  values (v_ws, btrim(p_label), p_token_hash, (select cajex.current_user_id()))
  returning id into v_id;
  perform cajex_private.write_audit('scim.token_created', 'scim_token', v_id::text,
                                    jsonb_build_object('label', btrim(p_label)));
  return v_id;
end;
$$;

create or replace function cajex.revoke_scim_token(p_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select cajex.current_member_role()) is distinct from 'system' then
    perform cajex_private.require_permission('scim.configure');
  end if;
  update cajex.scim_tokens t set revoked_at = now(), revoked_by = (select cajex.current_user_id())
  where t.workspace_id = (select cajex.current_workspace_id()) and t.id = p_id and t.revoked_at is null;
  if not found then
    raise exception 'no such live token' using errcode = 'CXNFD', detail = 'scim_token';
  end if;
  perform cajex_private.write_audit('scim.token_revoked', 'scim_token', p_id::text, '{}');
end;
$$;

--------------------------------------------------------------------------------
-- Users

-- Validate the plain fields of a user (the keys the web layer produces).
create or replace function cajex_private.scim_check_user(p jsonb)
returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  k text;
begin
  if p is null or jsonb_typeof(p) <> 'object' then
    raise exception 'a user object' using errcode = 'CXINV', detail = 'user';
  end if;
  for k in select jsonb_object_keys(p) loop
    if k not in ('user_name', 'external_id', 'display_name', 'given_name', 'family_name',
                 'formatted_name', 'emails', 'employee_number', 'department', 'manager_id',
                 'active', 'email') then
      raise exception 'unknown field %', k using errcode = 'CXINV', detail = k;
    end if;
  end loop;
  if coalesce(char_length(btrim(p ->> 'user_name')), 0) not between 1 and 320 then
    raise exception 'userName is required (1 to 320 characters)' using errcode = 'CXINV', detail = 'userName';
  end if;
  if jsonb_typeof(coalesce(p -> 'emails', '[]')) <> 'array' then
    raise exception 'emails is a list' using errcode = 'CXINV', detail = 'emails';
  end if;
  if jsonb_typeof(coalesce(p -> 'active', 'true')) <> 'boolean' then
    raise exception 'active is a boolean' using errcode = 'CXINV', detail = 'active';
  end if;
end;
$$;

-- Activate or deactivate a provisioned member. Deactivating frees the seat
-- (seats count active memberships) and ends sessions: all of the person's
-- sessions when this was their last active workspace, otherwise those this
-- workspace's identity provider opened; the membership check keeps any
-- other session out of this workspace from the very next request.
create or replace function cajex_private.scim_set_active(p_ws uuid, p_user_id uuid, p_active boolean)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_status text;
  v_role text;
begin
  select m.status, m.role into v_status, v_role from cajex.memberships m
  where m.workspace_id = p_ws and m.user_id = p_user_id for update;
  if p_active and v_status = 'deactivated' then
    perform cajex_private.require_seat(p_ws);
    update cajex.memberships m set status = 'active' where m.workspace_id = p_ws and m.user_id = p_user_id;
    perform cajex_private.write_audit('scim.user_activated', 'user', p_user_id::text, '{}');
  elsif not p_active and v_status = 'active' then
    if v_role = 'owner' then
      raise exception 'the workspace owner cannot be deactivated'
        using errcode = 'CXOWN', detail = 'active', hint = 'Transfer ownership first.';
    end if;
    update cajex.memberships m set status = 'deactivated'
    where m.workspace_id = p_ws and m.user_id = p_user_id;
    perform cajex_private.scim_end_sessions(p_ws, p_user_id, 'scim_deactivated');
    perform cajex_private.write_audit('scim.user_deactivated', 'user', p_user_id::text, '{}');
  end if;
end;
$$;

create or replace function cajex_private.scim_end_sessions(p_ws uuid, p_user_id uuid, p_reason text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if cajex_private.has_other_active_membership(p_ws, p_user_id) then
    perform cajex_private.revoke_sessions(p_user_id, p_reason, null, p_ws);
  else
    perform cajex_private.revoke_sessions(p_user_id, p_reason);
  end if;
end;
$$;

-- Whether the person is an active member of any other workspace. Definer
-- (cajex_definer): it must look past this workspace, and answers only a
-- boolean.
create or replace function cajex_private.has_other_active_membership(p_ws uuid, p_user_id uuid)
returns boolean
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select exists (select from cajex.memberships m
                   where m.user_id = p_user_id and m.workspace_id <> p_ws and m.status = 'active'));
end;
$$;
alter function cajex_private.has_other_active_membership(uuid, uuid) owner to cajex_definer;

create or replace function cajex.scim_create_user(p jsonb)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := cajex_private.require_scim();
  v_user uuid;
  v_id uuid;
  v_active boolean;
  v_email text;
begin
  perform cajex_private.scim_check_user(p);
  v_active := coalesce((p ->> 'active')::boolean, true);
  if exists (select from cajex.scim_users su
             where su.workspace_id = v_ws and su.user_name_folded = lower(btrim(p ->> 'user_name'))) then
    raise exception 'a user with that userName exists' using errcode = 'CXDUP', detail = 'userName';
  end if;
  v_email := coalesce(nullif(p ->> 'email', ''), btrim(p ->> 'user_name'));
  if cajex_private.normalise_email(v_email) !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then
    raise exception 'a user needs an email address (emails or an address as userName)'
      using errcode = 'CXINV', detail = 'emails';
  end if;
  v_user := cajex_private.ensure_user(v_email, coalesce(p ->> 'display_name', p ->> 'formatted_name'));
  if exists (select from cajex.scim_users su where su.workspace_id = v_ws and su.user_id = v_user) then
    raise exception 'that person is already provisioned under another userName'
      using errcode = 'CXDUP', detail = 'emails';
  end if;
  if not exists (select from cajex.memberships m where m.workspace_id = v_ws and m.user_id = v_user) then
    if v_active then
      perform cajex_private.require_seat(v_ws);
    end if;
    insert into cajex.memberships (workspace_id, user_id, role, status)
    values (v_ws, v_user, 'member', case when v_active then 'active' else 'deactivated' end);
    perform cajex_private.write_audit('member.added', 'user', v_user::text,
                                      jsonb_build_object('role', 'member', 'via', 'scim'));
  else
    -- An existing member (invited earlier, or the owner) is linked, not
    -- re-created; their role stays.
    perform cajex_private.scim_set_active(v_ws, v_user, v_active);
  end if;
  insert into cajex.scim_users (workspace_id, user_id, user_name, external_id, display_name, given_name,
                                family_name, formatted_name, emails, employee_number, department, manager_id)
  values (v_ws, v_user, btrim(p ->> 'user_name'), p ->> 'external_id', p ->> 'display_name',
          p ->> 'given_name', p ->> 'family_name', p ->> 'formatted_name', coalesce(p -> 'emails', '[]'),
          p ->> 'employee_number', p ->> 'department', p ->> 'manager_id')
  returning id into v_id;
  perform cajex_private.write_audit('scim.user_created', 'scim_user', v_id::text,
                                    jsonb_build_object('user_id', v_user, 'active', v_active));
  return v_id;
exception
  when unique_violation then
    raise exception 'a user with that userName exists' using errcode = 'CXDUP', detail = 'userName';
end;
$$;

-- Replace a user's attributes (PUT, and PATCH after the web layer applied
-- its operations to the current resource). p_version, when given, must be
-- the current version (If-Match).
create or replace function cajex.scim_replace_user(p_id uuid, p jsonb, p_version integer default null)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := cajex_private.require_scim();
  v_row cajex.scim_users;
begin
  perform cajex_private.scim_check_user(p);
  select * into v_row from cajex.scim_users su where su.workspace_id = v_ws and su.id = p_id for update;
  if v_row.id is null then
    raise exception 'no such user' using errcode = 'CXNFD', detail = 'id';
  end if;
  if p_version is not null and p_version <> v_row.version then
    raise exception 'the user changed since you read it' using errcode = 'CXSTL', detail = 'version';
  end if;
  if exists (select from cajex.scim_users su
             where su.workspace_id = v_ws and su.id <> p_id
               and su.user_name_folded = lower(btrim(p ->> 'user_name'))) then
    raise exception 'a user with that userName exists' using errcode = 'CXDUP', detail = 'userName';
  end if;
  update cajex.scim_users su
  set user_name = btrim(p ->> 'user_name'), external_id = p ->> 'external_id',
      display_name = p ->> 'display_name', given_name = p ->> 'given_name',
      family_name = p ->> 'family_name', formatted_name = p ->> 'formatted_name',
      emails = coalesce(p -> 'emails', '[]'), employee_number = p ->> 'employee_number',
      department = p ->> 'department', manager_id = p ->> 'manager_id',
      version = su.version + 1, updated_at = now()
  where su.workspace_id = v_ws and su.id = p_id;
  if p ? 'active' then
    perform cajex_private.scim_set_active(v_ws, v_row.user_id, (p ->> 'active')::boolean);
  end if;
  perform cajex_private.write_audit('scim.user_updated', 'scim_user', p_id::text,
                                    jsonb_build_object('user_id', v_row.user_id));
  return v_row.version + 1;
end;
$$;

-- DELETE: the membership goes (and with it the SCIM resource, its group
-- memberships and role grants); the person and their other workspaces stay.
create or replace function cajex.scim_delete_user(p_id uuid, p_version integer default null)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := cajex_private.require_scim();
  v_row cajex.scim_users;
  v_role text;
begin
  select * into v_row from cajex.scim_users su where su.workspace_id = v_ws and su.id = p_id for update;
  if v_row.id is null then
    raise exception 'no such user' using errcode = 'CXNFD', detail = 'id';
  end if;
  if p_version is not null and p_version <> v_row.version then
    raise exception 'the user changed since you read it' using errcode = 'CXSTL', detail = 'version';
  end if;
  select m.role into v_role from cajex.memberships m where m.workspace_id = v_ws and m.user_id = v_row.user_id;
  if v_role = 'owner' then
    raise exception 'the workspace owner cannot be removed'
      using errcode = 'CXOWN', detail = 'id', hint = 'Transfer ownership first.';
  end if;
  delete from cajex.memberships m where m.workspace_id = v_ws and m.user_id = v_row.user_id;
  perform cajex_private.scim_end_sessions(v_ws, v_row.user_id, 'scim_deleted');
  perform cajex_private.write_audit('scim.user_deleted', 'scim_user', p_id::text,
                                    jsonb_build_object('user_id', v_row.user_id));
end;
$$;

--------------------------------------------------------------------------------
-- Groups

-- The members named by SCIM id, all of this workspace's, or CXINV.
create or replace function cajex_private.scim_member_ids(p_ws uuid, p_ids jsonb)
returns uuid[]
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ids uuid[];
  v_found integer;
begin
  if p_ids is null or jsonb_typeof(p_ids) = 'null' then
    return '{}';
  end if;
  if jsonb_typeof(p_ids) <> 'array' then
    raise exception 'members is a list' using errcode = 'CXINV', detail = 'members';
  end if;
  begin
    select coalesce(array_agg(distinct e::uuid), '{}') into v_ids from jsonb_array_elements_text(p_ids) e;
  exception when invalid_text_representation then
    raise exception 'a member is not a user of this workspace' using errcode = 'CXINV', detail = 'members';
  end;
  select count(*) into v_found from cajex.scim_users su where su.workspace_id = p_ws and su.id = any (v_ids);
  if v_found <> cardinality(v_ids) then
    raise exception 'a member is not a user of this workspace' using errcode = 'CXINV', detail = 'members';
  end if;
  return v_ids;
end;
$$;

create or replace function cajex_private.scim_recompute(p_ws uuid, p_scim_user_ids uuid[])
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid;
begin
  for v_user in
    select su.user_id from cajex.scim_users su
    where su.workspace_id = p_ws and su.id = any (p_scim_user_ids) order by su.user_id
  loop
    perform cajex_private.recompute_member_role(p_ws, v_user);
  end loop;
end;
$$;

create or replace function cajex.scim_create_group(p jsonb)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := cajex_private.require_scim();
  v_id uuid;
  v_members uuid[];
begin
  if coalesce(char_length(btrim(p ->> 'display_name')), 0) not between 1 and 256 then
    raise exception 'displayName is required (1 to 256 characters)' using errcode = 'CXINV', detail = 'displayName';
  end if;
  if exists (select from cajex.scim_groups g
             where g.workspace_id = v_ws and g.display_name_folded = lower(btrim(p ->> 'display_name'))) then
    raise exception 'a group with that displayName exists' using errcode = 'CXDUP', detail = 'displayName';
  end if;
  v_members := cajex_private.scim_member_ids(v_ws, p -> 'members');
  insert into cajex.scim_groups (workspace_id, display_name, external_id)
  values (v_ws, btrim(p ->> 'display_name'), p ->> 'external_id')
  returning id into v_id;
  insert into cajex.scim_group_members (workspace_id, group_id, scim_user_id)
  select v_ws, v_id, m from unnest(v_members) m;
  perform cajex_private.scim_recompute(v_ws, v_members);
  perform cajex_private.write_audit('scim.group_created', 'scim_group', v_id::text,
                                    jsonb_build_object('members', cardinality(v_members)));
  return v_id;
exception
  when unique_violation then
    raise exception 'a group with that displayName exists' using errcode = 'CXDUP', detail = 'displayName';
end;
$$;

-- Change a group: keys present in p are changed. 'display_name',
-- 'external_id'; 'members' replaces the member list; 'add' and 'remove' add
-- and remove members (by SCIM user id; removing a non-member is no error).
create or replace function cajex.scim_update_group(p_id uuid, p jsonb, p_version integer default null)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := cajex_private.require_scim();
  v_row cajex.scim_groups;
  v_before uuid[];
  v_after uuid[];
  v_remove uuid[];
begin
  select * into v_row from cajex.scim_groups g where g.workspace_id = v_ws and g.id = p_id for update;
  if v_row.id is null then
    raise exception 'no such group' using errcode = 'CXNFD', detail = 'id';
  end if;
  if p_version is not null and p_version <> v_row.version then
    raise exception 'the group changed since you read it' using errcode = 'CXSTL', detail = 'version';
  end if;
  if p ? 'display_name' then
    if coalesce(char_length(btrim(p ->> 'display_name')), 0) not between 1 and 256 then
      raise exception 'displayName is required (1 to 256 characters)' using errcode = 'CXINV', detail = 'displayName';
    end if;
    if exists (select from cajex.scim_groups g
               where g.workspace_id = v_ws and g.id <> p_id
                 and g.display_name_folded = lower(btrim(p ->> 'display_name'))) then
      raise exception 'a group with that displayName exists' using errcode = 'CXDUP', detail = 'displayName';
    end if;
  end if;
  select coalesce(array_agg(gm.scim_user_id), '{}') into v_before
  from cajex.scim_group_members gm where gm.workspace_id = v_ws and gm.group_id = p_id;

  update cajex.scim_groups g
  set display_name = case when p ? 'display_name' then btrim(p ->> 'display_name') else g.display_name end,
      external_id = case when p ? 'external_id' then p ->> 'external_id' else g.external_id end,
      version = g.version + 1, updated_at = now()
  where g.workspace_id = v_ws and g.id = p_id;

  if p ? 'members' then
    v_after := cajex_private.scim_member_ids(v_ws, p -> 'members');
    delete from cajex.scim_group_members gm
    where gm.workspace_id = v_ws and gm.group_id = p_id and not (gm.scim_user_id = any (v_after));
    insert into cajex.scim_group_members (workspace_id, group_id, scim_user_id)
    select v_ws, p_id, m from unnest(v_after) m on conflict do nothing;
  end if;
  if p ? 'add' then
    insert into cajex.scim_group_members (workspace_id, group_id, scim_user_id)
    select v_ws, p_id, m from unnest(cajex_private.scim_member_ids(v_ws, p -> 'add')) m
    on conflict do nothing;
  end if;
  if p ? 'remove' then
    -- Removal ignores ids that are not members (or not users at all).
    select coalesce(array_agg(e::uuid), '{}') into v_remove
    from jsonb_array_elements_text(coalesce(p -> 'remove', '[]')) e
    where e ~ '^[0-9a-fA-F-]{36}$';
    delete from cajex.scim_group_members gm
    where gm.workspace_id = v_ws and gm.group_id = p_id and gm.scim_user_id = any (v_remove);
  end if;

  select coalesce(array_agg(gm.scim_user_id), '{}') into v_after
  from cajex.scim_group_members gm where gm.workspace_id = v_ws and gm.group_id = p_id;
  -- Only the members who joined or left need a new role (all of them when
  -- the group's name or external id, and so its mapping, changed).
  if p ? 'display_name' or p ? 'external_id' then
    perform cajex_private.scim_recompute(v_ws, v_before || v_after);
  else
    perform cajex_private.scim_recompute(v_ws,
      array((select unnest(v_before) except select unnest(v_after))
            union (select unnest(v_after) except select unnest(v_before))));
  end if;
  perform cajex_private.write_audit('scim.group_updated', 'scim_group', p_id::text,
                                    jsonb_build_object('members', cardinality(v_after)));
  return v_row.version + 1;
end;
$$;

create or replace function cajex.scim_delete_group(p_id uuid, p_version integer default null)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := cajex_private.require_scim();
  v_row cajex.scim_groups;
  v_members uuid[];
begin
  select * into v_row from cajex.scim_groups g where g.workspace_id = v_ws and g.id = p_id for update;
  if v_row.id is null then
    raise exception 'no such group' using errcode = 'CXNFD', detail = 'id';
  end if;
  if p_version is not null and p_version <> v_row.version then
    raise exception 'the group changed since you read it' using errcode = 'CXSTL', detail = 'version';
  end if;
  select coalesce(array_agg(gm.scim_user_id), '{}') into v_members
  from cajex.scim_group_members gm where gm.workspace_id = v_ws and gm.group_id = p_id;
  delete from cajex.scim_groups g where g.workspace_id = v_ws and g.id = p_id;
  perform cajex_private.scim_recompute(v_ws, v_members);
  perform cajex_private.write_audit('scim.group_deleted', 'scim_group', p_id::text, '{}');
end;
$$;

-- The id of an active workspace by slug, for `cajex scim token create
-- --workspace SLUG` (which then opens a service context for that id). Slugs
-- are public addresses; this says nothing more than the sign-in page does.
create or replace function cajex_private.scim_workspace_id(p_slug text)
returns uuid
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select w.id from cajex.workspaces w where w.slug = p_slug and w.status = 'active';
$$;
alter function cajex_private.scim_workspace_id(text) owner to cajex_definer;
