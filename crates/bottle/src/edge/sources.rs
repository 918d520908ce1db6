//! The trigger sources that do I/O: the directories of the manifest and of the host
//! files it names that change by themselves (inotify through `notify`) and the engine's
//! event stream (its reconnect logic is `bottle_core::watch::events`).
//! Both send [`Trigger`]s on a channel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use bottle_core::watch::backoff::Backoff;
use bottle_core::watch::metrics::Metrics;
use bottle_core::watch::triggers::Trigger;
use bottle_engine::Events;

/// Watch the directory of `manifest` (editors save by writing a new file and renaming
/// it over the old one, which a watch on the file itself would miss), and of each of
/// `host_files` (files the manifest names whose contents reach the desired state, such
/// as the host's Codex login, which the host's Codex rewrites when it refreshes its
/// token), and send [`Trigger::Manifest`] on every change to one of those names. Keep
/// the returned watcher alive for as long as the triggers are wanted.
pub fn watch_manifest(
    manifest: &Path,
    host_files: &[PathBuf],
    tx: UnboundedSender<Trigger>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    // An event's path is the watched directory joined with the name.
    let mut wanted = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for file in std::iter::once(manifest).chain(host_files.iter().map(PathBuf::as_path)) {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(name) = file.file_name() else {
            anyhow::bail!("{} names no file", file.display());
        };
        wanted.insert(dir.join(name));
        dirs.insert(dir);
    }
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Reads (our own reloads among them) are not changes.
        let change = match ev.kind {
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write,
            )) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if change && ev.paths.iter().any(|p| wanted.contains(p)) {
            let _ = tx.send(Trigger::Manifest);
        }
    })?;
    for dir in &dirs {
        w.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(w)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Follow `engine`'s events about `project` from now on (see
/// `bottle_core::watch::events::follow`), until `tx` closes: to be polled beside the
/// watch loop.
pub async fn follow_events<E: Events>(
    engine: &E,
    project: String,
    tx: UnboundedSender<Trigger>,
    metrics: std::sync::Arc<Metrics>,
) {
    let since = unix_now() - 1;
    bottle_core::watch::events::follow(engine, project, since, tx, Backoff::ENGINE, metrics).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether a trigger arrives within a second (then drain what follows it).
    fn triggered(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Trigger>) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            if let Ok(t) = rx.try_recv() {
                assert_eq!(t, Trigger::Manifest);
                std::thread::sleep(Duration::from_millis(100));
                while rx.try_recv().is_ok() {}
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_change_to_the_manifest_or_a_named_host_file_reloads_and_nothing_else_does() {
        let project = tempfile::tempdir().expect("tempdir");
        let codex = tempfile::tempdir().expect("tempdir");
        let manifest = project.path().join("bottles.yaml");
        let login = codex.path().join("auth.json");
        std::fs::write(&manifest, "a").expect("write");
        std::fs::write(&login, "a").expect("write");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _w = watch_manifest(&manifest, std::slice::from_ref(&login), tx).expect("watch");
        // The host's Codex refreshing its token: a new file renamed over the old one.
        let tmp = codex.path().join("auth.json.tmp");
        std::fs::write(&tmp, "b").expect("write");
        std::fs::rename(&tmp, &login).expect("rename");
        assert!(triggered(&mut rx), "the login's change reloads");
        std::fs::write(&manifest, "b").expect("write");
        assert!(triggered(&mut rx), "the manifest's change reloads");
        std::fs::write(codex.path().join("history.jsonl"), "x").expect("write");
        std::fs::write(project.path().join("notes.txt"), "x").expect("write");
        assert!(!triggered(&mut rx), "other files change nothing");
    }
}
