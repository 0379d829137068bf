-- Time-range filters on logs (`from`/`to` of /api/v1/logs) without an index
-- on `ts`: a zone map. Records are numbered in commit order (`id`) and
-- arrive in nearly, not strictly, source-time order, so each block of 4096
-- consecutive ids keeps the smallest and largest `ts` it holds. A query for
-- [from, to) reads the blocks whose [min_ts, max_ts] meets the range and scans
-- only their ids, newest first; the rows themselves are still checked, so a
-- zone that is too wide (a late record with an old timestamp, rows deleted
-- since) costs speed, never correctness.
--
-- Why not `CREATE INDEX ... ON logs(ts)`: one more b-tree insert per record
-- (about 8 % of the writer's time, docs/benchmarks.md "Logs"), and the listing
-- is newest-by-id first, so a `ts` index would still have to sort its matches
-- by id before the LIMIT applies. The zone map costs one upsert per block a
-- transaction touches (a handful per 20 000 records).
--
-- Maintained by server/src/store/logs.rs: writers widen the zones of the
-- blocks they insert into, in the same transaction; retention drops the
-- zones below the oldest record left. Zones are only ever widened, so a
-- stale zone is merely conservative.
CREATE TABLE log_zones (
    block  INTEGER PRIMARY KEY,  -- id >> 12
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL
);

INSERT INTO log_zones (block, min_ts, max_ts)
SELECT id >> 12, min(ts), max(ts) FROM logs GROUP BY id >> 12;

-- Full-text index merging (FTS5 options, kept in logs_fts_config). Each
-- writer transaction flushes its postings as a new segment; by default
-- FTS5 merges 4 segments of a level as soon as they exist (automerge 4) and
-- forces it at 16 (crisismerge). Log ingest is write-mostly, so segments are
-- merged 16 at a time: each posting is rewritten about half as often
-- (about 6 % fewer instructions per record in the writer, measured with
-- callgrind). A query visits more segments, a fraction of a millisecond
-- each (docs/benchmarks.md, "Logs").
INSERT INTO logs_fts (logs_fts, rank) VALUES ('automerge', 16);
INSERT INTO logs_fts (logs_fts, rank) VALUES ('crisismerge', 64);
