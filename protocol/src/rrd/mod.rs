//! Round-robin archives for one series: the consolidation maths of rrdtool for a GAUGE
//! data source, and the fixed-size state the server keeps in memory and persists.
//!
//! Pure: no I/O, no clock. Feed samples with [`Rrd::update`] (or agent buckets with
//! [`Rrd::update_bucket`]), read rows with [`Rrd::fetch`], persist with [`Rrd::to_bytes`]
//! and [`Rrd::dirty_segments`]. `docs/rrd.md` explains the semantics for operators.
//!
//! The arithmetic follows rrdtool 1.7's `rrd_update.c` (`update_pdp_prep`,
//! `simple_update`, `process_pdp_st`, `update_cdp`, `initialize_carry_over`), including
//! its quirks, so that the same samples give the same rows as
//! `rrdtool create --step B DS:v:GAUGE:HB:U:U RRA:{AVERAGE,MIN,MAX,LAST}:XFF:N:ROWS …`
//! followed by `rrdtool update`; `protocol/tests/rrdtool_compat.rs` checks it against the
//! real binary. In short:
//!
//! - A sample at `t` covers `(previous sample, t]` when that gap is at most the heartbeat;
//!   otherwise (and for NaN/inf values) that time is unknown.
//! - A primary data point (PDP) is the time-weighted average over one base step; it is
//!   unknown when more than half of its seconds were unknown before the sample that
//!   closes it. The steps a single sample covers entirely take that sample's value.
//! - A row consolidates `step / base_step` PDPs: AVERAGE, MIN, MAX and LAST of the known
//!   PDPs. It is unknown when more than `xff` of its PDPs are unknown.
//! - The row labelled `T` (a multiple of its step) covers `(T − step, T]`.
//! - After an outage longer than an archive's span, rrdtool leaves the row that was in
//!   progress in the archive's oldest slot; so does this engine (see `Archive::advance`).

mod archive;
mod codec;
mod spec;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use archive::{Cdp, Consolidation, Pdp, Ring};

pub use codec::{DecodeError, DirtySegment};
pub use spec::{ArchiveSpec, RrdSpec, SpecError, MAX_ARCHIVES, MAX_ROWS};

/// Latest timestamp accepted: 9999-12-31T23:59:59Z. Anything later is refused rather than
/// allowed to push every archive into a future no real sample can follow.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799;

/// Most rows one fetch returns.
pub const MAX_FETCH_ROWS: usize = 1_000_000;

/// A consolidation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cf {
    Avg,
    Min,
    Max,
    Last,
}

impl Cf {
    pub const ALL: [Cf; 4] = [Cf::Avg, Cf::Min, Cf::Max, Cf::Last];

    /// rrdtool's name: AVERAGE, MIN, MAX, LAST.
    pub fn rrdtool_name(self) -> &'static str {
        match self {
            Cf::Avg => "AVERAGE",
            Cf::Min => "MIN",
            Cf::Max => "MAX",
            Cf::Last => "LAST",
        }
    }

    /// `avg` (or `average`), `min`, `max`, `last`, in any case.
    pub fn parse(text: &str) -> Result<Cf, String> {
        match text.to_ascii_lowercase().as_str() {
            "avg" | "average" => Ok(Cf::Avg),
            "min" => Ok(Cf::Min),
            "max" => Ok(Cf::Max),
            "last" => Ok(Cf::Last),
            _ => Err(format!("unknown cf {text:?}: use avg, min, max or last")),
        }
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cf::Avg => "avg",
            Cf::Min => "min",
            Cf::Max => "max",
            Cf::Last => "last",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consolidation function {0:?}: expected avg, min, max or last")]
pub struct CfParseError(pub String);

impl FromStr for Cf {
    type Err = CfParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "avg" | "average" => Ok(Cf::Avg),
            "min" | "minimum" => Ok(Cf::Min),
            "max" | "maximum" => Ok(Cf::Max),
            "last" => Ok(Cf::Last),
            _ => Err(CfParseError(s.to_string())),
        }
    }
}

/// One consolidated row. NaN means unknown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    /// Known primary data points (base steps) in the row, `0..=step / base_step`. The row
    /// is known when `count >= (1 − xff) × step / base_step`, so this says how much of it
    /// data backs; it can be non-zero in an unknown row that missed the xff threshold.
    pub count: u32,
}

impl Row {
    pub const UNKNOWN: Row = Row {
        avg: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        last: f64::NAN,
        count: 0,
    };

    pub fn get(&self, cf: Cf) -> f64 {
        match cf {
            Cf::Avg => self.avg,
            Cf::Min => self.min,
            Cf::Max => self.max,
            Cf::Last => self.last,
        }
    }

    /// The value of `cf`, `None` when unknown.
    pub fn value(&self, cf: Cf) -> Option<f64> {
        let v = self.get(cf);
        (!v.is_nan()).then_some(v)
    }

    pub fn is_known(&self) -> bool {
        !self.avg.is_nan()
    }

    /// Infinities (from absurd magnitudes overflowing) become unknown.
    fn finite(self) -> Row {
        Row {
            avg: archive::known_or_nan(self.avg),
            min: archive::known_or_nan(self.min),
            max: archive::known_or_nan(self.max),
            last: archive::known_or_nan(self.last),
            count: self.count,
        }
    }
}

/// A pre-consolidated bucket from an agent: the average over the bucket (the GAUGE value
/// rrdtool would get) and the extremes of the raw samples inside it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("sample at {ts} is not after the series' last update at {last_update}; samples must come in time order, one per second at most")]
    OutOfOrder { ts: i64, last_update: i64 },
    #[error(
        "timestamp {ts} is outside 0..={MAX_TIMESTAMP} (1970 to 9999) seconds since the epoch"
    )]
    TimeOutOfRange { ts: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("start time {ts} is outside 0..={MAX_TIMESTAMP} seconds since the epoch")]
    TimeOutOfRange { ts: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no archive {index}: this series has {count} archives")]
    NoSuchArchive { index: usize, count: usize },
    #[error("empty time range: from ({from}) must be before to ({to})")]
    EmptyRange { from: i64, to: i64 },
    #[error("the range would return {rows} rows; at most {MAX_FETCH_ROWS} are allowed, so narrow it or use a coarser step")]
    TooManyRows { rows: u64 },
}

/// Values of one consolidation function, as `rrdtool fetch` prints them.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// Aligned start: `values[i]` is the row labelled `start + (i + 1) × step`, covering
    /// `(start + i × step, start + (i + 1) × step]`.
    pub start: i64,
    pub step: u32,
    pub values: Vec<Option<f64>>,
}

impl Fetched {
    /// `(label, value)` pairs: each row's end time and its value.
    pub fn points(&self) -> impl Iterator<Item = (i64, Option<f64>)> + '_ {
        let step = i64::from(self.step);
        self.values
            .iter()
            .enumerate()
            .map(move |(i, v)| (self.start + (i as i64 + 1) * step, *v))
    }
}

/// Whole rows (all consolidation functions and the count), labelled as in [`Fetched`].
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedRows {
    pub start: i64,
    pub step: u32,
    pub rows: Vec<Row>,
}

/// The state of the primary data point in progress (rrdtool's `pdp_prep`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct PdpPrep {
    /// Known value × seconds accumulated so far; NaN when none (rrdtool's `PDP_val`).
    val: f64,
    /// Seconds of the current step known to be unknown (rrdtool's `PDP_unkn_sec_cnt`).
    unknown_secs: u64,
    /// Extremes of the agent buckets seen in this step; NaN when none.
    ext_min: f64,
    ext_max: f64,
}

/// Slot (row index in the ring) of the row labelled `label` in an archive of `rows`
/// rows of `step` seconds: `(label / step) % rows`.
pub fn archive_slot(step: u32, rows: u32, label: i64) -> u32 {
    archive::slot(step, rows, label) as u32
}

/// One row an update completed: write `row` at the slot of `label` in `archive`.
/// Applying an update's writes in order to stored rows gives exactly the rows
/// [`Rrd`] holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowWrite {
    pub archive: usize,
    pub label: i64,
    pub row: Row,
}

/// The consolidation in progress of one series, without its rows: the last update,
/// the primary data point and each archive's row in progress. A few hundred bytes,
/// so a server can hold it for every series and keep the rows elsewhere: every
/// update emits the rows it completes as [`RowWrite`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct RrdState {
    spec: Arc<RrdSpec>,
    last_update: i64,
    pdp: PdpPrep,
    cdps: Vec<Cdp>,
}

impl RrdState {
    /// A series whose last update is `start`, as `rrdtool create --start START`. The
    /// first sample counts from `start` on, so create the series a little before its
    /// first sample (e.g. `first_ts − base_step`): a first sample more than a heartbeat
    /// after `start` only marks that time unknown.
    pub fn new(spec: impl Into<Arc<RrdSpec>>, start: i64) -> Result<Self, CreateError> {
        let spec = spec.into();
        spec.validate()?;
        if !(0..=MAX_TIMESTAMP).contains(&start) {
            return Err(CreateError::TimeOutOfRange { ts: start });
        }
        let base = i64::from(spec.base_step);
        let unknown_secs = start.rem_euclid(base) as u64;
        let proc_pdp_st = start - start.rem_euclid(base);
        // PDPs of the current row that lie before `start` are unknown, as in
        // rrdtool's rrd_create.
        let cdps = spec
            .archives
            .iter()
            .map(|a| Cdp::empty((proc_pdp_st.rem_euclid(i64::from(a.step)) / base) as u32))
            .collect();
        Ok(Self {
            spec,
            last_update: start,
            pdp: PdpPrep {
                val: 0.0,
                unknown_secs,
                ext_min: f64::NAN,
                ext_max: f64::NAN,
            },
            cdps,
        })
    }

    pub fn spec(&self) -> &RrdSpec {
        &self.spec
    }

    /// The spec, shared.
    pub fn spec_arc(&self) -> &Arc<RrdSpec> {
        &self.spec
    }

    /// Time of the last accepted sample (or the creation time).
    pub fn last_update(&self) -> i64 {
        self.last_update
    }

    /// Adds one GAUGE sample, as `rrdtool update F ts:value`, and appends the rows it
    /// completes to `out`. NaN and infinite values are unknown (rrdtool's `U`). `ts`
    /// must be after the last update; when it is not, nothing changes.
    pub fn update(
        &mut self,
        ts: i64,
        value: f64,
        out: &mut Vec<RowWrite>,
    ) -> Result<(), UpdateError> {
        self.apply(ts, value, None, out)
    }

    /// Adds an agent bucket ending at `ts`: `bucket.avg` is the GAUGE sample, exactly as
    /// [`RrdState::update`] would take it, so AVERAGE and LAST keep rrdtool parity. The
    /// bucket's `min` and `max` additionally widen the MIN and MAX of the steps the
    /// bucket covers, which rrdtool (that sees only averages) cannot know. Extremes that
    /// are not finite or do not bracket `avg` are ignored.
    pub fn update_bucket(
        &mut self,
        ts: i64,
        bucket: Bucket,
        out: &mut Vec<RowWrite>,
    ) -> Result<(), UpdateError> {
        let ok = bucket.min.is_finite()
            && bucket.max.is_finite()
            && bucket.min <= bucket.avg
            && bucket.avg <= bucket.max;
        self.apply(ts, bucket.avg, ok.then_some((bucket.min, bucket.max)), out)
    }

    fn apply(
        &mut self,
        ts: i64,
        value: f64,
        extremes: Option<(f64, f64)>,
        out: &mut Vec<RowWrite>,
    ) -> Result<(), UpdateError> {
        if !(0..=MAX_TIMESTAMP).contains(&ts) {
            return Err(UpdateError::TimeOutOfRange { ts });
        }
        if ts <= self.last_update {
            return Err(UpdateError::OutOfOrder {
                ts,
                last_update: self.last_update,
            });
        }
        let step = i64::from(self.spec.base_step);
        let heartbeat = i64::from(self.spec.heartbeat);
        let last = self.last_update;
        let interval = ts - last;
        let interval_f = interval as f64;

        // rrdtool's update_pdp_prep for GAUGE: value × seconds, unknown past the heartbeat.
        let mut pdp_new = if value.is_finite() && interval <= heartbeat {
            value * interval_f
        } else {
            f64::NAN
        };
        if !pdp_new.is_finite() {
            pdp_new = f64::NAN;
        }
        let (new_min, new_max) = match extremes {
            Some((lo, hi)) if !pdp_new.is_nan() => (lo, hi),
            _ => (f64::NAN, f64::NAN),
        };

        let proc_pdp_st = last - last.rem_euclid(step);
        let occu_pdp_st = ts - ts.rem_euclid(step);
        let pdp = &mut self.pdp;

        if occu_pdp_st <= proc_pdp_st {
            // rrdtool's simple_update: still inside the same step.
            if pdp_new.is_nan() {
                pdp.unknown_secs += interval as u64;
            } else {
                pdp.val = if pdp.val.is_nan() {
                    pdp_new
                } else {
                    pdp.val + pdp_new
                };
                pdp.ext_min = nan_min(pdp.ext_min, new_min);
                pdp.ext_max = nan_max(pdp.ext_max, new_max);
            }
            self.last_update = ts;
            return Ok(());
        }

        // Close the step in progress, then every full step up to occu_pdp_st
        // (rrdtool's process_pdp_st as of 1.7: each closed step gets its own value).
        let pre_int = (proc_pdp_st + step - last) as f64;
        let post_int = ts.rem_euclid(step);
        let mut pre_unknown = 0.0;
        if pdp_new.is_nan() {
            pre_unknown = pre_int;
        } else {
            if pdp.val.is_nan() {
                pdp.val = 0.0;
            }
            pdp.val += pdp_new / interval_f * pre_int;
            pdp.ext_min = nan_min(pdp.ext_min, new_min);
            pdp.ext_max = nan_max(pdp.ext_max, new_max);
        }
        // rrdtool's quirk, kept for parity: only the unknown seconds before this sample
        // count towards "more than half unknown", not the ones it brings.
        let first_avg = if (step as f64 / 2.0) < pdp.unknown_secs as f64 {
            f64::NAN
        } else {
            pdp.val / ((step as u64 - pdp.unknown_secs) as f64 - pre_unknown)
        };
        let first = Pdp::new(first_avg, pdp.ext_min, pdp.ext_max);
        // The steps this sample covers entirely hold its own value.
        let fill = Pdp::new(pdp_new / interval_f, new_min, new_max);
        let elapsed = ((occu_pdp_st - proc_pdp_st) / step) as u64;

        // The part of this sample after occu_pdp_st starts the next step.
        if pdp_new.is_nan() {
            pdp.unknown_secs = post_int as u64;
            pdp.val = f64::NAN;
        } else {
            pdp.unknown_secs = 0;
            pdp.val = pdp_new / interval_f * post_int as f64;
        }
        (pdp.ext_min, pdp.ext_max) = if post_int > 0 {
            (new_min, new_max)
        } else {
            (f64::NAN, f64::NAN)
        };

        let proc_pdp_count = (proc_pdp_st / step) as u64;
        let spec = &self.spec;
        for (i, (a, cdp)) in spec.archives.iter().zip(&mut self.cdps).enumerate() {
            Consolidation {
                index: i,
                step: a.step,
                rows: a.rows,
                pdp_per_row: spec.pdp_per_row(i),
                cdp,
            }
            .advance(
                first,
                fill,
                elapsed,
                proc_pdp_count,
                spec.base_step,
                spec.xff,
                out,
            );
        }
        self.last_update = ts;
        Ok(())
    }

    /// Index of the archive whose rows are `step` seconds.
    pub fn archive_index(&self, step: u32) -> Option<usize> {
        self.spec.archives.iter().position(|a| a.step == step)
    }

    /// Label (end time) of the newest complete row of `archive`.
    pub fn newest_label(&self, archive: usize) -> Option<i64> {
        let step = i64::from(self.spec.archives.get(archive)?.step);
        Some(self.last_update - self.last_update.rem_euclid(step))
    }

    /// Labels of the oldest and newest rows `archive` holds now.
    pub fn window(&self, archive: usize) -> Option<(i64, i64)> {
        let a = self.spec.archives.get(archive)?;
        let newest = self.newest_label(archive)?;
        Some((newest - i64::from(a.step) * (i64::from(a.rows) - 1), newest))
    }

    /// Slot (row index in the ring) of the row labelled `label` in `archive`.
    pub fn slot(&self, archive: usize, label: i64) -> Option<usize> {
        let a = self.spec.archives.get(archive)?;
        Some(archive::slot(a.step, a.rows, label))
    }

    /// The archive `rrdtool fetch -r RESOLUTION -s FROM -e TO` would read: among the
    /// archives that still hold `from`, the one whose step is nearest to `resolution`;
    /// when none reaches back that far, the one covering most of the range. Pass
    /// `resolution = 1` for the finest archive that covers the range.
    pub fn choose_archive(&self, from: i64, to: i64, resolution: u32) -> usize {
        self.spec
            .choose_archive(self.last_update, from, to, resolution)
    }
}

/// The round-robin archives of one series: [`RrdState`] plus every row, in memory.
/// Fixed size once created.
#[derive(Debug, Clone, PartialEq)]
pub struct Rrd {
    state: RrdState,
    rings: Vec<Ring>,
}

impl Rrd {
    /// A series with every row unknown whose last update is `start`, as
    /// `rrdtool create --start START`; see [`RrdState::new`].
    pub fn new(spec: RrdSpec, start: i64) -> Result<Self, CreateError> {
        let state = RrdState::new(spec, start)?;
        Ok(Self::with_state(state))
    }

    /// A series whose consolidation is `state` and whose rows are all unknown.
    pub fn with_state(state: RrdState) -> Self {
        let rings = state
            .spec
            .archives
            .iter()
            .enumerate()
            .map(|(i, a)| Ring::new(a.rows, state.spec.pdp_per_row(i)))
            .collect();
        Self { state, rings }
    }

    pub fn spec(&self) -> &RrdSpec {
        &self.state.spec
    }

    /// The consolidation in progress.
    pub fn state(&self) -> &RrdState {
        &self.state
    }

    /// Time of the last accepted sample (or the creation time).
    pub fn last_update(&self) -> i64 {
        self.state.last_update
    }

    /// Adds one GAUGE sample, as `rrdtool update F ts:value`. NaN and infinite values are
    /// unknown (rrdtool's `U`). `ts` must be after the last update.
    pub fn update(&mut self, ts: i64, value: f64) -> Result<(), UpdateError> {
        let mut out = Vec::new();
        self.state.update(ts, value, &mut out)?;
        self.write_rows(&out);
        Ok(())
    }

    /// Adds an agent bucket ending at `ts`; see [`RrdState::update_bucket`].
    pub fn update_bucket(&mut self, ts: i64, bucket: Bucket) -> Result<(), UpdateError> {
        let mut out = Vec::new();
        self.state.update_bucket(ts, bucket, &mut out)?;
        self.write_rows(&out);
        Ok(())
    }

    /// Applies rows emitted by an [`RrdState`] (this one's, or a copy's).
    pub fn write_rows(&mut self, writes: &[RowWrite]) {
        for w in writes {
            let Some(a) = self.state.spec.archives.get(w.archive) else {
                continue;
            };
            let slot = archive::slot(a.step, a.rows, w.label);
            let ring = &mut self.rings[w.archive];
            ring.write(slot, &w.row);
            ring.dirty = (ring.dirty + 1).min(a.rows);
        }
    }

    /// Index of the archive whose rows are `step` seconds.
    pub fn archive_index(&self, step: u32) -> Option<usize> {
        self.state.archive_index(step)
    }

    /// Label (end time) of the newest complete row of `archive`.
    pub fn newest_label(&self, archive: usize) -> Option<i64> {
        self.state.newest_label(archive)
    }

    /// See [`RrdState::choose_archive`].
    pub fn choose_archive(&self, from: i64, to: i64, resolution: u32) -> usize {
        self.state.choose_archive(from, to, resolution)
    }

    /// Rows of `archive` labelled in `(floor(from), ceil(to)]` (aligned to the archive's
    /// step), i.e. every row whose interval overlaps `(from, to]`. Rows older than the
    /// archive keeps, or not complete yet, are unknown.
    pub fn fetch_rows(
        &self,
        archive: usize,
        from: i64,
        to: i64,
    ) -> Result<FetchedRows, FetchError> {
        let ring = &self.rings;
        self.state
            .fetch_rows_with(archive, from, to, |slot| ring[archive].row_at_slot(slot))
    }

    /// One consolidation function of [`Rrd::fetch_rows`], as `rrdtool fetch F CF -r STEP`
    /// prints it (rrdtool also prints one more row when `to` is a multiple of the step).
    pub fn fetch(&self, cf: Cf, archive: usize, from: i64, to: i64) -> Result<Fetched, FetchError> {
        let rows = self.fetch_rows(archive, from, to)?;
        Ok(Fetched {
            start: rows.start,
            step: rows.step,
            values: rows.rows.iter().map(|r| r.value(cf)).collect(),
        })
    }
}

impl RrdState {
    /// Rows of `archive` labelled in `(floor(from), ceil(to)]`, as [`Rrd::fetch_rows`],
    /// reading each row in the window with `row_at(slot)`.
    pub fn fetch_rows_with(
        &self,
        archive: usize,
        from: i64,
        to: i64,
        mut row_at: impl FnMut(usize) -> Row,
    ) -> Result<FetchedRows, FetchError> {
        let a = self
            .spec
            .archives
            .get(archive)
            .ok_or(FetchError::NoSuchArchive {
                index: archive,
                count: self.spec.archives.len(),
            })?;
        let (start, n) = aligned_range(a.step, from, to)?;
        let step = i64::from(a.step);
        let newest = self.last_update - self.last_update.rem_euclid(step);
        let oldest = newest - step * (i64::from(a.rows) - 1);
        // Labels in the window are consecutive slots of the ring: the slot
        // of the first is computed, the next ones follow it round the ring
        // (no division per row; a group's fallback reads 100 000 of them).
        let mut next_slot: Option<usize> = None;
        let rows = (1..=n as i64)
            .map(|k| {
                let label = start + k * step;
                if label < oldest || label > newest {
                    Row::UNKNOWN
                } else {
                    let slot = next_slot.unwrap_or_else(|| archive::slot(a.step, a.rows, label));
                    next_slot = Some(if slot + 1 == a.rows as usize {
                        0
                    } else {
                        slot + 1
                    });
                    row_at(slot)
                }
            })
            .collect();
        Ok(FetchedRows {
            start,
            step: a.step,
            rows,
        })
    }
}

/// The aligned start and the number of rows of `step` labelled in
/// `(floor(from), ceil(to)]`.
pub fn aligned_range(step: u32, from: i64, to: i64) -> Result<(i64, u64), FetchError> {
    if from >= to {
        return Err(FetchError::EmptyRange { from, to });
    }
    let step = i64::from(step);
    // Clamping keeps the arithmetic in range; such ranges are refused below anyway.
    let bound = 2 * MAX_TIMESTAMP;
    let (from, to) = (from.clamp(-bound, bound), to.clamp(-bound, bound));
    let start = from - from.rem_euclid(step);
    let end = to + (step - to.rem_euclid(step)) % step;
    let n = ((end - start) / step) as u64;
    if n > MAX_FETCH_ROWS as u64 {
        return Err(FetchError::TooManyRows { rows: n });
    }
    Ok((start, n))
}

/// Minimum ignoring NaN (NaN only when both are).
fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b < a {
        b
    } else {
        a
    }
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b > a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests;
