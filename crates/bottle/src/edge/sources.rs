//! The trigger sources that do I/O: the manifest's directory (inotify through `notify`)
//! and the engine's event stream (with reconnect). Both send [`Trigger`]s on a channel.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use bottle_core::watch::backoff::Backoff;
use bottle_core::watch::metrics::Metrics;
use bottle_core::watch::triggers::{Trigger, event_filters, relevant};
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

/// Follow the engine's events about `project` until `tx` closes. The subscription
/// starts at `since` (unix seconds): the stream is lazy, so events before it is first
/// polled are caught only by the replay. When the stream is lost (daemon restart,
/// socket gone), wait with backoff until the engine answers a ping, resubscribe from
/// the last event seen (replayed by the daemon, so nothing is missed; repeats are
/// harmless), and send [`Trigger::Reconnected`] so a full resync follows.
pub async fn follow_events(
    docker: Docker,
    project: String,
    since: i64,
    tx: UnboundedSender<Trigger>,
    backoff: Backoff,
    metrics: std::sync::Arc<Metrics>,
) {
    let filters = event_filters();
    let mut since = since;
    let mut failures: u32 = 0;
    // ThreadRng is not Send: this task may move between threads.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
    loop {
        let stream = docker.events(Some(since), &filters);
        let mut stream = std::pin::pin!(stream);
        let lost = loop {
            match stream.next().await {
                Some(Ok(ev)) => {
                    // Resubscribe from this second: the daemon's `since` is inclusive.
                    since = since.max(ev.time_nano.div_euclid(1_000_000_000));
                    if let Some(t) = relevant(&ev, &project) {
                        tracing::debug!(trigger = %t, "engine event");
                        if tx.send(t).is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the engine closed the stream".to_string(),
            }
        };
        if tx.is_closed() {
            return;
        }
        tracing::warn!(error = %lost, since, "engine event stream lost; reconnecting");
        metrics.stream_reconnect();
        loop {
            failures += 1;
            let wait = backoff.delay(failures, &mut rng);
            tokio::time::sleep(wait).await;
            if tx.is_closed() {
                return;
            }
            match docker.ping().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.ceiling(failures + 1), "engine still unreachable");
                }
            }
        }
        failures = 0;
        tracing::info!(since, "engine event stream resubscribed");
        if tx.send(Trigger::Reconnected).is_err() {
            return;
        }
    }
}

/// Start [`follow_events`] from now on a task of its own.
pub fn spawn_events(
    docker: &Docker,
    project: &str,
    tx: UnboundedSender<Trigger>,
    metrics: std::sync::Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let since = unix_now() - 1;
    tokio::spawn(follow_events(
        docker.clone(),
        project.to_string(),
        since,
        tx,
        Backoff::ENGINE,
        metrics,
    ))
}
