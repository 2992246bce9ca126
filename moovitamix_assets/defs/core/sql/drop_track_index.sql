-- Before a load into an empty core.listen_pairs: the by-track index, filled in random track order,
-- would dirty a page per pair and rewrite it after every checkpoint (full-page images in the WAL).
-- schema.sql builds it again in one sorted pass. The primary key stays: pairs arrive in user order.
DROP INDEX IF EXISTS core.listen_events_track_id_idx
