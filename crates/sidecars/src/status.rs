//! This sidecar's side of [`bottle_contract::status`]: one process-wide status, written
//! whole to [`status::FILE`](bottle_contract::status::FILE) (a temporary file renamed over
//! it) each time it changes, and `bottle sidecar probe`, which prints it for the host.
//! Also the reload nudge: SIGHUP, sent by the host through the engine after it rewrote
//! a live config volume, makes every [`Watcher`](crate::reload::Watcher) look at once.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bottle_contract::status::{self, Rejected, Status};

struct Reporter {
    path: PathBuf,
    status: Status,
}

fn reporter() -> &'static Mutex<Reporter> {
    static R: OnceLock<Mutex<Reporter>> = OnceLock::new();
    R.get_or_init(|| {
        Mutex::new(Reporter {
            path: if cfg!(test) {
                // Unit tests load config through watchers too: not into the host's /tmp.
                std::env::temp_dir().join(format!("bottle-status-{}.json", std::process::id()))
            } else {
                std::env::var_os("BOTTLE_STATUS_FILE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(status::FILE))
            },
            status: Status {
                detail: "starting".into(),
                ..Status::default()
            },
        })
    })
}

/// Change the status and write it out.
fn update(f: impl FnOnce(&mut Status)) {
    let mut r = reporter().lock().unwrap_or_else(|p| p.into_inner());
    f(&mut r.status);
    if let Err(e) = write(&r.path, &r.status) {
        // The sidecar still serves; the host's wait for it runs out and says so.
        tracing::warn!(path = %r.path.display(), error = %e, "writing the status file");
    }
}

fn write(path: &Path, s: &Status) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    let text = serde_json::to_vec(s).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The sidecar serves; `detail` says how (or what it serves without).
pub fn ready(detail: impl Into<String>) {
    let detail = detail.into();
    update(|s| {
        s.ready = true;
        s.detail = detail;
    });
}

/// The sidecar does not serve yet; `detail` says what it waits for.
pub fn waiting(detail: impl Into<String>) {
    let detail = detail.into();
    update(|s| {
        s.ready = false;
        s.detail = detail;
    });
}

/// The live config file at `path` with contents `bytes` is now in force.
pub fn loaded(path: &Path, bytes: &[u8]) {
    let key = path.display().to_string();
    let digest = status::file_digest(bytes);
    update(|s| {
        s.rejected.remove(&key);
        s.loaded.insert(key, digest);
    });
}

/// The live config file at `path` changed to `bytes`, which were refused because `why`.
pub fn rejected(path: &Path, bytes: &[u8], why: &str) {
    let key = path.display().to_string();
    let digest = status::file_digest(bytes);
    let mut why = why.to_string();
    why.truncate(500);
    update(|s| {
        s.rejected.insert(key, Rejected { digest, why });
    });
}

/// `bottle sidecar probe`: print the status; exit 0 when ready, 1 when not (or when the
/// sidecar has written none yet).
pub fn probe() -> i32 {
    let path = reporter()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .path
        .clone();
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() <= status::MAX_LEN => {
            let text = String::from_utf8_lossy(&bytes);
            println!("{text}");
            match Status::parse(&text) {
                Some(s) if s.ready => 0,
                _ => 1,
            }
        }
        Ok(_) => {
            println!("{{\"ready\":false,\"detail\":\"the status file is too long\"}}");
            1
        }
        Err(_) => {
            println!("{{\"ready\":false,\"detail\":\"starting: no status yet\"}}");
            1
        }
    }
}

/// Wakes every watcher when a SIGHUP arrives (see [`nudged`]).
fn nudge() -> &'static tokio::sync::watch::Sender<u64> {
    static N: OnceLock<tokio::sync::watch::Sender<u64>> = OnceLock::new();
    N.get_or_init(|| tokio::sync::watch::channel(0).0)
}

/// A receiver that changes on each SIGHUP (after [`listen_for_nudges`]).
pub fn nudged() -> tokio::sync::watch::Receiver<u64> {
    nudge().subscribe()
}

/// Turn each SIGHUP into a nudge, on the current runtime. Without it a SIGHUP would
/// end the process (the sidecar is PID 1 only under no init, where it would be ignored).
pub fn listen_for_nudges() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: live config is picked up by polling only");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            nudge_now();
        }
    });
}

/// Wake every watcher now (what a SIGHUP does).
pub fn nudge_now() {
    nudge().send_modify(|n| *n = n.wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_says_what_is_loaded_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status.json");
        reporter().lock().unwrap().path = file.clone();
        waiting("cloning");
        let s = Status::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert!(!s.ready);
        loaded(Path::new("/c/a.json"), b"one");
        rejected(Path::new("/c/a.json"), b"two", "parsing: bad");
        ready("serving");
        let s = Status::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert!(s.ready);
        assert_eq!(
            s.file("/c/a.json", &status::file_digest(b"one")),
            status::FileState::InForce
        );
        assert_eq!(
            s.file("/c/a.json", &status::file_digest(b"two")),
            status::FileState::Rejected("parsing: bad")
        );
        assert_eq!(probe(), 0);
    }
}
