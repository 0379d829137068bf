//! One archive: the consolidated data point (CDP) in progress and how completed rows are
//! emitted, and the ring of rows in exactly the byte layout it is stored in.

use super::Row;

/// A primary data point as the archives consume it: the time-weighted average over one
/// base step (`avg`, rrdtool's `pdp_temp`) and the extremes that the MIN and MAX archives
/// consolidate. For plain samples `min == max == avg`, which is what rrdtool does; agent
/// buckets may carry wider extremes. NaN = unknown (then all three are NaN).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pdp {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

impl Pdp {
    /// A PDP of average `avg` whose extremes are widened by the bucket extremes `lo` and
    /// `hi` (NaN when none). Non-finite averages are unknown.
    pub fn new(avg: f64, lo: f64, hi: f64) -> Self {
        if !avg.is_finite() {
            return Self {
                avg: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        Self {
            avg,
            min: if lo < avg { lo } else { avg },
            max: if hi > avg { hi } else { avg },
        }
    }

    pub fn is_unknown(&self) -> bool {
        self.avg.is_nan()
    }
}

/// The consolidated data point in progress, shared by the four consolidation functions
/// (they only differ in what they fold; which PDPs are unknown is common to all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cdp {
    /// Sum of the known PDP averages so far (rrdtool's AVERAGE `CDP_val`; NaN there is
    /// 0 here, which gives the same results since `0.0 + x == x`).
    pub sum: f64,
    /// Smallest known PDP minimum so far, `+inf` when none.
    pub min: f64,
    /// Largest known PDP maximum so far, `-inf` when none.
    pub max: f64,
    /// PDPs of the current row that are unknown (rrdtool's `CDP_unkn_pdp_cnt`), including
    /// those before the series was created.
    pub unknown_pdps: u32,
}

impl Cdp {
    pub fn empty(unknown_pdps: u32) -> Self {
        Self {
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            unknown_pdps,
        }
    }
}

/// How a row is laid out in bytes. Rows consolidating a single PDP store avg, min and max
/// only: their LAST always equals their AVERAGE and their count is 1 exactly when they are
/// known. Other rows store avg, min, max, last and a count as narrow as the archive allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowLayout {
    /// Bytes of the count field: 0 (single-PDP rows), 1, 2 or 4.
    pub count_width: usize,
}

impl RowLayout {
    pub fn for_pdp_per_row(pdp_per_row: u32) -> Self {
        let count_width = match pdp_per_row {
            0 | 1 => 0,
            2..=0xff => 1,
            0x100..=0xffff => 2,
            _ => 4,
        };
        Self { count_width }
    }

    pub fn row_len(&self) -> usize {
        if self.count_width == 0 {
            24
        } else {
            32 + self.count_width
        }
    }

    pub fn encode(&self, row: &Row, out: &mut [u8]) {
        out[0..8].copy_from_slice(&row.avg.to_le_bytes());
        out[8..16].copy_from_slice(&row.min.to_le_bytes());
        out[16..24].copy_from_slice(&row.max.to_le_bytes());
        if self.count_width == 0 {
            return;
        }
        out[24..32].copy_from_slice(&row.last.to_le_bytes());
        let count = row.count.to_le_bytes();
        out[32..32 + self.count_width].copy_from_slice(&count[..self.count_width]);
    }

    pub fn decode(&self, bytes: &[u8]) -> Row {
        let f = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            known_or_nan(f64::from_le_bytes(b))
        };
        let avg = f(0);
        let min = f(8);
        let max = f(16);
        if self.count_width == 0 {
            return Row {
                avg,
                min,
                max,
                last: avg,
                count: u32::from(!avg.is_nan()),
            };
        }
        let mut count = [0u8; 4];
        count[..self.count_width].copy_from_slice(&bytes[32..32 + self.count_width]);
        Row {
            avg,
            min,
            max,
            last: f(24),
            count: u32::from_le_bytes(count),
        }
    }
}

/// Infinities never reach a row; a stored one (corrupt or foreign bytes) reads as unknown.
pub(crate) fn known_or_nan(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        f64::NAN
    }
}

/// The stored rows of one archive, in exactly the byte layout they are persisted in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ring {
    pub layout: RowLayout,
    /// Rows in the ring layout; the row labelled `T` lives in slot `(T / step) % rows`.
    pub data: Vec<u8>,
    /// Rows written since the last [`super::Rrd::mark_clean`], ending at the newest row.
    pub dirty: u32,
}

impl Ring {
    pub fn new(rows: u32, pdp_per_row: u32) -> Self {
        let layout = RowLayout::for_pdp_per_row(pdp_per_row);
        let mut data = vec![0u8; layout.row_len() * rows as usize];
        for chunk in data.chunks_exact_mut(layout.row_len()) {
            layout.encode(&Row::UNKNOWN, chunk);
        }
        Self {
            layout,
            data,
            dirty: 0,
        }
    }

    pub fn row_at_slot(&self, slot: usize) -> Row {
        let len = self.layout.row_len();
        self.layout.decode(&self.data[slot * len..(slot + 1) * len])
    }

    pub fn write(&mut self, slot: usize, row: &Row) {
        let len = self.layout.row_len();
        self.layout
            .encode(row, &mut self.data[slot * len..(slot + 1) * len]);
    }
}

/// Slot of the row labelled `label` in an archive of `rows` rows of `step` seconds.
pub(crate) fn slot(step: u32, rows: u32, label: i64) -> usize {
    (label.div_euclid(i64::from(step))).rem_euclid(i64::from(rows)) as usize
}

/// What one archive needs to consolidate: its shape and the row in progress.
pub(crate) struct Consolidation<'a> {
    pub index: usize,
    pub step: u32,
    pub rows: u32,
    pub pdp_per_row: u32,
    pub cdp: &'a mut Cdp,
}

impl Consolidation<'_> {
    /// Folds `elapsed` PDPs into the archive, emitting the rows they complete (oldest
    /// first, as `(archive, label, row)`): first the step that was in progress
    /// (`first`), then `elapsed − 1` steps that one sample covered entirely (`fill`).
    /// Mirrors rrdtool's `update_cdp`: rows that hold only `fill` PDPs are written
    /// with `fill` itself, since the average, minimum, maximum and last of identical
    /// values are that value.
    #[allow(clippy::too_many_arguments)]
    pub fn advance(
        &mut self,
        first: Pdp,
        fill: Pdp,
        elapsed: u64,
        proc_pdp_count: u64,
        base_step: u32,
        xff: f64,
        out: &mut Vec<super::RowWrite>,
    ) {
        let pdp_cnt = u64::from(self.pdp_per_row);
        // PDPs that complete the row in progress.
        let start_offset = pdp_cnt - proc_pdp_count % pdp_cnt;
        if start_offset > elapsed {
            self.fold(first, 1);
            self.fold(fill, elapsed - 1);
            return;
        }
        self.fold(first, 1);
        self.fold(fill, start_offset - 1);
        let last = if start_offset > 1 { fill } else { first };
        let known_pdps = self.pdp_per_row.saturating_sub(self.cdp.unknown_pdps);
        let primary = if f64::from(self.cdp.unknown_pdps) > pdp_cnt as f64 * xff {
            Row {
                count: known_pdps,
                ..Row::UNKNOWN
            }
        } else {
            Row {
                avg: self.cdp.sum / f64::from(known_pdps),
                min: self.cdp.min,
                max: self.cdp.max,
                last: last.avg,
                count: known_pdps,
            }
            .finite()
        };
        let fill_row = if fill.is_unknown() {
            Row::UNKNOWN
        } else {
            Row {
                avg: fill.avg,
                min: fill.min,
                max: fill.max,
                last: fill.avg,
                count: self.pdp_per_row,
            }
        };
        let completed = (elapsed - start_offset) / pdp_cnt + 1;

        // PDPs past the last completed row start the next one.
        *self.cdp = Cdp::empty(0);
        self.fold(fill, (elapsed - start_offset) % pdp_cnt);

        let astep = i64::from(self.step);
        let first_label = (proc_pdp_count + start_offset) as i64 * i64::from(base_step);
        let rows = u64::from(self.rows);
        let archive = self.index;
        let mut emit = |label: i64, row: Row| {
            out.push(super::RowWrite {
                archive,
                label,
                row,
            })
        };
        if completed <= rows {
            for k in 0..completed {
                let label = first_label + k as i64 * astep;
                emit(label, if k == 0 { primary } else { fill_row });
            }
        } else {
            // Only the newest `rows` rows survive, so write just those. rrdtool 1.7 caps
            // its writes the same way but at `rows` writes when the row in progress
            // needed more than one PDP: its row is then the last one overwritten and
            // stays in the oldest slot, labelled as the oldest row of the new window.
            // Kept for parity; it leaves the window with the next row written.
            let newest = first_label + (completed - 1) as i64 * astep;
            for k in (0..rows as i64).rev() {
                emit(newest - k * astep, fill_row);
            }
            if start_offset > 1 {
                emit(newest - (rows as i64 - 1) * astep, primary);
            }
        }
    }

    /// Adds `n` PDPs of value `pdp` to the row in progress.
    fn fold(&mut self, pdp: Pdp, n: u64) {
        if n == 0 {
            return;
        }
        if pdp.is_unknown() {
            self.cdp.unknown_pdps = self.cdp.unknown_pdps.saturating_add(n as u32);
            return;
        }
        self.cdp.sum += pdp.avg * n as f64;
        if pdp.min < self.cdp.min {
            self.cdp.min = pdp.min;
        }
        if pdp.max > self.cdp.max {
            self.cdp.max = pdp.max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip_and_single_pdp_rows_are_compact() {
        let full = Row {
            avg: 1.5,
            min: -2.0,
            max: 7.25,
            last: 3.0,
            count: 300,
        };
        for (pdp, len) in [(6u32, 33usize), (360, 34), (100_000, 36)] {
            let layout = RowLayout::for_pdp_per_row(pdp);
            assert_eq!(layout.row_len(), len);
            let mut buf = vec![0u8; len];
            let row = Row {
                count: full.count.min(pdp),
                ..full
            };
            layout.encode(&row, &mut buf);
            assert_eq!(layout.decode(&buf), row);
        }
        let compact = RowLayout::for_pdp_per_row(1);
        assert_eq!(compact.row_len(), 24);
        let one = Row {
            avg: 4.0,
            min: 1.0,
            max: 9.0,
            last: 4.0,
            count: 1,
        };
        let mut buf = [0u8; 24];
        compact.encode(&one, &mut buf);
        assert_eq!(compact.decode(&buf), one);
        compact.encode(&Row::UNKNOWN, &mut buf);
        assert_eq!(compact.decode(&buf).count, 0);
    }
}
