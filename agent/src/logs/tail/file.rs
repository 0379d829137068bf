//! One tailed file: reading from an offset, cutting lines, holding a partial
//! last line, splitting long lines, noticing truncation.

use super::offsets::{FileId, Fingerprint, FINGERPRINT_BYTES};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// Where a tracked file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Matched by its glob: read as it grows.
    Active,
    /// Renamed away or deleted: read to its end, then closed once it has not
    /// grown for a while (a writer may not have reopened its log yet).
    Draining { last_growth: Instant },
    /// Closed; kept until the server has acknowledged its last lines, so a
    /// restart in between finds it again and loses nothing.
    Done,
}

/// What happened to a line handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// In the backlog: committed once its batch is acknowledged.
    Queued,
    /// Empty or filtered out: nothing to wait for.
    Skipped,
}

/// Receives each line (without its newline), the offset just past it, and
/// whether it is a piece of a line longer than the limit.
pub trait LineSink {
    fn line(&mut self, bytes: &[u8], end: u64, piece: bool) -> Fate;
}

impl<F: FnMut(&[u8], u64, bool) -> Fate> LineSink for F {
    fn line(&mut self, bytes: &[u8], end: u64, piece: bool) -> Fate {
        self(bytes, end, piece)
    }
}

/// A file being tailed, or the memory of one whose last lines are in flight.
///
/// A *slot* names one stream of content: it follows the content when the
/// file is renamed or copied away, and a truncated file starts a new slot.
#[derive(Debug)]
pub struct Tracked {
    pub slot: u64,
    /// Index of the `[[logs.files]]` entry it was found by.
    pub spec: usize,
    pub path: PathBuf,
    pub id: FileId,
    pub fingerprint: Fingerprint,
    pub file: Option<File>,
    pub phase: Phase,
    /// Next byte to read.
    pub read: u64,
    /// Where the held partial line starts.
    pub line_start: u64,
    pub partial: Vec<u8>,
    /// Pieces of the held line were already emitted (it is over the limit).
    split: bool,
    /// Everything before this offset reached the server.
    pub committed: u64,
    /// End of the last line queued: once committed reaches it, nothing of
    /// this file is in flight.
    pub queued: u64,
    /// Size when the fingerprint was last checked.
    checked_size: Option<u64>,
}

/// Where `bytes` may be cut, at most `max` bytes in, without splitting a
/// UTF-8 sequence (when the bytes are UTF-8 at all).
fn cut_point(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i > 0 && (bytes[i] & 0xC0) != 0x80)
        .unwrap_or(max)
}

impl Tracked {
    /// Starts tracking the open `file` (found at `path`) from `offset`, the
    /// start of a line.
    pub fn new(file: File, path: PathBuf, spec: usize, slot: u64, offset: u64) -> io::Result<Self> {
        let meta = file.metadata()?;
        let fingerprint = Fingerprint::read(&file, meta.len())?;
        Ok(Self {
            slot,
            spec,
            path,
            id: FileId::of(&meta),
            fingerprint,
            file: Some(file),
            phase: Phase::Active,
            read: offset,
            line_start: offset,
            partial: Vec::new(),
            split: false,
            committed: offset,
            queued: offset,
            checked_size: Some(meta.len()),
        })
    }

    /// Whether lines of this file are still waiting for the server.
    pub fn in_flight(&self) -> bool {
        self.committed < self.queued
    }

    /// The file's size and whether it was truncated or its start rewritten
    /// (copytruncate) since the last look.
    pub fn check(&mut self) -> io::Result<(u64, bool)> {
        let Some(file) = &self.file else {
            return Ok((self.read, false));
        };
        let size = file.metadata()?.len();
        if size < self.read {
            return Ok((size, true));
        }
        if self.checked_size != Some(size) {
            if !self.fingerprint.matches(file, size)? {
                return Ok((size, true));
            }
            if self.fingerprint.len < FINGERPRINT_BYTES && size > self.fingerprint.len {
                self.fingerprint = Fingerprint::read(file, size)?;
            }
            self.checked_size = Some(size);
        }
        Ok((size, false))
    }

    /// Reads from the current offset up to `size` with `buf`, handing
    /// complete lines to `sink`, while `room()` says the backlog can take
    /// more. A line longer than `max_line` is handed over in pieces; an
    /// incomplete last line is held. Returns the bytes read.
    pub fn read_lines(
        &mut self,
        size: u64,
        buf: &mut [u8],
        max_line: usize,
        room: impl Fn() -> bool,
        sink: &mut impl LineSink,
    ) -> io::Result<u64> {
        let start = self.read;
        while self.read < size && room() {
            let Some(file) = &self.file else { break };
            let want = buf.len().min((size - self.read) as usize);
            let n = file.read_at(&mut buf[..want], self.read)?;
            if n == 0 {
                break;
            }
            let base = self.read;
            let chunk = &buf[..n];
            let mut pos = 0;
            for nl in memchr::memchr_iter(b'\n', chunk) {
                let end = base + nl as u64 + 1;
                if self.partial.is_empty() && nl - pos <= max_line {
                    let fate = sink.line(&chunk[pos..nl], end, false);
                    self.note(fate, end);
                } else {
                    self.partial.extend_from_slice(&chunk[pos..nl]);
                    self.finish_line(end, max_line, sink);
                }
                self.line_start = end;
                pos = nl + 1;
                if !room() {
                    // The rest of the chunk is read again when there is room.
                    self.read = end;
                    return Ok(self.read - start);
                }
            }
            self.partial.extend_from_slice(&chunk[pos..]);
            self.read = base + n as u64;
            self.emit_pieces(max_line, sink);
        }
        Ok(self.read - start)
    }

    /// The held line ends at `end`: emit it, in pieces if it is too long.
    fn finish_line(&mut self, end: u64, max_line: usize, sink: &mut impl LineSink) {
        self.emit_pieces(max_line, sink);
        let line = std::mem::take(&mut self.partial);
        let fate = sink.line(&line, end, self.split);
        self.note(fate, end);
        self.split = false;
        self.partial = line;
        self.partial.clear();
    }

    /// Emits leading pieces of the held line while it is over the limit.
    fn emit_pieces(&mut self, max_line: usize, sink: &mut impl LineSink) {
        while self.partial.len() > max_line {
            let cut = cut_point(&self.partial, max_line);
            let end = self.line_start + cut as u64;
            let fate = sink.line(&self.partial[..cut], end, true);
            self.note(fate, end);
            self.partial.drain(..cut);
            self.line_start = end;
            self.split = true;
        }
    }

    /// Emits the held partial line as complete: the file will not grow any
    /// more (it was rotated away and is being closed, or truncated).
    pub fn flush_partial(&mut self, sink: &mut impl LineSink) {
        if self.partial.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.partial);
        let end = self.line_start + line.len() as u64;
        let fate = sink.line(&line, end, self.split);
        self.note(fate, end);
        self.line_start = end;
        self.split = false;
    }

    fn note(&mut self, fate: Fate, end: u64) {
        match fate {
            Fate::Queued => self.queued = end,
            // Nothing before it is in flight: it can count as committed now.
            Fate::Skipped if !self.in_flight() => {
                self.queued = end;
                self.committed = end;
            }
            Fate::Skipped => {}
        }
    }

    /// Reads the file again from its start, as a new slot: it was truncated.
    pub fn restart(&mut self, slot: u64) -> io::Result<()> {
        let size = match &self.file {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        self.fingerprint = match &self.file {
            Some(f) => Fingerprint::read(f, size)?,
            None => Fingerprint::of(b""),
        };
        self.slot = slot;
        self.read = 0;
        self.line_start = 0;
        self.partial.clear();
        self.split = false;
        self.committed = 0;
        self.queued = 0;
        self.checked_size = Some(size);
        Ok(())
    }

    /// Continues this slot in `file` (a copy of its content, found at `path`)
    /// from the start of the held line.
    pub fn continue_in(&mut self, file: File, path: PathBuf) -> io::Result<()> {
        let meta = file.metadata()?;
        self.id = FileId::of(&meta);
        self.path = path;
        self.file = Some(file);
        self.read = self.line_start;
        self.partial.clear();
        self.checked_size = Some(meta.len());
        self.phase = Phase::Draining {
            last_growth: Instant::now(),
        };
        Ok(())
    }

    /// A copy of the tracking state without the file handle (the original
    /// keeps it).
    pub fn detached(&self) -> Self {
        Self {
            slot: self.slot,
            spec: self.spec,
            path: self.path.clone(),
            id: self.id,
            fingerprint: self.fingerprint,
            file: None,
            phase: Phase::Done,
            read: self.read,
            line_start: self.line_start,
            partial: self.partial.clone(),
            split: self.split,
            committed: self.committed,
            queued: self.queued,
            checked_size: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Collects lines as (text, end, piece).
    fn collect(out: &mut Vec<(String, u64, bool)>) -> impl FnMut(&[u8], u64, bool) -> Fate + '_ {
        |b: &[u8], end, piece| {
            out.push((String::from_utf8_lossy(b).into_owned(), end, piece));
            Fate::Queued
        }
    }

    fn tracked(dir: &tempfile::TempDir, content: &[u8]) -> (PathBuf, Tracked) {
        let path = dir.path().join("a.log");
        std::fs::write(&path, content).unwrap();
        let t = Tracked::new(File::open(&path).unwrap(), path.clone(), 0, 1, 0).unwrap();
        (path, t)
    }

    fn read_all(t: &mut Tracked, max: usize, out: &mut Vec<(String, u64, bool)>) {
        let (size, truncated) = t.check().unwrap();
        assert!(!truncated);
        let mut buf = vec![0; 7]; // small, to cut lines across reads
        t.read_lines(size, &mut buf, max, || true, &mut collect(out))
            .unwrap();
    }

    #[test]
    fn partial_line_is_held_until_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut t) = tracked(&dir, b"one\ntw");
        let mut out = Vec::new();
        read_all(&mut t, 100, &mut out);
        assert_eq!(out, [("one".into(), 4, false)]);
        assert_eq!((t.read, t.line_start), (6, 4));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"o\nthree\n").unwrap();
        read_all(&mut t, 100, &mut out);
        assert_eq!(
            out[1..],
            [("two".into(), 8, false), ("three".into(), 14, false)]
        );
        assert!(t.partial.is_empty());
    }

    #[test]
    fn long_lines_are_split_into_marked_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(25);
        let (_, mut t) = tracked(&dir, format!("{long}\nshort\n").as_bytes());
        let mut out = Vec::new();
        read_all(&mut t, 10, &mut out);
        let texts: Vec<(&str, u64, bool)> =
            out.iter().map(|(s, e, p)| (s.as_str(), *e, *p)).collect();
        assert_eq!(
            texts,
            [
                ("xxxxxxxxxx", 10, true),
                ("xxxxxxxxxx", 20, true),
                ("xxxxx", 26, true),
                ("short", 32, false)
            ]
        );
    }

    #[test]
    fn a_split_never_cuts_a_character() {
        let text = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        for max in 1..text.len() {
            let cut = cut_point(text, max);
            assert!(cut <= max && cut > 0, "max {max}: {cut}");
            if max >= 4 {
                assert!(std::str::from_utf8(&text[..cut]).is_ok(), "max {max}");
            }
        }
    }

    #[test]
    fn truncation_and_rewritten_start_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut t) = tracked(&dir, b"first line\nsecond line\n");
        let mut out = Vec::new();
        read_all(&mut t, 100, &mut out);
        std::fs::write(&path, b"new\n").unwrap();
        assert!(t.check().unwrap().1, "shrunk below the offset");
        t.restart(2).unwrap();
        read_all(&mut t, 100, &mut out);
        assert_eq!(out.last().unwrap(), &("new".into(), 4, false));
        // Rewritten past our offset before we looked: the start differs.
        std::fs::write(&path, b"NEW CONTENT, longer than before\n").unwrap();
        assert!(t.check().unwrap().1);
    }

    #[test]
    fn skipped_lines_commit_when_nothing_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut t) = tracked(&dir, b"keep\ndrop\n");
        let (size, _) = t.check().unwrap();
        let mut buf = vec![0; 64];
        let mut sink = |b: &[u8], _end, _piece| {
            if b == b"keep" {
                Fate::Queued
            } else {
                Fate::Skipped
            }
        };
        t.read_lines(size, &mut buf, 100, || true, &mut sink)
            .unwrap();
        assert_eq!((t.committed, t.queued), (0, 5), "keep is in flight");
        t.committed = 5; // acknowledged
        let mut skip_all = |_: &[u8], _end, _piece| Fate::Skipped;
        t.flush_partial(&mut skip_all);
        t.read = 5;
        t.line_start = 5;
        t.read_lines(size, &mut buf, 100, || true, &mut skip_all)
            .unwrap();
        assert_eq!((t.committed, t.queued), (10, 10));
    }
}
