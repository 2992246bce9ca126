-- Active users whose e-mail matches :pattern (an empty table has nothing invalid).
SELECT active_users, active_users - valid AS invalid_emails, valid, observed,
       observed >= :threshold AS passed
FROM (SELECT count(*) AS active_users, count(*) FILTER (WHERE email ~ :pattern) AS valid
      FROM {table} WHERE is_active) c,
     LATERAL (SELECT coalesce(round(valid::numeric / nullif(active_users, 0), 6), 1)::float8
                  AS observed) r
