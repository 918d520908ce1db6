//! Starting as root and leaving it: the sidecars that set up their network namespace
//! (pipelock takes net-internal's gateway, agent-net the agent's default route) start
//! as uid 0 with a few capabilities, do that before any other thread exists, and then
//! drop to [`SIDECAR_UID`] for good: groups, gid, uid, and with uid 0 every capability.

use bottle_contract::ca::SIDECAR_UID;

/// The sidecar must not start: it could not leave root behind.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("started as root with {0} threads: cannot drop privileges for all")]
    Threads(String),
    #[error("dropping privileges to uid {SIDECAR_UID}: {0}")]
    Drop(std::io::Error),
    #[error("still privileged after dropping to uid {SIDECAR_UID}")]
    StillPrivileged,
}

/// Is this process root (real or effective uid 0)?
pub fn is_root() -> bool {
    rustix::process::getuid().is_root() || rustix::process::geteuid().is_root()
}

/// The uid and gid calls change the calling thread only: there must be no other.
pub fn single_threaded() -> Result<(), PrivError> {
    match std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().to_string()))
        }) {
        Some(n) if n == "1" => Ok(()),
        other => Err(PrivError::Threads(other.unwrap_or_else(|| "?".into()))),
    }
}

/// No supplementary groups, then gid, then uid [`SIDECAR_UID`] (real, effective and
/// saved): the capabilities go with uid 0. Checked afterwards.
pub fn drop_to_sidecar_user() -> Result<(), PrivError> {
    use rustix::process::{Gid, Uid};
    let id = SIDECAR_UID as u32;
    let gid = Gid::from_raw(id);
    let uid = Uid::from_raw(id);
    rustix::thread::set_thread_groups(&[]).map_err(|e| PrivError::Drop(e.into()))?;
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(|e| PrivError::Drop(e.into()))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(|e| PrivError::Drop(e.into()))?;
    let caps = rustix::thread::capabilities(None).map_err(|e| PrivError::Drop(e.into()))?;
    if is_root() || !caps.effective.is_empty() || !caps.permitted.is_empty() {
        return Err(PrivError::StillPrivileged);
    }
    Ok(())
}
