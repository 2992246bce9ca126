-- Figures of core.user_track_interactions, a view over the current core.listen_events.
SELECT count(*) AS rows_total,
       count(*) FILTER (WHERE NOT track_active) AS inactive_track_rows,
       (SELECT count(*) FROM core.listen_events
        WHERE is_active AND NOT (user_known AND track_known)) AS orphan_pairs_excluded,
       (SELECT max(snapshot_date) FROM core.merge_log WHERE table_name = 'listen_events')
           AS as_of
FROM core.user_track_interactions
