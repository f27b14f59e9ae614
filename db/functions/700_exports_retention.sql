-- Data export, soft delete, restore and purge.
--
-- Exports: an admin asks (cajex.request_export), the export job acting for
-- the workspace records progress and the outcome (start/progress/finish/
-- fail_export), and the download endpoint asks export_download_allowed()
-- before it serves an object.
--
-- Retention: the owner deletes (cajex.delete_workspace), which makes the
-- workspace vanish from every context at once (open_context and the context
-- view only open active workspaces); the owner restores from a user-level
-- context (cajex.restore_workspace); the purge job deletes rows table by
-- table in small committed batches (purge_*), then leaves a tombstone.

--------------------------------------------------------------------------------
-- Exports

-- The latest versioned migration: what the exported rows' shape is. The
-- ledger is readable by cajex_owner only, which owns this function.
create or replace function cajex_private.schema_version()
returns text
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select a.file from cajex_migrations.applied a
  where a.kind = 'versioned'
  order by a.file desc
  limit 1;
$$;

create or replace function cajex.request_export()
returns cajex.exports
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.exports;
begin
  perform cajex_private.require_permission('export.request');
  perform cajex_private.require_feature('export');
  -- One export at a time: a second click while one is on its way returns it.
  select * into v_row from cajex.exports e
  where e.status in ('queued', 'running')
  order by e.created_at desc
  limit 1;
  if found then
    -- On its way only while its job is: a job that ended without settling
    -- the export (it ran while the workspace was deleted, say) would leave
    -- it pending for good, and this workspace could never export again.
    if exists (select from cajex.outbox o
               where o.kind = 'export.run' and o.done_at is null
                 and o.payload ->> 'export_id' = v_row.id::text) then
      return v_row;
    end if;
    update cajex.exports e
    set status = 'failed', progress = 0, last_error = 'job_lost', finished_at = now()
    where e.workspace_id = v_row.workspace_id and e.id = v_row.id;
  end if;
  insert into cajex.exports (workspace_id, requested_by)
  values ((select cajex.current_workspace_id()), (select cajex.current_user_id()))
  returning * into v_row;
  perform cajex_private.enqueue_job('export.run', jsonb_build_object('export_id', v_row.id),
                                    'export:' || v_row.id::text);
  perform cajex_private.write_audit('export.requested', 'export', v_row.id::text, '{}');
  return v_row;
end;
$$;
comment on function cajex.request_export() is
  'Queue an export of the open workspace (export.request); returns the pending one if any.';

-- The job takes the export: returns the row (status running), or the row
-- unchanged when it is ready, expired or failed already (a duplicate
-- delivery; a failed export is final). Every call is a new attempt, and
-- `attempts` is its number: the job publishes under a prefix of that number
-- and hands it back to finish_export, so of two deliveries running at once
-- only the latest attempt can finish (the other's files never get served).
create or replace function cajex.start_export(p_id uuid)
returns cajex.exports
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.exports;
begin
  perform cajex_private.require_permission('export.run');
  select * into v_row from cajex.exports e where e.id = p_id for update;
  if not found then
    raise exception 'export not found' using errcode = 'CXNFD', detail = 'export';
  end if;
  if v_row.status in ('ready', 'expired', 'failed') then
    return v_row;
  end if;
  update cajex.exports e
  set status = 'running', progress = 0, attempts = e.attempts + 1,
      started_at = now(), last_error = null
  where e.workspace_id = v_row.workspace_id and e.id = p_id
  returning * into v_row;
  return v_row;
end;
$$;

-- Progress of the current attempt (p_attempt, from start_export; null for
-- whichever runs): an attempt that was taken over reports nothing.
drop function if exists cajex.export_progress(uuid, integer);
create or replace function cajex.export_progress(p_id uuid, p_progress integer, p_attempt integer default null)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('export.run');
  update cajex.exports e
  set progress = greatest(0, least(99, p_progress))
  where e.id = p_id and e.status = 'running'
    and (p_attempt is null or e.attempts = p_attempt);
end;
$$;

-- The objects are published (renamed or copied into place) before this is
-- called; only now does the export count as ready, and the requester hears.
-- p_attempt is the attempt start_export handed out: only the latest one may
-- finish, and its objects must sit under its own prefix
-- (<workspace>/exports/<export>/<attempt>/), so the files a ready export
-- names are the ones its checksums were taken from. An attempt that was
-- taken over gets CXSTL and removes its own objects. (Null skips the check;
-- the export job always passes it.)
drop function if exists cajex.finish_export(uuid, jsonb, jsonb, text, interval, text);
create or replace function cajex.finish_export(
  p_id uuid,
  p_objects jsonb,
  p_row_counts jsonb,
  p_schema_version text,
  p_keep interval default interval '7 days',
  p_page_url text default null,
  p_attempt integer default null
)
returns cajex.exports
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.exports;
  v_prefix text := (select cajex.current_workspace_id())::text || '/';
  v_email text;
begin
  perform cajex_private.require_permission('export.run');
  if p_attempt is not null then
    v_prefix := v_prefix || 'exports/' || p_id::text || '/' || p_attempt::text || '/';
  end if;
  if p_objects is null or jsonb_typeof(p_objects) <> 'object'
     or exists (select from jsonb_each(p_objects) o
                where not starts_with(coalesce(o.value ->> 'key', ''), v_prefix)
                   or coalesce(o.value ->> 'sha256', '') !~ '^[0-9a-f]{64}$') then
    -- An object key always carries its workspace: that is what download
    -- links are checked against.
    raise exception 'export objects must be keyed under the workspace and carry a sha256'
      using errcode = 'CXINV', detail = 'objects';
  end if;
  update cajex.exports e
  set status = 'ready', progress = 100, objects = p_objects,
      row_counts = coalesce(p_row_counts, '{}'), schema_version = p_schema_version,
      finished_at = now(), expires_at = now() + p_keep, last_error = null
  where e.id = p_id and e.status = 'running'
    and (p_attempt is null or e.attempts = p_attempt)
  returning * into v_row;
  if not found then
    raise exception 'export is not running, or another attempt took it over'
      using errcode = 'CXSTL', detail = 'export',
            hint = 'This attempt''s objects are not the export''s: remove them.';
  end if;
  perform cajex_private.write_audit('export.ready', 'export', p_id::text,
                                    jsonb_build_object('rows', v_row.row_counts));
  select u.email into v_email from cajex.users u where u.id = v_row.requested_by;
  if v_email is not null then
    perform cajex_private.enqueue_job(
      'email.send',
      jsonb_build_object(
        'template', 'export_ready',
        'to', v_email,
        'workspace_id', v_row.workspace_id,
        'params', jsonb_build_object(
          'export_id', v_row.id,
          'expires_at', v_row.expires_at,
          'rows', v_row.row_counts,
          'url', p_page_url)),
      'export-ready:' || p_id::text);
  end if;
  return v_row;
end;
$$;

-- A failed attempt: back to queued (the outbox retries it) until the last
-- attempt, then failed for good. Nothing of it is served. With p_attempt,
-- only the current attempt may fail the export: one that was taken over
-- must not send the attempt that replaced it back to the queue. Returns
-- whether the export was changed (false: settled, or taken over).
drop function if exists cajex.fail_export(uuid, text, boolean);
create or replace function cajex.fail_export(
  p_id uuid, p_error text, p_final boolean default false, p_attempt integer default null)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('export.run');
  update cajex.exports e
  set status = case when p_final then 'failed' else 'queued' end,
      progress = 0,
      last_error = left(p_error, 2000),
      finished_at = case when p_final then now() end
  where e.id = p_id and e.status in ('queued', 'running')
    and (p_attempt is null or e.attempts = p_attempt);
  return found;
end;
$$;

-- The download endpoint has no context (a link works without signing in):
-- it asks here whether the object is a live, ready export of that workspace.
-- A deleted workspace, an expired export or a key of another workspace all
-- answer false.
create or replace function cajex_private.export_download_allowed(p_workspace_id uuid, p_key text)
returns boolean
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select exists (
      select
      from cajex.exports e
      join cajex.workspaces w on w.id = e.workspace_id and w.status = 'active'
      where e.workspace_id = p_workspace_id
        and e.status = 'ready'
        and e.expires_at > now()
        and p_key like p_workspace_id::text || '/%'
        and exists (select from jsonb_each(e.objects) o where o.value ->> 'key' = p_key)));
end;
$$;
alter function cajex_private.export_download_allowed(uuid, text) owner to cajex_definer;

-- The expiry sweep: ready exports past their date, in every workspace
-- (deleted ones too: their objects go as well).
create or replace function cajex_private.due_export_expiries(p_limit integer default 100)
returns table (workspace_id uuid, id uuid, objects jsonb)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select e.workspace_id, e.id, e.objects
  from cajex.exports e
  where e.status = 'ready' and e.expires_at <= now()
  order by e.expires_at
  limit p_limit;
$$;
alter function cajex_private.due_export_expiries(integer) owner to cajex_definer;

create or replace function cajex_private.expire_export(p_workspace_id uuid, p_id uuid)
returns void
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  update cajex.exports e
  set status = 'expired', objects = '{}'
  where e.workspace_id = p_workspace_id and e.id = p_id and e.status = 'ready'
    and e.expires_at <= now();
$$;
alter function cajex_private.expire_export(uuid, uuid) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Soft delete and restore

-- The owner deletes the open workspace after typing its name. Definer
-- (bypass): once the status changes the context no longer opens this
-- workspace, and the notice, billing job and organisation audit are written
-- after that. p_retention_days is the deployment's recovery window
-- (CAJEX_RETENTION_DAYS), passed by the web app.
create or replace function cajex.delete_workspace(p_confirm_name text, p_retention_days integer default 30)
returns timestamptz
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws cajex.workspaces;
  v_user uuid;
  v_email text;
  v_purge timestamptz;
begin
  perform cajex_private.require_permission('workspace.delete');
  v_user := (select cajex.current_user_id());
  select * into v_ws from cajex.workspaces w
  where w.id = (select cajex.current_workspace_id()) and w.status = 'active'
  for update;
  if not found then
    raise exception 'workspace not found' using errcode = 'CXNFD', detail = 'workspace';
  end if;
  if p_confirm_name is null or btrim(p_confirm_name) <> v_ws.name then
    raise exception 'type the workspace''s name to delete it'
      using errcode = 'CXINV', detail = 'confirm_name',
        hint = 'The name must match exactly.';
  end if;
  if p_retention_days is null or p_retention_days not between 1 and 3650 then
    raise exception 'the recovery window is 1 to 3650 days'
      using errcode = 'CXINV', detail = 'retention_days';
  end if;
  v_purge := now() + make_interval(days => p_retention_days);
  -- The workspace's own audit first, while the context still opens it.
  perform cajex_private.write_audit('workspace.deleted', 'workspace', v_ws.id::text,
                                    jsonb_build_object('purge_after', v_purge));
  update cajex.workspaces w
  set status = 'deleted', deleted_at = now(), deleted_by = v_user, purge_after = v_purge
  where w.id = v_ws.id;
  -- An export on its way can no longer finish (its job opens no context
  -- now): settle it, or after a restore request_export would hand it back
  -- for good. A job still running finds it failed and keeps nothing.
  update cajex.exports e
  set status = 'failed', progress = 0, last_error = 'workspace_deleted', finished_at = now()
  where e.workspace_id = v_ws.id and e.status in ('queued', 'running');
  insert into cajex.organisation_audit_log (organisation_id, actor_user_id, action, workspace_id, details)
  values (v_ws.organisation_id, v_user, 'workspace.deleted', v_ws.id,
          jsonb_build_object('purge_after', v_purge));
  perform cajex_private.enqueue_platform_job(
    v_ws.id, 'billing.workspace_deleted', jsonb_build_object('workspace_id', v_ws.id),
    'billing-deleted:' || v_ws.id::text);
  select u.email into v_email
  from cajex.memberships m join cajex.users u on u.id = m.user_id
  where m.workspace_id = v_ws.id and m.role = 'owner';
  if v_email is not null then
    -- The job names the workspace, so the purge removes it (and the delivery
    -- record the email job writes under the job's workspace): after the
    -- purge no row ties the owner's address to the workspace's name. The
    -- email job needs no context, and a deleted workspace's mail goes out
    -- without its branding.
    perform cajex_private.enqueue_platform_job(
      v_ws.id, 'email.send',
      jsonb_build_object(
        'template', 'workspace_deleted', 'to', v_email, 'workspace_id', null,
        'params', jsonb_build_object('workspace_name', v_ws.name, 'workspace_id', v_ws.id,
                                     'purge_after', v_purge)));
  end if;
  return v_purge;
end;
$$;
alter function cajex.delete_workspace(text, integer) owner to cajex_definer;
comment on function cajex.delete_workspace(text, integer) is
  'Soft-delete the open workspace (workspace.delete, name typed to confirm); returns the purge date.';

-- The signed-in user's deleted workspaces that they own and may restore.
create or replace function cajex.my_deleted_workspaces()
returns table (workspace_id uuid, slug text, name text, deleted_at timestamptz, purge_after timestamptz)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select w.id, w.slug, w.name, w.deleted_at, w.purge_after
    from cajex.memberships m
    join cajex.workspaces w on w.id = m.workspace_id
    where m.user_id = (select cajex.current_user_id())
      and m.role = 'owner'
      and w.status = 'deleted'
      and w.purge_after > now()
      and not exists (select from cajex_private.workspace_purges p where p.workspace_id = w.id)
    order by w.deleted_at desc;
end;
$$;
alter function cajex.my_deleted_workspaces() owner to cajex_definer;

-- Restore, from the owner's user-level context: every row is still there,
-- so the workspace returns as it was.
create or replace function cajex.restore_workspace(p_workspace_id uuid)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := (select cajex.current_user_id());
  v_ws cajex.workspaces;
begin
  if v_user is null then
    raise exception 'sign in to restore a workspace' using errcode = 'CXNCX';
  end if;
  select w.* into v_ws
  from cajex.workspaces w
  join cajex.memberships m on m.workspace_id = w.id and m.user_id = v_user and m.role = 'owner'
  where w.id = p_workspace_id and w.status = 'deleted'
  for update of w;
  -- Not yours, not deleted and not there look alike.
  if not found then
    raise exception 'workspace not found' using errcode = 'CXNFD', detail = 'workspace';
  end if;
  if v_ws.purge_after <= now()
     or exists (select from cajex_private.workspace_purges p where p.workspace_id = p_workspace_id) then
    raise exception 'the recovery window of this workspace has ended'
      using errcode = 'CXEXP', detail = 'workspace';
  end if;
  update cajex.workspaces w
  set status = 'active', deleted_at = null, deleted_by = null, purge_after = null
  where w.id = p_workspace_id;
  insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id, details)
  values (p_workspace_id, v_user, 'user', 'workspace.restored', 'workspace', p_workspace_id::text, '{}');
  insert into cajex.organisation_audit_log (organisation_id, actor_user_id, action, workspace_id, details)
  values (v_ws.organisation_id, v_user, 'workspace.restored', p_workspace_id, '{}');
  perform cajex_private.enqueue_platform_job(
    p_workspace_id, 'billing.workspace_restored', jsonb_build_object('workspace_id', p_workspace_id),
    'billing-restored:' || p_workspace_id::text || ':' || extract(epoch from now())::bigint::text);
  return v_ws.slug;
end;
$$;
alter function cajex.restore_workspace(uuid) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Purge. Called by the purge job only (granted to no request role's use in
-- the web app; the job connects as cajex_app and calls these outside any
-- context).

-- Workspaces whose date has passed, and purges a crash left unfinished.
create or replace function cajex_private.purge_due(p_limit integer default 10)
returns table (workspace_id uuid)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select w.id
  from cajex.workspaces w
  where w.status = 'deleted' and w.purge_after <= now()
  order by w.purge_after
  limit p_limit;
$$;
alter function cajex_private.purge_due(integer) owner to cajex_definer;

-- Every table that holds rows of a workspace, found in the catalog (areas
-- add tables all the time): those with a foreign key to cajex.workspaces.
-- Ordered so that a table comes before every table it references (children
-- first), and with the action to take: delete the rows, or null the column
-- of a set-null reference.
create or replace function cajex_private.purge_tables()
returns table (table_name regclass, column_name text, action text, depth integer)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  with recursive owned as (
    select c.conrelid as rel, a.attname::text as col,
           case when c.confdeltype in ('n', 'd') then 'nullify' else 'delete' end as action
    from pg_constraint c
    join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
    where c.contype = 'f'
      and c.confrelid = 'cajex.workspaces'::regclass
      and cardinality(c.conkey) = 1
      and c.conrelid <> 'cajex.workspaces'::regclass
  ),
  -- References between owned tables: child -> parent.
  edges as (
    select distinct c.conrelid as child, c.confrelid as parent
    from pg_constraint c
    where c.contype = 'f'
      and c.conrelid in (select rel from owned)
      and c.confrelid in (select rel from owned)
      and c.conrelid <> c.confrelid
  ),
  -- Depth: the longest chain of references below the table (a parent is 0).
  walk (rel, depth) as (
    select o.rel, 0 from owned o
    union all
    select e.child, w.depth + 1
    from walk w join edges e on e.parent = w.rel
    where w.depth < 32
  )
  select o.rel::regclass, o.col, o.action, max(w.depth)::integer
  from owned o join walk w on w.rel = o.rel
  group by o.rel, o.col, o.action
  order by max(w.depth) desc, o.rel::regclass::text, o.col;
$$;
alter function cajex_private.purge_tables() owner to cajex_definer;

-- Begin (or resume) a purge: records the start, after which the workspace
-- can no longer be restored. Returns false when the workspace is not due.
create or replace function cajex_private.purge_begin(p_workspace_id uuid)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid;
begin
  select w.organisation_id into v_org
  from cajex.workspaces w
  where w.id = p_workspace_id and w.status = 'deleted' and w.purge_after <= now()
  for update;
  if v_org is null then
    return false;
  end if;
  insert into cajex_private.workspace_purges (workspace_id, organisation_id)
  values (p_workspace_id, v_org)
  on conflict (workspace_id) do nothing;
  return true;
end;
$$;
alter function cajex_private.purge_begin(uuid) owner to cajex_definer;

-- Every step of a purge after purge_begin refuses a workspace whose purge
-- was not begun (or has finished).
create or replace function cajex_private.require_purge(p_workspace_id uuid)
returns void
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not exists (select from cajex_private.workspace_purges p
                 where p.workspace_id = p_workspace_id and p.finished_at is null) then
    raise exception 'no purge in progress for this workspace' using errcode = 'CXNFD', detail = 'workspace';
  end if;
end;
$$;
alter function cajex_private.require_purge(uuid) owner to cajex_definer;

-- What a purge does to p_table's rows of the workspace through p_column:
-- 'delete' them, or 'nullify' a set-null reference. Refuses a workspace
-- whose purge was not begun and a table that does not reference
-- cajex.workspaces through p_column.
create or replace function cajex_private.purge_action(
  p_workspace_id uuid, p_table regclass, p_column text)
returns text
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_action text;
begin
  perform cajex_private.require_purge(p_workspace_id);
  select case when c.confdeltype in ('n', 'd') then 'nullify' else 'delete' end into v_action
  from pg_constraint c
  join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
  where c.contype = 'f' and c.conrelid = p_table and c.confrelid = 'cajex.workspaces'::regclass
    and cardinality(c.conkey) = 1 and a.attname = p_column
  limit 1;
  if v_action is null then
    raise exception 'not a workspace-owned table' using errcode = 'CXINV', detail = 'table';
  end if;
  return v_action;
end;
$$;
alter function cajex_private.purge_action(uuid, regclass, text) owner to cajex_definer;

-- One small batch of one table: at most p_limit rows, committed by the
-- caller, so locks are short and other workspaces are not held up. Refuses
-- a table that has no reference to cajex.workspaces through p_column, and a
-- workspace whose purge was not begun.
--
-- Keyset: when the table's primary key leads with p_column (every
-- workspace-owned table, by convention), a batch takes the next p_limit
-- keys after p_after in key order and returns the last one, so no batch
-- walks over the index entries of rows earlier batches deleted (they stay
-- in the index until vacuum, and would make a purge quadratic). Other
-- references (a set-null column, a key that does not lead with it) are
-- few per workspace and are taken as they come.
drop function if exists cajex_private.purge_batch(uuid, regclass, text, integer);
create or replace function cajex_private.purge_batch(
  p_workspace_id uuid,
  p_table regclass,
  p_column text,
  p_limit integer default 5000,
  p_after text[] default null,
  out deleted integer,
  out last_key text[]
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_action text;
  v_rest text[];
  v_types text[];
  v_cols text;
  v_after text := '';
begin
  v_action := cajex_private.purge_action(p_workspace_id, p_table, p_column);

  if v_action = 'delete' then
    -- The rest of the primary key, when it leads with p_column.
    select array_agg(a.attname::text order by k.ord) filter (where k.ord > 1),
           array_agg(format_type(a.atttypid, a.atttypmod) order by k.ord) filter (where k.ord > 1)
      into v_rest, v_types
    from pg_index i
    cross join lateral unnest(i.indkey::int2[]) with ordinality as k (attnum, ord)
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where i.indrelid = p_table and i.indisprimary
    having (array_agg(a.attname::text order by k.ord))[1] = p_column;
  end if;

  if v_action = 'nullify' then
    execute format(
      'update %s set %I = null where ctid = any (array(select ctid from %s where %I = $1 limit $2))',
      p_table, p_column, p_table, p_column)
    using p_workspace_id, p_limit;
    get diagnostics deleted = row_count;
  elsif v_rest is null or cardinality(v_rest) = 0 then
    execute format(
      'delete from %s where ctid = any (array(select ctid from %s where %I = $1 limit $2))',
      p_table, p_table, p_column)
    using p_workspace_id, p_limit;
    get diagnostics deleted = row_count;
  else
    select string_agg(format('%I', c), ', ' order by o) into v_cols
    from unnest(v_rest) with ordinality as r (c, o);
    if p_after is not null then
      select format(' and (%s) > (%s)', v_cols,
                    string_agg(format('$3[%s]::%s', o, v_types[o]), ', ' order by o))
        into v_after
      from unnest(v_rest) with ordinality as r (c, o);
    end if;
    execute format(
      'with batch as materialized ('
      '  select ctid as tid, %1$s from %2$s where %3$I = $1%4$s order by %1$s limit $2),'
      ' gone as (delete from %2$s where ctid = any (array(select tid from batch)) returning 1)'
      ' select (select count(*) from gone)::integer,'
      '  (select array[%5$s] from batch order by %6$s limit 1)',
      v_cols, p_table, p_column, v_after,
      (select string_agg(format('%I::text', c), ', ' order by o) from unnest(v_rest) with ordinality as r (c, o)),
      (select string_agg(format('%I desc', c), ', ' order by o) from unnest(v_rest) with ordinality as r (c, o)))
    into deleted, last_key
    using p_workspace_id, p_limit, p_after;
  end if;
  update cajex_private.workspace_purges p
  set rows_deleted = p.rows_deleted + deleted
  where p.workspace_id = p_workspace_id;
end;
$$;
alter function cajex_private.purge_batch(uuid, regclass, text, integer, text[]) owner to cajex_definer;

-- A physical walk, for a workspace that fills a good part of a table: its
-- rows are deleted in the order they lie on disk, a range of pages at a
-- time, so each page is read and written once. A walk in key order (above)
-- touches a different page for nearly every row when keys are random, which
-- for a large workspace costs several times a single cascading delete.
--
-- Whether to walk: the workspace has at least one row per four pages of
-- the table (counted with a bounded scan), so walking reads few pages that
-- hold none of its rows.
create or replace function cajex_private.purge_walks(
  p_workspace_id uuid, p_table regclass, p_column text)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_quarter bigint;
  v_rows bigint;
begin
  if cajex_private.purge_action(p_workspace_id, p_table, p_column) <> 'delete' then
    return false;
  end if;
  v_quarter := greatest(pg_relation_size(p_table) / current_setting('block_size')::bigint / 4, 1);
  execute format('select count(*) from (select from %s where %I = $1 limit $2) s', p_table, p_column)
    into v_rows using p_workspace_id, v_quarter;
  return v_rows >= v_quarter;
end;
$$;
alter function cajex_private.purge_walks(uuid, regclass, text) owner to cajex_definer;

-- One batch of a walk: the workspace's rows on pages p_from to
-- p_from + p_pages - 1. The caller sizes the range from the rows the last
-- one held (about one batch's worth) and at most 1024 pages (8 MB), so a
-- batch stays small however the rows lie. Returns the table's current size
-- in pages, so a walk reaches pages added meanwhile.
-- The walk is an optimisation only: cajex_private.purge_rows_left says
-- whether anything escaped it (a row moved by an update behind the walk),
-- and the keyset batches above take what did.
drop function if exists cajex_private.purge_pages(uuid, regclass, text, tid, integer, integer);
create or replace function cajex_private.purge_pages(
  p_workspace_id uuid,
  p_table regclass,
  p_column text,
  p_from bigint,
  p_pages integer,
  out deleted integer,
  out pages bigint
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if cajex_private.purge_action(p_workspace_id, p_table, p_column) <> 'delete' then
    raise exception 'a set-null reference is cleared in key order' using errcode = 'CXINV', detail = 'table';
  end if;
  if p_from is null or p_from < 0 or p_from + p_pages > 4294967295
     or p_pages is null or p_pages not between 1 and 1024 then
    raise exception 'a page range starts at 0 or later and spans 1 to 1024 pages'
      using errcode = 'CXINV', detail = 'pages';
  end if;
  execute format('delete from %s where %I = $1 and ctid >= $2 and ctid < $3', p_table, p_column)
    using p_workspace_id, format('(%s,0)', p_from)::tid, format('(%s,0)', p_from + p_pages)::tid;
  get diagnostics deleted = row_count;
  pages := pg_relation_size(p_table) / current_setting('block_size')::bigint;
  update cajex_private.workspace_purges p
  set rows_deleted = p.rows_deleted + deleted
  where p.workspace_id = p_workspace_id;
end;
$$;
alter function cajex_private.purge_pages(uuid, regclass, text, bigint, integer) owner to cajex_definer;

-- Whether any row of the workspace is left in the table after a walk. Read
-- through a bitmap of the index, in page order: the index still holds an
-- entry for every row the walk deleted, and an index scan would visit
-- each of those rows in key order.
create or replace function cajex_private.purge_rows_left(
  p_workspace_id uuid, p_table regclass, p_column text)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set enable_indexscan = off
set enable_indexonlyscan = off
as $$
declare
  v_left boolean;
begin
  perform cajex_private.purge_action(p_workspace_id, p_table, p_column);
  execute format('select exists (select from %s where %I = $1)', p_table, p_column)
    into v_left using p_workspace_id;
  return v_left;
end;
$$;
alter function cajex_private.purge_rows_left(uuid, regclass, text) owner to cajex_definer;

-- Crypto-shredding: the workspace's data keys go first, so whatever a crash
-- leaves behind (and every backup) is unreadable.
create or replace function cajex_private.purge_destroy_keys(p_workspace_id uuid)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_count integer;
begin
  perform cajex_private.require_purge(p_workspace_id);
  delete from cajex.workspace_keys k where k.workspace_id = p_workspace_id;
  get diagnostics v_count = row_count;
  update cajex_private.workspace_purges p
  set keys_destroyed = p.keys_destroyed + v_count
  where p.workspace_id = p_workspace_id;
  return v_count;
end;
$$;
alter function cajex_private.purge_destroy_keys(uuid) owner to cajex_definer;

-- The end of a purge: the tombstone (no name, no address, no settings, no
-- person) and the organisation's audit record. Idempotent.
create or replace function cajex_private.purge_finish(p_workspace_id uuid, p_objects_deleted bigint)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_purge cajex_private.workspace_purges;
  v_table record;
  v_left boolean;
begin
  select * into v_purge from cajex_private.workspace_purges p
  where p.workspace_id = p_workspace_id
  for update;
  if not found then
    raise exception 'no purge in progress for this workspace' using errcode = 'CXNFD', detail = 'workspace';
  end if;
  if v_purge.finished_at is not null then
    return false;
  end if;
  -- Done means gone: no row of any table the workspace owns, and no key.
  for v_table in select t.table_name, t.column_name from cajex_private.purge_tables() t loop
    execute format('select exists (select from %s where %I = $1)', v_table.table_name, v_table.column_name)
      into v_left using p_workspace_id;
    if v_left then
      raise exception 'rows of this workspace are left in %', v_table.table_name
        using errcode = 'CXSTL', detail = 'purge',
              hint = 'Run the purge again: it resumes where it stopped.';
    end if;
  end loop;
  if exists (select from cajex.workspace_keys k where k.workspace_id = p_workspace_id) then
    raise exception 'this workspace''s data keys are not destroyed yet'
      using errcode = 'CXSTL', detail = 'purge',
            hint = 'Run the purge again: it resumes where it stopped.';
  end if;
  update cajex_private.workspace_purges p
  set finished_at = now(), objects_deleted = p.objects_deleted + coalesce(p_objects_deleted, 0)
  where p.workspace_id = p_workspace_id
  returning * into v_purge;
  -- The slug is unique: the tombstone takes a placeholder made of its id.
  update cajex.workspaces w
  set status = 'purged', purged_at = now(),
      slug = 'purged-' || replace(w.id::text, '-', ''),
      name = 'Purged workspace', settings = '{}', deleted_by = null, sso_enforced = false
  where w.id = p_workspace_id;
  insert into cajex.organisation_audit_log (organisation_id, actor_user_id, action, workspace_id, details)
  values (v_purge.organisation_id, null, 'workspace.purged', p_workspace_id,
          jsonb_build_object('rows', v_purge.rows_deleted, 'objects', v_purge.objects_deleted,
                             'keys', v_purge.keys_destroyed));
  return true;
end;
$$;
alter function cajex_private.purge_finish(uuid, bigint) owner to cajex_definer;
