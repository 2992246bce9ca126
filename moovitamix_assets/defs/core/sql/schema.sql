-- The core tables (the schema is created first: see database.create_schema_sql). Listening
-- references users and tracks by checked flags (user_known, track_known), not foreign keys: the
-- API serves listens of tracks it has removed, and those pairs are kept and flagged.

-- The columns of users, tracks and listen_histories are columns.yaml's (assets.schema_sql). A
-- daily merge moves last_seen on nearly every row: free space on each page lets PostgreSQL write
-- the new version beside the old one without touching an index (a HOT update).
CREATE TABLE IF NOT EXISTS core.users ({users}) WITH (fillfactor = 50);
CREATE TABLE IF NOT EXISTS core.tracks ({tracks}) WITH (fillfactor = 50);

-- The rows of the core.listen_events view (below). An active pair is last seen on the newest
-- merged day by definition: the view says so, rather than the merge rewriting every active pair
-- daily. The stored last_seen is the last snapshot that wrote it (true once inactive).
CREATE TABLE IF NOT EXISTS core.listen_pairs (
    user_id bigint NOT NULL,
    track_id bigint NOT NULL,
    position integer NOT NULL,
    play_count integer NOT NULL,
    -- The implicit-feedback confidence (see the interactions view), computed by the merge.
    weight double precision NOT NULL,
    list_length integer,
    source_created_at timestamptz,
    source_updated_at timestamptz,
    first_seen date NOT NULL,
    last_seen date NOT NULL,
    is_active boolean NOT NULL,
    user_known boolean NOT NULL,
    track_known boolean NOT NULL,
    CONSTRAINT listen_pairs_pkey PRIMARY KEY (user_id, track_id)
) WITH (fillfactor = 75);
-- The primary key serves "by user", this index "by track"; orphans are few: the merge re-checks
-- only them.
CREATE INDEX IF NOT EXISTS listen_events_track_id_idx ON core.listen_pairs (track_id, user_id);
CREATE INDEX IF NOT EXISTS listen_events_orphans_idx ON core.listen_pairs (user_id, track_id)
    WHERE NOT (user_known AND track_known);

-- Each user's history record in the newest merged listening snapshot: the next merge compares
-- only the users whose record changed (see merge_listen_events.sql).
CREATE TABLE IF NOT EXISTS core.listen_histories ({listen_histories});

CREATE TABLE IF NOT EXISTS core.merge_log (
    table_name text NOT NULL,
    snapshot_date date NOT NULL,
    first_merged_at timestamptz NOT NULL DEFAULT now(),
    last_merged_at timestamptz NOT NULL DEFAULT now(),
    merges integer NOT NULL DEFAULT 1,
    PRIMARY KEY (table_name, snapshot_date)
);

-- Listening: one row per (user, track) pair ever seen.
CREATE OR REPLACE VIEW core.listen_events AS
SELECT p.user_id, p.track_id, p.position, p.play_count, p.list_length,
       p.source_created_at, p.source_updated_at, p.first_seen,
       CASE WHEN p.is_active
            THEN coalesce((SELECT max(m.snapshot_date) FROM core.merge_log m
                           WHERE m.table_name = 'listen_events'), p.last_seen)
            ELSE p.last_seen
       END AS last_seen,
       p.is_active, p.user_known, p.track_known, p.weight
FROM core.listen_pairs p;

-- The models' input: the active pairs whose user and track are known (an orphan has no catalogue
-- entry). A view: a day's listening merge publishes it in the same transaction, no pair written
-- twice. weight = damped play count x recency (merge_listen_events.sql): ln keeps a track played
-- ten times from outweighing ten played once; recency runs from 0.5 (first listed) to 1.0 (last).
CREATE OR REPLACE VIEW core.user_track_interactions AS
SELECT e.user_id, e.track_id, e.play_count, e.weight, e.position AS last_position,
       e.list_length, e.first_seen, e.last_seen, k.is_active AS track_active
FROM core.listen_events e
LEFT JOIN core.tracks k ON k.id = e.track_id
WHERE e.is_active AND e.user_known AND e.track_known;
