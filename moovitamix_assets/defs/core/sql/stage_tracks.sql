-- Stage the raw tracks snapshot of :day for merge_entity.sql, as stage_users.sql does, with
-- duration_seconds derived from duration (null unless it is MM:SS, minutes of any width).

CREATE TEMP TABLE entity_stage ON COMMIT DROP AS
SELECT DISTINCT ON (id)
       id, name, artist, songwriters, duration,
       CASE WHEN duration ~ '^[0-9]{1,4}:[0-5][0-9]$'
            THEN split_part(duration, ':', 1)::integer * 60
                 + split_part(duration, ':', 2)::integer
       END AS duration_seconds,
       genres, album, created_at, updated_at
FROM raw.tracks
WHERE snapshot_date = :day AND id IS NOT NULL
ORDER BY id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
         name, artist, songwriters, duration, genres, album;
ANALYZE entity_stage (id);

CREATE TEMP TABLE entity_counts ON COMMIT DROP AS
SELECT (SELECT count(*) FROM raw.tracks WHERE snapshot_date = :day) AS raw_rows,
       count(*) FILTER (WHERE s.duration = '00:00') AS zero_duration,
       count(*) FILTER (WHERE s.duration_seconds IS NULL) AS malformed_duration
FROM entity_stage s
