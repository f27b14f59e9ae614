-- userName and group displayName, folded to lower case in a stored column.
--
-- Why: a SCIM client looks a user up by `filter=userName eq "..."` before
-- every create (Entra ID and Okta both do), case-insensitively. The 0300
-- indexes are on lower(user_name), but under row-level security a query's
-- own condition may use an index only when it cannot leak rows to a
-- function, and lower() is not leakproof: `lower(user_name) = lower($1)`
-- was therefore checked row by row over the whole workspace after the
-- policy. A plain column compared with texteq (leakproof) is an index
-- condition beside the policy's workspace_id, so the lookup costs a few
-- index pages whatever the size of this workspace or of any other
-- (bench/scim.py measures it).
--
-- Safe while the previous release runs: the columns are generated, so its
-- inserts need not name them, and the new unique indexes enforce exactly
-- what the old ones did (the same lower()), so they replace them. Adding a
-- stored column rewrites both tables once, under the migration's lock
-- timeout.

alter table cajex.scim_users
  add column user_name_folded text generated always as (lower(user_name)) stored;
-- filter userName eq; userName is unique per workspace, case-insensitively.
create unique index scim_users_user_name_folded_key
  on cajex.scim_users (workspace_id, user_name_folded);
drop index cajex.scim_users_user_name_key;

alter table cajex.scim_groups
  add column display_name_folded text generated always as (lower(display_name)) stored;
-- filter displayName eq (Entra ID looks groups up by it); unique per workspace.
create unique index scim_groups_display_name_folded_key
  on cajex.scim_groups (workspace_id, display_name_folded);
drop index cajex.scim_groups_name_key;
