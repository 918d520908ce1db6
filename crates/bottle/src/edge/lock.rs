//! One writer per project: an advisory `flock` on
//! `$XDG_STATE_HOME/bottle/locks/<project>.lock` (else `~/.local/state/...`).
//!
//! The holder writes who it is into the file (pid, host, command, since when) so that a
//! second `apply` or `delete` can say who holds the project. The kernel drops the lock
//! when the holder's file is closed, so a killed holder leaves no stale lock; the file
//! itself stays (removing it would race with a new holder).

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

/// Who holds a project's lock, as written in the lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: String,
    pub host: String,
    pub command: String,
    pub since: String,
}

impl Holder {
    /// This process.
    pub fn me() -> Holder {
        Holder {
            pid: std::process::id().to_string(),
            host: hostname(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            since: utc_now(),
        }
    }

    fn encode(&self) -> String {
        let one_line = |s: &str| s.replace('\n', " ");
        format!(
            "pid={}\nhost={}\ncommand={}\nsince={}\n",
            self.pid,
            one_line(&self.host),
            one_line(&self.command),
            self.since
        )
    }

    fn decode(text: &str) -> Holder {
        let mut h = Holder::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", v)) => h.pid = v.into(),
                Some(("host", v)) => h.host = v.into(),
                Some(("command", v)) => h.command = v.into(),
                Some(("since", v)) => h.since = v.into(),
                _ => {}
            }
        }
        h
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pid.is_empty() {
            return write!(f, "another process (it has not said who it is yet)");
        }
        write!(
            f,
            "pid {} on {} (`{}`) since {}",
            self.pid, self.host, self.command, self.since
        )
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "project {project} is being changed by {holder}; only one apply or delete may \
         run per project (pass --wait-lock to wait for it; lock file {})",
        path.display()
    )]
    Held {
        project: String,
        holder: Box<Holder>,
        path: PathBuf,
    },
    #[error("neither XDG_STATE_HOME nor HOME is set: nowhere to keep the project lock")]
    NoStateDir,
    #[error("project lock {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held project lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct ProjectLock {
    _file: File,
    path: PathBuf,
}

impl ProjectLock {
    /// The directory of lock files on this host.
    pub fn default_dir() -> Result<PathBuf, LockError> {
        super::state_path("locks").ok_or(LockError::NoStateDir)
    }

    /// Take the lock of `project` in `dir` now, or fail naming the holder.
    pub fn try_acquire(dir: &Path, project: &str, me: &Holder) -> Result<ProjectLock, LockError> {
        let path = dir.join(format!("{project}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    project: project.to_string(),
                    holder: Box::new(Holder::decode(&text)),
                    path,
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(me.encode().as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(ProjectLock { _file: file, path })
    }

    /// Take the lock; with `wait`, poll until the holder is gone (saying once who it is).
    pub async fn acquire(
        dir: &Path,
        project: &str,
        wait: bool,
        me: &Holder,
    ) -> Result<ProjectLock, LockError> {
        let mut told = false;
        loop {
            match ProjectLock::try_acquire(dir, project, me) {
                Err(LockError::Held { holder, .. }) if wait => {
                    if !told {
                        eprintln!("waiting for project {project}: held by {holder}");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "?".into())
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let t = time::OffsetDateTime::from(std::time::SystemTime::now());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_fails_naming_the_holder_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let me = Holder {
            pid: "4242".into(),
            host: "devbox".into(),
            command: "bottle apply -f x --watch".into(),
            since: "2026-01-02T03:04:05Z".into(),
        };
        let first = ProjectLock::try_acquire(dir.path(), "demo", &me).unwrap();
        assert!(first.path().ends_with("demo.lock"));
        let err = ProjectLock::try_acquire(dir.path(), "demo", &Holder::me()).unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(**holder, me);
        let msg = err.to_string();
        for part in [
            "demo",
            "pid 4242",
            "devbox",
            "bottle apply -f x --watch",
            "2026-01-02T03:04:05Z",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        // Another project is independent.
        let other = ProjectLock::try_acquire(dir.path(), "other", &me).unwrap();
        drop(first);
        let again = ProjectLock::try_acquire(dir.path(), "demo", &Holder::me()).unwrap();
        drop((again, other));
    }

    #[tokio::test]
    async fn waiting_acquires_once_the_holder_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = ProjectLock::try_acquire(dir.path(), "demo", &Holder::me()).unwrap();
        let d = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move {
            ProjectLock::acquire(&d, "demo", true, &Holder::me())
                .await
                .map(drop)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("acquired after release")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn holder_info_round_trips_and_the_time_looks_right() {
        let h = Holder::me();
        assert_eq!(Holder::decode(&h.encode()), h);
        assert_eq!(h.since.len(), 20, "{}", h.since);
        assert!(h.since.ends_with('Z'));
    }
}
