-- Data export and workspace retention: the exports a workspace asked for,
-- the progress of a purge, and export for every plan.

--------------------------------------------------------------------------------
-- Exports: one row per export a workspace admin asked for. Written only by
-- the functions in db/functions/700_exports_retention.sql (the request by an
-- admin, the progress and outcome by the export job acting for the
-- workspace). `objects` maps a format ('json', 'csv') to the published
-- object: {"key", "sha256", "bytes"}; keys always start with the workspace id.
create table cajex.exports (
  workspace_id uuid not null references cajex.workspaces (id) on delete cascade,
  id uuid not null default gen_random_uuid(),
  status text not null default 'queued'
    check (status in ('queued', 'running', 'ready', 'failed', 'expired')),
  progress integer not null default 0 check (progress between 0 and 100),
  row_counts jsonb not null default '{}' check (jsonb_typeof(row_counts) = 'object'),
  objects jsonb not null default '{}' check (jsonb_typeof(objects) = 'object'),
  schema_version text check (char_length(schema_version) <= 200),
  requested_by uuid references cajex.users (id) on delete set null,
  attempts integer not null default 0 check (attempts >= 0),
  last_error text check (char_length(last_error) <= 2000),
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  expires_at timestamptz,
  primary key (workspace_id, id)
);
alter table cajex.exports enable row level security;
alter table cajex.exports force row level security;
-- The export page: a workspace's exports, newest first.
create index exports_newest_idx on cajex.exports (workspace_id, created_at desc);
-- The expiry sweep: ready exports past their date, across workspaces.
create index exports_expiry_idx on cajex.exports (expires_at) where status = 'ready';

--------------------------------------------------------------------------------
-- Purges in progress and done. A platform table (no workspace may read it):
-- the purge job marks the start before it deletes anything, so a restore
-- can no longer race it, and a crashed purge resumes where it stopped.
-- It names no person: ids and counts only.
create table cajex_private.workspace_purges (
  workspace_id uuid primary key,
  organisation_id uuid not null,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  rows_deleted bigint not null default 0,
  objects_deleted bigint not null default 0,
  keys_destroyed integer not null default 0
);
alter table cajex_private.workspace_purges enable row level security;
alter table cajex_private.workspace_purges force row level security;

--------------------------------------------------------------------------------
-- Every workspace may take its data out: an export is a right, not a
-- premium feature, so 'export' joins the features of every plan.
alter table cajex.plans no force row level security;
update cajex.plans
set features = array_append(features, 'export')
where not ('export' = any (features));
alter table cajex.plans force row level security;

--------------------------------------------------------------------------------
-- The export job acts for the workspace as 'system': it records progress and
-- the outcome of an export through export.run.
alter table cajex.role_permissions no force row level security;
insert into cajex.role_permissions (permission, role) values ('export.run', 'system')
on conflict do nothing;
alter table cajex.role_permissions force row level security;
