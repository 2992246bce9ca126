-- Records seen in the :window_days days up to the newest merged snapshot :newest that it no longer
-- lists. Only the window counts: the table keeps every record ever seen, so the all-time share
-- grows with normal churn and says nothing about today.
SELECT c.*, coalesce(CAST(:newest AS date)::text, 'now') AS as_of, r.observed,
       r.observed <= :threshold AS passed
FROM (SELECT coalesce(CAST(:newest AS date) - CAST(:window_days AS integer), '-infinity')
                  AS since) w,
     LATERAL (SELECT count(*) FILTER (WHERE last_seen > w.since) AS recent_records,
                     count(*) FILTER (WHERE last_seen > w.since AND NOT is_active)
                         AS recent_inactive,
                     count(*) FILTER (WHERE NOT is_active) AS inactive_records
              FROM {table}) c,
     LATERAL (SELECT coalesce(round(recent_inactive::numeric / nullif(recent_records, 0), 6), 0)
                  ::float8 AS observed) r
