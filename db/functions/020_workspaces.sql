-- Organisations, workspaces and the one-owner rule.

--------------------------------------------------------------------------------
-- A workspace always has exactly one owner. The unique index allows at most
-- one; this deferred check, run at commit, refuses zero. It reads all
-- memberships of the workspace, so it runs as the definer role.
create or replace function cajex_private.check_one_owner()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_workspace uuid := coalesce(new.workspace_id, old.workspace_id);
begin
  if exists (select from cajex.workspaces w where w.id = v_workspace and w.status = 'active')
     and not exists (
       select from cajex.memberships m
       where m.workspace_id = v_workspace and m.role = 'owner' and m.status = 'active') then
    raise exception 'a workspace must keep exactly one owner'
      using errcode = 'CXOWN',
        hint = 'Transfer ownership to another active member first.';
  end if;
  return null;
end;
$$;
alter function cajex_private.check_one_owner() owner to cajex_definer;

drop trigger if exists memberships_one_owner on cajex.memberships;
create constraint trigger memberships_one_owner
  after insert or update or delete on cajex.memberships
  deferrable initially deferred
  for each row execute function cajex_private.check_one_owner();

create or replace function cajex_private.touch_updated_at()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

drop trigger if exists memberships_touch on cajex.memberships;
create trigger memberships_touch
  before update on cajex.memberships
  for each row execute function cajex_private.touch_updated_at();

--------------------------------------------------------------------------------
-- Creating organisations and workspaces. Definer (bypass) functions: the
-- creator has no context in a workspace that does not exist yet.

create or replace function cajex.create_organisation(p_name text)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := (select cajex.current_user_id());
  v_id uuid;
begin
  if v_user is null then
    raise exception 'sign in to create an organisation' using errcode = 'CXNCX';
  end if;
  if p_name is null or char_length(btrim(p_name)) not between 1 and 200 then
    raise exception 'an organisation name has 1 to 200 characters'
      using errcode = 'CXINV', detail = 'name';
  end if;
  insert into cajex.organisations (name, created_by) values (btrim(p_name), v_user)
  returning id into v_id;
  insert into cajex.organisation_members (organisation_id, user_id, role)
  values (v_id, v_user, 'owner');
  insert into cajex.organisation_audit_log (organisation_id, actor_user_id, action, details)
  values (v_id, v_user, 'organisation.created', jsonb_build_object('name', btrim(p_name)));
  return v_id;
end;
$$;
alter function cajex.create_organisation(text) owner to cajex_definer;

create or replace function cajex.create_workspace(
  p_organisation_id uuid,
  p_slug text,
  p_name text,
  p_plan text default 'free'
)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := (select cajex.current_user_id());
  v_id uuid;
begin
  if v_user is null then
    raise exception 'sign in to create a workspace' using errcode = 'CXNCX';
  end if;
  if not exists (
    select from cajex.organisation_members om
    where om.organisation_id = p_organisation_id and om.user_id = v_user and om.role = 'owner') then
    -- Same answer for an organisation that does not exist.
    raise exception 'organisation not found' using errcode = 'CXNFD', detail = 'organisation';
  end if;
  if p_slug is null or p_slug !~ '^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$' then
    raise exception 'a workspace address has 3 to 48 lowercase letters, digits or dashes'
      using errcode = 'CXINV', detail = 'slug';
  end if;
  if p_name is null or char_length(btrim(p_name)) not between 1 and 200 then
    raise exception 'a workspace name has 1 to 200 characters'
      using errcode = 'CXINV', detail = 'name';
  end if;
  if not exists (select from cajex.plans p where p.code = p_plan) then
    raise exception 'unknown plan %', p_plan using errcode = 'CXINV', detail = 'plan';
  end if;
  begin
    insert into cajex.workspaces (organisation_id, slug, name, plan, settings)
    values (p_organisation_id, p_slug, btrim(p_name), p_plan,
            -- First-run defaults; the onboarding wizard changes them.
            jsonb_build_object(
              'default_role', 'member',
              'ai_enabled', false,
              'project_tags', jsonb_build_array('strategy', 'security', 'vendor', 'platform')))
    returning id into v_id;
  exception when unique_violation then
    raise exception 'the workspace address % is taken', p_slug
      using errcode = 'CXSLG', detail = 'slug', hint = 'Choose another address.';
  end;
  insert into cajex.memberships (workspace_id, user_id, role) values (v_id, v_user, 'owner');
  insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id, details)
  values (v_id, v_user, 'user', 'workspace.created', 'workspace', v_id::text,
          jsonb_build_object('slug', p_slug, 'plan', p_plan));
  insert into cajex.organisation_audit_log (organisation_id, actor_user_id, action, workspace_id, details)
  values (p_organisation_id, v_user, 'workspace.created', v_id, jsonb_build_object('slug', p_slug));
  return v_id;
end;
$$;
alter function cajex.create_workspace(uuid, text, text, text) owner to cajex_definer;
comment on function cajex.create_workspace(uuid, text, text, text) is
  'Create a workspace in an organisation the caller owns; the caller becomes its only owner.';

--------------------------------------------------------------------------------
-- Reading across workspaces, within what the caller may see.

create or replace function cajex.my_workspaces()
returns table (workspace_id uuid, slug text, name text, plan text, role text, organisation_id uuid)
-- PL/pgSQL for its cached plan: every page's workspace switcher calls it.
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
  select w.id, w.slug, w.name, w.plan, m.role, w.organisation_id
  from cajex.memberships m
  join cajex.workspaces w on w.id = m.workspace_id
  where m.user_id = (select cajex.current_user_id())
    and m.status = 'active'
    and w.status = 'active'
  order by w.name, w.slug;
end;
$$;
alter function cajex.my_workspaces() owner to cajex_definer;
comment on function cajex.my_workspaces() is
  'The active workspaces of the context''s user, with their role: names only, no data.';

create or replace function cajex.seat_count(p_workspace_id uuid)
returns integer
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- The counter the seat trigger keeps (functions/500): never a recount.
  return coalesce((select b.seats_used from cajex.workspace_billing b
                   where b.workspace_id = p_workspace_id), 0);
end;
$$;
alter function cajex.seat_count(uuid) owner to cajex_definer;

-- The open workspace's seats, for its pages. seat_count(uuid) answers for
-- any workspace, so only the functions get it; requests get this one.
create or replace function cajex.context_seat_count()
returns integer
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return cajex.seat_count((select c.workspace_id from cajex_private.context c));
end;
$$;
alter function cajex.context_seat_count() owner to cajex_definer;

-- What an organisation owner sees of its workspaces: names, plans, seats.
create or replace function cajex.organisation_workspaces(p_organisation_id uuid)
returns table (workspace_id uuid, slug text, name text, plan text, status text, seats integer)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select w.id, w.slug, w.name, w.plan, w.status, cajex.seat_count(w.id)
    from cajex.workspaces w
    where w.organisation_id = p_organisation_id
      and w.status <> 'purged'
      and exists (
        select from cajex.organisation_members om
        where om.organisation_id = p_organisation_id
          and om.user_id = (select cajex.current_user_id())
          and om.role = 'owner')
    order by w.name;
end;
$$;
alter function cajex.organisation_workspaces(uuid) owner to cajex_definer;

create or replace function cajex.my_organisations()
returns table (organisation_id uuid, name text, role text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select o.id, o.name, om.role
    from cajex.organisation_members om
    join cajex.organisations o on o.id = om.organisation_id
    where om.user_id = (select cajex.current_user_id())
    order by o.name;
end;
$$;
alter function cajex.my_organisations() owner to cajex_definer;

--------------------------------------------------------------------------------
-- Adding a member directly, in the open workspace: used by the demo loader
-- and the tests' factory (people normally arrive by invitation, SSO or
-- SCIM). Runs as cajex_owner, so RLS keeps it inside the context, and holds
-- to the rules of the other ways in: a seat on the plan (and no payment
-- limit), and only the owner makes admins.
create or replace function cajex_private.add_member(p_user_id uuid, p_role text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
begin
  perform cajex_private.require_permission('member.invite');
  if p_role not in ('admin', 'member', 'viewer') then
    raise exception 'a new member is an admin, member or viewer' using errcode = 'CXINV', detail = 'role';
  end if;
  if p_role = 'admin' and (select cajex.current_member_role()) not in ('owner', 'system') then
    raise exception 'only the owner grants or withdraws the admin role'
      using errcode = 'CXFBD', detail = 'role', hint = 'Ask the workspace''s owner.';
  end if;
  -- Locks the workspace row (as invitations do), so concurrent additions
  -- cannot pass the plan's seats together.
  perform from cajex.workspaces w where w.id = v_ws for no key update;
  if not exists (select from cajex.memberships m
                 where m.workspace_id = v_ws and m.user_id = p_user_id and m.status = 'active') then
    perform cajex_private.require_seat(v_ws);
  end if;
  insert into cajex.memberships (workspace_id, user_id, role)
  values ((select cajex.current_workspace_id()), p_user_id, p_role)
  on conflict (workspace_id, user_id) do update
    set role = excluded.role, status = 'active'
    where cajex.memberships.role <> 'owner';
  perform cajex_private.write_audit('member.added', 'user', p_user_id::text,
                                    jsonb_build_object('role', p_role));
end;
$$;

--------------------------------------------------------------------------------
-- Plan gates, checked in SQL so the web path and PostgREST agree. The
-- billing module may narrow them further (a workspace limited for non-payment).

create or replace function cajex.workspace_has_feature(p_feature text)
returns boolean
-- PL/pgSQL for its cached plan (see cajex_private.write_audit): as a SQL
-- function with a SET clause it was planned on every call, in milliseconds.
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_workspace uuid := (select cajex.current_workspace_id());
begin
  return coalesce((
    select p_feature = any (p.features)
    from cajex.workspaces w
    join cajex.plans p on p.code = w.plan
    where w.id = v_workspace), false)
    -- A workspace limited for non-payment (functions/500) has AI paused,
    -- for members too, who may not read the billing row themselves.
    and not (p_feature = 'ai' and cajex_private.context_billing_limited());
end;
$$;

-- Holds the open workspace's plan still until the transaction ends: the
-- paths that switch on a plan-gated capability (an SSO connection, a SCIM
-- token, AI) take it before they check the feature, and cajex.change_plan
-- locks the row before it reads its blockers, so the two never interleave
-- (a downgrade waits, then sees the capability and refuses). The audit row
-- such a change writes holds a key-share lock on the row as well (its
-- foreign key); this does not rely on that.
create or replace function cajex_private.hold_plan()
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform from cajex.workspaces w
  where w.id = (select c.workspace_id from cajex_private.context c)
  for share;
end;
$$;

create or replace function cajex_private.require_feature(p_feature text)
returns void
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not cajex.workspace_has_feature(p_feature) then
    raise exception 'this workspace''s plan does not include %', p_feature
      using errcode = 'CXFTR', detail = p_feature,
        hint = 'Upgrade the workspace''s plan to use this feature.';
  end if;
end;
$$;

-- Seats: active members count; the plan's max_seats caps them. Called before
-- an invitation is sent and again when it is accepted.
create or replace function cajex_private.require_seat(p_workspace_id uuid, p_extra integer default 1)
returns void
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_max integer;
  v_used integer;
begin
  select p.max_seats into v_max
  from cajex.workspaces w join cajex.plans p on p.code = w.plan
  where w.id = p_workspace_id;
  -- Past the grace period of a failed payment: no new seats on any plan.
  if exists (select from cajex.workspace_billing b
             where b.workspace_id = p_workspace_id and b.grace_until <= now()) then
    raise exception 'a payment failed and the grace period is over: no new seats until it is paid'
      using errcode = 'CXPLN', detail = 'payment',
        hint = 'Update the card in the billing portal.';
  end if;
  if v_max is null then
    return;
  end if;
  v_used := cajex.seat_count(p_workspace_id);
  if v_used + p_extra > v_max then
    raise exception 'the plan allows % seats and % are in use', v_max, v_used
      using errcode = 'CXPLN', detail = 'seats',
        hint = 'Upgrade the plan or remove a member first.';
  end if;
end;
$$;
alter function cajex_private.require_seat(uuid, integer) owner to cajex_definer;
