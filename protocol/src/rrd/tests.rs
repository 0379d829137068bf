//! Unit tests of the engine; rrdtool parity itself is checked in
//! `protocol/tests/rrdtool_compat.rs` against the real binary.

use super::*;

fn small() -> RrdSpec {
    RrdSpec::with_archives(10, vec![ArchiveSpec::new(10, 12), ArchiveSpec::new(30, 5)])
}

#[test]
fn steady_samples_fill_rows_labelled_by_their_end() {
    let mut rrd = Rrd::new(small(), 1000).unwrap();
    for (i, ts) in (1010..=1120).step_by(10).enumerate() {
        rrd.update(ts, i as f64).unwrap();
    }
    let f = rrd.fetch(Cf::Avg, 0, 1000, 1120).unwrap();
    assert_eq!(f.start, 1000);
    let pts: Vec<_> = f.points().collect();
    assert_eq!(pts[0], (1010, Some(0.0)));
    assert_eq!(pts[11], (1120, Some(11.0)));
}

/// Seeded xorshift so property-style loops reproduce.
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
}

/// Random but plausible input, with the bad input the issue lists.
fn feed(rrd: &mut Rrd, rng: &mut Rng, n: usize) {
    let mut ts = rrd.last_update();
    for _ in 0..n {
        ts += 1 + rng.below(40) as i64;
        let value = match rng.below(20) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => f64::MAX,
            _ => rng.below(1000) as f64 / 7.0,
        };
        if rng.below(3) == 0 {
            let bucket = Bucket {
                avg: value,
                min: value - rng.below(50) as f64,
                max: value + rng.below(50) as f64,
            };
            rrd.update_bucket(ts, bucket).unwrap();
        } else {
            rrd.update(ts, value).unwrap();
        }
    }
}

#[test]
fn storage_is_fixed_size_and_below_rrdtools_file() {
    let spec = RrdSpec::default_ladder();
    let empty = Rrd::new(spec.clone(), 1_700_000_000).unwrap();
    let len = Rrd::encoded_len(&spec);
    assert_eq!(empty.to_bytes().len(), len);
    // `rrdtool create --step 10 DS:v:GAUGE:30:U:U` with AVERAGE, MIN, MAX and LAST for
    // each of the five default archives is 173816 bytes (rrdtool 1.7.2, docs/rrd.md).
    assert!(len <= 173_816, "{len} bytes");
    assert_eq!(len, 173_052);

    let mut rrd = empty;
    feed(&mut rrd, &mut Rng(7), 5_000);
    assert_eq!(rrd.to_bytes().len(), len);
}

#[test]
fn bytes_round_trip_and_the_copy_keeps_consolidating_identically() {
    let mut rng = Rng(99);
    let mut rrd = Rrd::new(small(), 1_000_003).unwrap();
    feed(&mut rrd, &mut rng, 700);
    let bytes = rrd.to_bytes();
    let mut copy = Rrd::from_bytes(&bytes).unwrap();
    assert_eq!(copy.to_bytes(), bytes);
    let mut rng2 = Rng(5);
    let mut rng3 = Rng(5);
    feed(&mut rrd, &mut rng2, 300);
    feed(&mut copy, &mut rng3, 300);
    assert_eq!(copy.to_bytes(), rrd.to_bytes());
}

#[test]
fn corrupt_bytes_are_errors_not_panics() {
    let mut rrd = Rrd::new(small(), 1_000_000).unwrap();
    feed(&mut rrd, &mut Rng(3), 100);
    let bytes = rrd.to_bytes();
    assert!(matches!(
        Rrd::from_bytes(&bytes[..10]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        Rrd::from_bytes(&bytes[..bytes.len() - 1]),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(Rrd::from_bytes(&bad), Err(DecodeError::BadMagic));
    let mut bad = bytes.clone();
    bad[4] = 9;
    assert_eq!(
        Rrd::from_bytes(&bad),
        Err(DecodeError::UnsupportedVersion(9))
    );
    // Flip every byte of the header, one at a time: never a panic.
    let mut rng = Rng(11);
    for i in 0..rrd.header_len() {
        let mut bad = bytes.clone();
        bad[i] ^= 1 << rng.below(8);
        let _ = Rrd::from_bytes(&bad);
    }
    let mut bad = bytes;
    let count_at = rrd.header_len() + 12 * 24 + 32; // first row of archive 1, its count
    bad[count_at] = 200;
    assert!(matches!(
        Rrd::from_bytes(&bad),
        Err(DecodeError::Corrupt(_))
    ));
}

#[test]
fn dirty_segments_patch_a_stored_copy_into_the_current_state() {
    let mut rng = Rng(1234);
    let mut rrd = Rrd::new(small(), 2_000_000).unwrap();
    let mut stored = rrd.to_bytes();
    rrd.mark_clean();
    for round in 0..60 {
        // Small batches, then now and then a gap longer than an archive's span.
        let n = if round % 17 == 5 {
            1
        } else {
            1 + rng.below(30) as usize
        };
        if round % 17 == 5 {
            let ts = rrd.last_update() + 3_000 + rng.below(500) as i64;
            rrd.update(ts, 1.0).unwrap();
        }
        feed(&mut rrd, &mut rng, n);
        let header = rrd.header_bytes();
        stored[..header.len()].copy_from_slice(&header);
        let mut touched = 0;
        for seg in rrd.dirty_segments() {
            assert_eq!(seg.byte_range.len(), seg.bytes.len());
            stored[seg.byte_range.clone()].copy_from_slice(seg.bytes);
            touched += seg.slots.len();
        }
        let rows: usize = rrd.dirty_rows().count();
        assert_eq!(rows, touched);
        assert_eq!(stored, rrd.to_bytes(), "round {round}");
        rrd.mark_clean();
        assert!(rrd.dirty_segments().is_empty());
    }
}

#[test]
fn out_of_order_and_out_of_range_times_are_refused_and_change_nothing() {
    let mut rrd = Rrd::new(small(), 1000).unwrap();
    rrd.update(1010, 1.0).unwrap();
    let before = rrd.to_bytes();
    assert_eq!(
        rrd.update(1010, 2.0),
        Err(UpdateError::OutOfOrder {
            ts: 1010,
            last_update: 1010
        })
    );
    assert!(rrd.update(900, 2.0).is_err());
    assert_eq!(
        rrd.update(MAX_TIMESTAMP + 1, 2.0),
        Err(UpdateError::TimeOutOfRange {
            ts: MAX_TIMESTAMP + 1
        })
    );
    assert!(rrd.update(i64::MAX, 2.0).is_err());
    assert!(rrd.update(-5, 2.0).is_err());
    assert_eq!(rrd.to_bytes(), before);
    assert!(matches!(
        Rrd::new(small(), -1),
        Err(CreateError::TimeOutOfRange { ts: -1 })
    ));
}

#[test]
fn a_jump_to_the_far_future_is_cheap_and_leaves_only_unknown_rows() {
    let mut rrd = Rrd::new(RrdSpec::default_ladder(), 1_700_000_000).unwrap();
    for i in 1..=100 {
        rrd.update(1_700_000_000 + i * 10, 5.0).unwrap();
    }
    rrd.update(MAX_TIMESTAMP, 5.0).unwrap();
    for i in 0..5 {
        let newest = rrd.newest_label(i).unwrap();
        let f = rrd
            .fetch(Cf::Avg, i, newest - 100 * 86_400, newest)
            .unwrap();
        assert!(f.values.iter().all(Option::is_none));
    }
    rrd.update(MAX_TIMESTAMP - 1, 1.0).unwrap_err();
}

#[test]
fn non_finite_values_are_unknown_and_never_reach_a_row() {
    let mut rrd = Rrd::new(small(), 1000).unwrap();
    rrd.update(1010, 1.0).unwrap();
    rrd.update(1020, f64::INFINITY).unwrap();
    rrd.update(1030, f64::NAN).unwrap();
    rrd.update(1040, f64::MAX).unwrap(); // × 10 s overflows: unknown too
    rrd.update(1050, 2.0).unwrap();
    let f = rrd.fetch(Cf::Avg, 0, 1000, 1050).unwrap();
    assert_eq!(f.values, [Some(1.0), None, None, None, Some(2.0)]);
    let mut rng = Rng(77);
    feed(&mut rrd, &mut rng, 2_000);
    for i in 0..2 {
        let newest = rrd.newest_label(i).unwrap();
        for row in rrd.fetch_rows(i, newest - 10_000, newest).unwrap().rows {
            for cf in Cf::ALL {
                assert!(!row.get(cf).is_infinite());
            }
        }
    }
}

#[test]
fn a_sample_spanning_several_steps_fills_them_all_and_gaps_are_unknown() {
    let mut rrd = Rrd::new(small(), 1000).unwrap();
    rrd.update(1005, 4.0).unwrap();
    // 25 s after the previous sample (within the 30 s heartbeat): covers (1005, 1030].
    rrd.update(1030, 8.0).unwrap();
    // 31 s: beyond the heartbeat, so (1030, 1061] is unknown.
    rrd.update(1061, 9.0).unwrap();
    rrd.update(1070, 3.0).unwrap();
    let f = rrd.fetch(Cf::Avg, 0, 1000, 1070).unwrap();
    // (1000, 1010]: 5 s of 4 and 5 s of 8; the steps the second sample covers entirely
    // are 8. (rrdtool before 1.5 gave all three the blend (5 × 4 + 25 × 8) / 30.)
    assert_eq!(f.values[..3], [Some(6.0), Some(8.0), Some(8.0)]);
    assert_eq!(f.values[3..6], [None, None, None]);
    assert_eq!(f.values[6], Some(3.0));
}

#[test]
fn rows_are_unknown_beyond_xff_and_count_their_known_steps() {
    let mut rrd = Rrd::new(small(), 990).unwrap();
    // Row (990, 1020] of the 30 s archive: 2 known steps of 3.
    rrd.update(1000, 1.0).unwrap();
    rrd.update(1010, 2.0).unwrap();
    rrd.update(1020, f64::NAN).unwrap();
    // Row (1020, 1050]: 1 known step of 3, more than xff = 0.5 unknown.
    rrd.update(1030, 7.0).unwrap();
    rrd.update(1040, f64::NAN).unwrap();
    rrd.update(1050, f64::NAN).unwrap();
    let rows = rrd.fetch_rows(1, 990, 1050).unwrap();
    assert_eq!(rows.start, 990);
    let first = rows.rows[0];
    assert_eq!(
        (first.avg, first.min, first.max, first.count),
        (1.5, 1.0, 2.0, 2)
    );
    // LAST is the last step's value, unknown here, as in rrdtool.
    assert!(first.last.is_nan());
    let second = rows.rows[1];
    assert!(!second.is_known());
    assert_eq!(second.count, 1);
}

#[test]
fn buckets_widen_min_and_max_but_keep_average_and_last() {
    let spec = small();
    let mut plain = Rrd::new(spec.clone(), 1000).unwrap();
    let mut buckets = Rrd::new(spec, 1000).unwrap();
    for (i, ts) in (1010..=1090).step_by(10).enumerate() {
        let avg = i as f64;
        plain.update(ts, avg).unwrap();
        buckets
            .update_bucket(
                ts,
                Bucket {
                    avg,
                    min: avg - 5.0,
                    max: avg + 5.0,
                },
            )
            .unwrap();
    }
    for archive in 0..2 {
        let p = plain.fetch_rows(archive, 1000, 1090).unwrap();
        let b = buckets.fetch_rows(archive, 1000, 1090).unwrap();
        for (p, b) in p.rows.iter().zip(&b.rows) {
            if !p.is_known() {
                assert!(!b.is_known());
                continue;
            }
            assert_eq!((p.avg, p.last, p.count), (b.avg, b.last, b.count));
            assert_eq!(b.min, p.min - 5.0);
            assert_eq!(b.max, p.max + 5.0);
        }
    }
    // Extremes that do not bracket the average are ignored.
    let mut rrd = Rrd::new(small(), 1000).unwrap();
    let odd = Bucket {
        avg: 5.0,
        min: 6.0,
        max: f64::NAN,
    };
    rrd.update_bucket(1010, odd).unwrap();
    let row = rrd.fetch_rows(0, 1000, 1010).unwrap().rows[0];
    assert_eq!((row.min, row.max), (5.0, 5.0));
}

#[test]
fn fetch_labels_like_rrdtool_and_refuses_silly_ranges() {
    let mut rrd = Rrd::new(small(), 1000).unwrap();
    for ts in (1010..=1300).step_by(10) {
        rrd.update(ts, ts as f64).unwrap();
    }
    // Unaligned bounds: rows overlapping (1015, 1075].
    let f = rrd.fetch(Cf::Last, 0, 1015, 1075).unwrap();
    assert_eq!(f.start, 1010);
    let labels: Vec<i64> = f.points().map(|(t, _)| t).collect();
    assert_eq!(labels, [1020, 1030, 1040, 1050, 1060, 1070, 1080]);
    // Beyond the newest complete row, and older than the archive keeps: unknown.
    let f = rrd.fetch(Cf::Avg, 0, 1280, 1320).unwrap();
    assert_eq!(f.values, [Some(1290.0), Some(1300.0), None, None]);
    let f = rrd.fetch(Cf::Avg, 0, 1000, 1200).unwrap();
    assert!(f.values[..7].iter().all(Option::is_none)); // 12 rows kept: (1180, 1300]
    assert!(matches!(
        rrd.fetch(Cf::Avg, 0, 10, 10),
        Err(FetchError::EmptyRange { .. })
    ));
    assert!(matches!(
        rrd.fetch(Cf::Avg, 9, 0, 10),
        Err(FetchError::NoSuchArchive { index: 9, count: 2 })
    ));
    assert!(matches!(
        rrd.fetch(Cf::Avg, 0, i64::MIN, i64::MAX),
        Err(FetchError::TooManyRows { .. })
    ));
    // rrdtool's archive choice: the finest archive that reaches back far enough.
    assert_eq!(rrd.choose_archive(1200, 1300, 1), 0);
    assert_eq!(rrd.choose_archive(1100, 1300, 1), 1);
    assert_eq!(rrd.choose_archive(1200, 1300, 30), 1);
    assert_eq!(rrd.choose_archive(i64::MIN, i64::MAX, u32::MAX), 1);
    assert_eq!(rrd.choose_archive(i64::MAX, i64::MIN, 0), 0);
    assert_eq!(rrd.archive_index(30), Some(1));
    assert_eq!(rrd.archive_index(20), None);
}

#[test]
fn cf_parses_from_query_strings() {
    assert_eq!("avg".parse::<Cf>(), Ok(Cf::Avg));
    assert_eq!("AVERAGE".parse::<Cf>(), Ok(Cf::Avg));
    assert_eq!("max".parse::<Cf>(), Ok(Cf::Max));
    assert!("median".parse::<Cf>().is_err());
    assert_eq!(Cf::Last.to_string(), "last");
}

#[test]
fn random_ladders_and_input_keep_the_row_invariants() {
    let mut rng = Rng(2024);
    for _ in 0..40 {
        let base = 1 + rng.below(15) as u32;
        let mut archives = Vec::new();
        let mut step = base;
        for _ in 0..1 + rng.below(4) {
            archives.push(ArchiveSpec::new(step, 1 + rng.below(50) as u32));
            step *= 2 + rng.below(4) as u32;
        }
        let mut spec = RrdSpec::with_archives(base, archives);
        spec.heartbeat = 1 + rng.below(u64::from(base) * 5) as u32;
        spec.xff = rng.below(10) as f64 / 10.0;
        let mut rrd = Rrd::new(spec.clone(), rng.below(1 << 31) as i64).unwrap();
        feed(&mut rrd, &mut rng, 400);
        assert_eq!(rrd.to_bytes().len(), Rrd::encoded_len(&spec));
        for (i, a) in spec.archives.iter().enumerate() {
            let per_row = a.step / base;
            let newest = rrd.newest_label(i).unwrap();
            let from = newest - i64::from(a.step) * i64::from(a.rows);
            for row in rrd.fetch_rows(i, from, newest).unwrap().rows {
                assert!(row.count <= per_row, "{row:?}");
                if row.is_known() {
                    // Up to rounding: the average is a sum divided, as in rrdtool.
                    let slack = 1e-12 * row.avg.abs().max(1.0);
                    assert!(row.min <= row.avg + slack, "{row:?}");
                    assert!(row.avg <= row.max + slack, "{row:?}");
                    let unknown = f64::from(per_row - row.count);
                    assert!(unknown <= f64::from(per_row) * spec.xff, "{row:?}");
                    if !row.last.is_nan() {
                        assert!(row.min <= row.last && row.last <= row.max, "{row:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_bare_state_emits_exactly_the_rows_the_full_series_stores() {
    for seed in 1..20u64 {
        let mut rng = Rng(seed * 7919);
        let spec = small();
        let mut full = Rrd::new(spec.clone(), 1000).unwrap();
        let mut state = RrdState::new(spec, 1000).unwrap();
        let mut rows = Rrd::with_state(state.clone());
        let mut out = Vec::new();
        let mut ts = 1000;
        for _ in 0..300 {
            // Occasional outages longer than every archive exercise the rrdtool quirk.
            ts += if rng.below(50) == 0 {
                500
            } else {
                1 + rng.below(25) as i64
            };
            let v = rng.below(100) as f64;
            full.update(ts, v).unwrap();
            out.clear();
            state.update(ts, v, &mut out).unwrap();
            rows.write_rows(&out);
            // The state survives its own encoding at every step.
            state = RrdState::from_bytes(&state.to_bytes()).unwrap();
        }
        assert_eq!(state.to_bytes(), full.state().to_bytes());
        for a in 0..2 {
            let want = full.fetch_rows(a, 900, ts).unwrap();
            let got = state
                .fetch_rows_with(a, 900, ts, |slot| rows.rings[a].row_at_slot(slot))
                .unwrap();
            // NaN != NaN, so compare the printed rows.
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "seed {seed}");
        }
    }
}
