//! Reload without restart: pipelock polls its config file (about once a second) and,
//! when the contents change, parses it and swaps the proxy's policy atomically
//! ([`Proxy::reload`]). Connections in flight are not cut; each request after the swap
//! is decided by the new policy. A file that does not parse or compile leaves the last
//! good policy in force and is logged.
//!
//! Polling, not inotify: a Docker volume may be changed from outside the container's
//! mount namespace, and a poll of one small file costs nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::config::Config;
use super::server::Proxy;

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

/// Watches one config file for one proxy.
pub struct Watcher {
    path: PathBuf,
    proxy: Arc<Proxy>,
    /// Digest of the contents in force (or last rejected, so it is not retried).
    seen: Option<[u8; 32]>,
}

impl Watcher {
    /// `path` holds the configuration the proxy was built from.
    pub fn new(path: impl Into<PathBuf>, proxy: Arc<Proxy>) -> Watcher {
        let path = path.into();
        let seen = std::fs::read(&path).ok().map(|b| digest(&b));
        Watcher { path, proxy, seen }
    }

    /// Look at the file once; reload when its contents changed.
    pub fn check(&mut self) -> Outcome {
        let Ok(bytes) = std::fs::read(&self.path) else {
            // Missing for a moment (a volume being refilled): keep the policy.
            return Outcome::Unchanged;
        };
        let d = digest(&bytes);
        if self.seen == Some(d) {
            return Outcome::Unchanged;
        }
        self.seen = Some(d);
        let cfg: Config = match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => return Outcome::Rejected(format!("parsing: {e}")),
        };
        match self.proxy.reload(&cfg) {
            Ok(()) => Outcome::Reloaded,
            Err(e) => Outcome::Rejected(e.to_string()),
        }
    }

    /// Poll every `every` forever, logging each reload or rejection.
    pub async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.check() {
                Outcome::Unchanged => {}
                Outcome::Reloaded => {
                    tracing::info!(path = %self.path.display(), "pipelock configuration reloaded")
                }
                Outcome::Rejected(why) => tracing::warn!(
                    path = %self.path.display(),
                    why,
                    "pipelock configuration changed but was rejected; the previous one stays in force"
                ),
            }
        }
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::pipelock::audit::MemoryAudit;
    use crate::sidecar::pipelock::policy::{Verdict, normalize};
    use crate::sidecar::pipelock::ssrf::MapResolve;

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
                &Config::load(path.to_str().unwrap()).unwrap(),
                Arc::new(MapResolve::default()),
                Arc::new(MemoryAudit::default()),
            )
            .unwrap(),
        );
        let mut w = Watcher::new(&path, proxy.clone());
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
        let task = tokio::spawn(Watcher::new(&path, proxy.clone()).run(Duration::from_millis(20)));
        std::fs::write(&path, cfg(&["c.test"]).to_json()).unwrap();
        let mut ok = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if verdict(&proxy, "c.test") == Verdict::Allow {
                ok = true;
                break;
            }
        }
        task.abort();
        assert!(ok, "the watcher did not reload");
    }
}
