//! The log store's block format, backend-neutral (no SQL here): records of
//! one stream (host, app, source) that commit together are kept as one
//! compressed block, the way rsyslog appends to a file and Loki cuts chunks,
//! so the database's b-tree, index and WAL work and the full-text postings
//! are per block rather than per line (docs/logs.md, "Storage").
//!
//! A block row carries what the listing filters on without opening it (first
//! and last record id, host, app, source, time span, severity mask); the
//! blob holds, per record, the id step from the previous one, source and
//! receive time, flags, facility, severity and the texts. Layout before
//! compression, all integers LEB128 varints, signed ones zigzag-coded:
//!
//! ```text
//! version (1) · record count
//! per record: id step (0 for the first) · ts − previous ts (signed) ·
//!   received_at − ts (signed) · presence and flag bits ·
//!   [facility] · [severity] · [hostname] · [procid] · [msgid] · message · [structured data]
//!   (strings: byte length, then UTF-8)
//! ```
//!
//! The stored blob is that layout behind one byte: `0` stored as is (tiny
//! blocks, where compression would add bytes), `1` zstd.

use metrolog_protocol::syslog::{Facility, LogRecord, Severity};
use std::cell::RefCell;

/// Most records in one block: a listing that needs one record decodes at most
/// this many.
pub const MAX_BLOCK_RECORDS: usize = 512;
/// A block is closed once its encoded records reach this many bytes.
pub const MAX_BLOCK_RAW_BYTES: usize = 1 << 20;
/// `last id − first id` of a block stays under this, so the blocks holding a
/// record id `x` all have their last id in `x ..= x + MAX_SPAN` (an index
/// range). Blocks written by the store hold consecutive ids; blocks converted
/// from the row table of older releases may skip ids.
pub const MAX_SPAN: i64 = 4096;
/// Largest decoded block accepted (a corrupt length must not allocate GiBs).
const MAX_DECODED: usize = 64 << 20;

const VERSION: u8 = 1;
const STORED: u8 = 0;
const ZSTD: u8 = 1;
/// zstd level: 1 compresses syslog text 4–8× at several hundred MB/s.
const LEVEL: i32 = 1;
/// Below this many encoded bytes a block is stored uncompressed.
const MIN_COMPRESS: usize = 96;

const F_TRUNCATED: u64 = 1;
const F_INVALID_UTF8: u64 = 2;
const F_UNPARSED: u64 = 4;
const F_HOSTNAME: u64 = 8;
const F_FACILITY: u64 = 16;
const F_SEVERITY: u64 = 32;
const F_PROCID: u64 = 64;
const F_MSGID: u64 = 128;
const F_SD: u64 = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("log block is damaged: {0}")]
pub struct BlockError(&'static str);

/// Bit of `severity` (records without one count as notice) in a block's
/// severity mask.
pub fn severity_bit(s: Option<Severity>) -> i64 {
    1 << s.unwrap_or(Severity::DEFAULT).as_u8()
}

/// The blocks' bits for "at least as severe as `s`".
pub fn severity_mask_upto(s: Severity) -> i64 {
    (2i64 << s.as_u8()) - 1
}

/// Appends records to a block's encoded form.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
    n: u64,
    prev_id: i64,
    prev_ts: i64,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Encoded bytes so far (before compression).
    pub fn raw_len(&self) -> usize {
        self.buf.len()
    }

    /// Appends record `r` with id `id` (ids ascend within a block).
    pub fn push(&mut self, id: i64, r: &LogRecord) {
        let b = &mut self.buf;
        put_u64(
            b,
            if self.n == 0 {
                0
            } else {
                (id - self.prev_id) as u64
            },
        );
        put_i64(b, r.ts.wrapping_sub(self.prev_ts));
        put_i64(b, r.received_at.wrapping_sub(r.ts));
        let mut bits = 0;
        bits |= if r.truncated { F_TRUNCATED } else { 0 };
        bits |= if r.invalid_utf8 { F_INVALID_UTF8 } else { 0 };
        bits |= if r.unparsed { F_UNPARSED } else { 0 };
        bits |= if r.hostname.is_some() { F_HOSTNAME } else { 0 };
        bits |= if r.facility.is_some() { F_FACILITY } else { 0 };
        bits |= if r.severity.is_some() { F_SEVERITY } else { 0 };
        bits |= if r.procid.is_some() { F_PROCID } else { 0 };
        bits |= if r.msgid.is_some() { F_MSGID } else { 0 };
        bits |= if r.structured_data.is_some() { F_SD } else { 0 };
        put_u64(b, bits);
        if let Some(f) = r.facility {
            b.push(f.as_u8());
        }
        if let Some(s) = r.severity {
            b.push(s.as_u8());
        }
        for s in [&r.hostname, &r.procid, &r.msgid].into_iter().flatten() {
            put_str(b, s);
        }
        put_str(b, &r.message);
        if let Some(sd) = &r.structured_data {
            put_str(b, sd);
        }
        self.n += 1;
        self.prev_id = id;
        self.prev_ts = r.ts;
    }

    /// The stored blob (compressed when that helps).
    pub fn finish(self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.buf.len() + 12);
        raw.push(VERSION);
        put_u64(&mut raw, self.n);
        raw.extend_from_slice(&self.buf);
        if raw.len() >= MIN_COMPRESS {
            let packed = COMPRESSOR.with(|c| {
                let mut c = c.borrow_mut();
                let c = c.get_or_insert_with(|| {
                    zstd::bulk::Compressor::new(LEVEL).expect("zstd context")
                });
                c.compress(&raw)
            });
            if let Ok(mut packed) = packed {
                if packed.len() + 1 < raw.len() {
                    packed.insert(0, ZSTD);
                    return packed;
                }
            }
        }
        raw.insert(0, STORED);
        raw
    }
}

thread_local! {
    // A zstd context per thread, reused: making one costs more than
    // compressing a small block.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// One record of a block, its texts borrowed from the decoded block.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub id: i64,
    pub ts: i64,
    pub received_at: i64,
    pub hostname: Option<&'a str>,
    pub facility: Option<Facility>,
    pub severity: Option<Severity>,
    pub procid: Option<&'a str>,
    pub msgid: Option<&'a str>,
    pub message: &'a str,
    pub structured_data: Option<&'a str>,
    pub truncated: bool,
    pub invalid_utf8: bool,
    pub unparsed: bool,
}

impl RecordRef<'_> {
    /// The owned record; `app_name` is the block's.
    pub fn to_record(&self, app_name: Option<&str>) -> LogRecord {
        LogRecord {
            ts: self.ts,
            received_at: self.received_at,
            hostname: self.hostname.map(str::to_string),
            facility: self.facility,
            severity: self.severity,
            app_name: app_name.map(str::to_string),
            procid: self.procid.map(str::to_string),
            msgid: self.msgid.map(str::to_string),
            message: self.message.to_string(),
            structured_data: self.structured_data.map(str::to_string),
            truncated: self.truncated,
            invalid_utf8: self.invalid_utf8,
            unparsed: self.unparsed,
        }
    }
}

/// The encoded records of a stored blob (decompressed when it was).
pub fn unpack(data: &[u8]) -> Result<Vec<u8>, BlockError> {
    match data.split_first() {
        Some((&STORED, rest)) => Ok(rest.to_vec()),
        Some((&ZSTD, rest)) => {
            let size = zstd::zstd_safe::get_frame_content_size(rest)
                .ok()
                .flatten()
                .ok_or(BlockError("no content size"))?;
            if size > MAX_DECODED as u64 {
                return Err(BlockError("too large"));
            }
            DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                let d =
                    d.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
                d.decompress(rest, size as usize)
                    .map_err(|_| BlockError("zstd"))
            })
        }
        _ => Err(BlockError("unknown encoding")),
    }
}

/// Calls `f` with each record of the unpacked block `raw`, whose first
/// record has id `first_id`, in id order.
pub fn for_each<'a>(
    raw: &'a [u8],
    first_id: i64,
    mut f: impl FnMut(RecordRef<'a>),
) -> Result<(), BlockError> {
    let mut r = Reader { b: raw };
    if r.byte()? != VERSION {
        return Err(BlockError("unknown version"));
    }
    let n = r.u64()?;
    let (mut id, mut ts) = (first_id, 0i64);
    for i in 0..n {
        let step = r.u64()? as i64;
        if i > 0 {
            id += step;
        }
        ts = ts.wrapping_add(r.i64()?);
        let received_at = ts.wrapping_add(r.i64()?);
        let bits = r.u64()?;
        let facility = if bits & F_FACILITY != 0 {
            Some(Facility::from_u8(r.byte()?).ok_or(BlockError("facility"))?)
        } else {
            None
        };
        let severity = if bits & F_SEVERITY != 0 {
            Some(Severity::from_u8(r.byte()?).ok_or(BlockError("severity"))?)
        } else {
            None
        };
        let hostname = r.opt_str(bits & F_HOSTNAME != 0)?;
        let procid = r.opt_str(bits & F_PROCID != 0)?;
        let msgid = r.opt_str(bits & F_MSGID != 0)?;
        let message = r.str()?;
        let structured_data = r.opt_str(bits & F_SD != 0)?;
        f(RecordRef {
            id,
            ts,
            received_at,
            hostname,
            facility,
            severity,
            procid,
            msgid,
            message,
            structured_data,
            truncated: bits & F_TRUNCATED != 0,
            invalid_utf8: bits & F_INVALID_UTF8 != 0,
            unparsed: bits & F_UNPARSED != 0,
        });
    }
    if !r.b.is_empty() {
        return Err(BlockError("trailing bytes"));
    }
    Ok(())
}

fn put_u64(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_i64(b: &mut Vec<u8>, v: i64) {
    put_u64(b, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u64(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, BlockError> {
        let (&x, rest) = self.b.split_first().ok_or(BlockError("truncated"))?;
        self.b = rest;
        Ok(x)
    }

    fn u64(&mut self) -> Result<u64, BlockError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let x = self.byte()?;
            v |= u64::from(x & 0x7f) << shift;
            if x < 0x80 {
                return Ok(v);
            }
        }
        Err(BlockError("varint"))
    }

    fn i64(&mut self) -> Result<i64, BlockError> {
        let v = self.u64()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn str(&mut self) -> Result<&'a str, BlockError> {
        let n = self.u64()?;
        if n > self.b.len() as u64 {
            return Err(BlockError("truncated text"));
        }
        let (s, rest) = self.b.split_at(n as usize);
        self.b = rest;
        std::str::from_utf8(s).map_err(|_| BlockError("text is not UTF-8"))
    }

    fn opt_str(&mut self, present: bool) -> Result<Option<&'a str>, BlockError> {
        if present {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> LogRecord {
        LogRecord {
            ts: 1_700_000_000_000_000 + i * 1_000_003 - (i % 3) * 5_000_000,
            received_at: 1_700_000_000_000_000 + i * 1_000_000,
            hostname: (i % 2 == 0).then(|| format!("web-{i}")),
            facility: (i % 3 != 0).then_some(Facility::Auth),
            severity: (i % 4 != 0).then(|| Severity::from_u8((i % 8) as u8).unwrap()),
            app_name: None,
            procid: (i % 5 == 0).then(|| "1234".to_string()),
            msgid: (i % 7 == 0).then(|| "ID47".to_string()),
            message: format!("Failed password for root from 10.0.{i}.1 port 22 ssh2 é"),
            structured_data: (i % 6 == 0).then(|| "[a b=\"c\"]".to_string()),
            truncated: i % 9 == 0,
            invalid_utf8: i % 10 == 0,
            unparsed: i % 11 == 0,
        }
    }

    fn decode(data: &[u8], first: i64) -> Vec<(i64, LogRecord)> {
        let raw = unpack(data).unwrap();
        let mut out = Vec::new();
        for_each(&raw, first, |r| out.push((r.id, r.to_record(None)))).unwrap();
        out
    }

    #[test]
    fn records_round_trip_with_their_ids_and_every_field() {
        let recs: Vec<LogRecord> = (0..500).map(rec).collect();
        let ids: Vec<i64> = (0..500).map(|i| 1000 + i * 3 + (i % 2)).collect();
        let mut e = Encoder::new();
        for (id, r) in ids.iter().zip(&recs) {
            e.push(*id, r);
        }
        assert_eq!(e.len(), 500);
        let raw_len = e.raw_len();
        let data = e.finish();
        assert_eq!(data[0], ZSTD, "a block of 500 similar lines is compressed");
        assert!(data.len() * 3 < raw_len, "{} of {raw_len}", data.len());
        let back = decode(&data, ids[0]);
        assert_eq!(back.iter().map(|x| x.0).collect::<Vec<_>>(), ids);
        assert_eq!(back.into_iter().map(|x| x.1).collect::<Vec<_>>(), recs);
    }

    #[test]
    fn a_tiny_block_is_stored_as_is_and_still_decodes() {
        let mut r = rec(1);
        r.message = "x".into();
        r.hostname = None;
        let mut e = Encoder::new();
        e.push(7, &r);
        let data = e.finish();
        assert_eq!(data[0], STORED);
        assert_eq!(decode(&data, 7), vec![(7, r)]);
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let mut e = Encoder::new();
        for i in 0..50 {
            e.push(i, &rec(i));
        }
        let data = e.finish();
        let raw = unpack(&data).unwrap();
        for cut in [1, raw.len() / 2, raw.len() - 1] {
            assert!(for_each(&raw[..cut], 0, |_| {}).is_err(), "cut at {cut}");
        }
        assert!(unpack(&data[..data.len() / 2]).is_err());
        assert!(unpack(&[9, 1, 2]).is_err());
        assert!(unpack(&[]).is_err());
    }

    #[test]
    fn severity_masks_select_at_least_as_severe() {
        let m = severity_mask_upto(Severity::Warning);
        assert_ne!(m & severity_bit(Some(Severity::Emerg)), 0);
        assert_ne!(m & severity_bit(Some(Severity::Warning)), 0);
        assert_eq!(m & severity_bit(Some(Severity::Notice)), 0);
        assert_eq!(m & severity_bit(None), 0, "none counts as notice");
        assert_ne!(severity_mask_upto(Severity::Notice) & severity_bit(None), 0);
    }
}
