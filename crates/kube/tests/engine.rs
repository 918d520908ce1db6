//! End-to-end test of the Kubernetes engine (feature `kube-e2e`; docs/design.md section
//! 9.9) on the test cluster of scripts/kube/cluster.sh: the desired state of a small
//! manifest, made as `bottle` makes it (`bottle_model` manifest -> `bottle_core` desired
//! state, the sidecar image from the static `bottle` at $BOTTLE_SIDECAR_BINARY), converged
//! by the same `reconcile_once` the Docker backend runs, on a [`KubeEngine`] (images built
//! by the local Docker and pushed to the cluster's registry).
//!
//! Shows: the server accepts every object and the pods run; a second pass plans nothing;
//! a deleted pod comes back on the next pass; an invalid object is refused with the
//! server's message; removing the bottle removes its objects, while an unlabelled object
//! and another project's in the same namespace are left alone.
#![cfg(feature = "kube-e2e")]

mod common;

use bottle_core::apply::Reconciled;
use bottle_core::graph::DesiredState;
use bottle_core::nodes::{ObjectKind, ObjectSpec};
use bottle_core::plan::Action;
use bottle_engine::{Engine, EngineError, NetworkSpec};
use bottle_kube::engine::render;
use common::{down_if_started, pass};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const PROJECT: &str = "kengine";

fn steps(r: &Reconciled) -> Vec<String> {
    r.plan
        .steps
        .iter()
        .map(|s| format!("{:?} {}", s.action, s.key))
        .collect()
}

async fn names<K>(api: &Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut n: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bottle_converges_on_the_cluster_repairs_drift_and_is_removed_again() {
    let (cluster, engine, started) = common::engine(PROJECT).await;
    let ns = engine.namespace().to_owned();
    let client = cluster.client().clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);

    // Not ours: an unlabelled ConfigMap, and a Secret of another project, in our namespace.
    let planted: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "planted"}, "data": {"k": "v"},
    }))
    .expect("cm");
    let foreign: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "foreign", "labels": {
            "bottle.managed": "true", "bottle.project": "other", "bottle.object": "volume"}},
        "stringData": {"k": "v"},
    }))
    .expect("secret");
    for r in [
        maps.create(&PostParams::default(), &planted)
            .await
            .map(drop),
        secrets
            .create(&PostParams::default(), &foreign)
            .await
            .map(drop),
    ] {
        r.or_else(|e| match e {
            kube::Error::Api(s) if s.code == 409 => Ok(()),
            e => Err(e),
        })
        .expect("planting");
    }

    let dir = common::manifest_dir(PROJECT, "engine");
    let desired = common::desired_state(&dir);

    // 1. Converge: every object accepted, every pod running.
    let first = pass(&engine, &desired, "first pass").await;
    assert!(!first.plan.steps.is_empty());
    let running: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .map(|p| p.name_any())
        .collect();
    for want in ["pipelock", "egress", "agent-net"] {
        let name = format!("bottle-{PROJECT}-hello-{want}");
        assert!(running.contains(&name), "{name} not running: {running:?}");
    }
    let agent_pod = pods
        .get(&format!("bottle-{PROJECT}-hello-agent-net"))
        .await
        .expect("agent pod");
    let containers: Vec<String> = agent_pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    assert_eq!(containers, ["agent-net", "agent"], "the agent's pod");
    // `runtime: auto`: under gVisor where the cluster offers it (scripts/test.sh's does),
    // locked by the node and checked by `netlock --verify`, with agent-net holding the
    // namespace without a trap; else under runc, locked by netlock itself.
    let gvisor = common::gvisor_offered(&client).await;
    let spec = agent_pod.spec.as_ref().expect("spec");
    assert_eq!(
        spec.runtime_class_name.as_deref(),
        gvisor.then_some("runsc"),
        "the agent pod's runtime"
    );
    let args = |name: &str| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .and_then(|c| c.command.clone().or(c.args.clone()))
            .unwrap_or_default()
    };
    assert_eq!(args("netlock").contains(&"--verify".to_string()), gvisor);
    assert_eq!(args("agent-net").contains(&"--no-trap".to_string()), gvisor);
    let netlock_exit = common::init_exit(&agent_pod, "netlock");
    assert_eq!(
        netlock_exit,
        Some(0),
        "netlock ended before the agent started"
    );
    // The second layer: a NetworkPolicy per network (stored, not enforced, on this
    // cluster), selecting the pods labelled as its members.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let net = |n: &str| format!("bottle-{PROJECT}-hello-{n}");
    assert_eq!(
        names(&policies).await,
        [net("net-egress"), net("net-internal")]
    );
    let member = |p: &Pod, n: &str| {
        p.labels()
            .get(&render::net_label(&net(n)))
            .is_some_and(|v| v == "member")
    };
    assert!(member(&agent_pod, "net-internal") && !member(&agent_pod, "net-egress"));
    let pipelock = pods.get(&net("pipelock")).await.expect("pipelock's pod");
    assert!(member(&pipelock, "net-internal") && member(&pipelock, "net-egress"));
    let containers_listed = engine.list_containers(&[]).await.expect("containers");
    assert_eq!(containers_listed.len(), 4, "{containers_listed:#?}");

    // 2. A second pass plans no change.
    let second = pass(&engine, &desired, "second pass").await;
    assert!(
        second.plan.steps.is_empty(),
        "second pass: {:?}",
        steps(&second)
    );

    // 3. Drift: a deleted sidecar pod comes back on the next pass.
    let egress = format!("bottle-{PROJECT}-hello-egress");
    pods.delete(&egress, &DeleteParams::default().grace_period(0))
        .await
        .expect("deleting egress's pod");
    for _ in 0..60 {
        if pods.get_opt(&egress).await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let third = pass(&engine, &desired, "drift repair").await;
    assert!(
        third
            .plan
            .steps
            .iter()
            .any(|s| s.key.kind == ObjectKind::Container
                && s.key.name == egress
                && s.action == Action::Create),
        "drift repair: {:?}",
        steps(&third)
    );
    assert!(pods.get_opt(&egress).await.expect("get").is_some());
    let fourth = pass(&engine, &desired, "after repair").await;
    assert!(
        fourth.plan.steps.is_empty(),
        "after repair: {:?}",
        steps(&fourth)
    );

    // 4. An invalid object is refused with the server's message, and nothing is made.
    let bad = NetworkSpec {
        name: "Not_A-Name".into(),
        labels: bottle_contract::labels::object_labels(PROJECT, "hello", "net-x", "0", ""),
        internal: true,
        options: Default::default(),
        subnet: None,
    };
    match engine.create_network(&bad).await {
        Err(EngineError::Refused { message, .. }) => assert!(
            message.contains("is invalid") && message.contains("Not_A-Name"),
            "{message}"
        ),
        other => panic!("an invalid name was not refused by the server: {other:?}"),
    }

    // 5. A seeding that did not finish (a run stopped after making a helper pod and its
    // claims): the next pass removes the helper and makes those claims anew (section 1.6),
    // and the pass after it plans nothing.
    let seeded = desired
        .objects
        .values()
        .find_map(|o| match &o.spec {
            ObjectSpec::Volume(v) if render::is_claim(v) && v.has_content() => Some(v.clone()),
            _ => None,
        })
        .expect("the bottle has a seeded claim");
    let helper = render::seed_name(&seeded.name);
    // An image no node can pull: the helper never runs, as if its run had stopped.
    let left = render::seed_pod(
        &helper,
        &seeded.labels,
        "127.0.0.1:1/none:0",
        &[&seeded],
        None,
    );
    let mut left = serde_json::to_value(&left).expect("pod json");
    left["metadata"]["namespace"] = serde_json::json!(ns);
    let left: Pod = serde_json::from_value(left).expect("pod");
    pods.create(&PostParams::default(), &left)
        .await
        .expect("leaving a seeding helper behind");
    let fifth = pass(&engine, &desired, "half-seeded repair").await;
    let remade = fifth.plan.steps.iter().any(|s| {
        s.key.kind == ObjectKind::Volume
            && s.key.name == seeded.name
            && matches!(&s.action, Action::Recreate { reasons } if reasons.iter().any(|r| r.contains("half-seeded")))
    });
    assert!(remade, "half-seeded: {:?}", steps(&fifth));
    assert!(
        pods.get_opt(&helper).await.expect("get").is_none(),
        "the helper stayed"
    );
    let sixth = pass(&engine, &desired, "after the half-seeded repair").await;
    assert!(sixth.plan.steps.is_empty(), "{:?}", steps(&sixth));

    // 6. The bottle removed from the manifest: everything of the project goes, nothing
    // else does.
    let gone = pass(&engine, &DesiredState::empty(PROJECT), "garbage collection").await;
    assert!(
        gone.plan.steps.iter().all(|s| s.action == Action::Delete),
        "{:?}",
        steps(&gone)
    );
    let left = pass(&engine, &DesiredState::empty(PROJECT), "after collection").await;
    assert!(left.plan.steps.is_empty(), "{:?}", steps(&left));
    assert!(
        names(&pods).await.is_empty(),
        "pods left: {:?}",
        names(&pods).await
    );
    let sel = ListParams::default().labels(&format!("bottle.project={PROJECT}"));
    assert!(secrets.list(&sel).await.expect("secrets").items.is_empty());
    assert!(maps.list(&sel).await.expect("maps").items.is_empty());
    assert!(names(&policies).await.is_empty(), "policies left");
    // A claim goes once no pod holds it (its protection finalizer).
    let mut left_claims = Vec::new();
    for _ in 0..60 {
        left_claims = claims.list(&sel).await.expect("claims").items;
        if left_claims.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(left_claims.is_empty(), "claims left: {left_claims:?}");
    assert!(names(&maps).await.contains(&"planted".to_string()));
    assert!(names(&secrets).await.contains(&"foreign".to_string()));
    // `delete` then keeps the namespace: it holds what is not bottle's.
    match cluster
        .remove_namespace(PROJECT, std::time::Duration::from_secs(5))
        .await
        .expect("remove namespace")
    {
        bottle_kube::NamespaceOutcome::Kept(why) => {
            assert!(why.contains("not bottle's"), "{why}")
        }
        other => panic!("a namespace with another's objects: {other:?}"),
    }

    cluster.delete_namespace(PROJECT).await.expect("namespace");
    let _ = std::fs::remove_dir_all(&dir);
    down_if_started(started);
}
