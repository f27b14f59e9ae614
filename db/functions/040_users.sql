-- Users and sessions: the definer functions that sign-in needs before any
-- context exists. Each does one narrow thing; none returns another user's
-- data.

-- Without a SET clause, and with qualified names instead, so that the
-- planner inlines it into its caller's statement (a SQL function with a SET
-- clause is planned again on every call).
create or replace function cajex_private.normalise_email(p_email text)
returns text
language sql
immutable
parallel safe
as $$
  select pg_catalog.lower(pg_catalog.btrim(p_email));
$$;

-- Find or create the user with this (already verified) address.
create or replace function cajex_private.ensure_user(p_email text, p_display_name text default null)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_email text := cajex_private.normalise_email(p_email);
  v_id uuid;
begin
  if v_email is null or char_length(v_email) > 320 or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then
    raise exception 'that is not an email address' using errcode = 'CXINV', detail = 'email';
  end if;
  insert into cajex.users (email, display_name)
  values (v_email, nullif(left(btrim(p_display_name), 200), ''))
  on conflict (email) do nothing
  returning id into v_id;
  if v_id is null then
    select u.id into v_id from cajex.users u where u.email = v_email;
  end if;
  return v_id;
end;
$$;
alter function cajex_private.ensure_user(text, text) owner to cajex_definer;

-- Open a server-side session. The caller keeps the secret and gives only its
-- hash; p_idle and p_absolute bound its life.
create or replace function cajex_private.create_session(
  p_user_id uuid,
  p_token_hash bytea,
  p_auth_method text,
  p_idle interval default interval '8 hours',
  p_absolute interval default interval '30 days',
  p_user_agent text default null,
  p_sso_workspace_id uuid default null,
  p_sso_connection_id uuid default null,
  p_idp_session_id text default null,
  p_idp_subject text default null
)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id uuid;
begin
  if not exists (select from cajex.users u where u.id = p_user_id and u.disabled_at is null) then
    raise exception 'user not found' using errcode = 'CXNFD', detail = 'user';
  end if;
  insert into cajex.sessions (user_id, token_hash, auth_method, idle_expires_at, absolute_expires_at,
                              user_agent, sso_workspace_id, sso_connection_id, idp_session_id, idp_subject)
  values (p_user_id, p_token_hash, p_auth_method, now() + least(p_idle, p_absolute), now() + p_absolute,
          left(p_user_agent, 512), p_sso_workspace_id, p_sso_connection_id, p_idp_session_id, p_idp_subject)
  returning id into v_id;
  return v_id;
end;
$$;
alter function cajex_private.create_session(uuid, bytea, text, interval, interval, text, uuid, uuid, text, text)
  owner to cajex_definer;

-- Resolve a session cookie (its hash) to a live session.
create or replace function cajex_private.resolve_session(p_token_hash bytea)
returns table (session_id uuid, user_id uuid)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select s.id, s.user_id
    from cajex.sessions s
    join cajex.users u on u.id = s.user_id
    where s.token_hash = p_token_hash
      and s.revoked_at is null
      and s.idle_expires_at > now()
      and s.absolute_expires_at > now()
      and u.disabled_at is null;
end;
$$;
alter function cajex_private.resolve_session(bytea) owner to cajex_definer;

-- The one function that ends sessions: sign out, sign out everywhere, single
-- logout, SCIM deprovisioning and removal by an admin all come here. The
-- next request of a revoked session opens no context, in every process.
create or replace function cajex_private.revoke_sessions(
  p_user_id uuid,
  p_reason text,
  p_session_id uuid default null,
  p_sso_workspace_id uuid default null,
  p_idp_session_id text default null
)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_count integer;
begin
  update cajex.sessions s
  set revoked_at = now(), revoked_reason = left(p_reason, 100)
  where s.revoked_at is null
    and (p_user_id is null or s.user_id = p_user_id)
    and (p_session_id is null or s.id = p_session_id)
    and (p_sso_workspace_id is null or s.sso_workspace_id = p_sso_workspace_id)
    and (p_idp_session_id is null or s.idp_session_id = p_idp_session_id)
    -- Never everything: some selector must be given.
    and (p_user_id is not null or p_session_id is not null or p_idp_session_id is not null);
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
alter function cajex_private.revoke_sessions(uuid, text, uuid, uuid, text) owner to cajex_definer;

-- Disabling a user ends their sessions at once (the context check reads the
-- session only, so this is what keeps a disabled user out).
create or replace function cajex_private.revoke_sessions_of_disabled_user()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.disabled_at is not null and old.disabled_at is null then
    perform cajex_private.revoke_sessions(new.id, 'user_disabled');
  end if;
  return new;
end;
$$;
alter function cajex_private.revoke_sessions_of_disabled_user() owner to cajex_definer;

drop trigger if exists users_disable_revokes_sessions on cajex.users;
create trigger users_disable_revokes_sessions
  after update of disabled_at on cajex.users
  for each row execute function cajex_private.revoke_sessions_of_disabled_user();
