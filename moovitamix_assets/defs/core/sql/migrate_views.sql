-- A database built by the previous representation, where core.listen_events and
-- core.user_track_interactions were views over incremental storage tables: keep their rows
-- aside, drop the views and their storage; schema.sql then creates the table and the view,
-- and restore_migrated.sql puts the rows back. One transaction.
CREATE TEMP TABLE listen_events_migrated ON COMMIT DROP AS
SELECT * FROM core.listen_events;
DROP VIEW core.listen_events, core.user_track_interactions;
DROP TABLE IF EXISTS core.listen_pairs, core.listen_histories, core.interaction_pairs,
    core.interaction_users, core.interactions_state, core.interaction_pending_pairs,
    core.interaction_pending_users, core.interaction_inactive_tracks
