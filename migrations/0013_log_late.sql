-- Late records, kept out of the zone map (0004_log_zones.sql).
--
-- A record whose source time (`ts`) is more than 5 minutes from the time it
-- was received (an old line shipped late, a sender whose clock is off) would
-- widen its block's zone to span both times, and every query for a time
-- near either would scan that block: with one such record in 10 000, about 40 %
-- of the blocks spanned an hour (docs/benchmarks.md "Logs"). Such records
-- are listed here instead, by source time, and left out of their block's
-- min_ts/max_ts; a time-filtered listing reads the blocks whose zone meets
-- the range plus the late records whose `ts` is in it, and merges the two by id.
--
-- Every record is thus covered by its block's zone or listed here. Rows here
-- whose record was deleted are harmless (the listing joins `logs` and checks
-- `ts` on the record itself); retention drops those below the oldest record
-- left. Maintained by server/src/store/logs.rs. Records stored before this
-- migration widened their zones as before, which is merely conservative.
CREATE TABLE log_late (
    id INTEGER PRIMARY KEY,  -- logs.id
    ts INTEGER NOT NULL
);
CREATE INDEX log_late_ts ON log_late (ts);
