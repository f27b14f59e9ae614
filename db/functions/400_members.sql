-- Members and invitations, ownership, onboarding progress, branding and
-- moving projects between workspaces of one organisation. Functions that act
-- in the open workspace run as cajex_owner (bound by forced RLS); the few
-- that must act before a membership exists (accepting an invitation) or in
-- two workspaces (moving projects) are cajex_definer and scope themselves.

--------------------------------------------------------------------------------
-- Invitations

-- One invitation, in the open workspace. Returns an outcome instead of
-- raising for what a bulk list expects row by row: 'invited',
-- 'already_member', 'already_invited', 'invalid_address', 'invalid_role',
-- 'over_seat_limit'. Raises only when the caller may not invite at all, or
-- may not grant the role (only the owner invites admins, CXFBD).
create or replace function cajex_private.invite_one(
  p_email text,
  p_role text,
  p_token_hash bytea,
  p_link text,
  p_expires_in interval default interval '7 days',
  out outcome text,
  out invitation_id uuid
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_email text := cajex_private.normalise_email(p_email);
  v_pending integer;
  v_expires timestamptz;
  v_ws_name text;
  v_inviter text;
begin
  perform cajex_private.require_permission('member.invite');
  if v_email is null or char_length(v_email) > 320 or v_email !~ '^[^@\s",;<>]+@[^@\s",;<>]+\.[^@\s",;<>]+$' then
    outcome := 'invalid_address';
    return;
  end if;
  if p_role is null or p_role not in ('admin', 'member', 'viewer') then
    outcome := 'invalid_role';
    return;
  end if;
  -- An invitation grants its role on acceptance, so it holds to the rule of
  -- change_member_role and add_member: only the owner makes admins.
  if p_role = 'admin' and (select cajex.current_member_role()) not in ('owner', 'system') then
    raise exception 'only the owner grants the admin role'
      using errcode = 'CXFBD', detail = 'role', hint = 'Ask the workspace''s owner to invite admins.';
  end if;
  if p_expires_in is null or p_expires_in < interval '1 hour' or p_expires_in > interval '30 days' then
    raise exception 'an invitation lasts from 1 hour to 30 days' using errcode = 'CXINV', detail = 'expires_in';
  end if;
  if p_token_hash is null or octet_length(p_token_hash) <> 32 then
    raise exception 'the invitation token hash is 32 bytes' using errcode = 'CXINV', detail = 'token';
  end if;
  -- A deactivated member too: SCIM deactivated them, and only SCIM brings
  -- them back (an invitation could not be accepted, and would hold a seat).
  if exists (
    select from cajex.memberships m join cajex.users u on u.id = m.user_id
    where m.workspace_id = v_ws and u.email = v_email) then
    outcome := 'already_member';
    return;
  end if;
  -- Expired invitations give their place to a new one.
  update cajex.invitations i set status = 'replaced', ended_at = now()
  where i.workspace_id = v_ws and i.email = v_email and i.status = 'pending' and i.expires_at <= now();
  if exists (select from cajex.invitations i
             where i.workspace_id = v_ws and i.email = v_email and i.status = 'pending') then
    select i.id into invitation_id from cajex.invitations i
    where i.workspace_id = v_ws and i.email = v_email and i.status = 'pending';
    outcome := 'already_invited';
    return;
  end if;
  -- Pending invitations hold a seat each. The workspace row is locked, so
  -- two admins inviting at once cannot both take the last seat (re-entrant:
  -- a bulk list takes the lock once for its transaction).
  perform from cajex.workspaces w where w.id = v_ws for no key update;
  select count(*)::integer into v_pending from cajex.invitations i
  where i.workspace_id = v_ws and i.status = 'pending' and i.expires_at > now()
    -- One whose address joined another way holds no place (joining ends
    -- them, cajex_private.end_member_invitations; older ones may remain).
    and not exists (select from cajex.memberships m join cajex.users u on u.id = m.user_id
                    where m.workspace_id = v_ws and u.email = i.email);
  begin
    perform cajex_private.require_seat(v_ws, v_pending + 1);
  exception when sqlstate 'CXPLN' then
    outcome := 'over_seat_limit';
    return;
  end;
  v_expires := now() + p_expires_in;
  insert into cajex.invitations (workspace_id, email, role, token_hash, invited_by, expires_at)
  values (v_ws, v_email, p_role, p_token_hash, (select cajex.current_user_id()), v_expires)
  returning id into invitation_id;
  select w.name into v_ws_name from cajex.workspaces w where w.id = v_ws;
  select coalesce(u.display_name, 'A colleague') into v_inviter
  from cajex.users u where u.id = (select cajex.current_user_id());
  perform cajex_private.enqueue_job('email.send', jsonb_build_object(
    'template', 'invitation',
    'to', v_email,
    'workspace_id', v_ws,
    'params', jsonb_build_object(
      'workspace_name', v_ws_name,
      'inviter_name', coalesce(v_inviter, 'A colleague'),
      'role', p_role,
      'accept_url', p_link,
      'expires_at', to_char(v_expires at time zone 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'))));
  perform cajex_private.write_audit('invitation.created', 'invitation', invitation_id::text,
                                    jsonb_build_object('role', p_role));
  outcome := 'invited';
end;
$$;

create or replace function cajex.invite_member(
  p_email text,
  p_role text,
  p_token_hash bytea,
  p_link text,
  p_expires_in interval default interval '7 days',
  out outcome text,
  out invitation_id uuid
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  select i.outcome, i.invitation_id into outcome, invitation_id
  from cajex_private.invite_one(p_email, p_role, p_token_hash, p_link, p_expires_in) i;
end;
$$;
comment on function cajex.invite_member(text, text, bytea, text, interval) is
  'Invite an address with a role to the open workspace; returns the outcome (invited, '
  'already_member, already_invited, invalid_address, invalid_role, over_seat_limit).';

-- A list, as parallel arrays: the list's line numbers, addresses, roles,
-- token hashes and accept links, one element per row. Each row gets its own
-- outcome, the same one cajex.invite_member
-- would give it in list order (a repeated address is 'already_invited' once
-- its first row is invited); good rows go through when others fail.
--
-- Set-based, not a loop over invite_one: a loop pays the verified context
-- and a dozen statements per row, some 50 ms a row on a busy machine, where
-- this reads the context once and writes the invitations, their emails'
-- outbox rows and one audit event in one statement. The outbox rows
-- are written here rather than through enqueue_job (which notifies the
-- relay once per job): they carry no dedupe key, and one notification wakes
-- the relay for all of them.
drop function if exists cajex.invite_members(jsonb);
create or replace function cajex.invite_members(
  p_lines integer[],
  p_emails text[],
  p_roles text[],
  p_token_hashes bytea[],
  p_links text[]
)
returns table (line integer, email text, outcome text, invitation_id uuid)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Planned once per session: planning this statement with its policies costs
-- more than running it, and its plan does not depend on the list.
set plan_cache_mode = force_generic_plan
as $$
declare
  v_ws uuid;
  v_user uuid;
  v_actor text;
  v_actor_role text;
  v_ws_name text;
  v_inviter text;
  v_max integer;
  v_free integer;
  v_expires timestamptz := now() + interval '7 days';
  v_params jsonb;
begin
  perform cajex_private.require_permission('member.invite');
  if p_lines is null or cardinality(p_lines) > 1000 then
    raise exception 'at most 1000 invitations at once' using errcode = 'CXINV', detail = 'rows';
  end if;
  if cardinality(p_emails) is distinct from cardinality(p_lines)
     or cardinality(p_roles) is distinct from cardinality(p_lines)
     or cardinality(p_token_hashes) is distinct from cardinality(p_lines)
     or cardinality(p_links) is distinct from cardinality(p_lines)
     or exists (select from unnest(p_token_hashes) h where h is null or octet_length(h) <> 32) then
    raise exception 'one line, address, role, 32-byte token hash and link per row'
      using errcode = 'CXINV', detail = 'rows';
  end if;
  select c.workspace_id, c.user_id, coalesce(c.actor, 'user'), c.member_role
    into v_ws, v_user, v_actor, v_actor_role
  from cajex_private.context c;
  -- Locked as in invite_one: seats are counted once, for the whole list.
  select w.name, p.max_seats into v_ws_name, v_max
  from cajex.workspaces w join cajex.plans p on p.code = w.plan
  where w.id = v_ws
  for no key update of w;
  select coalesce(u.display_name, 'A colleague') into v_inviter from cajex.users u where u.id = v_user;
  -- What every email of the list says alike; each row adds its role and link.
  v_params := jsonb_build_object(
    'workspace_name', v_ws_name,
    'inviter_name', coalesce(v_inviter, 'A colleague'),
    'expires_at', to_char(v_expires at time zone 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'));
  -- Expired invitations of listed addresses give their place to new ones
  -- (looked for first: usually there are none, and the list is long).
  if exists (select from cajex.invitations i
             where i.workspace_id = v_ws and i.status = 'pending' and i.expires_at <= now()) then
    update cajex.invitations i set status = 'replaced', ended_at = now()
    where i.workspace_id = v_ws and i.status = 'pending' and i.expires_at <= now()
      and i.email in (select cajex_private.normalise_email(e) from unnest(p_emails) e);
  end if;
  if v_max is not null then
    v_free := v_max - cajex.seat_count(v_ws) - (
      select count(*)::integer from cajex.invitations i
      where i.workspace_id = v_ws and i.status = 'pending' and i.expires_at > now()
        -- As in invite_one: a member's leftover invitation holds no place.
        and not exists (select from cajex.memberships m join cajex.users u on u.id = m.user_id
                        where m.workspace_id = v_ws and u.email = i.email));
  end if;
  -- Past the grace period of a failed payment no seat is free, on any plan
  -- (as invite_one and require_seat have it).
  if cajex_private.context_billing_limited() then
    v_free := 0;
  end if;
  return query
  with listed as (
    select coalesce(r.line, r.n::integer) as line,
           r.n,
           left(r.given, 320) as given,
           -- cajex_private.normalise_email, written out: a function with
           -- its own search_path is not inlined, and costs a settings
           -- change per call, a thousand times over.
           lower(btrim(r.given)) as email,
           r.role,
           r.token_hash,
           r.link
    from unnest(p_lines, p_emails, p_roles, p_token_hashes, p_links)
           with ordinality as r (line, given, role, token_hash, link, n)
  ),
  -- Members and pending invitations are read once each and joined, rather
  -- than looked up row by row.
  -- Deactivated members too, as in invite_one.
  members as (
    select distinct u.email as address from cajex.memberships m join cajex.users u on u.id = m.user_id
    where m.workspace_id = v_ws
  ),
  pending as (
    select i.email, i.id from cajex.invitations i
    where i.workspace_id = v_ws and i.status = 'pending'
  ),
  checked as (
    select l.*,
      case
        when l.email is null or char_length(l.email) > 320
             or l.email !~ '^[^@\s",;<>]+@[^@\s",;<>]+\.[^@\s",;<>]+$' then 'invalid_address'
        when l.role is null or l.role not in ('admin', 'member', 'viewer') then 'invalid_role'
        -- Only the owner invites admins (invite_one raises; a list refuses
        -- the row, as any role it may not give).
        when l.role = 'admin' and v_actor_role not in ('owner', 'system') then 'invalid_role'
        when m.address is not null then 'already_member'
      end as refused,
      p.id as pending_id
    from listed l
    left join members m on m.address = l.email
    left join pending p on p.email = l.email
  ),
  -- The first row of each new address, in list order, takes the next seat.
  firsts as (
    select c.n, c.email, c.role, c.token_hash, c.link,
           row_number() over (order by c.n) as seat
    from (select distinct on (c.email) c.* from checked c
          where c.refused is null and c.pending_id is null
          order by c.email, c.n) c
  ),
  inserted as (
    insert into cajex.invitations (workspace_id, email, role, token_hash, invited_by, expires_at)
    select v_ws, f.email, f.role, f.token_hash, v_user, v_expires
    from firsts f
    where v_free is null or f.seat <= v_free
    returning cajex.invitations.id, cajex.invitations.email, cajex.invitations.role
  ),
  emails as (
    insert into cajex.outbox (workspace_id, kind, payload)
    select v_ws, 'email.send', jsonb_build_object(
      'template', 'invitation',
      'to', f.email,
      'workspace_id', v_ws,
      'params', v_params || jsonb_build_object('role', f.role, 'accept_url', f.link))
    -- The rows `inserted` writes (if that insert fails, all of this
    -- statement does), read from `firsts`: the link is not a column.
    from firsts f
    where v_free is null or f.seat <= v_free
  ),
  -- One audit event for the list, naming every invitation it created (the
  -- list is one act of one person; a thousand events would say no more).
  audited as (
    insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id, details)
    select v_ws, v_user, v_actor, 'invitation.bulk_created', 'workspace', v_ws::text,
           jsonb_build_object('count', count(*), 'invitations', jsonb_agg(i.id order by i.id))
    from inserted i
    having count(*) > 0
  )
  select c.line, c.given,
         case
           when c.refused is not null then c.refused
           when c.pending_id is not null then 'already_invited'
           when f.n = c.n and i.id is not null then 'invited'
           when i.id is not null then 'already_invited'
           else 'over_seat_limit'
         end,
         case when c.refused is null then coalesce(c.pending_id, i.id) end
  from checked c
  left join firsts f on f.email = c.email and c.refused is null and c.pending_id is null
  left join inserted i on i.email = c.email and c.refused is null
  order by c.n;
  if found then
    perform pg_notify('cajex_outbox', 'invitations');
  end if;
end;
$$;

-- What the accept page shows about a token before anyone is signed in.
create or replace function cajex.invitation_preview(p_slug text, p_token_hash bytea)
returns table (workspace_name text, workspace_slug text, email text, role text, status text,
               expires_at timestamptz)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select w.name, w.slug, i.email, i.role,
           case when i.status = 'pending' and i.expires_at <= now() then 'expired' else i.status end,
           i.expires_at
    from cajex.invitations i
    join cajex.workspaces w on w.id = i.workspace_id
    where i.token_hash = p_token_hash and w.slug = p_slug and w.status = 'active';
end;
$$;
alter function cajex.invitation_preview(text, bytea) owner to cajex_definer;

-- Accept: the signed-in user (any sign-in method) joins the workspace named
-- by the link. The token must belong to that workspace, be pending and
-- unexpired, and name the user's own address.
create or replace function cajex.accept_invitation(p_slug text, p_token_hash bytea)
returns table (workspace_id uuid, workspace_slug text, role text)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := (select cajex.current_user_id());
  v_email text;
  v_inv cajex.invitations;
  v_ws cajex.workspaces;
  v_status text;
begin
  if v_user is null then
    raise exception 'sign in to accept the invitation' using errcode = 'CXNCX';
  end if;
  select w.* into v_ws from cajex.workspaces w where w.slug = p_slug and w.status = 'active';
  select i.* into v_inv from cajex.invitations i
  where i.token_hash = p_token_hash and i.workspace_id = v_ws.id
  for update;
  if v_ws.id is null or v_inv.id is null then
    raise exception 'this invitation does not exist' using errcode = 'CXNFD', detail = 'invitation';
  end if;
  if v_inv.status <> 'pending' then
    raise exception 'this invitation was already used or withdrawn' using errcode = 'CXEXP', detail = 'invitation';
  end if;
  if v_inv.expires_at <= now() then
    raise exception 'this invitation has expired' using errcode = 'CXEXP', detail = 'invitation',
      hint = 'Ask for a new invitation.';
  end if;
  select u.email into v_email from cajex.users u where u.id = v_user;
  if v_email is distinct from v_inv.email then
    raise exception 'this invitation is for another email address' using errcode = 'CXFBD',
      detail = 'email', hint = 'Sign in with the address the invitation was sent to.';
  end if;
  -- A deactivated membership (SCIM active: false) comes back only through
  -- the identity provider (active: true), never through an old link: that
  -- would undo the deactivation and take a seat behind SCIM's back.
  select m.status into v_status from cajex.memberships m
  where m.workspace_id = v_ws.id and m.user_id = v_user
  for update;
  if v_status = 'deactivated' then
    raise exception 'your membership of this workspace is deactivated' using errcode = 'CXFBD',
      detail = 'membership', hint = 'Ask the workspace''s administrators to restore your access.';
  end if;
  -- Ended before the membership is written, which ends the person's other
  -- pending invitations (cajex_private.end_member_invitations).
  update cajex.invitations i set status = 'accepted', ended_at = now(), accepted_by = v_user
  where i.workspace_id = v_ws.id and i.id = v_inv.id;
  if v_status is null then
    -- Locked, so concurrent acceptances count seats one after the other.
    perform from cajex.workspaces w where w.id = v_ws.id for no key update;
    perform cajex_private.require_seat(v_ws.id, 1);
    insert into cajex.memberships (workspace_id, user_id, role)
    values (v_ws.id, v_user, v_inv.role)
    -- Joined another way meanwhile: that membership stands as it is.
    on conflict on constraint memberships_pkey do nothing;
  end if;
  insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id, details)
  values (v_ws.id, v_user, 'user', 'invitation.accepted', 'invitation', v_inv.id::text,
          jsonb_build_object('role', v_inv.role, 'user_id', v_user));
  workspace_id := v_ws.id;
  workspace_slug := v_ws.slug;
  role := v_inv.role;
  return next;
end;
$$;
alter function cajex.accept_invitation(text, bytea) owner to cajex_definer;

-- A membership written any way (SCIM, SSO, cajex_private.add_member, an
-- acceptance) ends the person's pending invitations to that workspace as
-- replaced: an old link must not come back later to undo a deactivation,
-- and an invitation nobody needs must not hold a seat. Definer
-- (cajex_definer): SSO and SCIM write memberships as 'system', with no
-- inviter's read of invitations; it scopes itself to the row's workspace.
create or replace function cajex_private.end_member_invitations()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update cajex.invitations i set status = 'replaced', ended_at = now()
  where i.workspace_id = new.workspace_id and i.status = 'pending'
    and i.email = (select u.email from cajex.users u where u.id = new.user_id);
  return null;
end;
$$;
alter function cajex_private.end_member_invitations() owner to cajex_definer;

drop trigger if exists memberships_end_invitations on cajex.memberships;
create trigger memberships_end_invitations
  after insert or update of status on cajex.memberships
  for each row execute function cajex_private.end_member_invitations();

-- Decline: whoever holds the link may say no; it needs no account.
create or replace function cajex.decline_invitation(p_slug text, p_token_hash bytea)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_inv cajex.invitations;
begin
  select i.* into v_inv from cajex.invitations i
  join cajex.workspaces w on w.id = i.workspace_id
  where i.token_hash = p_token_hash and w.slug = p_slug and w.status = 'active'
  for update of i;
  if v_inv.id is null then
    raise exception 'this invitation does not exist' using errcode = 'CXNFD', detail = 'invitation';
  end if;
  if v_inv.status <> 'pending' or v_inv.expires_at <= now() then
    raise exception 'this invitation was already used, withdrawn or has expired'
      using errcode = 'CXEXP', detail = 'invitation';
  end if;
  update cajex.invitations i set status = 'declined', ended_at = now()
  where i.workspace_id = v_inv.workspace_id and i.id = v_inv.id;
  insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id)
  values (v_inv.workspace_id, (select cajex.current_user_id()), 'user', 'invitation.declined',
          'invitation', v_inv.id::text);
end;
$$;
alter function cajex.decline_invitation(text, bytea) owner to cajex_definer;

create or replace function cajex.revoke_invitation(p_invitation_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('member.invite');
  update cajex.invitations i set status = 'revoked', ended_at = now()
  where i.id = p_invitation_id and i.status = 'pending';
  if not found then
    raise exception 'no pending invitation with that id' using errcode = 'CXNFD', detail = 'invitation';
  end if;
  perform cajex_private.write_audit('invitation.revoked', 'invitation', p_invitation_id::text);
end;
$$;

-- Resend: a new token and a new expiry; the old token is dead at once.
create or replace function cajex.resend_invitation(
  p_invitation_id uuid,
  p_token_hash bytea,
  p_link text,
  p_expires_in interval default interval '7 days'
)
returns uuid
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_old cajex.invitations;
  v_new uuid;
begin
  perform cajex_private.require_permission('member.invite');
  select i.* into v_old from cajex.invitations i
  where i.id = p_invitation_id and i.status = 'pending' for update;
  if v_old.id is null then
    raise exception 'no pending invitation with that id' using errcode = 'CXNFD', detail = 'invitation';
  end if;
  update cajex.invitations i set status = 'replaced', ended_at = now()
  where i.workspace_id = v_old.workspace_id and i.id = v_old.id;
  select r.invitation_id into v_new
  from cajex_private.invite_one(v_old.email, v_old.role, p_token_hash, p_link, p_expires_in) r;
  if v_new is null then
    raise exception 'the invitation cannot be sent again' using errcode = 'CXINV', detail = 'invitation';
  end if;
  perform cajex_private.write_audit('invitation.resent', 'invitation', v_new::text,
                                    jsonb_build_object('replaces', v_old.id));
  return v_new;
end;
$$;

--------------------------------------------------------------------------------
-- Roles, removal, leaving, ownership

create or replace function cajex.change_member_role(p_user_id uuid, p_role text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_old text;
begin
  perform cajex_private.require_permission('member.change_role');
  if p_role is null or p_role not in ('admin', 'member', 'viewer') then
    raise exception 'a role is admin, member or viewer (ownership is transferred, not assigned)'
      using errcode = 'CXINV', detail = 'role';
  end if;
  select m.role into v_old from cajex.memberships m
  where m.workspace_id = (select cajex.current_workspace_id()) and m.user_id = p_user_id for update;
  if v_old is null then
    raise exception 'no such member' using errcode = 'CXNFD', detail = 'member';
  end if;
  if v_old = 'owner' then
    raise exception 'the owner''s role changes only by transferring ownership'
      using errcode = 'CXOWN', detail = 'role';
  end if;
  -- An admin cannot make or unmake admins above their station: only the
  -- owner changes an admin's role.
  if (v_old = 'admin' or p_role = 'admin') and (select cajex.current_member_role()) not in ('owner', 'system') then
    raise exception 'only the owner grants or withdraws the admin role'
      using errcode = 'CXFBD', detail = 'member.change_role';
  end if;
  update cajex.memberships m set role = p_role
  where m.workspace_id = (select cajex.current_workspace_id()) and m.user_id = p_user_id;
  perform cajex_private.write_audit('member.role_changed', 'user', p_user_id::text,
                                    jsonb_build_object('from', v_old, 'to', p_role));
end;
$$;

-- Remove a member. Their global session simply stops opening this workspace
-- (the membership is gone); sessions this workspace's identity provider
-- opened are revoked outright.
create or replace function cajex.remove_member(p_user_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_role text;
begin
  perform cajex_private.require_permission('member.remove');
  select m.role into v_role from cajex.memberships m
  where m.workspace_id = v_ws and m.user_id = p_user_id for update;
  if v_role is null then
    raise exception 'no such member' using errcode = 'CXNFD', detail = 'member';
  end if;
  if v_role = 'owner' then
    raise exception 'the owner cannot be removed' using errcode = 'CXOWN', detail = 'member',
      hint = 'Transfer ownership to another member first.';
  end if;
  if v_role = 'admin' and (select cajex.current_member_role()) not in ('owner', 'system') then
    raise exception 'only the owner removes an admin' using errcode = 'CXFBD', detail = 'member.remove';
  end if;
  delete from cajex.memberships m where m.workspace_id = v_ws and m.user_id = p_user_id;
  perform cajex_private.revoke_sessions(p_user_id, 'removed_from_workspace', null, v_ws);
  perform cajex_private.write_audit('member.removed', 'user', p_user_id::text,
                                    jsonb_build_object('role', v_role));
end;
$$;

create or replace function cajex.leave_workspace()
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_user uuid := (select cajex.current_user_id());
  v_role text;
begin
  if v_ws is null or v_user is null then
    raise exception 'no workspace is open for this request' using errcode = 'CXNCX';
  end if;
  select m.role into v_role from cajex.memberships m
  where m.workspace_id = v_ws and m.user_id = v_user for update;
  if v_role = 'owner' then
    raise exception 'the owner cannot leave' using errcode = 'CXOWN', detail = 'member',
      hint = 'Transfer ownership to another member first.';
  end if;
  -- Audit first: the context closes with the membership.
  perform cajex_private.write_audit('member.left', 'user', v_user::text, jsonb_build_object('role', v_role));
  delete from cajex.memberships m where m.workspace_id = v_ws and m.user_id = v_user;
  perform cajex_private.revoke_sessions(v_user, 'left_workspace', null, v_ws);
end;
$$;

-- Ownership moves in one transaction: the workspace row is locked first, so
-- concurrent transfers run one after the other, and the second finds its
-- caller no longer the owner. The old owner is demoted before the new one is
-- promoted (the unique index allows one owner), and the deferred trigger
-- checks at commit that there is exactly one.
create or replace function cajex.transfer_ownership(p_new_owner uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_user uuid := (select cajex.current_user_id());
  v_target text;
begin
  perform cajex_private.require_permission('ownership.transfer');
  perform from cajex.workspaces w where w.id = v_ws for update;
  -- Re-read after the lock: a transfer that committed while we waited has
  -- already made the caller an admin.
  if not exists (select from cajex.memberships m
                 where m.workspace_id = v_ws and m.user_id = v_user
                   and m.role = 'owner' and m.status = 'active') then
    raise exception 'only the owner transfers ownership' using errcode = 'CXFBD',
      detail = 'ownership.transfer';
  end if;
  select m.role into v_target from cajex.memberships m
  where m.workspace_id = v_ws and m.user_id = p_new_owner and m.status = 'active' for update;
  if v_target is null then
    raise exception 'the new owner must be an active member' using errcode = 'CXNFD', detail = 'member';
  end if;
  if p_new_owner = v_user then
    raise exception 'you already own this workspace' using errcode = 'CXINV', detail = 'member';
  end if;
  update cajex.memberships m set role = 'admin' where m.workspace_id = v_ws and m.user_id = v_user;
  update cajex.memberships m set role = 'owner' where m.workspace_id = v_ws and m.user_id = p_new_owner;
  perform cajex_private.write_audit('ownership.transferred', 'user', p_new_owner::text,
                                    jsonb_build_object('from', v_user, 'previous_role', v_target));
end;
$$;

--------------------------------------------------------------------------------
-- Onboarding progress (the caller's own row only).

create or replace function cajex.save_onboarding_draft(p_step text, p_data jsonb, p_workspace_id uuid default null)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := cajex_private.require_user();
begin
  if p_workspace_id is not null and not exists (
    select from cajex.memberships m
    where m.workspace_id = p_workspace_id and m.user_id = v_user and m.role = 'owner') then
    raise exception 'workspace not found' using errcode = 'CXNFD', detail = 'workspace';
  end if;
  insert into cajex.onboarding_drafts (user_id, step, data, workspace_id, updated_at)
  values (v_user, p_step, coalesce(p_data, '{}'), p_workspace_id, now())
  on conflict (user_id) do update
    set step = excluded.step, data = excluded.data,
        workspace_id = coalesce(excluded.workspace_id, cajex.onboarding_drafts.workspace_id),
        updated_at = now();
end;
$$;
alter function cajex.save_onboarding_draft(text, jsonb, uuid) owner to cajex_definer;

create or replace function cajex.discard_onboarding_draft()
returns void
language sql
security definer
set search_path = pg_catalog, pg_temp
as $$
  delete from cajex.onboarding_drafts d where d.user_id = (select cajex.current_user_id());
$$;
alter function cajex.discard_onboarding_draft() owner to cajex_definer;

-- First-run defaults are applied by the onboarding wizard
-- (cajex.apply_onboarding_defaults, 410_onboarding.sql).
drop function if exists cajex.set_first_run_defaults(text, text[], boolean, text[]);

--------------------------------------------------------------------------------
-- Branding

create or replace function cajex.set_brand_colours(p_primary text, p_accent text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('branding.change');
  if p_primary is not null and lower(p_primary) !~ '^#[0-9a-f]{6}$' then
    raise exception 'a colour is written #rrggbb' using errcode = 'CXINV', detail = 'primary';
  end if;
  if p_accent is not null and lower(p_accent) !~ '^#[0-9a-f]{6}$' then
    raise exception 'a colour is written #rrggbb' using errcode = 'CXINV', detail = 'accent';
  end if;
  insert into cajex.workspace_branding (workspace_id, primary_colour, accent_colour, updated_by)
  values ((select cajex.current_workspace_id()), lower(p_primary), lower(p_accent), (select cajex.current_user_id()))
  on conflict (workspace_id) do update
    set primary_colour = excluded.primary_colour, accent_colour = excluded.accent_colour,
        updated_by = excluded.updated_by, updated_at = now();
  perform cajex_private.write_audit('branding.colours_changed', 'workspace',
                                    (select cajex.current_workspace_id())::text,
                                    jsonb_build_object('primary', lower(p_primary), 'accent', lower(p_accent)));
end;
$$;

-- The logo arrives already decoded and re-encoded by the server; this
-- checks the envelope again (type, size, dimensions) and stores it.
create or replace function cajex.set_logo(p_logo bytea, p_type text, p_width integer, p_height integer)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_sha text;
begin
  perform cajex_private.require_permission('branding.change');
  if p_logo is null or octet_length(p_logo) = 0 or octet_length(p_logo) > 1048576 then
    raise exception 'a logo is at most 1 MB' using errcode = 'CXINV', detail = 'logo';
  end if;
  if p_type is null or p_type not in ('image/png', 'image/jpeg', 'image/webp') then
    raise exception 'a logo is a PNG, JPEG or WebP image' using errcode = 'CXINV', detail = 'logo';
  end if;
  if p_width not between 1 and 4096 or p_height not between 1 and 4096 then
    raise exception 'a logo is at most 4096 pixels on a side' using errcode = 'CXINV', detail = 'logo';
  end if;
  v_sha := encode(sha256(p_logo), 'hex');
  insert into cajex.workspace_branding (workspace_id, logo, logo_type, logo_width, logo_height, logo_sha256, updated_by)
  values ((select cajex.current_workspace_id()), p_logo, p_type, p_width, p_height, v_sha,
          (select cajex.current_user_id()))
  on conflict (workspace_id) do update
    set logo = excluded.logo, logo_type = excluded.logo_type, logo_width = excluded.logo_width,
        logo_height = excluded.logo_height, logo_sha256 = excluded.logo_sha256,
        updated_by = excluded.updated_by, updated_at = now();
  perform cajex_private.write_audit('branding.logo_changed', 'workspace',
                                    (select cajex.current_workspace_id())::text,
                                    jsonb_build_object('sha256', v_sha, 'type', p_type));
  return v_sha;
end;
$$;

create or replace function cajex.remove_logo()
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('branding.change');
  update cajex.workspace_branding b
  set logo = null, logo_type = null, logo_width = null, logo_height = null, logo_sha256 = null,
      updated_by = (select cajex.current_user_id()), updated_at = now()
  where b.workspace_id = (select cajex.current_workspace_id());
  perform cajex_private.write_audit('branding.logo_removed', 'workspace',
                                    (select cajex.current_workspace_id())::text);
end;
$$;

-- What anyone may see of a workspace's branding: its sign-in page and its
-- emails show it before anyone signs in. Colours, name and logo only.
create or replace function cajex.public_branding(p_slug text)
returns table (workspace_id uuid, slug text, name text, primary_colour text, accent_colour text,
               logo_type text, logo_sha256 text, updated_at timestamptz)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select w.id, w.slug, w.name, b.primary_colour, b.accent_colour, b.logo_type, b.logo_sha256, b.updated_at
    from cajex.workspaces w
    left join cajex.workspace_branding b on b.workspace_id = w.id
    where w.slug = p_slug and w.status = 'active';
end;
$$;
alter function cajex.public_branding(text) owner to cajex_definer;

create or replace function cajex.public_branding_by_id(p_workspace_id uuid)
returns table (workspace_id uuid, slug text, name text, primary_colour text, accent_colour text,
               logo_type text, logo_sha256 text, updated_at timestamptz)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select w.id, w.slug, w.name, b.primary_colour, b.accent_colour, b.logo_type, b.logo_sha256, b.updated_at
    from cajex.workspaces w
    left join cajex.workspace_branding b on b.workspace_id = w.id
    where w.id = p_workspace_id and w.status = 'active';
end;
$$;
alter function cajex.public_branding_by_id(uuid) owner to cajex_definer;

create or replace function cajex.public_logo(p_slug text)
returns table (logo bytea, logo_type text, logo_sha256 text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select b.logo, b.logo_type, b.logo_sha256
    from cajex.workspaces w
    join cajex.workspace_branding b on b.workspace_id = w.id
    where w.slug = p_slug and w.status = 'active' and b.logo is not null;
end;
$$;
alter function cajex.public_logo(text) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Where the open workspace's projects may go: the other active workspaces
-- of its organisation in which the caller's role holds project.move. Names
-- only, as cajex.my_workspaces gives them.
create or replace function cajex.project_move_targets()
returns table (workspace_id uuid, slug text, name text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select w.id, w.slug, w.name
    from cajex.workspaces w
    join cajex.memberships m on m.workspace_id = w.id
    join cajex.role_permissions rp on rp.role = m.role and rp.permission = 'project.move'
    where m.user_id = (select cajex.current_user_id())
      and m.status = 'active'
      and w.status = 'active'
      and w.id <> (select cajex.current_workspace_id())
      and w.organisation_id = (select s.organisation_id from cajex.workspaces s
                               where s.id = (select cajex.current_workspace_id()))
    order by w.name, w.slug;
end;
$$;
alter function cajex.project_move_targets() owner to cajex_definer;

-- Moving projects between two workspaces of one organisation. The caller
-- acts in the source workspace's context and needs project.move in both
-- (the source's from the context, the target's from the caller's membership
-- there, read against the same matrix: the context covers one workspace
-- only). Projects move with the rows of other tables that reference them by
-- (workspace_id, project_id), in one transaction; an audit event is written
-- in each workspace. Rows that reference those related rows in turn are not
-- followed: such a move fails as a whole and changes nothing.
create or replace function cajex.move_projects(p_target_slug text, p_project_ids uuid[])
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := (select cajex.current_user_id());
  v_source uuid := (select cajex.current_workspace_id());
  v_target cajex.workspaces;
  v_ids uuid[];
  v_count integer;
  v_fk record;
begin
  if v_user is null or v_source is null then
    raise exception 'no workspace is open for this request' using errcode = 'CXNCX';
  end if;
  perform cajex_private.require_permission('project.move');
  if p_project_ids is null or cardinality(p_project_ids) = 0 or cardinality(p_project_ids) > 1000 then
    raise exception 'choose 1 to 1000 projects' using errcode = 'CXINV', detail = 'projects';
  end if;
  select w.* into v_target from cajex.workspaces w
  where w.slug = p_target_slug and w.status = 'active'
    and w.organisation_id = (select s.organisation_id from cajex.workspaces s where s.id = v_source)
    and w.id <> v_source;
  -- project.move in the target too; the same answer as for a workspace that
  -- does not exist, so the call reveals nothing about other organisations.
  if v_target.id is null or not exists (
       select from cajex.memberships m
       join cajex.role_permissions rp on rp.role = m.role and rp.permission = 'project.move'
       where m.user_id = v_user and m.status = 'active' and m.workspace_id = v_target.id) then
    raise exception 'no workspace of this organisation where you may move projects has that address'
      using errcode = 'CXNFD', detail = 'target';
  end if;
  -- The target's sign-in rules hold as if this session opened it: a
  -- workspace that enforces SSO, or chose its sign-in methods, takes
  -- projects only from a session it would let in (cajex_private.context).
  if exists (
       select from cajex.sessions s
       where s.id = (select c.session_id from cajex_private.context c)
         and ((v_target.sso_enforced and s.sso_workspace_id is distinct from v_target.id)
              or (s.auth_method in ('google', 'apple', 'github', 'magic_link')
                  and exists (select from cajex.workspace_signin_methods sm
                              where sm.workspace_id = v_target.id and s.auth_method <> all (sm.methods))))) then
    raise exception 'the target workspace needs its own sign-in for this session'
      using errcode = 'CXFBD', detail = 'target',
        hint = 'Sign in to the target workspace the way it requires, then move the projects from there.';
  end if;
  perform from cajex.workspaces w where w.id in (v_source, v_target.id) order by w.id for update;
  select array_agg(p.id order by p.id) into v_ids
  from cajex.projects p
  where p.workspace_id = v_source and p.id = any (p_project_ids);
  if v_ids is null or cardinality(v_ids) <> cardinality(array(select distinct unnest(p_project_ids))) then
    raise exception 'some projects are not in this workspace' using errcode = 'CXNFD', detail = 'projects';
  end if;
  perform from cajex.projects p where p.workspace_id = v_source and p.id = any (v_ids) for update;
  insert into cajex.projects (workspace_id, id, name, description, tags, status, created_by, created_at, updated_at)
  select v_target.id, p.id, p.name, p.description, p.tags, p.status, p.created_by, p.created_at, now()
  from cajex.projects p where p.workspace_id = v_source and p.id = any (v_ids);
  -- Related rows: every table with a foreign key (workspace_id, x) to projects.
  for v_fk in
    select c.conrelid::regclass as child, a.attname as col
    from pg_catalog.pg_constraint c
    join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[2]
    join pg_catalog.pg_attribute a1 on a1.attrelid = c.conrelid and a1.attnum = c.conkey[1]
    where c.contype = 'f' and c.confrelid = 'cajex.projects'::regclass
      and cardinality(c.conkey) = 2 and a1.attname = 'workspace_id'
  loop
    execute format('update %s set workspace_id = $1 where workspace_id = $2 and %I = any ($3)',
                   v_fk.child, v_fk.col)
      using v_target.id, v_source, v_ids;
  end loop;
  delete from cajex.projects p where p.workspace_id = v_source and p.id = any (v_ids);
  get diagnostics v_count = row_count;
  insert into cajex.audit_log (workspace_id, actor_user_id, actor, action, target_type, target_id, details)
  values
    (v_source, v_user, 'user', 'project.moved_out', 'workspace', v_target.id::text,
     jsonb_build_object('projects', to_jsonb(v_ids), 'to', v_target.slug)),
    (v_target.id, v_user, 'user', 'project.moved_in', 'workspace', v_source::text,
     jsonb_build_object('projects', to_jsonb(v_ids),
                        'from', (select s.slug from cajex.workspaces s where s.id = v_source)));
  return v_count;
end;
$$;
alter function cajex.move_projects(text, uuid[]) owner to cajex_definer;
