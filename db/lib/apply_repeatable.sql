-- Re-apply :file when it changed since it was last applied, or when this run
-- applied a versioned file (which may have replaced what it defines).
\set path :dbdir/:file
\set sum `sha256sum < :'path' | cut -c1-64`
select :'repeat_all'::boolean or cajex_migrations.needs_repeatable(:'file', :'sum') as needed \gset
\if :needed
  \i :path
  select cajex_migrations.record(:'file', :'sum', 'repeatable');
\endif
