-- Policies and grants of invitations, onboarding drafts and branding.

--------------------------------------------------------------------------------
-- Invitations: the open workspace's, readable by roles that may invite
-- (the hashes are useless, but the addresses are not everyone's business).
drop policy if exists "inviters can read the workspace's invitations" on cajex.invitations;
create policy "inviters can read the workspace's invitations" on cajex.invitations
  for select using (
    workspace_id = (select c.workspace_id from cajex_private.context c)
    and (select cajex.has_permission('member.invite'))
  );
drop policy if exists "the context can add invitations" on cajex.invitations;
create policy "the context can add invitations" on cajex.invitations
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));
drop policy if exists "the context can end invitations" on cajex.invitations;
create policy "the context can end invitations" on cajex.invitations
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Onboarding drafts: a user's own, written by definer functions.
drop policy if exists "users can read their own onboarding draft" on cajex.onboarding_drafts;
create policy "users can read their own onboarding draft" on cajex.onboarding_drafts
  for select using (user_id = (select c.user_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Branding: the open workspace's.
drop policy if exists "the context can read its branding" on cajex.workspace_branding;
create policy "the context can read its branding" on cajex.workspace_branding
  for select using (workspace_id = (select c.workspace_id from cajex_private.context c));
drop policy if exists "the context can add its branding" on cajex.workspace_branding;
create policy "the context can add its branding" on cajex.workspace_branding
  for insert with check (workspace_id = (select c.workspace_id from cajex_private.context c));
drop policy if exists "the context can change its branding" on cajex.workspace_branding;
create policy "the context can change its branding" on cajex.workspace_branding
  for update
  using (workspace_id = (select c.workspace_id from cajex_private.context c))
  with check (workspace_id = (select c.workspace_id from cajex_private.context c));

--------------------------------------------------------------------------------
-- Grants

grant select on cajex.invitations, cajex.onboarding_drafts, cajex.workspace_branding to cajex_app;
grant select, insert, update, delete on cajex.invitations, cajex.onboarding_drafts, cajex.workspace_branding
  to cajex_definer;

grant execute on function
  cajex.invite_member(text, text, bytea, text, interval),
  cajex.invite_members(integer[], text[], text[], bytea[], text[]),
  cajex.invitation_preview(text, bytea),
  cajex.accept_invitation(text, bytea),
  cajex.decline_invitation(text, bytea),
  cajex.revoke_invitation(uuid),
  cajex.resend_invitation(uuid, bytea, text, interval),
  cajex.change_member_role(uuid, text),
  cajex.remove_member(uuid),
  cajex.leave_workspace(),
  cajex.transfer_ownership(uuid),
  cajex.save_onboarding_draft(text, jsonb, uuid),
  cajex.discard_onboarding_draft(),
  cajex.set_brand_colours(text, text),
  cajex.set_logo(bytea, text, integer, integer),
  cajex.remove_logo(),
  cajex.public_branding(text),
  cajex.public_branding_by_id(uuid),
  cajex.public_logo(text),
  cajex.project_move_targets(),
  cajex.move_projects(text, uuid[])
  to cajex_app;
grant execute on all functions in schema cajex_private to cajex_definer;
