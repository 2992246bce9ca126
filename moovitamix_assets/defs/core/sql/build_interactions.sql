-- Rebuild core.user_track_interactions from the current core.listen_events in one transaction:
-- readers see the previous rows until it commits. The active pairs whose user and track are
-- known (orphans have no catalogue entry to recommend or to explain).
-- weight = damped play count x recency: ln keeps a track played ten times from outweighing ten
-- tracks played once; recency runs from 0.5 (first track of the list) to 1.0 (the last one).
DELETE FROM core.user_track_interactions;

INSERT INTO core.user_track_interactions (
    user_id, track_id, play_count, weight, last_position, list_length, first_seen, last_seen,
    track_active
)
SELECT e.user_id, e.track_id, e.play_count,
       (1.0 + ln(e.play_count::double precision))
           * (0.5 + 0.5 * e.position::double precision / greatest(e.list_length, 1)),
       e.position, e.list_length, e.first_seen, e.last_seen, k.is_active
FROM core.listen_events e
JOIN core.tracks k ON k.id = e.track_id
WHERE e.is_active AND e.user_known AND e.track_known;

SELECT count(*) AS rows_total,
       count(*) FILTER (WHERE NOT track_active) AS inactive_track_rows,
       (SELECT count(*) FROM core.listen_events
        WHERE is_active AND NOT (user_known AND track_known)) AS orphan_pairs_excluded,
       (SELECT max(snapshot_date) FROM core.merge_log WHERE table_name = 'listen_events')
           AS as_of
FROM core.user_track_interactions
