-- Interactions the models cannot use: an unknown user or track, or a weight that is not a
-- finite positive number (it would poison the factorisation).
SELECT count(*) AS rows, count(*) FILTER (WHERE unknown) AS unknown_references,
       count(*) FILTER (WHERE bad) AS bad_weights,
       count(*) FILTER (WHERE unknown OR bad) AS observed,
       count(*) FILTER (WHERE unknown OR bad) <= :threshold AS passed
FROM (SELECT u.id IS NULL OR k.id IS NULL AS unknown,
             NOT (i.weight > 0) OR i.weight IN ('NaN'::float8, 'Infinity'::float8) AS bad
      FROM core.user_track_interactions i
      LEFT JOIN core.users u ON u.id = i.user_id
      LEFT JOIN core.tracks k ON k.id = i.track_id) x
