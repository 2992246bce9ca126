-- Normalize the raw listen_history snapshot of :day into core.listen_pairs (the rows of the
-- core.listen_events view): one row per (user, track) pair, merged with the rules of
-- merge_users.sql. :newest is the newest snapshot merged before (NULL at first): an active
-- pair's last_seen. Run after the users and tracks merges of the same day: the orphan flags are
-- computed against them.

-- One history per user: the latest updated_at wins, then the longer list (the API's lists only
-- grow), then the list itself, so the winner never depends on the raw rows' order.
CREATE TEMP TABLE listen_histories ON COMMIT DROP AS
SELECT DISTINCT ON (user_id) user_id, items, created_at, updated_at
FROM raw.listen_history
WHERE snapshot_date = :day AND user_id IS NOT NULL
ORDER BY user_id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
         cardinality(items) DESC NULLS LAST, items DESC NULLS LAST;

-- A track listed several times is one pair: its play count is the number of occurrences, its
-- position (1-based) the last one, i.e. the most recent listen. Users and tracks are never
-- deleted from core, so an id found there stays known.
CREATE TEMP TABLE listen_stage ON COMMIT DROP AS
SELECT p.*,
       (1.0 + ln(p.play_count::double precision))
           * (0.5 + 0.5 * p.position::double precision / greatest(p.list_length, 1)) AS weight,
       u.id IS NOT NULL AS user_known, k.id IS NOT NULL AS track_known
FROM (
    SELECT h.user_id, e.track_id,
           max(e.ord)::integer AS position,
           count(*)::integer AS play_count,
           max(cardinality(h.items))::integer AS list_length,
           max(h.created_at) AS source_created_at,
           max(h.updated_at) AS source_updated_at
    FROM listen_histories h
    CROSS JOIN LATERAL unnest(h.items) WITH ORDINALITY AS e(track_id, ord)
    WHERE e.track_id IS NOT NULL
    GROUP BY h.user_id, e.track_id
) p
LEFT JOIN core.users u ON u.id = p.user_id
LEFT JOIN core.tracks k ON k.id = p.track_id;
ANALYZE listen_stage (user_id, track_id);

-- The join the merge makes, once, with what each staged pair will do.
CREATE TEMP TABLE listen_changes ON COMMIT DROP AS
SELECT s.*, t.user_id IS NULL AS is_new,
       t.user_id IS NOT NULL
           AND :day >= CASE WHEN t.is_active THEN CAST(:newest AS date) ELSE t.last_seen END
           AND ROW(s.position, s.play_count, s.list_length, s.source_created_at,
                   s.source_updated_at)
               IS DISTINCT FROM ROW(t.position, t.play_count, t.list_length, t.source_created_at,
                                    t.source_updated_at) AS values_changed,
       NOT t.is_active AND :is_newest AS reactivated,
       t.user_id IS NOT NULL
           AND (:day < t.first_seen OR (NOT t.is_active AND :day > t.last_seen)) AS dates_changed
FROM listen_stage s
LEFT JOIN core.listen_pairs t ON t.user_id = s.user_id AND t.track_id = s.track_id;

CREATE TEMP TABLE listen_counts ON COMMIT DROP AS
SELECT r.raw_rows, r.null_user_records,
       r.raw_rows - r.null_user_records - h.histories AS duplicates_resolved,
       h.histories, h.null_items_records, h.empty_lists, h.list_entries,
       h.list_entries - p.snapshot_pairs AS repeated_entries,
       p.*, 0::bigint AS inactivated, 0::bigint AS references_resolved
FROM (
    SELECT count(*) AS raw_rows, count(*) FILTER (WHERE user_id IS NULL) AS null_user_records
    FROM raw.listen_history WHERE snapshot_date = :day
) r, (
    SELECT count(*) AS histories,
           count(*) FILTER (WHERE items IS NULL) AS null_items_records,
           count(*) FILTER (WHERE cardinality(items) = 0) AS empty_lists,
           coalesce(sum(cardinality(items)), 0) AS list_entries
    FROM listen_histories
) h, (
    SELECT count(*) AS snapshot_pairs,
           count(*) FILTER (WHERE NOT user_known) AS orphan_user_pairs,
           count(*) FILTER (WHERE NOT track_known) AS orphan_track_pairs,
           count(*) FILTER (WHERE is_new) AS inserted,
           count(*) FILTER (WHERE values_changed) AS updated,
           count(*) FILTER (WHERE reactivated) AS reactivated
    FROM listen_changes
) p;

-- Only the pairs that change are written: new ones, changed values, dates widened by an older
-- snapshot, pairs coming back. A re-merged day writes nothing.
DELETE FROM listen_changes WHERE NOT (is_new OR values_changed OR reactivated OR dates_changed);
ANALYZE listen_changes (user_id, track_id);

MERGE INTO core.listen_pairs t
USING listen_changes s ON t.user_id = s.user_id AND t.track_id = s.track_id
WHEN MATCHED AND s.values_changed THEN
    UPDATE SET position = s.position, play_count = s.play_count, weight = s.weight,
               list_length = s.list_length, source_created_at = s.source_created_at,
               source_updated_at = s.source_updated_at, first_seen = LEAST(t.first_seen, :day),
               last_seen = GREATEST(t.last_seen, :day), is_active = t.is_active OR :is_newest
WHEN MATCHED THEN
    UPDATE SET first_seen = LEAST(t.first_seen, :day), last_seen = GREATEST(t.last_seen, :day),
               is_active = t.is_active OR :is_newest
WHEN NOT MATCHED THEN
    INSERT (user_id, track_id, position, play_count, weight, list_length, source_created_at,
            source_updated_at, first_seen, last_seen, is_active, user_known, track_known)
    VALUES (s.user_id, s.track_id, s.position, s.play_count, s.weight, s.list_length,
            s.source_created_at, s.source_updated_at, :day, :day, :is_newest,
            s.user_known, s.track_known);

-- A pair the newest snapshot no longer holds keeps the values it was last seen with, and gets
-- the date it was last seen: the newest snapshot before this one.
WITH gone AS (
    UPDATE core.listen_pairs t SET is_active = false, last_seen = CAST(:newest AS date)
    WHERE :is_newest AND t.is_active
      AND NOT EXISTS (
          SELECT 1 FROM listen_stage s WHERE s.user_id = t.user_id AND s.track_id = t.track_id)
    RETURNING 1
)
UPDATE listen_counts SET inactivated = (SELECT count(*) FROM gone);

-- A late or back-filled snapshot of users or tracks may list an orphan's id: re-check the
-- orphans only (partial index).
WITH resolved AS (
    UPDATE core.listen_pairs t
    SET user_known = t.user_known OR EXISTS (SELECT 1 FROM core.users u WHERE u.id = t.user_id),
        track_known = t.track_known
            OR EXISTS (SELECT 1 FROM core.tracks k WHERE k.id = t.track_id)
    WHERE NOT (t.user_known AND t.track_known)
      AND ((NOT t.user_known AND EXISTS (SELECT 1 FROM core.users u WHERE u.id = t.user_id))
           OR (NOT t.track_known
               AND EXISTS (SELECT 1 FROM core.tracks k WHERE k.id = t.track_id)))
    RETURNING 1
)
UPDATE listen_counts SET references_resolved = (SELECT count(*) FROM resolved);

SELECT c.*, t.*
FROM listen_counts c, (
    SELECT count(*) AS rows_total,
           count(*) FILTER (WHERE is_active) AS active_rows,
           count(*) FILTER (WHERE NOT user_known) AS orphan_user_rows,
           count(*) FILTER (WHERE NOT track_known) AS orphan_track_rows
    FROM core.listen_pairs
) t
