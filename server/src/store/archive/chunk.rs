//! How archive rows sit in `archive_chunks`: [`CHUNK_ROWS`] consecutive slots of one
//! archive per blob, each row compactly encoded. A chunk holds
//! `min(CHUNK_ROWS, rows − chunk × CHUNK_ROWS)` rows; a missing chunk is all unknown.
//!
//! [`encode`] writes format 2; [`decode`] reads formats 1 and 2, so chunks written
//! before format 2 stay readable and are rewritten in format 2 the next time a flush
//! touches them. Both are lossless: every known value decodes to the same bits.
//!
//! # Format 2
//!
//! A marker byte `0x03` (a format-1 row can never start with it: its low two bits
//! would be min's mode, and 3 is not a mode there), the chunk's decimal exponent `c`
//! (an `i8`, −22..=22), then per row a 16-bit little-endian flags word and the
//! fields it announces, in the order count, avg, min, max, last:
//!
//! | bits | field | modes |
//! | --- | --- | --- |
//! | 0–2 | avg | 0 unknown, 1 raw, 2 decimal, 3 decimal + adjustment, 4 decimal ÷ count, 5 decimal ÷ count + adjustment |
//! | 3–6, 7–10, 11–14 | min, max, last | 0 unknown, 1 equals avg, 2 raw, 3 decimal, 4 decimal + adjustment, 5–11 XOR with avg in `mode − 4` bytes |
//! | 15 | count | set: a LEB128 varint follows the flags; else `pdp_per_row` for a known row, 0 for an unknown one |
//!
//! A row whose flags equal the previous row's has a byte `(r − 1) << 3 | 7` instead
//! (avg mode 7 does not exist): it and the `r − 1` rows after it (`r` ≤ 32) have
//! those flags, and only their fields follow.
//!
//! * **raw**: the f64, 8 bytes little-endian.
//! * **decimal**: a zigzag LEB128 varint, the difference between this value's
//!   mantissa `m` and the previous decimal mantissa of the same field in the chunk
//!   (0 before the first), as VictoriaMetrics delta-encodes its decimal mantissas.
//!   The value is `m × 10^c` (or `m ÷ 10^−c`): `|m| < 2^53` and `|c| ≤ 22`, so the
//!   mantissa and the power of ten are exact doubles and that one operation is
//!   correctly rounded, the exact fast path of decimal-to-double conversion. With
//!   **÷ count** (averages of rows of more than one step) the value is that decimal
//!   divided by the row's count: an average of quantized data is a short decimal
//!   sum over its count. An **adjustment** (a zigzag varint) is added to the bits
//!   of the result: a value computed from a short decimal by a few float
//!   operations (0.52 summed ten times then divided by ten) sits a few units in the
//!   last place from it.
//! * **XOR with avg**: `bits(value) ^ bits(avg)` without its leading zero bytes,
//!   little-endian: a min close to its average shares the sign, exponent and top
//!   of the mantissa with it.
//!
//! The encoder tries every representation, verifies each decimal bit for bit with
//! the decoder's arithmetic, and keeps the shortest, raw when nothing is shorter,
//! and picks the exponent `c` (the most frequent or the smallest of the values'
//! own) that makes the whole chunk shorter. NaN (and
//! infinities, which rows never hold) are unknown.
//!
//! # Format 1
//!
//! Per row: a flags byte, then the fields it says are present, little-endian:
//!
//! | bits | meaning |
//! | --- | --- |
//! | 0–1, 2–3, 4–5 | min, max, last: 0 = an f64 follows, 1 = equals avg, 2 = unknown |
//! | 6 | avg present (an f64 follows); else avg is unknown |
//! | 7 | count present (a LEB128 varint follows); else it is `pdp_per_row` for a known row and 0 for an unknown one |

use super::bytes::{put_varint, unzigzag, varint_len, zigzag, Reader};
use metrolog_protocol::rrd::Row;

/// Slots per chunk: at most 2 + 16 × 39 bytes, so a chunk stays inside its b-tree
/// leaf page (SQLite spills rows over about 1000 bytes of a WITHOUT ROWID table into
/// overflow pages).
pub const CHUNK_ROWS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("archive chunk is corrupt: {0}")]
pub struct ChunkError(&'static str);

impl From<&'static str> for ChunkError {
    fn from(reason: &'static str) -> Self {
        Self(reason)
    }
}

/// Rows in chunk `chunk` of an archive of `rows` rows.
pub fn rows_in_chunk(rows: u32, chunk: u32) -> usize {
    rows.saturating_sub(chunk * CHUNK_ROWS).min(CHUNK_ROWS) as usize
}

/// First byte of a format-2 chunk.
const V2: u8 = 0x03;

// Format 2 modes (see the module documentation).
const A_UNKNOWN: u16 = 0;
const A_RAW: u16 = 1;
const A_DEC: u16 = 2;
const A_DEC_ADJ: u16 = 3;
const A_SUM: u16 = 4;
const A_SUM_ADJ: u16 = 5;
const F_UNKNOWN: u16 = 0;
const F_SAME: u16 = 1;
const F_RAW: u16 = 2;
const F_DEC: u16 = 3;
const F_DEC_ADJ: u16 = 4;
/// `F_XOR + k`: XOR with avg in k bytes, 1..=7.
const F_XOR: u16 = 4;
const COUNT_BIT: u16 = 1 << 15;
/// A byte `(r − 1) << 3 | RUN` instead of a flags word: the next `r` rows have the
/// flags of the row before them (avg mode 7 does not exist).
const RUN: u8 = 7;
const MAX_RUN: u8 = 32;

/// Exact powers of ten: every one up to 10^22 is a double.
const P10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
const MAX_EXP: i32 = 22;
/// Mantissas stay below 2^53, where every integer is a double.
const MANT_LIMIT: f64 = 9_007_199_254_740_992.0;
/// Probes for a decimal look at this many significant bits of a value (see
/// [`find_decimal`]).
const PROBE_BITS: i32 = 44;
/// The second probe, for averages ÷ count, tolerates larger adjustments.
const PROBE_BITS_SUM: i32 = 34;
/// Largest adjustment, in units in the last place (two varint bytes).
const MAX_ADJ: i64 = 8191;

/// `m × 10^e`, correctly rounded (`|m| < 2^53`, `|e| ≤ 22`).
fn dec_value(m: i64, e: i32) -> f64 {
    if e >= 0 {
        m as f64 * P10[e as usize]
    } else {
        m as f64 / P10[(-e) as usize]
    }
}

/// `v` with `adj` added to its bits (wrapping: corrupt input gives some value, never
/// a panic).
fn adjusted(v: f64, adj: i64) -> f64 {
    f64::from_bits((v.to_bits() as i64).wrapping_add(adj) as u64)
}

/// How far `v` is from `approx`, in units in the last place, when they have the same
/// sign and both are finite.
fn ulps_from(approx: f64, v: f64) -> Option<i64> {
    if !approx.is_finite() || approx.is_sign_negative() != v.is_sign_negative() {
        return None;
    }
    (v.to_bits() as i64).checked_sub(approx.to_bits() as i64)
}

/// A decimal that gives a value: `m × 10^e`, divided by the row's count when `per`
/// is set, plus `adj` units in the last place.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dec {
    m: i64,
    e: i32,
    adj: i64,
    per: bool,
}

/// The decoder's arithmetic for a decimal.
fn dec_finish(m: i64, e: i32, per: Option<u32>, adj: i64) -> f64 {
    let d = dec_value(m, e);
    let v = match per {
        Some(n) => d / f64::from(n),
        None => d,
    };
    if adj == 0 {
        v
    } else {
        adjusted(v, adj)
    }
}

/// A short decimal that gives `v` (divided by `per` when set) within [`MAX_ADJ`]
/// units in the last place, written in fewer than 8 bytes, if there is one.
///
/// One probe instead of a search digit by digit, so that full-mantissa values
/// (most averages) cost a few operations: `s = v × 10^k` with the largest `k` that
/// keeps `|s|` below 2^`bits`. If `v` is within `a` units in the last place of a
/// decimal `m0 × 10^−k0` (`k0 ≤ k`), `s` is within `a × 2^(bits − 52)` (plus the
/// multiplication's half unit) of the integer `m0 × 10^(k − k0)`, so rounding `s`
/// and dropping its trailing zeros gives `m0` back. Every candidate is checked
/// with the decoder's arithmetic anyway.
fn find_decimal(v: f64, per: Option<u32>) -> Option<Dec> {
    let t = match per {
        Some(n) => v * f64::from(n),
        None => v,
    };
    if !t.is_finite() {
        return None;
    }
    let check = |m: i64, e: i32| -> Option<Dec> {
        let adj = ulps_from(dec_finish(m, e, per, 0), v)?;
        let len = varint_len(zigzag(m)) + if adj != 0 { varint_len(zigzag(adj)) } else { 0 };
        (adj.abs() <= MAX_ADJ && len < 8).then_some(Dec {
            m,
            e,
            adj,
            per: per.is_some(),
        })
    };
    let a = t.abs();
    // Casts instead of `fract`, `round` and `floor`: those are library calls on
    // baseline x86-64, and this runs for every value of every chunk a flush writes.
    if a < MANT_LIMIT && (t as i64) as f64 == t {
        // An integer: its trailing zeros go into the exponent.
        let (mut m, mut e) = (t as i64, 0);
        while m != 0 && m % 10 == 0 && e < MAX_EXP {
            m /= 10;
            e += 1;
        }
        if let Some(d) = check(m, e) {
            return Some(d);
        }
    }
    if a == 0.0 || a >= (1u64 << PROBE_BITS) as f64 {
        return None;
    }
    // `a` is in [2^e2, 2^(e2 + 1)).
    let e2 = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let probes: &[i32] = if per.is_some() {
        &[PROBE_BITS, PROBE_BITS_SUM]
    } else {
        &[PROBE_BITS]
    };
    for &bits in probes {
        if bits - 1 - e2 < 4 {
            continue;
        }
        // floor((bits − 1 − e2) × log10 2), with log10 2 ≈ 78913 / 2^18.
        let k = (((bits - 1 - e2) * 78913) >> 18).min(MAX_EXP);
        let s = t * P10[k as usize];
        let mut m = (s + 0.5f64.copysign(s)) as i64;
        let mut k = k;
        while m != 0 && m % 10 == 0 && k > 0 {
            m /= 10;
            k -= 1;
        }
        if m == 0 {
            continue;
        }
        if let Some(d) = check(m, -k) {
            return Some(d);
        }
    }
    None
}

/// What a value can be written as, independent of the chunk's exponent.
#[derive(Debug, Clone, Copy)]
enum Field {
    Unknown,
    /// Bit-identical to the row's avg (min, max, last only).
    Same,
    /// A known value, with its XOR length against avg (min, max, last of a known
    /// row) and its decimal, when it has one.
    Known {
        v: f64,
        xor: Option<u8>,
        dec: Option<Dec>,
    },
}

fn classify(v: f64, avg: Option<f64>, per: Option<u32>) -> Field {
    if !v.is_finite() {
        return Field::Unknown;
    }
    let xor = match avg {
        Some(a) if a.to_bits() == v.to_bits() => return Field::Same,
        Some(a) => {
            let x = a.to_bits() ^ v.to_bits();
            let k = 8 - (x.leading_zeros() / 8) as u8;
            (k < 8).then_some(k)
        }
        None => None,
    };
    // A decimal of the value itself, or (for averages of several steps) of the
    // sum it was divided from, whichever is shorter.
    let mut dec = find_decimal(v, None);
    if let Some(n) = per {
        if let Some(s) = find_decimal(v, Some(n)) {
            let len = |d: &Dec| varint_len(zigzag(d.m)) + usize::from(d.adj != 0);
            if dec.is_none_or(|d| len(&s) < len(&d)) {
                dec = Some(s);
            }
        }
    }
    Field::Known { v, xor, dec }
}

/// `d`'s mantissa at exponent `c`, when it can be written there.
fn scaled(d: &Dec, c: i32) -> Option<i64> {
    let shift = d.e - c;
    if !(0..=18).contains(&shift) {
        return None;
    }
    let m = d.m.checked_mul(10i64.pow(shift as u32))?;
    ((m.unsigned_abs() as f64) < MANT_LIMIT).then_some(m)
}

/// How one known field is written at exponent `c`.
enum Choice {
    Raw,
    Xor(u8),
    Dec { m: i64, adj: i64, per: bool },
}

/// Picks the shortest writing of `f` given the previous mantissa of its column;
/// returns it with its length in bytes.
fn choose(f: &Field, c: i32, prev: i64, per: Option<u32>) -> (Choice, usize) {
    let Field::Known { v, xor, dec } = f else {
        return (Choice::Raw, 0);
    };
    let mut best = (Choice::Raw, 8);
    if let Some(k) = xor {
        if usize::from(*k) < best.1 {
            best = (Choice::Xor(*k), usize::from(*k));
        }
    }
    if let Some(d) = dec {
        if let Some(m) = scaled(d, c) {
            let len = varint_len(zigzag(m.wrapping_sub(prev)))
                + if d.adj != 0 {
                    varint_len(zigzag(d.adj))
                } else {
                    0
                };
            // Same number, other exponent: the result cannot change, but the
            // stored bytes must decode to `v` whatever happens, so check (the
            // value's own exponent was checked when it was found).
            if len < best.1
                && (c == d.e
                    || dec_finish(m, c, per.filter(|_| d.per), d.adj).to_bits() == v.to_bits())
            {
                best = (
                    Choice::Dec {
                        m,
                        adj: d.adj,
                        per: d.per,
                    },
                    len,
                );
            }
        }
    }
    best
}

/// Writes (into `out`, when given) or sizes the rows at exponent `c`.
fn emit(
    fields: &[[Field; 4]],
    rows: &[Row],
    pdp_per_row: u32,
    c: i32,
    mut out: Option<&mut Vec<u8>>,
) -> usize {
    let mut prev = [0i64; 4];
    let mut size = 0;
    let mut payload = Vec::new();
    let (mut prev_flags, mut run, mut run_at) = (None, 0u8, 0usize);
    for (fs, r) in fields.iter().zip(rows) {
        let known = matches!(fs[0], Field::Known { .. });
        let per = (pdp_per_row > 1 && r.count > 0).then_some(r.count);
        let mut flags = 0u16;
        payload.clear();
        // The count first: an average ÷ count needs it to decode.
        let default_count = if known { pdp_per_row } else { 0 };
        if r.count != default_count {
            flags |= COUNT_BIT;
            size += varint_len(u64::from(r.count));
            if out.is_some() {
                put_varint(&mut payload, u64::from(r.count));
            }
        }
        for (i, f) in fs.iter().enumerate() {
            let (mode, bytes) = match f {
                Field::Unknown => (if i == 0 { A_UNKNOWN } else { F_UNKNOWN }, 0),
                Field::Same => (F_SAME, 0),
                Field::Known { v, .. } => {
                    let (choice, len) = choose(f, c, prev[i], per);
                    let mode = match choice {
                        Choice::Raw => {
                            if out.is_some() {
                                payload.extend_from_slice(&v.to_le_bytes());
                            }
                            if i == 0 {
                                A_RAW
                            } else {
                                F_RAW
                            }
                        }
                        Choice::Xor(k) => {
                            if out.is_some() {
                                let x = v.to_bits() ^ r.avg.to_bits();
                                payload.extend_from_slice(&x.to_le_bytes()[..usize::from(k)]);
                            }
                            F_XOR + u16::from(k)
                        }
                        Choice::Dec { m, adj, per } => {
                            if out.is_some() {
                                put_varint(&mut payload, zigzag(m.wrapping_sub(prev[i])));
                                if adj != 0 {
                                    put_varint(&mut payload, zigzag(adj));
                                }
                            }
                            prev[i] = m;
                            match (i, per, adj != 0) {
                                (0, false, false) => A_DEC,
                                (0, false, true) => A_DEC_ADJ,
                                (0, true, false) => A_SUM,
                                (0, true, true) => A_SUM_ADJ,
                                (_, _, false) => F_DEC,
                                (_, _, true) => F_DEC_ADJ,
                            }
                        }
                    };
                    (mode, len)
                }
            };
            flags |= mode << [0, 3, 7, 11][i];
            size += bytes;
        }
        if prev_flags == Some(flags) && run < MAX_RUN {
            // The same flags as the row before: one byte for up to MAX_RUN rows.
            if run == 0 {
                size += 1;
                run_at = out.as_deref().map_or(0, Vec::len);
                if let Some(out) = out.as_deref_mut() {
                    out.push(RUN);
                }
            } else if let Some(out) = out.as_deref_mut() {
                out[run_at] = (run << 3) | RUN;
            }
            run += 1;
        } else {
            size += 2;
            run = 0;
            prev_flags = Some(flags);
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&flags.to_le_bytes());
            }
        }
        if let Some(out) = out.as_deref_mut() {
            out.extend_from_slice(&payload);
        }
    }
    size
}

/// Encodes `rows` (one chunk) in format 2 into `out`.
pub fn encode(rows: &[Row], pdp_per_row: u32, out: &mut Vec<u8>) {
    out.clear();
    let fields: Vec<[Field; 4]> = rows
        .iter()
        .map(|r| {
            let avg = r.avg.is_finite().then_some(r.avg);
            let per = (pdp_per_row > 1 && r.count > 0).then_some(r.count);
            [
                classify(r.avg, None, per),
                classify(r.min, avg, None),
                classify(r.max, avg, None),
                classify(r.last, avg, None),
            ]
        })
        .collect();
    // The exponent: one of the values' own, the one that makes the chunk shortest.
    let mut exps: Vec<i32> = fields
        .iter()
        .flatten()
        .filter_map(|f| match f {
            Field::Known { dec: Some(d), .. } => Some(d.e),
            _ => None,
        })
        .collect();
    exps.sort_unstable();
    // Candidates: the most frequent exponent (its values need no rescaling) and
    // the smallest (every decimal can be rescaled to it, if its mantissa fits).
    let (mut common, mut best_run, mut run) = (0, 0, 0);
    for (i, &e) in exps.iter().enumerate() {
        run = if i > 0 && exps[i - 1] == e {
            run + 1
        } else {
            1
        };
        if run > best_run {
            (common, best_run) = (e, run);
        }
    }
    let c = match exps.first() {
        None => 0,
        Some(&lowest) if lowest == common => common,
        Some(&lowest) => [common, lowest]
            .into_iter()
            .min_by_key(|&c| emit(&fields, rows, pdp_per_row, c, None))
            .unwrap_or(common),
    };
    out.push(V2);
    out.push(c as i8 as u8);
    emit(&fields, rows, pdp_per_row, c, Some(out));
}

/// Decodes a chunk of `n` rows of an archive with `pdp_per_row` steps per row.
pub fn decode(bytes: &[u8], n: usize, pdp_per_row: u32) -> Result<Vec<Row>, ChunkError> {
    match bytes.first() {
        Some(&b) if b & 3 == 3 => {
            if b != V2 {
                return Err(ChunkError("unknown chunk format"));
            }
            decode_v2(bytes, n, pdp_per_row)
        }
        _ => decode_v1(bytes, n, pdp_per_row),
    }
}

/// The chunk format's fields, read with the shared byte reader.
trait ChunkRead {
    fn value(&mut self) -> Result<f64, ChunkError>;
    fn count(&mut self) -> Result<u32, ChunkError>;
    fn mantissa(&mut self, prev: &mut i64) -> Result<i64, ChunkError>;
    fn adj(&mut self) -> Result<i64, ChunkError>;
    fn xor(&mut self, avg: f64, k: usize) -> Result<f64, ChunkError>;
}

impl ChunkRead for Reader<'_> {
    /// A stored f64; anything not finite reads as unknown.
    fn value(&mut self) -> Result<f64, ChunkError> {
        Ok(finite_or_nan(self.f64()?))
    }

    fn count(&mut self) -> Result<u32, ChunkError> {
        let c = self.varint()?;
        u32::try_from(c).map_err(|_| ChunkError("count too large"))
    }

    /// The next decimal mantissa of a column whose previous one is `prev`.
    fn mantissa(&mut self, prev: &mut i64) -> Result<i64, ChunkError> {
        let m = prev
            .checked_add(unzigzag(self.varint()?))
            .filter(|m| (m.unsigned_abs() as f64) < MANT_LIMIT)
            .ok_or(ChunkError("decimal mantissa out of range"))?;
        *prev = m;
        Ok(m)
    }

    fn adj(&mut self) -> Result<i64, ChunkError> {
        Ok(unzigzag(self.varint()?))
    }

    fn xor(&mut self, avg: f64, k: usize) -> Result<f64, ChunkError> {
        let mut a = [0u8; 8];
        a[..k].copy_from_slice(self.take(k)?);
        Ok(finite_or_nan(f64::from_bits(
            avg.to_bits() ^ u64::from_le_bytes(a),
        )))
    }
}

fn finite_or_nan(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        f64::NAN
    }
}

fn decode_v2(bytes: &[u8], n: usize, pdp_per_row: u32) -> Result<Vec<Row>, ChunkError> {
    let mut r = Reader::new(bytes, 1);
    let c = i32::from(r.byte()? as i8);
    if c.abs() > MAX_EXP {
        return Err(ChunkError("decimal exponent out of range"));
    }
    let mut prev = [0i64; 4];
    let mut out = Vec::with_capacity(n);
    let (mut prev_flags, mut repeat) = (None, 0u8);
    for _ in 0..n {
        let flags = if repeat > 0 {
            repeat -= 1;
            prev_flags.ok_or(ChunkError("run without flags"))?
        } else {
            let b = r.byte()?;
            if b & 7 == RUN {
                repeat = b >> 3;
                prev_flags.ok_or(ChunkError("run without flags"))?
            } else {
                let f = u16::from_le_bytes([b, r.byte()?]);
                prev_flags = Some(f);
                f
            }
        };
        let explicit_count = if flags & COUNT_BIT != 0 {
            Some(r.count()?)
        } else {
            None
        };
        let avg = match flags & 7 {
            A_UNKNOWN => f64::NAN,
            A_RAW => r.value()?,
            mode @ (A_DEC | A_DEC_ADJ | A_SUM | A_SUM_ADJ) => {
                let m = r.mantissa(&mut prev[0])?;
                let adj = if mode == A_DEC_ADJ || mode == A_SUM_ADJ {
                    r.adj()?
                } else {
                    0
                };
                let per = if mode >= A_SUM {
                    match explicit_count.unwrap_or(pdp_per_row) {
                        0 => return Err(ChunkError("average over a count of 0")),
                        n => Some(n),
                    }
                } else {
                    None
                };
                finite_or_nan(dec_finish(m, c, per, adj))
            }
            _ => return Err(ChunkError("bad avg mode")),
        };
        let mut field = |i: usize| -> Result<f64, ChunkError> {
            let mode = (flags >> [0, 3, 7, 11][i]) & 15;
            Ok(match mode {
                F_UNKNOWN => f64::NAN,
                F_SAME => avg,
                F_RAW => r.value()?,
                F_DEC | F_DEC_ADJ => {
                    let m = r.mantissa(&mut prev[i])?;
                    let adj = if mode == F_DEC_ADJ { r.adj()? } else { 0 };
                    finite_or_nan(dec_finish(m, c, None, adj))
                }
                k @ 5..=11 if !avg.is_nan() => r.xor(avg, usize::from(k - F_XOR))?,
                _ => return Err(ChunkError("bad field mode")),
            })
        };
        let (min, max, last) = (field(1)?, field(2)?, field(3)?);
        let count = match explicit_count {
            Some(c) => c,
            None if avg.is_nan() => 0,
            None => pdp_per_row,
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
    if !r.is_done() || repeat > 0 {
        return Err(ChunkError("trailing bytes"));
    }
    Ok(out)
}

// Format 1 field modes and flags (decoded only).
const V1_EXPLICIT: u8 = 0;
const V1_SAME: u8 = 1;
const V1_UNKNOWN: u8 = 2;
const V1_AVG: u8 = 1 << 6;
const V1_COUNT: u8 = 1 << 7;

fn decode_v1(bytes: &[u8], n: usize, pdp_per_row: u32) -> Result<Vec<Row>, ChunkError> {
    let mut r = Reader::new(bytes, 0);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.byte()?;
        let avg = if flags & V1_AVG != 0 {
            r.value()?
        } else {
            f64::NAN
        };
        let mut field = |shift: u8| -> Result<f64, ChunkError> {
            match (flags >> shift) & 3 {
                V1_EXPLICIT => r.value(),
                V1_SAME => Ok(avg),
                V1_UNKNOWN => Ok(f64::NAN),
                _ => Err(ChunkError("bad field mode")),
            }
        };
        let min = field(0)?;
        let max = field(2)?;
        let last = field(4)?;
        let count = if flags & V1_COUNT != 0 {
            r.count()?
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
    if !r.is_done() {
        return Err(ChunkError("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format-1 encoder, as it was: chunks it wrote are still in databases.
    fn encode_v1(rows: &[Row], pdp_per_row: u32, out: &mut Vec<u8>) {
        fn mode(field: f64, avg: f64) -> u8 {
            if field.is_nan() {
                V1_UNKNOWN
            } else if field.to_bits() == avg.to_bits() {
                V1_SAME
            } else {
                V1_EXPLICIT
            }
        }
        out.clear();
        for r in rows {
            let known = !r.avg.is_nan();
            let (m_min, m_max, m_last) =
                (mode(r.min, r.avg), mode(r.max, r.avg), mode(r.last, r.avg));
            let default_count = if known { pdp_per_row } else { 0 };
            let mut flags = m_min | (m_max << 2) | (m_last << 4);
            if known {
                flags |= V1_AVG;
            }
            if r.count != default_count {
                flags |= V1_COUNT;
            }
            out.push(flags);
            if known {
                out.extend_from_slice(&r.avg.to_le_bytes());
            }
            for (m, v) in [(m_min, r.min), (m_max, r.max), (m_last, r.last)] {
                if m == V1_EXPLICIT {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            if r.count != default_count {
                put_varint(out, u64::from(r.count));
            }
        }
    }

    /// Bit-exact comparison; every NaN is the one unknown.
    fn bits(rows: &[Row]) -> Vec<[u64; 5]> {
        let b = |v: f64| {
            if v.is_nan() {
                f64::NAN.to_bits()
            } else {
                v.to_bits()
            }
        };
        rows.iter()
            .map(|r| [b(r.avg), b(r.min), b(r.max), b(r.last), u64::from(r.count)])
            .collect()
    }

    #[track_caller]
    fn round_trip(rows: &[Row], pdp_per_row: u32) -> usize {
        let mut buf = Vec::new();
        encode(rows, pdp_per_row, &mut buf);
        let back = decode(&buf, rows.len(), pdp_per_row).unwrap();
        assert_eq!(bits(rows), bits(&back), "{rows:?}\n{back:?}");
        buf.len()
    }

    fn row(avg: f64, min: f64, max: f64, last: f64, count: u32) -> Row {
        Row {
            avg,
            min,
            max,
            last,
            count,
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Any finite double, from its bits.
        fn double(&mut self) -> f64 {
            loop {
                let v = f64::from_bits(self.next());
                if v.is_finite() {
                    return v;
                }
            }
        }
    }

    const AWKWARD: &[f64] = &[
        0.0,
        -0.0,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        2.225e-308,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        1e-300,
        1e300,
        1e22,
        1e23,
        -1e22,
        1e-22,
        1e-23,
        123e-25,
        9_007_199_254_740_991.0,
        9_007_199_254_740_992.0,
        9_007_199_254_740_994.0,
        -9_007_199_254_740_991.0,
        4_503_599_627_370_497.5,
        0.1 + 0.2,
        0.3,
        0.1,
        1.0 / 3.0,
        2.0 / 3.0 * 100.0,
        0.52 * 10.0 / 10.0,
        12.35,
        3_456_789_504.4,
        1.5e9,
        -273.15,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];

    #[test]
    fn awkward_values_round_trip_bit_exactly_in_every_field() {
        for &a in AWKWARD {
            for &b in AWKWARD {
                for (count, pdp) in [(1, 1), (6, 6), (4, 6), (0, 6), (8640, 8640), (1, 8640)] {
                    let r = [
                        row(a, b, a, b, count),
                        row(b, a, b, a, count),
                        row(a, a, a, a, count),
                        Row::UNKNOWN,
                    ];
                    let inf_to_nan = |v: f64| if v.is_finite() { v } else { f64::NAN };
                    let r: Vec<Row> = r
                        .iter()
                        .map(|r| {
                            row(
                                inf_to_nan(r.avg),
                                inf_to_nan(r.min),
                                inf_to_nan(r.max),
                                inf_to_nan(r.last),
                                r.count,
                            )
                        })
                        .collect();
                    round_trip(&r, pdp);
                }
            }
        }
    }

    #[test]
    fn random_doubles_and_decimals_round_trip_bit_exactly() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..3000 {
            let pdp = [1, 6, 30, 360, 8640][case % 5];
            let n = 1 + rng.below(u64::from(CHUNK_ROWS)) as usize;
            let kind = rng.below(6);
            let value = |rng: &mut Rng| -> f64 {
                match kind {
                    0 => rng.double(),
                    // Short decimals of various scales.
                    1 => (rng.below(2_000_001) as f64 - 1_000_000.0) / P10[rng.below(12) as usize],
                    // Near-decimals: a few float operations away from one.
                    2 => {
                        let d = rng.below(10_000) as f64 / 100.0;
                        (0..10).map(|_| d).sum::<f64>() / 10.0
                    }
                    3 => rng.below(1 << 40) as f64 * 1024.0,
                    4 => AWKWARD[rng.below(AWKWARD.len() as u64) as usize],
                    _ => rng.below(1000) as f64 / 7.0,
                }
            };
            let rows: Vec<Row> = (0..n)
                .map(|_| {
                    if rng.below(10) == 0 {
                        return Row {
                            count: rng.below(u64::from(pdp) + 1) as u32,
                            ..Row::UNKNOWN
                        };
                    }
                    let f = |v: f64| if v.is_finite() { v } else { f64::NAN };
                    let avg = f(value(&mut rng));
                    let min = if rng.below(4) == 0 {
                        avg
                    } else {
                        f(value(&mut rng))
                    };
                    let max = if rng.below(3) == 0 {
                        // Close to avg: XOR territory.
                        {
                            let width = 8 * rng.below(8);
                            f64::from_bits(avg.to_bits() ^ rng.below(1 << width))
                        }
                    } else {
                        f(value(&mut rng))
                    };
                    let last = if pdp == 1 { avg } else { f(value(&mut rng)) };
                    let count = if rng.below(2) == 0 {
                        pdp
                    } else {
                        1 + rng.below(u64::from(pdp)) as u32
                    };
                    row(avg, min, f(max), last, count)
                })
                .collect();
            round_trip(&rows, pdp);
        }
    }

    #[test]
    fn quantized_data_is_small_and_full_mantissas_cost_no_more_than_format_1() {
        // A 10-second CPU row: avg in 0.05 steps, extremes in 0.5 steps.
        let cpu: Vec<Row> = (0..16)
            .map(|i| {
                let avg = f64::from(1000 + 37 * i) / 20.0;
                row(avg, avg - 3.5, avg + 4.0, avg, 1)
            })
            .collect();
        let n = round_trip(&cpu, 1);
        assert!(n <= 2 + 16 * 7, "{n}");
        // An average of six such steps, divided in float: written as sum ÷ count.
        let sums: Vec<Row> = (0..16)
            .map(|i| {
                let steps = [12.35, 12.4, 80.05, 0.05, 3.0, f64::from(i) / 20.0];
                let avg = steps.iter().sum::<f64>() / 6.0;
                row(avg, 0.05, 80.05, steps[5], 6)
            })
            .collect();
        let n = round_trip(&sums, 6);
        assert!(n <= 2 + 16 * 12, "{n}");
        // Full mantissas everywhere: never longer than format 1 (plus the header and
        // one more flags byte per row).
        let mut rng = Rng(5);
        for _ in 0..200 {
            let rows: Vec<Row> = (0..16)
                .map(|_| row(rng.double(), rng.double(), rng.double(), rng.double(), 6))
                .collect();
            let mut v1 = Vec::new();
            encode_v1(&rows, 6, &mut v1);
            assert!(round_trip(&rows, 6) <= v1.len() + 2 + 16);
        }
        let mut buf = Vec::new();
        encode(&[Row::UNKNOWN], 6, &mut buf);
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn short_decimals_and_near_decimals_are_found() {
        let found = |v: f64, per: Option<u32>| find_decimal(v, per).map(|d| (d.m, d.e));
        assert_eq!(found(12.35, None), Some((1235, -2)));
        assert_eq!(found(3_456_789_504.4, None), Some((34_567_895_044, -1)));
        assert_eq!(found(1.5e9, None), Some((15, 8)));
        assert_eq!(
            found(0.1 + 0.2, None),
            Some((3, -1)),
            "0.3 and an adjustment"
        );
        let load = (0..10).map(|_| 0.52).sum::<f64>() / 10.0;
        assert_eq!(found(load, None), Some((52, -2)));
        // 12.35 + 12.4 + 80.05 + 0.05 + 3.0 + 0.5 = 108.35, then ÷ 6.
        let avg = [12.35, 12.4, 80.05, 0.05, 3.0, 0.5].iter().sum::<f64>() / 6.0;
        assert_eq!(found(avg, Some(6)), Some((10835, -2)));
        assert_eq!(found(1.0 / 3.0, None), None);
        assert_eq!(found(-0.0, None), None, "−0.0 is written raw");
        assert_eq!(found(5e-324, None), None);
    }

    #[test]
    fn format_1_chunks_still_decode() {
        let rows = vec![
            Row::UNKNOWN,
            Row {
                count: 3,
                ..Row::UNKNOWN
            },
            row(1.5, 1.5, 1.5, 1.5, 6),
            row(2.0, -1.0, 7.0, f64::NAN, 4),
            row(0.1, 0.0, 0.3, 0.2, 300_000),
            row(-0.0, 5e-324, f64::MAX, 0.1 + 0.2, 1),
        ];
        let mut buf = Vec::new();
        encode_v1(&rows, 300_000, &mut buf);
        assert_ne!(buf[0] & 3, 3, "format 1 never starts like format 2");
        let back = decode(&buf, rows.len(), 300_000).unwrap();
        assert_eq!(bits(&rows), bits(&back));
        encode_v1(&[Row::UNKNOWN], 6, &mut buf);
        assert_eq!(buf.len(), 1);
        assert_eq!(bits(&decode(&buf, 1, 6).unwrap()), bits(&[Row::UNKNOWN]));
        // Random format-1 chunks, from both encoders, decode to the same rows.
        let mut rng = Rng(77);
        for _ in 0..500 {
            let rows: Vec<Row> = (0..16)
                .map(|_| match rng.below(3) {
                    0 => Row::UNKNOWN,
                    1 => {
                        let v = rng.double();
                        row(v, v, v, v, 6)
                    }
                    _ => row(rng.double(), rng.double(), f64::NAN, rng.double(), 5),
                })
                .collect();
            encode_v1(&rows, 6, &mut buf);
            assert_eq!(bits(&decode(&buf, 16, 6).unwrap()), bits(&rows));
            encode(&rows, 6, &mut buf);
            assert_eq!(bits(&decode(&buf, 16, 6).unwrap()), bits(&rows));
        }
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let mut buf = Vec::new();
        let rows = [
            row(2.0, -1.0, 7.0, 3.0, 4),
            row(2.5, 2.0, 3.0, 2.5, 6),
            row(
                12.3 / 7.0,
                1.0 / 3.0,
                1e300,
                f64::from_bits(0x4000_0000_0000_0001),
                5,
            ),
            row((0.35 + 0.4 + 1.2) / 3.0, 0.35, 1.2, 0.4, 3),
        ];
        encode(&rows, 6, &mut buf);
        assert_eq!(buf[0], V2);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], rows.len(), 6).is_err(), "cut at {cut}");
        }
        assert!(decode(&buf, 3, 6).is_err(), "trailing bytes");
        assert!(decode(&buf, 4, 3).is_err(), "count above pdp_per_row");
        assert!(decode(&[0xff; 64], 2, 6).is_err());
        assert!(decode(&[0x07, 0, 0, 0], 1, 6).is_err(), "unknown format");
        assert!(
            decode(&[V2, 23, 0, 0], 1, 6).is_err(),
            "exponent out of range"
        );
        // avg ÷ a count of 0, a mantissa beyond 2^53, an over-long varint.
        assert!(decode(&[V2, 0, 4, 0x80, 0, 2], 1, 6).is_err());
        let mut big = vec![V2, 0, 2, 0];
        put_varint(&mut big, zigzag(1 << 53));
        assert!(decode(&big, 1, 6).is_err());
        assert!(decode(
            &[V2, 0, 2, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            1,
            6
        )
        .is_err());
        // Any mutation of a valid chunk, and random bytes: Ok or Err, never a panic.
        let mut rng = Rng(3);
        for _ in 0..20_000 {
            let mut b = buf.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next() as u8;
            }
            if b[0] & 3 == 3 {
                b[0] = V2;
            }
            let _ = decode(&b, rows.len(), 6);
            let n = rng.below(40) as usize;
            let mut r: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            if let Some(f) = r.first_mut() {
                *f = V2;
            }
            let _ = decode(&r, 1 + rng.below(4) as usize, 1 + rng.below(10) as u32);
        }
    }

    #[test]
    fn worst_case_chunk_stays_in_its_leaf_page() {
        let row = Row {
            avg: 2.0 / 3.0,
            min: -1.0 / 3.0,
            max: 1e300 / 3.0,
            last: 1e-300 / 3.0,
            count: 1,
        };
        let mut buf = Vec::new();
        encode(&[row; CHUNK_ROWS as usize], u32::MAX, &mut buf);
        assert!(buf.len() < 1000, "{}", buf.len());
        assert_eq!(rows_in_chunk(360, 22), 8);
        assert_eq!(rows_in_chunk(360, 23), 0);
    }
}
