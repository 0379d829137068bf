-- Round-robin archives replace the raw `points` table (see docs/rrd.md).
--
-- The server keeps every series' consolidation in progress in memory, in front of
-- a durable journal, as rrdcached does:
--   * an agent batch or an import commits ONE `archive_journal` row holding all
--     its samples (a compact blob, series ids resolved) with the batch id, in one
--     transaction, before the 2xx;
--   * a flusher periodically writes the rows completed since into
--     `archive_chunks`, each touched series' state into `archive_state`, and
--     deletes the journal rows every series has applied;
--   * at start, states are loaded and the journal is replayed on top of them.
-- Storage per series is bounded by its archives: chunks are rewritten in place.

DROP TABLE points;

-- Series ids must never be reused while a journal row may still name a removed
-- series, hence AUTOINCREMENT (the table is rebuilt to get it).
CREATE TABLE series_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id     INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    labels      TEXT NOT NULL DEFAULT '',
    labels_json TEXT NOT NULL DEFAULT '{}',
    UNIQUE (host_id, name, labels)
);
INSERT INTO series_new (id, host_id, name, labels, labels_json)
    SELECT id, host_id, name, labels, labels_json FROM series;
DROP TABLE series;
ALTER TABLE series_new RENAME TO series;
CREATE INDEX series_name ON series(name);

-- Samples acknowledged but maybe not yet in archive_chunks/archive_state.
-- `data` is the binary encoding of server/src/store/archive/journal.rs.
CREATE TABLE archive_journal (
    seq  INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);

-- One row per series: the engine's consolidation in progress
-- (metrolog_protocol::rrd::RrdState bytes, spec included), the newest journal
-- row it includes, and the last sample (for the overview page).
CREATE TABLE archive_state (
    series_id   INTEGER PRIMARY KEY REFERENCES series(id) ON DELETE CASCADE,
    state       BLOB NOT NULL,
    applied_seq INTEGER NOT NULL,
    last_ts     INTEGER,
    last_value  REAL
);

-- Rows of one archive of one series, `chunk` × N slots at a time (N fixed per
-- build, see archive/chunk.rs), compactly encoded; a missing chunk is all unknown.
-- Kept small enough to stay in the b-tree leaf (no overflow pages).
CREATE TABLE archive_chunks (
    series_id INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    archive   INTEGER NOT NULL,
    chunk     INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (series_id, archive, chunk)
) WITHOUT ROWID;
