-- Policies and grants of the sign-in tables and functions.

-- A user reads their own linked identities (the linked accounts page).
drop policy if exists "users can read their own identities" on cajex.user_identities;
create policy "users can read their own identities" on cajex.user_identities
  for select using (user_id = (select c.user_id from cajex_private.context c));

-- magic_links, signin_rate_hits and email_deliveries have no policy for the
-- request roles: only the definer functions touch them.

drop policy if exists "the context can read its sign-in methods" on cajex.workspace_signin_methods;
create policy "the context can read its sign-in methods" on cajex.workspace_signin_methods
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));

-- cajex.set_signin_methods (owned by cajex_owner, bound by RLS) writes the
-- row of its own context's workspace only; the request roles have no write
-- grant, so these policies open nothing to them.
drop policy if exists "the context can add its sign-in methods" on cajex.workspace_signin_methods;
create policy "the context can add its sign-in methods" on cajex.workspace_signin_methods
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));
drop policy if exists "the context can change its sign-in methods" on cajex.workspace_signin_methods;
create policy "the context can change its sign-in methods" on cajex.workspace_signin_methods
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "users can read their own last workspace" on cajex.user_last_workspaces;
create policy "users can read their own last workspace" on cajex.user_last_workspaces
  for select using (user_id = (select c.user_id from cajex_private.context c));

grant select on cajex.user_identities, cajex.workspace_signin_methods to cajex_app;
grant select on cajex.user_last_workspaces to cajex_app;
grant select, insert, update on cajex.user_last_workspaces to cajex_definer;
grant select, insert, update, delete on cajex.user_identities, cajex.magic_links,
  cajex.signin_rate_hits, cajex.email_deliveries, cajex.workspace_signin_methods to cajex_definer;
grant insert, update on cajex.workspace_signin_methods to cajex_owner;

grant execute on function
  cajex_private.request_magic_link(text, bytea, text, bytea, bytea, interval, uuid, integer, integer, interval),
  cajex_private.check_magic_link(bytea),
  cajex_private.consume_magic_link(bytea),
  cajex_private.workspace_signin_methods(text),
  cajex_private.touch_context_session(),
  cajex_private.signin_methods_required(uuid, text, text)
  to cajex_app;
-- Vouching for an identity is the sign-in pages' (cajex_signin): a request
-- in one workspace must not open sessions for, or link identities to, anyone.
-- The development mailbox shows every email sent, so it is theirs too.
grant execute on function
  cajex_private.signin_with_identity(text, text, text, text, boolean, text),
  cajex_private.link_identity(uuid, text, text, text, text, boolean, boolean),
  cajex_private.dev_mailbox(integer)
  to cajex_signin;
-- A job's email, and its delivery record, are the worker's (cajex_worker).
grant execute on function
  cajex_private.record_email_delivery(bigint, uuid, text, text, text, text, text, text, text),
  cajex_private.email_delivery_of(bigint)
  to cajex_worker;
revoke execute on function
  cajex_private.signin_with_identity(text, text, text, text, boolean, text),
  cajex_private.link_identity(uuid, text, text, text, text, boolean, boolean),
  cajex_private.dev_mailbox(integer),
  cajex_private.record_email_delivery(bigint, uuid, text, text, text, text, text, text, text),
  cajex_private.email_delivery_of(bigint)
  from cajex_app;
grant execute on function
  cajex.remove_identity(uuid),
  cajex.end_my_session(uuid),
  cajex.end_all_my_sessions(),
  cajex.set_signin_methods(text[]),
  cajex.remember_workspace()
  to cajex_app;
grant execute on all functions in schema cajex_private to cajex_definer;
