//! Fills every series' rings to full, for measurements that must run on a
//! database as a fleet leaves it after years, not on an empty one.
//!
//! A series' storage is fixed (docs/rrd.md), but an empty ring costs less to
//! read and rewrite than a full one: missing chunks are not read, a chunk of
//! unknown rows encodes to a few bytes, and the database's b-tree is small
//! enough to sit in memory. `metrolog-loadgen prefill` (docs/loadgen.md) calls
//! [`fill_rings`] on a stopped server's database so that the fleet runs of
//! docs/benchmarks.md read and write full rings. Importing two years of rows
//! through the API would take hours for a fleet; this writes the chunks
//! directly, in key order, in large transactions.
//!
//! What it writes: every row of every archive of every series that is unknown
//! becomes a known row, `count` the row's full step count; known rows are
//! kept. The values are as hard to encode as an agent's (the metrology
//! bench's agent-like data, docs/benchmarks.md "Metrics" (b): about 145 KB
//! per series when full): by series, one of four kinds — ratios such as CPU
//! percentages and rates of bytes per second have full mantissas, memory
//! sizes are whole multiples of 1024, load averages two decimals, and a row
//! of several steps averages them. The series' states (`archive_state`) are
//! not touched, so the newest rows and the consolidation in progress are the
//! server's own.

use super::chunk::{self, rows_in_chunk, CHUNK_ROWS};
use metrolog_protocol::rrd::{Row, RrdState};
use std::path::Path;

/// What a fill wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FillReport {
    pub series: u64,
    /// Chunks written (every chunk of every archive of every series).
    pub chunks: u64,
    /// Rows that were unknown and are now filled.
    pub rows_filled: u64,
    /// Stored chunks that did not decode: rewritten whole, their rows filled.
    pub damaged_chunks: u64,
    /// Bytes of chunk data written.
    pub bytes: u64,
}

/// Chunks per transaction: big enough that commits are rare, small enough
/// that the WAL stays a few hundred MB.
const CHUNKS_PER_COMMIT: u64 = 200_000;

/// Fills the rings of every series in the database at `path` (the server
/// must be stopped: its memory would not know the rows written here).
/// `progress` is called after each commit with the totals so far.
pub fn fill_rings(
    path: &Path,
    seed: u64,
    mut progress: impl FnMut(&FillReport, u64),
) -> Result<FillReport, String> {
    let db = rusqlite::Connection::open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    db.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    // The server's own settings (WAL); no fsync per commit: a fill that is
    // interrupted is run again.
    db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .map_err(err)?;
    let states: Vec<(i64, Vec<u8>)> = {
        let mut st = db
            .prepare("SELECT series_id, state FROM archive_state ORDER BY series_id")
            .map_err(err)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)?
    };
    let total = states.len() as u64;
    let mut report = FillReport::default();
    let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut in_tx = 0u64;
    db.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    {
        let mut read = db
            .prepare_cached(
                "SELECT data FROM archive_chunks WHERE series_id = ? AND archive = ? AND chunk = ?",
            )
            .map_err(err)?;
        let mut write = db
            .prepare_cached(
                "INSERT OR REPLACE INTO archive_chunks (series_id, archive, chunk, data)
                 VALUES (?, ?, ?, ?)",
            )
            .map_err(err)?;
        let mut out = Vec::with_capacity(1024);
        for (series_id, state) in &states {
            let state = RrdState::from_bytes(state)
                .map_err(|e| format!("series {series_id}: its archive state is corrupt: {e}"))?;
            let spec = state.spec();
            let kind = Kind::of(*series_id);
            // A level in the range of the kind's values, moving slowly.
            let mut level = unit(&mut rng);
            for (archive, a) in spec.archives.iter().enumerate() {
                let pdp = a.step / spec.base_step;
                for c in 0..a.rows.div_ceil(CHUNK_ROWS) {
                    let n = rows_in_chunk(a.rows, c);
                    let stored: Option<Vec<u8>> = read
                        .query_row((series_id, archive as i64, i64::from(c)), |r| r.get(0))
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })
                        .map_err(err)?;
                    let mut rows = match stored {
                        Some(bytes) => chunk::decode(&bytes, n, pdp).unwrap_or_else(|_| {
                            // A damaged chunk reads as unknown rows (as the
                            // server reads it); it is rewritten whole.
                            report.damaged_chunks += 1;
                            vec![Row::UNKNOWN; n]
                        }),
                        None => vec![Row::UNKNOWN; n],
                    };
                    for row in rows.iter_mut().filter(|r| !r.is_known()) {
                        level = (level + (unit(&mut rng) - 0.5) * 0.02).clamp(0.0, 1.0);
                        *row = kind.row(level, pdp, &mut rng);
                        report.rows_filled += 1;
                    }
                    out.clear();
                    chunk::encode(&rows, pdp, &mut out);
                    write
                        .execute((series_id, archive as i64, i64::from(c), &out[..]))
                        .map_err(err)?;
                    report.chunks += 1;
                    report.bytes += out.len() as u64;
                    in_tx += 1;
                }
            }
            report.series += 1;
            if in_tx >= CHUNKS_PER_COMMIT {
                db.execute_batch("COMMIT; BEGIN IMMEDIATE").map_err(err)?;
                in_tx = 0;
                progress(&report, total);
            }
        }
    }
    db.execute_batch("COMMIT").map_err(err)?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(err)?;
    progress(&report, total);
    Ok(report)
}

/// What a series' values look like, as far as their encoding goes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A ratio (CPU percentages): full mantissas.
    Ratio,
    /// Whole multiples of 1024 (memory, disk sizes): a row of several steps
    /// averages them, a short decimal over its count.
    Bytes,
    /// Two decimals (load averages).
    Load,
    /// Bytes per second over a jittered second: full mantissas, often zero.
    Rate,
}

impl Kind {
    fn of(series_id: i64) -> Self {
        match series_id.rem_euclid(4) {
            0 => Self::Ratio,
            1 => Self::Bytes,
            2 => Self::Load,
            _ => Self::Rate,
        }
    }

    /// A known row of `pdp` steps around `level` (0..1 of the kind's range).
    fn row(self, level: f64, pdp: u32, rng: &mut u64) -> Row {
        let n = f64::from(pdp);
        let (avg, min, max, last) = match self {
            Self::Ratio => {
                let avg = (level * 100.0 + (unit(rng) - 0.5) * 4.0).clamp(0.0, 100.0);
                let min = (avg - unit(rng) * 3.0).max(0.0);
                let max = (avg + unit(rng) * 3.0).min(100.0);
                (avg, min, max, min + (max - min) * unit(rng))
            }
            Self::Bytes => {
                let kib = |x: f64| (x * 4_000_000.0).round() * 1024.0;
                let avg = (kib(level) * n + (next(rng) % 2_001) as f64 * 1024.0) / n;
                let (min, max) = (kib(level) - 1024.0, kib(level) + 2_048_000.0);
                (avg, min, max, kib(level))
            }
            Self::Load => {
                let cents = |x: f64| (x * 400.0).round();
                let c = cents(level);
                let avg = (c * n * 10.0 + (next(rng) % 41) as f64) / (100.0 * n * 10.0);
                let min = (c - (next(rng) % 20) as f64) / 100.0;
                let max = (c + (next(rng) % 20) as f64) / 100.0;
                (avg, min, max, c / 100.0)
            }
            Self::Rate => {
                if next(rng).is_multiple_of(3) {
                    (0.0, 0.0, 0.0, 0.0)
                } else {
                    let avg = level * 20_000.0 / (1.0 + (unit(rng) - 0.5) * 2e-3);
                    let max = avg * (1.0 + unit(rng) * 100.0);
                    (avg, 0.0, max, avg * unit(rng))
                }
            }
        };
        Row {
            avg,
            min: min.min(avg),
            max: max.max(avg),
            // A row of one step keeps no last of its own: it is the average.
            last: if pdp == 1 { avg } else { last },
            count: pdp,
        }
    }
}

/// A uniform value in [0, 1) with a full mantissa.
fn unit(rng: &mut u64) -> f64 {
    (next(rng) >> 11) as f64 / (1u64 << 53) as f64
}

/// splitmix64.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{temp_store, Store};
    use metrolog_protocol::rrd::Cf;
    use metrolog_protocol::{BatchId, Bucket, Labels, SeriesKey};

    const T0: i64 = 1_000_000;

    async fn known_rows(store: &Store, id: i64, step: u32, span: i64) -> Vec<(i64, Option<f64>)> {
        let to = T0 + 400;
        let f = store
            .archive_rows(id, step, to - span, to)
            .await
            .unwrap()
            .unwrap();
        (1..=f.rows.len() as i64)
            .map(|k| {
                (
                    f.start + k * i64::from(f.step),
                    f.rows[k as usize - 1].value(Cf::Avg),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn every_row_of_every_ring_is_known_and_the_stored_rows_stay() {
        let (store, dir) = temp_store().await;
        let host = crate::store::test_host(&store, "h").await;
        let key = SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap();
        let buckets = (1..=40)
            .map(|k| Bucket {
                ts: T0 + k * 10,
                avg: k as f64,
                min: k as f64,
                max: k as f64,
                last: k as f64,
                count: 10,
            })
            .collect();
        let batch = BatchId {
            stream: "s".into(),
            seq: 1,
        };
        store
            .commit_batch(
                host,
                &batch,
                vec![(key, buckets)],
                Default::default(),
                Vec::new(),
            )
            .await
            .unwrap();
        store.flush_archives().await.unwrap();
        let id = store.series(Some(host), None).await.unwrap()[0].id;
        let before = known_rows(&store, id, 10, 3600).await;
        assert_eq!(before.iter().filter(|(_, v)| v.is_some()).count(), 40);
        store.close().await;

        let path = dir.path().join("t.db");
        let mut commits = 0;
        let report = fill_rings(&path, 7, |_, total| {
            assert_eq!(total, 1);
            commits += 1;
        })
        .unwrap();
        // The default ladder: 360, 1440, 2016, 744 and 730 rows in chunks of 16.
        assert_eq!(report.series, 1);
        assert_eq!(report.damaged_chunks, 0);
        assert_eq!(report.chunks, 23 + 90 + 126 + 47 + 46);
        // Known already: the 40 ten-second rows, six 1-minute rows (60..=360)
        // and one 5-minute row (300) of the 400 seconds shipped.
        assert_eq!(
            report.rows_filled,
            360 + 1440 + 2016 + 744 + 730 - 40 - 6 - 1
        );
        assert!(commits >= 1);

        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let after = known_rows(&store, id, 10, 3600).await;
        assert_eq!(after.len(), 360);
        assert!(after.iter().all(|(_, v)| v.is_some()), "{after:?}");
        for k in 1..=40 {
            assert!(after.contains(&(T0 + k * 10, Some(k as f64))), "row {k}");
        }
        // The coarsest archive, two years of days: every row there, and the
        // day in progress (not complete yet) after them.
        let days = known_rows(&store, id, 86_400, 730 * 86_400).await;
        assert_eq!(days.len(), 731);
        assert!(days[..730].iter().all(|(_, v)| v.is_some()), "{days:?}");
        assert_eq!(days[730].1, None);
        store.close().await;
    }
}
