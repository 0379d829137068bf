-- The full-text index of log messages moves out of this database into a file
-- of its own (`<database>.logs-fts.db`, next to it), written by its own
-- connection on its own thread: one SQLite file has one writer at a time, and
-- the postings were a third of the log writer's work (docs/benchmarks.md,
-- "Logs"). The index follows the committed records asynchronously, by id;
-- its schema and how it catches up are in server/src/store/logs.rs.
--
-- An existing index is dropped here, not copied: the indexer rebuilds the new
-- one from the rows, oldest first, in bounded chunks on its own connection,
-- while ingest goes on (searches miss the records it has not reached yet).
DROP TRIGGER IF EXISTS logs_fts_delete;
DROP TABLE IF EXISTS logs_fts;

-- Records deleted (retention, hosts removed with their records) whose index
-- entries must go too. The index lives in another file, which a trigger here
-- cannot write; the indexer deletes these ids from the index and then from
-- this queue. A row per deleted record, but only until the next indexer round.
CREATE TABLE logs_unindexed (
    id INTEGER NOT NULL
);
CREATE TRIGGER logs_unindex AFTER DELETE ON logs BEGIN
    INSERT INTO logs_unindexed (id) VALUES (old.id);
END;

-- Names this database for its index file: an index built from another
-- database (restored, replaced, ids started over) is dropped and rebuilt
-- rather than trusted.
CREATE TABLE log_index_token (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL
);
INSERT INTO log_index_token (id, token) VALUES (1, lower(hex(randomblob(16))));
