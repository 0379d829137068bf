//! The agent's state directory and what it keeps there: the credential obtained at
//! enrollment (`credential.json`, mode 0600, replaced atomically), the offsets
//! of tailed log files (`log-offsets.json`, see `logs::tail`) and the last
//! settings the server pushed (`server-settings.json`).

use crate::config::Secret;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Preferred state directory of an installed agent.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/metrolog-agent";
/// Fallback when the system one cannot be written (an unprivileged run).
pub const LOCAL_STATE_DIR: &str = "./metrolog-agent-state";

const CREDENTIAL_FILE: &str = "credential.json";
const SETTINGS_FILE: &str = "server-settings.json";

/// The server's settings as last received, for the agent's group. Applied at
/// the next start before the server answers: the files the server asked for
/// are tailed from the start (a restart during an outage keeps shipping them
/// to the spool), and the tailer does not forget their offsets, which it
/// would if it started without them and got them back a moment later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownSettings {
    pub group: Option<String>,
    pub settings: metrolog_protocol::AgentSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path} is not writable ({source}); pass --state-dir or set METROLOG_AGENT_STATE_DIR to a writable directory")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({source}); delete it to enroll again")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// `/var/lib/metrolog-agent` when it exists or can be created and is writable, else
/// `./metrolog-agent-state`.
pub fn default_state_dir() -> PathBuf {
    let system = PathBuf::from(SYSTEM_STATE_DIR);
    if ensure_writable(&system).is_ok() {
        system
    } else {
        PathBuf::from(LOCAL_STATE_DIR)
    }
}

/// Creates `dir` if needed and proves it writable by writing a probe file.
pub fn ensure_writable(dir: &Path) -> Result<(), StateError> {
    let err = |source| StateError::NotWritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// What enrollment gave this agent.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credential {
    pub host_id: i64,
    pub agent_token: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("host_id", &self.host_id)
            .field("agent_token", &Secret::new(""))
            .finish()
    }
}

/// The state directory (already proven writable).
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        ensure_writable(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn credential_path(&self) -> PathBuf {
        self.dir.join(CREDENTIAL_FILE)
    }

    /// The stored credential, `None` when there is none yet.
    pub fn load_credential(&self) -> Result<Option<Credential>, StateError> {
        let path = self.credential_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Stores `cred` (mode 0600) so that a crash at any point leaves either the
    /// old file or the new one.
    pub fn store_credential(&self, cred: &Credential) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(cred).map_err(|e| StateError::Write {
            path: self.credential_path(),
            source: std::io::Error::other(e),
        })?;
        self.write_atomic(CREDENTIAL_FILE, &body)
    }

    /// Replaces `name` in the state directory with `body` (mode 0600), atomically
    /// and durably: write a temp file, fsync it, rename it over, fsync the dir.
    pub fn write_atomic(&self, name: &str, body: &[u8]) -> Result<(), StateError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let werr = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Write { path: p, source }
        };
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(werr(&tmp))?;
        f.write_all(body).map_err(werr(&tmp))?;
        f.sync_all().map_err(werr(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(werr(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr(&self.dir))?;
        Ok(())
    }

    /// The content of `name` in the state directory, `None` when absent.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// The server's last settings when they were for `group`; `None` when
    /// there are none, they are unreadable (logged) or for another group.
    pub fn load_settings(&self, group: Option<&str>) -> Option<metrolog_protocol::AgentSettings> {
        let bytes = match self.read(SETTINGS_FILE) {
            Ok(b) => b?,
            Err(e) => {
                tracing::warn!("{e}; waiting for the server's settings");
                return None;
            }
        };
        match serde_json::from_slice::<KnownSettings>(&bytes) {
            Ok(k) if k.group.as_deref() == group => Some(k.settings),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(
                    "{} is unreadable ({e}); waiting for the server's settings",
                    self.dir.join(SETTINGS_FILE).display()
                );
                None
            }
        }
    }

    /// Keeps the server's settings for the next start.
    pub fn store_settings(&self, known: &KnownSettings) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(known).map_err(|e| StateError::Write {
            path: self.dir.join(SETTINGS_FILE),
            source: std::io::Error::other(e),
        })?;
        self.write_atomic(SETTINGS_FILE, &body)
    }

    /// Forgets the credential (the server no longer knows it).
    pub fn remove_credential(&self) -> Result<(), StateError> {
        let path = self.credential_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credential_round_trip_private_and_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("nested/state")).unwrap();
        assert!(state.load_credential().unwrap().is_none());
        let cred = Credential {
            host_id: 7,
            agent_token: "s3cret".into(),
        };
        state.store_credential(&cred).unwrap();
        state.store_credential(&cred).unwrap();
        let back = state.load_credential().unwrap().unwrap();
        assert_eq!((back.host_id, back.agent_token.as_str()), (7, "s3cret"));
        let mode = std::fs::metadata(state.credential_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["credential.json"], "no temp or probe files left");
        assert!(!format!("{back:?}").contains("s3cret"));
        state.remove_credential().unwrap();
        assert!(state.load_credential().unwrap().is_none());
    }

    #[test]
    fn server_settings_are_kept_per_group() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        assert_eq!(state.load_settings(Some("web")), None);
        let settings = metrolog_protocol::AgentSettings {
            ship_interval_ms: Some(5000),
            ..Default::default()
        };
        state
            .store_settings(&KnownSettings {
                group: Some("web".into()),
                settings: settings.clone(),
            })
            .unwrap();
        assert_eq!(state.load_settings(Some("web")), Some(settings));
        assert_eq!(state.load_settings(Some("db")), None, "another group's");
        assert_eq!(state.load_settings(None), None);
        std::fs::write(tmp.path().join(SETTINGS_FILE), "{").unwrap();
        assert_eq!(state.load_settings(Some("web")), None);
    }

    #[test]
    fn unwritable_state_dir_is_one_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = StateDir::open(&file.join("state")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not writable") && text.contains("--state-dir"),
            "{text}"
        );
    }

    #[test]
    fn corrupt_credential_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("credential.json"), "{").unwrap();
        assert!(state
            .load_credential()
            .unwrap_err()
            .to_string()
            .contains("delete it"));
    }
}
