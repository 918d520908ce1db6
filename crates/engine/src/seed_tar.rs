//! Seed archives: one tar of the content of a batch of volumes (their roots' owners, the
//! host trees copied in, their files), written from the host as both backends take it
//! (docs/design.md sections 1.6 and 9.10). Docker unpacks it through its archive upload
//! into a helper container; Kubernetes sends it into its helper pod, which unpacks it
//! with `bottle sidecar seed-trees`. Paths are checked before anything is made
//! ([`check_seed`]); each volume is bounded by [`MAX_SEED_BYTES`].

use std::collections::BTreeSet;

use crate::{EngineError, SeedDir, VolumeFile, VolumeSpec};

/// Largest tar a volume is seeded with, to keep memory bounded.
pub const MAX_SEED_BYTES: u64 = 2 << 30;

/// What of a volume's content a seed archive holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Its root, its host trees and its files (Docker: the archive is all of it).
    All,
    /// Its root and its host trees only (Kubernetes: the files come in the helper's
    /// Secret, written after the trees, as they are under Docker).
    Trees,
}

/// Write one tar of the content of every volume of `specs` to `w`, the `i`th under
/// `root/<i>/` (`root` may be empty); each volume at most [`MAX_SEED_BYTES`].
pub fn write_seed(
    specs: &[&VolumeSpec],
    root: &std::path::Path,
    content: Content,
    w: &mut dyn std::io::Write,
) -> Result<(), EngineError> {
    let mut builder = tar::Builder::new(w);
    for (i, spec) in specs.iter().enumerate() {
        let files: &[VolumeFile] = match content {
            Content::All => &spec.files,
            Content::Trees => &[],
        };
        append_volume(
            &mut builder,
            &root.join(i.to_string()),
            files,
            &spec.seed_dirs,
            spec.owner.unwrap_or((0, 0)),
        )
        .map_err(|message| EngineError::Api {
            op: "seed volume",
            name: spec.name.clone(),
            message,
        })?;
    }
    builder
        .into_inner()
        .map(drop)
        .map_err(|e| EngineError::Api {
            op: "seed volume",
            name: specs.first().map(|s| s.name.clone()).unwrap_or_default(),
            message: e.to_string(),
        })
}

/// What a backend does with a symbolic link in a host tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Copied as it is, wherever it points (Docker).
    Any,
    /// Copied only when it points inside its volume
    /// ([`bottle_contract::seed::link_inside`]): the Kubernetes helper's unpacker takes
    /// no other, so one is refused here, before anything is made.
    Inside,
}

/// What [`write_seed`] (or, with [`Links::Inside`], the unpacker) would refuse, found
/// before anything is made: a path that is not relative, a volume over
/// [`MAX_SEED_BYTES`], a host tree that cannot be read, a link out of its volume. Walks
/// the host trees by their metadata only (the files are read once, while uploading).
pub fn check_seed(specs: &[&VolumeSpec], links: Links) -> Result<(), EngineError> {
    for spec in specs {
        let mut budget = MAX_SEED_BYTES;
        let checked = spec
            .seed_dirs
            .iter()
            .try_for_each(|d| {
                check_target(&d.target, true)?;
                // As the archive names it: the volume's index first.
                let at = std::path::Path::new("0").join(&d.target);
                measure_tree(&d.host, &at, links, &mut budget)
            })
            .and_then(|()| {
                spec.files
                    .iter()
                    .try_for_each(|f| check_target(&f.path, false))
            });
        checked.map_err(|message| EngineError::Api {
            op: "seed volume",
            name: spec.name.clone(),
            message,
        })?;
    }
    Ok(())
}

/// A seed target or file path: relative, without `..` (a seed dir's may be empty: the
/// volume's root).
fn check_target(path: &str, dir: bool) -> Result<(), String> {
    use std::path::{Component, Path};
    let relative = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if relative || (dir && path.is_empty()) {
        Ok(())
    } else if dir {
        Err(format!(
            "seed target {path:?} must be relative, without `..`"
        ))
    } else {
        Err(format!("file path {path:?} must be relative, without `..`"))
    }
}

/// Take the size of the regular files under `host` (symlinks not followed) from
/// `budget`, or say which one does not fit; with [`Links::Inside`], refuse a link that
/// points out of its volume (`at`: where `host` lands, as the archive names it).
fn measure_tree(
    host: &std::path::Path,
    at: &std::path::Path,
    links: Links,
    budget: &mut u64,
) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", host.display());
    let meta = std::fs::symlink_metadata(host).map_err(err)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(host).map_err(err)? {
            let e = e.map_err(err)?;
            measure_tree(&e.path(), &at.join(e.file_name()), links, budget)?;
        }
    } else if meta.is_symlink() && links == Links::Inside {
        let link = std::fs::read_link(host).map_err(err)?;
        if !bottle_contract::seed::link_inside(at, &link) {
            let inside: std::path::PathBuf = at.components().skip(1).collect();
            return Err(format!(
                "{} in the copied tree links to {}, out of its volume: the Kubernetes \
                 backend does not copy such a link (make it relative, inside the tree, or \
                 leave it out)",
                inside.display(),
                link.display()
            ));
        }
    } else if meta.is_file() {
        *budget = budget.checked_sub(meta.len()).ok_or_else(|| {
            format!(
                "{}: the seed is larger than {MAX_SEED_BYTES} bytes",
                host.display()
            )
        })?;
    }
    Ok(())
}

/// Append one volume's content under `root`: the root directory owned by
/// `root_owner`, then each tree in `dirs`, then `files` (paths relative to the volume
/// root). Parent directories are made with mode 0755, owned like the first entry
/// placed in them.
fn append_volume<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    root: &std::path::Path,
    files: &[VolumeFile],
    dirs: &[SeedDir],
    root_owner: (u64, u64),
) -> Result<(), String> {
    use std::path::{Path, PathBuf};
    let mut budget = MAX_SEED_BYTES;
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    let dir_entry = |builder: &mut tar::Builder<W>,
                     made: &mut BTreeSet<PathBuf>,
                     path: &Path,
                     (uid, gid): (u64, u64)|
     -> Result<(), String> {
        if !made.insert(path.to_path_buf()) {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_size(0);
        builder
            .append_data(&mut header, path, std::io::empty())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    dir_entry(builder, &mut made, root, root_owner)?;
    for d in dirs {
        check_target(&d.target, true)?;
        let at = root.join(&d.target);
        let parents: Vec<PathBuf> = at.ancestors().skip(1).map(Path::to_path_buf).collect();
        for p in parents
            .iter()
            .rev()
            .filter(|p| p.starts_with(root) && *p != root)
        {
            dir_entry(builder, &mut made, p, (d.uid, d.gid))?;
        }
        made.insert(at.clone());
        append_tree(builder, &d.host, &at, d, &mut budget)?;
    }
    for file in files {
        check_target(&file.path, false)?;
        let path = root.join(&file.path);
        let parents: Vec<PathBuf> = path.ancestors().skip(1).map(Path::to_path_buf).collect();
        for p in parents
            .iter()
            .rev()
            .filter(|p| p.starts_with(root) && *p != root)
        {
            dir_entry(builder, &mut made, p, (file.uid, file.gid))?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(file.mode);
        header.set_uid(file.uid);
        header.set_gid(file.gid);
        header.set_size(file.contents.len() as u64);
        builder
            .append_data(&mut header, &path, file.contents.as_slice())
            .map_err(|e| format!("{}: {e}", file.path))?;
    }
    Ok(())
}

/// Append the tree at `host` under `at`, owned by `owner`'s uid:gid, modes kept.
fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    host: &std::path::Path,
    at: &std::path::Path,
    owner: &SeedDir,
    budget: &mut u64,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let err = |p: &std::path::Path, e: std::io::Error| format!("{}: {e}", p.display());
    let meta = std::fs::symlink_metadata(host).map_err(|e| err(host, e))?;
    let mut header = tar::Header::new_gnu();
    header.set_uid(owner.uid);
    header.set_gid(owner.gid);
    header.set_mode(meta.permissions().mode() & 0o7777);
    header.set_mtime(
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
    );
    let name = at;
    if meta.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder
            .append_data(&mut header, name, std::io::empty())
            .map_err(|e| err(host, e))?;
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .map_err(|e| err(host, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(host, e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            append_tree(builder, &e.path(), &at.join(e.file_name()), owner, budget)?;
        }
    } else if meta.is_file() {
        if meta.len() > *budget {
            return Err(format!(
                "{}: the seed is larger than {MAX_SEED_BYTES} bytes",
                host.display()
            ));
        }
        *budget -= meta.len();
        let file = std::fs::File::open(host).map_err(|e| err(host, e))?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        builder
            .append_data(&mut header, name, file)
            .map_err(|e| err(host, e))?;
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(host).map_err(|e| err(host, e))?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, name, &target)
            .map_err(|e| err(host, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;
    use std::path::Path;

    #[test]
    fn seed_tars_reject_escaping_paths() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            let file = VolumeFile {
                path: bad.to_owned(),
                contents: Vec::new(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            };
            let spec = VolumeSpec {
                name: "v".to_owned(),
                labels: Labels::new(),
                files: vec![file],
                seed_dirs: Vec::new(),
                owner: None,
                seed_image: "i".to_owned(),
            };
            assert!(check_seed(&[&spec], Links::Any).is_err(), "{bad:?}");
            assert!(
                write_seed(
                    &[&spec],
                    Path::new("seed"),
                    Content::All,
                    &mut std::io::sink()
                )
                .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_trees_archive_holds_the_root_and_the_trees_not_the_files() {
        let host = std::env::temp_dir().join(format!("bottle-seedtar-{}", std::process::id()));
        std::fs::create_dir_all(host.join("src")).expect("tree");
        std::fs::write(host.join("src/main.rs"), b"fn main() {}").expect("file");
        let spec = VolumeSpec {
            name: "v".to_owned(),
            labels: Labels::new(),
            files: vec![VolumeFile {
                path: "prompt.md".to_owned(),
                contents: b"hi".to_vec(),
                mode: 0o600,
                uid: 1000,
                gid: 1000,
            }],
            seed_dirs: vec![SeedDir {
                host: host.clone(),
                target: "work".to_owned(),
                uid: 1000,
                gid: 1001,
            }],
            owner: Some((1000, 1000)),
            seed_image: "i".to_owned(),
        };
        let entries = |content| {
            let mut tar = Vec::new();
            write_seed(&[&spec], Path::new(""), content, &mut tar).expect("tar");
            let mut a = tar::Archive::new(tar.as_slice());
            a.entries()
                .expect("entries")
                .map(|e| {
                    let e = e.expect("entry");
                    let h = e.header();
                    (
                        e.path().expect("path").display().to_string(),
                        h.uid().expect("uid"),
                        h.gid().expect("gid"),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            entries(Content::Trees),
            [
                ("0".to_owned(), 1000, 1000),
                ("0/work".to_owned(), 1000, 1001),
                ("0/work/src".to_owned(), 1000, 1001),
                ("0/work/src/main.rs".to_owned(), 1000, 1001),
            ]
        );
        assert!(
            entries(Content::All)
                .iter()
                .any(|(p, _, _)| p == "0/prompt.md")
        );
        let _ = std::fs::remove_dir_all(&host);
    }
}
