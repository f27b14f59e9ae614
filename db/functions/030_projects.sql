-- Projects: the architecture work items. Every change goes through these
-- functions, which check the role, validate, write and audit in one step.
-- They run as cajex_owner, which RLS still binds (forced): they see and
-- change only the context's workspace, whatever they are passed.

create or replace function cajex_private.validate_project_fields(
  p_name text,
  p_description text,
  p_tags text[],
  p_status text
)
returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_name is null or char_length(btrim(p_name)) not between 1 and 200 then
    raise exception 'a project name has 1 to 200 characters'
      using errcode = 'CXINV', detail = 'name';
  end if;
  if p_description is not null and char_length(p_description) > 20000 then
    raise exception 'a project description has at most 20000 characters'
      using errcode = 'CXINV', detail = 'description';
  end if;
  if p_tags is not null and (
       cardinality(p_tags) > 32
       or array_position(p_tags, null) is not null
       or exists (select from unnest(p_tags) t where t !~ '^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$')) then
    raise exception 'a project has at most 32 tags of 1 to 40 letters, digits, spaces, dots, dashes or underscores'
      using errcode = 'CXINV', detail = 'tags';
  end if;
  if p_status is not null and p_status not in ('draft', 'active', 'archived') then
    raise exception 'a project status is draft, active or archived'
      using errcode = 'CXINV', detail = 'status';
  end if;
end;
$$;

create or replace function cajex.create_project(
  p_name text,
  p_description text default '',
  p_tags text[] default '{}',
  p_status text default 'active'
)
returns cajex.projects
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.projects;
begin
  perform cajex_private.require_permission('project.write');
  perform cajex_private.validate_project_fields(p_name, p_description, p_tags, p_status);
  insert into cajex.projects (workspace_id, name, description, tags, status, created_by)
  select c.workspace_id, btrim(p_name), coalesce(p_description, ''),
         coalesce(p_tags, '{}'), coalesce(p_status, 'active'), c.user_id
  from cajex_private.context c
  returning * into v_row;
  perform cajex_private.write_audit('project.created', 'project', v_row.id::text,
                                    jsonb_build_object('name', v_row.name));
  return v_row;
end;
$$;

-- p_changes holds only the fields to change: name, description, tags, status.
create or replace function cajex.update_project(p_id uuid, p_changes jsonb)
returns cajex.projects
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.projects;
  v_unknown text;
  v_tags text[];
begin
  perform cajex_private.require_permission('project.write');
  if p_changes is null or jsonb_typeof(p_changes) <> 'object' then
    raise exception 'changes must be an object' using errcode = 'CXINV';
  end if;
  select k into v_unknown
  from jsonb_object_keys(p_changes) k
  where k not in ('name', 'description', 'tags', 'status')
  limit 1;
  if v_unknown is not null then
    raise exception 'unknown field %', v_unknown using errcode = 'CXINV', detail = v_unknown;
  end if;
  if p_changes ? 'tags' then
    if jsonb_typeof(p_changes -> 'tags') <> 'array'
       or exists (select from jsonb_array_elements(p_changes -> 'tags') e where jsonb_typeof(e) <> 'string') then
      raise exception 'tags must be a list of strings' using errcode = 'CXINV', detail = 'tags';
    end if;
    select coalesce(array_agg(e), '{}') into v_tags from jsonb_array_elements_text(p_changes -> 'tags') e;
  end if;
  if exists (select from jsonb_each(p_changes) e
             where e.key in ('name', 'description', 'status') and jsonb_typeof(e.value) <> 'string') then
    raise exception 'name, description and status are strings' using errcode = 'CXINV';
  end if;

  select * into v_row from cajex.projects p where p.id = p_id for update;
  if not found then
    raise exception 'project not found' using errcode = 'CXNFD', detail = 'project';
  end if;
  perform cajex_private.validate_project_fields(
    coalesce(p_changes ->> 'name', v_row.name),
    p_changes ->> 'description',
    v_tags,
    p_changes ->> 'status');

  update cajex.projects p
  set name = coalesce(btrim(p_changes ->> 'name'), p.name),
      description = coalesce(p_changes ->> 'description', p.description),
      tags = coalesce(v_tags, p.tags),
      status = coalesce(p_changes ->> 'status', p.status),
      updated_at = now()
  where p.workspace_id = v_row.workspace_id and p.id = p_id
  returning * into v_row;
  perform cajex_private.write_audit('project.updated', 'project', p_id::text,
                                    jsonb_build_object('fields', (select jsonb_agg(k) from jsonb_object_keys(p_changes) k)));
  return v_row;
end;
$$;

create or replace function cajex.delete_project(p_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_name text;
begin
  perform cajex_private.require_permission('project.write');
  delete from cajex.projects p where p.id = p_id returning p.name into v_name;
  if not found then
    raise exception 'project not found' using errcode = 'CXNFD', detail = 'project';
  end if;
  perform cajex_private.write_audit('project.deleted', 'project', p_id::text,
                                    jsonb_build_object('name', v_name));
end;
$$;
