-- Second half of migrate_views.sql, once schema.sql has created the tables.
INSERT INTO core.listen_events
SELECT user_id, track_id, position, play_count, list_length, source_created_at,
       source_updated_at, first_seen, last_seen, is_active, user_known, track_known
FROM listen_events_migrated;
INSERT INTO core.user_track_interactions
SELECT user_id, track_id, play_count, weight, last_position, list_length, first_seen,
       last_seen, track_active
FROM interactions_migrated;
ANALYZE core.listen_events;
ANALYZE core.user_track_interactions
