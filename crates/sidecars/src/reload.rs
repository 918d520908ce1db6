//! Reload without restart, for every sidecar whose config lives in a volume the
//! reconciler rewrites in place (pipelock's policy, egress's view of the allowlist,
//! supervise's view of the manifest): a [`Watcher`] polls one file (about once a second)
//! and, when its contents change, hands them to the sidecar's `apply`, which parses them
//! and swaps its state atomically. Work in flight is not cut. Contents that do not parse
//! or apply leave the last good state in force and are logged; a file missing for a
//! moment (being rewritten) changes nothing.
//!
//! Polling, not inotify: a Docker volume is changed from outside the container's mount
//! namespace, and a poll of one small file costs nothing. The host does not wait for the
//! poll: after a rewrite it sends SIGHUP through the engine, which makes every watcher
//! look at once, and waits until the sidecar's status reports the new contents' digest
//! as loaded (`crate::status`, `bottle_contract::status`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How often the file is looked at.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What one look at the file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Reloaded,
    /// The file changed but could not be used; the message says why.
    Rejected(String),
}

/// Turns the file's new contents into the sidecar's new state, or says why not.
pub type Apply = Box<dyn FnMut(&[u8]) -> Result<(), String> + Send>;

/// Watches one file for one sidecar.
pub struct Watcher {
    /// What the file is, for the log (`pipelock configuration`).
    what: &'static str,
    path: PathBuf,
    apply: Apply,
    /// Digest of the contents in force (or last rejected, so it is not retried).
    seen: Option<[u8; 32]>,
}

impl Watcher {
    /// `path` holds what the sidecar's state was built from. The first look applies
    /// the file whatever it holds: it may have changed since the sidecar read it, and
    /// applying the same contents again changes nothing.
    pub fn new(what: &'static str, path: impl Into<PathBuf>, apply: Apply) -> Watcher {
        Watcher {
            what,
            path: path.into(),
            apply,
            seen: None,
        }
    }

    /// A watch whose file is JSON: `apply` gets it parsed as `T`.
    pub fn json<T: serde::de::DeserializeOwned>(
        what: &'static str,
        path: impl Into<PathBuf>,
        mut apply: impl FnMut(T) -> Result<(), String> + Send + 'static,
    ) -> Watcher {
        Watcher::new(
            what,
            path,
            Box::new(move |bytes| {
                apply(serde_json::from_slice(bytes).map_err(|e| format!("parsing: {e}"))?)
            }),
        )
    }

    /// Look at the file once; apply its contents when they changed.
    pub fn check(&mut self) -> Outcome {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return Outcome::Unchanged;
        };
        let d = digest(&bytes);
        if self.seen == Some(d) {
            return Outcome::Unchanged;
        }
        self.seen = Some(d);
        match (self.apply)(&bytes) {
            Ok(()) => {
                crate::status::loaded(&self.path, &bytes);
                Outcome::Reloaded
            }
            Err(e) => {
                crate::status::rejected(&self.path, &bytes, &e);
                Outcome::Rejected(e)
            }
        }
    }

    /// Poll every `every` forever, and at once on each nudge (SIGHUP, see
    /// [`crate::status::listen_for_nudges`]), logging each reload or rejection.
    pub async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nudged = crate::status::nudged();
        let mut first = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Ok(()) = nudged.changed() => {}
            }
            let outcome = self.check();
            match outcome {
                Outcome::Unchanged => {}
                // The first look re-applies what the sidecar started from, as a rule.
                Outcome::Reloaded if first => {
                    tracing::debug!(path = %self.path.display(), "{} applied", self.what)
                }
                Outcome::Reloaded => {
                    tracing::info!(path = %self.path.display(), "{} reloaded", self.what)
                }
                Outcome::Rejected(why) => tracing::warn!(
                    path = %self.path.display(),
                    why,
                    "{} changed but was rejected; the previous one stays in force",
                    self.what
                ),
            }
            first = false;
        }
    }

    /// Look once now (so the status names the contents in force before the sidecar
    /// says it is ready), then [`run`](Self::run) at [`INTERVAL`] on the current runtime.
    pub fn spawn(mut self) {
        if let Outcome::Rejected(why) = self.check() {
            tracing::warn!(path = %self.path.display(), why, "{} was rejected", self.what);
        }
        tokio::spawn(self.run(INTERVAL));
    }
}

/// A value swapped whole by a reload: readers take a snapshot that stays valid.
#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(v: T) -> Swap<T> {
        Swap(RwLock::new(Arc::new(v)))
    }

    /// The value in force now.
    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, v: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelock::Proxy;
    use crate::pipelock::audit::MemoryAudit;
    use crate::pipelock::config::Config;
    use crate::pipelock::policy::{Verdict, normalize};
    use crate::pipelock::ssrf::MapResolve;

    fn cfg(allow: &[&str]) -> Config {
        Config {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn verdict(p: &Proxy, host: &str) -> Verdict {
        p.live().policy.check(&normalize(host).unwrap())
    }

    #[tokio::test]
    async fn a_changed_allowlist_is_swapped_in_and_a_bad_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, cfg(&["a.test"]).to_json()).unwrap();
        let proxy = Arc::new(
            Proxy::from_config(
                &crate::pipelock::config::load(path.to_str().unwrap()).unwrap(),
                Arc::new(MapResolve::default()),
                Arc::new(MemoryAudit::default()),
            )
            .unwrap(),
        );
        let mut w = crate::pipelock::watcher(&path, proxy.clone());
        // The first look applies what is there (the same policy), then nothing changed.
        assert_eq!(w.check(), Outcome::Reloaded);
        assert_eq!(w.check(), Outcome::Unchanged);
        assert_eq!(verdict(&proxy, "b.test"), Verdict::NotAllowed);

        // Replaced the way a volume refill does it: a new file, renamed over.
        let tmp = dir.path().join("config.json.new");
        std::fs::write(&tmp, cfg(&["b.test"]).to_json()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(w.check(), Outcome::Reloaded);
        assert_eq!(verdict(&proxy, "b.test"), Verdict::Allow);
        assert_eq!(verdict(&proxy, "a.test"), Verdict::NotAllowed);
        assert_eq!(w.check(), Outcome::Unchanged);

        // Garbage, then an invalid entry: both rejected, the last good policy stays.
        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(w.check(), Outcome::Rejected(_)));
        std::fs::write(&path, cfg(&["bad_host!"]).to_json()).unwrap();
        assert!(matches!(w.check(), Outcome::Rejected(_)));
        assert_eq!(verdict(&proxy, "b.test"), Verdict::Allow);

        // The polling task picks up the next change by itself.
        let task = tokio::spawn(
            crate::pipelock::watcher(&path, proxy.clone()).run(Duration::from_millis(20)),
        );
        std::fs::write(&path, cfg(&["c.test"]).to_json()).unwrap();
        let ok = allowed_within_2s(&proxy, "c.test").await;
        task.abort();
        assert!(ok, "the watcher did not reload");

        // A nudge (SIGHUP's work) makes a watcher look at once, not at its next poll.
        let task = tokio::spawn(
            crate::pipelock::watcher(&path, proxy.clone()).run(Duration::from_secs(3600)),
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // its first look
        std::fs::write(&path, cfg(&["d.test"]).to_json()).unwrap();
        crate::status::nudge_now();
        let nudged = allowed_within_2s(&proxy, "d.test").await;
        task.abort();
        assert!(nudged, "the nudge did not make the watcher look");
    }

    /// Whether `host` becomes allowed within about two seconds (looked at every 20 ms).
    async fn allowed_within_2s(proxy: &Proxy, host: &str) -> bool {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if verdict(proxy, host) == Verdict::Allow {
                return true;
            }
        }
        false
    }
}
