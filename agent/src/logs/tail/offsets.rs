//! How a tailed file is recognised and where reading resumes: its
//! (device, inode), a fingerprint of its first bytes (an inode number is
//! recycled once a file is deleted; the content it starts with is not), and
//! the committed offset, kept in `log-offsets.json` in the state directory.

use crate::state::{StateDir, StateError};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

/// Name of the offsets file in the state directory.
pub const OFFSETS_FILE: &str = "log-offsets.json";
/// Bytes of a file's start that identify it.
pub const FINGERPRINT_BYTES: u64 = 256;

/// A file as the kernel knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// FNV-1a of a file's first `len` bytes (at most [`FINGERPRINT_BYTES`]; fewer
/// while the file is shorter). Stable across agent versions, unlike std's
/// hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u64,
    pub hash: u64,
}

impl Fingerprint {
    pub fn of(bytes: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            len: bytes.len() as u64,
            hash,
        }
    }

    /// The fingerprint of `file`, whose size is `size`.
    pub fn read(file: &File, size: u64) -> io::Result<Self> {
        let len = size.min(FINGERPRINT_BYTES);
        Ok(Self::of(&read_prefix(file, len)?))
    }

    /// Whether `file` (of `size` bytes) starts with the bytes this
    /// fingerprint was taken of.
    pub fn matches(&self, file: &File, size: u64) -> io::Result<bool> {
        if size < self.len {
            return Ok(false);
        }
        Ok(Self::of(&read_prefix(file, self.len)?) == *self)
    }
}

fn read_prefix(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// One file's entry in the offsets file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    /// Where it was last seen (rotated files are searched for beside it).
    pub path: PathBuf,
    /// The `[[logs.files]]` path (glob) it was read for.
    pub pattern: String,
    pub id: FileId,
    pub fingerprint: Fingerprint,
    /// Everything before this offset reached the server.
    pub offset: u64,
}

#[derive(Serialize, Deserialize)]
struct OffsetsFile {
    version: u32,
    files: Vec<SavedFile>,
    /// The spool position these offsets cover: the lines of every spooled
    /// batch up to it are before the offsets; the lines of later batches
    /// are read again from the files after a crash (docs/agent-spool.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spooled_through: Option<u64>,
}

/// Reads and writes `log-offsets.json`.
#[derive(Debug, Clone)]
pub struct OffsetStore {
    state: StateDir,
}

impl OffsetStore {
    pub fn new(state: StateDir) -> Self {
        Self { state }
    }

    pub fn path(&self) -> PathBuf {
        self.state.path().join(OFFSETS_FILE)
    }

    /// The saved entries; none when the file does not exist yet.
    pub fn load(&self) -> Result<Vec<SavedFile>, StateError> {
        self.load_all().map(|(files, _)| files)
    }

    /// The saved entries and the spool position they cover (0: none).
    pub fn load_all(&self) -> Result<(Vec<SavedFile>, u64), StateError> {
        let Some(bytes) = self.state.read(OFFSETS_FILE)? else {
            return Ok((Vec::new(), 0));
        };
        serde_json::from_slice::<OffsetsFile>(&bytes)
            .map(|f| (f.files, f.spooled_through.unwrap_or(0)))
            .map_err(|source| StateError::Corrupt {
                path: self.path(),
                source,
            })
    }

    /// Replaces the saved entries, atomically and durably.
    pub fn save(&self, files: &[SavedFile]) -> Result<(), StateError> {
        self.save_through(files, None)
    }

    /// Replaces the saved entries and the spool position they cover,
    /// atomically and durably.
    pub fn save_through(
        &self,
        files: &[SavedFile],
        through: Option<u64>,
    ) -> Result<(), StateError> {
        let body = serde_json::to_vec(&OffsetsFile {
            version: 1,
            files: files.to_vec(),
            spooled_through: through,
        })
        .map_err(|e| StateError::Write {
            path: self.path(),
            source: io::Error::other(e),
        })?;
        self.state.write_atomic(OFFSETS_FILE, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_of_the_prefix_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello world\n").unwrap();
        let f = File::open(&path).unwrap();
        let fp = Fingerprint::read(&f, 12).unwrap();
        assert_eq!(fp, Fingerprint::of(b"hello world\n"));
        // FNV-1a 64 of "a", a published test vector.
        assert_eq!(Fingerprint::of(b"a").hash, 0xaf63_dc4c_8601_ec8c);
        std::fs::write(&path, "hello world\nmore lines\n").unwrap();
        assert!(fp.matches(&f, 23).unwrap(), "growing keeps the prefix");
        std::fs::write(&path, "other\n").unwrap();
        assert!(!fp.matches(&f, 6).unwrap());
    }

    #[test]
    fn offsets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::new(StateDir::open(dir.path()).unwrap());
        assert!(store.load().unwrap().is_empty());
        let entry = SavedFile {
            path: "/var/log/a.log".into(),
            pattern: "/var/log/*.log".into(),
            id: FileId { dev: 1, ino: 2 },
            fingerprint: Fingerprint::of(b"x"),
            offset: 42,
        };
        store.save(std::slice::from_ref(&entry)).unwrap();
        assert_eq!(store.load().unwrap(), [entry]);
        std::fs::write(store.path(), "{").unwrap();
        assert!(store.load().is_err());
    }
}
