-- Merge the raw tracks snapshot of :day into core.tracks: the rules of merge_users.sql, and
-- duration_seconds derived from duration (null unless it is MM:SS, minutes of any width).

CREATE TEMP TABLE tracks_stage ON COMMIT DROP AS
SELECT DISTINCT ON (id)
       id, name, artist, songwriters, duration, genres, album, created_at, updated_at,
       CASE WHEN duration ~ '^[0-9]{1,4}:[0-5][0-9]$'
            THEN split_part(duration, ':', 1)::integer * 60
                 + split_part(duration, ':', 2)::integer
       END AS duration_seconds
FROM raw.tracks
WHERE snapshot_date = :day AND id IS NOT NULL
ORDER BY id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
         name, artist, songwriters, duration, genres, album;
ANALYZE tracks_stage (id);

CREATE TEMP TABLE tracks_counts ON COMMIT DROP AS
SELECT (SELECT count(*) FROM raw.tracks WHERE snapshot_date = :day) AS raw_rows,
       count(*) AS snapshot_ids,
       count(*) FILTER (WHERE t.id IS NULL) AS inserted,
       count(*) FILTER (
           WHERE :day >= t.last_seen
             AND ROW(s.name, s.artist, s.songwriters, s.duration, s.genres, s.album,
                     s.created_at, s.updated_at)
                 IS DISTINCT FROM ROW(t.name, t.artist, t.songwriters, t.duration, t.genres,
                                      t.album, t.created_at, t.updated_at)
       ) AS updated,
       0::bigint AS inactivated,
       count(*) FILTER (WHERE NOT t.is_active AND :is_newest) AS reactivated,
       count(*) FILTER (WHERE s.updated_at < s.created_at) AS timestamps_out_of_order,
       count(*) FILTER (WHERE s.updated_at > (CAST(:day AS date) + 1)::timestamptz)
           AS future_timestamps,
       count(*) FILTER (WHERE s.duration = '00:00') AS zero_duration,
       count(*) FILTER (WHERE s.duration_seconds IS NULL) AS malformed_duration
FROM tracks_stage s
LEFT JOIN core.tracks t ON t.id = s.id;

MERGE INTO core.tracks t
USING tracks_stage s ON t.id = s.id
WHEN MATCHED AND :day >= t.last_seen
    AND ROW(s.name, s.artist, s.songwriters, s.duration, s.genres, s.album,
            s.created_at, s.updated_at)
        IS DISTINCT FROM ROW(t.name, t.artist, t.songwriters, t.duration, t.genres,
                             t.album, t.created_at, t.updated_at) THEN
    UPDATE SET name = s.name, artist = s.artist, songwriters = s.songwriters,
               duration = s.duration, duration_seconds = s.duration_seconds, genres = s.genres,
               album = s.album, created_at = s.created_at, updated_at = s.updated_at,
               first_seen = LEAST(t.first_seen, :day), last_seen = GREATEST(t.last_seen, :day),
               is_active = t.is_active OR :is_newest
WHEN MATCHED AND (:day < t.first_seen OR :day > t.last_seen) THEN
    UPDATE SET first_seen = LEAST(t.first_seen, :day), last_seen = GREATEST(t.last_seen, :day),
               is_active = t.is_active OR :is_newest
WHEN NOT MATCHED THEN
    INSERT (id, name, artist, songwriters, duration, duration_seconds, genres, album,
            created_at, updated_at, first_seen, last_seen, is_active)
    VALUES (s.id, s.name, s.artist, s.songwriters, s.duration, s.duration_seconds, s.genres,
            s.album, s.created_at, s.updated_at, :day, :day, :is_newest);

WITH gone AS (
    UPDATE core.tracks t SET is_active = false
    WHERE :is_newest AND t.is_active
      AND NOT EXISTS (SELECT 1 FROM tracks_stage s WHERE s.id = t.id)
    RETURNING 1
)
UPDATE tracks_counts SET inactivated = (SELECT count(*) FROM gone);

SELECT c.*, raw_rows - snapshot_ids AS duplicates_resolved, t.rows_total, t.active_rows
FROM tracks_counts c,
     (SELECT count(*) AS rows_total, count(*) FILTER (WHERE is_active) AS active_rows
      FROM core.tracks) t
