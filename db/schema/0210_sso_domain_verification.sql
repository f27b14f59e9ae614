-- A claimed email domain routes nobody until it is proven by DNS.
--
-- Why: a routed domain sends its addresses' sign-ins to one connection, and
-- lets that connection's IdP speak for every address at it, people who
-- already have accounts in other workspaces included. The first proof (the
-- claiming admin's own address is at the domain) let any admin at a shared
-- or public mail domain claim it before its real owner, and then sign in as
-- anyone there. Now an admin's claim stays pending until a TXT record at
-- _cajex-challenge.<domain> holds the claim's token (the worker checks);
-- the platform's operator (`cajex sso claim-domain`) still vouches at once.
--
-- Safe while the previous release runs: the columns are nullable and its
-- inserts need not name them. Claims made before this release keep routing:
-- they are marked verified as of their claim.

alter table cajex.sso_domains
  add column verification_token text check (verification_token ~ '^[0-9a-f]{32}$'),
  add column verified_at timestamptz,
  add column last_checked_at timestamptz,
  add column last_check text check (last_check in ('pending', 'verified', 'not_found', 'claimed_elsewhere'));

update cajex.sso_domains set verified_at = created_at, last_check = 'verified' where verified_at is null;
