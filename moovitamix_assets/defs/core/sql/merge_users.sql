-- Merge the raw users snapshot of :day into core.users (see docs/data-model.md for the rules).
-- :is_newest: no newer snapshot was merged before, so this one decides is_active.
-- Ends with one row of counts, taken before the writes.

-- One record per id: the latest updated_at wins, then created_at, then the values themselves, so
-- the winner never depends on the physical order of the raw rows.
CREATE TEMP TABLE users_stage ON COMMIT DROP AS
SELECT DISTINCT ON (id)
       id, first_name, last_name, email, gender, favorite_genres, created_at, updated_at
FROM raw.users
WHERE snapshot_date = :day AND id IS NOT NULL
ORDER BY id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
         first_name, last_name, email, gender, favorite_genres;
ANALYZE users_stage (id);

-- Odd records are counted, never filtered: the checks judge the counts.
CREATE TEMP TABLE users_counts ON COMMIT DROP AS
SELECT (SELECT count(*) FROM raw.users WHERE snapshot_date = :day) AS raw_rows,
       count(*) AS snapshot_ids,
       count(*) FILTER (WHERE t.id IS NULL) AS inserted,
       count(*) FILTER (
           WHERE :day >= t.last_seen
             AND ROW(s.first_name, s.last_name, s.email, s.gender, s.favorite_genres,
                     s.created_at, s.updated_at)
                 IS DISTINCT FROM ROW(t.first_name, t.last_name, t.email, t.gender,
                                      t.favorite_genres, t.created_at, t.updated_at)
       ) AS updated,
       0::bigint AS inactivated,
       count(*) FILTER (WHERE NOT t.is_active AND :is_newest) AS reactivated,
       count(*) FILTER (
           WHERE lower(s.email) IN (
               SELECT lower(email) FROM users_stage GROUP BY lower(email) HAVING count(*) > 1)
       ) AS duplicate_emails,
       count(*) FILTER (WHERE s.updated_at < s.created_at) AS timestamps_out_of_order,
       count(*) FILTER (WHERE s.updated_at > (CAST(:day AS date) + 1)::timestamptz)
           AS future_timestamps,
       count(*) FILTER (WHERE s.gender IS NULL OR NOT (s.gender = ANY (:genders)))
           AS unknown_gender,
       count(*) FILTER (
           WHERE s.favorite_genres IS NULL OR NOT (s.favorite_genres = ANY (:genres))
       ) AS unknown_genre
FROM users_stage s
LEFT JOIN core.users t ON t.id = s.id;

-- Values come from the snapshot at last_seen (an older one never overwrites them); the dates
-- widen; a row that would not change is not written, so re-merging a day writes nothing.
MERGE INTO core.users t
USING users_stage s ON t.id = s.id
WHEN MATCHED AND :day >= t.last_seen
    AND ROW(s.first_name, s.last_name, s.email, s.gender, s.favorite_genres,
            s.created_at, s.updated_at)
        IS DISTINCT FROM ROW(t.first_name, t.last_name, t.email, t.gender,
                             t.favorite_genres, t.created_at, t.updated_at) THEN
    UPDATE SET first_name = s.first_name, last_name = s.last_name, email = s.email,
               gender = s.gender, favorite_genres = s.favorite_genres,
               created_at = s.created_at, updated_at = s.updated_at,
               first_seen = LEAST(t.first_seen, :day), last_seen = GREATEST(t.last_seen, :day),
               is_active = t.is_active OR :is_newest
WHEN MATCHED AND (:day < t.first_seen OR :day > t.last_seen) THEN
    UPDATE SET first_seen = LEAST(t.first_seen, :day), last_seen = GREATEST(t.last_seen, :day),
               is_active = t.is_active OR :is_newest
WHEN NOT MATCHED THEN
    INSERT (id, first_name, last_name, email, gender, favorite_genres, created_at, updated_at,
            first_seen, last_seen, is_active)
    VALUES (s.id, s.first_name, s.last_name, s.email, s.gender, s.favorite_genres,
            s.created_at, s.updated_at, :day, :day, :is_newest);

-- Only the newest snapshot marks the users it no longer lists inactive (never deleted).
WITH gone AS (
    UPDATE core.users t SET is_active = false
    WHERE :is_newest AND t.is_active
      AND NOT EXISTS (SELECT 1 FROM users_stage s WHERE s.id = t.id)
    RETURNING 1
)
UPDATE users_counts SET inactivated = (SELECT count(*) FROM gone);

SELECT c.*, raw_rows - snapshot_ids AS duplicates_resolved, t.rows_total, t.active_rows
FROM users_counts c,
     (SELECT count(*) AS rows_total, count(*) FILTER (WHERE is_active) AS active_rows
      FROM core.users) t
