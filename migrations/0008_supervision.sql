-- Supervision (SPEC §6): the latest result of every check, rules defined
-- through the API, alarms with their history, and silences. Notifications
-- leave through the outbox (0009).
-- Times are unix seconds unless the column name says otherwise.

-- The latest result of each check of each host, as the agent shipped it.
-- History lives in the perfdata series and in alarm_transitions; this table
-- holds one row per (host, check), so it is bounded by the fleet's size and
-- goes with the host (ON DELETE CASCADE).
CREATE TABLE check_results (
    host_id      INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    status       INTEGER NOT NULL CHECK (status BETWEEN 0 AND 3),
    output       TEXT NOT NULL,
    long_output  TEXT NOT NULL DEFAULT '',
    perfdata     TEXT NOT NULL DEFAULT '',
    ts           INTEGER NOT NULL,         -- when the run ended (agent clock)
    duration_ms  INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    status_since INTEGER NOT NULL,         -- when `status` last changed
    PRIMARY KEY (host_id, name)
) WITHOUT ROWID;

-- Rules created through the API. Rules of the server's TOML file are not
-- stored: the file is their source of truth and they are read at start. A
-- name is unique across both (the API refuses a name the file uses).
-- `definition` is the JSON of a [[rules]] entry, re-parsed at start with the
-- same checks as the file.
CREATE TABLE rules (
    name        TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- One alarm per (rule, subject): the subject is `host:<id>` or
-- `group:<name>`. The row is the state machine's durable state; the
-- evaluator keeps the same in memory and writes it back with every
-- transition (in the transaction that also writes the outbox rows).
CREATE TABLE alarms (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    host_id       INTEGER REFERENCES hosts(id) ON DELETE CASCADE,
    group_name    TEXT,
    state         TEXT NOT NULL CHECK (state IN ('OK', 'WARNING', 'CRITICAL', 'UNKNOWN')),
    hard          INTEGER NOT NULL,        -- 1: hard state, 0: soft
    attempt       INTEGER NOT NULL,
    since         INTEGER NOT NULL,        -- current state since
    updated_at    INTEGER NOT NULL,        -- last evaluation that changed the row
    value         REAL,                    -- the value that caused the state
    output        TEXT NOT NULL DEFAULT '',
    labels        TEXT NOT NULL DEFAULT '{}',  -- JSON: labels of its notifications
    -- Flap detection: the last 21 states as letters O/W/C/U, oldest first.
    flap_history  TEXT NOT NULL DEFAULT '',
    flapping      INTEGER NOT NULL DEFAULT 0,
    -- What receivers were last told: a state name, NULL before anything.
    notified_state TEXT,
    notified_at   INTEGER,
    -- Start of the current non-OK episode (Alertmanager's startsAt).
    fired_at      INTEGER,
    ack_by        TEXT,
    ack_comment   TEXT,
    ack_at        INTEGER,
    UNIQUE (rule, subject)
);
CREATE INDEX alarms_active ON alarms(state, hard);
CREATE INDEX alarms_host ON alarms(host_id);

-- Every transition of every alarm, with the values that caused it. Bounded
-- by age (retention.alarms.max_age) and by a count per alarm.
CREATE TABLE alarm_transitions (
    id          INTEGER PRIMARY KEY,
    alarm_id    INTEGER NOT NULL REFERENCES alarms(id) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    hard        INTEGER NOT NULL,
    value       REAL,
    output      TEXT NOT NULL DEFAULT '',
    -- What else happened with it: notified, silenced by N, flapping started…
    note        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX alarm_transitions_alarm ON alarm_transitions(alarm_id, at);
CREATE INDEX alarm_transitions_at ON alarm_transitions(at);

-- Silences: label matchers and a time window; a matching alarm notifies
-- nobody while the silence is in force (its transitions are still recorded).
CREATE TABLE silences (
    id          INTEGER PRIMARY KEY,
    matchers    TEXT NOT NULL,             -- JSON [{"name","op","value"}]
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX silences_end ON silences(ends_at);
