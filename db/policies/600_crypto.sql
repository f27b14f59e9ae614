-- Envelope encryption: policies and grants (functions in functions/600).

drop policy if exists "everyone can read the encrypted column registry" on cajex_private.encrypted_columns;
create policy "everyone can read the encrypted column registry" on cajex_private.encrypted_columns
  for select using (true);

grant select on cajex_private.encrypted_columns to cajex_app, cajex_owner;

grant execute on function
  cajex_private.ensure_workspace_key(bytea, text),
  cajex_private.begin_workspace_key_rotation(bytea, text),
  cajex_private.rewrite_secret(text, text, jsonb, bytea, bytea),
  cajex_private.destroy_workspace_keys(uuid)
  to cajex_app;

grant execute on function
  cajex_private.register_encrypted_column(regclass, text, text[]),
  cajex_private.keys_to_rewrap(text, integer),
  cajex_private.rewrap_workspace_key(uuid, integer, text, bytea, text),
  cajex_private.destroy_workspace_keys(uuid)
  to cajex_owner;
