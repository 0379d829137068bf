-- The outbox (SPEC §6, §7): every notification and, later, every scaling
-- delivery leaves the server through these tables. Delivery is
-- at-least-once: a row is written in the transaction that decides something
-- must be said, and is only marked delivered once the receiver answered 2xx.
--
-- Three layers:
--   notify_receivers  the receivers of the configuration (synced at start);
--   notify_alerts     what each receiver must know about each alert, and
--                     what it was last sent: the alarm commit writes here;
--   notify_groups     when each aggregation group was last flushed;
--   outbox            deliveries with their payload frozen when built;
--   outbox_attempts   every attempt of every delivery.
-- Times ending in `_ms` are unix milliseconds; others are unix seconds.

-- The receivers named by `[[notify]]` (and later `[[scaling.hooks]]`). The
-- alarm commit fans each notice out to the rows of this table, so it must be
-- synced before the evaluator commits anything (the notifier does it at
-- start). A receiver removed from the file takes its alert state with it;
-- its pending deliveries become dead letters (the notifier says why).
CREATE TABLE notify_receivers (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL              -- webhook | alertmanager | (scaling: hook kinds)
) WITHOUT ROWID;

-- What a receiver must know about one alert (Alertmanager's fields), per
-- (receiver, fingerprint). Written by the alarm commit, in the transition's
-- own transaction; read by the notifier, which derives deliveries from it.
-- `seq` grows with every notice; `sent_seq` is the `seq` last put in a
-- delivery, so "changed since sent" is `seq != sent_seq` and survives a
-- restart. A resolved alert is deleted once its resolution was put in a
-- delivery (or at once when the receiver does not send resolved), so the
-- table holds the active alerts only: bounded by the alarms.
CREATE TABLE notify_alerts (
    receiver      TEXT NOT NULL REFERENCES notify_receivers(name) ON DELETE CASCADE,
    fingerprint   TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    labels        TEXT NOT NULL,           -- JSON object
    annotations   TEXT NOT NULL,           -- JSON object
    starts_at     INTEGER NOT NULL,
    ends_at       INTEGER,                 -- set once resolved
    generator_url TEXT NOT NULL DEFAULT '',
    -- Acknowledged, silenced or flapping: repeats are held (the first
    -- notification and the resolution still go out).
    muted         INTEGER NOT NULL DEFAULT 0,
    seq           INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,        -- when the last notice arrived
    sent_seq      INTEGER,                 -- NULL: never sent
    sent_ms       INTEGER,
    PRIMARY KEY (receiver, fingerprint)
) WITHOUT ROWID;
CREATE INDEX notify_alerts_fingerprint ON notify_alerts(fingerprint);

-- Alertmanager's aggregation groups: when each was last flushed, so
-- `group_interval` and `repeat_interval` count from the last send across a
-- restart. A group with no alert left is deleted (the next alert waits
-- `group_wait` again, as in Alertmanager). The key is the receiver's
-- `group_by` labels, as the webhook's `groupKey`.
CREATE TABLE notify_groups (
    receiver    TEXT NOT NULL REFERENCES notify_receivers(name) ON DELETE CASCADE,
    group_key   TEXT NOT NULL,
    flushed_ms  INTEGER NOT NULL,
    PRIMARY KEY (receiver, group_key)
) WITHOUT ROWID;

-- One delivery: a payload frozen when it was built (a retry sends the same
-- bytes), to one receiver. `idempotency_key` is sent with every attempt
-- (`Idempotency-Key`, and `webhook-id` for Standard Webhooks) so a receiver
-- can drop the duplicate a crash between its 2xx and our commit can cause.
-- Deliveries of one receiver go out in `id` order, one at a time.
-- Not a foreign key to notify_receivers: a dead letter outlives its receiver.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    receiver        TEXT NOT NULL,
    kind            TEXT NOT NULL,         -- webhook | alertmanager | …
    idempotency_key TEXT NOT NULL UNIQUE,
    payload         TEXT NOT NULL,         -- the request body, as sent
    summary         TEXT NOT NULL DEFAULT '',  -- e.g. "firing: 2, resolved: 1"
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,      -- pending: not before this
    done_ms         INTEGER,               -- delivered or dead at
    last_error      TEXT                   -- why it is dead, or the last failure
);
-- The worker's claim: a receiver's oldest pending delivery.
CREATE INDEX outbox_pending ON outbox(receiver, id) WHERE state = 'pending';
-- Listing and pruning.
CREATE INDEX outbox_state ON outbox(state, created_ms);

-- Every attempt. `status` is the HTTP status (or the exit code of a command
-- hook), NULL when no answer came (`error` says why: timeout, refused…).
-- The excerpt is at most 1 KiB of the response. At most 64 rows per
-- delivery are kept (the first and the latest); they go with it.
CREATE TABLE outbox_attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES outbox(id) ON DELETE CASCADE,
    at_ms       INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    latency_ms  INTEGER NOT NULL,
    excerpt     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_attempts_delivery ON outbox_attempts(delivery_id, id);
