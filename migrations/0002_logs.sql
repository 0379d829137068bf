-- Central logs: one row per log record. Times are unix microseconds.
-- (First cut: the central-logs work adds the full-text index and the indexes
-- its filters need.)
CREATE TABLE logs (
    id              INTEGER PRIMARY KEY,
    host_id         INTEGER REFERENCES hosts(id) ON DELETE CASCADE,
    ts              INTEGER NOT NULL,   -- source time
    received_at     INTEGER NOT NULL,
    hostname        TEXT,               -- as the sender claimed it
    facility        INTEGER,
    severity        INTEGER,            -- NULL: none given (counts as notice)
    app_name        TEXT,
    procid          TEXT,
    msgid           TEXT,
    message         TEXT NOT NULL,
    structured_data TEXT,
    flags           INTEGER NOT NULL DEFAULT 0, -- 1 truncated, 2 invalid UTF-8, 4 unparsed
    source          TEXT NOT NULL CHECK (source IN ('agent', 'syslog-udp', 'syslog-tcp'))
);
CREATE INDEX logs_host_ts ON logs(host_id, ts);
