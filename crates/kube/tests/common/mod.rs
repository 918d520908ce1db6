//! Helpers the kube-e2e tests share: the test cluster of scripts/kube/cluster.sh (found
//! running, else brought up), bounded waits on pods, and a small manifest's desired state
//! made as `bottle` makes it.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bottle_core::apply::{OpReport, Outcome, ReconcileOptions, Reconciled, reconcile_once};
use bottle_core::graph::{self, DesiredState};
use bottle_core::hash::DigestKey;
use bottle_core::images::{self, SidecarFile};
use bottle_core::nodes::sidecar;

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

/// The test cluster (up, see [`cluster_up`]), and the Kubernetes engine of `project` on
/// it (images built by the local Docker, pushed to the cluster's registry); whether this
/// test started the cluster.
pub async fn engine(
    project: &str,
) -> (
    bottle_kube::Cluster,
    bottle_kube::engine::KubeEngine<bottle_docker::Docker>,
    bool,
) {
    use bottle_kube::engine::{KubeEngine, Settings};
    let (kubeconfig, registry, started) = cluster_up();
    let cluster = connect(kubeconfig).await;
    let docker = bottle_docker::Docker::connect().expect("docker");
    let engine = KubeEngine::connect(cluster.clone(), project, Settings::new(&registry), docker)
        .await
        .expect("engine");
    (cluster, engine, started)
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

/// A small manifest of `project` in a temporary directory (`what` names it): one agent
/// `hello` (a plain Debian image that sleeps) in a bottle with the default sidecars
/// (pipelock, egress, agent-net).
pub fn manifest_dir(project: &str, what: &str) -> PathBuf {
    manifest_dir_with(project, what, "")
}

/// As [`manifest_dir`], with `bottle` (YAML lines indented for the bottle's keys, each
/// ending in a newline) added to the bottle `dev`.
pub fn manifest_dir_with(project: &str, what: &str, bottle: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bottle-kube-e2e-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    std::fs::write(
        d.join("Dockerfile"),
        "FROM debian:bookworm-slim\nCMD [\"sleep\", \"infinity\"]\n",
    )
    .expect("Dockerfile");
    std::fs::write(
        d.join("bottles.yaml"),
        format!(
            "project: {project}\nbottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n\
             {bottle}agents:\n  hello:\n    bottle: dev\n"
        ),
    )
    .expect("manifest");
    d
}

/// The desired state of the manifest in `dir`, as `bottle` makes it: the sidecar image
/// from the static `bottle` at $BOTTLE_SIDECAR_BINARY.
pub fn desired_state(dir: &Path) -> DesiredState {
    let manifest =
        bottle_model::manifest::load(&dir.join("bottles.yaml"), &|_| None).expect("manifest loads");
    let binary = std::env::var_os("BOTTLE_SIDECAR_BINARY")
        .map(PathBuf::from)
        .expect("BOTTLE_SIDECAR_BINARY must name the static bottle (scripts/build-static.sh)");
    let key = DigestKey::fixed(7);
    let context = images::sidecar_context(&[SidecarFile {
        image_path: "/bottle".into(),
        host: binary,
        mode: 0o755,
    }])
    .expect("sidecar context");
    let side = sidecar::image_object(&key, context);
    graph::desired(&manifest, &key, &side, &Arc::from(&[][..])).expect("desired state")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One pass, then the wait `bottle apply` does until what it changed is in force; every
/// operation must have been carried out and every sidecar it waits for be ready.
pub async fn pass<E: bottle_engine::Engine + bottle_engine::Exec>(
    engine: &E,
    desired: &DesiredState,
    what: &str,
) -> Reconciled {
    let options = ReconcileOptions {
        now: now(),
        ..ReconcileOptions::default()
    };
    let mut seen: Vec<String> = Vec::new();
    let r = reconcile_once(
        engine,
        desired,
        &options,
        &mut |_| {},
        &mut |op: &OpReport| {
            seen.push(format!(
                "{:?} {} -> {:?} ({} ms)",
                op.op.kind,
                op.op.key,
                op.outcome,
                op.took.as_millis()
            ));
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: reconcile failed: {e}"));
    eprintln!("{what}:\n  {}", seen.join("\n  "));
    let failed: Vec<&OpReport> = r
        .reports
        .iter()
        .filter(|o| o.outcome != Outcome::Done)
        .collect();
    assert!(failed.is_empty(), "{what}: operations failed: {failed:#?}");
    let settled = bottle_core::ready::settle(
        engine,
        r.expects.clone(),
        bottle_core::ready::DEFAULT_TIMEOUT,
        &mut |_| {},
    )
    .await;
    let not_ready: Vec<_> = settled.iter().filter(|s| !s.outcome.is_ready()).collect();
    assert!(not_ready.is_empty(), "{what}: not in force: {not_ready:#?}");
    r
}

/// Sets or takes away the label with which the operator says the RuntimeClass `runsc`'s
/// nodes lock gVisor agent pods (what makes the backend offer runsc); returns whether it
/// was set before, so a test that takes it away puts it back. Test binaries run one at a
/// time, so no other test sees the change.
pub async fn offer_gvisor(client: &kube::Client, offer: bool) -> bool {
    use k8s_openapi::api::node::v1::RuntimeClass;
    use kube::api::{Patch, PatchParams};
    let classes: Api<RuntimeClass> = Api::all(client.clone());
    if classes
        .get_opt("runsc")
        .await
        .expect("runtime classes")
        .is_none()
    {
        return false;
    }
    let was = runsc_labelled(client).await;
    let value = offer.then_some(bottle_contract::netlock::BY_CNI);
    let patch = serde_json::json!({"metadata": {"labels": {
        bottle_kube::pod::LOCKED_BY_NODE: value
    }}});
    classes
        .patch("runsc", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label the RuntimeClass");
    was
}

/// Does the cluster offer gVisor to bottles (its RuntimeClass `runsc` labelled as locked
/// by its nodes)? Then `runtime: auto` resolves to runsc. With `BOTTLE_KUBE_EXPECT_GVISOR`
/// set (scripts/test.sh, which chains the netlock plugin) it must.
pub async fn gvisor_offered(client: &kube::Client) -> bool {
    let offered = runsc_labelled(client).await;
    assert!(
        offered || std::env::var_os("BOTTLE_KUBE_EXPECT_GVISOR").is_none(),
        "BOTTLE_KUBE_EXPECT_GVISOR is set, but the cluster does not offer gVisor"
    );
    offered
}

/// Is the RuntimeClass `runsc` labelled as locked by its nodes, now?
async fn runsc_labelled(client: &kube::Client) -> bool {
    use k8s_openapi::api::node::v1::RuntimeClass;
    let classes: Api<RuntimeClass> = Api::all(client.clone());
    classes
        .get_opt("runsc")
        .await
        .expect("runtime classes")
        .is_some_and(|rc| bottle_kube::pod::locked_by_node(&rc.metadata))
}

/// The exit code of `p`'s init container `name`, once it has ended.
pub fn init_exit(p: &Pod, name: &str) -> Option<i32> {
    p.status
        .as_ref()?
        .init_container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .and_then(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}
