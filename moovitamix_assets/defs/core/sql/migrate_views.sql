-- The previous representation (bookkeeping tables behind the views): keep the listening rows
-- aside and drop the views and their storage; schema.sql creates the new ones, then
-- restore_migrated.sql puts the rows back, all in one transaction.
CREATE TEMP TABLE listen_events_migrated ON COMMIT DROP AS
SELECT * FROM core.listen_events;
DROP VIEW core.user_track_interactions, core.listen_events;
DROP TABLE IF EXISTS core.listen_pairs, core.listen_histories, core.interaction_pairs,
    core.interaction_users, core.interactions_state, core.interaction_pending_pairs,
    core.interaction_pending_users, core.interaction_inactive_tracks
