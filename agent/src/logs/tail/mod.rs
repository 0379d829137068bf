//! File tailing: `[[logs.files]]` globs, read as they grow, through rotation
//! and restarts, with no line lost or shipped twice.
//!
//! One thread polls every `logs.poll_interval`:
//! - applies the offsets the server acknowledged (from the [`LogBook`]) and
//!   writes them to `log-offsets.json` (atomic, fsynced);
//! - expands the globs: a file not seen before is read from its start; a
//!   tracked file no longer matched was rotated by rename (or deleted) and is
//!   read to its end, then closed;
//! - checks each open file for truncation (copytruncate): its size below the
//!   read offset, or its first bytes changed. The lines written between the
//!   last read and the copy are read from the copy when it sits in the same
//!   directory (recognised by its first bytes); the file is then read again
//!   from its start;
//! - reads new lines while the backlog has room (backpressure: lines wait on
//!   disk, nothing is dropped).
//!
//! At start the saved entries are matched to files again: by path and
//! (device, inode) and fingerprint; a file rotated while the agent was down is
//! found in the same directory by inode (rename) or fingerprint (copy).
//! See `docs/agent-logs.md` for the operator's view.

pub mod file;
pub mod offsets;

use super::backlog::{LogBook, Origin};
use super::filter::{Filter, FilterCell};
use chrono::{DateTime, FixedOffset, Utc};
use file::{Fate, Phase, Tracked};
use metrolog_protocol::syslog::{parse_file_line_with, ParseOptions};
use offsets::{FileId, Fingerprint, OffsetStore, SavedFile};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A rotated file is closed once it has not grown for this long.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Offsets advanced without an acknowledgement (filtered lines) are written
/// at most this often.
const LAZY_SAVE: Duration = Duration::from_secs(10);
/// Bytes read per system call.
const READ_BUFFER: usize = 128 * 1024;

/// One `[[logs.files]]` entry, resolved.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub pattern: String,
    pub app: Option<String>,
    /// Offset of timestamps written without one.
    pub zone: FixedOffset,
}

/// The tailer's state (driven by [`spawn`] in production, by tests directly).
pub struct Tailer {
    /// The configured entries, then (from `live` on) entries no longer
    /// configured that files awaiting acknowledgement still refer to.
    specs: Vec<FileSpec>,
    live: usize,
    max_line: usize,
    store: OffsetStore,
    book: Arc<LogBook>,
    filter: Arc<FilterCell>,
    files: Vec<Tracked>,
    next_slot: u64,
    buf: Vec<u8>,
    /// Acknowledged offsets not yet written.
    commit_dirty: bool,
    /// Offsets advanced over filtered lines, not yet written.
    lazy_dirty: bool,
    /// The spool position the committed offsets cover (saved with them).
    spooled_through: Option<u64>,
    last_save: Instant,
    drain_grace: Duration,
    /// Whether the last round stopped reading because the backlog was full.
    paused: bool,
    /// Whether a pause was logged (the first is; later ones at debug level).
    pause_logged: bool,
}

/// What the tailer does with a line: parse, filter, queue.
struct Emit<'a> {
    spec: &'a FileSpec,
    book: &'a LogBook,
    filter: &'a Filter,
    max_line: usize,
    now: DateTime<Utc>,
    slot: u64,
}

impl Emit<'_> {
    fn line(&self, bytes: &[u8], end: u64, piece: bool) -> Fate {
        if bytes.is_empty() || bytes == b"\r" {
            return Fate::Skipped;
        }
        let opts = ParseOptions {
            received_at: self.now,
            max_line_bytes: self.max_line,
            zone: self.spec.zone,
            default_app: self.spec.app.as_deref(),
        };
        let mut rec = parse_file_line_with(bytes, &opts);
        rec.truncated |= piece;
        if !self.filter.keep(&rec) {
            self.book
                .stats
                .filtered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Fate::Skipped;
        }
        self.book.push(
            rec,
            Some(Origin {
                slot: self.slot,
                end,
            }),
        );
        Fate::Queued
    }
}

/// Opens `path` if it is a regular file.
fn open_regular(path: &Path) -> Option<File> {
    let f = File::open(path).ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

impl Tailer {
    pub fn new(
        specs: Vec<FileSpec>,
        max_line: usize,
        store: OffsetStore,
        book: Arc<LogBook>,
        filter: Arc<FilterCell>,
    ) -> Self {
        Self {
            live: specs.len(),
            specs,
            max_line,
            store,
            book,
            filter,
            files: Vec::new(),
            next_slot: 1,
            buf: vec![0; READ_BUFFER],
            commit_dirty: false,
            lazy_dirty: false,
            spooled_through: None,
            last_save: Instant::now(),
            drain_grace: DRAIN_GRACE,
            paused: false,
            pause_logged: false,
        }
    }

    /// How long a rotated file must stay still before it is closed
    /// ([`DRAIN_GRACE`] by default).
    pub fn set_drain_grace(&mut self, grace: Duration) {
        self.drain_grace = grace;
    }

    fn slot(&mut self) -> u64 {
        self.next_slot += 1;
        self.next_slot
    }

    /// Regular files matched by the globs now: id → (path, spec).
    fn scan(&self) -> HashMap<FileId, (PathBuf, usize)> {
        let mut seen = HashMap::new();
        for (i, spec) in self.specs[..self.live].iter().enumerate() {
            let Ok(paths) = glob::glob(&spec.pattern) else {
                continue;
            };
            for path in paths.flatten() {
                if let Ok(meta) = std::fs::metadata(&path) {
                    if meta.is_file() {
                        seen.entry(FileId::of(&meta)).or_insert((path, i));
                    }
                }
            }
        }
        seen
    }

    /// Matches the saved offsets to files again (see the module docs).
    pub fn restore(&mut self) {
        let saved = match self.store.load_all() {
            Ok((s, through)) => {
                self.spooled_through = (through > 0).then_some(through);
                s
            }
            Err(e) => {
                tracing::error!("{e}; tailed files are read again from their start");
                Vec::new()
            }
        };
        let seen = self.scan();
        let mut claimed = HashSet::new();
        for entry in saved {
            let Some(spec) = self.specs[..self.live]
                .iter()
                .position(|s| s.pattern == entry.pattern)
            else {
                continue; // no longer configured
            };
            match self.locate(&entry, &seen, &claimed) {
                Some((file, path)) => {
                    let slot = self.slot();
                    match Tracked::new(file, path, spec, slot, entry.offset) {
                        Ok(mut t) => {
                            if !seen.contains_key(&t.id) {
                                t.phase = Phase::Draining {
                                    last_growth: Instant::now(),
                                };
                            }
                            tracing::info!(
                                "resuming {} at byte {}",
                                t.path.display(),
                                entry.offset
                            );
                            claimed.insert(t.id);
                            self.files.push(t);
                        }
                        Err(e) => tracing::warn!("cannot resume {}: {e}", entry.path.display()),
                    }
                }
                None => tracing::info!(
                    "{} is gone or was replaced; forgetting its offset",
                    entry.path.display()
                ),
            }
        }
        for (id, (path, spec)) in seen {
            if !claimed.contains(&id) {
                self.track_new(path, spec);
            }
        }
        self.commit_dirty = true;
    }

    /// Finds the file a saved entry was read from: at its path or by its
    /// glob (same inode, same first bytes), else in its directory under
    /// another name (rotated by rename: same inode; by copy: same first bytes
    /// and long enough).
    fn locate(
        &self,
        entry: &SavedFile,
        seen: &HashMap<FileId, (PathBuf, usize)>,
        claimed: &HashSet<FileId>,
    ) -> Option<(File, PathBuf)> {
        let verify = |path: &Path, same_inode: bool| -> Option<File> {
            let f = open_regular(path)?;
            let meta = f.metadata().ok()?;
            let id = FileId::of(&meta);
            if claimed.contains(&id) || (same_inode && id != entry.id) {
                return None;
            }
            if !same_inode && (meta.len() < entry.offset || entry.fingerprint.len == 0) {
                return None;
            }
            entry.fingerprint.matches(&f, meta.len()).ok()?.then_some(f)
        };
        if let Some((path, _)) = seen.get(&entry.id) {
            if let Some(f) = verify(path, true) {
                return Some((f, path.clone()));
            }
        }
        if let Some(f) = verify(&entry.path, true) {
            return Some((f, entry.path.clone()));
        }
        let dir = entry.path.parent()?;
        let mut copy: Option<(std::time::SystemTime, PathBuf)> = None;
        for dent in std::fs::read_dir(dir).ok()?.flatten() {
            let path = dent.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if FileId::of(&meta) == entry.id {
                if let Some(f) = verify(&path, true) {
                    return Some((f, path));
                }
            } else if !seen.contains_key(&FileId::of(&meta)) && verify(&path, false).is_some() {
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                if copy.as_ref().is_none_or(|(t, _)| mtime > *t) {
                    copy = Some((mtime, path));
                }
            }
        }
        let (_, path) = copy?;
        verify(&path, false).map(|f| (f, path))
    }

    fn track_new(&mut self, path: PathBuf, spec: usize) {
        let Some(file) = open_regular(&path) else {
            return;
        };
        let slot = self.slot();
        match Tracked::new(file, path.clone(), spec, slot, 0) {
            Ok(t) => {
                tracing::info!("tailing {}", t.path.display());
                self.files.push(t);
            }
            Err(e) => tracing::warn!("cannot tail {}: {e}", path.display()),
        }
    }

    /// One round (see the module docs). With `read` false only the
    /// acknowledgements are applied and saved (while shutting down).
    pub fn poll(&mut self, read: bool) {
        self.apply_acks();
        if read {
            self.follow_globs();
            self.read_files();
        }
        let lazy_due = self.lazy_dirty && self.last_save.elapsed() >= LAZY_SAVE;
        if self.commit_dirty || lazy_due {
            self.save();
        }
    }

    fn apply_acks(&mut self) {
        let (acked, through) = self.book.take_commit();
        if let Some(t) = through {
            self.spooled_through = Some(self.spooled_through.map_or(t, |s| s.max(t)));
            self.commit_dirty = true;
        }
        if acked.is_empty() {
            return;
        }
        for t in &mut self.files {
            if let Some(end) = acked.get(&t.slot) {
                t.committed = t.committed.max(*end);
            }
        }
        self.files
            .retain(|t| t.phase != Phase::Done || t.in_flight());
        self.commit_dirty = true;
    }

    fn follow_globs(&mut self) {
        let mut seen = self.scan();
        for t in &mut self.files {
            if t.file.is_none() {
                continue;
            }
            match seen.remove(&t.id) {
                Some((path, _)) => {
                    t.path = path;
                    t.phase = Phase::Active;
                }
                None if t.phase == Phase::Active => {
                    tracing::debug!("{} was rotated or removed", t.path.display());
                    t.phase = Phase::Draining {
                        last_growth: Instant::now(),
                    };
                }
                None => {}
            }
        }
        for (_, (path, spec)) in seen {
            self.track_new(path, spec);
        }
    }

    fn read_files(&mut self) {
        let now = Utc::now();
        let mut full = false;
        let mut i = 0;
        while i < self.files.len() {
            if self.files[i].file.is_some() {
                match self.read_one(i, now) {
                    Ok(left_unread) => full |= left_unread,
                    Err(e) => {
                        let t = &mut self.files[i];
                        tracing::warn!("reading {}: {e}; closing it", t.path.display());
                        t.file = None;
                        t.phase = Phase::Done;
                    }
                }
            }
            i += 1;
        }
        self.files
            .retain(|t| t.phase != Phase::Done || t.in_flight());
        self.note_pause(full && !self.book.has_room());
    }

    /// Counts each round that stopped reading for want of room in the
    /// backlog, and logs when reading pauses (the first time; later at
    /// debug level).
    fn note_pause(&mut self, paused: bool) {
        if paused {
            self.book
                .stats
                .paused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if paused && !self.paused {
            let (_, pending, in_flight) = self.book.sizes();
            let msg = format!(
                "log backlog full ({} bytes read but not yet acknowledged, logs.max_backlog_bytes): tailing paused, lines wait in their files (counted in agent.logs.paused)",
                pending + in_flight
            );
            if self.pause_logged {
                tracing::debug!("{msg}");
            } else {
                tracing::warn!("{msg}");
                self.pause_logged = true;
            }
        } else if !paused && self.paused {
            tracing::debug!("log backlog has room again: tailing resumed");
        }
        self.paused = paused;
    }

    /// Reads file `i`; returns whether bytes were left unread (the backlog
    /// had no more room).
    fn read_one(&mut self, i: usize, now: DateTime<Utc>) -> std::io::Result<bool> {
        let (size, truncated) = self.files[i].check()?;
        if truncated {
            self.on_truncated(i, now)?;
        }
        let filter = self.filter.get();
        let t = &mut self.files[i];
        let emit = Emit {
            spec: &self.specs[t.spec],
            book: &self.book,
            filter: &filter,
            max_line: self.max_line,
            now,
            slot: t.slot,
        };
        let size = if truncated { t.check()?.0 } else { size };
        let mut sink = |b: &[u8], end: u64, piece: bool| emit.line(b, end, piece);
        let book = &self.book;
        let committed = t.committed;
        let n = t.read_lines(
            size,
            &mut self.buf,
            self.max_line,
            || book.has_room(),
            &mut sink,
        )?;
        // Offsets advanced over skipped lines (no acknowledgement) are saved lazily.
        self.lazy_dirty |= t.committed != committed;
        if let Phase::Draining { last_growth } = t.phase {
            if n > 0 {
                t.phase = Phase::Draining {
                    last_growth: Instant::now(),
                };
            } else if t.read >= size && last_growth.elapsed() >= self.drain_grace {
                t.flush_partial(&mut sink);
                tracing::debug!("finished rotated {}", t.path.display());
                t.file = None;
                t.phase = Phase::Done;
            }
        }
        Ok(t.file.is_some() && t.read < size)
    }

    /// File `i` was truncated or rewritten: its old content continues in a
    /// copy when one is found beside it, else what was held is emitted; the
    /// file itself is read again from its start as a new slot.
    fn on_truncated(&mut self, i: usize, now: DateTime<Utc>) -> std::io::Result<()> {
        let open: HashSet<FileId> = self
            .files
            .iter()
            .filter(|t| t.file.is_some())
            .map(|t| t.id)
            .collect();
        let t = &self.files[i];
        let copy = find_copy(&t.path, &t.fingerprint, t.line_start, &open);
        let mut old = t.detached();
        match copy {
            Some((file, path)) => {
                tracing::info!(
                    "{} was truncated; reading its last lines from {}",
                    t.path.display(),
                    path.display()
                );
                old.continue_in(file, path)?;
            }
            None => {
                tracing::info!(
                    "{} was truncated; reading it from its start",
                    t.path.display()
                );
                let filter = self.filter.get();
                let emit = Emit {
                    spec: &self.specs[old.spec],
                    book: &self.book,
                    filter: &filter,
                    max_line: self.max_line,
                    now,
                    slot: old.slot,
                };
                old.flush_partial(&mut |b: &[u8], end: u64, piece: bool| emit.line(b, end, piece));
            }
        }
        let slot = self.slot();
        self.files[i].restart(slot)?;
        self.files.push(old);
        self.commit_dirty = true;
        Ok(())
    }

    /// Replaces the `[[logs.files]]` entries while running (the server's
    /// settings changed), without losing or repeating a line:
    /// - a tracked file whose entry is still configured, or that another
    ///   entry's glob matches, keeps its offsets and goes on (a changed `app`
    ///   applies to its next lines);
    /// - a file no longer matched by any entry is not read further; it is
    ///   kept until its lines in flight are acknowledged, then forgotten;
    /// - files of new entries are picked up by the next poll, from their
    ///   start, as at a first start.
    pub fn reconfigure(&mut self, specs: Vec<FileSpec>) {
        let old = std::mem::replace(&mut self.specs, specs);
        self.live = self.specs.len();
        let globs: Vec<Option<glob::Pattern>> = self
            .specs
            .iter()
            .map(|s| glob::Pattern::new(&s.pattern).ok())
            .collect();
        let mut retired: HashMap<usize, usize> = HashMap::new();
        for t in &mut self.files {
            let was = &old[t.spec];
            let now = self.specs[..self.live]
                .iter()
                .position(|s| s.pattern == was.pattern)
                .or_else(|| {
                    globs
                        .iter()
                        .position(|g| g.as_ref().is_some_and(|g| g.matches_path(&t.path)))
                });
            match now {
                Some(i) => t.spec = i,
                None => {
                    if t.file.is_some() {
                        tracing::info!("no longer tailing {}", t.path.display());
                    }
                    t.file = None;
                    t.phase = Phase::Done;
                    t.spec = *retired.entry(t.spec).or_insert_with(|| {
                        self.specs.push(was.clone());
                        self.specs.len() - 1
                    });
                }
            }
        }
        self.files
            .retain(|t| t.phase != Phase::Done || t.in_flight());
        self.commit_dirty = true;
    }

    /// Writes the offsets of every tracked file.
    pub fn save(&mut self) {
        let entries: Vec<SavedFile> = self
            .files
            .iter()
            .map(|t| SavedFile {
                path: t.path.clone(),
                pattern: self.specs[t.spec].pattern.clone(),
                id: t.id,
                fingerprint: t.fingerprint,
                offset: t.committed,
            })
            .collect();
        match self.store.save_through(&entries, self.spooled_through) {
            Ok(()) => {
                self.commit_dirty = false;
                self.lazy_dirty = false;
                self.last_save = Instant::now();
            }
            Err(e) => tracing::error!("cannot save log offsets: {e}"),
        }
    }

    /// (path, read offset, committed offset) of each tracked file, for tests.
    pub fn positions(&self) -> Vec<(PathBuf, u64, u64)> {
        self.files
            .iter()
            .map(|t| (t.path.clone(), t.read, t.committed))
            .collect()
    }
}

/// A copy of a truncated file's old content beside it: same first bytes, at
/// least `min_size` long, not a file being tailed; the newest such.
fn find_copy(
    original: &Path,
    fp: &Fingerprint,
    min_size: u64,
    open: &HashSet<FileId>,
) -> Option<(File, PathBuf)> {
    if fp.len == 0 {
        return None;
    }
    let dir = original.parent()?;
    let mut best: Option<(std::time::SystemTime, File, PathBuf)> = None;
    for dent in std::fs::read_dir(dir).ok()?.flatten() {
        let path = dent.path();
        let Some(f) = open_regular(&path) else {
            continue;
        };
        let Ok(meta) = f.metadata() else { continue };
        if open.contains(&FileId::of(&meta)) || meta.len() < min_size {
            continue;
        }
        if fp.matches(&f, meta.len()).unwrap_or(false) {
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
                best = Some((mtime, f, path));
            }
        }
    }
    best.map(|(_, f, p)| (f, p))
}

/// What the agent asks of the tailer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Run,
    /// Shutting down: stop reading, keep committing acknowledgements.
    Pause,
    Stop,
}

/// The running tailer thread.
pub struct TailThread {
    control: Arc<(Mutex<Command>, Condvar)>,
    /// New `[[logs.files]]` entries, taken by the thread at its next round.
    specs: Arc<Mutex<Option<Vec<FileSpec>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the tailer on a thread of its own (file reads block).
pub fn spawn(mut tailer: Tailer, poll: Duration) -> std::io::Result<TailThread> {
    let control = Arc::new((Mutex::new(Command::Run), Condvar::new()));
    let ctl = control.clone();
    let specs: Arc<Mutex<Option<Vec<FileSpec>>>> = Arc::default();
    let new_specs = specs.clone();
    let thread = std::thread::Builder::new()
        .name("log-tailer".into())
        .spawn(move || {
            tailer.restore();
            let (lock, cv) = &*ctl;
            loop {
                let update = new_specs.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(specs) = update {
                    tailer.reconfigure(specs);
                }
                let cmd = *lock.lock().unwrap_or_else(|p| p.into_inner());
                match cmd {
                    Command::Stop => {
                        tailer.poll(false);
                        if tailer.lazy_dirty {
                            tailer.save();
                        }
                        return;
                    }
                    Command::Pause => tailer.poll(false),
                    Command::Run => tailer.poll(true),
                }
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                if *guard == cmd {
                    let _ = cv.wait_timeout(guard, poll);
                }
            }
        })?;
    Ok(TailThread {
        control,
        specs,
        thread: Some(thread),
    })
}

impl TailThread {
    fn send(&self, cmd: Command) {
        let (lock, cv) = &*self.control;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = cmd;
        cv.notify_all();
    }

    /// Replaces the `[[logs.files]]` entries (see [`Tailer::reconfigure`])
    /// within one poll interval.
    pub fn reconfigure(&self, specs: Vec<FileSpec>) {
        *self.specs.lock().unwrap_or_else(|p| p.into_inner()) = Some(specs);
        self.control.1.notify_all();
    }

    /// Stops reading files (acknowledgements are still committed).
    pub fn pause(&self) {
        self.send(Command::Pause);
    }

    /// Commits the last acknowledgements, saves and ends the thread.
    pub fn stop(mut self) {
        self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TailThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.send(Command::Stop);
        }
    }
}

#[cfg(test)]
mod tests;
