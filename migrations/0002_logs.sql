-- Central logs: one row per log record, and a full-text index of the messages.
-- Times are unix microseconds.
--
-- Order: "newest first" is by `id`, the order records were committed (agents'
-- and syslog senders' clocks are not trusted to be monotonic, and the
-- full-text index hands out matches by rowid, so `ORDER BY id DESC LIMIT n`
-- stops after n matches instead of sorting every match).
CREATE TABLE logs (
    id              INTEGER PRIMARY KEY,
    host_id         INTEGER REFERENCES hosts(id) ON DELETE CASCADE,
    ts              INTEGER NOT NULL,   -- source time
    received_at     INTEGER NOT NULL,
    hostname        TEXT,               -- as the sender claimed it
    facility        INTEGER,
    severity        INTEGER,            -- NULL: none given (counts as notice, 5)
    app_name        TEXT,
    procid          TEXT,
    msgid           TEXT,
    message         TEXT NOT NULL,
    structured_data TEXT,
    flags           INTEGER NOT NULL DEFAULT 0, -- 1 truncated, 2 invalid UTF-8, 4 unparsed
    source          TEXT NOT NULL CHECK (source IN ('agent', 'syslog-udp', 'syslog-tcp'))
);
-- The API's filters walk these newest first: `host_id = ? AND id < ?` and
-- `app_name = ? AND id < ?` are index range scans in id order. Severity and
-- time are checked on the rows scanned (few distinct values / not monotonic
-- in id); every extra index costs ingest speed.
CREATE INDEX logs_host_id ON logs(host_id, id);
CREATE INDEX logs_app_id ON logs(app_name, id) WHERE app_name IS NOT NULL;

-- Full-text index of `message`, external content (the text lives once, in
-- `logs`). detail=none keeps only which rows hold a token, not where: several
-- times faster to build and smaller than the default. Phrases are therefore
-- checked on the candidate rows by the query (see server/src/logs/search.rs).
CREATE VIRTUAL TABLE logs_fts USING fts5(
    message,
    content = 'logs',
    content_rowid = 'id',
    detail = none,
    columnsize = 0
);
-- columnsize = 0: no per-document size table. It only serves bm25 ranking, and
-- results are ordered by id; one b-tree insert less per record.

-- Writers (server/src/store/logs.rs) index the rows they insert with one
-- `INSERT INTO logs_fts ... SELECT` per batch, in the same transaction: a
-- per-row trigger costs a sub-program run per record. Deletes (retention,
-- hosts removed) go through this trigger, so the index never holds a row
-- its table lost. Records are never updated.
CREATE TRIGGER logs_fts_delete AFTER DELETE ON logs BEGIN
    INSERT INTO logs_fts (logs_fts, rowid, message) VALUES ('delete', old.id, old.message);
END;
