use super::*;
use chrono::Utc;
use metrolog_protocol::syslog::LogRecord;
use metrolog_protocol::{Bucket, Labels};

fn key(name: &str) -> SeriesKey {
    SeriesKey::new(name, Labels::new()).unwrap()
}

/// A batch sealed at `sent_at` with one 10 s bucket per second-of-step of
/// `series` (ending at `sent_at`) and the given log lines.
fn batch(seq: u64, sent_at: i64, series: &[&str], logs: &[&str]) -> Batch {
    Batch {
        id: BatchId {
            stream: "run1".into(),
            seq,
        },
        sent_at,
        logs: logs
            .iter()
            .map(|m| LogRecord::whole((*m).into(), Utc::now()))
            .collect(),
        checks: Vec::new(),
        metrics: series
            .iter()
            .map(|n| SeriesBuckets {
                key: key(n),
                step: STEP,
                buckets: vec![Bucket {
                    ts: sent_at,
                    avg: seq as f64,
                    min: seq as f64,
                    max: seq as f64,
                    last: seq as f64,
                    count: 10,
                }],
            })
            .collect(),
        series_meta: Vec::new(),
    }
}

fn policy() -> SpoolPolicy {
    SpoolPolicy {
        segment_bytes: 2048,
        ..SpoolPolicy::default()
    }
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(SPOOL_DIR))
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg") || n.ends_with(".corrupt"))
        .collect();
    v.sort();
    v
}

#[test]
fn batches_leave_only_when_acknowledged_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix() / 10 * 10;
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    for seq in 1..=5 {
        let p = s.push(
            batch(seq, now + seq as i64 * 10, &["load.1m"], &["x"]),
            vec![],
        );
        assert!(p.durable && p.dropped.is_empty());
    }
    assert_eq!(s.front().unwrap().id.seq, 1);
    assert!(s.ack(&batch(2, 0, &[], &[]).id).is_none(), "only the front");
    assert_eq!(s.ack(&batch(1, 0, &[], &[]).id).unwrap().logs, 1);
    assert_eq!(s.front().unwrap().id.seq, 2);
    drop(s);

    // A crash: reopened, the unacknowledged batches come back in order.
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    assert_eq!(s.len(), 4);
    let mut seen = Vec::new();
    while let Some(b) = s.front() {
        seen.push(b.id.seq);
        s.ack(&b.id).unwrap();
    }
    assert_eq!(seen, [2, 3, 4, 5]);
    assert!(
        segments(dir.path()).len() <= 1,
        "{:?}",
        segments(dir.path())
    );
    // Positions go on increasing after a restart.
    let p = s.push(batch(6, now + 60, &["a"], &[]), vec![]);
    drop(s);
    let s = Spool::open(dir.path(), policy(), u64::MAX);
    assert_eq!(s.entries.front().unwrap().seq, p.seq);
    assert!(p.seq > 5);
}

#[test]
fn a_truncated_segment_keeps_its_good_batches_and_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    for seq in 1..=3 {
        s.push(batch(seq, now, &["a"], &[]), vec![]);
    }
    drop(s);
    let seg = dir.path().join(SPOOL_DIR).join(&segments(dir.path())[0]);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap(); // the last write cut short by a crash
    drop(f);

    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    assert_eq!(s.stats.corrupt_files.load(Ordering::Relaxed), 1);
    assert_eq!(s.len(), 2);
    assert_eq!(s.front().unwrap().id.seq, 1);
    let names = segments(dir.path());
    assert!(names.iter().any(|n| n.ends_with(".corrupt")), "{names:?}");
    // And again: the rewritten segment is whole, nothing more set aside.
    drop(s);
    let s = Spool::open(dir.path(), policy(), u64::MAX);
    assert_eq!(s.stats.corrupt_files.load(Ordering::Relaxed), 0);
    assert_eq!(s.len(), 2);
}

#[test]
fn garbage_in_the_spool_directory_never_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(SPOOL_DIR)).unwrap();
    std::fs::write(
        dir.path().join(SPOOL_DIR).join(segment_name(7)),
        b"not a spool at all",
    )
    .unwrap();
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    assert_eq!(s.stats.corrupt_files.load(Ordering::Relaxed), 1);
    assert!(s.is_empty());
    assert!(s.push(batch(1, now_unix(), &["a"], &[]), vec![]).durable);
}

#[test]
fn file_lines_past_the_saved_offsets_are_left_to_the_tailer() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    let first = s.push(batch(1, now_unix(), &[], &["f1", "sys1"]), vec![(0, 1)]);
    s.push(batch(2, now_unix(), &[], &["f2", "sys2"]), vec![(0, 1)]);
    drop(s);
    // The offsets saved cover the first batch only: the crash came between
    // the second's spool write and its offsets.
    let mut s = Spool::open(dir.path(), policy(), first.seq);
    let a = s.front().unwrap();
    assert_eq!(a.logs.len(), 2);
    s.ack(&a.id);
    let b = s.front().unwrap();
    let msgs: Vec<&str> = b.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(msgs, ["sys2"]);
    drop(s);
    // Stripped for good: a second restart does not bring them back.
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    assert_eq!(s.front().unwrap().logs.len(), 1);
}

#[test]
fn old_batches_are_reconsolidated_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let start = (now_unix() - 3 * 3600) / 60 * 60;
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    // 30 minutes of 10 s batches, three hours old.
    for i in 1..=180u64 {
        s.push(
            batch(i, start + i as i64 * 10, &["cpu.busy_pct"], &["l"]),
            vec![],
        );
    }
    // The next pushes age them: every closed segment goes to 1 min steps.
    for i in 181..=200u64 {
        s.push(batch(i, now_unix(), &["cpu.busy_pct"], &[]), vec![]);
    }
    assert!(s.stats.consolidated.load(Ordering::Relaxed) > 0);
    let mut logs = 0;
    let mut ts = Vec::new();
    let mut ids = Vec::new();
    while let Some(b) = s.front() {
        logs += b.logs.len();
        ids.push(b.id.seq);
        for m in &b.metrics {
            assert_eq!(m.step, STEP, "sent as 10 s buckets");
            ts.extend(m.buckets.iter().map(|b| (b.ts, b.avg)));
        }
        s.ack(&b.id).unwrap();
    }
    assert_eq!(logs, 180, "log records kept");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
    // Every 10 s of the old half hour has a value, in increasing order.
    let old: Vec<(i64, f64)> = ts
        .iter()
        .copied()
        .filter(|(t, _)| *t <= start + 1800)
        .collect();
    let times: Vec<i64> = old.iter().map(|(t, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(times.len(), 180, "{times:?}");
    // Re-consolidated: within most minutes the values are equal (one
    // average); a minute cut by a segment's end is consolidated in two parts.
    let minute = |t: i64| (t + 59).div_euclid(60);
    let mut whole = 0;
    for m in minute(start + 10)..=minute(start + 1800) {
        let in_m: Vec<f64> = old
            .iter()
            .filter(|(t, _)| minute(*t) == m)
            .map(|p| p.1)
            .collect();
        if in_m.len() < 6 || in_m.iter().any(|v| *v != in_m[0]) {
            continue;
        }
        whole += 1;
        // The average of a minute is the average of its 10 s buckets.
        let raw: Vec<f64> = (1..=180u64)
            .filter(|i| minute(start + *i as i64 * 10) == m)
            .map(|i| i as f64)
            .collect();
        let avg = raw.iter().sum::<f64>() / raw.len() as f64;
        assert!((in_m[0] - avg).abs() < 1e-9, "{in_m:?} vs {avg}");
    }
    assert!(whole >= 10, "{whole} whole minutes in {old:?}");
}

#[test]
fn logs_past_their_share_are_dropped_oldest_first_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = SpoolPolicy {
        max_bytes: 64 << 10,
        log_share_pct: 25,
        segment_bytes: 4 << 10,
        ..SpoolPolicy::default()
    };
    let mut s = Spool::open(dir.path(), p.clone(), u64::MAX);
    let noise: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "line {i} {:x}",
                (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect();
    let lines: Vec<&str> = noise.iter().map(String::as_str).collect();
    for i in 1..=300u64 {
        s.push(batch(i, now_unix(), &["a"], &lines), vec![]);
        assert!(s.disk_bytes() <= p.max_bytes + p.segment_bytes, "bounded");
    }
    let dropped = s.stats.dropped_logs.load(Ordering::Relaxed);
    assert!(dropped > 0);
    assert!(s.log_bytes() <= p.log_cap() + p.segment_bytes);
    // The newest logs are there; the dropped are the oldest.
    let mut kept = 0u64;
    let mut has_logs = Vec::new();
    while let Some(b) = s.front() {
        has_logs.push(!b.logs.is_empty());
        kept += b.logs.len() as u64;
        s.ack(&b.id);
    }
    let last_without = has_logs.iter().rposition(|h| !h).unwrap();
    assert!(
        has_logs[last_without..].iter().skip(1).all(|h| *h) && last_without + 20 < has_logs.len(),
        "the newest keep their logs: {has_logs:?}"
    );
    assert_eq!(kept + dropped, 300 * 20, "every record kept or counted");
}

#[test]
fn a_full_spool_at_the_coarsest_step_drops_the_oldest_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let p = SpoolPolicy {
        max_bytes: 32 << 10,
        segment_bytes: 4 << 10,
        tiers: vec![Tier {
            after: Duration::from_secs(3600),
            step: 60,
        }],
        ..SpoolPolicy::default()
    };
    let mut s = Spool::open(dir.path(), p.clone(), u64::MAX);
    let names: Vec<String> = (0..40).map(|i| format!("s.n{i}")).collect();
    let series: Vec<&str> = names.iter().map(String::as_str).collect();
    for i in 1..=400u64 {
        s.push(batch(i, now_unix() - 1000 + i as i64, &series, &[]), vec![]);
        assert!(
            s.disk_bytes() <= p.max_bytes + p.segment_bytes,
            "{i}: {} bytes, {} batches, {:?}",
            s.disk_bytes(),
            s.len(),
            s.segments
                .values()
                .map(|s| (s.bytes, s.live))
                .collect::<Vec<_>>()
        );
    }
    assert!(s.stats.dropped_buckets.load(Ordering::Relaxed) > 0);
    assert!(s.stats.consolidated.load(Ordering::Relaxed) > 0);
}

#[test]
fn an_unusable_directory_keeps_batches_in_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the spool directory should be.
    std::fs::write(dir.path().join(SPOOL_DIR), b"").unwrap();
    let p = SpoolPolicy {
        memory_batches: 3,
        ..policy()
    };
    let mut s = Spool::open(dir.path(), p, u64::MAX);
    let mut dropped = Vec::new();
    for i in 1..=5 {
        let r = s.push(batch(i, now_unix(), &["a"], &["l"]), vec![]);
        assert!(!r.durable);
        dropped.extend(r.dropped.into_iter().map(|id| id.seq));
    }
    assert_eq!(s.len(), 3);
    assert_eq!(dropped, [2, 3], "the front (maybe in flight) stays");
    assert_eq!(s.stats.lost_batches.load(Ordering::Relaxed), 2);
    assert_eq!(s.front().unwrap().id.seq, 1);
    let id = s.front().unwrap().id;
    assert!(s.ack(&id).unwrap().memory);
}

#[test]
fn a_refused_batch_is_discarded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), policy(), u64::MAX);
    s.push(batch(1, now_unix(), &["a"], &["l"]), vec![]);
    s.push(batch(2, now_unix(), &["a"], &[]), vec![]);
    let id = s.front().unwrap().id;
    assert!(s.discard(&id).is_some());
    assert_eq!(s.stats.refused.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats.drops(), (1, 0, 1));
    assert_eq!(s.front().unwrap().id.seq, 2);
}

#[test]
fn spool_keys_parse_and_bad_ladders_are_reported() {
    use crate::config::{AgentConfig, Secret, SpoolConfig};
    let cfg: SpoolConfig = toml::from_str(
        "max_bytes = \"10MiB\"\nlog_share = 60\n\
         [[tiers]]\nafter = \"30m\"\nstep = \"1m\"\n\
         [[tiers]]\nafter = \"2h\"\nstep = \"10m\"\n",
    )
    .unwrap();
    let p = cfg.policy();
    assert_eq!((p.max_bytes, p.log_share_pct), (10 << 20, 60));
    assert_eq!(p.tiers[1].step, 600);
    assert_eq!(p.tiers[0].after, Duration::from_secs(1800));
    assert_eq!(
        SpoolConfig::default().policy().tiers,
        SpoolPolicy::default_tiers()
    );

    let mut agent = AgentConfig::new(vec!["http://a:1".into()], Some(Secret::new("t")));
    agent.spool = toml::from_str(
        "log_share = 101\nreplay_rate = 0\n\
         [[tiers]]\nafter = \"1h\"\nstep = \"25s\"\n\
         [[tiers]]\nafter = \"30m\"\nstep = \"1m\"\n",
    )
    .unwrap();
    let errs = agent.validate().unwrap_err();
    let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "spool.log_share",
            "spool.replay_rate",
            "spool.tiers[0].step",
            "spool.tiers[1].step",
            "spool.tiers[1].after"
        ],
        "{errs}"
    );
}

#[test]
fn unreported_drops_survive_a_restart_until_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut spool = Spool::open(dir.path(), policy(), 0);
        spool.push(batch(1, 100, &["cpu"], &["a", "b", "c"]), Vec::new());
        let front = spool.front().unwrap();
        spool.discard(&front.id).unwrap();
        assert_eq!(spool.stats().drops(), (3, 0, 1));
    } // the agent stops before any server heard of it
    let mut spool = Spool::open(dir.path(), policy(), 0);
    assert_eq!(
        spool.stats().drops(),
        (3, 0, 1),
        "a restart carries the unreported drops over"
    );
    spool.push(batch(2, 110, &["cpu"], &["d"]), Vec::new());
    let front = spool.front().unwrap();
    spool.discard(&front.id).unwrap();
    spool.reported((3, 0, 1));
    drop(spool);
    let mut spool = Spool::open(dir.path(), policy(), 0);
    assert_eq!(
        spool.stats().drops(),
        (1, 0, 1),
        "only the drop not yet reported is carried"
    );
    spool.reported((1, 0, 1));
    drop(spool);
    assert!(!dir.path().join(SPOOL_DIR).join(DROPS_FILE).exists());
    assert_eq!(
        Spool::open(dir.path(), policy(), 0).stats().drops(),
        (0, 0, 0)
    );
}
