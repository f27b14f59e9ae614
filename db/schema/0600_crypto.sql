-- Envelope encryption: the registry of encrypted columns, and who may store
-- and rotate secrets. The data keys themselves live in cajex.workspace_keys
-- (0001_core.sql); the code is cajex/crypto.py.

--------------------------------------------------------------------------------
-- Every column that holds a cajex.crypto ciphertext, so that rotating a
-- workspace's data key can find and re-encrypt all of its secrets. Areas add
-- their columns in their own migrations with
-- cajex_private.register_encrypted_column(table, column, key_columns), where
-- key_columns are the columns (besides workspace_id) whose text values,
-- joined by '/', make the row id bound into the ciphertext.
create table cajex_private.encrypted_columns (
  table_name text not null check (table_name ~ '^[a-z_]+\.[a-z_][a-z0-9_]*$'),
  column_name text not null check (column_name ~ '^[a-z_][a-z0-9_]*$'),
  key_columns text[] not null check (cardinality(key_columns) between 1 and 4),
  created_at timestamptz not null default now(),
  primary key (table_name, column_name)
);
alter table cajex_private.encrypted_columns enable row level security;
alter table cajex_private.encrypted_columns force row level security;

-- Storing a secret may create the workspace's first data key; rotating keys
-- is a job of the platform (the `cajex keys` commands act as 'system').
alter table cajex.role_permissions no force row level security;
insert into cajex.role_permissions (permission, role) values
  ('secrets.write', 'owner'), ('secrets.write', 'admin'), ('secrets.write', 'system'),
  ('secrets.rotate', 'system')
on conflict do nothing;
alter table cajex.role_permissions force row level security;
