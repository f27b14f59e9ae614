-- The onboarding wizard's first-run defaults. The wizard's progress lives in
-- cajex.onboarding_drafts (db/schema/0400_members.sql), written by
-- cajex.save_onboarding_draft; the workspace itself is made by
-- cajex.create_workspace. This file holds what the wizard's defaults step
-- changes in the new workspace, in one call.

--------------------------------------------------------------------------------
-- First-run defaults of the open workspace: the role invitations propose for
-- new members, the sign-in methods its sign-in page allows (the same table
-- cajex.set_signin_methods writes, which the sign-in flows check), whether
-- AI starts on, and the starter project tags. Runs as cajex_owner, so
-- forced RLS keeps every write inside the context's workspace. Switching AI
-- on also needs a provider key, which the caller saves in the same
-- transaction through cajex.ai_update_settings.
create or replace function cajex.apply_onboarding_defaults(
  p_default_role text,
  p_sign_in_methods text[],
  p_ai_enabled boolean,
  p_project_tags text[]
)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_ws uuid := (select cajex.current_workspace_id());
  v_tags text[];
begin
  perform cajex_private.require_permission('workspace.settings');
  if p_default_role is null or p_default_role not in ('admin', 'member', 'viewer') then
    raise exception 'the default role is admin, member or viewer'
      using errcode = 'CXINV', detail = 'default_role';
  end if;
  if p_ai_enabled is null then
    raise exception 'say whether AI features start on or off'
      using errcode = 'CXINV', detail = 'ai_enabled';
  end if;
  if p_ai_enabled then
    perform cajex_private.require_permission('ai.configure');
  end if;
  -- Tags are trimmed and deduplicated (case-insensitively), keeping the
  -- order they were given in.
  select coalesce(array_agg(d.tag order by d.n), '{}') into v_tags
  from (select distinct on (lower(btrim(x.tag))) btrim(x.tag) as tag, x.n
        from unnest(coalesce(p_project_tags, '{}')) with ordinality as x (tag, n)
        where btrim(coalesce(x.tag, '')) <> ''
        order by lower(btrim(x.tag)), x.n) d;
  if cardinality(v_tags) > 32
     or exists (select from unnest(v_tags) t where t !~ '^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$') then
    raise exception 'at most 32 tags of 1 to 40 letters, digits, spaces, dots, dashes or underscores'
      using errcode = 'CXINV', detail = 'project_tags';
  end if;
  -- Validates the methods (CXINV, detail 'methods') and audits the change.
  perform cajex.set_signin_methods(p_sign_in_methods);
  update cajex.workspaces w
  set settings = w.settings || jsonb_build_object(
        'default_role', p_default_role,
        'ai_enabled', p_ai_enabled,
        'project_tags', to_jsonb(v_tags))
  where w.id = v_ws;
  perform cajex_private.write_audit('workspace.defaults_set', 'workspace', v_ws::text,
                                    jsonb_build_object('default_role', p_default_role,
                                                       'ai_enabled', p_ai_enabled,
                                                       'project_tags', cardinality(v_tags)));
end;
$$;
comment on function cajex.apply_onboarding_defaults(text, text[], boolean, text[]) is
  'Set the open workspace''s first-run defaults (default role, sign-in methods, AI on or off, '
  'starter tags); needs workspace.settings, and ai.configure to start AI on.';
grant execute on function cajex.apply_onboarding_defaults(text, text[], boolean, text[]) to cajex_app;

-- The first-run defaults of the open workspace, for the wizard and the
-- projects page (any member: tags are suggestions, the role a proposal).
create or replace function cajex.workspace_defaults()
returns table (default_role text, ai_enabled boolean, project_tags text[])
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select coalesce(w.settings ->> 'default_role', 'member'),
           coalesce((w.settings ->> 'ai_enabled')::boolean, false),
           coalesce(array(select jsonb_array_elements_text(w.settings -> 'project_tags')), '{}')
    from cajex.workspaces w
    where w.id = (select cajex.current_workspace_id());
end;
$$;
grant execute on function cajex.workspace_defaults() to cajex_app;
