//! What a `bottle` binary needs to run in the sidecar image, which has no base image
//! (`Dockerfile.egress`): nothing more for a static build; for a dynamically linked one
//! (`cargo build --release`, `cargo install`), the host's loader it names (`PT_INTERP`)
//! and the closure of the libraries it needs (`DT_NEEDED`), found where the host's
//! loader finds them. They go to the image at the loader's own path and in
//! `/usr/lib/bottle` (the image's `LD_LIBRARY_PATH`), so the image never depends on the
//! host's distribution laying out its library directories one way or another.
//!
//! Only headers, program headers and the dynamic sections are read (through
//! `object`'s read cache), never a whole binary.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use bottle_core::images::SidecarFile;
use object::elf;
use object::read::ReadCache;
use object::read::elf::{ElfFile64, ProgramHeader as _};

/// Where the libraries go in the image (its `LD_LIBRARY_PATH`, `Dockerfile.egress`).
pub const IMAGE_LIBRARY_DIR: &str = "/usr/lib/bottle";

/// The most libraries followed: a real `bottle` needs about six.
const MAX_LIBRARIES: usize = 64;

/// Where the host's loader looks after `LD_LIBRARY_PATH` and a file's run path, on the
/// distributions bottle runs on (Debian's multiarch directories, then the others').
const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// Why the sidecar image cannot be made from a binary.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A file could not be opened or read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a 64-bit ELF this host can run, or its headers are malformed.
    #[error("{path} is not a 64-bit ELF executable or library: {reason}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A library a file needs is nowhere the host's loader would look.
    #[error(
        "{needed}, which {by} needs, is not in LD_LIBRARY_PATH, its run path or the system \
         library directories; build a static bottle instead (scripts/build-static.sh) and \
         point BOTTLE_SIDECAR_BINARY at it"
    )]
    NotFound {
        /// The library's name.
        needed: String,
        /// The file that needs it.
        by: PathBuf,
    },
    /// The libraries needed go on past [`MAX_LIBRARIES`].
    #[error("{path} needs more than {MAX_LIBRARIES} libraries")]
    TooMany {
        /// The binary.
        path: PathBuf,
    },
}

/// One ELF file's dynamic linking: its loader and the libraries it names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Linking {
    interpreter: Option<PathBuf>,
    needed: Vec<String>,
    /// `DT_RUNPATH` or `DT_RPATH` entries, `$ORIGIN` expanded.
    run_path: Vec<PathBuf>,
}

/// The files of the sidecar image for `binary`: `/bottle`, and for a dynamically linked
/// binary its loader and libraries.
pub fn sidecar_files(binary: &Path) -> Result<Vec<SidecarFile>, LinkError> {
    let mut files = vec![SidecarFile {
        image_path: "/bottle".into(),
        host: binary.to_path_buf(),
        mode: 0o755,
    }];
    let top = linking(binary)?;
    let Some(interpreter) = &top.interpreter else {
        return Ok(files);
    };
    let loader = real(interpreter)?;
    // The loader's own directory first: its libc is the one it was built with.
    let loader_dir = loader.parent().map(Path::to_path_buf);
    files.push(SidecarFile {
        image_path: interpreter.to_string_lossy().into_owned(),
        host: loader.clone(),
        mode: 0o755,
    });
    let env_dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| p.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut queue = vec![(binary.to_path_buf(), top)];
    while let Some((by, link)) = queue.pop() {
        for needed in link.needed {
            if !seen.insert(needed.clone()) {
                continue;
            }
            if seen.len() > MAX_LIBRARIES {
                return Err(LinkError::TooMany {
                    path: binary.to_path_buf(),
                });
            }
            let dirs = env_dirs
                .iter()
                .chain(&link.run_path)
                .chain(&loader_dir)
                .cloned()
                .chain(DEFAULT_DIRS.iter().map(PathBuf::from));
            let found = find(&needed, dirs).ok_or_else(|| LinkError::NotFound {
                needed: needed.clone(),
                by: by.clone(),
            })?;
            let host = real(&found)?;
            queue.push((found.clone(), linking(&found)?));
            // The loader is named as a library too (by libc): it is in the image already.
            if host != loader {
                // A name with a slash is a path the loader opens as is: it goes there.
                let image_path = if needed.contains('/') {
                    found.to_string_lossy().into_owned()
                } else {
                    format!("{IMAGE_LIBRARY_DIR}/{needed}")
                };
                files.push(SidecarFile {
                    image_path,
                    host,
                    mode: 0o644,
                });
            }
        }
    }
    Ok(files)
}

/// The first `dir/name` that is a file.
fn find(name: &str, dirs: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    dirs.map(|d| d.join(name)).find(|p| p.is_file())
}

/// `path` with every symlink resolved (a library is copied as the file it names).
fn real(path: &Path) -> Result<PathBuf, LinkError> {
    std::fs::canonicalize(path).map_err(|source| LinkError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Read `path`'s loader, needed libraries and run path.
fn linking(path: &Path) -> Result<Linking, LinkError> {
    let file = File::open(path).map_err(|source| LinkError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let not_elf = |e: object::read::Error| LinkError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let elf = ElfFile64::<object::Endianness, _>::parse(&cache).map_err(not_elf)?;
    let endian = elf.endian();
    let mut out = Linking::default();
    for ph in elf.elf_program_headers() {
        if let Some(interp) = ph.interpreter(endian, &cache).map_err(not_elf)? {
            out.interpreter = Some(PathBuf::from(String::from_utf8_lossy(interp).as_ref()));
        }
    }
    let origin = path.parent().unwrap_or(Path::new("/"));
    let table = elf
        .elf_section_table()
        .dynamic_table(endian, &cache)
        .map_err(not_elf)?;
    for d in &table {
        let text = || -> Result<String, LinkError> {
            Ok(String::from_utf8_lossy(table.string(d).map_err(not_elf)?).into_owned())
        };
        match d.tag {
            elf::DT_NEEDED => out.needed.push(text()?),
            elf::DT_RUNPATH | elf::DT_RPATH => {
                let origin = origin.to_string_lossy();
                out.run_path.extend(
                    text()?
                        .split(':')
                        .map(|p| p.replace("$ORIGIN", &origin))
                        .filter(|p| p.starts_with('/'))
                        .map(PathBuf::from),
                );
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_takes_its_loader_and_libraries() {
        // Test binaries are dynamically linked, as `cargo build` makes `bottle`.
        let me = std::env::current_exe().unwrap();
        let files = sidecar_files(&me).unwrap();
        assert_eq!(files[0].image_path, "/bottle");
        assert_eq!(files[0].host, me);
        let link = linking(&me).unwrap();
        let interp = link.interpreter.unwrap();
        assert_eq!(files[1].image_path, interp.to_string_lossy());
        let libs: Vec<_> = files[2..].iter().map(|f| f.image_path.as_str()).collect();
        assert!(libs.contains(&"/usr/lib/bottle/libc.so.6"), "{libs:?}");
        // Each library once, each a real file (not a symlink), each an ELF itself.
        let unique: BTreeSet<_> = libs.iter().collect();
        assert_eq!(unique.len(), libs.len());
        for f in &files[1..] {
            assert!(f.host.is_file() && !f.host.is_symlink(), "{f:?}");
            linking(&f.host).unwrap();
        }
    }

    #[test]
    fn a_static_binary_is_alone_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"\x7fELF not really").unwrap();
        let err = sidecar_files(&junk).unwrap_err();
        assert!(matches!(err, LinkError::NotElf { .. }), "{err}");
        let err = sidecar_files(&dir.path().join("gone")).unwrap_err();
        assert!(matches!(err, LinkError::Io { .. }), "{err}");
        // A static binary: the one built by scripts/build-static.sh when it exists.
        if let Some(p) = std::env::var_os("BOTTLE_SIDECAR_BINARY") {
            let files = sidecar_files(Path::new(&p)).unwrap();
            assert_eq!(files.len(), 1, "{files:?}");
        }
    }

    #[test]
    fn a_missing_library_is_named_with_what_needs_it() {
        let err = find(
            "libbottle-nowhere.so.1",
            DEFAULT_DIRS.iter().map(PathBuf::from),
        );
        assert!(err.is_none());
        let e = LinkError::NotFound {
            needed: "libx.so.1".into(),
            by: "/usr/local/bin/bottle".into(),
        };
        assert!(
            e.to_string()
                .starts_with("libx.so.1, which /usr/local/bin/bottle needs")
        );
    }
}
