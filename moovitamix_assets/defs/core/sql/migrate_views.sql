-- A database built by the previous representation (incremental bookkeeping tables behind the
-- core.listen_events and core.user_track_interactions views): keep the listening rows aside and
-- drop the views and their storage; schema.sql then creates the new ones and
-- restore_migrated.sql puts the rows back. One transaction.
CREATE TEMP TABLE listen_events_migrated ON COMMIT DROP AS
SELECT * FROM core.listen_events;
DROP VIEW core.user_track_interactions, core.listen_events;
DROP TABLE IF EXISTS core.listen_pairs, core.listen_histories, core.interaction_pairs,
    core.interaction_users, core.interactions_state, core.interaction_pending_pairs,
    core.interaction_pending_users, core.interaction_inactive_tracks
