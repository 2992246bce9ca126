-- Active records updated before created, or stamped at or after :horizon (the day after the
-- newest merged snapshot: a wrong clock). {table} is core.users or core.tracks.
SELECT count(*) AS active_records,
       count(*) FILTER (WHERE updated_at < created_at) AS updated_before_created,
       count(*) FILTER (WHERE greatest(created_at, updated_at) >= CAST(:horizon AS date))
           AS future_timestamps,
       count(*) FILTER (WHERE updated_at < created_at
                           OR greatest(created_at, updated_at) >= CAST(:horizon AS date))
           AS odd
FROM {table}
WHERE is_active
