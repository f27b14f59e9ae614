-- Enterprise SSO: configuring connections (admins, the `cajex sso` command)
-- and signing people in through them (a job context of the workspace that
-- the callback opens for the connection named in its URL).
--
-- Configuration functions run as cajex_owner and are bound by RLS. The few
-- functions that must act before any context exists (routing a callback or
-- an email domain) or across users (provisioning, ending sessions) are owned
-- by cajex_definer and scope every statement to the context's workspace
-- themselves.

--------------------------------------------------------------------------------
-- Validation

create or replace function cajex_private.sso_check_url(p_url text, p_field text)
returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_url is not null and (char_length(p_url) > 2000 or p_url !~ '^https?://[^\s/?#]+[^\s]*$') then
    raise exception '% must be an http(s) URL', p_field
      using errcode = 'CXINV', detail = p_field, hint = 'Copy the URL from the identity provider.';
  end if;
end;
$$;

-- The fields a caller may set, validated and applied onto p_row.
create or replace function cajex_private.sso_apply_config(p_row cajex.sso_connections, p_config jsonb)
returns cajex.sso_connections
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  v_unknown text;
  v_cert text;
  c_text constant text[] := array['name', 'oidc_issuer', 'oidc_discovery_url', 'oidc_client_id',
    'saml_idp_entity_id', 'saml_sso_url', 'saml_slo_url', 'saml_metadata_url', 'default_role'];
  c_bool constant text[] := array['allow_idp_initiated', 'allow_sha1', 'sign_requests'];
begin
  if p_config is null or jsonb_typeof(p_config) <> 'object' then
    raise exception 'the configuration must be an object' using errcode = 'CXINV';
  end if;
  select k into v_unknown from jsonb_object_keys(p_config) k
  where k <> all (c_text || c_bool || array['saml_certificates', 'clock_skew_seconds', 'settings'])
  limit 1;
  if v_unknown is not null then
    raise exception 'unknown field %', v_unknown using errcode = 'CXINV', detail = v_unknown;
  end if;
  select k into v_unknown from jsonb_object_keys(p_config) k
  where (k = any (c_text) and jsonb_typeof(p_config -> k) not in ('string', 'null'))
     or (k = any (c_bool) and jsonb_typeof(p_config -> k) <> 'boolean')
     or (k = 'saml_certificates' and jsonb_typeof(p_config -> k) <> 'array')
     or (k = 'clock_skew_seconds' and jsonb_typeof(p_config -> k) <> 'number')
     or (k = 'settings' and jsonb_typeof(p_config -> k) <> 'object')
  limit 1;
  if v_unknown is not null then
    raise exception '% has the wrong type', v_unknown using errcode = 'CXINV', detail = v_unknown;
  end if;

  if p_config ? 'name' then p_row.name := btrim(p_config ->> 'name'); end if;
  if p_config ? 'oidc_issuer' then p_row.oidc_issuer := btrim(p_config ->> 'oidc_issuer'); end if;
  if p_config ? 'oidc_discovery_url' then
    p_row.oidc_discovery_url := nullif(btrim(p_config ->> 'oidc_discovery_url'), '');
  end if;
  if p_config ? 'oidc_client_id' then p_row.oidc_client_id := btrim(p_config ->> 'oidc_client_id'); end if;
  if p_config ? 'saml_idp_entity_id' then
    p_row.saml_idp_entity_id := btrim(p_config ->> 'saml_idp_entity_id');
  end if;
  if p_config ? 'saml_sso_url' then p_row.saml_sso_url := btrim(p_config ->> 'saml_sso_url'); end if;
  if p_config ? 'saml_slo_url' then p_row.saml_slo_url := nullif(btrim(p_config ->> 'saml_slo_url'), ''); end if;
  if p_config ? 'saml_metadata_url' then
    p_row.saml_metadata_url := nullif(btrim(p_config ->> 'saml_metadata_url'), '');
  end if;
  if p_config ? 'default_role' then p_row.default_role := p_config ->> 'default_role'; end if;
  if p_config ? 'allow_idp_initiated' then
    p_row.allow_idp_initiated := (p_config ->> 'allow_idp_initiated')::boolean;
  end if;
  if p_config ? 'allow_sha1' then p_row.allow_sha1 := (p_config ->> 'allow_sha1')::boolean; end if;
  if p_config ? 'sign_requests' then p_row.sign_requests := (p_config ->> 'sign_requests')::boolean; end if;
  if p_config ? 'clock_skew_seconds' then
    if (p_config ->> 'clock_skew_seconds') !~ '^[0-9]{1,3}$'
       or (p_config ->> 'clock_skew_seconds')::int > 600 then
      raise exception 'the clock skew is 0 to 600 seconds' using errcode = 'CXINV', detail = 'clock_skew_seconds';
    end if;
    p_row.clock_skew_seconds := (p_config ->> 'clock_skew_seconds')::int;
  end if;
  if p_config ? 'settings' then p_row.settings := p_config -> 'settings'; end if;
  if p_config ? 'saml_certificates' then
    p_row.saml_certificates := array(select jsonb_array_elements_text(p_config -> 'saml_certificates'));
    foreach v_cert in array p_row.saml_certificates loop
      -- Python parsed each certificate; here only the shape is kept honest.
      if v_cert !~ '^-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----\s*$'
         or char_length(v_cert) > 16384 then
        raise exception 'a signing certificate is one PEM certificate'
          using errcode = 'CXINV', detail = 'saml_certificates',
            hint = 'Download the signing certificate (Base64) from the identity provider.';
      end if;
    end loop;
  end if;

  if p_row.name is null or char_length(p_row.name) not between 1 and 200 then
    raise exception 'a connection name has 1 to 200 characters' using errcode = 'CXINV', detail = 'name';
  end if;
  if p_row.default_role not in ('admin', 'member', 'viewer') then
    raise exception 'the default role is admin, member or viewer' using errcode = 'CXINV', detail = 'default_role';
  end if;
  -- Everyone a connection provisions would be an admin: as with invitations
  -- and role changes, only the owner grants that.
  if p_config ? 'default_role' and p_row.default_role = 'admin'
     and (select cajex.current_member_role()) not in ('owner', 'system') then
    raise exception 'only the owner makes the people a connection provisions admins'
      using errcode = 'CXFBD', detail = 'default_role';
  end if;
  perform cajex_private.sso_check_url(p_row.oidc_issuer, 'oidc_issuer');
  perform cajex_private.sso_check_url(p_row.oidc_discovery_url, 'oidc_discovery_url');
  perform cajex_private.sso_check_url(p_row.saml_sso_url, 'saml_sso_url');
  perform cajex_private.sso_check_url(p_row.saml_slo_url, 'saml_slo_url');
  perform cajex_private.sso_check_url(p_row.saml_metadata_url, 'saml_metadata_url');
  if p_row.type = 'oidc' and (coalesce(p_row.oidc_issuer, '') = '' or coalesce(p_row.oidc_client_id, '') = '') then
    raise exception 'an OIDC connection needs an issuer and a client id'
      using errcode = 'CXINV', detail = 'oidc_issuer';
  end if;
  if p_row.type = 'saml' and (coalesce(p_row.saml_idp_entity_id, '') = '' or p_row.saml_sso_url is null
                              or cardinality(p_row.saml_certificates) = 0) then
    raise exception 'a SAML connection needs the IdP entity id, its sign-in URL and a signing certificate'
      using errcode = 'CXINV', detail = 'saml_metadata',
        hint = 'Upload the identity provider''s metadata XML.';
  end if;
  if cardinality(p_row.saml_certificates) > 8 then
    raise exception 'at most 8 signing certificates' using errcode = 'CXINV', detail = 'saml_certificates';
  end if;
  return p_row;
end;
$$;

--------------------------------------------------------------------------------
-- Configuring connections

create or replace function cajex.create_sso_connection(p_type text, p_config jsonb)
returns cajex.sso_connections
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.sso_connections;
begin
  perform cajex_private.require_permission('sso.configure');
  perform cajex_private.require_feature('sso');
  if p_type is null or p_type not in ('oidc', 'saml') then
    raise exception 'a connection is oidc or saml' using errcode = 'CXINV', detail = 'type';
  end if;
  v_row.type := p_type;
  v_row.default_role := 'member';
  v_row.clock_skew_seconds := 120;
  v_row.saml_certificates := '{}';
  v_row.settings := '{}';
  v_row.allow_idp_initiated := false;
  v_row.allow_sha1 := false;
  v_row.sign_requests := false;
  v_row := cajex_private.sso_apply_config(v_row, p_config);
  insert into cajex.sso_connections
    (workspace_id, type, name, oidc_issuer, oidc_discovery_url, oidc_client_id,
     saml_idp_entity_id, saml_sso_url, saml_slo_url, saml_certificates, saml_metadata_url,
     allow_idp_initiated, allow_sha1, sign_requests, default_role, clock_skew_seconds, settings,
     created_by)
  values ((select cajex.current_workspace_id()), v_row.type, v_row.name, v_row.oidc_issuer,
          v_row.oidc_discovery_url, v_row.oidc_client_id, v_row.saml_idp_entity_id, v_row.saml_sso_url,
          v_row.saml_slo_url, v_row.saml_certificates, v_row.saml_metadata_url, v_row.allow_idp_initiated,
          v_row.allow_sha1, v_row.sign_requests, v_row.default_role, v_row.clock_skew_seconds,
          v_row.settings, (select cajex.current_user_id()))
  returning * into v_row;
  perform cajex_private.write_audit('sso.connection_created', 'sso_connection', v_row.id::text,
                                    jsonb_build_object('type', v_row.type, 'name', v_row.name));
  return v_row;
end;
$$;

create or replace function cajex.update_sso_connection(p_id uuid, p_changes jsonb)
returns cajex.sso_connections
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.sso_connections;
begin
  perform cajex_private.require_permission('sso.configure');
  perform cajex_private.require_feature('sso');
  select * into v_row from cajex.sso_connections c where c.id = p_id for update;
  if not found then
    raise exception 'no such SSO connection' using errcode = 'CXNFD', detail = 'connection';
  end if;
  v_row := cajex_private.sso_apply_config(v_row, p_changes);
  update cajex.sso_connections c
  set name = v_row.name, oidc_issuer = v_row.oidc_issuer, oidc_discovery_url = v_row.oidc_discovery_url,
      oidc_client_id = v_row.oidc_client_id, saml_idp_entity_id = v_row.saml_idp_entity_id,
      saml_sso_url = v_row.saml_sso_url, saml_slo_url = v_row.saml_slo_url,
      saml_certificates = v_row.saml_certificates, saml_metadata_url = v_row.saml_metadata_url,
      allow_idp_initiated = v_row.allow_idp_initiated, allow_sha1 = v_row.allow_sha1,
      sign_requests = v_row.sign_requests, default_role = v_row.default_role,
      clock_skew_seconds = v_row.clock_skew_seconds, settings = v_row.settings, updated_at = now()
  where c.id = p_id
  returning * into v_row;
  perform cajex_private.write_audit('sso.connection_updated', 'sso_connection', p_id::text,
    jsonb_build_object('fields', (select jsonb_agg(k) from jsonb_object_keys(p_changes) k)));
  return v_row;
end;
$$;

-- The client secret arrives sealed (cajex/crypto.py, bound to this row).
create or replace function cajex.set_sso_client_secret(p_id uuid, p_sealed bytea)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('sso.configure');
  if p_sealed is null or octet_length(p_sealed) not between 33 and 4096 then
    raise exception 'the client secret must be sealed' using errcode = 'CXINV', detail = 'client_secret';
  end if;
  update cajex.sso_connections c set oidc_client_secret = p_sealed, updated_at = now()
  where c.id = p_id and c.type = 'oidc';
  if not found then
    raise exception 'no such OIDC connection' using errcode = 'CXNFD', detail = 'connection';
  end if;
  perform cajex_private.write_audit('sso.client_secret_set', 'sso_connection', p_id::text, '{}');
end;
$$;

create or replace function cajex.set_sso_connection_status(p_id uuid, p_status text)
returns cajex.sso_connections
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_row cajex.sso_connections;
begin
  perform cajex_private.require_permission('sso.configure');
  if p_status is null or p_status not in ('enabled', 'disabled') then
    raise exception 'a connection is enabled or disabled' using errcode = 'CXINV', detail = 'status';
  end if;
  if p_status = 'enabled' then
    perform cajex_private.hold_plan();
    perform cajex_private.require_feature('sso');
  end if;
  update cajex.sso_connections c set status = p_status, updated_at = now()
  where c.id = p_id
  returning * into v_row;
  if not found then
    raise exception 'no such SSO connection' using errcode = 'CXNFD', detail = 'connection';
  end if;
  if v_row.type = 'oidc' and p_status = 'enabled' and v_row.oidc_client_secret is null
     and not coalesce((v_row.settings ->> 'public_client')::boolean, false) then
    raise exception 'set the client secret before enabling this connection'
      using errcode = 'CXINV', detail = 'client_secret';
  end if;
  if p_status = 'disabled' then
    perform cajex_private.sso_end_connection_sessions(p_id, 'sso_connection_disabled');
  end if;
  perform cajex_private.write_audit('sso.connection_' || p_status, 'sso_connection', p_id::text, '{}');
  return v_row;
end;
$$;

create or replace function cajex.mark_sso_connection_tested(p_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('sso.configure');
  update cajex.sso_connections c set last_tested_at = now() where c.id = p_id;
  if not found then
    raise exception 'no such SSO connection' using errcode = 'CXNFD', detail = 'connection';
  end if;
  perform cajex_private.write_audit('sso.connection_tested', 'sso_connection', p_id::text, '{}');
end;
$$;

create or replace function cajex.delete_sso_connection(p_id uuid)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('sso.configure');
  if not exists (select from cajex.sso_connections c where c.id = p_id) then
    raise exception 'no such SSO connection' using errcode = 'CXNFD', detail = 'connection';
  end if;
  -- Sessions it opened end with it: removing an IdP is an offboarding too.
  perform cajex_private.sso_end_connection_sessions(p_id, 'sso_connection_removed');
  delete from cajex.sso_connections c where c.id = p_id;
  if not exists (select from cajex.sso_connections c where c.status = 'enabled') then
    update cajex.workspaces w set sso_enforced = false
    where w.id = (select cajex.current_workspace_id()) and w.sso_enforced;
  end if;
  perform cajex_private.write_audit('sso.connection_removed', 'sso_connection', p_id::text, '{}');
end;
$$;

-- Enforcement: members then reach the workspace only with a session its own
-- IdP opened (checked by cajex_private.context / install_context).
create or replace function cajex.set_sso_enforced(p_enforced boolean)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('sso.configure');
  if p_enforced is null then
    raise exception 'enforced is true or false' using errcode = 'CXINV', detail = 'enforced';
  end if;
  if p_enforced then
    perform cajex_private.require_feature('sso');
    if not exists (select from cajex.sso_connections c where c.status = 'enabled') then
      raise exception 'enable an SSO connection before enforcing SSO'
        using errcode = 'CXINV', detail = 'enforced',
          hint = 'Otherwise nobody, you included, could reach this workspace.';
    end if;
  end if;
  update cajex.workspaces w set sso_enforced = p_enforced
  where w.id = (select cajex.current_workspace_id());
  perform cajex_private.write_audit('sso.enforcement_changed', 'workspace',
    (select cajex.current_workspace_id())::text, jsonb_build_object('enforced', p_enforced));
end;
$$;

--------------------------------------------------------------------------------
-- Email domains

-- Mail domains anyone can have an address at: no organisation controls one,
-- so none can be claimed (its IdP would speak for every address there).
create or replace function cajex_private.is_public_mail_domain(p_domain text)
returns boolean
language sql
immutable
parallel safe
as $$
  select lower(p_domain) = any (array[
    'gmail.com', 'googlemail.com', 'outlook.com', 'hotmail.com', 'hotmail.co.uk',
    'hotmail.fr', 'live.com', 'live.co.uk', 'msn.com', 'passport.com', 'yahoo.com',
    'yahoo.co.uk', 'yahoo.fr', 'yahoo.de', 'yahoo.co.jp', 'ymail.com', 'rocketmail.com',
    'aol.com', 'icloud.com', 'me.com', 'mac.com', 'proton.me', 'protonmail.com',
    'protonmail.ch', 'pm.me', 'tutanota.com', 'tuta.io', 'zoho.com', 'zohomail.com',
    'gmx.com', 'gmx.net', 'gmx.de', 'web.de', 't-online.de', 'mail.com', 'email.com',
    'yandex.com', 'yandex.ru', 'mail.ru', 'inbox.ru', 'bk.ru', 'list.ru', 'qq.com',
    '163.com', '126.com', 'sina.com', 'naver.com', 'daum.net', 'hanmail.net',
    'fastmail.com', 'fastmail.fm', 'hey.com', 'orange.fr', 'wanadoo.fr', 'free.fr',
    'laposte.net', 'libero.it', 'virgilio.it', 'btinternet.com', 'comcast.net',
    'verizon.net', 'att.net', 'sbcglobal.net', 'rediffmail.com', 'seznam.cz',
    'example.com', 'example.org', 'example.net'
  ])
$$;

-- Claim an email domain for a connection. The platform's operator (the
-- `cajex sso claim-domain` command, a job context with no user) vouches for
-- it at once. An admin's claim is pending: it routes nobody, and no IdP
-- speaks for an address there, until the TXT record
-- _cajex-challenge.<domain> holds the value returned here (the worker
-- checks, cajex_private.record_sso_domain_check). Several workspaces may
-- have a pending claim; the first proven one routes the domain.
drop function if exists cajex.claim_sso_domain(uuid, text);
create or replace function cajex.claim_sso_domain(p_connection_id uuid, p_domain text)
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_domain text := lower(btrim(p_domain));
  v_operator boolean := (select cajex.current_user_id()) is null;
  v_token text;
begin
  perform cajex_private.require_permission('sso.configure');
  perform cajex_private.require_feature('sso');
  if v_domain is null or char_length(v_domain) not between 3 and 253
     or v_domain !~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$' then
    raise exception 'that is not a domain name' using errcode = 'CXINV', detail = 'domain';
  end if;
  if cajex_private.is_public_mail_domain(v_domain) then
    raise exception 'a public email domain cannot be claimed' using errcode = 'CXINV', detail = 'domain',
      hint = 'Claim the domain your organisation''s own addresses are at.';
  end if;
  if not exists (select from cajex.sso_connections c where c.id = p_connection_id) then
    raise exception 'no such SSO connection' using errcode = 'CXNFD', detail = 'connection';
  end if;
  if not v_operator then
    v_token := encode(extensions.gen_random_bytes(16), 'hex');
  end if;
  insert into cajex.sso_domains
    (workspace_id, domain, connection_id, verification_token, verified_at, last_check)
  values ((select cajex.current_workspace_id()), v_domain, p_connection_id, v_token,
          case when v_operator then now() end,
          case when v_operator then 'verified' else 'pending' end);
  perform cajex_private.write_audit('sso.domain_claimed', 'sso_connection', p_connection_id::text,
                                    jsonb_build_object('domain', v_domain, 'verified', v_operator));
  if v_operator then
    return null;
  end if;
  -- The first check now; an admin asks again with cajex.recheck_sso_domain.
  perform cajex_private.enqueue_job('sso.verify_domain', jsonb_build_object('domain', v_domain),
                                    'sso-verify-domain:' || v_domain);
  return 'cajex-domain-verification=' || v_token;
exception when unique_violation then
  raise exception 'that domain is already claimed' using errcode = 'CXDUP', detail = 'domain';
end;
$$;

-- Check a pending claim's DNS record again (the settings page's button).
create or replace function cajex.recheck_sso_domain(p_domain text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_domain text := lower(btrim(p_domain));
begin
  perform cajex_private.require_permission('sso.configure');
  if not exists (select from cajex.sso_domains d
                 where d.domain = v_domain and d.workspace_id = (select cajex.current_workspace_id())
                   and d.verified_at is null) then
    raise exception 'no pending claim of that domain' using errcode = 'CXNFD', detail = 'domain';
  end if;
  perform cajex_private.enqueue_job('sso.verify_domain', jsonb_build_object('domain', v_domain),
                                    'sso-verify-domain:' || v_domain);
end;
$$;

-- What the worker found at _cajex-challenge.<domain> (every TXT string) for
-- one workspace's pending claim: 'verified' (the claim's value is there; the
-- domain now routes to its connection), 'claimed_elsewhere' (another
-- workspace proved it first), 'not_found' ('given_up' a week after the
-- claim), or 'gone' (no pending claim).
-- The worker's alone: it is what vouches for DNS.
create or replace function cajex_private.record_sso_domain_check(
  p_workspace_id uuid, p_domain text, p_records text[])
returns text
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_claim cajex.sso_domains;
  v_outcome text;
begin
  select * into v_claim from cajex.sso_domains d
  where d.workspace_id = p_workspace_id and d.domain = lower(p_domain)
  for update;
  if not found or v_claim.verified_at is not null or v_claim.verification_token is null then
    return 'gone';
  end if;
  if ('cajex-domain-verification=' || v_claim.verification_token) = any (coalesce(p_records, '{}')) then
    begin
      update cajex.sso_domains d set verified_at = now(), last_checked_at = now(), last_check = 'verified'
      where d.workspace_id = p_workspace_id and d.domain = v_claim.domain;
      v_outcome := 'verified';
    exception when unique_violation then
      v_outcome := 'claimed_elsewhere';
    end;
  else
    v_outcome := 'not_found';
  end if;
  if v_outcome <> 'verified' then
    update cajex.sso_domains d set last_checked_at = now(), last_check = v_outcome
    where d.workspace_id = p_workspace_id and d.domain = v_claim.domain;
  end if;
  insert into cajex.audit_log (workspace_id, actor, action, target_type, target_id, details)
  values (p_workspace_id, 'system', 'sso.domain_checked', 'sso_connection', v_claim.connection_id::text,
          jsonb_build_object('domain', v_claim.domain, 'outcome', v_outcome));
  -- The worker keeps checking a week; after that only the admin's button.
  if v_outcome = 'not_found' and v_claim.created_at < now() - interval '7 days' then
    return 'given_up';
  end if;
  return v_outcome;
end;
$$;
alter function cajex_private.record_sso_domain_check(uuid, text, text[]) owner to cajex_definer;

create or replace function cajex.release_sso_domain(p_domain text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('sso.configure');
  delete from cajex.sso_domains d where d.domain = lower(btrim(p_domain));
  if not found then
    raise exception 'no such domain here' using errcode = 'CXNFD', detail = 'domain';
  end if;
  perform cajex_private.write_audit('sso.domain_released', 'workspace',
    (select cajex.current_workspace_id())::text, jsonb_build_object('domain', lower(btrim(p_domain))));
end;
$$;

-- The platform-wide route of each claimed domain: one connection per domain.
create or replace function cajex_private.sso_domain_route()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Only a proven claim routes (see cajex.claim_sso_domain).
  if tg_op in ('INSERT', 'UPDATE') then
    if new.verified_at is not null and (tg_op = 'INSERT' or old.verified_at is null) then
      insert into cajex_private.sso_domain_routes (domain, workspace_id, connection_id)
      values (new.domain, new.workspace_id, new.connection_id);
    end if;
    return new;
  end if;
  delete from cajex_private.sso_domain_routes r
  where r.domain = old.domain and r.workspace_id = old.workspace_id;
  return old;
end;
$$;
alter function cajex_private.sso_domain_route() owner to cajex_definer;

-- A workspace whose plan no longer includes SSO (a Stripe cancellation or
-- portal switch, which the plan-change checks cannot stop) stops enforcing
-- it: enforcement with SSO sign-in refused (cajex_private.sso_provision
-- requires the feature) would lock every member out, the owner and the
-- billing page included. Recorded in the workspace's audit log.
create or replace function cajex_private.plan_lifts_sso_enforcement()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.sso_enforced and new.plan is distinct from old.plan
     and not exists (select from cajex.plans p where p.code = new.plan and 'sso' = any (p.features)) then
    new.sso_enforced := false;
    insert into cajex.audit_log (workspace_id, actor, action, target_type, target_id, details)
    values (new.id, 'system', 'sso.enforcement_lifted', 'workspace', new.id::text,
            jsonb_build_object('reason', 'plan', 'plan', new.plan));
  end if;
  return new;
end;
$$;
alter function cajex_private.plan_lifts_sso_enforcement() owner to cajex_definer;

drop trigger if exists workspaces_plan_lifts_sso_enforcement on cajex.workspaces;
create trigger workspaces_plan_lifts_sso_enforcement
  before update of plan on cajex.workspaces
  for each row execute function cajex_private.plan_lifts_sso_enforcement();

drop trigger if exists sso_domains_route on cajex.sso_domains;
create trigger sso_domains_route
  after insert or delete or update of verified_at on cajex.sso_domains
  for each row execute function cajex_private.sso_domain_route();

--------------------------------------------------------------------------------
-- Routing before any context exists (definer, public facts only).

-- The workspace of an enabled connection named in a callback URL.
create or replace function cajex.sso_connection_route(p_connection_id uuid)
returns table (workspace_id uuid, workspace_slug text, type text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select c.workspace_id, w.slug, c.type
    from cajex.sso_connections c
    join cajex.workspaces w on w.id = c.workspace_id and w.status = 'active'
    where c.id = p_connection_id and c.status = 'enabled';
end;
$$;
alter function cajex.sso_connection_route(uuid) owner to cajex_definer;

-- "Sign in with SSO": the enabled connection that claimed the address's domain.
create or replace function cajex.sso_route_for_email(p_email text)
returns table (connection_id uuid, workspace_id uuid, workspace_slug text, type text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select c.id, c.workspace_id, w.slug, c.type
    from cajex_private.sso_domain_routes r
    join cajex.sso_connections c on c.workspace_id = r.workspace_id and c.id = r.connection_id
    join cajex.workspaces w on w.id = c.workspace_id and w.status = 'active'
    where r.domain = split_part(lower(btrim(p_email)), '@', 2)
      and c.status = 'enabled';
end;
$$;
alter function cajex.sso_route_for_email(text) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Sign-in state (a job context of the connection's workspace).

create or replace function cajex.sso_begin_request(
  p_connection_id uuid, p_request_id text, p_kind text, p_ttl_seconds integer default 600)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('sso.signin');
  delete from cajex.sso_requests r where r.expires_at < now();
  insert into cajex.sso_requests (workspace_id, request_id, connection_id, kind, expires_at)
  values ((select cajex.current_workspace_id()), p_request_id, p_connection_id, p_kind,
          now() + make_interval(secs => least(greatest(p_ttl_seconds, 30), 3600)));
end;
$$;

-- True once for a live request of this connection and kind; consumed.
create or replace function cajex.sso_consume_request(p_connection_id uuid, p_request_id text, p_kind text)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform cajex_private.require_permission('sso.signin');
  delete from cajex.sso_requests r
  where r.request_id = p_request_id and r.connection_id = p_connection_id and r.kind = p_kind
    and r.expires_at >= now();
  return found;
end;
$$;

-- True the first time an id is seen for this connection (kept until it
-- expires); false for a replay.
create or replace function cajex.sso_remember_once(
  p_connection_id uuid, p_kind text, p_item_id text, p_expires_at timestamptz)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_new boolean;
begin
  perform cajex_private.require_permission('sso.signin');
  delete from cajex.sso_replay_cache r where r.expires_at < now() - interval '1 hour';
  insert into cajex.sso_replay_cache (workspace_id, connection_id, kind, item_id, expires_at)
  values ((select cajex.current_workspace_id()), p_connection_id, p_kind, p_item_id,
          -- Keep at least an hour past now: a skewed clock never shortens it.
          greatest(p_expires_at, now() + interval '1 hour'))
  on conflict do nothing
  returning true into v_new;
  return coalesce(v_new, false);
end;
$$;

--------------------------------------------------------------------------------
-- Provisioning: who the IdP vouched for becomes (or stays) a member, with a
-- role from their groups. Definer: it creates users and memberships and reads
-- users by email; every statement names the context's workspace.
create or replace function cajex_private.sso_provision(
  p_connection_id uuid,
  p_subject text,
  p_email text,
  p_display_name text,
  p_groups text[],
  p_groups_known boolean
)
returns table (user_id uuid, role text, created boolean)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_conn cajex.sso_connections;
  v_user uuid;
  v_email text := cajex_private.normalise_email(p_email);
  v_current text;
  v_role text;
  v_created boolean := false;
begin
  perform cajex_private.require_permission('sso.signin');
  perform cajex_private.require_feature('sso');
  select * into v_conn from cajex.sso_connections c
  where c.workspace_id = v_ws and c.id = p_connection_id and c.status = 'enabled';
  if not found then
    raise exception 'this SSO connection is not enabled' using errcode = 'CXNFD', detail = 'connection';
  end if;
  if p_subject is null or char_length(p_subject) not between 1 and 1024 then
    raise exception 'the identity provider sent no subject' using errcode = 'CXINV', detail = 'subject';
  end if;
  if cardinality(coalesce(p_groups, '{}')) > 1000 then
    raise exception 'too many groups' using errcode = 'CXINV', detail = 'groups';
  end if;

  select i.user_id into v_user from cajex.sso_identities i
  where i.workspace_id = v_ws and i.connection_id = p_connection_id and i.subject = p_subject;
  if v_user is null then
    -- First sign-in of this subject: its address is trusted only within the
    -- domains this workspace claimed, so an IdP can never speak for someone
    -- at a domain it does not control (and take over their account).
    if v_email is null or not exists (
        select from cajex_private.sso_domain_routes r
        where r.workspace_id = v_ws and r.domain = split_part(v_email, '@', 2)) then
      raise exception 'the address is not in a domain this workspace claimed'
        using errcode = 'CXFBD', detail = 'domain',
          hint = 'Claim the email domain for this connection in the SSO settings.';
    end if;
    v_user := cajex_private.ensure_user(v_email, p_display_name);
    insert into cajex.sso_identities (workspace_id, connection_id, subject, user_id, groups, groups_known)
    values (v_ws, p_connection_id, p_subject, v_user, coalesce(p_groups, '{}'), p_groups_known);
  else
    update cajex.sso_identities i
    set last_sign_in_at = now(),
        groups = case when p_groups_known then coalesce(p_groups, '{}') else i.groups end,
        groups_known = p_groups_known
    where i.workspace_id = v_ws and i.connection_id = p_connection_id and i.subject = p_subject;
  end if;
  if exists (select from cajex.users u where u.id = v_user and u.disabled_at is not null) then
    raise exception 'this account is disabled' using errcode = 'CXFBD', detail = 'user';
  end if;

  select m.status into v_current from cajex.memberships m
  where m.workspace_id = v_ws and m.user_id = v_user
  for update;
  -- Deactivated (SCIM active: false, docs/scim.md): only SCIM's active: true
  -- restores it. A sign-in must not undo the deactivation, nor take a seat.
  if v_current = 'deactivated' then
    raise exception 'your access to this workspace was deactivated by its administrators'
      using errcode = 'CXFBD', detail = 'membership',
        hint = 'Ask the workspace''s administrators to restore your access.';
  end if;
  if v_current is null then
    -- Just-in-time provisioning with the connection's default role, only
    -- for someone with no membership at all.
    perform cajex_private.require_seat(v_ws);
    insert into cajex.memberships (workspace_id, user_id, role)
    values (v_ws, v_user, v_conn.default_role)
    on conflict on constraint memberships_pkey do nothing;
    v_created := found;
    if v_created then
      perform cajex_private.write_audit('sso.member_provisioned', 'user', v_user::text,
        jsonb_build_object('role', v_conn.default_role, 'connection_id', p_connection_id));
    end if;
  end if;
  -- Group-based roles (cajex.group_role_mappings, shared with SCIM),
  -- re-evaluated at every sign-in. Unknown groups (Entra's overage
  -- indicator) change nothing: neither the recorded groups nor the role.
  if p_groups_known then
    v_role := cajex_private.set_member_groups(v_ws, v_user, 'sso', coalesce(p_groups, '{}'));
  end if;
  if v_role is null then
    select m.role into v_role from cajex.memberships m
    where m.workspace_id = v_ws and m.user_id = v_user;
  end if;
  perform cajex_private.write_audit('sso.signed_in', 'user', v_user::text,
    jsonb_build_object('connection_id', p_connection_id, 'groups_known', p_groups_known));
  return query select v_user, v_role, v_created;
end;
$$;
alter function cajex_private.sso_provision(uuid, text, text, text, text[], boolean) owner to cajex_definer;

--------------------------------------------------------------------------------
-- Ending sessions an IdP opened.

-- Single logout / back-channel logout: the sessions of this connection with
-- that IdP session id, or else that subject. Returns how many ended.
create or replace function cajex_private.sso_logout(
  p_connection_id uuid, p_subject text, p_idp_session_id text, p_reason text)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_session uuid;
  v_count integer := 0;
begin
  perform cajex_private.require_permission('sso.signin');
  -- Definer: RLS does not scope this function, so the connection must be
  -- the context's own before any session is looked at.
  if not exists (select from cajex.sso_connections c where c.workspace_id = v_ws and c.id = p_connection_id) then
    raise exception 'no such SSO connection' using errcode = 'CXNFD', detail = 'connection';
  end if;
  if p_subject is null and p_idp_session_id is null then
    raise exception 'a logout names a subject or a session' using errcode = 'CXINV', detail = 'subject';
  end if;
  for v_session in
    select s.id from cajex.sessions s
    where s.sso_workspace_id = v_ws and s.sso_connection_id = p_connection_id
      and s.revoked_at is null
      and (case when p_idp_session_id is not null then s.idp_session_id = p_idp_session_id
                else s.idp_subject = p_subject end)
      and (p_subject is null or s.idp_subject = p_subject)
  loop
    v_count := v_count + cajex_private.revoke_sessions(null, p_reason, v_session);
  end loop;
  perform cajex_private.write_audit('sso.logout', 'sso_connection', p_connection_id::text,
    jsonb_build_object('sessions', v_count, 'reason', p_reason));
  return v_count;
end;
$$;
alter function cajex_private.sso_logout(uuid, text, text, text) owner to cajex_definer;

create or replace function cajex_private.sso_end_connection_sessions(p_connection_id uuid, p_reason text)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_session uuid;
  v_count integer := 0;
begin
  if v_ws is null then
    raise exception 'no workspace is open for this request' using errcode = 'CXNCX';
  end if;
  for v_session in
    select s.id from cajex.sessions s
    where s.sso_workspace_id = v_ws and s.sso_connection_id = p_connection_id and s.revoked_at is null
  loop
    v_count := v_count + cajex_private.revoke_sessions(null, p_reason, v_session);
  end loop;
  return v_count;
end;
$$;
alter function cajex_private.sso_end_connection_sessions(uuid, text) owner to cajex_definer;

-- The `cajex sso` command names a workspace by slug; it then acts through a
-- verified job context of that id (cajex.db.as_service). Slugs are public
-- routing names, so telling their id leaks nothing a URL does not.
create or replace function cajex_private.sso_workspace_by_slug(p_slug text)
returns uuid
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select w.id from cajex.workspaces w where w.slug = p_slug and w.status = 'active');
end;
$$;
alter function cajex_private.sso_workspace_by_slug(text) owner to cajex_definer;
