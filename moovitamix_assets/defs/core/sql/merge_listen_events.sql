-- Normalize the raw listen_history of :day into core.listen_pairs (the core.listen_events view's
-- rows), one row per (user, track), by the rules of merge_entity.sql. :newest: the newest snapshot
-- merged before (NULL at first), an active pair's last_seen.

-- One history per user: the latest updated_at wins, then the longer list (the API's lists only
-- grow), then the list itself, so the winner never depends on the raw rows' order.
CREATE TEMP TABLE history_stage ON COMMIT DROP AS
SELECT DISTINCT ON (user_id) user_id, items, created_at, updated_at
FROM raw.listen_history
WHERE snapshot_date = :day AND user_id IS NOT NULL
ORDER BY user_id, updated_at DESC NULLS LAST, created_at DESC NULLS LAST,
         cardinality(items) DESC NULLS LAST, items DESC NULLS LAST;

-- A user's active pairs are exactly those of their record in core.listen_histories: the newest
-- snapshot compares only new, changed or vanished records (about a fifth a day); an older one may
-- widen any first_seen, all its users.
CREATE TEMP TABLE changed_users ON COMMIT DROP AS
SELECT coalesce(h.user_id, o.user_id) AS user_id
FROM history_stage h
FULL JOIN core.listen_histories o ON o.user_id = h.user_id
WHERE (NOT :is_newest AND h.user_id IS NOT NULL)
   OR (:is_newest AND ROW(h.items, h.created_at, h.updated_at)
                      IS DISTINCT FROM ROW(o.items, o.source_created_at, o.source_updated_at));
ANALYZE changed_users;

-- A track listed several times is one pair: play count = occurrences, position (1-based) = the
-- last one. Each staged pair meets its stored row once (stored pairs the newest snapshot no longer
-- holds are gone), which decides what the merge does with it.
CREATE TEMP TABLE listen_changes ON COMMIT DROP AS
SELECT coalesce(s.user_id, t.user_id) AS user_id, coalesce(s.track_id, t.track_id) AS track_id,
       s.position, s.play_count, s.weight, s.list_length, s.source_created_at,
       s.source_updated_at, s.user_known, s.track_known,
       s.user_id IS NULL AS gone, t.user_id IS NULL AS is_new,
       s.user_id IS NOT NULL AND t.user_id IS NOT NULL
           AND :day >= CASE WHEN t.is_active THEN CAST(:newest AS date) ELSE t.last_seen END
           AND ROW(s.position, s.play_count, s.list_length, s.source_created_at,
                   s.source_updated_at)
               IS DISTINCT FROM ROW(t.position, t.play_count, t.list_length, t.source_created_at,
                                    t.source_updated_at) AS values_changed,
       s.user_id IS NOT NULL AND NOT t.is_active AND :is_newest AS reactivated,
       s.user_id IS NOT NULL AND t.user_id IS NOT NULL
           AND (:day < t.first_seen OR (NOT t.is_active AND :day > t.last_seen)) AS dates_changed
FROM (
    SELECT h.user_id, e.track_id, e.position, e.play_count,
           (1.0 + ln(e.play_count::double precision))
               * (0.5 + 0.5 * e.position::double precision / greatest(cardinality(h.items), 1))
               AS weight,
           cardinality(h.items) AS list_length, h.created_at AS source_created_at,
           h.updated_at AS source_updated_at,
           u.id IS NOT NULL AS user_known, k.id IS NOT NULL AS track_known
    FROM history_stage h
    JOIN changed_users c ON c.user_id = h.user_id
    -- Grouped per list, not over the whole snapshot: no hash table grows with the snapshot.
    CROSS JOIN LATERAL (
        SELECT i.track_id, max(i.ord)::integer AS position, count(*)::integer AS play_count
        FROM unnest(h.items) WITH ORDINALITY AS i(track_id, ord)
        WHERE i.track_id IS NOT NULL
        GROUP BY i.track_id
    ) e
    LEFT JOIN core.users u ON u.id = h.user_id
    LEFT JOIN core.tracks k ON k.id = e.track_id
) s
FULL JOIN (
    SELECT * FROM core.listen_pairs WHERE user_id IN (SELECT user_id FROM changed_users)
) t ON t.user_id = s.user_id AND t.track_id = s.track_id
WHERE s.user_id IS NOT NULL OR (t.is_active AND :is_newest);

CREATE TEMP TABLE listen_counts ON COMMIT DROP AS
SELECT r.*, r.raw_rows - r.null_user_records - h.histories AS duplicates_resolved, h.*, p.*,
       (SELECT count(*) FROM changed_users) AS changed_histories,
       0::bigint AS references_resolved
FROM (
    SELECT count(*) AS raw_rows, count(*) FILTER (WHERE user_id IS NULL) AS null_user_records
    FROM raw.listen_history WHERE snapshot_date = :day
) r, (
    SELECT count(*) AS histories,
           count(*) FILTER (WHERE items IS NULL) AS null_items_records,
           count(*) FILTER (WHERE cardinality(items) = 0) AS empty_lists,
           coalesce(sum(cardinality(items)), 0) AS list_entries
    FROM history_stage
) h, (
    SELECT count(*) FILTER (WHERE NOT gone) AS staged_pairs,
           count(*) FILTER (WHERE NOT user_known) AS staged_orphan_user_pairs,
           count(*) FILTER (WHERE NOT track_known) AS staged_orphan_track_pairs,
           count(*) FILTER (WHERE is_new) AS inserted,
           count(*) FILTER (WHERE values_changed) AS updated,
           count(*) FILTER (WHERE gone) AS inactivated,
           count(*) FILTER (WHERE reactivated) AS reactivated
    FROM listen_changes
) p;

-- Only the pairs that change are written: a re-merged day writes nothing.
DELETE FROM listen_changes
WHERE NOT (gone OR is_new OR values_changed OR reactivated OR dates_changed);
ANALYZE listen_changes (user_id, track_id);

MERGE INTO core.listen_pairs t
USING listen_changes s ON t.user_id = s.user_id AND t.track_id = s.track_id
-- A pair the newest snapshot no longer holds keeps its values; last seen: the newest before it.
WHEN MATCHED AND s.gone THEN
    UPDATE SET is_active = false, last_seen = CAST(:newest AS date)
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

-- The newest snapshot's records become the stored ones (only the changed users move).
DELETE FROM core.listen_histories o
USING changed_users c
WHERE :is_newest AND o.user_id = c.user_id;
INSERT INTO core.listen_histories (user_id, items, source_created_at, source_updated_at)
SELECT h.user_id, h.items, h.created_at, h.updated_at
FROM history_stage h
JOIN changed_users c ON c.user_id = h.user_id
WHERE :is_newest;

-- A late or back-filled users or tracks snapshot may list an orphan's id: re-check orphans only
-- (partial index). Users and tracks are never deleted, so a known id stays known.
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

-- The newest snapshot's pairs are the active ones (most were not staged): count them there.
SELECT c.*, s.*, c.list_entries - s.snapshot_pairs AS repeated_entries, t.*
FROM listen_counts c, (
    SELECT count(*) AS rows_total,
           count(*) FILTER (WHERE is_active) AS active_rows,
           count(*) FILTER (WHERE NOT user_known) AS orphan_user_rows,
           count(*) FILTER (WHERE NOT track_known) AS orphan_track_rows,
           count(*) FILTER (WHERE is_active AND NOT user_known) AS active_orphan_user_rows,
           count(*) FILTER (WHERE is_active AND NOT track_known) AS active_orphan_track_rows
    FROM core.listen_pairs
) t, LATERAL (
    SELECT t.active_rows, t.active_orphan_user_rows, t.active_orphan_track_rows WHERE :is_newest
    UNION ALL
    SELECT c.staged_pairs, c.staged_orphan_user_pairs, c.staged_orphan_track_pairs
    WHERE NOT :is_newest
) s (snapshot_pairs, orphan_user_pairs, orphan_track_pairs)
