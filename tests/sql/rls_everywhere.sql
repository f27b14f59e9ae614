-- Every table in the cajex schemas has row-level security enabled and
-- forced, and no request role can get around it.
begin;
\ir helpers/setup.sql
select plan(8);

select is(
  (select array_agg(format('%I.%I', n.nspname, c.relname) order by 1)
   from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where c.relkind in ('r', 'p') and n.nspname in ('cajex', 'cajex_private', 'api', 'cajex_migrations')
     and not (c.relrowsecurity and c.relforcerowsecurity)),
  null,
  'every table has RLS enabled and forced'
);

select is(
  (select array_agg(rolname::text order by 1) from pg_roles
   where rolname in ('cajex_app', 'cajex_signin', 'cajex_worker', 'cajex_webhook', 'cajex_api',
                     'cajex_authenticator', 'cajex_anon')
     and (rolsuper or rolbypassrls)),
  null,
  'no request role is superuser or bypasses RLS'
);

select ok(
  not pg_has_role('cajex_app', 'cajex_api', 'member'),
  'cajex_app cannot switch to cajex_api'
);

select ok(
  not pg_has_role('cajex_app', 'cajex_signin', 'member')
  and not pg_has_role('cajex_app', 'cajex_worker', 'member'),
  'cajex_app cannot become the sign-in or the worker role'
);

select ok(
  pg_has_role('cajex_signin', 'cajex_app', 'usage') and pg_has_role('cajex_worker', 'cajex_app', 'usage')
  and not pg_has_role('cajex_signin', 'cajex_worker', 'member')
  and not pg_has_role('cajex_worker', 'cajex_signin', 'member'),
  'the sign-in and worker roles have what cajex_app has, and not each other''s'
);

select ok(
  not pg_has_role('cajex_webhook', 'cajex_app', 'member')
  and not pg_has_role('cajex_app', 'cajex_webhook', 'member')
  and has_function_privilege('cajex_webhook', 'cajex_private.apply_stripe_event(text, text, bigint, text, jsonb)', 'execute')
  and not has_function_privilege('cajex_app', 'cajex_private.apply_stripe_event(text, text, bigint, text, jsonb)', 'execute'),
  'Stripe events are the webhook login''s alone, and it has nothing of a request''s'
);

select ok(
  pg_has_role('cajex_authenticator', 'cajex_api', 'member')
  and not (select rolinherit from pg_roles where rolname = 'cajex_authenticator'),
  'the authenticator may become cajex_api and inherits nothing'
);

select is(
  (select array_agg(c.relname::text) from pg_class c join pg_roles r on r.oid = c.relowner
   where r.rolname in ('cajex_app', 'cajex_signin', 'cajex_worker', 'cajex_webhook', 'cajex_api',
                       'cajex_authenticator', 'cajex_anon')),
  null,
  'request roles own nothing'
);

select * from finish();
rollback;
