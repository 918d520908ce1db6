//! The hidden `bottle sidecar read-files` and `write-file`: small files in a sidecar's
//! own volume, for the engine on Kubernetes, which execs them in the container as its
//! own user (the image has no shell and no `tar`; docs/design.md section 9.10). How
//! `bottle queue` reads supervise's proposals and writes its decisions there. The frame,
//! the names and the bounds are `bottle_contract::volume_files`, shared with the engine.

use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use bottle_contract::volume_files::{self as vf, FramingError, Listing};

/// Why a read or a write failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> FilesError {
    move |source| FilesError::Io { what, source }
}

/// The regular files directly in `dir` whose names come after `after`, in name order,
/// as many as one listing holds; an empty listing when `dir` does not exist. Links are
/// not followed (a link is not listed, and a file is opened without following one);
/// a name that is not a plain UTF-8 file name, and a file larger than
/// [`vf::MAX_FILE`], are left out.
pub fn list(dir: &Path, after: Option<&str>) -> Result<Listing, FilesError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::new()),
        Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
    };
    let mut names = Vec::new();
    for ent in entries {
        let ent = ent.map_err(io(format!("listing {}", dir.display())))?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        if vf::valid_name(&name) && after.is_none_or(|a| name.as_str() > a) {
            names.push(name);
        }
    }
    names.sort();
    let mut listing = Listing::new();
    for name in names {
        let Some(contents) = read_file(&dir.join(&name))? else {
            continue;
        };
        if !listing.push(name, contents) {
            break;
        }
    }
    Ok(listing)
}

/// A regular file's contents when it is one (not a link) of at most [`vf::MAX_FILE`]
/// bytes; `None` otherwise, or when it went away meanwhile.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, FilesError> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        // Gone, or a link (ELOOP): not a file of the listing.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io(format!("opening {}", path.display()))(e)),
    };
    let meta = f
        .metadata()
        .map_err(io(format!("reading {}", path.display())))?;
    if !meta.is_file() || meta.len() > vf::MAX_FILE {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    f.take(vf::MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(io(format!("reading {}", path.display())))?;
    // Grown past the bound since it was measured: left out, as a larger one is.
    Ok((data.len() as u64 <= vf::MAX_FILE).then_some(data))
}

/// Write `contents` as `dir/name` (`dir` made when missing, mode 0755): to a temporary
/// file in `dir`, then renamed over `name`, so a reader never sees half of it. The name
/// must be a plain file name (`vf::valid_name`).
pub fn write(dir: &Path, name: &str, contents: &[u8]) -> Result<(), FilesError> {
    use std::io::Write as _;
    if !vf::valid_name(name) {
        return Err(FramingError::BadName(name.into()).into());
    }
    if contents.len() as u64 > vf::MAX_FILE {
        return Err(FramingError::TooLarge(contents.len() as u64).into());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io(format!("making {}", dir.display())))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let dst = dir.join(name);
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dst)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(format!("writing {}", dst.display()))(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_plain_regular_files_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.json"), b"B").unwrap();
        std::fs::write(d.path().join("a.json"), b"A").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/c.json"), b"C").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link.json")).unwrap();
        std::fs::write(d.path().join("big"), vec![0u8; vf::MAX_FILE as usize + 1]).unwrap();
        let l = list(d.path(), None).unwrap();
        let got: Vec<(&str, &[u8])> = l
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.contents.as_slice()))
            .collect();
        assert_eq!(got, [("a.json", &b"A"[..]), ("b.json", &b"B"[..])]);
        assert!(!l.more);
        let after = list(d.path(), Some("a.json")).unwrap();
        assert_eq!(after.files.len(), 1);
        assert!(
            list(&d.path().join("missing"), None)
                .unwrap()
                .files
                .is_empty()
        );
    }

    #[test]
    fn a_full_directory_comes_in_batches() {
        let d = tempfile::tempdir().unwrap();
        let n = vf::MAX_BATCH_FILES + 3;
        for i in 0..n {
            std::fs::write(d.path().join(format!("f{i:04}")), b"x").unwrap();
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let l = list(d.path(), after.as_deref()).unwrap();
            let l = Listing::decode(&l.encode(), after.as_deref()).unwrap();
            seen.extend(l.files.iter().map(|f| f.name.clone()));
            if !l.more {
                break;
            }
            after = l.files.last().map(|f| f.name.clone());
        }
        assert_eq!(seen.len(), n);
    }

    #[test]
    fn writes_whole_files_and_refuses_paths() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("decisions");
        write(&dir, "p1.json", b"one").unwrap();
        write(&dir, "p1.json", b"two").unwrap();
        assert_eq!(std::fs::read(dir.join("p1.json")).unwrap(), b"two");
        for bad in ["../p1.json", "a/b", "..", ""] {
            assert!(
                matches!(
                    write(&dir, bad, b"x"),
                    Err(FilesError::Framing(FramingError::BadName(_)))
                ),
                "{bad:?}"
            );
        }
        // No temporary file is left behind, and nothing was written above the dir.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["p1.json"]);
        assert!(!d.path().join("p1.json").exists());
    }

    #[test]
    fn the_contract_commands_parse_as_sidecar_arguments() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: crate::SidecarArgs,
        }
        let read = vf::read_command("/state/proposals", Some("p1.json")).unwrap();
        let cli = Cli::try_parse_from(&read[1..]).map(|c| c.args);
        let cli = cli.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.kind, crate::Kind::ReadFiles));
        assert_eq!(
            (cli.dir.as_deref(), cli.after.as_deref()),
            (Some("/state/proposals"), Some("p1.json"))
        );
        let write = vf::write_command("/state/decisions", "p1.json", b"{}").unwrap();
        let cli = Cli::try_parse_from(&write[1..]).unwrap().args;
        assert!(matches!(cli.kind, crate::Kind::WriteFile));
        assert_eq!((cli.name.as_deref(), cli.bytes), (Some("p1.json"), Some(2)));
    }
}
