//! End-to-end test of `apply --watch` on Kubernetes (feature `kube-e2e`; docs/design.md
//! section 9.10) on the test cluster of scripts/kube/cluster.sh: the core's watch loop
//! (`bottle_core::watch::run`) on a [`KubeEngine`], fed by the core's event follower over
//! the engine's API-server watches, as `bottle apply --watch --backend kubernetes` runs it.
//!
//! Shows: the loop converges a small manifest; a sidecar pod deleted by hand comes back
//! through an event, with no apply and well before the resync period (ten minutes here);
//! the loop stops cleanly when asked.
#![cfg(feature = "kube-e2e")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bottle_core::graph::DesiredState;
use bottle_core::watch::{self, Backoff, Metrics};
use bottle_engine::{ContainerState, Engine};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};

const PROJECT: &str = "kwatch";

/// The uid of pod `name` when it runs.
async fn running_uid(pods: &Api<Pod>, name: &str) -> Option<String> {
    let p = pods.get_opt(name).await.expect("reading pod")?;
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && p.metadata.deletion_timestamp.is_none();
    running.then(|| p.metadata.uid.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_brings_back_a_pod_deleted_by_hand_through_an_event() {
    let (cluster, engine, started) = common::engine(PROJECT).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client().clone(), engine.namespace());
    let dir = common::manifest_dir(PROJECT, "watch");
    let desired = common::desired_state(&dir);
    let resync = Duration::from_secs(600);

    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opts = watch::Options {
        resync,
        ready_timeout: Duration::from_secs(120),
        ..watch::Options::default()
    };
    let mut load = || Ok(desired.clone());
    let since = common::now() as i64 - 1;
    let following = watch::events::follow(
        &engine,
        PROJECT.into(),
        since,
        tx,
        Backoff::ENGINE,
        Arc::clone(&metrics),
    );
    let looping = async {
        let mut ignore = |_: &[bottle_core::apply::OpReport]| {};
        tokio::select! {
            r = watch::run(&engine, &mut load, &opts, rx, stop_rx, &metrics, &mut ignore) => r,
            () = following => Ok(()),
        }
    };

    let egress = format!("bottle-{PROJECT}-hello-egress");
    let driving = async {
        // 1. Converged: the first reconcile ran and every container runs.
        let t0 = Instant::now();
        let first_uid = loop {
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "not converged in 300 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            if metrics.reconciles() == 0 {
                continue;
            }
            let containers = engine.list_containers(&[]).await.expect("containers");
            let all_up = containers.len() == 4
                && containers
                    .iter()
                    .all(|c| c.state == ContainerState::Running);
            if let (true, Some(uid)) = (all_up, running_uid(&pods, &egress).await) {
                break uid;
            }
        };
        eprintln!(
            "converged in {:?} ({} reconciles)",
            t0.elapsed(),
            metrics.reconciles()
        );
        // Let the passes the first converge's own changes caused settle.
        tokio::time::sleep(Duration::from_secs(3)).await;

        // 2. Drift by hand: the egress pod deleted (its own grace period), no apply.
        let before = metrics.reconciles();
        let t1 = Instant::now();
        pods.delete(&egress, &DeleteParams::default())
            .await
            .expect("deleting egress's pod");
        let back = loop {
            assert!(
                t1.elapsed() < Duration::from_secs(120),
                "egress's pod not back in 120 s: {:?}",
                pods.get_opt(&egress).await.ok().flatten().map(|p| p.status)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(uid) = running_uid(&pods, &egress).await
                && uid != first_uid
            {
                break t1.elapsed();
            }
        };
        eprintln!("egress's pod back in {back:?}");
        assert!(
            back < resync / 4,
            "back after {back:?}: not through an event"
        );
        // The pass that made it ends (the agent's pod may follow egress's new address),
        // and everything runs again.
        loop {
            assert!(
                t1.elapsed() < Duration::from_secs(240),
                "the repairing pass did not end in 240 s"
            );
            let containers = engine.list_containers(&[]).await.expect("containers");
            if metrics.reconciles() > before
                && containers.len() == 4
                && containers
                    .iter()
                    .all(|c| c.state == ContainerState::Running)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "repaired in {:?} ({} reconciles since the deletion)",
            t1.elapsed(),
            metrics.reconciles() - before
        );

        // Through the events, not a lost stream's resync; counted as drift undone.
        let exposed = metrics.render();
        assert!(
            exposed.contains("\nbottle_event_stream_reconnects_total 0\n")
                && !exposed.contains("\nbottle_drift_repairs_total 0\n"),
            "{exposed}"
        );

        // 3. Stop: the loop ends after the reconcile in flight.
        stop_tx.send(true).expect("stop");
        Instant::now()
    };
    let (result, asked) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(600), looping),
        driving
    );
    result
        .expect("the loop did not stop")
        .expect("the loop ended with an error");
    eprintln!("stopped {:?} after it was asked", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(60));

    // Cleanup: the project's objects, then its namespace.
    common::pass(&engine, &DesiredState::empty(PROJECT), "garbage collection").await;
    cluster.delete_namespace(PROJECT).await.expect("namespace");
    let _ = std::fs::remove_dir_all(&dir);
    common::down_if_started(started);
}
