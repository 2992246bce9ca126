-- Second half of migrate_views.sql, once schema.sql has created the tables.
INSERT INTO core.listen_pairs (
    user_id, track_id, position, play_count, weight, list_length, source_created_at,
    source_updated_at, first_seen, last_seen, is_active, user_known, track_known
)
SELECT user_id, track_id, position, play_count,
       (1.0 + ln(play_count::double precision))
           * (0.5 + 0.5 * position::double precision / greatest(list_length, 1)),
       list_length, source_created_at, source_updated_at, first_seen, last_seen, is_active,
       user_known, track_known
FROM listen_events_migrated;
ANALYZE core.listen_pairs
