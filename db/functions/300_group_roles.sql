-- Group-based roles, shared by SCIM and SSO (docs/scim.md, "Group-based
-- roles"). A member's groups come from SCIM (scim_group_members) and from the
-- identity provider's groups claim at sign-in (member_group_facts); a group
-- mapped to a role grants it. The highest mapped role wins; the owner is
-- never touched; with no mapped group the role an admin set is kept (or given
-- back, when a mapping had raised or lowered it).

-- No SET clause, so that the planner inlines it (see normalise_email).
create or replace function cajex_private.role_rank(p_role text)
returns integer
language sql
immutable
parallel safe
as $$
  select case p_role when 'viewer' then 1 when 'member' then 2 when 'admin' then 3
                     when 'owner' then 4 else 0 end;
$$;

-- Recompute one member's role from their groups. Definer (cajex_definer):
-- SSO calls it at sign-in before any context exists, so it scopes every
-- statement to p_workspace_id itself. Returns the member's role afterwards
-- (null when they are not a member). Audits a change as 'member.role_changed'
-- with reason 'group_mapping' and the acting context's actor (or 'system').
create or replace function cajex_private.recompute_member_role(p_workspace_id uuid, p_user_id uuid)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_role text;
  v_mapped text;
  v_grant cajex.group_role_grants;
  v_new text;
begin
  select m.role into v_role from cajex.memberships m
  where m.workspace_id = p_workspace_id and m.user_id = p_user_id
  for update;
  if v_role is null or v_role = 'owner' then
    return v_role;
  end if;

  with keys as (
    select lower(k) as k
    from cajex.scim_group_members gm
    join cajex.scim_users su on su.workspace_id = gm.workspace_id and su.id = gm.scim_user_id
    join cajex.scim_groups g on g.workspace_id = gm.workspace_id and g.id = gm.group_id
    cross join lateral unnest(array[g.id::text, g.external_id, g.display_name]) as k
    where gm.workspace_id = p_workspace_id and su.user_id = p_user_id and k is not null
    union
    select lower(f.group_key)
    from cajex.member_group_facts f
    where f.workspace_id = p_workspace_id and f.user_id = p_user_id
  )
  select r.role into v_mapped
  from cajex.group_role_mappings r
  join keys on keys.k = lower(r.group_key)
  where r.workspace_id = p_workspace_id
  order by cajex_private.role_rank(r.role) desc
  limit 1;

  select * into v_grant from cajex.group_role_grants g
  where g.workspace_id = p_workspace_id and g.user_id = p_user_id;

  if v_mapped is not null then
    v_new := v_mapped;
    insert into cajex.group_role_grants (workspace_id, user_id, base_role, granted_role)
    values (p_workspace_id, p_user_id, v_role, v_mapped)
    on conflict (workspace_id, user_id) do update
      set granted_role = excluded.granted_role, updated_at = now();
  elsif v_grant.user_id is not null then
    -- The last mapped group is gone: give back the role from before.
    v_new := v_grant.base_role;
    delete from cajex.group_role_grants g
    where g.workspace_id = p_workspace_id and g.user_id = p_user_id;
  else
    return v_role;
  end if;

  if v_new is distinct from v_role then
    update cajex.memberships m set role = v_new
    where m.workspace_id = p_workspace_id and m.user_id = p_user_id;
    insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id, details)
    values (p_workspace_id, (select cajex.current_user_id()),
            coalesce((select cajex.current_actor()), 'system'),
            'member.role_changed', 'user', p_user_id::text,
            jsonb_build_object('from', v_role, 'to', v_new, 'reason', 'group_mapping'));
  end if;
  return v_new;
end;
$$;
alter function cajex_private.recompute_member_role(uuid, uuid) owner to cajex_definer;
comment on function cajex_private.recompute_member_role(uuid, uuid) is
  'Recompute a member''s role from their SCIM and SSO groups and the workspace''s group '
  'role mappings; returns the resulting role (null: not a member).';

-- Replace the groups an identity provider reported for a member at sign-in
-- and recompute their role. SSO calls this on every sign-in with the groups
-- claim (ids or names; empty array: in no group). Returns the resulting role.
create or replace function cajex_private.set_member_groups(
  p_workspace_id uuid,
  p_user_id uuid,
  p_source text,
  p_groups text[]
)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_source is distinct from 'sso' then
    raise exception 'group facts come from sso' using errcode = 'CXINV', detail = 'source';
  end if;
  if cardinality(coalesce(p_groups, '{}')) > 1000 then
    raise exception 'at most 1000 groups' using errcode = 'CXINV', detail = 'groups';
  end if;
  if not exists (select from cajex.memberships m
                 where m.workspace_id = p_workspace_id and m.user_id = p_user_id) then
    return null;
  end if;
  delete from cajex.member_group_facts f
  where f.workspace_id = p_workspace_id and f.user_id = p_user_id and f.source = p_source
    and not (f.group_key = any (coalesce(p_groups, '{}')));
  insert into cajex.member_group_facts (workspace_id, user_id, source, group_key)
  select p_workspace_id, p_user_id, p_source, left(g, 256)
  from unnest(coalesce(p_groups, '{}')) as g
  where g is not null and btrim(g) <> ''
  on conflict (workspace_id, user_id, source, group_key) do update set updated_at = now();
  return cajex_private.recompute_member_role(p_workspace_id, p_user_id);
end;
$$;
alter function cajex_private.set_member_groups(uuid, uuid, text, text[]) owner to cajex_definer;
comment on function cajex_private.set_member_groups(uuid, uuid, text, text[]) is
  'Record the groups an identity provider reported for a member (source ''sso'') and '
  'recompute their role; returns the resulting role (null: not a member).';

--------------------------------------------------------------------------------
-- Managing mappings, in the open workspace (owners and admins: the
-- 'scim.configure' or 'sso.configure' permission). Every member's role is
-- recomputed, so a new mapping applies at once.

create or replace function cajex_private.require_group_mapping_permission()
returns void
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select cajex.current_workspace_id()) is null then
    raise exception 'no workspace is open for this request' using errcode = 'CXNCX';
  end if;
  if not (cajex.has_permission('scim.configure') or cajex.has_permission('sso.configure')) then
    raise exception 'your role may not map groups to roles'
      using errcode = 'CXFBD', detail = 'scim.configure',
        hint = 'Ask an owner or admin of this workspace.';
  end if;
end;
$$;

-- The workspace's admins, in order: a mapping changed by an admin must leave
-- them as they were (only the owner makes or unmakes admins).
create or replace function cajex_private.workspace_admins(p_workspace_id uuid)
returns uuid[]
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return array(select m.user_id from cajex.memberships m
               where m.workspace_id = p_workspace_id and m.role = 'admin' and m.status = 'active'
               order by m.user_id);
end;
$$;

create or replace function cajex_private.require_admins_unchanged(p_workspace_id uuid, p_before uuid[])
returns void
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select cajex.current_member_role()) not in ('owner', 'system')
     and cajex_private.workspace_admins(p_workspace_id) is distinct from p_before then
    raise exception 'this mapping would make or unmake an admin, which only the owner does'
      using errcode = 'CXFBD', detail = 'role', hint = 'Ask the workspace''s owner.';
  end if;
end;
$$;

create or replace function cajex_private.recompute_workspace_roles(p_workspace_id uuid)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid;
  v_count integer := 0;
begin
  for v_user in
    select m.user_id from cajex.memberships m
    where m.workspace_id = p_workspace_id and m.role <> 'owner'
    order by m.user_id
  loop
    perform cajex_private.recompute_member_role(p_workspace_id, v_user);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;
alter function cajex_private.recompute_workspace_roles(uuid) owner to cajex_definer;

create or replace function cajex.set_group_role_mapping(p_group_key text, p_role text)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_id uuid;
  v_admins uuid[];
begin
  perform cajex_private.require_group_mapping_permission();
  if p_group_key is null or char_length(btrim(p_group_key)) not between 1 and 256 then
    raise exception 'a group id or name of 1 to 256 characters' using errcode = 'CXINV', detail = 'group_key';
  end if;
  if p_role is null or p_role not in ('admin', 'member', 'viewer') then
    raise exception 'a group grants admin, member or viewer (never owner)'
      using errcode = 'CXINV', detail = 'role';
  end if;
  -- Groups come from SSO and SCIM: mapping them is part of those features.
  if not (cajex.workspace_has_feature('sso') or cajex.workspace_has_feature('scim')) then
    raise exception 'this workspace''s plan does not include SSO or SCIM, which bring the groups'
      using errcode = 'CXFTR', detail = 'sso',
        hint = 'Upgrade the workspace''s plan to map groups to roles.';
  end if;
  -- As with a member's role, only the owner makes or unmakes admins: a
  -- mapping to admin, or a change of one, is the owner's.
  if (p_role = 'admin' or exists (select from cajex.group_role_mappings r
                                  where r.workspace_id = v_ws and lower(r.group_key) = lower(btrim(p_group_key))
                                    and r.role = 'admin'))
     and (select cajex.current_member_role()) not in ('owner', 'system') then
    raise exception 'only the owner maps a group to the admin role'
      using errcode = 'CXFBD', detail = 'role', hint = 'Ask the workspace''s owner.';
  end if;
  v_admins := cajex_private.workspace_admins(v_ws);
  insert into cajex.group_role_mappings (workspace_id, group_key, role, created_by)
  values (v_ws, btrim(p_group_key), p_role, (select cajex.current_user_id()))
  on conflict (workspace_id, lower(group_key)) do update set role = excluded.role
  returning id into v_id;
  perform cajex_private.write_audit('group_mapping.set', 'group_mapping', v_id::text,
                                    jsonb_build_object('group_key', btrim(p_group_key), 'role', p_role));
  perform cajex_private.recompute_workspace_roles(v_ws);
  perform cajex_private.require_admins_unchanged(v_ws, v_admins);
  return v_id;
end;
$$;

create or replace function cajex.delete_group_role_mapping(p_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_admins uuid[];
begin
  perform cajex_private.require_group_mapping_permission();
  if exists (select from cajex.group_role_mappings r
             where r.workspace_id = v_ws and r.id = p_id and r.role = 'admin')
     and (select cajex.current_member_role()) not in ('owner', 'system') then
    raise exception 'only the owner removes a mapping to the admin role'
      using errcode = 'CXFBD', detail = 'role', hint = 'Ask the workspace''s owner.';
  end if;
  v_admins := cajex_private.workspace_admins(v_ws);
  delete from cajex.group_role_mappings r where r.workspace_id = v_ws and r.id = p_id;
  if not found then
    raise exception 'no such mapping' using errcode = 'CXNFD', detail = 'group_mapping';
  end if;
  perform cajex_private.write_audit('group_mapping.deleted', 'group_mapping', p_id::text, '{}');
  perform cajex_private.recompute_workspace_roles(v_ws);
  perform cajex_private.require_admins_unchanged(v_ws, v_admins);
end;
$$;
