//! `bottle apply`: converge Docker to the manifest. Progress per operation on stderr,
//! the summary on stdout. With `--watch`, keep converging (see [`crate::watch`]).
//! Both take the project's writer lock and run the same pass,
//! [`crate::apply::reconcile_once`], then wait until what it changed is in force
//! ([`crate::ready`]), up to `--timeout`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{
    ApplyArgs, Backend, Output, connect, connect_kube, desired_state, load_manifest, lock_project,
    render, runtime_facts, with_runtime_facts,
};
use crate::apply::{Outcome, ReconcileOptions, Reconciled, reconcile_once};
use crate::engine::{Engine, Events, Exec};
use crate::graph::DesiredState;
use crate::ready;
use crate::runtime::RuntimeFacts;
use crate::watch::{self, Metrics};

pub async fn run(args: ApplyArgs) -> anyhow::Result<i32> {
    let manifest = load_manifest(&args.manifest.file)?;
    let _lock = lock_project(&manifest.project, args.wait_lock).await?;
    if args.watch {
        // The host's Codex logins change when the host's Codex refreshes its token:
        // reloading then gives egress the new one.
        let logins: Vec<_> = manifest
            .agents
            .values()
            .filter_map(|a| a.host_login.as_ref().map(|l| l.path.clone()))
            .collect();
        let project = manifest.project;
        if args.backend.backend == Backend::Kubernetes {
            // No runtime facts: the cluster's runtime is runc (section 9.5).
            let kube = connect_kube(&project, &args.backend, true).await?;
            return run_watch(&kube, None, args, project, logins).await;
        }
        let docker = connect().await?;
        // Gathered once: a verdict is cached per runsc build anyway.
        let facts = runtime_facts(&docker).await?;
        return run_watch(&docker, Some(facts), args, project, logins).await;
    }
    let desired =
        desired_state(&manifest)?.with_addressing(crate::edge::host::addressing(args.subnet_pool));
    let options = ReconcileOptions {
        prune: args.prune,
        concurrency: args.concurrency,
        now: bottle_contract::supervise::now(),
        ..ReconcileOptions::default()
    };
    if args.backend.backend == Backend::Kubernetes {
        let kube = connect_kube(&manifest.project, &args.backend, true).await?;
        let r = pass(&kube, &desired, &options).await?;
        refusals(&manifest, &r);
        return settle(&kube, r, &args).await;
    }
    let docker = connect().await?;
    let desired = with_runtime_facts(&docker, desired).await?;
    let r = pass(&docker, &desired, &options).await?;
    refusals(&manifest, &r);
    settle(&docker, r, &args).await
}

/// Each refusal of what the manifest asked for, placed in it (its text read again, only
/// when there is one: an unreadable file now only loses the places).
fn refusals(manifest: &crate::model::Manifest, r: &Reconciled) {
    for line in refusal_lines(manifest, &r.reports) {
        eprintln!("{line}");
    }
}

fn refusal_lines(
    manifest: &crate::model::Manifest,
    reports: &[bottle_core::apply::OpReport],
) -> Vec<String> {
    let read = || crate::manifest::read_text(&manifest.path).ok();
    crate::provenance::refusals(reports, manifest, read)
}

/// After the pass `r`: wait until what it changed is in force (every sidecar made or
/// started serves, every rewritten live config is loaded by each sidecar that reads it:
/// probed through `engine`'s exec), print the summary; the exit status.
async fn settle<E: Exec>(engine: &E, r: Reconciled, args: &ApplyArgs) -> anyhow::Result<i32> {
    let failed = r
        .reports
        .iter()
        .any(|r| !matches!(r.outcome, Outcome::Done));
    let expects = if args.no_wait { Vec::new() } else { r.expects };
    let settled = ready::settle(engine, expects, args.timeout, &mut |s| {
        eprintln!("{}", render::ready_line(s))
    })
    .await;
    let not_ready = settled.iter().filter(|s| !s.outcome.is_ready()).count();
    match args.manifest.output {
        Output::Json => {
            let mut v = render::report_json(&r.reports);
            v["readiness"] = render::ready_json(&settled);
            println!("{v}")
        }
        Output::Text => println!("{}", render::summary(&r.reports)),
    }
    if not_ready > 0 {
        eprintln!(
            "error: {not_ready} container(s) not ready within {}s (--timeout); the rest of the project is converged",
            args.timeout.as_secs()
        );
    }
    Ok(if failed || not_ready > 0 { 2 } else { 0 })
}

/// One pass on `engine`: the plan and each operation's progress on stderr.
async fn pass<E: Engine>(
    engine: &E,
    desired: &DesiredState,
    options: &ReconcileOptions,
) -> anyhow::Result<Reconciled> {
    Ok(reconcile_once(
        engine,
        desired,
        options,
        &mut |p| {
            if p.is_empty() {
                eprintln!("in sync: {} objects unchanged", p.unchanged.len());
            } else {
                eprint!("{}", render::plan_text(p));
            }
        },
        &mut |r| eprintln!("{}", render::progress_line(r)),
    )
    .await?)
}

/// `apply --watch` on `engine` (Docker, or a project's namespace on Kubernetes): triggers
/// from the manifest's directory (and those of `host_files`, the host logins it names as
/// it is now), the engine's events and signals feed [`watch::run`] until SIGINT/SIGTERM.
/// Each load of the desired state carries `facts`, the engine's runtimes, when known.
async fn run_watch<E: Engine + Exec + Events>(
    engine: &E,
    facts: Option<Arc<RuntimeFacts>>,
    args: ApplyArgs,
    project: String,
    host_files: Vec<std::path::PathBuf>,
) -> anyhow::Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};

    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Signals first: a SIGTERM during the first converge lets it finish, then exits.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signals = tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping after the reconcile in flight");
        let _ = stop_tx.send(true);
    });
    // The event stream is lazy: it is followed beside the loop, from its first converge.
    let events = crate::edge::sources::follow_events(
        engine,
        project.clone(),
        tx.clone(),
        Arc::clone(&metrics),
    );
    let _manifest_watch =
        crate::edge::sources::watch_manifest(&args.manifest.file, &host_files, tx.clone())
            .with_context(|| format!("watching {}", args.manifest.file.display()))?;
    let server = match args.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "serving metrics");
            Some(tokio::spawn(watch::metrics::serve(l, Arc::clone(&metrics))))
        }
        None => None,
    };
    drop(tx);

    let opts = watch::Options {
        resync: Duration::from_secs(args.resync.max(1)),
        prune: args.prune,
        concurrency: args.concurrency,
        ..watch::Options::default()
    };
    let file = args.manifest.file.clone();
    let pool = args.subnet_pool;
    let mut load = || -> anyhow::Result<crate::graph::DesiredState> {
        let m = load_manifest(&file)?;
        if m.project != project {
            anyhow::bail!(
                "{}: the project changed from {project} to {}; restart the watch to switch projects",
                file.display(),
                m.project
            );
        }
        let mut desired = desired_state(&m)?;
        desired.runtimes = facts.clone();
        for w in bottle_core::runtime::warnings(&desired) {
            tracing::warn!("{w}");
        }
        // The host's routes as they are at each load, with the pool given.
        Ok(desired.with_addressing(crate::edge::host::addressing(pool)))
    };
    tracing::info!(%project, manifest = %file.display(), resync_secs = opts.resync.as_secs(), "watching");
    // The engine's refusals, placed in the manifest as `apply` places them (read again
    // only when there is one to place).
    let mut on_reports = |reports: &[bottle_core::apply::OpReport]| {
        if !crate::provenance::any_refused(reports) {
            return;
        }
        if let Ok(manifest) = load_manifest(&args.manifest.file) {
            for line in refusal_lines(&manifest, reports) {
                tracing::error!("{line}");
            }
        }
    };
    // The follower ends only once the loop's receiver is gone; the loop ending drops it.
    let result = tokio::select! {
        r = watch::run(engine, &mut load, &opts, rx, stop_rx, &metrics, &mut on_reports) => r,
        () = events => Ok(()),
    };
    signals.abort();
    if let Some(s) = server {
        s.abort();
    }
    result.map(|()| 0)
}
