-- Merge the raw snapshot of :day into {table}; :is_newest: no newer snapshot was merged, so this
-- one decides is_active. The rules (docs/data-model.md): values come from the snapshot at
-- last_seen, first_seen and last_seen only widen, an unchanged row is not written.

-- One record per id: the latest updated_at wins, then created_at, then the values (the raw rows'
-- order never decides).
CREATE TEMP TABLE entity_stage ON COMMIT DROP AS
SELECT DISTINCT ON (id) id, {staged}
FROM {raw}
WHERE snapshot_date = :day AND id IS NOT NULL
ORDER BY id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST, {columns};
ANALYZE entity_stage (id);

-- The snapshot's odd records (loaded as served: the checks judge them) and what the merge does.
CREATE TEMP TABLE entity_changes ON COMMIT DROP AS
SELECT (SELECT count(*) FROM {raw} WHERE snapshot_date = :day) AS raw_rows, {odd_records}
       count(*) AS snapshot_ids,
       count(*) FILTER (WHERE s.updated_at < s.created_at) AS timestamps_out_of_order,
       count(*) FILTER (WHERE s.updated_at > (CAST(:day AS date) + 1)::timestamptz)
           AS future_timestamps,
       count(*) FILTER (WHERE t.id IS NULL) AS inserted,
       count(*) FILTER (
           WHERE :day >= t.last_seen AND ROW({s.columns}) IS DISTINCT FROM ROW({t.columns})
       ) AS updated,
       0::bigint AS inactivated,
       count(*) FILTER (WHERE NOT t.is_active AND :is_newest) AS reactivated
FROM entity_stage s
LEFT JOIN {table} t ON t.id = s.id;

MERGE INTO {table} t
USING entity_stage s ON t.id = s.id
WHEN MATCHED AND :day >= t.last_seen
    AND ROW({s.columns}) IS DISTINCT FROM ROW({t.columns}) THEN
    UPDATE SET ({columns}) = ROW({s.columns}),
               first_seen = LEAST(t.first_seen, :day), last_seen = GREATEST(t.last_seen, :day),
               is_active = t.is_active OR :is_newest
-- Most rows: the same values, a newer day.
WHEN MATCHED AND (:day < t.first_seen OR :day > t.last_seen) THEN
    UPDATE SET first_seen = LEAST(t.first_seen, :day), last_seen = GREATEST(t.last_seen, :day),
               is_active = t.is_active OR :is_newest
WHEN NOT MATCHED THEN
    INSERT (id, {columns}, first_seen, last_seen, is_active)
    VALUES (s.id, {s.columns}, :day, :day, :is_newest);

-- Only the newest snapshot marks the rows it no longer lists inactive (never deleted).
WITH gone AS (
    UPDATE {table} t SET is_active = false
    WHERE :is_newest AND t.is_active
      AND NOT EXISTS (SELECT 1 FROM entity_stage s WHERE s.id = t.id)
    RETURNING 1
)
UPDATE entity_changes SET inactivated = (SELECT count(*) FROM gone);

SELECT x.*, x.raw_rows - x.snapshot_ids AS duplicates_resolved, t.*
FROM entity_changes x,
     (SELECT count(*) AS rows_total, count(*) FILTER (WHERE is_active) AS active_rows
      FROM {table}) t
