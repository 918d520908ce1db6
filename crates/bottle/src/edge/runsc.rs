//! The engine's runsc (gVisor) on trial, once per engine and runsc build: gathers the
//! [`RuntimeFacts`] that `bottle_core::runtime::resolve` decides from.
//!
//! When the engine lists a `runsc` runtime, a throwaway container runs
//! `bottle_core::runtime::PROBE_CMD` (`ls -d /`) under it ([`RuntimeProbe`]), and the
//! verdict is kept in `$XDG_CACHE_HOME/bottle/runsc-probe.json` (or
//! `~/.cache/bottle/...`), keyed by the engine's ID, runsc's path and arguments as the
//! engine reports them, and the size and modification time of that binary when it is on
//! this host (the engine reports no runsc version). A new runsc build or registration
//! is probed again; deleting the file forgets every verdict. A probe that could not run
//! (the base image missing, the engine refusing) counts as broken and is not cached.

use std::path::{Path, PathBuf};

use bottle_core::runtime::{PROBE_CMD, PROBE_IMAGE, Runsc, RuntimeFacts, verdict};
use bottle_engine::{EngineError, RuntimeInfo, RuntimeProbe};

/// Verdicts kept, newest last: one per engine and runsc build seen recently.
const MAX_ENTRIES: usize = 16;

/// The largest cache file read; a bigger one is ignored (and rewritten).
const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// What a verdict holds for: the engine and the runsc build it was probed on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeKey {
    /// The engine's ID (`docker info`).
    pub engine: String,
    /// runsc's path as the engine reports it.
    pub path: String,
    /// The arguments the engine passes it.
    pub args: Vec<String>,
    /// The binary's size and modification time (ns since the epoch), when the path
    /// exists on this host.
    pub binary: Option<(u64, i128)>,
}

/// One cached verdict.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Entry {
    key: ProbeKey,
    #[serde(flatten)]
    runsc: Runsc,
}

/// The cache file's contents.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Cache {
    entries: Vec<Entry>,
}

/// Where verdicts are cached on this host; `None` when neither `XDG_CACHE_HOME` nor
/// `HOME` is set (every run then probes).
pub fn default_path() -> Option<PathBuf> {
    super::cache_path("runsc-probe.json")
}

/// The engine's runtimes and the verdict on its runsc: cached at `cache` when known
/// there, else probed (and cached when the probe ran).
pub async fn facts<E: RuntimeProbe>(
    engine: &E,
    cache: Option<&Path>,
) -> Result<RuntimeFacts, EngineError> {
    let info = engine.runtime_info().await?;
    let available: Vec<String> = info.runtimes.iter().map(|r| r.name.clone()).collect();
    let Some(key) = key_of(&info) else {
        return Ok(RuntimeFacts {
            available,
            runsc: Runsc::Absent,
        });
    };
    if let Some(runsc) = cache.and_then(|c| cached(c, &key)) {
        tracing::debug!(?runsc, "runsc verdict from the cache");
        return Ok(RuntimeFacts { available, runsc });
    }
    let cmd: Vec<String> = PROBE_CMD.iter().map(|s| s.to_string()).collect();
    let runsc = match engine.probe_runtime("runsc", PROBE_IMAGE, &cmd).await {
        Ok(out) => {
            let runsc = verdict(&out);
            if let Some(c) = cache
                && let Err(e) = store(c, key, &runsc)
            {
                tracing::warn!(cache = %c.display(), error = %e, "cannot keep the runsc verdict");
            }
            runsc
        }
        Err(e @ EngineError::Unreachable(_)) => return Err(e),
        Err(e) => Runsc::Broken {
            defect: format!("the probe could not run under it ({e})"),
        },
    };
    Ok(RuntimeFacts { available, runsc })
}

/// The key of the engine's runsc, if it has one.
fn key_of(info: &RuntimeInfo) -> Option<ProbeKey> {
    let r = info.runtimes.iter().find(|r| r.name == "runsc")?;
    let binary = std::fs::metadata(&r.path).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        (
            m.len(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        )
    });
    Some(ProbeKey {
        engine: info.engine_id.clone(),
        path: r.path.clone(),
        args: r.args.clone(),
        binary,
    })
}

/// The cached verdict for `key`; `None` when absent or the file is unreadable.
fn cached(path: &Path, key: &ProbeKey) -> Option<Runsc> {
    let cache = read(path)?;
    cache
        .entries
        .into_iter()
        .rev()
        .find(|e| &e.key == key)
        .map(|e| e.runsc)
}

fn read(path: &Path) -> Option<Cache> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    f.take(MAX_CACHE_BYTES + 1).read_to_string(&mut text).ok()?;
    if text.len() as u64 > MAX_CACHE_BYTES {
        return None;
    }
    serde_json::from_str(&text).ok()
}

/// Record `runsc` for `key` (replacing an older verdict for it), atomically.
fn store(path: &Path, key: ProbeKey, runsc: &Runsc) -> std::io::Result<()> {
    let mut cache = read(path).unwrap_or_default();
    cache.entries.retain(|e| e.key != key);
    cache.entries.push(Entry {
        key,
        runsc: runsc.clone(),
    });
    let extra = cache.entries.len().saturating_sub(MAX_ENTRIES);
    cache.entries.drain(..extra);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_vec_pretty(&cache).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_engine::ExecOutput;
    use bottle_engine::fake::FakeEngine;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn probes(e: &FakeEngine) -> usize {
        e.calls().iter().filter(|c| c.starts_with("probe ")).count()
    }

    fn broken_engine() -> FakeEngine {
        let e = FakeEngine::default();
        e.set_runtime_entry("runsc", "/nonexistent/runsc", &["--platform=ptrace"]);
        e.script_probe(Ok(ExecOutput {
            code: 2,
            stdout: String::new(),
            stderr: "ls: cannot access '/': Invalid argument\n".into(),
        }));
        e
    }

    #[test]
    fn the_verdict_is_probed_once_then_read_from_the_cache() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let cache = dir.path().join("c/runsc-probe.json");
            let e = broken_engine();
            let first = facts(&e, Some(&cache)).await.unwrap();
            assert!(matches!(first.runsc, Runsc::Broken { .. }), "{first:?}");
            assert_eq!(first.available, vec!["runc", "runsc"]);
            assert_eq!(probes(&e), 1);
            assert_eq!(
                e.calls().iter().find(|c| c.starts_with("probe ")).unwrap(),
                "probe runsc debian:bookworm-slim: ls -d /"
            );
            // The same engine and runsc: no second probe, the same verdict.
            let again = facts(&e, Some(&cache)).await.unwrap();
            assert_eq!(again, first);
            assert_eq!(probes(&e), 1);
            // Registered with other arguments: probed again.
            e.set_runtime_entry("runsc", "/nonexistent/runsc", &["--platform=kvm"]);
            e.script_probe(Ok(ExecOutput::default()));
            let other = facts(&e, Some(&cache)).await.unwrap();
            assert_eq!(other.runsc, Runsc::Usable);
            assert_eq!(probes(&e), 2);
            // Deleting the file forgets every verdict.
            std::fs::remove_file(&cache).unwrap();
            facts(&e, Some(&cache)).await.unwrap();
            assert_eq!(probes(&e), 3);
        });
    }

    #[test]
    fn no_runsc_is_absent_without_a_probe_and_a_failed_probe_is_not_kept() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let cache = dir.path().join("runsc-probe.json");
            let e = FakeEngine::default();
            let f = facts(&e, Some(&cache)).await.unwrap();
            assert_eq!(f.runsc, Runsc::Absent);
            assert_eq!(probes(&e), 0);
            e.set_runtime_entry("runsc", "/nonexistent/runsc", &[]);
            e.script_probe(Err(EngineError::NotFound {
                kind: "image",
                name: "debian:bookworm-slim".into(),
            }));
            let f = facts(&e, Some(&cache)).await.unwrap();
            let Runsc::Broken { defect } = f.runsc else {
                panic!("a probe that cannot run is a broken runsc: {f:?}");
            };
            assert!(defect.contains("could not run"), "{defect}");
            assert!(!cache.exists());
            // A garbled cache file is ignored, then replaced.
            std::fs::write(&cache, "{not json").unwrap();
            e.script_probe(Ok(ExecOutput::default()));
            assert_eq!(facts(&e, Some(&cache)).await.unwrap().runsc, Runsc::Usable);
            let key = key_of(&e.runtime_info().await.unwrap()).unwrap();
            assert_eq!(cached(&cache, &key), Some(Runsc::Usable));
        });
    }
}
