-- Scaling hooks (SPEC §7): the events fired, the policies the API created,
-- and what a manual retry of a dead letter needs in the outbox.
-- Times ending in `_ms` are unix milliseconds; others are unix seconds.

-- Every scaling event, with its body frozen as hooks received it. `id` is
-- the event's own id (`evt_…`): the `webhook-id` receivers see and, with the
-- hook's name, the idempotency key of its outbox rows, which the same
-- transaction writes. The runner reads the last event of each policy and
-- type at start, so cooldowns and heal waits survive a restart. Bounded by
-- `retention.scaling` (age, then count), pruned by the runner.
CREATE TABLE scaling_events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,         -- scale_out | scale_in | heal | member_joined | member_left | member_down
    group_name  TEXT NOT NULL,
    policy      TEXT,                  -- NULL for membership events
    at          INTEGER NOT NULL,      -- the body's `at`
    created_ms  INTEGER NOT NULL,
    body        TEXT NOT NULL          -- JSON, as delivered
);
CREATE INDEX scaling_events_group ON scaling_events(group_name, seq);
CREATE INDEX scaling_events_last ON scaling_events(policy, type, at);
CREATE INDEX scaling_events_created ON scaling_events(created_ms);

-- Policies created through the API (JSON with the keys of
-- `[[scaling.policies]]`). The file's policies are not stored: the file is
-- their source of truth, and a stored policy with the name of a file policy
-- is refused by the API (and ignored if the file takes the name later).
CREATE TABLE scaling_policies (
    name        TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- A dead letter sent back to pending by an operator: its retry schedule
-- (max_retry_age) counts from here instead of from `created_ms`, which stays
-- the time the delivery was built. Its attempts are kept.
ALTER TABLE outbox ADD COLUMN requeued_ms INTEGER;
