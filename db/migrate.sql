-- Apply or upgrade the cajex schema. Run from the repository root as a role
-- that may create roles (a superuser on a managed service's admin role):
--
--   psql "$DATABASE_URL" -X -v ON_ERROR_STOP=1 -f db/migrate.sql
--
-- Optional variables:
--   -v dbdir=/abs/path/to/db      where this folder is (default: db)
--   -v context_secret=HEX         the secret that signs workspace contexts;
--                                 the web app and workers hold the same one
--
-- `cajex db migrate` runs exactly this file through psql.
--
-- The whole run is one transaction: it applies each versioned file of schema/
-- once (recording its checksum, refusing an applied file that was edited),
-- then re-applies functions/ and policies/ when any of them changed or any
-- versioned file was applied. Running it twice changes nothing.
\set ON_ERROR_STOP on
\set QUIET on
\o /dev/null
\if :{?dbdir}
\else
  \set dbdir db
\endif

begin;
set local lock_timeout = '10s';
set local statement_timeout = '15min';
set local client_min_messages = warning;
-- One migration at a time, whatever connects.
select pg_advisory_xact_lock(hashtext('cajex.migrate'));

\set path :dbdir/bootstrap.sql
\i :path

-- The files to apply, in order: generated from the folders by `cajex db plan`
-- (a test checks it is current). Versioned files (schema/) apply once each;
-- repeatable files (functions/, then policies/) re-apply when changed.
\set path :dbdir/plan.sql
\i :path

commit;
