-- Sign-in flows: magic links, provider identities, rate limits, email
-- deliveries and the workspace's allowed methods. The functions that run
-- before any context exists are handed to cajex_definer and scope every
-- statement themselves (by token hash, by (issuer, subject) or by user id).

--------------------------------------------------------------------------------
-- Rate limits: count this hit and say whether the bucket is over its limit.
-- Hits of a refused request are counted too, so hammering keeps it closed.
create or replace function cajex_private.signin_rate_hit(p_bucket bytea, p_window interval, p_limit integer)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_count integer;
begin
  delete from cajex.signin_rate_hits h where h.bucket = p_bucket and h.at < now() - p_window;
  insert into cajex.signin_rate_hits (bucket) values (p_bucket);
  select count(*) into v_count from cajex.signin_rate_hits h
  where h.bucket = p_bucket and h.at >= now() - p_window;
  return v_count <= p_limit;
end;
$$;
alter function cajex_private.signin_rate_hit(bytea, interval, integer) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Ask for a magic link. Known and unknown addresses take the same path (an
-- unknown address gets a link that creates its account when used), so the
-- answer and its timing say nothing about who has an account. Returns 'sent'
-- or 'rate_limited'. The email job is written in the same transaction.
create or replace function cajex_private.request_magic_link(
  p_email text,
  p_token_hash bytea,
  p_link text,
  p_email_bucket bytea,
  p_client_bucket bytea,
  p_ttl interval default interval '15 minutes',
  p_workspace_id uuid default null,
  p_email_limit integer default 5,
  p_client_limit integer default 20,
  p_window interval default interval '15 minutes'
)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_email text := cajex_private.normalise_email(p_email);
  v_email_ok boolean;
  v_client_ok boolean;
begin
  if v_email is null or char_length(v_email) > 320 or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then
    raise exception 'that is not an email address' using errcode = 'CXINV', detail = 'email';
  end if;
  if p_token_hash is null or octet_length(p_token_hash) <> 32 then
    raise exception 'bad token hash' using errcode = 'CXINV', detail = 'token';
  end if;
  if p_ttl <= interval '0' or p_ttl > interval '1 day' then
    raise exception 'bad link lifetime' using errcode = 'CXINV', detail = 'ttl';
  end if;
  -- Both buckets always count, so neither check short-circuits the other.
  v_email_ok := cajex_private.signin_rate_hit(p_email_bucket, p_window, p_email_limit);
  v_client_ok := cajex_private.signin_rate_hit(p_client_bucket, p_window, p_client_limit);
  if not (v_email_ok and v_client_ok) then
    return 'rate_limited';
  end if;
  insert into cajex.magic_links (token_hash, email, expires_at)
  values (p_token_hash, v_email, now() + p_ttl);
  perform cajex_private.enqueue_platform_job(
    p_workspace_id, 'email.send',
    jsonb_build_object(
      'template', 'magic_link',
      'to', v_email,
      'workspace_id', p_workspace_id,
      'params', jsonb_build_object('link', p_link,
                                   'minutes', (extract(epoch from p_ttl) / 60)::integer)),
    null, null);
  return 'sent';
end;
$$;
alter function cajex_private.request_magic_link(text, bytea, text, bytea, bytea, interval, uuid, integer, integer, interval)
  owner to cajex_definer;

-- Whether a magic link can still be used, without using it (the confirmation
-- page a mail scanner may fetch). Raises CXNFD, CXEXP.
create or replace function cajex_private.check_magic_link(p_token_hash bytea)
returns text
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_link cajex.magic_links;
begin
  select * into v_link from cajex.magic_links l where l.token_hash = p_token_hash;
  if not found then
    raise exception 'this sign-in link is not valid' using errcode = 'CXNFD', detail = 'token';
  end if;
  if v_link.used_at is not null then
    raise exception 'this sign-in link was already used' using errcode = 'CXEXP', detail = 'token',
      hint = 'ask for a new link';
  end if;
  if v_link.expires_at <= now() then
    raise exception 'this sign-in link has expired' using errcode = 'CXEXP', detail = 'token',
      hint = 'ask for a new link';
  end if;
  return 'valid';
end;
$$;
alter function cajex_private.check_magic_link(bytea) owner to cajex_definer;

-- Use a magic link: once, before it expires. Returns the user of the address
-- it was sent to (created on first use: the mailbox is the proof).
create or replace function cajex_private.consume_magic_link(p_token_hash bytea)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_link cajex.magic_links;
  v_user uuid;
begin
  select * into v_link from cajex.magic_links l where l.token_hash = p_token_hash for update;
  if not found then
    raise exception 'this sign-in link is not valid' using errcode = 'CXNFD', detail = 'token';
  end if;
  if v_link.used_at is not null then
    raise exception 'this sign-in link was already used' using errcode = 'CXEXP', detail = 'token',
      hint = 'ask for a new link';
  end if;
  if v_link.expires_at <= now() then
    raise exception 'this sign-in link has expired' using errcode = 'CXEXP', detail = 'token',
      hint = 'ask for a new link';
  end if;
  update cajex.magic_links set used_at = now() where id = v_link.id;
  v_user := cajex_private.ensure_user(v_link.email);
  if exists (select from cajex.users u where u.id = v_user and u.disabled_at is not null) then
    raise exception 'this account is disabled' using errcode = 'CXFBD', detail = 'user';
  end if;
  return v_user;
end;
$$;
alter function cajex_private.consume_magic_link(bytea) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Sign in with a provider identity that the web layer has verified.
-- Outcomes:
--   ('signed_in', user)   the identity is known: its user
--   ('created', user)     a new user with a verified address and this identity
--   ('confirm_link', user) a verified address matches an existing account that
--                         lacks this identity: the user must confirm linking
-- Raises CXFBD when the address is unverified and matches an existing account
-- (never link, never sign in), CXINV when there is no usable verified address
-- for a new account. Nothing is written unless the outcome is signed_in or
-- created.
create or replace function cajex_private.signin_with_identity(
  p_provider text,
  p_issuer text,
  p_subject text,
  p_email text,
  p_email_verified boolean,
  p_display_name text default null,
  out outcome text,
  out user_id uuid
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_email text := cajex_private.normalise_email(p_email);
begin
  if p_provider is null or p_provider not in ('google', 'apple', 'github') then
    raise exception 'unknown provider' using errcode = 'CXINV', detail = 'provider';
  end if;
  if coalesce(char_length(p_issuer), 0) not between 1 and 255
     or coalesce(char_length(p_subject), 0) not between 1 and 255 then
    raise exception 'bad identity' using errcode = 'CXINV', detail = 'subject';
  end if;
  select i.user_id into user_id from cajex.user_identities i
  where i.issuer = p_issuer and i.subject = p_subject;
  if found then
    if exists (select from cajex.users u where u.id = user_id and u.disabled_at is not null) then
      raise exception 'this account is disabled' using errcode = 'CXFBD', detail = 'user';
    end if;
    update cajex.user_identities i set last_used_at = now()
    where i.issuer = p_issuer and i.subject = p_subject;
    outcome := 'signed_in';
    return;
  end if;
  if v_email is null or char_length(v_email) > 320 or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then
    raise exception 'the provider gave no email address' using errcode = 'CXINV', detail = 'email';
  end if;
  select u.id into user_id from cajex.users u where u.email = v_email;
  if found then
    if not coalesce(p_email_verified, false) then
      raise exception 'the provider did not verify this address'
        using errcode = 'CXFBD', detail = 'email_verified',
              hint = 'sign in with a method you already use, then link this one';
    end if;
    outcome := 'confirm_link';
    return;
  end if;
  if not coalesce(p_email_verified, false) then
    raise exception 'the provider did not verify this address' using errcode = 'CXINV',
      detail = 'email_verified';
  end if;
  user_id := cajex_private.ensure_user(v_email, p_display_name);
  insert into cajex.user_identities (user_id, provider, issuer, subject, email, email_verified)
  values (user_id, p_provider, p_issuer, p_subject, v_email, true);
  outcome := 'created';
end;
$$;
alter function cajex_private.signin_with_identity(text, text, text, text, boolean, text)
  owner to cajex_definer;

-- Link a provider identity to an existing user after the user confirmed.
-- Always only with an address the provider verified: one that is the
-- account's own (the confirm-link path), or any verified one when the user,
-- signed in, asked to link from the linked accounts page (p_signed_in).
create or replace function cajex_private.link_identity(
  p_user_id uuid,
  p_provider text,
  p_issuer text,
  p_subject text,
  p_email text,
  p_email_verified boolean,
  p_signed_in boolean default false
)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_email text := cajex_private.normalise_email(p_email);
  v_owner uuid;
  v_id uuid;
begin
  if p_provider is null or p_provider not in ('google', 'apple', 'github') then
    raise exception 'unknown provider' using errcode = 'CXINV', detail = 'provider';
  end if;
  if p_signed_in and not coalesce(p_email_verified, false) then
    raise exception 'the provider did not verify an address for this sign-in'
      using errcode = 'CXFBD', detail = 'email_verified';
  end if;
  if not p_signed_in and not (coalesce(p_email_verified, false) and exists (
      select from cajex.users u where u.id = p_user_id and u.email = v_email and u.disabled_at is null)) then
    raise exception 'only a verified address of this account can link it'
      using errcode = 'CXFBD', detail = 'email_verified';
  end if;
  select i.user_id into v_owner from cajex.user_identities i
  where i.issuer = p_issuer and i.subject = p_subject;
  if found then
    if v_owner <> p_user_id then
      raise exception 'this sign-in is linked to another account' using errcode = 'CXDUP',
        detail = 'identity';
    end if;
    select i.id into v_id from cajex.user_identities i where i.issuer = p_issuer and i.subject = p_subject;
    return v_id;
  end if;
  insert into cajex.user_identities (user_id, provider, issuer, subject, email, email_verified)
  values (p_user_id, p_provider, p_issuer, p_subject, left(v_email, 320), coalesce(p_email_verified, false))
  returning id into v_id;
  return v_id;
end;
$$;
alter function cajex_private.link_identity(uuid, text, text, text, text, boolean, boolean)
  owner to cajex_definer;

-- Remove one of the signed-in user's linked identities, never the last way
-- in: an account keeps at least one identity (its address still receives
-- magic links, but a user who chose a provider must not lock it out by
-- accident).
create or replace function cajex.remove_identity(p_identity_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := cajex_private.require_user();
begin
  if not exists (select from cajex.user_identities i where i.id = p_identity_id and i.user_id = v_user) then
    raise exception 'no such sign-in method' using errcode = 'CXNFD', detail = 'identity';
  end if;
  if (select count(*) from cajex.user_identities i where i.user_id = v_user) <= 1 then
    raise exception 'this is your last sign-in method' using errcode = 'CXLST', detail = 'identity',
      hint = 'link another method first';
  end if;
  delete from cajex.user_identities i where i.id = p_identity_id and i.user_id = v_user;
end;
$$;
alter function cajex.remove_identity(uuid) owner to cajex_definer;

-- End one of the signed-in user's sessions (the sessions page).
create or replace function cajex.end_my_session(p_session_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := cajex_private.require_user();
begin
  if not exists (select from cajex.sessions s where s.id = p_session_id and s.user_id = v_user) then
    raise exception 'no such session' using errcode = 'CXNFD', detail = 'session';
  end if;
  perform cajex_private.revoke_sessions(v_user, 'user', p_session_id, null, null);
end;
$$;
alter function cajex.end_my_session(uuid) owner to cajex_definer;

-- Sign out everywhere: every session of the signed-in user.
create or replace function cajex.end_all_my_sessions()
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := cajex_private.require_user();
  v_count integer;
begin
  select count(*) into v_count from cajex.sessions s where s.user_id = v_user and s.revoked_at is null;
  perform cajex_private.revoke_sessions(v_user, 'sign_out_everywhere', null, null, null);
  return v_count;
end;
$$;
alter function cajex.end_all_my_sessions() owner to cajex_definer;

-- Slide the idle window of the session whose context this transaction
-- opened: opening a browser's context is a read (cajex_private.browser_opening
-- writes nothing), so cajex.db.in_context calls this just before COMMIT, in
-- the same round trip, when the opening said the session was last seen over
-- a minute ago. Only a context that a session's own credential opened can
-- keep it alive, and never past its absolute expiry; a revoked or expired
-- session stays dead. Returns whether the session was touched.
drop function if exists cajex_private.touch_session(uuid, text);
create or replace function cajex_private.touch_context_session()
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_session uuid := (select c.session_id from cajex_private.context c where c.actor = 'user');
begin
  if v_session is null then
    return false;
  end if;
  update cajex.sessions s
  set last_seen_at = now(),
      idle_expires_at = least(now() + (s.idle_expires_at - s.last_seen_at), s.absolute_expires_at)
  where s.id = v_session
    and s.revoked_at is null
    and s.idle_expires_at > now()
    and s.absolute_expires_at > now()
    and s.last_seen_at < now() - interval '30 seconds';
  return found;
end;
$$;
alter function cajex_private.touch_context_session() owner to cajex_definer;

-- Why a workspace did not open for this browser, when the reason is the
-- workspace's chosen sign-in methods: the methods it allows, else null.
-- Answers only to the holder of a live session of an active member, so it
-- tells nobody else anything about the workspace.
create or replace function cajex_private.signin_methods_required(
  p_session_id uuid,
  p_secret text,
  p_slug text
)
returns text[]
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select m.methods
    from cajex.sessions s
    join cajex.memberships mb on mb.user_id = s.user_id and mb.status = 'active'
    join cajex.workspaces w on w.id = mb.workspace_id and w.slug = p_slug and w.status = 'active'
    join cajex.workspace_signin_methods m on m.workspace_id = w.id
    where s.id = p_session_id
      and s.token_hash = sha256(convert_to(coalesce(p_secret, ''), 'UTF8'))
      and s.revoked_at is null
      and s.idle_expires_at > now()
      and s.absolute_expires_at > now()
      and s.auth_method in ('google', 'apple', 'github', 'magic_link')
      and s.auth_method <> all (m.methods));
end;
$$;
alter function cajex_private.signin_methods_required(uuid, text, text) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Email deliveries (the email job).

-- Record a delivery; false when this outbox job was already delivered.
create or replace function cajex_private.record_email_delivery(
  p_outbox_id bigint,
  p_workspace_id uuid,
  p_transport text,
  p_message_id text,
  p_template text,
  p_recipient text,
  p_subject text,
  p_text_body text,
  p_html_body text
)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into cajex.email_deliveries (outbox_id, workspace_id, transport, message_id, template,
                                      recipient, subject, text_body, html_body)
  values (p_outbox_id, p_workspace_id, p_transport, p_message_id, p_template,
          p_recipient, left(p_subject, 500), p_text_body, p_html_body)
  on conflict (outbox_id) do nothing;
  return found;
end;
$$;
alter function cajex_private.record_email_delivery(bigint, uuid, text, text, text, text, text, text, text)
  owner to cajex_definer;

-- The message id this outbox job was delivered with, or null.
create or replace function cajex_private.email_delivery_of(p_outbox_id bigint)
returns text
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select d.message_id from cajex.email_deliveries d where d.outbox_id = p_outbox_id);
end;
$$;
alter function cajex_private.email_delivery_of(bigint) owner to cajex_definer;

-- The development mailbox (served only in development mode).
create or replace function cajex_private.dev_mailbox(p_limit integer default 50)
returns table (outbox_id bigint, recipient text, subject text, text_body text, html_body text,
               sent_at timestamptz)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select d.outbox_id, d.recipient, d.subject, d.text_body, d.html_body, d.sent_at
  from cajex.email_deliveries d
  where d.transport = 'dev'
  order by d.sent_at desc, d.outbox_id desc
  limit least(greatest(p_limit, 1), 200);
$$;
alter function cajex_private.dev_mailbox(integer) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Allowed standard methods.

-- The methods a workspace's sign-in page offers. An unknown address gets
-- every method, so the public page does not reveal which workspaces exist.
create or replace function cajex_private.workspace_signin_methods(p_slug text)
returns text[]
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select coalesce(
      (select m.methods from cajex.workspace_signin_methods m
         join cajex.workspaces w on w.id = m.workspace_id
        where w.slug = p_slug and w.deleted_at is null),
      array['google', 'apple', 'github', 'magic_link']::text[]));
end;
$$;
alter function cajex_private.workspace_signin_methods(text) owner to cajex_definer;

-- Choose the workspace's standard methods (workspace.settings).
create or replace function cajex.set_signin_methods(p_methods text[])
returns text[]
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := cajex.current_workspace_id();
  v_mine text;
begin
  perform cajex_private.require_permission('workspace.settings');
  if p_methods is null or cardinality(p_methods) = 0
     or not (p_methods <@ array['google', 'apple', 'github', 'magic_link']::text[]) then
    raise exception 'choose at least one of google, apple, github, magic_link'
      using errcode = 'CXINV', detail = 'methods';
  end if;
  -- The workspace opens only for sessions made by a chosen method: an admin
  -- must not lock themselves out by leaving out the one they signed in with.
  select s.auth_method into v_mine from cajex.sessions s
  where s.id = (select c.session_id from cajex_private.context c);
  if v_mine in ('google', 'apple', 'github', 'magic_link') and not (v_mine = any (p_methods)) then
    raise exception 'keep the method you signed in with (%)', v_mine
      using errcode = 'CXINV', detail = 'methods',
            hint = 'sign in with one of the chosen methods first';
  end if;
  insert into cajex.workspace_signin_methods (workspace_id, methods)
  values (v_ws, (select array_agg(distinct m order by m) from unnest(p_methods) m))
  on conflict (workspace_id) do update set methods = excluded.methods, updated_at = now();
  perform cajex_private.write_audit('signin.methods_changed', 'workspace', v_ws::text,
                                    jsonb_build_object('methods', p_methods));
  return p_methods;
end;
$$;
alter function cajex.set_signin_methods(text[]) owner to cajex_owner;

-- (Email branding reads cajex.public_branding_by_id: a workspace's whole row,
-- as the old email_branding(uuid) returned it to any caller, was too much.)
drop function if exists cajex_private.email_branding(uuid);

--------------------------------------------------------------------------------
-- The last used workspace.

-- Remember the context's workspace as the signed-in user's last one. The web
-- layer calls it when the user switches workspace, not on every request.
create or replace function cajex.remember_workspace()
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := cajex.current_user_id();
  v_ws uuid := cajex.current_workspace_id();
begin
  if v_user is null or v_ws is null then
    raise exception 'open a workspace first' using errcode = 'CXNCX';
  end if;
  insert into cajex.user_last_workspaces (user_id, last_workspace_id)
  values (v_user, v_ws)
  on conflict (user_id) do update
    set last_workspace_id = excluded.last_workspace_id, updated_at = now();
end;
$$;
alter function cajex.remember_workspace() owner to cajex_definer;
