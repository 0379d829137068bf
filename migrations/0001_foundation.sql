-- Foundation: people and credentials, hosts, series and raw metric points.
-- Times are unix seconds (INTEGER) unless the column name says otherwise.

-- Dashboard users. Passwords are argon2id PHC strings, never plain text.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'admin')),
    created_at    INTEGER NOT NULL
);

-- Bearer tokens: API tokens (viewer/admin), enrollment tokens (enroll) and the
-- per-agent credentials handed out at enrollment (agent, tied to one host).
-- Only the SHA-256 of a token is stored: tokens are 256-bit random, so a fast
-- hash is enough and lookups stay a single index probe.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'admin', 'enroll', 'agent')),
    token_hash  BLOB NOT NULL UNIQUE,
    host_id     INTEGER REFERENCES hosts(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX tokens_host ON tokens(host_id);

-- Dashboard sessions, keyed by the SHA-256 of the cookie value.
CREATE TABLE sessions (
    id_hash    BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expiry ON sessions(expires_at);

-- One row per instance. Identity is instance_id when the agent knows it, else
-- hostname (see the two partial unique indexes). `source` says how the host came
-- to exist; `passive` hosts (imported, syslog-only) never go `down`.
-- batch_stream/batch_seq: the last committed batch of the agent's current
-- stream, which makes batch replay idempotent without keeping every batch id.
CREATE TABLE hosts (
    id            INTEGER PRIMARY KEY,
    hostname      TEXT NOT NULL,
    instance_id   TEXT,
    group_name    TEXT,
    labels        TEXT NOT NULL DEFAULT '{}',  -- JSON object
    agent_version TEXT,
    source        TEXT NOT NULL CHECK (source IN ('agent', 'import', 'syslog')),
    passive       INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL CHECK (state IN ('up', 'down', 'left')),
    state_since   INTEGER NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    batch_stream  TEXT,
    batch_seq     INTEGER
);
CREATE UNIQUE INDEX hosts_instance ON hosts(instance_id) WHERE instance_id IS NOT NULL;
CREATE UNIQUE INDEX hosts_hostname ON hosts(hostname) WHERE instance_id IS NULL;
CREATE INDEX hosts_group ON hosts(group_name);
CREATE INDEX hosts_state ON hosts(state, last_seen);

-- A series is (host, name, labels); `labels` holds the canonical text form
-- `{k="v",…}` ('' for none) so the triple can be unique.
CREATE TABLE series (
    id       INTEGER PRIMARY KEY,
    host_id  INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    labels   TEXT NOT NULL DEFAULT '',
    labels_json TEXT NOT NULL DEFAULT '{}',
    UNIQUE (host_id, name, labels)
);
CREATE INDEX series_name ON series(name);

-- Raw 10 s buckets as shipped (avg/min/max/last/count), bounded by
-- retention.raw_points.max_age. The round-robin archives build on top.
CREATE TABLE points (
    series_id INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    ts        INTEGER NOT NULL,   -- bucket end: the bucket covers (ts - step, ts]
    avg       REAL,
    min       REAL,
    max       REAL,
    last      REAL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
