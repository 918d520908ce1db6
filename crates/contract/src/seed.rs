//! How a volume claim is seeded on Kubernetes (docs/design.md section 9.10): the engine
//! mounts a Secret holding [`PLAN_FILE`] and the files' contents at [`MOUNT`] and each
//! claim at its [`SeedVolume::dir`] into a short-lived helper pod running `bottle sidecar
//! seed`, which writes the files with their modes and owners and gives each volume's root
//! its owner, then exits.
//!
//! Host trees (a workspace copied in) do not fit a Secret (1 MiB): they come as one tar
//! sent into the running helper through an exec of `bottle sidecar seed-trees --bytes N
//! --sha256 HEX`, which reads exactly `N` bytes into [`SPOOL`], checks their digest and
//! unpacks them into [`VOLUMES`], then writes [`TREES_DONE`]. The helper's main process,
//! started with `--await-trees SECONDS`, waits (that long at most) for that marker before
//! it writes the plan's files: its end still means "seeding done".

use serde::{Deserialize, Serialize};

/// Where the helper pod finds the plan and the files' contents.
pub const MOUNT: &str = "/seed";
/// The plan's file name under [`MOUNT`].
pub const PLAN_FILE: &str = "plan.json";
/// Where the helper pod mounts the claims: `<VOLUMES>/<i>`.
pub const VOLUMES: &str = "/volumes";

/// Where the helper pod spools the trees' tar (an emptyDir).
pub const SPOOL: &str = "/spool";
/// The marker `seed-trees` writes under [`SPOOL`] once the trees are unpacked.
pub const TREES_DONE: &str = "trees.done";
/// Largest trees' tar one helper takes.
pub const MAX_TREES_BYTES: u64 = 8 << 30;

/// One volume to seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedVolume {
    /// Where the claim is mounted in the helper pod.
    pub dir: String,
    /// Owner (uid, gid) of the volume's root; root's when absent.
    pub owner: Option<(u64, u64)>,
    /// The files to write.
    pub files: Vec<SeedFile>,
}

/// One file to write into a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedFile {
    /// The key of its contents under [`MOUNT`].
    pub key: String,
    /// Its path relative to the volume's root (no `..`, not absolute).
    pub path: String,
    /// Its mode.
    pub mode: u32,
    /// Its owner.
    pub uid: u64,
    /// Its group.
    pub gid: u64,
}

/// Is `path` a plain relative path inside a volume (no `..`, no root, not empty)?
pub fn contained(path: &str) -> bool {
    let p = std::path::Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Does a link at `at` (`<volume>/...`, a path of a trees' archive) to `link` resolve
/// inside its volume, read as written (relative, `..` never above the volume's root)?
/// Checked by the engine before it sends the trees and by `seed-trees` as it unpacks.
pub fn link_inside(at: &std::path::Path, link: &std::path::Path) -> bool {
    use std::path::Component;
    // The link's directory, below the volume's root.
    let mut depth: usize = at.components().count().saturating_sub(2);
    for c in link.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    !link.as_os_str().is_empty()
}

/// A writer that passes bytes on to `inner`, taking their count and SHA-256 on the way:
/// how the engine measures the trees' archive it sends, and how the helper checks the
/// one it receives.
pub struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: std::io::Write> Hashing<W> {
    /// Pass what is written on to `inner`.
    pub fn new(inner: W) -> Self {
        use sha2::Digest as _;
        Hashing {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer, the bytes written and their SHA-256.
    pub fn finish(self) -> (W, u64, [u8; 32]) {
        use sha2::Digest as _;
        (self.inner, self.bytes, self.hasher.finalize().into())
    }
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn links_are_read_from_their_own_directory() {
        assert!(link_inside(Path::new("0/a/l"), Path::new("../b")));
        assert!(link_inside(Path::new("0/a/l"), Path::new("./x/../y")));
        assert!(!link_inside(Path::new("0/a/l"), Path::new("../../b")));
        assert!(!link_inside(Path::new("0/l"), Path::new("..")));
        assert!(link_inside(Path::new("0/l"), Path::new(".")));
        assert!(!link_inside(Path::new("0/l"), Path::new("/tmp")));
        assert!(!link_inside(Path::new("0/l"), Path::new("")));
    }

    #[test]
    fn only_plain_relative_paths_are_contained() {
        assert!(contained("a/b.txt"));
        assert!(contained(".claude/settings.json"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(!contained(bad), "{bad}");
        }
    }
}
