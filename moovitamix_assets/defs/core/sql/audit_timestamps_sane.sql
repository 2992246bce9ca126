-- Active records of {table} (core.<:table>) updated before created, or stamped after the newest
-- merged snapshot (as_of: at or after the next day is a wrong clock).
SELECT c.*, coalesce(m.as_of::text, 'the newest snapshot') AS as_of,
       c.observed <= :threshold AS passed
FROM (SELECT max(snapshot_date) AS as_of FROM core.merge_log WHERE table_name = :table) m,
     LATERAL (SELECT count(*) AS active_records,
                     count(*) FILTER (WHERE backwards) AS updated_before_created,
                     count(*) FILTER (WHERE future) AS future_timestamps,
                     count(*) FILTER (WHERE backwards OR future) AS observed
              FROM {table},
                   LATERAL (SELECT updated_at < created_at AS backwards,
                                   greatest(created_at, updated_at) >= m.as_of + 1 AS future) f
              WHERE is_active) c
