//! The stored form of one series: a fixed-size, versioned, little-endian blob, and the
//! dirty ranges a store needs to write only what changed.
//!
//! Layout (version 1), all integers and floats little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `MRRD` |
//! | 2 | format version (1) |
//! | 2 | reserved, 0 |
//! | 4 + 4 + 8 | base_step u32, heartbeat u32, xff f64 |
//! | 4 | archive count N |
//! | 8 × N | per archive: step u32, rows u32 |
//! | 8 + 8 + 8 + 8 + 8 | last_update i64, PDP value f64, PDP unknown seconds u64, bucket min f64, bucket max f64 |
//! | 28 × N | per archive: CDP sum f64, min f64, max f64, unknown PDPs u32 |
//! | … | per archive, in order: `rows` rows, the row labelled `T` at slot `(T / step) % rows` |
//!
//! A row is `avg f64, min f64, max f64` when the archive's step equals the base step
//! (its LAST is its AVERAGE and its count is 1 exactly when it is known), otherwise
//! `avg f64, min f64, max f64, last f64, count` with the count as u8, u16 or u32,
//! the narrowest that holds `step / base_step`. NaN is unknown.

use std::ops::Range;

use super::archive::Cdp;
use super::spec::{ArchiveSpec, RrdSpec};
use super::{CreateError, PdpPrep, Row, Rrd, RrdState};

const MAGIC: &[u8; 4] = b"MRRD";
const VERSION: u16 = 1;
const FIXED_HEAD: usize = 4 + 2 + 2 + 4 + 4 + 8 + 4;
const PDP_STATE: usize = 8 + 8 + 8 + 8 + 8;
const CDP_STATE: usize = 8 + 8 + 8 + 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("stored series is {len} bytes, too short for its header; the data is truncated")]
    Truncated { len: usize },
    #[error("stored series does not start with the MRRD magic; it is not round-robin data")]
    BadMagic,
    #[error("stored series has format version {0}; this build reads version {VERSION} only (upgrade the server)")]
    UnsupportedVersion(u16),
    #[error("stored series is {len} bytes, but its archives need exactly {expected}; the data is truncated or corrupt")]
    LengthMismatch { len: usize, expected: usize },
    #[error("stored series has an invalid archive specification: {0}")]
    Spec(String),
    #[error("stored series is corrupt: {0}")]
    Corrupt(&'static str),
}

/// A contiguous run of rows changed since the last [`Rrd::mark_clean`].
#[derive(Debug, Clone, PartialEq)]
pub struct DirtySegment<'a> {
    pub archive: usize,
    /// Slots (row indexes in the ring) of the changed rows.
    pub slots: Range<u32>,
    /// Where these rows sit in [`Rrd::to_bytes`]'s output.
    pub byte_range: Range<usize>,
    /// Their encoded bytes, to write at `byte_range`.
    pub bytes: &'a [u8],
}

impl Rrd {
    /// Size in bytes of a series with this spec, fixed for its whole life.
    pub fn encoded_len(spec: &RrdSpec) -> usize {
        header_len(spec.archives.len())
            + (0..spec.archives.len())
                .map(|i| archive_bytes(spec, i))
                .sum::<usize>()
    }

    /// Size of [`Rrd::header_bytes`]: everything but the rows.
    pub fn header_len(&self) -> usize {
        header_len(self.spec().archives.len())
    }

    /// The spec and the consolidation in progress: changes with every update, and is
    /// the first [`Rrd::header_len`] bytes of [`Rrd::to_bytes`].
    pub fn header_bytes(&self) -> Vec<u8> {
        self.state.to_bytes()
    }

    /// The whole series: [`Rrd::header_bytes`] followed by every archive's rows.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        out.reserve(Self::encoded_len(self.spec()) - out.len());
        for r in &self.rings {
            out.extend_from_slice(&r.data);
        }
        out
    }

    /// Reads what [`Rrd::to_bytes`] wrote. The result has no dirty rows.
    pub fn from_bytes(bytes: &[u8]) -> Result<Rrd, DecodeError> {
        let (state, at) = RrdState::decode(bytes, true)?;
        let mut rrd = Rrd::with_state(state);
        let mut r = Reader { bytes, at };
        for (i, ring) in rrd.rings.iter_mut().enumerate() {
            let len = ring.data.len();
            ring.data.copy_from_slice(r.take(len)?);
            let pdp_per_row = rrd.state.spec.pdp_per_row(i);
            let rows = rrd.state.spec.archives[i].rows as usize;
            let too_big = (0..rows).any(|s| ring.row_at_slot(s).count > pdp_per_row);
            if too_big {
                return Err(DecodeError::Corrupt(
                    "row count larger than the row's steps",
                ));
            }
        }
        Ok(rrd)
    }

    /// Rows changed since the last [`Rrd::mark_clean`], as at most two contiguous
    /// segments per archive (the ring may wrap). The header changes with every update
    /// too: write [`Rrd::header_bytes`] along with them.
    pub fn dirty_segments(&self) -> Vec<DirtySegment<'_>> {
        let mut out = Vec::new();
        let mut offset = self.header_len();
        for (i, a) in self.rings.iter().enumerate() {
            if a.dirty > 0 {
                let rows = self.spec().archives[i].rows;
                let newest = self.newest_label(i).unwrap_or(0);
                let end = self.state.slot(i, newest).unwrap_or(0) as u32 + 1;
                let mut runs = Vec::with_capacity(2);
                if a.dirty <= end {
                    runs.push(end - a.dirty..end);
                } else {
                    runs.push(rows - (a.dirty - end)..rows);
                    runs.push(0..end);
                }
                let len = a.layout.row_len();
                for slots in runs {
                    let bytes = slots.start as usize * len..slots.end as usize * len;
                    out.push(DirtySegment {
                        archive: i,
                        byte_range: offset + bytes.start..offset + bytes.end,
                        bytes: &a.data[bytes],
                        slots,
                    });
                }
            }
            offset += a.data.len();
        }
        out
    }

    /// Changed rows one by one: `(archive, slot, row)`, for stores that keep rows apart.
    pub fn dirty_rows(&self) -> impl Iterator<Item = (usize, u32, Row)> + '_ {
        self.dirty_segments().into_iter().flat_map(move |seg| {
            let a = &self.rings[seg.archive];
            seg.slots
                .map(move |s| (seg.archive, s, a.row_at_slot(s as usize)))
        })
    }

    /// Forgets the dirty rows, once they are durably stored.
    pub fn mark_clean(&mut self) {
        for a in &mut self.rings {
            a.dirty = 0;
        }
    }
}

impl RrdState {
    /// The spec and the consolidation in progress (the header of [`Rrd::to_bytes`]):
    /// a few hundred bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.spec.archives.len();
        let mut out = Vec::with_capacity(header_len(n));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.spec.base_step.to_le_bytes());
        out.extend_from_slice(&self.spec.heartbeat.to_le_bytes());
        out.extend_from_slice(&self.spec.xff.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for a in &self.spec.archives {
            out.extend_from_slice(&a.step.to_le_bytes());
            out.extend_from_slice(&a.rows.to_le_bytes());
        }
        out.extend_from_slice(&self.last_update.to_le_bytes());
        out.extend_from_slice(&self.pdp.val.to_le_bytes());
        out.extend_from_slice(&self.pdp.unknown_secs.to_le_bytes());
        out.extend_from_slice(&self.pdp.ext_min.to_le_bytes());
        out.extend_from_slice(&self.pdp.ext_max.to_le_bytes());
        for c in &self.cdps {
            out.extend_from_slice(&c.sum.to_le_bytes());
            out.extend_from_slice(&c.min.to_le_bytes());
            out.extend_from_slice(&c.max.to_le_bytes());
            out.extend_from_slice(&c.unknown_pdps.to_le_bytes());
        }
        debug_assert_eq!(out.len(), header_len(n));
        out
    }

    /// Reads what [`RrdState::to_bytes`] wrote (exactly those bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<RrdState, DecodeError> {
        let (state, at) = Self::decode(bytes, false)?;
        if at != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                len: bytes.len(),
                expected: at,
            });
        }
        Ok(state)
    }

    /// Decodes the header; with `with_rows`, `bytes` must also hold every row. Returns
    /// the state and where the rows start.
    fn decode(bytes: &[u8], with_rows: bool) -> Result<(RrdState, usize), DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        if bytes.len() < FIXED_HEAD {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        if r.take(4)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        r.u16()?;
        let base_step = r.u32()?;
        let heartbeat = r.u32()?;
        let xff = r.f64()?;
        let count = r.u32()? as usize;
        if count > super::MAX_ARCHIVES {
            return Err(DecodeError::Corrupt("too many archives"));
        }
        let mut archives = Vec::with_capacity(count);
        for _ in 0..count {
            archives.push(ArchiveSpec::new(r.u32()?, r.u32()?));
        }
        let spec = RrdSpec {
            base_step,
            heartbeat,
            xff,
            archives,
        };
        spec.validate()
            .map_err(|e| DecodeError::Spec(e.to_string()))?;
        if with_rows {
            let expected = Rrd::encoded_len(&spec);
            if bytes.len() != expected {
                return Err(DecodeError::LengthMismatch {
                    len: bytes.len(),
                    expected,
                });
            }
        }
        let last_update = r.i64()?;
        let mut state = RrdState::new(spec, last_update).map_err(|e| match e {
            CreateError::Spec(e) => DecodeError::Spec(e.to_string()),
            CreateError::TimeOutOfRange { .. } => DecodeError::Corrupt("last update out of range"),
        })?;
        state.pdp = PdpPrep {
            val: r.f64()?,
            unknown_secs: r.u64()?,
            ext_min: r.f64()?,
            ext_max: r.f64()?,
        };
        if state.pdp.unknown_secs > u64::from(state.spec.base_step) || state.pdp.val.is_infinite() {
            return Err(DecodeError::Corrupt("primary data point state"));
        }
        for i in 0..state.cdps.len() {
            let cdp = Cdp {
                sum: r.f64()?,
                min: r.f64()?,
                max: r.f64()?,
                unknown_pdps: r.u32()?,
            };
            if cdp.unknown_pdps > state.spec.pdp_per_row(i) {
                return Err(DecodeError::Corrupt("consolidation state"));
            }
            state.cdps[i] = cdp;
        }
        Ok((state, r.at))
    }
}

fn header_len(archives: usize) -> usize {
    FIXED_HEAD + 8 * archives + PDP_STATE + CDP_STATE * archives
}

fn archive_bytes(spec: &RrdSpec, index: usize) -> usize {
    let layout = super::archive::RowLayout::for_pdp_per_row(spec.pdp_per_row(index));
    layout.row_len() * spec.archives[index].rows as usize
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at + n;
        let slice = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated {
            len: self.bytes.len(),
        })?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.array()?))
    }
}
