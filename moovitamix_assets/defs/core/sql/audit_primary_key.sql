-- The primary key of {table} on ({columns}): the constraint (for a view, that of :storage, the
-- table holding its rows; a restored dump may lack it) and the duplicated and null keys.
SELECT k.*, c.ok::int AS has_constraint, k.duplicate_keys + k.null_keys AS observed,
       c.ok AND k.duplicate_keys + k.null_keys <= :threshold AS passed,
       CASE WHEN NOT c.ok THEN format('primary key constraint on (%s) missing (found: %s); ',
                                      :keys, coalesce(f.found, 'none'))
            ELSE '' END AS note
FROM (SELECT coalesce(sum(n), 0)::bigint AS rows, coalesce(sum(n - 1), 0)::bigint AS duplicate_keys,
             coalesce(sum(n) FILTER (WHERE has_null), 0)::bigint AS null_keys
      FROM (SELECT count(*) AS n, bool_or(NOT (ROW({columns}) IS NOT NULL)) AS has_null
            FROM {table} GROUP BY {columns}) g) k,
     LATERAL (SELECT string_agg(a.attname, ', ' ORDER BY array_position(p.conkey, a.attnum))
                  AS found
              FROM pg_constraint p
              JOIN pg_attribute a ON a.attrelid = p.conrelid AND a.attnum = ANY (p.conkey)
              WHERE p.conrelid = to_regclass(:storage) AND p.contype = 'p') f,
     LATERAL (SELECT f.found IS NOT DISTINCT FROM :keys AS ok) c
