-- Reservations by age within a workspace.
--
-- Why: each reservation first releases the workspace's reservations that
-- outlived every possible call (cajex_private.ai_reserve); that check must
-- be one index probe, not a walk over all the reservations in flight.
--
-- Safe while the previous release runs: an index only.
create index ai_reservations_age_idx on cajex.ai_reservations (workspace_id, created_at);
