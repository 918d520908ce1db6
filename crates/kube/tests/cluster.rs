//! End-to-end test of bottle-kube against a real cluster (feature `kube-e2e`): brings the
//! single-node cluster of scripts/kube/cluster.sh up (building it the first time), and
//! checks namespace ownership, labelled create/list/delete, and that an unlabelled object
//! in our namespace is left alone; pods really run under runc and, when the cluster has
//! the RuntimeClass, gVisor; a namespace holding a foreign object behind a hundred of ours
//! is kept. A cluster this test started is taken down again at the end.
#![cfg(feature = "kube-e2e")]

mod common;

use bottle_contract::labels;
use bottle_kube::{Cluster, Deleted, KubeError, Namespaced, Target};
use common::{cluster_up, down_if_started, labelled, wait_running};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"k": "v"},
    }))
    .expect("config map")
}

fn pod(name: &str, registry: &str, runtime: Option<&str>) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": runtime,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": format!("{registry}/busybox:1.35"),
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo started as $(id -u); exec sleep 3600"],
                "securityContext": {
                    "runAsUser": 1000, "runAsNonRoot": true, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .expect("pod")
}

/// The names of the project's objects of kind `K` in `ns`, sorted.
async fn listed<K: Namespaced>(cluster: &Cluster, ns: &str, project: &str) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .list_ours::<K>(ns, project)
        .await
        .expect("list")
        .iter()
        .map(|o| o.name_any())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn labelled_objects_are_managed_and_unlabelled_ones_left_alone() {
    let (kubeconfig, registry, started) = cluster_up();
    let target = Target {
        kubeconfig: Some(kubeconfig),
        context: None,
    };
    let cluster = Cluster::connect(&target).await.expect("connect");
    assert_eq!(cluster.version().await.expect("version"), "v1.20.2");

    let project = format!("e2e{}", std::process::id());
    let ns = cluster.ensure_namespace(&project).await.expect("namespace");
    assert_eq!(cluster.ensure_namespace(&project).await.expect("again"), ns);
    let namespaces: Api<Namespace> = Api::all(cluster.client().clone());
    assert!(labels::is_ours(
        namespaces.get(&ns).await.expect("ns").labels(),
        &project
    ));

    // A namespace of our name that is not ours is refused, never adopted.
    let foreign = format!("{project}x");
    let plain: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": bottle_kube::namespace_name(&foreign)}
    }))
    .expect("ns");
    namespaces
        .create(&PostParams::default(), &plain)
        .await
        .expect("foreign ns");
    let err = cluster.ensure_namespace(&foreign).await.unwrap_err();
    assert!(matches!(err, KubeError::NotOurs { .. }), "{err}");
    assert!(matches!(
        cluster.delete_namespace(&foreign).await,
        Err(KubeError::NotOurs { .. })
    ));

    // Ours and not ours side by side.
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().clone(), &ns);
    cluster
        .create(
            &ns,
            &project,
            &labelled(config_map("ours"), &project, "one", "ca"),
        )
        .await
        .expect("ours");
    cms.create(&PostParams::default(), &config_map("theirs"))
        .await
        .expect("theirs");
    let err = cluster
        .create(&ns, &project, &config_map("unlabelled"))
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Unlabelled { .. }), "{err}");
    assert!(
        cms.get_opt("unlabelled").await.expect("get").is_none(),
        "nothing was created"
    );

    // Pods under runc and, when the cluster has it, gVisor.
    let pods: Api<Pod> = Api::namespaced(cluster.client().clone(), &ns);
    let runtimes: Api<RuntimeClass> = Api::all(cluster.client().clone());
    let runsc = runtimes
        .get_opt("runsc")
        .await
        .expect("runtime classes")
        .is_some();
    let mut want = vec!["agent-runc".to_owned()];
    cluster
        .create(
            &ns,
            &project,
            &labelled(pod("agent-runc", &registry, None), &project, "one", "agent"),
        )
        .await
        .expect("runc pod");
    if runsc {
        want.push("agent-runsc".to_owned());
        cluster
            .create(
                &ns,
                &project,
                &labelled(
                    pod("agent-runsc", &registry, Some("runsc")),
                    &project,
                    "one",
                    "agent",
                ),
            )
            .await
            .expect("runsc pod");
    }
    for name in &want {
        wait_running(&pods, name).await;
    }

    // Lists see only ours.
    assert_eq!(listed::<ConfigMap>(&cluster, &ns, &project).await, ["ours"]);
    assert_eq!(listed::<Pod>(&cluster, &ns, &project).await, want);

    // Deletion touches only ours; a foreign object by name is refused; a missing one is fine.
    let err = cluster
        .delete_ours::<ConfigMap>(&ns, "theirs", &project)
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::NotOurs { .. }), "{err}");
    assert_eq!(
        cluster
            .delete_all_ours::<ConfigMap>(&ns, &project)
            .await
            .expect("delete"),
        ["ours"]
    );
    let mut gone = cluster
        .delete_all_ours::<Pod>(&ns, &project)
        .await
        .expect("delete pods");
    gone.sort();
    assert_eq!(gone, want);
    assert_eq!(
        cluster
            .delete_ours::<ConfigMap>(&ns, "ours", &project)
            .await
            .expect("again"),
        Deleted::Absent
    );
    assert!(
        cms.get_opt("theirs").await.expect("get").is_some(),
        "the unlabelled ConfigMap stays"
    );

    // Clean up: the foreign namespace by hand, ours through the crate.
    namespaces
        .delete(&bottle_kube::namespace_name(&foreign), &Default::default())
        .await
        .expect("rm foreign");
    assert_eq!(
        cluster.delete_namespace(&project).await.expect("rm ns"),
        Deleted::Deleted
    );
    down_if_started(started);
}

/// A namespace is removed only when nothing in it is not bottle's, however many of
/// bottle's objects are listed before the foreign one (lists come a page at a time).
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_object_behind_a_hundred_of_ours_keeps_the_namespace() {
    let (kubeconfig, _registry, started) = cluster_up();
    let cluster = common::connect(kubeconfig).await;
    let project = format!("page{}", std::process::id());
    let ns = cluster.ensure_namespace(&project).await.expect("namespace");
    for i in 0..101 {
        cluster
            .create(
                &ns,
                &project,
                &labelled(config_map(&format!("ours-{i:03}")), &project, "b", "x"),
            )
            .await
            .expect("ours");
    }
    // Named to be listed after every one of ours.
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().clone(), &ns);
    cms.create(&PostParams::default(), &config_map("zz-theirs"))
        .await
        .expect("theirs");
    let wait = std::time::Duration::from_secs(120);
    match cluster
        .remove_namespace(&project, wait)
        .await
        .expect("remove")
    {
        bottle_kube::NamespaceOutcome::Kept(why) => {
            assert!(why.contains("ConfigMap/zz-theirs"), "{why}")
        }
        other => panic!("a namespace holding a foreign object was not kept: {other:?}"),
    }
    assert!(cms.get_opt("zz-theirs").await.expect("get").is_some());
    cms.delete("zz-theirs", &Default::default())
        .await
        .expect("rm theirs");
    assert_eq!(
        cluster
            .remove_namespace(&project, wait)
            .await
            .expect("remove"),
        bottle_kube::NamespaceOutcome::Removed
    );
    down_if_started(started);
}
