//! The tailer on a temporary directory: rotation by rename and by
//! copytruncate, new files, restarts, recycled inodes, backpressure.

use super::*;
use crate::state::StateDir;
use std::io::Write;
use std::sync::atomic::Ordering;

struct Rig {
    dir: tempfile::TempDir,
    book: Arc<LogBook>,
    seq: u64,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        Self {
            dir,
            book: Arc::new(LogBook::new(1 << 20)),
            seq: 0,
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    /// A tailer of `logs/*.log` (as after an agent start: offsets restored).
    fn tailer(&self) -> Tailer {
        self.tailer_of(vec![self.spec("*.log")])
    }

    /// The entry for `logs/<glob>`.
    fn spec(&self, glob: &str) -> FileSpec {
        FileSpec {
            pattern: format!("{}/logs/{glob}", self.dir.path().display()),
            app: Some("app".into()),
            zone: FixedOffset::east_opt(0).unwrap(),
        }
    }

    fn tailer_of(&self, specs: Vec<FileSpec>) -> Tailer {
        let state = StateDir::open(&self.dir.path().join("state")).unwrap();
        let mut t = Tailer::new(
            specs,
            64,
            OffsetStore::new(state),
            self.book.clone(),
            Arc::new(FilterCell::default()),
        );
        t.set_drain_grace(Duration::ZERO);
        t.restore();
        t
    }

    fn append(&self, name: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Polls, puts what was read in a batch that the server acknowledges,
    /// and returns its messages.
    fn ship(&mut self, t: &mut Tailer) -> Vec<String> {
        t.poll(true);
        self.seq += 1;
        let recs = self.book.take_batch(self.seq);
        self.book.settled(self.seq, true);
        t.poll(false); // commits and saves
        recs.into_iter().map(|r| r.message).collect()
    }
}

fn lines(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("line {i}\n")).collect()
}

fn names(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

#[test]
fn reads_lines_with_the_files_app_name() {
    let mut rig = Rig::new();
    rig.append("a.log", "hello\n");
    let mut t = rig.tailer();
    t.poll(true);
    let recs = rig.book.take_batch(1);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].message, "hello");
    assert_eq!(recs[0].app_name.as_deref(), Some("app"));
    assert!(!recs[0].truncated);
    rig.seq = 1;
    rig.book.settled(1, true);
}

#[test]
fn glob_picks_up_a_new_file() {
    let mut rig = Rig::new();
    let mut t = rig.tailer();
    assert!(rig.ship(&mut t).is_empty());
    rig.append("new.log", "first\n");
    rig.append("ignored.txt", "not matched\n");
    assert_eq!(rig.ship(&mut t), ["first"]);
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_then_the_new_one() {
    let mut rig = Rig::new();
    rig.append("a.log", &lines(0..3));
    let mut t = rig.tailer();
    assert_eq!(rig.ship(&mut t), names(0..3));
    // The writer still had lines for the old file; then it is renamed, a
    // late line reaches it, and a new file takes its place.
    rig.append("a.log", &lines(3..5));
    std::fs::rename(rig.log("a.log"), rig.log("a.log.1")).unwrap();
    rig.append("a.log.1", "line 5\n");
    rig.append("a.log", &lines(6..8));
    let mut got = rig.ship(&mut t);
    got.sort();
    assert_eq!(got, names(3..8));
    assert!(rig.ship(&mut t).is_empty());
    // The rotated file is closed and forgotten once acknowledged.
    assert_eq!(t.positions().len(), 1, "{:?}", t.positions());
}

#[test]
fn copytruncate_rotation_loses_nothing() {
    let mut rig = Rig::new();
    rig.append("a.log", &lines(0..3));
    let mut t = rig.tailer();
    assert_eq!(rig.ship(&mut t), names(0..3));
    // Lines written after our last read, then copied and truncated by
    // logrotate: they are read from the copy.
    rig.append("a.log", &lines(3..5));
    std::fs::copy(rig.log("a.log"), rig.log("a.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(rig.log("a.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    rig.append("a.log", &lines(5..6));
    let mut got = rig.ship(&mut t);
    got.sort();
    assert_eq!(got, names(3..6));
    // Truncated and refilled beyond the old offset before we looked.
    rig.append("a.log", &lines(6..7));
    std::fs::copy(rig.log("a.log"), rig.log("a.log.2")).unwrap();
    std::fs::write(rig.log("a.log"), lines(100..110)).unwrap();
    let mut got = rig.ship(&mut t);
    got.sort();
    let mut want = names(100..110);
    want.extend(names(6..7));
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn partial_last_line_waits_for_its_end() {
    let mut rig = Rig::new();
    rig.append("a.log", "complete\nhalf");
    let mut t = rig.tailer();
    assert_eq!(rig.ship(&mut t), ["complete"]);
    assert!(rig.ship(&mut t).is_empty());
    rig.append("a.log", " and the rest\n");
    assert_eq!(rig.ship(&mut t), ["half and the rest"]);
}

#[test]
fn long_line_is_split_and_marked() {
    let rig = Rig::new();
    let long = "z".repeat(150);
    rig.append("a.log", &format!("{long}\nnext\n"));
    let mut t = rig.tailer();
    t.poll(true);
    let recs = rig.book.take_batch(1);
    let pieces: Vec<(usize, bool)> = recs
        .iter()
        .map(|r| (r.message.len(), r.truncated))
        .collect();
    assert_eq!(
        pieces,
        [(64, true), (64, true), (22, true), (4, false)],
        "limit 64"
    );
}

#[test]
fn restart_resumes_after_the_last_acknowledged_line() {
    let mut rig = Rig::new();
    rig.append("a.log", &lines(0..3));
    {
        let mut t = rig.tailer();
        assert_eq!(rig.ship(&mut t), names(0..3));
        // Read but never acknowledged: the agent stops before the server
        // answers.
        rig.append("a.log", &lines(3..5));
        t.poll(true);
        assert_eq!(rig.book.take_batch(99).len(), 2);
    }
    rig.book.settled(99, false); // forget the lost flight in this test's book
    rig.book.take_acked();
    rig.append("a.log", &lines(5..6));
    let mut t = rig.tailer();
    assert_eq!(rig.ship(&mut t), names(3..6), "no loss, no duplicate");
}

#[test]
fn rotation_while_the_agent_is_down_is_followed() {
    let mut rig = Rig::new();
    rig.append("r.log", &lines(0..2));
    rig.append("c.log", &lines(10..12));
    {
        let mut t = rig.tailer();
        let mut got = rig.ship(&mut t);
        got.sort();
        assert_eq!(got.len(), 4);
    }
    // Down: more lines, then r.log renamed away and c.log copied+truncated.
    rig.append("r.log", &lines(2..4));
    rig.append("c.log", &lines(12..14));
    std::fs::rename(rig.log("r.log"), rig.log("r.log.1")).unwrap();
    std::fs::copy(rig.log("c.log"), rig.log("c.log.1")).unwrap();
    std::fs::write(rig.log("c.log"), "").unwrap();
    rig.append("r.log", &lines(4..5));
    rig.append("c.log", &lines(14..15));
    let mut t = rig.tailer();
    let mut got = rig.ship(&mut t);
    got.sort();
    let mut want = names(2..5);
    want.extend(names(12..15));
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_recycled_inode_is_not_taken_for_the_old_file() {
    let mut rig = Rig::new();
    rig.append("a.log", &lines(0..5));
    {
        let mut t = rig.tailer();
        assert_eq!(rig.ship(&mut t).len(), 5);
    }
    // Same path, and quite possibly the same inode: other content.
    std::fs::remove_file(rig.log("a.log")).unwrap();
    rig.append("a.log", "other content entirely\nsecond\n");
    let mut t = rig.tailer();
    assert_eq!(rig.ship(&mut t), ["other content entirely", "second"]);
}

#[test]
fn a_full_backlog_pauses_reading_without_loss() {
    let mut rig = Rig::new();
    rig.book = Arc::new(LogBook::with_batch_limits(4096, 1000, 1 << 20));
    rig.append("a.log", &lines(0..200));
    let mut t = rig.tailer();
    let mut got = Vec::new();
    for _ in 0..100 {
        let batch = rig.ship(&mut t);
        assert!(batch.len() < 200, "bounded by the backlog");
        got.extend(batch);
        if got.len() == 200 {
            break;
        }
    }
    assert_eq!(got, names(0..200));
    let paused = rig.book.stats.paused.load(Ordering::Relaxed);
    assert!(
        paused >= 2,
        "each round cut short for want of room is counted: {paused}"
    );
    // Once everything was read and shipped, a poll does not count a pause.
    t.poll(true);
    assert_eq!(rig.book.stats.paused.load(Ordering::Relaxed), paused);
}

#[test]
fn offsets_file_is_written_only_after_acknowledgement() {
    let rig = Rig::new();
    rig.append("a.log", &lines(0..2));
    let mut t = rig.tailer();
    t.poll(true);
    let store = OffsetStore::new(StateDir::open(&rig.dir.path().join("state")).unwrap());
    let saved = store.load().unwrap();
    assert_eq!(saved[0].offset, 0, "read but not acknowledged");
    rig.book.take_batch(1);
    rig.book.settled(1, true);
    t.poll(false);
    assert_eq!(store.load().unwrap()[0].offset, 14);
}

#[test]
fn reconfigured_files_keep_their_offsets_and_removed_ones_stop() {
    let mut rig = Rig::new();
    rig.append("a.log", &lines(0..3));
    rig.append("b.txt", "b0\n");
    let mut t = rig.tailer();
    assert_eq!(rig.ship(&mut t), names(0..3));
    rig.append("a.log", &lines(3..5));
    // a.log under another glob goes on where it was; b.txt, newly
    // matched, is read from its start.
    t.reconfigure(vec![rig.spec("a*"), rig.spec("*.txt")]);
    let mut got = rig.ship(&mut t);
    got.sort();
    assert_eq!(got, ["b0", "line 3", "line 4"]);
    assert!(rig.ship(&mut t).is_empty());

    // Removed while a line of it is in flight: that line still commits,
    // later ones are not read.
    rig.append("a.log", "line 5\n");
    t.poll(true);
    t.reconfigure(vec![rig.spec("*.txt")]);
    rig.append("a.log", "line 6\n");
    rig.append("b.txt", "b1\n");
    t.poll(true);
    rig.seq += 1;
    let recs: Vec<String> = rig
        .book
        .take_batch(rig.seq)
        .into_iter()
        .map(|r| r.message)
        .collect();
    assert_eq!(recs, ["line 5", "b1"]);
    rig.book.settled(rig.seq, true);
    t.poll(false);
    assert!(rig.ship(&mut t).is_empty());
    let tracked: Vec<PathBuf> = t.positions().into_iter().map(|p| p.0).collect();
    assert_eq!(
        tracked,
        [rig.log("b.txt")],
        "a.log forgotten once acknowledged"
    );

    // Started again with the same entries (an agent restart): nothing twice.
    drop(t);
    let mut t = rig.tailer_of(vec![rig.spec("*.txt")]);
    assert!(rig.ship(&mut t).is_empty());
    rig.append("b.txt", "b2\n");
    assert_eq!(rig.ship(&mut t), ["b2"]);
}

#[test]
fn unchanged_entries_reconfigure_to_nothing_new() {
    let mut rig = Rig::new();
    rig.append("a.log", &lines(0..2));
    let mut t = rig.tailer();
    assert_eq!(rig.ship(&mut t), names(0..2));
    t.reconfigure(vec![rig.spec("*.log")]);
    assert!(rig.ship(&mut t).is_empty());
    rig.append("a.log", &lines(2..3));
    assert_eq!(rig.ship(&mut t), names(2..3));
}
