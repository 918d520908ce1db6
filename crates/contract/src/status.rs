//! A sidecar's readiness, as both sides read it. Each sidecar keeps one small JSON file,
//! [`FILE`], on its `/tmp` tmpfs: whether it serves, what it is doing when it does not,
//! and the digest of each live config file it has in force (or has refused). The host
//! reads it by running [`probe_cmd`] in the container through the engine (`bottle apply`
//! waits for it, `bottle get` shows it); nothing on a bottle's network can reach it.
//!
//! The digest both sides compare is [`file_digest`]: the host computes it over the files
//! it rewrote into a live volume, the sidecar over the bytes it loaded, so "the change
//! is in force" is one comparison, decided here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a sidecar keeps its status (its `/tmp` is a tmpfs of its own).
pub const FILE: &str = "/tmp/bottle-status.json";

/// The most a probe prints: a status is a few hundred bytes.
pub const MAX_LEN: usize = 64 << 10;

/// A sidecar's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// It serves: listening with its policy loaded, its mirrors cloned, its trap set.
    pub ready: bool,
    /// What it is doing, or waiting for, in a few words; never a secret.
    #[serde(default)]
    pub detail: String,
    /// Live config files in force: the path it reads (absolute, in the container) to
    /// the [`file_digest`] of the contents it loaded.
    #[serde(default)]
    pub loaded: BTreeMap<String, String>,
    /// Live config files whose latest contents it refused: path to the digest of those
    /// contents and why (the previous contents stay in force).
    #[serde(default)]
    pub rejected: BTreeMap<String, Rejected>,
}

/// Contents of a live config file a sidecar refused to load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// [`file_digest`] of the refused contents.
    pub digest: String,
    /// Why, as the sidecar's parser said it (no file contents).
    pub why: String,
}

impl Status {
    /// Parse what a probe printed; `None` when it is not a status.
    pub fn parse(text: &str) -> Option<Status> {
        if text.len() > MAX_LEN {
            return None;
        }
        serde_json::from_str(text.trim()).ok()
    }

    /// What `path` with contents of digest `want` has become in this sidecar.
    pub fn file(&self, path: &str, want: &str) -> FileState<'_> {
        if self.loaded.get(path).is_some_and(|d| d == want) {
            return FileState::InForce;
        }
        match self.rejected.get(path) {
            Some(r) if r.digest == want => FileState::Rejected(&r.why),
            _ => FileState::Pending,
        }
    }
}

/// Where a live config file's contents stand in one sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState<'a> {
    /// Loaded and in force.
    InForce,
    /// Refused; the text says why.
    Rejected(&'a str),
    /// Not seen yet (or the sidecar does not read this file).
    Pending,
}

/// The digest a live config file's contents are compared by: SHA-256, 16 hex digits.
pub fn file_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The command that prints a sidecar's status (exit 0 when ready), for a sidecar whose
/// `bottle` binary is at `binary`.
pub fn probe_cmd(binary: &str) -> Vec<String> {
    vec![binary.into(), "sidecar".into(), "probe".into()]
}

/// `dir` joined with a volume-relative `path`, as a sidecar sees the file.
pub fn mounted_path(dir: &str, path: &str) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_in_force_rejected_or_pending_by_digest() {
        let d = file_digest(b"allow: [a.test]");
        assert_eq!(d.len(), 16);
        let mut s = Status::default();
        assert_eq!(s.file("/c/config.json", &d), FileState::Pending);
        s.rejected.insert(
            "/c/config.json".into(),
            Rejected {
                digest: d.clone(),
                why: "parsing: expected value".into(),
            },
        );
        assert_eq!(
            s.file("/c/config.json", &d),
            FileState::Rejected("parsing: expected value")
        );
        s.loaded.insert("/c/config.json".into(), d.clone());
        assert_eq!(s.file("/c/config.json", &d), FileState::InForce);
        assert_eq!(
            s.file("/c/config.json", &file_digest(b"other")),
            FileState::Pending
        );
    }

    #[test]
    fn a_status_round_trips_and_garbage_is_none() {
        let s = Status {
            ready: true,
            detail: "serving".into(),
            ..Status::default()
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(Status::parse(&text), Some(s));
        assert_eq!(Status::parse("not json"), None);
        assert_eq!(Status::parse(&"x".repeat(MAX_LEN + 1)), None);
        assert_eq!(
            mounted_path("/etc/p/", "/config.json"),
            "/etc/p/config.json"
        );
    }
}
