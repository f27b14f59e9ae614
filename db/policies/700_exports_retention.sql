-- Policies and grants of exports and retention.

--------------------------------------------------------------------------------
-- Exports: the open workspace's admins read its exports (the export page);
-- every change goes through the functions in db/functions/700.

drop policy if exists "the context can read its exports" on cajex.exports;
create policy "the context can read its exports" on cajex.exports
  for select using (
    workspace_id = (select c.workspace_id from cajex_private.context c)
    and ((select cajex.has_permission('export.request')) or (select cajex.has_permission('export.run')))
  );

drop policy if exists "the context can add exports" on cajex.exports;
create policy "the context can add exports" on cajex.exports
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can change its exports" on cajex.exports;
create policy "the context can change its exports" on cajex.exports
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

-- A deleted workspace disappears at once for everyone: besides the context
-- (which opens only active workspaces), no request may even read its row
-- (the switcher's names, PostgREST's workspace view). Restrictive: it narrows
-- every other policy on the table. The owner's way back goes through
-- cajex.my_deleted_workspaces(), a definer function.
drop policy if exists "requests can read active workspaces only" on cajex.workspaces;
create policy "requests can read active workspaces only" on cajex.workspaces
  as restrictive for select using (status = 'active');

drop policy if exists "the definer manages purges" on cajex_private.workspace_purges;
create policy "the definer manages purges" on cajex_private.workspace_purges
  for all to cajex_definer using (true) with check (true);

--------------------------------------------------------------------------------
-- Grants

grant select on cajex.exports to cajex_app, cajex_api;
grant select, insert, update, delete on cajex.exports to cajex_definer;
grant select, insert, update, delete on cajex_private.workspace_purges to cajex_definer;

grant execute on function
  cajex.request_export(),
  cajex.start_export(uuid),
  cajex.export_progress(uuid, integer, integer),
  cajex.finish_export(uuid, jsonb, jsonb, text, interval, text, integer),
  cajex.fail_export(uuid, text, boolean, integer),
  cajex.delete_workspace(text, integer),
  cajex.my_deleted_workspaces(),
  cajex.restore_workspace(uuid),
  cajex_private.schema_version(),
  cajex_private.export_download_allowed(uuid, text)
  to cajex_app;

-- Purging is the worker's (cajex_worker): it deletes any due workspace's
-- rows past RLS, so a request may neither start one nor mark one done.
grant execute on function
  cajex_private.purge_due(integer),
  cajex_private.purge_tables(),
  cajex_private.purge_begin(uuid),
  cajex_private.purge_batch(uuid, regclass, text, integer, text[]),
  cajex_private.purge_walks(uuid, regclass, text),
  cajex_private.purge_pages(uuid, regclass, text, bigint, integer),
  cajex_private.purge_rows_left(uuid, regclass, text),
  cajex_private.purge_destroy_keys(uuid),
  cajex_private.purge_finish(uuid, bigint)
  to cajex_worker;
revoke execute on function
  cajex_private.purge_due(integer),
  cajex_private.purge_tables(),
  cajex_private.purge_begin(uuid),
  cajex_private.purge_batch(uuid, regclass, text, integer, text[]),
  cajex_private.purge_walks(uuid, regclass, text),
  cajex_private.purge_pages(uuid, regclass, text, bigint, integer),
  cajex_private.purge_rows_left(uuid, regclass, text),
  cajex_private.purge_destroy_keys(uuid),
  cajex_private.purge_finish(uuid, bigint)
  from cajex_app, cajex_api;

-- Expiring any workspace's exports is the worker's job (cajex_worker).
grant execute on function
  cajex_private.due_export_expiries(integer),
  cajex_private.expire_export(uuid, uuid)
  to cajex_worker;
revoke execute on function
  cajex_private.due_export_expiries(integer),
  cajex_private.expire_export(uuid, uuid)
  from cajex_app;

-- Definer functions call these as their owner.
grant execute on function cajex_private.schema_version() to cajex_definer;
grant execute on function cajex_private.purge_tables() to cajex_definer;
