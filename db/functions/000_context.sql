-- The verified request context: who is acting, in which workspace.
--
-- Threat model: any role can set_config() any custom setting, so a policy that
-- trusted a plain setting would fall to one SQL injection. Here every way in
-- is checked once per transaction by a definer function, which seals what it
-- found into the transaction-local setting cajex.context:
--
--   v3|<workspace id>|<user id>|<session id>|<role>|<actor>|<slug>|<seal>
--
-- (empty fields for what the context lacks), where <seal> is the hex
-- HMAC-SHA256, under a key only the database holds (cajex_private.seal_key),
-- of the fields before it, the backend's process id and the transaction's
-- start time. Policies read the context through the view below, which checks
-- the seal on every statement: a setting written by anyone else, changed in
-- any field, carried into a later transaction of a pooled connection or read
-- off another backend opens nothing. The setting is transaction-local, so it
-- ends with its transaction anyway.
--
-- The ways in, each cajex_private.open_context or a sibling:
--   v2.<session id>.<session secret>
--       a signed-in browser: the secret is the one in its cookie; the
--       database keeps only its SHA-256
--   v1.u.<user id>.<session id>.<expiry>.<hex HMAC>
--       a user's session, in a token signed with the secret the web app and
--       workers share with the database (cajex_private.context_keys); a DBA's
--       `cajex db as-member` uses it
--   v1.s.<workspace id>.<actor label>.<expiry>.<hex HMAC>
--       a job acting for one workspace (export, seat sync, ...)
--   a SCIM bearer token (open_scim_context), and the claims of the JWT that
--   PostgREST verified (open_api_context, run by api.pre_request)
-- Credentials travel as bind parameters, never in the text of a statement,
-- which other backends of the same role can read in pg_stat_activity.
--
-- Opening writes nothing (but for sliding a session's idle window at most
-- once a minute), so read-only transactions open contexts as well. The
-- checks a context passed (live session, active member, active workspace,
-- its SSO and sign-in rules) hold from the opening to the end of the
-- transaction.

-- Earlier forms, with other arguments.
drop function if exists cajex_private.install_context(uuid, uuid, text, text);
drop function if exists cajex_private.install_context(uuid, bytea, uuid, text, text, boolean);

--------------------------------------------------------------------------------
-- The seal's key. Made once by the migration (db/lib/finish.sql); `cajex keys
-- rotate-seal` makes a new one (the owner's), after which contexts opened
-- before it open nothing (transactions in flight see no rows from then on).
create or replace function cajex_private.ensure_seal_key(p_rotate boolean default false)
returns void
language plpgsql
as $$
declare
  v_key bytea := extensions.gen_random_bytes(32) || decode(repeat('00', 32), 'hex');
  v_inner bytea := v_key;
  v_outer bytea := v_key;
begin
  if not p_rotate and exists (select from cajex_private.seal_key) then
    return;
  end if;
  for i in 0..63 loop
    v_inner := set_byte(v_inner, i, get_byte(v_key, i) # 54);
    v_outer := set_byte(v_outer, i, get_byte(v_key, i) # 92);
  end loop;
  insert into cajex_private.seal_key (only_row, inner_pad, outer_pad)
  values (true, v_inner, v_outer)
  on conflict (only_row) do update
    set inner_pad = excluded.inner_pad, outer_pad = excluded.outer_pad, created_at = now();
end;
$$;

--------------------------------------------------------------------------------
-- The seal of a context's fields, given the key's two pads: HMAC-SHA256 over
-- the fields, this backend's process id and this transaction's start, in hex.
-- A plain expression, so the planner inlines it where it is used; of no use
-- without the pads, which only cajex_definer reads.
create or replace function cajex_private.seal(p_fields text, p_inner_pad bytea, p_outer_pad bytea)
returns text
language sql
stable
parallel restricted
as $$
  select encode(sha256(p_outer_pad || sha256(p_inner_pad || convert_to(p_fields, 'UTF8')
                || int4send(pg_backend_pid()) || timestamptz_send(now()))), 'hex')
$$;

--------------------------------------------------------------------------------
-- Sealing: called by the openers below once they checked a credential, never
-- by a request. A null workspace leaves a user-only context (the user is
-- signed in, but not into the workspace asked for); no user and no workspace
-- clears the context.
create or replace function cajex_private.seal_context(
  p_workspace_id uuid,
  p_user_id uuid,
  p_session_id uuid,
  p_role text,
  p_actor text,
  p_slug text
)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_fields text;
begin
  if p_workspace_id is null and p_user_id is null then
    perform set_config('cajex.context', '', true);
    return;
  end if;
  v_fields := 'v3|' || coalesce(p_workspace_id::text, '') || '|' || coalesce(p_user_id::text, '')
    || '|' || coalesce(p_session_id::text, '') || '|' || coalesce(p_role, '') || '|' || p_actor
    || '|' || coalesce(p_slug, '');
  -- The separator cannot hide in a field (roles, actors and slugs are of
  -- narrow alphabets already; this keeps it so).
  if cardinality(string_to_array(v_fields, '|')) <> 7 then
    raise exception 'a context field holds the separator' using errcode = 'CXINV';
  end if;
  perform set_config('cajex.context',
                    v_fields || '|' || cajex_private.seal(v_fields, k.inner_pad, k.outer_pad), true)
  from cajex_private.seal_key k;
  if not found then
    raise exception 'the context''s seal key is missing' using errcode = 'CXNCX',
      hint = 'Run the migration (cajex db migrate), which makes it.';
  end if;
end;
$$;
alter function cajex_private.seal_context(uuid, uuid, uuid, text, text, text) owner to cajex_definer;

--------------------------------------------------------------------------------
-- The context of the running transaction: one row when cajex.context holds a
-- seal this backend made in this transaction, none otherwise. Policies read
-- it as `(select c.workspace_id from cajex_private.context c)`, which the
-- planner expands into the statement as an InitPlan: the check runs once per
-- statement, costs two SHA-256 of about 200 bytes and one read of a one-row
-- table, and calls no function that could be replaced.
--
-- Every statement that reads a workspace-owned table sets this plan up, so it
-- is kept to one scan with one filter: no joins, no subquery nodes. (The
-- setting is read where it is used; reading it is a lookup in memory.) The
-- whole setting must equal its fields, '|' and their seal, so nothing outside
-- the seal can be changed either.
--
-- Owned by cajex_definer and not security_invoker: it reads the key, which
-- the request roles cannot. security_barrier keeps a caller's own predicates
-- from running before the check, so the cast of a field runs only on a row
-- whose seal matched, and no setting, however malformed, raises an error here.
create or replace view cajex_private.context
with (security_barrier = true)
as
  select nullif(split_part(s.v, '|', 2), '')::uuid as workspace_id,
         nullif(split_part(s.v, '|', 3), '')::uuid as user_id,
         nullif(split_part(s.v, '|', 4), '')::uuid as session_id,
         nullif(split_part(s.v, '|', 5), '') as member_role,
         split_part(s.v, '|', 6) as actor,
         nullif(split_part(s.v, '|', 7), '') as workspace_slug
  from (select current_setting('cajex.context', true) as v) s
  cross join cajex_private.seal_key k
  where left(s.v, 3) = 'v3|'
    and s.v = left(s.v, -65) || '|' || cajex_private.seal(left(s.v, -65), k.inner_pad, k.outer_pad);
alter view cajex_private.context owner to cajex_definer;

--------------------------------------------------------------------------------
-- Whether a live session may open a workspace its user is an active member
-- of: an SSO-enforcing workspace opens only for a session its own IdP vouched
-- for, and a workspace that chose its standard sign-in methods only for a
-- session made by one of them (sessions of other kinds, such as SSO, are
-- governed by the first rule). `p_methods` is the workspace's choice, null
-- when it made none. Every opener applies it; a plain expression, so the
-- planner inlines it.
create or replace function cajex_private.session_may_open(
  p_auth_method text,
  p_sso_workspace_id uuid,
  p_workspace_id uuid,
  p_sso_enforced boolean,
  p_methods text[]
)
returns boolean
language sql
immutable
as $$
  select (not p_sso_enforced or p_sso_workspace_id = p_workspace_id)
     and (p_auth_method not in ('google', 'apple', 'github', 'magic_link')
          or p_methods is null or p_auth_method = any (p_methods))
$$;

--------------------------------------------------------------------------------
-- A signed-in browser's opening: its credential, cajex.credential =
-- 'v2.<session id>.<session secret>' (the secret is the cookie's; the
-- database keeps only its SHA-256), and the workspace it asks for,
-- cajex.workspace (a slug; empty for none), both set in the opening
-- statement itself (cajex.db.in_context). One row when the session is live:
-- the workspace when the user may open it (else nulls), the sealed context to
-- set, and whether the session was last seen over a minute ago (the request
-- then slides its idle window: cajex_private.touch_context_session); none
-- otherwise. Anyone may set the settings; nobody can
-- produce another session's secret, so the view only ever answers for the
-- caller's own session.
--
-- A view, not a function: its plan is the opening statement's, prepared once
-- per connection, where a function would set up its expressions again in
-- every transaction. The plan is set up in every transaction all the same,
-- so it is kept small: the session is found by the secret's hash (unique)
-- and its id compared as text, which needs no parsing and cannot fail.
-- Owned by cajex_definer and not security_invoker: it reads sessions,
-- memberships and the seal's key.
drop view if exists cajex_private.browser_opening;
create view cajex_private.browser_opening
with (security_barrier = true)
as
  select w.workspace_id, w.workspace_slug, w.member_role, s.user_id,
         s.last_seen_at < now() - interval '1 minute' as stale,
         f.fields || '|' || cajex_private.seal(f.fields, sk.inner_pad, sk.outer_pad) as sealed
  from cajex.sessions s
  cross join cajex_private.seal_key sk
  left join lateral (
    select w.id as workspace_id, w.slug as workspace_slug, m.role as member_role
    from cajex.workspaces w
    join cajex.memberships m
      on m.workspace_id = w.id and m.user_id = s.user_id and m.status = 'active'
    left join cajex.workspace_signin_methods sm on sm.workspace_id = w.id
    where w.slug = current_setting('cajex.workspace', true)
      and w.status = 'active'
      and cajex_private.session_may_open(s.auth_method, s.sso_workspace_id, w.id, w.sso_enforced,
                                         sm.methods)
  ) w on true
  cross join lateral (
    select 'v3|' || coalesce(w.workspace_id::text, '') || '|' || s.user_id || '|' || s.id
           || '|' || coalesce(w.member_role, '') || '|user|' || coalesce(w.workspace_slug, '') as fields
  ) f
  where s.token_hash = sha256(convert_to(split_part(current_setting('cajex.credential', true), '.', 3), 'UTF8'))
    and split_part(current_setting('cajex.credential', true), '.', 1) = 'v2'
    and s.id::text = split_part(current_setting('cajex.credential', true), '.', 2)
    and split_part(current_setting('cajex.credential', true), '.', 4) = ''
    and s.revoked_at is null
    and s.idle_expires_at > now()
    and s.absolute_expires_at > now();
alter view cajex_private.browser_opening owner to cajex_definer;

--------------------------------------------------------------------------------
-- Readers, for use inside functions. Policies read the view directly:
-- `(select c.workspace_id from cajex_private.context c)` is expanded into the
-- statement's plan, where a function call would cost a call and a plan check
-- per statement. PL/pgSQL, because it keeps the lookup's plan for the session
-- (a scalar SQL function with a FROM clause is planned on every call). Each
-- runs as its owner with a search_path of its own: requests call them as
-- cajex_app and the definer functions as their owners, and a kept plan that
-- reads the context (whose key table has row security) is planned again
-- whenever the role, or the search_path, differs from the last call's.

create or replace function cajex.current_workspace_id()
returns uuid
language plpgsql
stable
parallel safe
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select c.workspace_id from cajex_private.context c);
end;
$$;
comment on function cajex.current_workspace_id() is
  'The workspace of the verified context of this transaction, or null.';

-- The refusal of a transaction sent whole, in one round trip
-- (cajex.db.commit_with): its opening calls this when the context did not
-- open the workspace the request had resolved, so that the statements after
-- it never run. (The workspace was resolved from its slug earlier in the
-- request; a session signed out or a member removed meanwhile, or a slug
-- that changed hands, opens nothing.)
drop function if exists cajex_private.expect_context(uuid);
create or replace function cajex_private.refuse_context()
returns void
language plpgsql
as $$
begin
  raise exception 'this request''s workspace is not open for its credential'
    using errcode = 'CXNCX', hint = 'Sign in again and reopen the workspace.';
end;
$$;

create or replace function cajex.current_user_id()
returns uuid
language plpgsql
stable
parallel safe
security definer
set search_path = pg_catalog, pg_temp
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
security definer
set search_path = pg_catalog, pg_temp
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
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select c.actor from cajex_private.context c);
end;
$$;
comment on function cajex.current_actor() is
  'Who acts, for the audit log: ''user'', ''api'', ''job:<label>'' or ''scim:<token id>''.';

--------------------------------------------------------------------------------
-- Openers. Definer functions owned by cajex_definer (BYPASSRLS): they read
-- sessions and memberships before any context exists.

-- A user's session that a signed token or PostgREST's claims vouched for,
-- checked for a workspace (by slug, or by id) and sealed; never called by a
-- request. The session must be live and the user's; the workspace, when
-- named, active, the user an active member, and the session may open it
-- (cajex_private.session_may_open). (A disabled user's sessions are revoked
-- when they are disabled: cajex_private.revoke_sessions_of_disabled_user.)
-- A live session with a workspace it may not open seals a user-only context;
-- a dead one clears the context. A browser's opening is the view above.
create or replace function cajex_private.install_context(
  p_session_id uuid,
  p_user_id uuid,
  p_workspace text,
  p_actor text,
  p_touch boolean,
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
  v_ref_id uuid;
  v_touch boolean;
begin
  -- A workspace is named by slug or by id; by slug, it is found through its
  -- unique index in an InitPlan, so that one plan serves both.
  if p_workspace ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    v_ref_id := p_workspace::uuid;
  end if;
  select s.user_id, s.last_seen_at < now() - interval '1 minute', w.id, w.slug, w.role
    into user_id, v_touch, workspace_id, workspace_slug, member_role
  from cajex.sessions s
  left join lateral (
    select w.id, w.slug, m.role
    from cajex.workspaces w
    join cajex.memberships m
      on m.workspace_id = w.id and m.user_id = s.user_id and m.status = 'active'
    left join cajex.workspace_signin_methods sm on sm.workspace_id = w.id
    where w.id = coalesce(v_ref_id, (select w2.id from cajex.workspaces w2 where w2.slug = p_workspace))
      and w.status = 'active'
      and cajex_private.session_may_open(s.auth_method, s.sso_workspace_id, w.id, w.sso_enforced,
                                         sm.methods)
  ) w on p_workspace is not null
  where s.id = p_session_id
    and s.user_id = p_user_id
    and s.revoked_at is null
    and s.idle_expires_at > now()
    and s.absolute_expires_at > now();
  if user_id is null then
    perform set_config('cajex.context', '', true);
    return;
  end if;

  -- Slide the idle window, at most once a minute, so that reads stay reads.
  if p_touch and v_touch then
    update cajex.sessions s
    set last_seen_at = now(),
        idle_expires_at = least(now() + (s.idle_expires_at - s.last_seen_at), s.absolute_expires_at)
    where s.id = p_session_id;
  end if;

  perform cajex_private.seal_context(workspace_id, user_id, p_session_id, member_role, p_actor,
                                     workspace_slug);
end;
$$;
alter function cajex_private.install_context(uuid, uuid, text, text, boolean)
  owner to cajex_definer;

-- The opener requests call: a browser's credential or a signed token, and the
-- workspace (slug or id) to open. Returns one row: all null, and no context,
-- for a bad credential or a dead session; a null workspace when the user may
-- not open the one named. Any defect opens nothing and raises nothing.
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
  v_sealed text;
  c_uuid constant text := '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
begin
  if p_token is null then
    perform set_config('cajex.context', '', true);
    return;
  end if;
  perform set_config('cajex.context', '', true);
  -- A signed-in browser, as cajex.db.in_context opens it.
  if left(p_token, 3) = 'v2.' then
    perform set_config('cajex.credential', p_token, true),
            set_config('cajex.workspace', coalesce(p_workspace, ''), true);
    select o.workspace_id, o.workspace_slug, o.member_role, o.user_id, o.sealed
      into workspace_id, workspace_slug, member_role, user_id, v_sealed
    from cajex_private.browser_opening o;
    perform set_config('cajex.credential', '', true),
            set_config('cajex.context', coalesce(v_sealed, ''), true);
    return;
  end if;

  -- A signed token.
  v_parts := string_to_array(p_token, '.');
  if octet_length(p_token) > 300 or cardinality(v_parts) <> 6 or v_parts[1] <> 'v1'
     or v_parts[5] !~ '^[0-9]{1,11}$' then
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
    from cajex_private.install_context(v_parts[4]::uuid, v_parts[3]::uuid, p_workspace, 'user', true);
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
    perform cajex_private.seal_context(workspace_id, null, null, 'system', 'job:' || v_label,
                                       workspace_slug);
  end if;
end;
$$;
alter function cajex_private.open_context(text, text) owner to cajex_definer;
comment on function cajex_private.open_context(text, text) is
  'Check a browser''s session credential or a signed context token and seal the context '
  'of this transaction. Returns one row: all null (and no context) for a bad credential '
  'or a dead session; a null workspace when the user may not open the one named.';

-- The claims of the JWT PostgREST verified for this request, when this is a
-- session of its login (cajex_authenticator) acting as cajex_api: the user,
-- the session and the workspace, as ids. Anything else (another login, the
-- anonymous role, a claim missing or malformed) gives a row of nulls.
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

-- PostgREST: called by api.pre_request() as cajex_api at the start of every
-- request, after PostgREST set the role and the verified claims. The claims
-- count only in a session of cajex_authenticator, whose clients run no SQL of
-- their own: the session must be live and the user's, and the claimed
-- workspace open to them, as for a browser (actor 'api'). In a transaction
-- that may write (POST, PATCH, DELETE) it also slides the session's idle
-- window, at most once a minute; GET and HEAD run READ ONLY and leave the
-- session as it is (their JWT lives five minutes, minted from a browser
-- session that slides).
create or replace function cajex_private.open_api_context()
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_claims record;
begin
  select * into v_claims from cajex_private.api_claims();
  if v_claims.session_id is null then
    perform set_config('cajex.context', '', true);
    return;
  end if;
  perform cajex_private.install_context(v_claims.session_id, v_claims.user_id,
                                        v_claims.workspace_id::text, 'api',
                                        current_setting('transaction_read_only') = 'off');
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
security definer
set search_path = pg_catalog, pg_temp
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
  perform cajex_private.check_permission(v_workspace, v_allowed, p_permission);
end;
$$;

-- The refusals of require_permission, for a function that read the context
-- and the permission in a statement of its own (the AI budget's, which reads
-- everything it decides on at once): no workspace open, CXNCX; the role may
-- not, CXFBD.
create or replace function cajex_private.check_permission(
  p_workspace_id uuid,
  p_allowed boolean,
  p_permission text
)
returns void
language plpgsql
as $$
begin
  if p_workspace_id is null then
    raise exception 'no workspace is open for this request'
      using errcode = 'CXNCX', hint = 'Open a workspace context before calling this function.';
  end if;
  if not coalesce(p_allowed, false) then
    raise exception 'your role may not %', p_permission
      using errcode = 'CXFBD', detail = p_permission,
        hint = 'Ask an owner or admin of this workspace.';
  end if;
end;
$$;
