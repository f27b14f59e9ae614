-- Per-workspace AI: settings, the budget (reserve before the provider call,
-- settle after), the usage record. cajex/ai/gateway.py is the only caller
-- of reserve and settle; the provider key is sealed and opened in Python.

--------------------------------------------------------------------------------
-- Settings (admins: ai.configure).

-- p_changes holds only the fields to change: enabled, provider, model,
-- base_url, budget_tokens, budget_period, task_budgets, max_output_tokens,
-- timeout_seconds, clear_api_key. A new key comes sealed (p_api_key) with
-- its last four characters.
create or replace function cajex.ai_update_settings(
  p_changes jsonb,
  p_api_key bytea default null,
  p_api_key_last4 text default null
)
returns cajex.ai_settings
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_row cajex.ai_settings;
  v_unknown text;
  v_bad text;
begin
  perform cajex_private.require_permission('ai.configure');
  if p_changes is null or jsonb_typeof(p_changes) <> 'object' then
    raise exception 'changes must be an object' using errcode = 'CXINV';
  end if;
  select k into v_unknown from jsonb_object_keys(p_changes) k
  where k not in ('enabled', 'provider', 'model', 'base_url', 'budget_tokens', 'budget_period',
                  'task_budgets', 'max_output_tokens', 'timeout_seconds', 'clear_api_key')
  limit 1;
  if v_unknown is not null then
    raise exception 'unknown field %', v_unknown using errcode = 'CXINV', detail = v_unknown;
  end if;
  select e.key into v_bad from jsonb_each(p_changes) e
  where (e.key in ('enabled', 'clear_api_key') and jsonb_typeof(e.value) <> 'boolean')
     or (e.key in ('provider', 'model', 'budget_period') and jsonb_typeof(e.value) <> 'string')
     or (e.key = 'base_url' and jsonb_typeof(e.value) not in ('string', 'null'))
     or (e.key in ('budget_tokens', 'max_output_tokens', 'timeout_seconds')
         and (jsonb_typeof(e.value) <> 'number' or (e.value)::numeric <> trunc((e.value)::numeric)))
     or (e.key = 'task_budgets' and jsonb_typeof(e.value) <> 'object')
  limit 1;
  if v_bad is not null then
    raise exception 'field % has the wrong type', v_bad using errcode = 'CXINV', detail = v_bad;
  end if;
  if p_changes ? 'provider' and p_changes ->> 'provider' not in ('anthropic', 'openai', 'openai_compatible') then
    raise exception 'the provider is anthropic, openai or openai_compatible'
      using errcode = 'CXINV', detail = 'provider';
  end if;
  if p_changes ? 'model' and p_changes ->> 'model' !~ '^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$' then
    raise exception 'a model name has 1 to 100 letters, digits and ._:/@-'
      using errcode = 'CXINV', detail = 'model';
  end if;
  -- No user or password (they would reach logs and other hosts' auth) and
  -- no query or fragment. Which hosts may be called depends on the
  -- deployment (CAJEX_AI_ALLOW_PRIVATE_HOSTS): cajex/ai/netguard.py checks
  -- the host when saving and again when calling.
  if nullif(p_changes ->> 'base_url', '') is not null
     and (p_changes ->> 'base_url' !~ '^https?://[^\s/?#@]+(/[^\s?#]*)?$'
          or char_length(p_changes ->> 'base_url') > 300) then
    raise exception 'the base URL is an http(s) URL of at most 300 characters, without user, password, query or fragment'
      using errcode = 'CXINV', detail = 'base_url';
  end if;
  if p_changes ? 'budget_period' and p_changes ->> 'budget_period' not in ('day', 'month') then
    raise exception 'the budget period is day or month' using errcode = 'CXINV', detail = 'budget_period';
  end if;
  if (p_changes ->> 'budget_tokens')::numeric not between 0 and 1000000000000 then
    raise exception 'the budget is 0 to 10^12 tokens' using errcode = 'CXINV', detail = 'budget_tokens';
  end if;
  if (p_changes ->> 'max_output_tokens')::numeric not between 16 and 32000 then
    raise exception 'the answer limit is 16 to 32000 tokens' using errcode = 'CXINV', detail = 'max_output_tokens';
  end if;
  if (p_changes ->> 'timeout_seconds')::numeric not between 1 and 600 then
    raise exception 'the timeout is 1 to 600 seconds' using errcode = 'CXINV', detail = 'timeout_seconds';
  end if;
  if p_changes ? 'task_budgets' and exists (
       select from jsonb_each(p_changes -> 'task_budgets') e
       where e.key !~ '^[a-z_]{1,40}$' or jsonb_typeof(e.value) <> 'number'
          or (e.value)::numeric not between 0 and 1000000000000
          or (e.value)::numeric <> trunc((e.value)::numeric)) then
    -- Bounded like budget_tokens: ai_reserve reads each as a bigint.
    raise exception 'task budgets map task names (a-z, _) to whole token counts of 0 to 10^12'
      using errcode = 'CXINV', detail = 'task_budgets';
  end if;
  if p_api_key is not null and (octet_length(p_api_key) not between 18 and 4096
                                or coalesce(char_length(p_api_key_last4), 99) > 8) then
    raise exception 'a sealed API key and its last four characters are required'
      using errcode = 'CXINV', detail = 'api_key';
  end if;

  -- Switching on is a plan-change blocker: hold the plan still meanwhile.
  if coalesce((p_changes ->> 'enabled')::boolean, false) then
    perform cajex_private.hold_plan();
  end if;
  insert into cajex.ai_settings (workspace_id) values (v_ws) on conflict do nothing;
  select * into v_row from cajex.ai_settings s where s.workspace_id = v_ws for update;

  update cajex.ai_settings s
  set enabled = coalesce((p_changes ->> 'enabled')::boolean, s.enabled),
      provider = coalesce(p_changes ->> 'provider', s.provider),
      model = coalesce(p_changes ->> 'model', s.model),
      base_url = case when p_changes ? 'base_url' then nullif(p_changes ->> 'base_url', '') else s.base_url end,
      budget_tokens = coalesce((p_changes ->> 'budget_tokens')::bigint, s.budget_tokens),
      budget_period = coalesce(p_changes ->> 'budget_period', s.budget_period),
      task_budgets = coalesce(p_changes -> 'task_budgets', s.task_budgets),
      max_output_tokens = coalesce((p_changes ->> 'max_output_tokens')::integer, s.max_output_tokens),
      timeout_seconds = coalesce((p_changes ->> 'timeout_seconds')::integer, s.timeout_seconds),
      api_key = case when coalesce((p_changes ->> 'clear_api_key')::boolean, false) then null
                     else coalesce(p_api_key, s.api_key) end,
      api_key_last4 = case when coalesce((p_changes ->> 'clear_api_key')::boolean, false) then null
                           when p_api_key is not null then p_api_key_last4 else s.api_key_last4 end,
      updated_at = now(),
      updated_by = (select cajex.current_user_id())
  where s.workspace_id = v_ws
  returning * into v_row;

  -- A changed budget re-arms this period's notice: when the new budget is
  -- spent too, the admins hear of it again (still once).
  if p_changes ? 'budget_tokens' or p_changes ? 'budget_period' then
    update cajex.ai_budget_counters c set notified_at = null
    where c.workspace_id = v_ws and c.scope = 'all' and c.notified_at is not null
      and c.period_start = cajex_private.ai_period_start(v_row.budget_period);
  end if;

  if v_row.provider = 'openai_compatible' and v_row.base_url is null then
    raise exception 'an OpenAI-compatible provider needs its base URL'
      using errcode = 'CXINV', detail = 'base_url';
  end if;
  if v_row.enabled and v_row.api_key is null then
    raise exception 'AI needs the provider''s API key before it can be switched on'
      using errcode = 'CXINV', detail = 'api_key';
  end if;

  perform cajex_private.write_audit('ai.settings_changed', 'ai_settings', v_ws::text,
    jsonb_build_object(
      'fields', (select coalesce(jsonb_agg(k order by k), '[]') from jsonb_object_keys(p_changes) k),
      'api_key_changed', p_api_key is not null,
      'enabled', v_row.enabled));
  return v_row;
end;
$$;

--------------------------------------------------------------------------------
-- The budget.
--
-- Every function here is PL/pgSQL on purpose: its statements' plans are
-- cached for the session, whereas a security definer SQL function is
-- planned again on every call, which with the context view in each plan
-- costs milliseconds per reservation.

drop function if exists cajex_private.ai_period_limit(bigint);

-- What the plan says about AI, for the open workspace: whether it includes AI
-- at all (the test of cajex.workspace_has_feature('ai'): the plan's features,
-- and no payment limit), and its token quota per calendar month
-- (cajex.plans.ai_monthly_tokens from billing; null when the plan sets none).
-- A view owned by cajex_definer, like cajex_private.context_billing_limited:
-- a member's reservation must see the billing row, which only billing
-- readers may read. It reads the open workspace's rows only, and only the
-- AI functions (owned by cajex_owner) may read it; they expand it into their
-- own statements instead of calling a function.
drop function if exists cajex_private.ai_plan_terms();
create or replace view cajex_private.context_ai_terms
with (security_barrier = true)
as
  select 'ai' = any (p.features) and not coalesce(b.grace_until <= now(), false) as allows_ai,
         p.ai_monthly_tokens as monthly_tokens
  from cajex.workspaces w
  join cajex.plans p on p.code = w.plan
  left join cajex.workspace_billing b on b.workspace_id = w.id
  where w.id = (select c.workspace_id from cajex_private.context c);
alter view cajex_private.context_ai_terms owner to cajex_definer;

-- No SET clause, and qualified names instead, so that the planner inlines it
-- (see normalise_email).
create or replace function cajex_private.ai_period_start(p_period text)
returns date
language sql
stable
parallel safe
as $$
  select pg_catalog.date_trunc(p_period, pg_catalog.now() at time zone 'utc')::date;
$$;

-- The limit of the workspace's own period: its budget, capped by the plan's
-- monthly quota when the period is the month. A daily budget is checked
-- against the plan's month separately (scope 'plan'), so thirty days of a
-- daily budget can never pass the plan's month either.
-- A plain expression, without a set clause, so that the planner inlines it.
create or replace function cajex_private.ai_own_limit(p_budget bigint, p_period text, p_monthly bigint)
returns bigint
language sql
immutable
as $$
  select case when p_period = 'month' and p_monthly is not null then least(p_budget, p_monthly)
              else p_budget end;
$$;

-- Tell the workspace's owners and admins once per period and budget (the
-- workspace's own, or the plan's month) that AI paused.
drop function if exists cajex_private.ai_notify_budget_spent(date, text, bigint);
create or replace function cajex_private.ai_notify_budget_spent(
  p_scope text,
  p_period_start date,
  p_period text,
  p_limit bigint
)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select c.workspace_id from cajex_private.context c);
  v_member record;
  v_slug text;
begin
  update cajex.ai_budget_counters c set notified_at = now()
  where c.workspace_id = v_ws and c.period_start = p_period_start and c.scope = p_scope
    and c.notified_at is null;
  if not found then
    return;
  end if;
  select w.slug into v_slug from cajex.workspaces w where w.id = v_ws;
  for v_member in
    select u.id, u.email from cajex.memberships m join cajex.users u on u.id = m.user_id
    where m.workspace_id = v_ws and m.role in ('owner', 'admin') and m.status = 'active'
  loop
    perform cajex_private.enqueue_job('email.send', jsonb_build_object(
      'template', 'ai_budget', 'to', v_member.email, 'workspace_id', v_ws,
      'params', jsonb_build_object('workspace_slug', v_slug, 'period', p_period,
                                   'period_start', p_period_start, 'budget_tokens', p_limit,
                                   'plan_quota', p_scope = 'plan')),
      'ai_budget:' || p_scope || ':' || p_period_start || ':' || v_member.id);
  end loop;
  perform cajex_private.write_audit('ai.budget_spent', 'ai_settings', v_ws::text,
    jsonb_build_object('scope', p_scope, 'period_start', p_period_start, 'budget_tokens', p_limit));
end;
$$;

-- Take the call's tokens from the budget before a provider call: the
-- estimated input (p_tokens) plus the settings' answer limit, since the
-- answer is capped at that. Never raises for a business refusal (so a
-- refusal's notice commits): status is
--   ok            reserved; reservation_id and the provider settings are set
--   plan          the plan (or billing) does not allow AI now
--   off           AI is switched off for the workspace
--   unconfigured  no API key
--   budget        the period's, the task's or the plan's month's budget
--                 cannot cover it; limit_tokens, used_tokens and
--                 reserved_tokens (what the call needed) say why
-- The sealed API key and its wrapped data key are returned only with 'ok'.
--
-- Concurrency: each budget is one counter row, taken by one conditional
-- update (used + reserved + n <= limit). A concurrent reservation waits for
-- the row lock and re-checks the condition on the committed row, so the
-- reservations together never pass the limit. The gateway commits in the
-- same round trip, so the lock is held only for the server's own work.
--
-- The result gained data_key and data_key_master: an older definition
-- (another return type) cannot be replaced in place, so it is dropped once
-- and its grant given again below.
do $$
begin
  if exists (select from pg_proc p
             where p.oid = to_regprocedure('cajex_private.ai_reserve(text, bigint)')
               and not 'data_key' = any (p.proargnames)) then
    drop function cajex_private.ai_reserve(text, bigint);
  end if;
end;
$$;

create or replace function cajex_private.ai_reserve(p_task text, p_tokens bigint)
returns table (
  status text,
  reservation_id uuid,
  provider text,
  model text,
  base_url text,
  api_key bytea,
  max_output_tokens integer,
  timeout_seconds integer,
  period text,
  period_start date,
  limit_tokens bigint,
  used_tokens bigint,
  reserved_tokens bigint,
  data_key bytea,
  data_key_master text
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid;
  v_may boolean;
  v_allows boolean;
  v_monthly bigint;
  v_enabled boolean;
  v_provider text;
  v_model text;
  v_base_url text;
  v_api_key bytea;
  v_max_output integer;
  v_timeout integer;
  v_budget bigint;
  v_period text;
  v_task_budgets jsonb;
  v_stale_waits boolean;
  v_data_key bytea;
  v_data_key_master text;
  v_start date;
  v_month date;
  v_limit bigint;
  v_task_limit bigint;
  v_plan_scoped boolean;
  v_id uuid := gen_random_uuid();
  v_used bigint;
  v_scope text;
  v_scope_limit bigint;
  v_scope_start date;
  v_refused boolean := false;
  v_stale cajex.ai_reservations;
begin
  -- One read for everything the decision needs: the context and the
  -- member's right to use AI, the plan's terms, the settings, whether
  -- reservations of dead calls wait to be released, and the data key that
  -- opens the sealed API key (the version its ciphertext's header names), so
  -- that the gateway needs no other round trip and this transaction can
  -- commit with the statement.
  select c.workspace_id,
         exists (select from cajex.role_permissions rp
                 where rp.role = c.member_role and rp.permission = 'ai.use'),
         coalesce(t.allows_ai, false), t.monthly_tokens,
         s.enabled, s.provider, s.model, s.base_url, s.api_key, s.max_output_tokens,
         s.timeout_seconds, s.budget_tokens, s.budget_period, s.task_budgets,
         exists (select from cajex.ai_reservations r
                 where r.workspace_id = c.workspace_id
                   and r.created_at < now() - interval '11 minutes'),
         k.wrapped_key, k.master_key_id
    into v_ws, v_may, v_allows, v_monthly, v_enabled, v_provider, v_model, v_base_url,
         v_api_key, v_max_output, v_timeout, v_budget, v_period, v_task_budgets,
         v_stale_waits, v_data_key, v_data_key_master
  from cajex_private.context c
  left join cajex_private.context_ai_terms t on true
  left join cajex.ai_settings s on s.workspace_id = c.workspace_id
  left join cajex.workspace_keys k
    on k.workspace_id = c.workspace_id and int4send(k.version) = substring(s.api_key from 2 for 4);
  perform cajex_private.check_permission(v_ws, v_may, 'ai.use');
  if p_task is null or p_task !~ '^[a-z_]{1,40}$' then
    raise exception 'a task name has 1 to 40 letters a-z or _' using errcode = 'CXINV', detail = 'task';
  end if;
  if p_tokens is null or p_tokens not between 1 and 10000000 then
    raise exception 'a reservation is 1 to 10^7 tokens' using errcode = 'CXINV', detail = 'tokens';
  end if;
  if not v_allows then
    return query select 'plan'::text, null::uuid, null::text, null::text, null::text, null::bytea,
      null::integer, null::integer, null::text, null::date, null::bigint, null::bigint, null::bigint,
      null::bytea, null::text;
    return;
  end if;
  if not coalesce(v_enabled, false) then
    return query select 'off'::text, null::uuid, null::text, null::text, null::text, null::bytea,
      null::integer, null::integer, null::text, null::date, null::bigint, null::bigint, null::bigint,
      null::bytea, null::text;
    return;
  end if;
  if v_api_key is null then
    return query select 'unconfigured'::text, null::uuid, null::text, null::text, null::text,
      null::bytea, null::integer, null::integer, null::text, null::date, null::bigint, null::bigint,
      null::bigint, null::bytea, null::text;
    return;
  end if;

  -- Release what calls that never settled still hold (the worker died
  -- mid-call): a reservation older than the longest provider timeout (600
  -- seconds) plus a margin can belong to no call in flight. Recorded as a
  -- failed request; a late settlement finds nothing and does nothing.
  if v_stale_waits then
    for v_stale in
      delete from cajex.ai_reservations r
      where r.workspace_id = v_ws and r.created_at < now() - interval '11 minutes'
      returning *
    loop
      update cajex.ai_budget_counters c
      set reserved_tokens = greatest(c.reserved_tokens - v_stale.tokens, 0)
      where c.workspace_id = v_ws
        and ((c.period_start = v_stale.period_start
              and (c.scope = 'all' or (v_stale.task_scoped and c.scope = 'task:' || v_stale.task)))
          or (c.scope = 'plan' and c.period_start = v_stale.plan_month));
      insert into cajex.ai_usage as u (workspace_id, day, model, task, failed_requests)
      values (v_ws, (now() at time zone 'utc')::date, v_model, v_stale.task, 1)
      -- By name: the result columns model and task would make the list ambiguous.
      on conflict on constraint ai_usage_pkey do update
        set failed_requests = u.failed_requests + 1;
    end loop;
  end if;

  p_tokens := p_tokens + v_max_output;
  v_start := date_trunc(v_period, now() at time zone 'utc')::date;
  v_month := date_trunc('month', now() at time zone 'utc')::date;
  v_limit := cajex_private.ai_own_limit(v_budget, v_period, v_monthly);
  v_task_limit := (v_task_budgets ->> p_task)::bigint;
  v_plan_scoped := v_period = 'day' and v_monthly is not null;

  insert into cajex.ai_reservations (workspace_id, id, period_start, task, task_scoped,
                                     plan_month, tokens)
  values (v_ws, v_id, v_start, p_task, v_task_limit is not null,
          case when v_plan_scoped then v_month end, p_tokens);

  -- One conditional update per budget that applies, narrowest first; the
  -- workspace's own ('all') comes last, as it is the one every call of the
  -- workspace queues on. A counter row is made the first time its period
  -- is used, and the update tried once more: also when a concurrent call
  -- made the row first (the insert waited for it to commit, so the second
  -- update sees it).
  for v_scope, v_scope_limit, v_scope_start in
    select x.scope, x.lim, x.start from (values
      (1, 'task:' || p_task, v_task_limit, v_start),
      (2, 'plan', case when v_plan_scoped then v_monthly end, v_month),
      (3, 'all', v_limit, v_start)) x (n, scope, lim, start)
    where x.lim is not null order by x.n
  loop
    update cajex.ai_budget_counters c set reserved_tokens = c.reserved_tokens + p_tokens
    where c.workspace_id = v_ws and c.period_start = v_scope_start and c.scope = v_scope
      and c.used_tokens + c.reserved_tokens + p_tokens <= v_scope_limit
    returning c.used_tokens into v_used;
    if not found then
      insert into cajex.ai_budget_counters (workspace_id, period_start, scope)
      values (v_ws, v_scope_start, v_scope) on conflict do nothing;
      update cajex.ai_budget_counters c set reserved_tokens = c.reserved_tokens + p_tokens
      where c.workspace_id = v_ws and c.period_start = v_scope_start and c.scope = v_scope
        and c.used_tokens + c.reserved_tokens + p_tokens <= v_scope_limit
      returning c.used_tokens into v_used;
    end if;
    if not found then
      v_refused := true;
      exit;
    end if;
  end loop;

  if v_refused then
    -- Undo what this call took from the narrower budgets before the one
    -- that refused (this transaction's own updates: no other call saw
    -- them), tell the admins once when a workspace-wide budget is spent,
    -- and say why.
    update cajex.ai_budget_counters c set reserved_tokens = c.reserved_tokens - p_tokens
    where c.workspace_id = v_ws
      and ((c.scope = 'task:' || p_task and c.period_start = v_start and v_task_limit is not null
            and v_scope <> 'task:' || p_task)
        or (c.scope = 'plan' and c.period_start = v_month and v_plan_scoped and v_scope = 'all'));
    delete from cajex.ai_reservations r where r.workspace_id = v_ws and r.id = v_id;
    if v_scope in ('all', 'plan') then
      perform cajex_private.ai_notify_budget_spent(
        v_scope, v_scope_start, case when v_scope = 'plan' then 'month' else v_period end,
        v_scope_limit);
    end if;
    select c.used_tokens into v_used from cajex.ai_budget_counters c
    where c.workspace_id = v_ws and c.period_start = v_scope_start and c.scope = v_scope;
    return query select 'budget'::text, null::uuid, null::text, null::text, null::text, null::bytea,
      null::integer, null::integer,
      case when v_scope = 'plan' then 'month' else v_period end,
      v_scope_start, v_scope_limit, coalesce(v_used, 0), p_tokens, null::bytea, null::text;
    return;
  end if;

  return query select 'ok'::text, v_id, v_provider, v_model, v_base_url, v_api_key, v_max_output,
    v_timeout, v_period, v_start, v_limit, v_used, p_tokens, v_data_key, v_data_key_master;
end;
$$;

grant execute on function cajex_private.ai_reserve(text, bigint) to cajex_app;

-- Return a reservation: its tokens leave `reserved`, the actual tokens
-- (never more than were reserved: the gateway caps each answer) join `used`
-- and the usage record. A failed call records a failed request and no
-- tokens. Settling an unknown or settled reservation does nothing.
create or replace function cajex_private.ai_settle(
  p_reservation_id uuid,
  p_model text,
  p_input_tokens bigint,
  p_output_tokens bigint,
  p_failed boolean default false
)
returns table (input_tokens bigint, output_tokens bigint)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid;
  v_may boolean;
  v_res cajex.ai_reservations;
  v_in bigint;
  v_out bigint;
begin
  select c.workspace_id,
         exists (select from cajex.role_permissions rp
                 where rp.role = c.member_role and rp.permission = 'ai.use')
    into v_ws, v_may
  from cajex_private.context c;
  perform cajex_private.check_permission(v_ws, v_may, 'ai.use');
  delete from cajex.ai_reservations r where r.workspace_id = v_ws and r.id = p_reservation_id
  returning * into v_res;
  if not found then
    return;
  end if;
  v_in := case when p_failed then 0 else least(greatest(coalesce(p_input_tokens, 0), 0), v_res.tokens) end;
  v_out := case when p_failed then 0
                else least(greatest(coalesce(p_output_tokens, 0), 0), v_res.tokens - v_in) end;
  update cajex.ai_budget_counters c
  set reserved_tokens = greatest(c.reserved_tokens - v_res.tokens, 0),
      used_tokens = c.used_tokens + v_in + v_out
  where c.workspace_id = v_ws
    and ((c.period_start = v_res.period_start
          and (c.scope = 'all' or (v_res.task_scoped and c.scope = 'task:' || v_res.task)))
      or (c.scope = 'plan' and c.period_start = v_res.plan_month));
  insert into cajex.ai_usage as u (workspace_id, day, model, task, requests, failed_requests,
                                   input_tokens, output_tokens)
  values (v_ws, (now() at time zone 'utc')::date, left(coalesce(p_model, 'unknown'), 100), v_res.task,
          case when p_failed then 0 else 1 end, case when p_failed then 1 else 0 end, v_in, v_out)
  on conflict (workspace_id, day, model, task) do update
    set requests = u.requests + excluded.requests,
        failed_requests = u.failed_requests + excluded.failed_requests,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens;
  return query select v_in, v_out;
end;
$$;

-- What the AI pages show any member: on or off, paused or not, this
-- period's budget and use. No key material.
create or replace function cajex.ai_status()
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select c.workspace_id from cajex_private.context c);
  v_set cajex.ai_settings;
  v_plan record;
  v_start date;
  v_limit bigint;
  v_used bigint;
  v_reserved bigint;
  v_notified timestamptz;
  v_plan_used bigint;
begin
  perform cajex_private.require_permission('ai.use');
  select coalesce(t.allows_ai, false) as allows_ai, t.monthly_tokens into v_plan
  from (select) one left join cajex_private.context_ai_terms t on true;
  select * into v_set from cajex.ai_settings s where s.workspace_id = v_ws;
  if not found then
    return jsonb_build_object('plan_allows', v_plan.allows_ai, 'enabled', false,
                              'configured', false, 'paused', false);
  end if;
  v_start := date_trunc(v_set.budget_period, now() at time zone 'utc')::date;
  v_limit := cajex_private.ai_own_limit(v_set.budget_tokens, v_set.budget_period, v_plan.monthly_tokens);
  select c.used_tokens, c.reserved_tokens, c.notified_at into v_used, v_reserved, v_notified
  from cajex.ai_budget_counters c
  where c.workspace_id = v_ws and c.period_start = v_start and c.scope = 'all';
  if v_set.budget_period = 'day' and v_plan.monthly_tokens is not null then
    select c.used_tokens into v_plan_used from cajex.ai_budget_counters c
    where c.workspace_id = v_ws and c.scope = 'plan'
      and c.period_start = date_trunc('month', now() at time zone 'utc')::date;
  end if;
  return jsonb_build_object(
    'plan_allows', v_plan.allows_ai,
    'enabled', v_set.enabled,
    'configured', v_set.api_key is not null,
    'provider', v_set.provider,
    'model', v_set.model,
    'period', v_set.budget_period,
    'period_start', v_start,
    'resets_at', (v_start + case when v_set.budget_period = 'day' then interval '1 day'
                                 else interval '1 month' end)::timestamp at time zone 'utc',
    'budget_tokens', v_limit,
    'used_tokens', coalesce(v_used, 0),
    'reserved_tokens', coalesce(v_reserved, 0),
    'plan_monthly_tokens', v_plan.monthly_tokens,
    -- Paused: the budget refused a request this period (and was not changed
    -- since: a change re-arms the notice), or not even the smallest request
    -- fits what is left of the period or of the plan's month, i.e. the
    -- answer limit plus the gateway's fixed 64-token input overhead
    -- (cajex.ai.gateway.estimate_input_tokens).
    'paused', v_notified is not null
              or coalesce(v_used, 0) + v_set.max_output_tokens + 64 > v_limit
              or coalesce(v_plan_used, 0) + v_set.max_output_tokens + 64 > v_plan.monthly_tokens);
end;
$$;
