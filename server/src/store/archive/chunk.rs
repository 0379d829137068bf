//! How archive rows sit in `archive_chunks`: [`CHUNK_ROWS`] consecutive slots of one
//! archive per blob, each row compactly encoded, so that rows that are unknown or
//! whose min, max and last equal their average cost one byte or nine.
//!
//! Per row: a flags byte, then the fields it says are present, little-endian:
//!
//! | bits | meaning |
//! | --- | --- |
//! | 0–1, 2–3, 4–5 | min, max, last: 0 = an f64 follows, 1 = equals avg, 2 = unknown |
//! | 6 | avg present (an f64 follows); else avg is unknown |
//! | 7 | count present (a LEB128 varint follows); else it is `pdp_per_row` for a known row and 0 for an unknown one |
//!
//! Fields follow in the order avg, min, max, last, count. A chunk holds
//! `min(CHUNK_ROWS, rows − chunk × CHUNK_ROWS)` rows; a missing chunk is all unknown.

use metrolog_protocol::rrd::Row;

/// Slots per chunk: at most 16 × 38 bytes, so a chunk stays inside its b-tree leaf
/// page (SQLite spills rows over about 1000 bytes of a WITHOUT ROWID table into
/// overflow pages).
pub const CHUNK_ROWS: u32 = 16;

const EXPLICIT: u8 = 0;
const SAME: u8 = 1;
const UNKNOWN: u8 = 2;
const AVG: u8 = 1 << 6;
const COUNT: u8 = 1 << 7;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("archive chunk is corrupt: {0}")]
pub struct ChunkError(&'static str);

/// Rows in chunk `chunk` of an archive of `rows` rows.
pub fn rows_in_chunk(rows: u32, chunk: u32) -> usize {
    rows.saturating_sub(chunk * CHUNK_ROWS).min(CHUNK_ROWS) as usize
}

fn mode(field: f64, avg: f64) -> u8 {
    if field.is_nan() {
        UNKNOWN
    } else if field.to_bits() == avg.to_bits() {
        SAME
    } else {
        EXPLICIT
    }
}

pub fn encode(rows: &[Row], pdp_per_row: u32, out: &mut Vec<u8>) {
    out.clear();
    for r in rows {
        let known = !r.avg.is_nan();
        let (m_min, m_max, m_last) = (mode(r.min, r.avg), mode(r.max, r.avg), mode(r.last, r.avg));
        let default_count = if known { pdp_per_row } else { 0 };
        let mut flags = m_min | (m_max << 2) | (m_last << 4);
        if known {
            flags |= AVG;
        }
        if r.count != default_count {
            flags |= COUNT;
        }
        out.push(flags);
        if known {
            out.extend_from_slice(&r.avg.to_le_bytes());
        }
        for (m, v) in [(m_min, r.min), (m_max, r.max), (m_last, r.last)] {
            if m == EXPLICIT {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        if r.count != default_count {
            let mut c = r.count;
            loop {
                let b = (c & 0x7f) as u8;
                c >>= 7;
                if c == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
        }
    }
}

pub fn decode(bytes: &[u8], n: usize, pdp_per_row: u32) -> Result<Vec<Row>, ChunkError> {
    let mut at = 0usize;
    let f64_at = |at: &mut usize| -> Result<f64, ChunkError> {
        let b = bytes
            .get(*at..*at + 8)
            .ok_or(ChunkError("truncated value"))?;
        *at += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        let v = f64::from_le_bytes(a);
        Ok(if v.is_finite() { v } else { f64::NAN })
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = *bytes.get(at).ok_or(ChunkError("truncated row"))?;
        at += 1;
        let avg = if flags & AVG != 0 {
            f64_at(&mut at)?
        } else {
            f64::NAN
        };
        let field = |shift: u8, at: &mut usize| -> Result<f64, ChunkError> {
            match (flags >> shift) & 3 {
                EXPLICIT => f64_at(at),
                SAME => Ok(avg),
                UNKNOWN => Ok(f64::NAN),
                _ => Err(ChunkError("bad field mode")),
            }
        };
        let min = field(0, &mut at)?;
        let max = field(2, &mut at)?;
        let last = field(4, &mut at)?;
        let count = if flags & COUNT != 0 {
            let mut c: u64 = 0;
            let mut shift = 0;
            loop {
                let b = *bytes.get(at).ok_or(ChunkError("truncated count"))?;
                at += 1;
                c |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 28 {
                    return Err(ChunkError("count too long"));
                }
            }
            u32::try_from(c).map_err(|_| ChunkError("count too large"))?
        } else if avg.is_nan() {
            0
        } else {
            pdp_per_row
        };
        if count > pdp_per_row {
            return Err(ChunkError("row count larger than the row's steps"));
        }
        out.push(Row {
            avg,
            min,
            max,
            last,
            count,
        });
    }
    if at != bytes.len() {
        return Err(ChunkError("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &[Row], b: &[Row]) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn rows_round_trip_and_simple_rows_are_small() {
        let rows = vec![
            Row::UNKNOWN,
            Row {
                count: 3,
                ..Row::UNKNOWN
            },
            Row {
                avg: 1.5,
                min: 1.5,
                max: 1.5,
                last: 1.5,
                count: 6,
            },
            Row {
                avg: 2.0,
                min: -1.0,
                max: 7.0,
                last: f64::NAN,
                count: 4,
            },
            Row {
                avg: 0.1,
                min: 0.0,
                max: 0.3,
                last: 0.2,
                count: 300_000,
            },
        ];
        let mut buf = Vec::new();
        encode(&rows, 300_000, &mut buf);
        let back = decode(&buf, rows.len(), 300_000).unwrap();
        assert!(same(&rows, &back), "{back:?}");
        encode(&[Row::UNKNOWN], 6, &mut buf);
        assert_eq!(buf.len(), 1);
        encode(&rows[2..3], 6, &mut buf);
        assert_eq!(buf.len(), 9);
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let mut buf = Vec::new();
        let row = Row {
            avg: 2.0,
            min: -1.0,
            max: 7.0,
            last: 3.0,
            count: 4,
        };
        encode(&[row, row], 6, &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], 2, 6).is_err());
        }
        assert!(decode(&buf, 1, 6).is_err(), "trailing bytes");
        assert!(decode(&buf, 2, 3).is_err(), "count above pdp_per_row");
        assert!(decode(&[0xff; 64], 2, 6).is_err());
    }

    #[test]
    fn worst_case_chunk_stays_in_its_leaf_page() {
        let row = Row {
            avg: 2.0,
            min: -1.0,
            max: 7.0,
            last: 3.0,
            count: 1,
        };
        let mut buf = Vec::new();
        encode(&[row; CHUNK_ROWS as usize], u32::MAX, &mut buf);
        assert!(buf.len() < 1000, "{}", buf.len());
        assert_eq!(rows_in_chunk(360, 22), 8);
        assert_eq!(rows_in_chunk(360, 23), 0);
    }
}
