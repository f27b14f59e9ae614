-- Envelope encryption in SQL: data key rows and ciphertext rewrites. The
-- database never sees a plaintext key or secret: wrapping, unwrapping,
-- encrypting and decrypting happen in cajex/crypto.py with the master key,
-- which lives outside the database.

--------------------------------------------------------------------------------
-- Registering an encrypted column (called by migrations, as the owner).

create or replace function cajex_private.register_encrypted_column(
  p_table regclass,
  p_column text,
  p_key_columns text[]
)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_table text;
  v_missing text;
begin
  select format('%s.%s', n.nspname, c.relname) into v_table
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.oid = p_table;
  if not exists (select from pg_attribute a
                 where a.attrelid = p_table and a.attname = 'workspace_id' and not a.attisdropped) then
    raise exception 'an encrypted column lives in a workspace-owned table'
      using errcode = 'CXINV', detail = v_table;
  end if;
  if not exists (select from pg_attribute a
                 where a.attrelid = p_table and a.attname = p_column and not a.attisdropped
                   and a.atttypid = 'bytea'::regtype) then
    raise exception 'an encrypted column is a bytea column' using errcode = 'CXINV', detail = p_column;
  end if;
  select k into v_missing from unnest(p_key_columns) k
  where not exists (select from pg_attribute a
                    where a.attrelid = p_table and a.attname = k and not a.attisdropped)
  limit 1;
  if v_missing is not null or cardinality(p_key_columns) = 0 then
    raise exception 'unknown key column %', v_missing using errcode = 'CXINV', detail = 'key_columns';
  end if;
  insert into cajex_private.encrypted_columns (table_name, column_name, key_columns)
  values (v_table, p_column, p_key_columns)
  on conflict (table_name, column_name) do update set key_columns = excluded.key_columns;
end;
$$;
alter function cajex_private.register_encrypted_column(regclass, text, text[]) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Data keys of the context's workspace (cajex_owner definers, bound by RLS).

-- The active data key, created from p_wrapped when the workspace has none.
-- Two first secrets stored at once both offer a key; one wins, both get it.
create or replace function cajex_private.ensure_workspace_key(p_wrapped bytea, p_master_key_id text)
returns table (version integer, wrapped_key bytea, master_key_id text)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
begin
  perform cajex_private.require_permission('secrets.write');
  if p_wrapped is null or octet_length(p_wrapped) not between 32 and 1024
     or p_master_key_id is null or char_length(p_master_key_id) not between 1 and 200 then
    raise exception 'a wrapped data key and its master key id are required'
      using errcode = 'CXINV', detail = 'wrapped_key';
  end if;
  if not exists (select from cajex.workspace_keys k where k.workspace_id = v_ws and k.state = 'active') then
    insert into cajex.workspace_keys (workspace_id, version, wrapped_key, master_key_id, state)
    select v_ws, coalesce(max(k.version), 0) + 1, p_wrapped, p_master_key_id, 'active'
    from cajex.workspace_keys k where k.workspace_id = v_ws
    on conflict do nothing;
  end if;
  return query
    select k.version, k.wrapped_key, k.master_key_id
    from cajex.workspace_keys k
    where k.workspace_id = v_ws and k.state = 'active';
end;
$$;

-- Rotation, step one: p_wrapped becomes the active key, the old one retired
-- (kept, so ciphertexts not yet re-encrypted still open). Returns its version.
create or replace function cajex_private.begin_workspace_key_rotation(
  p_wrapped bytea,
  p_master_key_id text
)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_version integer;
begin
  perform cajex_private.require_permission('secrets.rotate');
  if p_wrapped is null or octet_length(p_wrapped) not between 32 and 1024 then
    raise exception 'a wrapped data key is required' using errcode = 'CXINV', detail = 'wrapped_key';
  end if;
  -- Serialise rotations of one workspace: lock its key rows.
  perform from cajex.workspace_keys k where k.workspace_id = v_ws for update;
  update cajex.workspace_keys k set state = 'retired'
  where k.workspace_id = v_ws and k.state = 'active';
  insert into cajex.workspace_keys (workspace_id, version, wrapped_key, master_key_id, state)
  select v_ws, coalesce(max(k.version), 0) + 1, p_wrapped, p_master_key_id, 'active'
  from cajex.workspace_keys k where k.workspace_id = v_ws
  returning version into v_version;
  perform cajex_private.write_audit('secrets.key_rotated', 'workspace_key', v_version::text, '{}');
  return v_version;
end;
$$;

-- Rotation, step two, one secret at a time: replace a ciphertext with its
-- re-encryption if it is still the one read (compare and swap, so a secret
-- changed meanwhile is left to the next pass). Only registered columns.
create or replace function cajex_private.rewrite_secret(
  p_table text,
  p_column text,
  p_key jsonb,
  p_old bytea,
  p_new bytea
)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_cols text[];
  v_where text;
  v_count integer;
begin
  perform cajex_private.require_permission('secrets.rotate');
  select e.key_columns into v_cols
  from cajex_private.encrypted_columns e
  where e.table_name = p_table and e.column_name = p_column;
  if v_cols is null then
    raise exception 'not a registered encrypted column' using errcode = 'CXINV', detail = p_column;
  end if;
  select string_agg(format('%I::text = %L', c, p_key ->> c), ' and ') into v_where
  from unnest(v_cols) c;
  execute format(
    'update %s t set %I = $1 where t.workspace_id = $2 and t.%I = $3 and %s',
    p_table, p_column, p_column, v_where)
  using p_new, (select cajex.current_workspace_id()), p_old;
  get diagnostics v_count = row_count;
  return v_count > 0;
end;
$$;

--------------------------------------------------------------------------------
-- Across workspaces (cajex_definer, bypassing RLS; executable only by the
-- owner role, which the administrator running `cajex keys` acts as).

-- Data keys not yet wrapped by the current master key, a batch at a time.
-- Wrapped keys only: they are useless without a master key.
create or replace function cajex_private.keys_to_rewrap(p_master_key_id text, p_limit integer)
returns table (workspace_id uuid, version integer, wrapped_key bytea, master_key_id text)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select k.workspace_id, k.version, k.wrapped_key, k.master_key_id
  from cajex.workspace_keys k
  where k.master_key_id <> p_master_key_id
  order by k.workspace_id, k.version
  limit least(greatest(p_limit, 1), 10000);
$$;
alter function cajex_private.keys_to_rewrap(text, integer) owner to cajex_definer;

-- Replace one wrapping if it is still the one read (safe to run twice).
create or replace function cajex_private.rewrap_workspace_key(
  p_workspace_id uuid,
  p_version integer,
  p_old_master_key_id text,
  p_wrapped bytea,
  p_master_key_id text
)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update cajex.workspace_keys k
  set wrapped_key = p_wrapped, master_key_id = p_master_key_id
  where k.workspace_id = p_workspace_id and k.version = p_version
    and k.master_key_id = p_old_master_key_id;
  return found;
end;
$$;
alter function cajex_private.rewrap_workspace_key(uuid, integer, text, bytea, text) owner to cajex_definer;

-- Crypto-shredding: delete every data key of a workspace, so that each of
-- its ciphertexts, in backups too, can never be decrypted again. Only for a
-- workspace that is deleted and past its purge date (the purge job), so a
-- request role holding this function cannot destroy a live workspace.
create or replace function cajex_private.destroy_workspace_keys(p_workspace_id uuid)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_count integer;
begin
  if not exists (select from cajex.workspaces w
                 where w.id = p_workspace_id
                   and (w.status = 'purged' or (w.status = 'deleted' and w.purge_after <= now()))) then
    raise exception 'only a deleted workspace past its purge date loses its keys'
      using errcode = 'CXINV', detail = 'workspace';
  end if;
  delete from cajex.workspace_keys k where k.workspace_id = p_workspace_id;
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
alter function cajex_private.destroy_workspace_keys(uuid) owner to cajex_definer;
