-- Active listening pairs whose user or track core does not know, recomputed against core.users
-- and core.tracks rather than read from the flags; a flag that disagrees is counted too (the
-- interactions rebuild trusts the flags).
SELECT c.*, r.observed, r.observed <= :threshold AND c.stale_reference_flags = 0 AS passed,
       CASE WHEN c.stale_reference_flags > 0
            THEN format('; %s pair(s) carry a user_known/track_known flag that is wrong',
                        c.stale_reference_flags)
            ELSE '' END AS note
FROM (SELECT count(*) AS active_pairs,
             count(*) FILTER (WHERE u.id IS NULL OR k.id IS NULL) AS orphan_pairs,
             count(*) FILTER (WHERE u.id IS NULL) AS unknown_user_pairs,
             count(*) FILTER (WHERE k.id IS NULL) AS unknown_track_pairs,
             count(*) FILTER (WHERE e.user_known <> (u.id IS NOT NULL)
                                 OR e.track_known <> (k.id IS NOT NULL)) AS stale_reference_flags
      FROM core.listen_events e
      LEFT JOIN core.users u ON u.id = e.user_id
      LEFT JOIN core.tracks k ON k.id = e.track_id
      WHERE e.is_active) c,
     LATERAL (SELECT coalesce(round(orphan_pairs::numeric / nullif(active_pairs, 0), 6), 0)
                  ::float8 AS observed) r
