//! `bottle sidecar seed`: the Kubernetes backend's helper pod (docs/design.md section
//! 9.10). Reads the plan `bottle_contract::seed` describes from the Secret mounted at
//! `seed::MOUNT`, writes each file into its volume with its mode and owner (parent
//! directories made as the file's owner), gives each volume's root its owner, and exits.
//! Runs as root with `CHOWN`, `FOWNER` and `DAC_OVERRIDE` only; a path that would leave
//! its volume is refused before anything is written.
//!
//! With host trees, the helper's main process first waits (bounded) for
//! [`receive_trees`] (`bottle sidecar seed-trees`, exec'd into the helper by the engine)
//! to have unpacked them, so the plan's files land after the trees, as under Docker.
//! The unpacker reads exactly the length it is given (the exec's input is never ended
//! before Kubernetes 1.30), checks the SHA-256, and unpacks only directories, regular
//! files and symbolic links that stay inside their volume, never through a link, with the
//! owners the archive names and modes without set-id bits.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;

use bottle_contract::seed::{self, SeedVolume};

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("reading the seed plan {0}")]
    Plan(String, #[source] std::io::Error),
    #[error("the seed plan is not valid")]
    Parse(#[from] serde_json::Error),
    #[error("{0}: a path that leaves its volume")]
    Escapes(String),
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    #[error("the trees' archive is {0} bytes, more than the {max} a helper takes", max = seed::MAX_TREES_BYTES)]
    TooLarge(u64),
    #[error("the trees' archive ended after {got} of {want} bytes")]
    Short { got: u64, want: u64 },
    #[error("the trees' archive does not have the SHA-256 it was sent with")]
    Digest,
    #[error("{0:?} is not a SHA-256 in hex")]
    BadDigest(String),
    #[error("{0}: a link that leaves its volume")]
    LinkEscapes(String),
    #[error("{0}: through a link or a file where a directory should be")]
    ThroughLink(String),
    #[error("{0}: {1} entries are not unpacked")]
    Unsupported(String, String),
    #[error("{0}: already there and not a {1}")]
    Occupied(String, &'static str),
    #[error("the host trees did not arrive within {0} s")]
    TreesMissing(u64),
}

/// Seed every volume of the plan under `mount`; with `await_trees`, once
/// [`receive_trees`] has written its marker under `spool` (waiting that long at most).
pub fn run_after_trees(
    mount: &Path,
    spool: &Path,
    await_trees: Option<Duration>,
) -> Result<(), SeedError> {
    if let Some(limit) = await_trees {
        let done = spool.join(seed::TREES_DONE);
        let deadline = std::time::Instant::now() + limit;
        while !done.exists() {
            if std::time::Instant::now() >= deadline {
                return Err(SeedError::TreesMissing(limit.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    run(mount)
}

/// Read exactly `size` bytes of a tar from `input` into `spool`, check that their SHA-256
/// is `sha256` (hex), unpack them into `dst` (entries `<i>/...`: volume `i` is the
/// directory `dst/<i>`, which must exist), then write [`seed::TREES_DONE`] under `spool`.
/// Nothing past `size` is read: the input need not end.
pub fn receive_trees(
    dst: &Path,
    spool: &Path,
    input: impl Read,
    size: u64,
    sha256: &str,
) -> Result<(), SeedError> {
    if size > seed::MAX_TREES_BYTES {
        return Err(SeedError::TooLarge(size));
    }
    let want = hex::decode(sha256)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| SeedError::BadDigest(sha256.chars().take(80).collect()))?;
    let tar_path = spool.join("trees.tar");
    let _ = std::fs::remove_file(&tar_path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tar_path)
        .map_err(io(format!("creating {}", tar_path.display())))?;
    let mut hashing = seed::Hashing::new(&mut file);
    std::io::copy(&mut input.take(size), &mut hashing).map_err(io(format!(
        "reading the trees' archive into {}",
        tar_path.display()
    )))?;
    let (_, got, digest) = hashing.finish();
    drop(file);
    let checked = if got < size {
        Err(SeedError::Short { got, want: size })
    } else if digest.as_slice() != want.as_slice() {
        Err(SeedError::Digest)
    } else {
        Ok(())
    };
    let unpacked = checked.and_then(|()| {
        let f = std::fs::File::open(&tar_path)
            .map_err(io(format!("reading {}", tar_path.display())))?;
        unpack(dst, std::io::BufReader::new(f))
    });
    let _ = std::fs::remove_file(&tar_path);
    unpacked?;
    std::fs::write(spool.join(seed::TREES_DONE), b"")
        .map_err(io(format!("writing {}", seed::TREES_DONE)))
}

/// Unpack the trees' tar `r` into `dst`, refusing (and stopping at) the first entry that
/// would leave its volume, go through a link, or is not a directory, a regular file or a
/// link inside its volume.
pub fn unpack(dst: &Path, r: impl Read) -> Result<(), SeedError> {
    let mut archive = tar::Archive::new(r);
    let entries = archive
        .entries()
        .map_err(io("reading the trees' archive".into()))?;
    for entry in entries {
        let mut entry = entry.map_err(io("reading the trees' archive".into()))?;
        let rel = entry
            .path()
            .map_err(io("an entry's path".into()))?
            .into_owned();
        let shown = rel.display().to_string();
        if !seed::contained(&shown) {
            return Err(SeedError::Escapes(shown));
        }
        let Some(first) = rel.components().next() else {
            return Err(SeedError::Escapes(shown));
        };
        let volume = dst.join(first);
        if !std::fs::symlink_metadata(&volume).is_ok_and(|m| m.is_dir()) {
            return Err(SeedError::Escapes(shown));
        }
        let target = dst.join(&rel);
        // Every directory between the volume's root and the entry is a real one.
        let mut at = volume.clone();
        for c in rel.parent().into_iter().flat_map(Path::components).skip(1) {
            at.push(c);
            if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                return Err(SeedError::ThroughLink(shown));
            }
        }
        let header = entry.header();
        let uid = header.uid().map_err(io(format!("{shown}: owner")))? as u32;
        let gid = header.gid().map_err(io(format!("{shown}: group")))? as u32;
        let mode = header.mode().map_err(io(format!("{shown}: mode")))? & 0o777;
        let existing = std::fs::symlink_metadata(&target).ok();
        match header.entry_type() {
            tar::EntryType::Directory => {
                match existing {
                    Some(m) if m.is_dir() => {}
                    Some(_) => return Err(SeedError::Occupied(shown, "directory")),
                    None => std::fs::create_dir(&target)
                        .map_err(io(format!("mkdir {}", target.display())))?,
                }
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(io(format!("chown {}", target.display())))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io(format!("chmod {}", target.display())))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if existing.is_some_and(|m| !m.is_file()) {
                    return Err(SeedError::Occupied(shown, "regular file"));
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&target)
                    .map_err(io(format!("writing {}", target.display())))?;
                std::io::copy(&mut entry, &mut f)
                    .map_err(io(format!("writing {}", target.display())))?;
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(io(format!("chown {}", target.display())))?;
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(io(format!("chmod {}", target.display())))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io(format!("{shown}: link")))?
                    .ok_or_else(|| SeedError::LinkEscapes(shown.clone()))?
                    .into_owned();
                if !seed::link_inside(&rel, &link) {
                    return Err(SeedError::LinkEscapes(shown));
                }
                if existing.is_some() {
                    return Err(SeedError::Occupied(shown, "link"));
                }
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(io(format!("link {}", target.display())))?;
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(io(format!("chown {}", target.display())))?;
            }
            other => return Err(SeedError::Unsupported(shown, format!("{other:?}"))),
        }
    }
    Ok(())
}

/// Seed every volume of the plan under `mount`.
pub fn run(mount: &Path) -> Result<(), SeedError> {
    let plan_path = mount.join(seed::PLAN_FILE);
    let text = std::fs::read(&plan_path)
        .map_err(|e| SeedError::Plan(plan_path.display().to_string(), e))?;
    let plan: Vec<SeedVolume> = serde_json::from_slice(&text)?;
    if let Some(f) = plan
        .iter()
        .flat_map(|v| &v.files)
        .find(|f| !seed::contained(&f.path) || !seed::contained(&f.key))
    {
        return Err(SeedError::Escapes(f.path.clone()));
    }
    for v in &plan {
        seed_one(mount, v)?;
    }
    Ok(())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SeedError {
    move |e| SeedError::Io(what, e)
}

fn seed_one(mount: &Path, v: &SeedVolume) -> Result<(), SeedError> {
    let root = Path::new(&v.dir);
    for f in &v.files {
        let target = root.join(&f.path);
        // Parent directories below the root, made as the file's owner.
        let mut dir = root.to_path_buf();
        if let Some(parent) = Path::new(&f.path).parent() {
            for c in parent.components() {
                dir.push(c);
                if !dir.exists() {
                    std::fs::create_dir(&dir).map_err(io(format!("mkdir {}", dir.display())))?;
                    std::os::unix::fs::chown(&dir, Some(f.uid as u32), Some(f.gid as u32))
                        .map_err(io(format!("chown {}", dir.display())))?;
                }
            }
        }
        let contents = std::fs::read(mount.join(&f.key))
            .map_err(io(format!("reading the contents of {}", f.path)))?;
        std::fs::write(&target, contents).map_err(io(format!("writing {}", target.display())))?;
        std::os::unix::fs::chown(&target, Some(f.uid as u32), Some(f.gid as u32))
            .map_err(io(format!("chown {}", target.display())))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(f.mode))
            .map_err(io(format!("chmod {}", target.display())))?;
    }
    if let Some((uid, gid)) = v.owner {
        std::os::unix::fs::chown(root, Some(uid as u32), Some(gid as u32))
            .map_err(io(format!("chown {}", root.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::seed::SeedFile;
    use std::path::PathBuf;

    #[test]
    fn files_land_at_their_paths_with_their_modes_and_escapes_are_refused() {
        let base = std::env::temp_dir().join(format!("bottle-seed-test-{}", std::process::id()));
        let mount = base.join("seed");
        let vol = base.join("vol");
        std::fs::create_dir_all(&mount).expect("mount");
        std::fs::create_dir_all(&vol).expect("vol");
        std::fs::write(mount.join("f0"), b"hello").expect("contents");
        // Our own uid and gid: chown to them needs no privilege.
        let meta = std::fs::metadata(&vol).expect("meta");
        let (uid, gid) = (
            std::os::unix::fs::MetadataExt::uid(&meta) as u64,
            std::os::unix::fs::MetadataExt::gid(&meta) as u64,
        );
        let mut plan = vec![SeedVolume {
            dir: vol.display().to_string(),
            owner: Some((uid, gid)),
            files: vec![SeedFile {
                key: "f0".into(),
                path: "a/b/prompt.md".into(),
                mode: 0o600,
                uid,
                gid,
            }],
        }];
        std::fs::write(
            mount.join(seed::PLAN_FILE),
            serde_json::to_vec(&plan).expect("json"),
        )
        .expect("plan");
        run(&mount).expect("seeded");
        let written = vol.join("a/b/prompt.md");
        assert_eq!(std::fs::read(&written).expect("read"), b"hello");
        assert_eq!(
            std::fs::metadata(&written)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        plan[0].files[0].path = "../escape".into();
        std::fs::write(
            mount.join(seed::PLAN_FILE),
            serde_json::to_vec(&plan).expect("json"),
        )
        .expect("plan");
        assert!(matches!(run(&mount), Err(SeedError::Escapes(_))));
        assert!(!base.join("escape").exists());
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A tar entry written raw, so paths the builder refuses (`..`, absolute) can be
    /// made.
    fn raw(tar: &mut Vec<u8>, path: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o4755);
        h.set_size(data.len() as u64);
        let me = std::fs::metadata(".").expect("meta");
        h.set_uid(std::os::unix::fs::MetadataExt::uid(&me) as u64);
        h.set_gid(std::os::unix::fs::MetadataExt::gid(&me) as u64);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }

    fn finish(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    fn digest(data: &[u8]) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(data))
    }

    /// `dst` with volume `0` and a spool.
    fn dirs(what: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let base = tempfile::tempdir().expect("tmp");
        let dst = base.path().join(format!("volumes-{what}"));
        let spool = base.path().join("spool");
        std::fs::create_dir_all(dst.join("0")).expect("volume");
        std::fs::create_dir_all(&spool).expect("spool");
        (base, dst, spool)
    }

    #[test]
    fn trees_are_unpacked_with_modes_without_set_id_bits_and_marked_done() {
        let (_base, dst, spool) = dirs("ok");
        let mut tar = Vec::new();
        raw(&mut tar, "0", tar::EntryType::Directory, "", b"");
        raw(&mut tar, "0/src", tar::EntryType::Directory, "", b"");
        raw(
            &mut tar,
            "0/src/main.rs",
            tar::EntryType::Regular,
            "",
            b"fn main() {}",
        );
        raw(
            &mut tar,
            "0/src/link",
            tar::EntryType::Symlink,
            "../src/main.rs",
            b"",
        );
        let tar = finish(tar);
        // More input than the length given: nothing past it is read.
        let mut input = tar.clone();
        input.extend_from_slice(b"trailing bytes never read");
        receive_trees(
            &dst,
            &spool,
            input.as_slice(),
            tar.len() as u64,
            &digest(&tar),
        )
        .expect("unpacked");
        let file = dst.join("0/src/main.rs");
        assert_eq!(std::fs::read(&file).expect("read"), b"fn main() {}");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(
            std::fs::read_link(dst.join("0/src/link")).expect("link"),
            Path::new("../src/main.rs")
        );
        assert!(spool.join(seed::TREES_DONE).exists());
        assert!(!spool.join("trees.tar").exists());
        // The main process goes on once the marker is there.
        run_after_trees(&spool, &spool, Some(Duration::from_secs(1))).expect_err("no plan");
        assert!(matches!(
            run_after_trees(&dst, &dst, Some(Duration::from_millis(300))),
            Err(SeedError::TreesMissing(_))
        ));
    }

    #[test]
    fn a_wrong_digest_a_short_input_and_an_oversize_are_refused_before_unpacking() {
        let (_base, dst, spool) = dirs("digest");
        let mut tar = Vec::new();
        raw(&mut tar, "0/a", tar::EntryType::Regular, "", b"x");
        let tar = finish(tar);
        let n = tar.len() as u64;
        let wrong = digest(b"something else");
        assert!(matches!(
            receive_trees(&dst, &spool, tar.as_slice(), n, &wrong),
            Err(SeedError::Digest)
        ));
        assert!(matches!(
            receive_trees(&dst, &spool, &tar[..100], n, &digest(&tar)),
            Err(SeedError::Short { got: 100, .. })
        ));
        assert!(matches!(
            receive_trees(
                &dst,
                &spool,
                tar.as_slice(),
                seed::MAX_TREES_BYTES + 1,
                &digest(&tar)
            ),
            Err(SeedError::TooLarge(_))
        ));
        assert!(matches!(
            receive_trees(&dst, &spool, tar.as_slice(), n, "not hex"),
            Err(SeedError::BadDigest(_))
        ));
        assert!(!dst.join("0/a").exists());
        assert!(!spool.join(seed::TREES_DONE).exists());
        assert!(!spool.join("trees.tar").exists());
    }

    fn refused(entries: &[(&str, tar::EntryType, &str)]) -> SeedError {
        let (base, dst, spool) = dirs("refused");
        let mut tar = Vec::new();
        for (path, kind, link) in entries {
            raw(&mut tar, path, *kind, link, b"data");
        }
        let tar = finish(tar);
        let e = receive_trees(
            &dst,
            &spool,
            tar.as_slice(),
            tar.len() as u64,
            &digest(&tar),
        )
        .expect_err("refused");
        // Nothing outside the volumes was written.
        let outside: Vec<_> = std::fs::read_dir(base.path())
            .expect("base")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(outside.len(), 2, "{outside:?}");
        assert!(!spool.join(seed::TREES_DONE).exists());
        e
    }

    #[test]
    fn paths_and_links_that_leave_a_volume_are_refused() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        for path in ["../x", "0/../../x", "/etc/x", "./0/x", "1/x"] {
            let e = refused(&[(path, Regular, "")]);
            assert!(matches!(e, SeedError::Escapes(_)), "{path}: {e:?}");
        }
        for link in ["/etc/passwd", "../x", "a/../../x", ""] {
            let e = refused(&[("0/l", Symlink, link)]);
            assert!(matches!(e, SeedError::LinkEscapes(_)), "{link}: {e:?}");
        }
        // A link inside, then a write through it.
        let e = refused(&[("0/d", Symlink, "."), ("0/d/x", Regular, "")]);
        assert!(matches!(e, SeedError::ThroughLink(_)), "{e:?}");
        // A regular file over a link already unpacked.
        let e = refused(&[("0/l", Symlink, "x"), ("0/l", Regular, "")]);
        assert!(matches!(e, SeedError::Occupied(..)), "{e:?}");
        let e = refused(&[("0/f", Regular, ""), ("0/f", Directory, "")]);
        assert!(matches!(e, SeedError::Occupied(..)), "{e:?}");
        // Hard links and devices are not unpacked.
        let e = refused(&[("0/h", Link, "0/f")]);
        assert!(matches!(e, SeedError::Unsupported(..)), "{e:?}");
        let e = refused(&[("0/c", tar::EntryType::Char, "")]);
        assert!(matches!(e, SeedError::Unsupported(..)), "{e:?}");
    }
}
