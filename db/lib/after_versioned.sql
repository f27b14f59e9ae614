-- Between the versioned and the repeatable files: decide whether every
-- repeatable file re-applies (it does after any versioned file applied).
select cajex_migrations.begin_repeatables() as repeat_all \gset
