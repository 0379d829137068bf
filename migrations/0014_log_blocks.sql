-- Log records stored in compressed blocks instead of one row each
-- (server/src/store/log_block.rs has the blob's format; docs/logs.md
-- "Storage"; why: docs/benchmarks.md "Logs").
--
-- A block holds records of one stream (host, app, source) that committed
-- together, at most 2048, with ascending ids: `id` is the last (newest) one,
-- `first_id` the first, and `id - first_id` < 4096. The columns are what a
-- listing filters on before opening a blob: host and app (one each per
-- block, so those filters are exact), source, the source-time and
-- receive-time spans and the severities present (bit s: a record of severity
-- s; records without one count as notice, 5). `bytes` is what the block
-- counts against `retention.logs.max_bytes`.
--
-- Every record id is still numbered once and never reused, so the zone map
-- (0004) and the late list (0013), both keyed by record id, carry over as
-- they are. The full-text index (0007) now holds one document per block:
-- a new token below makes the indexer rebuild it.
--
-- The late list (0013) gets a span: a block's late records are listed once,
-- under the block's id, with the smallest (`ts`) and largest (`max_ts`)
-- source time among them, rather than once per record. A sender whose clock
-- is off (or a replay of an old file) makes every record late, and a row per
-- record there cost as much as the record itself. Entries of earlier
-- releases keep a record's id, which still finds its block.
ALTER TABLE log_late ADD COLUMN max_ts INTEGER NOT NULL DEFAULT 0;
UPDATE log_late SET max_ts = ts;
CREATE INDEX log_late_max_ts ON log_late (max_ts);

-- Records of the row table `logs` are converted into blocks at the first
-- start of this release (server/src/store/logs.rs, `convert_row_logs`, in
-- transactions of 20 000 records, keeping their ids), then `logs` is dropped.
CREATE TABLE log_blocks (
    id           INTEGER PRIMARY KEY,   -- the last record's id
    first_id     INTEGER NOT NULL,
    n            INTEGER NOT NULL,      -- records
    host_id      INTEGER REFERENCES hosts(id) ON DELETE CASCADE,
    app_name     TEXT,
    source       TEXT NOT NULL CHECK (source IN ('agent', 'syslog-udp', 'syslog-tcp')),
    min_ts       INTEGER NOT NULL,
    max_ts       INTEGER NOT NULL,
    min_received INTEGER NOT NULL,
    max_received INTEGER NOT NULL,
    severities   INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    data         BLOB NOT NULL
);
CREATE INDEX log_blocks_host ON log_blocks(host_id, id);
CREATE INDEX log_blocks_app ON log_blocks(app_name, id) WHERE app_name IS NOT NULL;

CREATE TRIGGER log_blocks_unindex AFTER DELETE ON log_blocks BEGIN
    INSERT INTO logs_unindexed (id) VALUES (old.id);
END;

-- The old rows leave the table as they are converted: nothing to unindex
-- (the index is rebuilt over blocks).
DROP TRIGGER logs_unindex;
DELETE FROM logs_unindexed;
UPDATE log_index_token SET token = lower(hex(randomblob(16)));
