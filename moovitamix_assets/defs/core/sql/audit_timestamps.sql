-- Active records updated before created, or stamped at or after :horizon (the day after the
-- newest merged snapshot: a wrong clock). {table} is core.users or core.tracks.
SELECT count(*) AS active_records, count(*) FILTER (WHERE backwards) AS updated_before_created,
       count(*) FILTER (WHERE future) AS future_timestamps,
       count(*) FILTER (WHERE backwards OR future) AS odd
FROM {table},
     LATERAL (SELECT updated_at < created_at AS backwards,
                     greatest(created_at, updated_at) >= CAST(:horizon AS date) AS future) f
WHERE is_active
