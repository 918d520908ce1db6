//! The trigger sources that do I/O: the manifest's directory (inotify through `notify`)
//! and the engine's event stream (its reconnect logic is `bottle_core::watch::events`).
//! Both send [`Trigger`]s on a channel.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use bottle_core::watch::backoff::Backoff;
use bottle_core::watch::metrics::Metrics;
use bottle_core::watch::triggers::Trigger;
use bottle_docker::Docker;

/// Watch the directory of `manifest` (editors save by writing a new file and renaming
/// it over the old one, which a watch on the file itself would miss) and send
/// [`Trigger::Manifest`] on every change to the manifest's name. Keep the returned
/// watcher alive for as long as the triggers are wanted.
pub fn watch_manifest(
    manifest: &Path,
    tx: UnboundedSender<Trigger>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let dir = match manifest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = manifest.file_name().map(|n| n.to_os_string()) else {
        anyhow::bail!("{} names no file", manifest.display());
    };
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
        if change
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.send(Trigger::Manifest);
        }
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Follow the engine's events from now on, on a task of its own (see
/// `bottle_core::watch::events::follow`).
pub fn spawn_events(
    docker: &Docker,
    project: &str,
    tx: UnboundedSender<Trigger>,
    metrics: std::sync::Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let since = unix_now() - 1;
    let (docker, project) = (docker.clone(), project.to_string());
    tokio::spawn(async move {
        bottle_core::watch::events::follow(&docker, project, since, tx, Backoff::ENGINE, metrics)
            .await;
    })
}
