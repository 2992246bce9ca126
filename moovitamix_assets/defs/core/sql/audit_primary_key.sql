-- The primary key of {table} on ({columns}): the constraint (for a view, that of :storage, the
-- table holding its rows; a restored dump may lack it) and the duplicated and null keys.
SELECT k.*, c.ok::int AS has_constraint, k.duplicate_keys + k.null_keys AS observed,
       c.ok AND k.duplicate_keys + k.null_keys <= :threshold AS passed,
       CASE WHEN NOT c.ok THEN format('primary key constraint on (%s) missing (found: %s); ',
                                      array_to_string(c.expected, ', '),
                                      coalesce(array_to_string(c.found, ', '), 'none'))
            ELSE '' END AS note
FROM (SELECT coalesce(sum(n), 0)::bigint AS rows, coalesce(sum(n - 1), 0)::bigint AS duplicate_keys,
             coalesce(sum(n) FILTER (WHERE has_null), 0)::bigint AS null_keys
      FROM (SELECT count(*) AS n, bool_or(NOT (ROW({columns}) IS NOT NULL)) AS has_null
            FROM {table} GROUP BY {columns}) g) k,
     (SELECT found, found IS NOT DISTINCT FROM expected AS ok, expected
      FROM (SELECT array_agg(a.attname::text ORDER BY array_position(p.conkey, a.attnum)) AS found,
                   CAST(:keys AS text[]) AS expected
            FROM pg_constraint p
            JOIN pg_attribute a ON a.attrelid = p.conrelid AND a.attnum = ANY (p.conkey)
            WHERE p.conrelid = to_regclass(:storage) AND p.contype = 'p') f) c
