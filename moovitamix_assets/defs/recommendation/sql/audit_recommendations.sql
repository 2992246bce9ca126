-- Every audit of {table} (serving.py) in one statement: one column per audit, counting the
-- offending rows or users (0 passes). The per-user figures serve both the count and the repeat
-- audit: at 1M users each read of the 10M rows costs seconds.
WITH per_user AS MATERIALIZED (
    SELECT user_id,
           count(*) AS n,
           count(DISTINCT track_id) AS tracks,
           count(DISTINCT rank) AS ranks
    FROM {table}
    GROUP BY user_id
),
-- Active users against the users recommended, in one join: the few without K rows, and the
-- recommended users who are not active. Only those few have their listening counted.
off_k AS MATERIALIZED (
    SELECT a.id, coalesce(g.n, 0) AS n
    FROM (SELECT id FROM {users} WHERE is_active) a
    FULL JOIN per_user g ON g.user_id = a.id
    WHERE g.n IS DISTINCT FROM :k OR a.id IS NULL
),
catalogue AS (SELECT count(*) AS n FROM {tracks} WHERE is_active)
SELECT
    -- K each, fewer only for a user who heard every other active track; no inactive user.
    (
        SELECT count(*) FROM off_k o
        WHERE o.id IS NULL OR o.n <> least(:k, greatest((SELECT n FROM catalogue) - (
            SELECT count(*) FROM {interactions} i
            JOIN {tracks} t ON t.id = i.track_id AND t.is_active
            WHERE i.user_id = o.id
        ), 0))
    ) AS exactly_k_per_active_user,
    (
        SELECT count(*) FROM {table} r JOIN {interactions} i USING (user_id, track_id)
    ) AS none_already_listened,
    (
        SELECT count(*) FROM {table} r LEFT JOIN {tracks} t ON t.id = r.track_id
        WHERE t.id IS NULL OR NOT t.is_active
    ) AS only_active_tracks,
    -- Rows beyond the first of a (user, track) or a (user, rank).
    (SELECT coalesce(sum((n - tracks) + (n - ranks)), 0) FROM per_user) AS no_duplicates
