-- The verified request context: who is acting, in which workspace.
--
-- Threat model: any role can set_config() any custom setting, so a policy that
-- trusted a plain setting would fall to one SQL injection. Instead the web
-- app and workers sign a short-lived token with a secret that cajex_app
-- cannot read (cajex_private.context_keys), and open_context() verifies it,
-- the session behind it and the membership, once per transaction, and
-- records the result in cajex_private.active_contexts, a table only the
-- definer role writes. Policies read that row through the inlinable helpers
-- below, wrapped in a sub-select so the lookup runs once per statement as an
-- InitPlan.
--
-- Token layout (all parts ASCII, joined by '.'), signed with HMAC-SHA256 over
-- the first five parts:
--   v1.u.<user id>.<session id>.<expiry, unix seconds>.<hex signature>
--       a signed-in user; the workspace is named when the context is opened
--   v1.s.<workspace id>.<actor label>.<expiry>.<hex signature>
--       a job acting for one workspace (export, seat sync, ...)
-- PostgREST requests carry no such token: PostgREST verified their JWT, and
-- the view below checks its claims (request.jwt.claims) against the session
-- and the membership, with no write, since PostgREST runs GET and HEAD in
-- READ ONLY transactions.

--------------------------------------------------------------------------------
-- The context of the running statement, verified where it is read.
--
-- (a) A signed-in user's request sets two transaction-local settings: its
--     session credential, cajex.context = 'v2.<session id>.<session secret>'
--     (the secret is the browser's cookie; the database keeps only its
--     SHA-256), and the slug of the workspace it asks for, cajex.workspace.
--     This view checks both inline, with no function call and no write: the
--     planner expands it into each policy's sub-select, so the check runs
--     once per statement as an InitPlan and costs three index lookups and one
--     hash. A wrong or stale credential, a revoked or expired session, a
--     member who left and a deleted workspace all yield no workspace. Anyone
--     may set the settings; nobody can produce another session's secret.
-- (b) Jobs, SCIM, and callers of open_context with a signed token, have
--     their context recorded for the transaction by a definer function in
--     cajex_private.active_contexts.
-- (c) A PostgREST request: the claims of the JWT PostgREST verified, read
--     from request.jwt.claims (cajex_private.api_claims) and checked here
--     like (a), minus the secret: the session must belong to the claimed
--     user, and the workspace is named by id. Claims count only in a
--     session of cajex_authenticator, the login PostgREST uses, whose
--     clients run no SQL of their own; any other session gets nothing from
--     them.
-- (b) and (c) are used only when (a) is not, and (c) only in the
-- authenticator's sessions, (b) never there, so the view has at most one row.
--
-- Owned by cajex_definer and not security_invoker: it must read sessions
-- and memberships, which the request roles cannot. It only ever returns the
-- caller's own context (security_barrier keeps a caller's own predicates
-- from running before its checks).
-- The claims of the JWT PostgREST verified for this request, when this is a
-- session of its login (cajex_authenticator) acting as cajex_api: the user,
-- the session and the workspace, as ids. Anything else (another login, the
-- anonymous role, a claim missing or malformed) gives a row of nulls. Read
-- by the context view below; it checks them against the database.
create or replace function cajex_private.api_claims(
  out user_id uuid,
  out session_id uuid,
  out workspace_id uuid
)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_claims jsonb;
  c_uuid constant text := '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
begin
  if session_user::text <> 'cajex_authenticator' then
    return;
  end if;
  begin
    v_claims := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
  exception when others then
    return;
  end;
  if v_claims is null or jsonb_typeof(v_claims) <> 'object'
     or coalesce(v_claims ->> 'role', '') <> 'cajex_api'
     or coalesce(v_claims ->> 'sub', '') !~ c_uuid
     or coalesce(v_claims ->> 'sid', '') !~ c_uuid
     or coalesce(v_claims ->> 'workspace_id', '') !~ c_uuid then
    return;
  end if;
  user_id := (v_claims ->> 'sub')::uuid;
  session_id := (v_claims ->> 'sid')::uuid;
  workspace_id := (v_claims ->> 'workspace_id')::uuid;
end;
$$;

create or replace view cajex_private.context
with (security_barrier = true)
as
  select w.workspace_id, s.user_id, s.id as session_id, w.member_role,
         'user'::text as actor, w.workspace_slug
  -- The credential is parsed and hashed once per statement: OFFSET 0 keeps
  -- this one-row subquery from being flattened into the joins below, where
  -- the parsing and the hash would run once per candidate row.
  from (select case when t.p[2] ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                    then t.p[2]::uuid end as session_id,
               sha256(convert_to(t.p[3], 'UTF8')) as token_hash,
               current_setting('cajex.workspace', true) as workspace_slug
        from (select string_to_array(current_setting('cajex.context', true), '.') as p) t
        where cardinality(t.p) = 3 and t.p[1] = 'v2'
        offset 0) k
  join cajex.sessions s
    on s.id = k.session_id
   and s.token_hash = k.token_hash
   and s.revoked_at is null
   and s.idle_expires_at > now()
   and s.absolute_expires_at > now()
  left join lateral (
    select w.id as workspace_id, w.slug as workspace_slug, m.role as member_role
    from cajex.workspaces w
    join cajex.memberships m
      on m.workspace_id = w.id and m.user_id = s.user_id and m.status = 'active'
    where w.slug = k.workspace_slug
      and w.status = 'active'
      -- An SSO-enforcing workspace opens only for a session its IdP vouched for.
      and (not w.sso_enforced or s.sso_workspace_id = w.id)
      -- A workspace that chose its standard sign-in methods opens only for
      -- a session made by one of them (one primary-key probe; sessions of
      -- other kinds, such as SSO, are governed by the line above).
      and (s.auth_method not in ('google', 'apple', 'github', 'magic_link')
           or not exists (select from cajex.workspace_signin_methods sm
                          where sm.workspace_id = w.id and s.auth_method <> all (sm.methods)))
  ) w on true
  union all
  select c.workspace_id, c.user_id, c.session_id, c.member_role, c.actor, null
  from cajex_private.active_contexts c
  where c.backend_pid = pg_backend_pid()
    and c.opened_at = now()
    and coalesce(current_setting('cajex.context', true), '') = ''
    and session_user <> 'cajex_authenticator'
  union all
  select w.workspace_id, s.user_id, s.id, w.member_role, 'api'::text, w.workspace_slug
  -- The gate is a constant of the statement: other sessions never parse claims.
  from (select a.user_id, a.session_id, a.workspace_id
        from cajex_private.api_claims() a
        where session_user = 'cajex_authenticator'
          and coalesce(current_setting('cajex.context', true), '') = ''
        offset 0) k
  join cajex.sessions s
    on s.id = k.session_id
   and s.user_id = k.user_id
   and s.revoked_at is null
   and s.idle_expires_at > now()
   and s.absolute_expires_at > now()
  left join lateral (
    select w.id as workspace_id, w.slug as workspace_slug, m.role as member_role
    from cajex.workspaces w
    join cajex.memberships m
      on m.workspace_id = w.id and m.user_id = s.user_id and m.status = 'active'
    where w.id = k.workspace_id
      and w.status = 'active'
      and (not w.sso_enforced or s.sso_workspace_id = w.id)
      and (s.auth_method not in ('google', 'apple', 'github', 'magic_link')
           or not exists (select from cajex.workspace_signin_methods sm
                          where sm.workspace_id = w.id and s.auth_method <> all (sm.methods)))
  ) w on true;
alter view cajex_private.context owner to cajex_definer;

--------------------------------------------------------------------------------
-- Readers, for use inside functions. Policies read the view directly:
-- `(select c.workspace_id from cajex_private.context c)` is expanded into the
-- statement's plan, where a function call would cost a call and a plan check
-- per statement. PL/pgSQL, because it keeps the lookup's plan for the session
-- (a scalar SQL function with a FROM clause is planned on every call).

create or replace function cajex.current_workspace_id()
returns uuid
language plpgsql
stable
parallel safe
as $$
begin
  return (select c.workspace_id from cajex_private.context c);
end;
$$;
comment on function cajex.current_workspace_id() is
  'The workspace of the verified context of this transaction, or null.';

-- The check of a transaction sent whole, in one message (cajex.db.commit_with):
-- the context's row, as the check of cajex.db.in_context reads it, when the
-- context opens the workspace the request resolved; otherwise an error, so
-- that the statements after it in the message never run. (The workspace was
-- resolved from its slug earlier in the request; a session signed out or a
-- member removed meanwhile, or a slug that changed hands, opens nothing.)
create or replace function cajex_private.expect_context(p_workspace_id uuid)
returns table (workspace_id uuid, workspace_slug text, role text, user_id uuid, permissions text[])
language plpgsql
stable
as $$
begin
  return query
    select c.workspace_id, c.workspace_slug, c.member_role, c.user_id,
           array(select rp.permission from cajex.role_permissions rp where rp.role = c.member_role)
    from cajex_private.context c
    where c.workspace_id = p_workspace_id;
  if not found then
    raise exception 'this request''s workspace is not open for its credential'
      using errcode = 'CXNCX', hint = 'Sign in again and reopen the workspace.';
  end if;
end;
$$;

create or replace function cajex.current_user_id()
returns uuid
language plpgsql
stable
parallel safe
as $$
begin
  return (select c.user_id from cajex_private.context c);
end;
$$;
comment on function cajex.current_user_id() is
  'The user of the verified context of this transaction, or null (also for jobs).';

create or replace function cajex.current_member_role()
returns text
language plpgsql
stable
parallel safe
as $$
begin
  return (select c.member_role from cajex_private.context c);
end;
$$;
comment on function cajex.current_member_role() is
  'The role of the acting member in the context''s workspace (''system'' for jobs), or null.';

create or replace function cajex.current_actor()
returns text
language plpgsql
stable
parallel safe
as $$
begin
  return (select c.actor from cajex_private.context c);
end;
$$;
comment on function cajex.current_actor() is
  'Who acts, for the audit log: ''user'', ''api'', ''job:<label>'' or ''scim:<token id>''.';

--------------------------------------------------------------------------------
-- Writers. Definer functions owned by cajex_definer (BYPASSRLS): they must
-- read sessions and memberships before any context exists.

create or replace function cajex_private.install_context(
  p_user_id uuid,
  p_session_id uuid,
  p_workspace text,
  p_actor text,
  out workspace_id uuid,
  out workspace_slug text,
  out member_role text,
  out user_id uuid
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_live boolean;
  v_touch boolean;
  v_ref_id uuid;
begin
  -- A workspace is named by slug or id. (Decided here, not in the query: SQL
  -- does not promise to skip a failing cast, and two plain lookups each use
  -- their index where one OR would not.)
  if p_workspace ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    v_ref_id := p_workspace::uuid;
  end if;

  -- One statement: the session must be live and its user enabled; the
  -- workspace, when named, must be active, the user an active member, and an
  -- SSO-enforcing workspace opens only for a session its own IdP vouched for.
  select true,
         s.last_seen_at < now() - interval '1 minute',
         w.id, w.slug, w.role
    into v_live, v_touch, workspace_id, workspace_slug, member_role
  from cajex.sessions s
  join cajex.users u on u.id = s.user_id and u.disabled_at is null
  left join lateral (
    select w.id, w.slug, m.role
    from cajex.workspaces w
    join cajex.memberships m on m.workspace_id = w.id and m.user_id = s.user_id
    where (case when v_ref_id is null then w.slug = p_workspace else w.id = v_ref_id end)
      and w.status = 'active'
      and m.status = 'active'
      and (not w.sso_enforced or s.sso_workspace_id = w.id)
      -- The workspace's chosen standard sign-in methods (as in the view).
      and (s.auth_method not in ('google', 'apple', 'github', 'magic_link')
           or not exists (select from cajex.workspace_signin_methods sm
                          where sm.workspace_id = w.id and s.auth_method <> all (sm.methods)))
  ) w on p_workspace is not null
  where s.id = p_session_id
    and s.user_id = p_user_id
    and s.revoked_at is null
    and s.idle_expires_at > now()
    and s.absolute_expires_at > now();
  if v_live is null then
    -- No context at all; a workspace the user may not open only leaves the
    -- workspace empty (not a member, not active, not there all look alike).
    workspace_id := null;
    workspace_slug := null;
    member_role := null;
    return;
  end if;

  -- Slide the idle window, at most once a minute so that reads stay reads.
  if v_touch then
    update cajex.sessions s
    set last_seen_at = now(),
        idle_expires_at = least(now() + (s.idle_expires_at - s.last_seen_at), s.absolute_expires_at)
    where s.id = p_session_id;
  end if;

  -- Each backend owns one row, updated in place (a HOT update: no index
  -- change, pruned on the page) and inserted once per backend.
  update cajex_private.active_contexts c
  set opened_at = now(), user_id = p_user_id, session_id = p_session_id,
      workspace_id = install_context.workspace_id, member_role = install_context.member_role,
      actor = p_actor
  where c.backend_pid = pg_backend_pid();
  if not found then
    insert into cajex_private.active_contexts
      (backend_pid, opened_at, user_id, session_id, workspace_id, member_role, actor)
    values (pg_backend_pid(), now(), p_user_id, p_session_id, install_context.workspace_id,
            install_context.member_role, p_actor)
    on conflict (backend_pid) do update
      set opened_at = excluded.opened_at, user_id = excluded.user_id,
          session_id = excluded.session_id, workspace_id = excluded.workspace_id,
          member_role = excluded.member_role, actor = excluded.actor;
  end if;
  user_id := p_user_id;
end;
$$;
alter function cajex_private.install_context(uuid, uuid, text, text) owner to cajex_definer;

create or replace function cajex_private.open_context(
  p_token text,
  p_workspace text default null,
  out workspace_id uuid,
  out workspace_slug text,
  out member_role text,
  out user_id uuid
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_parts text[];
  v_secret bytea;
  v_label text;
  c_uuid constant text := '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
begin
  -- Any defect means no context: a row of nulls, no writes, no error to leak.
  if p_token is null or octet_length(p_token) > 300 then
    return;
  end if;
  v_parts := string_to_array(p_token, '.');
  if cardinality(v_parts) <> 6 or v_parts[1] <> 'v1' or v_parts[5] !~ '^[0-9]{1,11}$' then
    return;
  end if;
  if v_parts[5]::bigint <= extract(epoch from now()) then
    return;
  end if;
  select k.secret into v_secret from cajex_private.context_keys k where k.key_id = 'k1';
  if v_secret is null
     or encode(extensions.hmac(convert_to(array_to_string(v_parts[1:5], '.'), 'UTF8'), v_secret, 'sha256'), 'hex')
        <> v_parts[6] then
    return;
  end if;

  if v_parts[2] = 'u' then
    if v_parts[3] !~ c_uuid or v_parts[4] !~ c_uuid then
      return;
    end if;
    select * into workspace_id, workspace_slug, member_role, user_id
    from cajex_private.install_context(v_parts[3]::uuid, v_parts[4]::uuid, p_workspace, 'user');
  elsif v_parts[2] = 's' then
    v_label := v_parts[4];
    if v_parts[3] !~ c_uuid or v_label !~ '^[a-z0-9_:-]{1,64}$' then
      return;
    end if;
    select w.id, w.slug into workspace_id, workspace_slug
    from cajex.workspaces w
    where w.id = v_parts[3]::uuid and w.status = 'active';
    if workspace_id is null
       or (p_workspace is not null and p_workspace not in (workspace_slug, workspace_id::text)) then
      workspace_id := null;
      workspace_slug := null;
      return;
    end if;
    member_role := 'system';
    insert into cajex_private.active_contexts as c
      (backend_pid, opened_at, user_id, session_id, workspace_id, member_role, actor)
    values (pg_backend_pid(), now(), null, null, open_context.workspace_id, 'system', 'job:' || v_label)
    on conflict (backend_pid) do update
      set opened_at = excluded.opened_at,
          user_id = null,
          session_id = null,
          workspace_id = excluded.workspace_id,
          member_role = 'system',
          actor = excluded.actor;
  end if;
end;
$$;
alter function cajex_private.open_context(text, text) owner to cajex_definer;
comment on function cajex_private.open_context(text, text) is
  'Verify a signed context token and open the context for this transaction. Returns '
  'one row: all null (and no context) for a bad token or a dead session; a null '
  'workspace when the user may not open the one named.';

-- PostgREST: called by api.pre_request() as cajex_api at the start of every
-- request. The context needs nothing from it (the view checks the claims
-- itself); in a transaction that may write (POST, PATCH, DELETE) it slides
-- the session's idle window, as a browser request does, at most once a
-- minute. GET and HEAD run READ ONLY and leave the session as it is: their
-- JWT lives five minutes, and is minted from a browser session that slides.
create or replace function cajex_private.open_api_context()
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_claims record;
begin
  if current_setting('transaction_read_only') = 'on' then
    return;
  end if;
  select * into v_claims from cajex_private.api_claims();
  if v_claims.session_id is null then
    return;
  end if;
  update cajex.sessions s
  set last_seen_at = now(),
      idle_expires_at = least(now() + (s.idle_expires_at - s.last_seen_at), s.absolute_expires_at)
  where s.id = v_claims.session_id
    and s.user_id = v_claims.user_id
    and s.revoked_at is null
    and s.idle_expires_at > now()
    and s.absolute_expires_at > now()
    and s.last_seen_at < now() - interval '1 minute';
end;
$$;
alter function cajex_private.open_api_context() owner to cajex_definer;

--------------------------------------------------------------------------------
-- Permissions: the role matrix, written once. docs/permissions.md is
-- generated from this table and a test checks it is current.

-- PL/pgSQL, like the readers above: policies call it once per statement,
-- and as a SQL function (not inlined: its body has a FROM clause under
-- EXISTS) it was planned on every call, context view and all, which cost
-- most of a millisecond each time.
create or replace function cajex.has_permission(p_permission text)
returns boolean
language plpgsql
stable
parallel safe
as $$
begin
  return exists (
    select from cajex_private.context c
    join cajex.role_permissions rp on rp.role = c.member_role
    where rp.permission = p_permission
  );
end;
$$;

-- The signed-in user of the context, for functions that act on the
-- caller's own account (sessions, sign-in methods, onboarding); raises
-- CXNCX when there is none.
create or replace function cajex_private.require_user()
returns uuid
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := (select c.user_id from cajex_private.context c);
begin
  if v_user is null then
    raise exception 'sign in first' using errcode = 'CXNCX',
      hint = 'Open the signed-in user''s context before calling this function.';
  end if;
  return v_user;
end;
$$;

create or replace function cajex_private.require_permission(p_permission text)
returns void
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_workspace uuid;
  v_allowed boolean;
begin
  -- One read of the context for both checks.
  select c.workspace_id,
         exists (select from cajex.role_permissions rp
                 where rp.role = c.member_role and rp.permission = p_permission)
    into v_workspace, v_allowed
  from cajex_private.context c;
  if v_workspace is null then
    raise exception 'no workspace is open for this request'
      using errcode = 'CXNCX', hint = 'Open a workspace context before calling this function.';
  end if;
  if not v_allowed then
    raise exception 'your role may not %', p_permission
      using errcode = 'CXFBD', detail = p_permission,
        hint = 'Ask an owner or admin of this workspace.';
  end if;
end;
$$;
