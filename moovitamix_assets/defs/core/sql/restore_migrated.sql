-- Second half of migrate_views.sql, once schema.sql has created the tables.
INSERT INTO core.listen_pairs  -- in the order of its columns
SELECT user_id, track_id, position, play_count,
       (1.0 + ln(play_count::double precision))
           * (0.5 + 0.5 * position::double precision / greatest(list_length, 1)),
       list_length, source_created_at, source_updated_at, first_seen, last_seen, is_active,
       user_known, track_known
FROM listen_events_migrated;
ANALYZE core.listen_pairs;

-- A placeholder record no snapshot serves for each user with active pairs: the next merge
-- compares all of them once.
INSERT INTO core.listen_histories (user_id, source_updated_at)
SELECT DISTINCT user_id, '-infinity'::timestamptz FROM core.listen_pairs WHERE is_active
