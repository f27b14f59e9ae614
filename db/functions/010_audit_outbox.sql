-- The audit log and the job outbox, written by the business functions in the
-- same transaction as the change they record or cause.

--------------------------------------------------------------------------------
-- Audit

create or replace function cajex_private.write_audit(
  p_action text,
  p_target_type text default null,
  p_target_id text default null,
  p_details jsonb default '{}'
)
returns void
-- PL/pgSQL, not SQL: a SQL function with a SET clause is planned again on
-- every call (and this one expands the context view), while PL/pgSQL keeps
-- its plan for the session. Every write of the product calls it.
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- One read of the context for all three fields; with no context the
  -- insert fails the policy's check.
  insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id, details)
  select c.workspace_id, c.user_id, coalesce(c.actor, 'system'),
         p_action, p_target_type, p_target_id, coalesce(p_details, '{}')
  from (select 1) one
  left join cajex_private.context c on true;
end;
$$;
comment on function cajex_private.write_audit(text, text, text, jsonb) is
  'Append an audit event to the context''s workspace. Fails the policy check without a context.';

-- Append-only: no role updates an audit row, and only the purge (running as
-- cajex_definer) deletes them, together with their workspace.
create or replace function cajex_private.audit_log_append_only()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'DELETE' and current_user::text = 'cajex_definer' then
    return old;
  end if;
  raise exception 'the audit log is append-only'
    using errcode = 'CXAPO', hint = 'Audit events are never changed or removed.';
end;
$$;

drop trigger if exists audit_log_append_only on cajex.audit_log;
create trigger audit_log_append_only
  before update or delete on cajex.audit_log
  for each row execute function cajex_private.audit_log_append_only();

drop trigger if exists organisation_audit_log_append_only on cajex.organisation_audit_log;
create trigger organisation_audit_log_append_only
  before update or delete on cajex.organisation_audit_log
  for each row execute function cajex_private.audit_log_append_only();

--------------------------------------------------------------------------------
-- Outbox

create or replace function cajex_private.enqueue_job(
  p_kind text,
  p_payload jsonb default '{}',
  p_dedupe_key text default null,
  p_run_after timestamptz default null
)
returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id bigint;
begin
  insert into cajex.outbox (workspace_id, kind, payload, dedupe_key, run_after)
  values ((select cajex.current_workspace_id()), p_kind, coalesce(p_payload, '{}'),
          p_dedupe_key, coalesce(p_run_after, now()))
  on conflict (workspace_id, kind, dedupe_key)
    where dedupe_key is not null and done_at is null and started_at is null
    do nothing
  returning id into v_id;
  if v_id is not null then
    perform pg_notify('cajex_outbox', v_id::text);
  end if;
  return v_id;
end;
$$;
comment on function cajex_private.enqueue_job(text, jsonb, text, timestamptz) is
  'Write a job for the context''s workspace to the outbox. A pending job with the same '
  'dedupe key absorbs this one (returns null).';

-- The same for jobs that belong to no workspace (sign-in emails), and for
-- definer functions that act before or outside a context.
create or replace function cajex_private.enqueue_platform_job(
  p_workspace_id uuid,
  p_kind text,
  p_payload jsonb default '{}',
  p_dedupe_key text default null,
  p_run_after timestamptz default null
)
returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id bigint;
begin
  insert into cajex.outbox (workspace_id, kind, payload, dedupe_key, run_after)
  values (p_workspace_id, p_kind, coalesce(p_payload, '{}'), p_dedupe_key, coalesce(p_run_after, now()))
  on conflict (workspace_id, kind, dedupe_key)
    where dedupe_key is not null and done_at is null and started_at is null
    do nothing
  returning id into v_id;
  if v_id is not null then
    perform pg_notify('cajex_outbox', v_id::text);
  end if;
  return v_id;
end;
$$;
alter function cajex_private.enqueue_platform_job(uuid, text, jsonb, text, timestamptz) owner to cajex_definer;

-- The relay: jobs that are due and not handed to the queue recently. A job
-- handed over but not finished within p_requeue_after is handed over again
-- (the worker died, Redis lost it): delivery is at least once, and every job
-- is idempotent.
create or replace function cajex_private.claim_outbox(p_limit integer, p_requeue_after interval)
returns table (id bigint, workspace_id uuid, kind text, payload jsonb, attempts integer)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    with due as (
      select o.id
      from cajex.outbox o
      where o.done_at is null
        and o.run_after <= now()
        and (o.enqueued_at is null or o.enqueued_at < now() - p_requeue_after)
      order by o.run_after, o.id
      limit p_limit
      for update skip locked
    )
    update cajex.outbox o
    set enqueued_at = now()
    from due
    where o.id = due.id
    returning o.id, o.workspace_id, o.kind, o.payload, o.attempts;
end;
$$;
alter function cajex_private.claim_outbox(integer, interval) owner to cajex_definer;

-- A worker starts a job: returns the row, or nothing when it is done already
-- (a duplicate delivery) or another worker started it within the lease. So
-- a job body runs to visible effect once; a worker that died mid-job leaves
-- the lease to expire and the relay to hand the job over again.
create or replace function cajex_private.claim_outbox_row(p_id bigint, p_lease interval default interval '10 minutes')
returns table (id bigint, workspace_id uuid, kind text, payload jsonb, attempts integer)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    update cajex.outbox o
    set started_at = now(), attempts = o.attempts + 1
    where o.id = p_id
      and o.done_at is null
      and (o.started_at is null or o.started_at < now() - p_lease)
    returning o.id, o.workspace_id, o.kind, o.payload, o.attempts;
end;
$$;
alter function cajex_private.claim_outbox_row(bigint, interval) owner to cajex_definer;

-- The relay could not hand these to the queue (Redis down): make them due
-- again at once.
create or replace function cajex_private.release_outbox(p_ids bigint[])
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update cajex.outbox o set enqueued_at = null where o.id = any(p_ids) and o.done_at is null;
end;
$$;
alter function cajex_private.release_outbox(bigint[]) owner to cajex_definer;

-- A failed job goes back to the relay after a backoff, unless a newer row
-- with its dedupe key is pending: that one does the same work, and putting
-- this one back would collide with it in outbox_dedupe_key. It is closed
-- then, its error kept (prefixed 'superseded: ') for whoever looks.
create or replace function cajex_private.finish_outbox_job(p_id bigint, p_error text default null)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_error is null then
    update cajex.outbox set done_at = now(), last_error = null where id = p_id;
    return;
  end if;
  begin
    update cajex.outbox o
    set last_error = left(p_error, 2000), enqueued_at = null, started_at = null,
        run_after = now() + least(interval '1 hour', interval '2 seconds' * power(2, o.attempts))
    where o.id = p_id;
  exception when unique_violation then
    -- The pending twin (the index names no other constraint on this table).
    update cajex.outbox o
    set done_at = now(), last_error = left('superseded: ' || p_error, 2000)
    where o.id = p_id;
  end;
end;
$$;
alter function cajex_private.finish_outbox_job(bigint, text) owner to cajex_definer;

create or replace function cajex_private.outbox_lag()
returns table (pending bigint, oldest_seconds double precision)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::double precision
    from cajex.outbox
    where done_at is null and run_after <= now();
end;
$$;
alter function cajex_private.outbox_lag() owner to cajex_definer;

create or replace function cajex_private.outbox_job_done(p_id bigint)
returns boolean
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce((select o.done_at is not null from cajex.outbox o where o.id = p_id), false);
end;
$$;
alter function cajex_private.outbox_job_done(bigint) owner to cajex_definer;

-- A job about to commit its effect in the database: lock its outbox row and
-- say whether the effect is still to be made. False when the job is done
-- already: a worker presumed dead (its lease ran out, the job ran again)
-- woke up late. Call it in the effect's own transaction, and mark the job
-- done in that same transaction; the row lock orders two racing attempts,
-- and the later one sees the earlier one's done_at.
create or replace function cajex_private.take_outbox_effect(p_id bigint)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform from cajex.outbox o where o.id = p_id and o.done_at is null for update;
  return found;
end;
$$;
alter function cajex_private.take_outbox_effect(bigint) owner to cajex_definer;

-- The heartbeat job's effect: one audit event, and the job marked done in
-- the same transaction (so a retry after a crash writes it once).
create or replace function cajex_private.record_heartbeat(p_job_id bigint)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select cajex.current_member_role()) is distinct from 'system' then
    raise exception 'only a job records a heartbeat' using errcode = 'CXFBD';
  end if;
  -- A worker presumed dead may still be running this job after its retry
  -- finished: its effect must not land a second time.
  if not cajex_private.take_outbox_effect(p_job_id) then
    return;
  end if;
  perform cajex_private.write_audit('system.heartbeat', 'job', p_job_id::text, '{}'::jsonb);
  perform cajex_private.finish_outbox_job(p_job_id, null);
end;
$$;
