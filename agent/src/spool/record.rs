//! The spool's file format: a segment file is an 8-byte magic followed by
//! records, each `[length: u32 LE][CRC-32 of the payload: u32 LE][payload]`,
//! the payload being one [`Record`] as zstd-compressed JSON.
//!
//! A reader trusts nothing: a length past the end of the file (a write cut
//! short by a crash), a checksum that does not match (a torn or rotted
//! block) or a payload that does not decode ends the good part of the file;
//! [`scan`] returns the records before it and says what was wrong.

use metrolog_protocol::Batch;
use serde::{Deserialize, Serialize};

/// First bytes of every segment file (format version 1).
pub const MAGIC: &[u8; 8] = b"MLSPOOL1";
/// Bytes before a record's payload.
pub const HEADER: usize = 8;
/// Largest payload accepted when reading: a batch is at most a few MiB of
/// JSON before compression, so a larger length is damage, not data.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// zstd level of payloads: fast; a spool write happens every ship interval.
const ZSTD_LEVEL: i32 = 3;

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the spool, increasing across restarts.
    pub seq: u64,
    pub batch: Batch,
    /// `[start, end)` index ranges of `batch.logs` read from tailed files:
    /// after a crash, those of records the saved file offsets do not cover
    /// are read again from the files, so the copy here is removed (see
    /// `docs/agent-spool.md`, "Crash safety").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_logs: Vec<(u32, u32)>,
}

impl Record {
    /// Log records read from files.
    pub fn file_log_count(&self) -> usize {
        self.file_logs
            .iter()
            .map(|(a, b)| b.saturating_sub(*a) as usize)
            .sum()
    }

    /// Removes the log records read from files; returns how many.
    pub fn strip_file_logs(&mut self) -> usize {
        if self.file_logs.is_empty() {
            return 0;
        }
        let ranges = std::mem::take(&mut self.file_logs);
        let before = self.batch.logs.len();
        let mut i = 0u32;
        self.batch.logs.retain(|_| {
            let from_file = ranges.iter().any(|(a, b)| (*a..*b).contains(&i));
            i += 1;
            !from_file
        });
        before - self.batch.logs.len()
    }
}

/// A record framed for a segment file.
pub fn encode(record: &Record) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    let payload = zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(|e| e.to_string())?;
    let len = u32::try_from(payload.len()).map_err(|_| "record too large".to_string())?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one framed record (header included).
pub fn decode(framed: &[u8]) -> Result<Record, String> {
    if framed.len() < HEADER {
        return Err(format!("record cut short at {} bytes", framed.len()));
    }
    let len = u32::from_le_bytes([framed[0], framed[1], framed[2], framed[3]]) as usize;
    let crc = u32::from_le_bytes([framed[4], framed[5], framed[6], framed[7]]);
    if len > MAX_PAYLOAD {
        return Err(format!("record length {len} is not plausible"));
    }
    let Some(payload) = framed.get(HEADER..HEADER + len) else {
        return Err(format!(
            "record of {len} bytes cut short at {} bytes",
            framed.len() - HEADER
        ));
    };
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    let json = zstd::bulk::decompress(payload, 16 * MAX_PAYLOAD)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("cannot decode: {e}"))
}

/// A record found in a segment: where it starts and its framed length.
#[derive(Debug)]
pub struct Found {
    pub offset: u64,
    pub len: u32,
    pub record: Record,
}

/// What a segment file holds.
#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<Found>,
    /// What ends the good part early, with the byte offset.
    pub damage: Option<String>,
}

/// Reads every record of a segment file's bytes, in order.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let damage = scan_each(bytes, |f| records.push(f));
    Scan { records, damage }
}

/// Reads the records of a segment file's bytes in order, handing each to
/// `each` as soon as it is decoded, so that a segment is never held decoded
/// whole (a 1 MiB segment of log batches decodes to some 30 MiB). Returns
/// what ends the good part early.
pub fn scan_each(bytes: &[u8], mut each: impl FnMut(Found)) -> Option<String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Some("not a spool segment (bad magic)".into());
    }
    let mut at = MAGIC.len();
    let mut last_seq = 0;
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Ok(record) if record.seq > last_seq => {
                let len = HEADER
                    + u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                        as usize;
                last_seq = record.seq;
                each(Found {
                    offset: at as u64,
                    len: len as u32,
                    record,
                });
                at += len;
            }
            Ok(record) => {
                return Some(format!(
                    "record {} after record {last_seq} at byte {at}: out of order",
                    record.seq
                ));
            }
            Err(e) => {
                return Some(format!("{e} at byte {at}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use metrolog_protocol::syslog::LogRecord;
    use metrolog_protocol::BatchId;

    fn record(seq: u64, logs: &[&str]) -> Record {
        Record {
            seq,
            batch: Batch {
                id: BatchId {
                    stream: "s".into(),
                    seq,
                },
                sent_at: 100,
                logs: logs
                    .iter()
                    .map(|m| LogRecord::whole((*m).into(), Utc::now()))
                    .collect(),
                checks: Vec::new(),
                metrics: Vec::new(),
                series_meta: Vec::new(),
            },
            file_logs: Vec::new(),
        }
    }

    fn file(records: &[Record]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for r in records {
            bytes.extend(encode(r).unwrap());
        }
        bytes
    }

    #[test]
    fn round_trip_and_every_cut_is_detected() {
        let recs = [record(1, &["a"]), record(2, &["b", "c"])];
        let bytes = file(&recs);
        let s = scan(&bytes);
        assert!(s.damage.is_none());
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.records[1].record, recs[1]);
        // A crash can cut the file anywhere: the records before the cut
        // survive, the cut one is reported, never a panic.
        let first_end = (s.records[0].offset + u64::from(s.records[0].len)) as usize;
        for cut in 0..bytes.len() {
            let s = scan(&bytes[..cut]);
            let whole = if cut >= first_end { 1 } else { 0 };
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            assert_eq!(
                s.damage.is_some(),
                cut != first_end && cut != MAGIC.len(),
                "cut at {cut}: {:?}",
                s.damage
            );
        }
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_mismatch() {
        let mut bytes = file(&[record(1, &["a"]), record(2, &["b"])]);
        let last = bytes.len() - 3;
        bytes[last] ^= 0x10;
        let s = scan(&bytes);
        assert_eq!(s.records.len(), 1);
        assert!(s.damage.unwrap().contains("checksum"));
    }

    #[test]
    fn stripping_file_logs_keeps_the_others_in_order() {
        let mut r = record(1, &["f1", "s1", "f2", "f3", "s2"]);
        r.file_logs = vec![(0, 1), (2, 4)];
        assert_eq!(r.file_log_count(), 3);
        assert_eq!(r.strip_file_logs(), 3);
        let left: Vec<&str> = r.batch.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(left, ["s1", "s2"]);
        assert!(r.file_logs.is_empty());
    }
}
