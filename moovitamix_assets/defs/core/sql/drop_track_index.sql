-- Before a load into an empty core.listen_pairs (the first day): every pair is new, and the "by
-- track" index, filled in random track order, would dirty a different page per pair; once it
-- outgrows shared_buffers each page is written again and again (a full-page image in the WAL
-- after every checkpoint), and the load grows faster than the data. schema.sql builds it again
-- after the merge, in one sorted pass. The primary key stays: pairs arrive in user order.
DROP INDEX IF EXISTS core.listen_events_track_id_idx
