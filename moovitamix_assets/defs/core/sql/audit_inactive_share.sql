-- Records seen after :since that the newest snapshot no longer lists. {table} is core.users,
-- core.tracks or core.listen_events.
SELECT count(*) FILTER (WHERE last_seen > CAST(:since AS date)) AS recent_records,
       count(*) FILTER (WHERE last_seen > CAST(:since AS date) AND NOT is_active)
           AS recent_inactive,
       count(*) FILTER (WHERE NOT is_active) AS inactive_records
FROM {table}
