-- Apply :file (relative to :dbdir) unless it is recorded already. Refuses a
-- file whose checksum differs from the one recorded when it was applied.
\set path :dbdir/:file
\set sum `sha256sum < :'path' | cut -c1-64`
select cajex_migrations.needs_versioned(:'file', :'sum') as needed \gset
\if :needed
  \i :path
  select cajex_migrations.record(:'file', :'sum', 'versioned');
\endif
