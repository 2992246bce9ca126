-- Figures of core.user_track_interactions, a view over the current core.listen_events.
SELECT count(*) AS rows_total,
       count(*) FILTER (WHERE NOT track_active) AS inactive_track_rows,
       (SELECT count(*) FROM core.listen_events
        WHERE is_active AND NOT (user_known AND track_known)) AS orphan_pairs_excluded
FROM core.user_track_interactions
