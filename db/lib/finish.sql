-- After everything: install the context secret when one was given. It lives
-- in a table only the definer role reads (and the owner writes, here).
\if :{?context_secret}
  insert into cajex_private.context_keys (key_id, secret)
  values ('k1', decode(:'context_secret', 'hex'))
  on conflict (key_id) do update set secret = excluded.secret
  where cajex_private.context_keys.secret is distinct from excluded.secret;
\endif

-- The key that seals each transaction's context (db/functions/000_context.sql):
-- made once, kept by later runs.
select cajex_private.ensure_seal_key();

-- The keys and the reference tables hold a handful of rows that change only
-- here, too few for autovacuum ever to analyze them: without statistics the
-- planner takes each for hundreds of rows, and every context check and
-- opening that reads them is planned for a join that is not there.
analyze cajex_private.context_keys, cajex_private.seal_key, cajex.plans,
  cajex.role_permissions, cajex_private.encrypted_columns;
