-- Per-workspace AI: policies and grants (functions in functions/610).
-- Settings (even the sealed key) and the usage record are for those who
-- configure AI or read billing; members learn on/off through cajex.ai_status().

-- The data key rotation job (secrets.rotate) reads the sealed key to
-- re-encrypt it (cajex.crypto.rotate_workspace_key). The request role's
-- policy: the AI functions (cajex_owner) read through their own policy below
-- and do not evaluate these permission checks on every statement.
drop policy if exists "ai admins can read their ai settings" on cajex.ai_settings;
create policy "ai admins can read their ai settings" on cajex.ai_settings
  for select to cajex_app using (workspace_id = (select c.workspace_id from cajex_private.context c)
                    and ((select cajex.has_permission('ai.configure'))
                         or (select cajex.has_permission('secrets.rotate'))));

-- The AI functions (security definer, owned by cajex_owner and bound by the
-- forced RLS) read the settings for any member: ai_reserve needs the model
-- and the sealed key when a member asks for a draft, ai_status tells every
-- member whether AI is on. Without this policy the admins-only policy above
-- binds them too and AI is "off" for everyone but admins. No request role is
-- cajex_owner, so requests still see the rows only with ai.configure.
drop policy if exists "the ai functions can read the context's ai settings" on cajex.ai_settings;
create policy "the ai functions can read the context's ai settings" on cajex.ai_settings
  for select to cajex_owner
  using (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can add ai settings" on cajex.ai_settings;
create policy "the context can add ai settings" on cajex.ai_settings
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can change ai settings" on cajex.ai_settings;
create policy "the context can change ai settings" on cajex.ai_settings
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can use its ai budget" on cajex.ai_budget_counters;
create policy "the context can use its ai budget" on cajex.ai_budget_counters
  for all
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can use its ai reservations" on cajex.ai_reservations;
create policy "the context can use its ai reservations" on cajex.ai_reservations
  for all
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "ai and billing readers can read ai usage" on cajex.ai_usage;
create policy "ai and billing readers can read ai usage" on cajex.ai_usage
  for select to cajex_app using (workspace_id = (select c.workspace_id from cajex_private.context c)
                    and ((select cajex.has_permission('ai.configure'))
                         or (select cajex.has_permission('billing.read'))));

-- ai_settle adds to a day's row with insert ... on conflict do update, which
-- must read the row it adds to, whoever asked (see the settings above). The
-- readers' policy above is the request role's only.
drop policy if exists "the ai functions can read the context's ai usage" on cajex.ai_usage;
create policy "the ai functions can read the context's ai usage" on cajex.ai_usage
  for select to cajex_owner
  using (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can record ai usage" on cajex.ai_usage;
create policy "the context can record ai usage" on cajex.ai_usage
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));

drop policy if exists "the context can add to ai usage" on cajex.ai_usage;
create policy "the context can add to ai usage" on cajex.ai_usage
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

grant select on cajex.ai_settings, cajex.ai_usage, cajex.ai_budget_counters, cajex.ai_reservations
  to cajex_app;

grant execute on function
  cajex.ai_update_settings(jsonb, bytea, text),
  cajex.ai_status(),
  cajex_private.ai_reserve(text, bigint),
  cajex_private.ai_settle(uuid, text, bigint, bigint, boolean)
  to cajex_app;

-- Owned by cajex_definer (it reads the billing row); read by ai_reserve and
-- ai_status, which run as cajex_owner.
grant select on cajex_private.context_ai_terms to cajex_owner;
