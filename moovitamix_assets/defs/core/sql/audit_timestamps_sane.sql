-- Active records of {table} updated before created, or stamped after the newest merged snapshot
-- :newest (at or after the next day is a wrong clock).
SELECT count(*) AS active_records, count(*) FILTER (WHERE backwards) AS updated_before_created,
       count(*) FILTER (WHERE future) AS future_timestamps,
       count(*) FILTER (WHERE backwards OR future) AS observed,
       count(*) FILTER (WHERE backwards OR future) <= :threshold AS passed,
       coalesce(CAST(:newest AS date)::text, 'the newest snapshot') AS as_of
FROM {table},
     LATERAL (SELECT updated_at < created_at AS backwards,
                     greatest(created_at, updated_at) >= CAST(:newest AS date) + 1 AS future) f
WHERE is_active
