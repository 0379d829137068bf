//! The binary form of one `archive_journal` row: every sample of one agent batch or
//! one import, with series ids resolved, so that committing a batch costs one row.
//!
//! Layout: version byte (1), varint series count, then per series: varint series id,
//! kind byte (0 = plain samples, 1 = agent buckets), varint sample count, and per
//! sample a zigzag varint of the time since the previous sample of the series (the
//! first since 0), the value as f64 (NaN = unknown) and, for buckets, min and max
//! as f64. Integers are LEB128, floats little-endian.

use super::bytes::{put_varint, unzigzag, zigzag, Reader};

const VERSION: u8 = 1;

/// One sample as the archives take it. `ext` holds an agent bucket's extremes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub value: f64,
    pub ext: Option<(f64, f64)>,
}

/// The samples of one series in one journal row, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub series_id: i64,
    pub buckets: bool,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal row is corrupt: {0}")]
pub struct JournalError(&'static str);

impl From<&'static str> for JournalError {
    fn from(reason: &'static str) -> Self {
        Self(reason)
    }
}

pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let samples: usize = entries.iter().map(|e| e.samples.len()).sum();
    let mut out = Vec::with_capacity(8 + entries.len() * 8 + samples * 12);
    out.push(VERSION);
    put_varint(&mut out, entries.len() as u64);
    for e in entries {
        put_varint(&mut out, e.series_id as u64);
        out.push(u8::from(e.buckets));
        put_varint(&mut out, e.samples.len() as u64);
        let mut prev = 0i64;
        for s in &e.samples {
            let d = s.ts.wrapping_sub(prev);
            put_varint(&mut out, zigzag(d));
            prev = s.ts;
            out.extend_from_slice(&s.value.to_le_bytes());
            if e.buckets {
                let (lo, hi) = s.ext.unwrap_or((f64::NAN, f64::NAN));
                out.extend_from_slice(&lo.to_le_bytes());
                out.extend_from_slice(&hi.to_le_bytes());
            }
        }
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, JournalError> {
    let mut r = Reader::new(bytes, 0);
    if r.byte()? != VERSION {
        return Err(JournalError("unknown version"));
    }
    let n = r.varint()?;
    // Every entry takes at least 3 bytes: a count beyond that is corrupt, and
    // must not drive an allocation.
    if n > bytes.len() as u64 {
        return Err(JournalError("series count larger than the row"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let series_id = r.varint()? as i64;
        let buckets = match r.byte()? {
            0 => false,
            1 => true,
            _ => return Err(JournalError("bad series kind")),
        };
        let count = r.varint()?;
        if count > bytes.len() as u64 {
            return Err(JournalError("sample count larger than the row"));
        }
        let mut samples = Vec::with_capacity(count as usize);
        let mut prev = 0i64;
        for _ in 0..count {
            let ts = prev.wrapping_add(unzigzag(r.varint()?));
            prev = ts;
            let value = r.f64()?;
            let ext = if buckets {
                Some((r.f64()?, r.f64()?))
            } else {
                None
            };
            samples.push(Sample { ts, value, ext });
        }
        out.push(Entry {
            series_id,
            buckets,
            samples,
        });
    }
    if !r.is_done() {
        return Err(JournalError("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_compactly() {
        let entries = vec![
            Entry {
                series_id: 7,
                buckets: true,
                samples: vec![
                    Sample {
                        ts: 1_700_000_010,
                        value: 1.5,
                        ext: Some((1.0, 2.0)),
                    },
                    Sample {
                        ts: 1_700_000_020,
                        value: 2.5,
                        ext: Some((2.0, 3.0)),
                    },
                ],
            },
            Entry {
                series_id: 1 << 40,
                buckets: false,
                samples: vec![Sample {
                    ts: 5,
                    value: f64::NAN,
                    ext: None,
                }],
            },
        ];
        let bytes = encode(&entries);
        let back = decode(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{entries:?}"));
        // About one series id and 9 bytes per plain sample, 25 per bucket.
        assert!(bytes.len() < 90, "{}", bytes.len());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        assert!(decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
