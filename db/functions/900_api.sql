-- The `api` schema: what PostgREST exposes (db-schemas = api). Views are
-- security_invoker, so the caller's RLS applies; writes are RPC functions
-- that call the same business functions as the web app.

-- PostgREST calls this in every request's transaction (db-pre-request),
-- after it set the role and request.jwt.claims.
-- PostgREST's db-pre-request, run at the start of every request. The
-- context needs nothing from it; for cajex_api it slides the session
-- (cajex_private.open_api_context). Anonymous requests (cajex_anon) run it
-- too, and it does nothing for them.
create or replace function api.pre_request()
returns void
language plpgsql
as $$
begin
  if current_user = 'cajex_api' then
    perform cajex_private.open_api_context();
  end if;
end;
$$;

create or replace view api.projects
with (security_invoker = true)
as
  select p.id, p.workspace_id, p.name, p.description, p.tags, p.status,
         p.created_by, p.created_at, p.updated_at
  from cajex.projects p;

create or replace view api.members
with (security_invoker = true)
as
  select m.workspace_id, m.user_id, u.email, u.display_name, m.role, m.status, m.created_at
  from cajex.memberships m
  join cajex.users u on u.id = m.user_id
  where m.workspace_id = (select cajex.current_workspace_id());

create or replace view api.workspace
with (security_invoker = true)
as
  select w.id, w.slug, w.name, w.plan, w.organisation_id, w.created_at
  from cajex.workspaces w
  where w.id = (select cajex.current_workspace_id());

create or replace function api.create_project(
  name text,
  description text default '',
  tags text[] default '{}',
  status text default 'active'
)
returns setof api.projects
language sql
as $$
  with created as (select * from cajex.create_project(name, description, tags, status))
  select c.id, c.workspace_id, c.name, c.description, c.tags, c.status,
         c.created_by, c.created_at, c.updated_at
  from created c;
$$;

create or replace function api.update_project(id uuid, changes jsonb)
returns setof api.projects
language sql
as $$
  with updated as (select * from cajex.update_project(id, changes))
  select u.id, u.workspace_id, u.name, u.description, u.tags, u.status,
         u.created_by, u.created_at, u.updated_at
  from updated u;
$$;

create or replace function api.delete_project(id uuid)
returns void
language sql
as $$
  select cajex.delete_project(id);
$$;
