-- Stage the raw users snapshot of :day for merge_entity.sql: entity_stage, one record per id (the
-- latest updated_at wins, then created_at, then the values: the raw rows' order never decides),
-- and entity_counts, its odd records (loaded as served, never filtered: the checks judge them).
CREATE TEMP TABLE entity_stage ON COMMIT DROP AS
SELECT DISTINCT ON (id)
       id, first_name, last_name, email, gender, favorite_genres, created_at, updated_at
FROM raw.users
WHERE snapshot_date = :day AND id IS NOT NULL
ORDER BY id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
         first_name, last_name, email, gender, favorite_genres;
ANALYZE entity_stage (id);

CREATE TEMP TABLE entity_counts ON COMMIT DROP AS
SELECT (SELECT count(*) FROM raw.users WHERE snapshot_date = :day) AS raw_rows,
       -- E-mails (case-insensitive) that another id of the same snapshot also uses.
       count(*) FILTER (
           WHERE lower(s.email) IN (
               SELECT lower(email) FROM entity_stage GROUP BY lower(email) HAVING count(*) > 1)
       ) AS duplicate_emails,
       count(*) FILTER (WHERE s.gender IS NULL OR NOT (s.gender = ANY (:genders)))
           AS unknown_gender,
       count(*) FILTER (
           WHERE s.favorite_genres IS NULL OR NOT (s.favorite_genres = ANY (:genres))
       ) AS unknown_genre
FROM entity_stage s
