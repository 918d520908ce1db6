//! Build contexts for the images `bottle` builds: the list of files (held, or on the
//! host) that a build streams as a deterministic tar, and its content hash.
//!
//! The hash covers each file's path, mode and content digest, so it changes only when
//! content or modes change; it is the image tag, and an image is rebuilt only when its
//! tag is missing. A host file's digest is looked up by its path, size, mtime, ctime and
//! inode ([`load_digests`] keeps them across runs), so a plan that builds nothing reads
//! no file content and holds no tar: the tar is written only while a build streams it
//! (`bottle_engine::ContextFiles::write_tar`). The sidecar image is the top-level
//! `Dockerfile.egress` over the `bottle` binary (and, for a dynamic build, what it links).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use bottle_engine::{ContextEntry, ContextFiles, EntryData};

use crate::hash::content_hash;
use bottle_contract::labels;
use bottle_model::{ImageSource, Provider};

/// Largest build context accepted, to keep memory bounded.
const MAX_CONTEXT_BYTES: u64 = 512 << 20;
/// Name of the Dockerfile inside a context when it lives outside the context directory.
const OUTSIDE_DOCKERFILE: &str = ".bottle.Dockerfile";
/// The name an approved Dockerfile gets in its build context.
const GRANTED_DOCKERFILE: &str = ".bottle.granted.Dockerfile";

/// A build context failed to read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file or directory of a context (or the sidecar binary) could not be read.
    #[error("reading build context {path}")]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The files of a context add up to more than the bound on a build context (512 MiB).
    #[error("build context {path} is larger than {MAX_CONTEXT_BYTES} bytes")]
    TooLarge {
        /// The context directory.
        path: PathBuf,
    },
    /// A context's `.dockerignore` has a line Docker would refuse.
    #[error("{path}:{}: {}", source.line, source.message)]
    Ignore {
        /// The `.dockerignore` file.
        path: PathBuf,
        /// The line and what is wrong with it.
        source: crate::dockerignore::IgnoreError,
    },
}

/// A context ready to build: its files, the Dockerfile path inside it, its content hash.
#[derive(Clone)]
pub struct Context {
    /// The context's files in tar order (shared, so a cached context costs no copy).
    pub files: Arc<ContextFiles>,
    /// The path of the Dockerfile inside the tar.
    pub dockerfile: String,
    /// The content hash of the tar ([`HASH_LEN`](crate::hash::HASH_LEN) hex characters),
    /// which becomes the image tag.
    pub hash: String,
}

/// The build context of an agent image. Files in `exclude` (the manifest itself, key
/// files it names) are left out: they are not build inputs, and a key must not travel to
/// the engine in a build context.
pub fn agent_context(
    source: &ImageSource,
    provider: Provider,
    exclude: &[PathBuf],
) -> Result<Context, ImageError> {
    let mut tar = ContextBuilder {
        exclude: exclude.to_vec(),
        ..ContextBuilder::default()
    };
    let dockerfile = match source {
        ImageSource::ProviderDefault => {
            tar.file("Dockerfile", provider.dockerfile().as_bytes(), 0o644);
            "Dockerfile".to_string()
        }
        ImageSource::Granted {
            dockerfile,
            context,
        } => {
            if let Some(context) = context {
                tar.context(context, None)?;
            }
            tar.file(GRANTED_DOCKERFILE, dockerfile.as_bytes(), 0o644);
            GRANTED_DOCKERFILE.to_string()
        }
        ImageSource::Dockerfile {
            dockerfile,
            context,
        } => {
            let inside = dockerfile
                .strip_prefix(context)
                .ok()
                .map(|rel| rel.to_string_lossy().into_owned());
            tar.context(context, inside.as_deref())?;
            match dockerfile.strip_prefix(context) {
                Ok(rel) => rel.to_string_lossy().into_owned(),
                Err(_) => {
                    let text = read(dockerfile)?;
                    tar.file(OUTSIDE_DOCKERFILE, &text, 0o644);
                    OUTSIDE_DOCKERFILE.to_string()
                }
            }
        }
    };
    Ok(tar.finish(dockerfile))
}

/// What an agent build context is made from.
type ContextKey = (ImageSource, Provider, Vec<PathBuf>);

/// The agent build contexts and skill digests made for one desired state, by what they
/// were made from: a rebuild of the state with grants reuses them rather than reading
/// and tarring every context again. It lives as long as the manifest it was built from
/// (a reload starts a new one), which is when contexts are read today.
#[derive(Default)]
pub struct ContextCache {
    agents: Mutex<HashMap<ContextKey, Context>>,
    trees: Mutex<HashMap<PathBuf, String>>,
}

impl ContextCache {
    /// [`agent_context`], made once per source, provider and exclusions.
    pub fn agent_context(
        &self,
        source: &ImageSource,
        provider: Provider,
        exclude: &[PathBuf],
    ) -> Result<Context, ImageError> {
        let key = (source.clone(), provider, exclude.to_vec());
        if let Some(c) = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(c.clone());
        }
        let made = agent_context(source, provider, exclude)?;
        self.agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, made.clone());
        Ok(made)
    }

    /// [`tree_digest`], made once per directory.
    pub fn tree_digest(&self, dir: &Path) -> Result<String, ImageError> {
        if let Some(d) = self
            .trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(dir)
        {
            return Ok(d.clone());
        }
        let made = tree_digest(dir)?;
        self.trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dir.to_path_buf(), made.clone());
        Ok(made)
    }

    /// How many contexts and tree digests are held.
    pub fn len(&self) -> (usize, usize) {
        let agents = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let trees = self
            .trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (agents, trees)
    }
}

impl Clone for ContextCache {
    fn clone(&self) -> Self {
        ContextCache {
            agents: Mutex::new(
                self.agents
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            ),
            trees: Mutex::new(
                self.trees
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            ),
        }
    }
}

impl std::fmt::Debug for ContextCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (agents, trees) = self.len();
        f.debug_struct("ContextCache")
            .field("agents", &agents)
            .field("trees", &trees)
            .finish()
    }
}

/// A content digest of a directory tree (paths, modes, contents), for spec hashes of
/// things copied in at creation (skills). Bounded like a build context.
pub fn tree_digest(dir: &Path) -> Result<String, ImageError> {
    let mut tar = ContextBuilder::default();
    tar.dir(dir, dir)?;
    Ok(tar.finish(String::new()).hash)
}

/// Tag of a project's agent image for a context hash (shared by every agent whose
/// context is the same).
pub fn agent_tag(project: &str, hash: &str) -> String {
    format!("{}:{hash}", labels::agent_image_repo(project))
}

/// The sidecar image's Dockerfile: the top-level `Dockerfile.egress`, its one definition.
pub const SIDECAR_DOCKERFILE: &str = include_str!("../../../Dockerfile.egress");

/// A file of the sidecar image: where it goes in the image (absolute), which host file
/// it is, and its mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarFile {
    /// Its absolute path in the image.
    pub image_path: String,
    /// The host file it is a copy of.
    pub host: PathBuf,
    /// Its mode in the image.
    pub mode: u32,
}

/// The sidecar image's context: [`SIDECAR_DOCKERFILE`] and `rootfs/` holding `files`
/// (the `bottle` binary at `/bottle`, and for a dynamically linked one its loader and
/// libraries). Each file is a host entry like any context file: hashed by its
/// metadata, read only while a build streams it.
#[expect(
    clippy::disallowed_methods,
    reason = "the files' metadata, for their cached digests"
)]
pub fn sidecar_context(files: &[SidecarFile]) -> Result<Context, ImageError> {
    let mut tar = ContextBuilder::default();
    tar.file("Dockerfile", SIDECAR_DOCKERFILE.as_bytes(), 0o644);
    for f in files {
        let meta = std::fs::metadata(&f.host).map_err(|source| ImageError::Io {
            path: f.host.clone(),
            source,
        })?;
        let rel = format!("rootfs/{}", f.image_path.trim_start_matches('/'));
        tar.host_file(rel, &f.host, &meta, f.mode)?;
    }
    Ok(tar.finish("Dockerfile".into()))
}

/// Tag of the sidecar image for a context hash.
pub fn sidecar_tag(hash: &str) -> String {
    format!("{}:{hash}", labels::SIDECAR_IMAGE_REPO)
}

#[expect(
    clippy::disallowed_methods,
    reason = "build contexts are read while the first desired state of a manifest is built \
              (rebuilds reuse them through ContextCache); moving them to bottle-model with \
              streamed digests is the build-context issue's work"
)]
fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Collects a context's entries and their content digests.
#[derive(Default)]
struct ContextBuilder {
    entries: Vec<(ContextEntry, [u8; 32])>,
    size: u64,
    exclude: Vec<PathBuf>,
    /// The context's `.dockerignore`, while its directory is walked.
    ignore: Option<crate::dockerignore::Ignore>,
    /// Paths (relative to the context root) sent whatever `.dockerignore` says, as
    /// Docker sends them: the Dockerfile and `.dockerignore` itself.
    always: Vec<String>,
}

impl ContextBuilder {
    /// A file whose bytes bottle holds (a Dockerfile it made, the sidecar binary).
    fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.size += data.len() as u64;
        let digest = Sha256::digest(data).into();
        self.entries.push((
            ContextEntry {
                path: path.to_string(),
                mode,
                data: EntryData::Inline(Bytes::copy_from_slice(data)),
            },
            digest,
        ));
    }

    /// Add a build context directory: with a `.dockerignore` at its root, what Docker
    /// would send (the Dockerfile at `dockerfile` inside it always); without one, every
    /// file but `.git` and `target`. The size bound counts what is sent.
    #[expect(
        clippy::disallowed_methods,
        reason = "build contexts are still read while the desired state is built"
    )]
    fn context(&mut self, root: &Path, dockerfile: Option<&str>) -> Result<(), ImageError> {
        let path = root.join(".dockerignore");
        self.ignore = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                crate::dockerignore::Ignore::parse(&text)
                    .map_err(|source| ImageError::Ignore { path, source })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ImageError::Io { path, source }),
        };
        self.always = [Some(".dockerignore"), dockerfile]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect();
        let r = self.dir(root, root);
        self.ignore = None;
        r
    }

    /// Whether the entry at `rel` (a directory when `dir`) is left out of the walk.
    fn skipped(&self, rel: &str, name: &std::ffi::OsStr, dir: bool) -> bool {
        match &self.ignore {
            None => name == ".git" || name == "target",
            Some(_) if self.always.iter().any(|a| a == rel) => false,
            // An excluded directory is still walked when a later `!` may bring back
            // something inside it.
            Some(ig) => ig.excludes(rel) && !(dir && ig.has_exceptions()),
        }
    }

    /// Add every file under `dir` that [`skipped`](Self::skipped) keeps, not following
    /// symlinks.
    #[expect(
        clippy::disallowed_methods,
        reason = "build contexts are still read while the desired state is built; moving them to \
                  bottle-model with streamed, cached digests is the build-context issue's work"
    )]
    fn dir(&mut self, root: &Path, dir: &Path) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| ImageError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = e.file_name();
            if self.exclude.contains(&path) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(|source| ImageError::Io {
                path: path.clone(),
                source,
            })?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if self.skipped(&rel, &name, meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                self.dir(root, &path)?;
            } else if meta.is_file() {
                // A file of a walked-but-excluded directory (see `skipped`).
                if self.ignore.as_ref().is_some_and(|ig| ig.excludes(&rel))
                    && !self.always.contains(&rel)
                {
                    continue;
                }
                if self.size + meta.len() > MAX_CONTEXT_BYTES {
                    return Err(ImageError::TooLarge {
                        path: root.to_path_buf(),
                    });
                }
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                self.host_file(rel, &path, &meta, mode)?;
            }
        }
        Ok(())
    }

    /// A host file, read when the tar is written; its digest found by its metadata.
    fn host_file(
        &mut self,
        rel: String,
        path: &Path,
        meta: &std::fs::Metadata,
        mode: u32,
    ) -> Result<(), ImageError> {
        let digest = host_digest(path, meta)?;
        self.size += meta.len();
        self.entries.push((
            ContextEntry {
                path: rel,
                mode,
                data: EntryData::Host {
                    path: path.to_path_buf(),
                    size: meta.len(),
                },
            },
            digest,
        ));
        Ok(())
    }

    /// The entries in path order and the context's hash over (path, mode, size,
    /// content digest) of each.
    fn finish(mut self, dockerfile: String) -> Context {
        self.entries.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        let mut h = Sha256::new();
        for (e, digest) in &self.entries {
            let size = match &e.data {
                EntryData::Inline(b) => b.len() as u64,
                EntryData::Host { size, .. } => *size,
            };
            h.update(e.path.as_bytes());
            h.update([0]);
            h.update(e.mode.to_le_bytes());
            h.update(size.to_le_bytes());
            h.update(digest);
        }
        let hash = content_hash(&h.finalize());
        Context {
            files: Arc::new(ContextFiles {
                entries: self.entries.into_iter().map(|(e, _)| e).collect(),
            }),
            dockerfile,
            hash,
        }
    }
}

/// A host file's content digest by what `stat` says of it: path, size, mtime, ctime,
/// inode. Read (streamed, 64 KiB at a time) only when none of that is known.
type StatKey = String;

fn digests() -> &'static Mutex<HashMap<StatKey, [u8; 32]>> {
    static D: std::sync::OnceLock<Mutex<HashMap<StatKey, [u8; 32]>>> = std::sync::OnceLock::new();
    D.get_or_init(Default::default)
}

/// Host files read for their digest in this process, for tests.
#[cfg(test)]
fn read_log() -> &'static Mutex<Vec<PathBuf>> {
    static L: std::sync::OnceLock<Mutex<Vec<PathBuf>>> = std::sync::OnceLock::new();
    L.get_or_init(Default::default)
}

fn stat_key(path: &Path, meta: &std::fs::Metadata) -> StatKey {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{}:{}.{}:{}.{}:{}",
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.len()
    ) + "\0"
        + &path.to_string_lossy()
}

#[expect(
    clippy::disallowed_methods,
    reason = "build contexts are still read while the desired state is built"
)]
fn host_digest(path: &Path, meta: &std::fs::Metadata) -> Result<[u8; 32], ImageError> {
    use std::io::Read as _;
    let key = stat_key(path, meta);
    if let Some(d) = digests()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(*d);
    }
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    #[cfg(test)]
    read_log()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(path.to_path_buf());
    let d: [u8; 32] = h.finalize().into();
    digests()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, d);
    UNSAVED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(d)
}

/// Digests were learnt since the cache was last loaded or saved.
static UNSAVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The most digests kept across runs.
const MAX_DIGESTS: usize = 500_000;

/// Load the digests an earlier run saved at `path` (a missing or damaged file is an
/// empty cache: it only costs reads).
#[expect(clippy::disallowed_methods, reason = "the digest cache is a host file")]
pub fn load_digests(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let mut map = digests().lock().unwrap_or_else(PoisonError::into_inner);
    for line in text.lines().take(MAX_DIGESTS) {
        let Some((hex_digest, key)) = line.split_once(' ') else {
            continue;
        };
        let mut d = [0u8; 32];
        if hex::decode_to_slice(hex_digest, &mut d).is_ok() {
            map.entry(key.replace("\\n", "\n").replace("\\0", "\0"))
                .or_insert(d);
        }
    }
}

/// Save the digests known to this process at `path` (atomically: a temporary file
/// renamed over it), when it learnt any since it loaded them: a no-op writes nothing.
#[expect(clippy::disallowed_methods, reason = "the digest cache is a host file")]
pub fn save_digests(path: &Path) -> std::io::Result<()> {
    if !UNSAVED.swap(false, std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let map = digests().lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = String::new();
    for (key, d) in map.iter().take(MAX_DIGESTS) {
        out.push_str(&hex::encode(d));
        out.push(' ');
        out.push_str(&key.replace('\n', "\\n").replace('\0', "\\0"));
        out.push('\n');
    }
    drop(map);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests lay out build contexts on disk"
)]
mod tests {
    use super::*;

    #[test]
    fn context_hash_is_stable_and_content_sensitive() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), "x").unwrap();
        let src = ImageSource::Dockerfile {
            dockerfile: d.path().join("Dockerfile"),
            context: d.path().to_path_buf(),
        };
        let manifest = d.path().join("bottles.yaml");
        let ex = [manifest.clone()];
        let a = agent_context(&src, Provider::Claude, &ex).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), "y").unwrap();
        std::fs::write(&manifest, "changed").unwrap();
        let b = agent_context(&src, Provider::Claude, &ex).unwrap();
        assert_eq!(
            a.hash, b.hash,
            ".git and the manifest are not part of the context"
        );
        std::fs::write(d.path().join("extra"), "1").unwrap();
        let c = agent_context(&src, Provider::Claude, &ex).unwrap();
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.dockerfile, "Dockerfile");
    }

    #[test]
    fn a_dockerignore_leaves_out_what_docker_would_and_its_files_change_nothing() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, c: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        };
        w("Dockerfile", "FROM scratch\n");
        w(
            ".dockerignore",
            "node_modules\n*.log\n!keep.log\nDockerfile\n",
        );
        w("node_modules/big/index.js", "x");
        w("app.log", "log");
        w("keep.log", "kept");
        w("src/main.rs", "fn main() {}");
        w(".git/HEAD", "sent: .dockerignore does not name it");
        let src = ImageSource::Dockerfile {
            dockerfile: d.path().join("Dockerfile"),
            context: d.path().to_path_buf(),
        };
        let paths = |c: &Context| {
            let tar = c.files.to_tar().unwrap();
            let mut a = tar::Archive::new(&tar[..]);
            let mut v: Vec<String> = a
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let a = agent_context(&src, Provider::Claude, &[]).unwrap();
        assert_eq!(
            paths(&a),
            [
                ".dockerignore",
                ".git/HEAD",
                "Dockerfile",
                "keep.log",
                "src/main.rs"
            ],
            "the Dockerfile and .dockerignore are sent even when listed"
        );
        w("node_modules/big/index.js", "changed");
        w("app.log", "changed");
        let b = agent_context(&src, Provider::Claude, &[]).unwrap();
        assert_eq!(a.hash, b.hash, "ignored files are no build input");
        w(".dockerignore", "ok\n!\n");
        let Err(err) = agent_context(&src, Provider::Claude, &[]) else {
            panic!("a bad .dockerignore line is an error")
        };
        let err = err.to_string();
        assert!(
            err.ends_with(".dockerignore:2: an exception (`!`) with no pattern"),
            "{err}"
        );
    }

    #[test]
    fn a_second_digest_reads_no_content_and_the_cache_survives_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY big /\n").unwrap();
        std::fs::write(ctx.join("big"), vec![7u8; 3 << 20]).unwrap();
        let src = ImageSource::Dockerfile {
            dockerfile: ctx.join("Dockerfile"),
            context: ctx.clone(),
        };
        let reads = || {
            read_log()
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.starts_with(&ctx))
                .count()
        };
        let a = agent_context(&src, Provider::Claude, &[]).unwrap();
        assert_eq!(reads(), 2, "the first digest reads each file once");
        let b = agent_context(&src, Provider::Claude, &[]).unwrap();
        assert_eq!((reads(), &a.hash), (2, &b.hash), "a no-op reads no content");
        // What the build streams is the files as they are, in a deterministic tar.
        assert_eq!(a.files.to_tar().unwrap(), b.files.to_tar().unwrap());

        // Saved and loaded again: a new process would read nothing either.
        let cache = d.path().join("cache/digests");
        save_digests(&cache).unwrap();
        digests().lock().unwrap().clear();
        load_digests(&cache);
        let c = agent_context(&src, Provider::Claude, &[]).unwrap();
        assert_eq!((reads(), &c.hash), (2, &a.hash));

        // A change is seen (size and mtime differ): that file alone is read again.
        std::fs::write(ctx.join("big"), vec![8u8; 3 << 20]).unwrap();
        let e = agent_context(&src, Provider::Claude, &[]).unwrap();
        assert_eq!(reads(), 3);
        assert_ne!(e.hash, a.hash);
    }

    #[test]
    fn the_sidecar_image_is_dockerfile_egress_over_a_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, lib) = (dir.path().join("bottle"), dir.path().join("libc.so.6"));
        std::fs::write(&bin, b"binary").unwrap();
        std::fs::write(&lib, b"library").unwrap();
        let file = |image_path: &str, host: &Path, mode| SidecarFile {
            image_path: image_path.into(),
            host: host.to_path_buf(),
            mode,
        };
        let alone = sidecar_context(&[file("/bottle", &bin, 0o755)]).unwrap();
        let files = [
            file("/bottle", &bin, 0o755),
            file("/usr/lib/bottle/libc.so.6", &lib, 0o644),
        ];
        let c = sidecar_context(&files).unwrap();
        let entries: Vec<_> = c
            .files
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.mode))
            .collect();
        assert_eq!(
            entries,
            [
                ("Dockerfile", 0o644),
                ("rootfs/bottle", 0o755),
                ("rootfs/usr/lib/bottle/libc.so.6", 0o644)
            ]
        );
        assert_eq!(c.dockerfile, "Dockerfile");
        assert!(SIDECAR_DOCKERFILE.contains("COPY rootfs/ /"));
        // A library more is another image; a missing file is an error naming it.
        assert_ne!(alone.hash, c.hash);
        let err = sidecar_context(&[file("/bottle", &dir.path().join("gone"), 0o755)])
            .err()
            .unwrap();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
