-- One row per (table, merged snapshot date): the newest one decides is_active.
INSERT INTO core.merge_log AS m (table_name, snapshot_date)
VALUES (:table_name, :day)
ON CONFLICT (table_name, snapshot_date)
DO UPDATE SET last_merged_at = now(), merges = m.merges + 1
