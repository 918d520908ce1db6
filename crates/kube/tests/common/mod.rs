//! Helpers the kube-e2e tests share: the test cluster of scripts/kube/cluster.sh (found
//! running, else brought up) and bounded waits on pods.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bottle_contract::labels;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn cluster_sh(arg: &str) -> std::process::Output {
    Command::new(repo().join("scripts/kube/cluster.sh"))
        .arg(arg)
        .output()
        .expect("running scripts/kube/cluster.sh")
}

/// Runs `cluster.sh env`, else `up`; returns the kubeconfig path, the registry and whether
/// this test started the cluster.
pub fn cluster_up() -> (PathBuf, String, bool) {
    let mut started = false;
    let mut out = cluster_sh("env");
    if !out.status.success() {
        started = true;
        out = cluster_sh("up");
        assert!(
            out.status.success(),
            "cluster.sh up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout).expect("utf-8 env");
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name} in cluster.sh output:\n{text}"))
            .to_owned()
    };
    (
        PathBuf::from(var("KUBECONFIG")),
        var("BOTTLE_KUBE_REGISTRY"),
        started,
    )
}

/// A client of the cluster whose kubeconfig is `kubeconfig`.
pub async fn connect(kubeconfig: PathBuf) -> bottle_kube::Cluster {
    bottle_kube::Cluster::connect(&bottle_kube::Target {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .expect("connecting to the test cluster")
}

pub async fn wait_running(api: &Api<Pod>, name: &str) {
    for _ in 0..240 {
        let p = api.get(name).await.expect("reading pod");
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        match phase.as_str() {
            "Running" => return,
            "Failed" | "Succeeded" => panic!("pod {name} ended: {:?}", p.status),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    panic!(
        "pod {name} not running after 120 s: {:?}",
        api.get(name).await.ok().and_then(|p| p.status)
    );
}

/// `object` with the ownership labels of `project`'s bottle `bottle`, node `node`.
pub fn labelled<K: kube::Resource>(mut object: K, project: &str, bottle: &str, node: &str) -> K {
    let meta = object.meta_mut();
    meta.labels = Some(labels::object_labels(
        project,
        bottle,
        node,
        "0123456789abcdef",
        "",
    ));
    object
}

/// Takes the cluster down again when this test brought it up.
pub fn down_if_started(started: bool) {
    if started {
        let out = cluster_sh("down");
        assert!(
            out.status.success(),
            "cluster.sh down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
