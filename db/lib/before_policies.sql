-- Between the functions and the policies: every policies file re-applies
-- when any functions file did (which may have dropped and created what a
-- policy grants or refers to), or when a versioned file did.
select cajex_migrations.begin_policies() as repeat_all \gset
