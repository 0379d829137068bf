//! Credentials: password hashing, random tokens, roles, login rate limiting.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the API and dashboard.
    Viewer,
    /// Read and write.
    Admin,
    /// Only enroll new agents.
    Enroll,
    /// One agent, writing as its own host.
    Agent,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            "enroll" => Some(Role::Enroll),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
            Role::Enroll => "enroll",
            Role::Agent => "agent",
        }
    }
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `n` random bytes from the OS, URL-safe base64 without padding.
pub fn random_string(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new bearer token: 256 random bits with a recognisable prefix so that
/// leaked tokens are easy to grep for.
pub fn new_token() -> Secret {
    Secret(format!("mlg_{}", random_string(32)))
}

/// Tokens are stored as their SHA-256 only.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two secrets (CSRF tokens) without leaking through timing how
/// much of them matched: it compares their SHA-256 digests, so the time an
/// early mismatch saves says something about a digest, nothing about the
/// secret. (Bearer tokens are found by their digest's index probe, the same
/// argument.)
pub fn secrets_match(a: &str, b: &str) -> bool {
    !a.is_empty() && Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// Hashes a password with argon2id. CPU-heavy: call from `spawn_blocking`.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// Checks a password against a stored PHC string. CPU-heavy: `spawn_blocking`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Async wrappers that keep argon2 off the runtime threads.
pub async fn hash_password_async(password: String) -> String {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .expect("hashing task panicked")
}

pub async fn verify_password_async(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// Counts failed logins per (user, address) over a sliding minute. Bounded:
/// past `MAX_ENTRIES` stale entries are swept, and if all are fresh the oldest
/// half is dropped (an attacker can only make the limiter forget, not grow).
#[derive(Debug)]
pub struct LoginLimiter {
    per_minute: u32,
    entries: Mutex<HashMap<(String, String), (Instant, u32)>>,
}

const MAX_ENTRIES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

impl LoginLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether another attempt is allowed now.
    pub fn allowed(&self, user: &str, addr: &str) -> bool {
        let entries = self.entries.lock().expect("limiter poisoned");
        match entries.get(&(user.to_string(), addr.to_string())) {
            Some((start, n)) if start.elapsed() < WINDOW => *n < self.per_minute,
            _ => true,
        }
    }

    pub fn failed(&self, user: &str, addr: &str) {
        let mut entries = self.entries.lock().expect("limiter poisoned");
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<_> = entries.iter().map(|(k, (s, _))| (*s, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(MAX_ENTRIES / 2) {
                    entries.remove(&k);
                }
            }
        }
        let e = entries
            .entry((user.to_string(), addr.to_string()))
            .or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }

    pub fn succeeded(&self, user: &str, addr: &str) {
        self.entries
            .lock()
            .expect("limiter poisoned")
            .remove(&(user.to_string(), addr.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_tokens_are_long_and_distinct() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.expose().len() >= 4 + 43);
        assert_eq!(format!("{a:?}"), "[redacted]");
        assert_eq!(token_hash(a.expose()).len(), 32);
        assert!(secrets_match("abc", "abc"));
        assert!(!secrets_match("abc", "abd"));
        assert!(!secrets_match("", ""));
    }

    #[test]
    fn limiter_blocks_after_n_failures_per_user_and_address() {
        let l = LoginLimiter::new(3);
        for _ in 0..3 {
            assert!(l.allowed("admin", "1.2.3.4"));
            l.failed("admin", "1.2.3.4");
        }
        assert!(!l.allowed("admin", "1.2.3.4"));
        assert!(l.allowed("admin", "5.6.7.8"));
        l.succeeded("admin", "1.2.3.4");
        assert!(l.allowed("admin", "1.2.3.4"));
    }
}
