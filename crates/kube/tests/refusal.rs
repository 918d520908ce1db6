//! End-to-end test (feature `kube-e2e`) of what the operator's cluster refuses, on the
//! test cluster of scripts/kube/cluster.sh: a LimitRange the operator put in the project's
//! namespace refuses the agent's pod; the server's message is placed at the manifest's
//! `resources.memory` line; gVisor asked for where the cluster does not offer it is one
//! error before anything is made; the bottle converges once the manifest asks for less; and the
//! project's namespace is removed at the end only once nothing not bottle's is in it.
#![cfg(feature = "kube-e2e")]

mod common;

use bottle_core::apply::{OpReport, Outcome, ReconcileOptions, reconcile_once};
use bottle_core::graph::DesiredState;
use bottle_engine::{Engine, EngineError};
use bottle_kube::NamespaceOutcome;
use common::{down_if_started, pass};
use k8s_openapi::api::core::v1::{LimitRange, Namespace};
use kube::api::{Api, DeleteParams, PostParams};

const PROJECT: &str = "krefuse";

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_by_the_cluster_is_placed_in_the_manifest_and_a_fixed_manifest_converges() {
    let (cluster, engine, started) = common::engine(PROJECT).await;
    let ns = engine.namespace().to_owned();
    let client = cluster.client().clone();

    // The operator's policy, not bottle's: no container over 1Gi (the sidecars ask 256Mi).
    let limits: Api<LimitRange> = Api::namespaced(client.clone(), &ns);
    let policy: LimitRange = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "operator-limits"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "1Gi"}}]},
    }))
    .expect("limit range");
    match limits.create(&PostParams::default(), &policy).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating the LimitRange: {e}"),
    }

    // 0. gVisor asked for where the cluster does not offer it (its RuntimeClass `runsc`
    // is not labelled as locked by its nodes): one error, before anything is made.
    let offered = common::offer_gvisor(&client, false).await;
    let dir = common::manifest_dir(PROJECT, "refusal");
    let manifest = dir.join("bottles.yaml");
    std::fs::write(
        &manifest,
        format!(
            "project: {PROJECT}\nbottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n    \
             runtime: runsc\nagents:\n  hello:\n    bottle: dev\n"
        ),
    )
    .expect("manifest");
    let options = ReconcileOptions {
        now: common::now(),
        ..ReconcileOptions::default()
    };
    let gvisor = common::desired_state(&dir);
    match reconcile_once(&engine, &gvisor, &options, &mut |_| {}, &mut |_| {}).await {
        Err(e @ bottle_core::apply::ApplyError::NoRunsc { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("RuntimeClass `runsc` labelled bottle.netlock=cni"),
                "{message}"
            )
        }
        other => panic!("runsc on a cluster that does not offer it: {other:?}"),
    }
    assert!(
        engine.list_containers(&[]).await.expect("list").is_empty()
            && engine.list_volumes(&[]).await.expect("list").is_empty(),
        "nothing is made"
    );
    if offered {
        common::offer_gvisor(&client, true).await;
    }

    // 1. The manifest asks 2g for the agent: the server refuses the agent's pod, and the
    // refusal is placed at the line that asked.
    let text = format!(
        "project: {PROJECT}\nbottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n    \
         resources:\n      memory: 2g\nagents:\n  hello:\n    bottle: dev\n"
    );
    std::fs::write(&manifest, &text).expect("manifest");
    let desired = common::desired_state(&dir);
    let first = reconcile_once(&engine, &desired, &options, &mut |_| {}, &mut |_| {})
        .await
        .expect("the pass runs");
    let refused: Vec<&OpReport> = first
        .reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(EngineError::Refused { .. })))
        .collect();
    assert_eq!(refused.len(), 1, "{:#?}", first.reports);
    let loaded = bottle_model::manifest::load(&manifest, &|_| None).expect("manifest");
    let lines = bottle_core::provenance::refusals(&first.reports, &loaded, || Some(text.clone()));
    eprintln!("{}", lines.join("\n"));
    let want = format!(
        "{}:6:7: bottles.dev.resources.memory: refused by the engine: ",
        loaded.path.display()
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&want)
            && lines[0].contains("maximum memory usage per Container is 1Gi"),
        "{}",
        lines[0]
    );

    // 2. The manifest fixed: the half-applied bottle converges, and then is in sync.
    let text = text.replace("memory: 2g", "memory: 512m");
    std::fs::write(&manifest, &text).expect("manifest");
    let desired = common::desired_state(&dir);
    pass(&engine, &desired, "after the fix").await;
    let again = pass(&engine, &desired, "in sync").await;
    assert!(again.plan.steps.is_empty(), "{:?}", again.plan.steps);

    // 3. Everything of the project removed: the namespace stays while the operator's
    // LimitRange is in it, and goes once it is not.
    pass(&engine, &DesiredState::empty(PROJECT), "removal").await;
    let wait = std::time::Duration::from_secs(120);
    match cluster
        .remove_namespace(PROJECT, wait)
        .await
        .expect("remove")
    {
        NamespaceOutcome::Kept(why) => assert!(why.contains("LimitRange/operator-limits"), "{why}"),
        other => panic!("a namespace holding the operator's LimitRange: {other:?}"),
    }
    limits
        .delete("operator-limits", &DeleteParams::default())
        .await
        .expect("deleting the LimitRange");
    assert_eq!(
        cluster
            .remove_namespace(PROJECT, wait)
            .await
            .expect("remove"),
        NamespaceOutcome::Removed
    );
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(namespaces.get_opt(&ns).await.expect("get").is_none());
    assert_eq!(
        cluster
            .remove_namespace(PROJECT, wait)
            .await
            .expect("again"),
        NamespaceOutcome::Absent
    );

    let _ = std::fs::remove_dir_all(&dir);
    down_if_started(started);
}

/// `text` (a kubeconfig of cluster.sh) with the user's token replaced by `token`.
fn with_token(text: &str, token: &str) -> String {
    let start = text.find("token: \"").expect("a token in the kubeconfig") + "token: \"".len();
    let end = start + text[start..].find('"').expect("the token's end");
    format!("{}{token}{}", &text[..start], &text[end..])
}

/// The error and its sources, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_and_a_user_without_rights_are_one_clear_error_each() {
    use bottle_kube::engine::{KubeEngine, Settings};
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    let (kubeconfig, registry, started) = common::cluster_up();
    let admin = common::connect(kubeconfig.clone()).await;
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let tmp = tempfile::tempdir().expect("tmp");
    let project = "krights";
    let namespaces: Api<Namespace> = Api::all(admin.client().clone());
    let target = |path: std::path::PathBuf| bottle_kube::Target {
        kubeconfig: Some(path),
        context: None,
    };
    let docker = || bottle_docker::Docker::connect().expect("docker");

    // 1. A cluster that cannot be reached: the server's port closed.
    let server = text
        .lines()
        .find_map(|l| l.split("server: \"").nth(1))
        .and_then(|s| s.split('"').next())
        .expect("the server in the kubeconfig")
        .to_owned();
    let closed = tmp.path().join("closed.kubeconfig");
    std::fs::write(&closed, text.replace(&server, "https://127.0.0.1:9")).expect("write");
    let cluster = bottle_kube::Cluster::connect(&target(closed))
        .await
        .expect("a client is made without a call");
    let Err(e) = KubeEngine::connect(cluster, project, Settings::new(&registry), docker()).await
    else {
        panic!("an unreachable cluster was reached");
    };
    let message = chain(&e);
    eprintln!("unreachable: {message}");
    assert!(
        message.contains("API server") && message.contains("127.0.0.1:9"),
        "{message}"
    );

    // 2. A user with no rights (a ServiceAccount no role is bound to): one error, before
    // anything is made.
    let home = "krights-sa";
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": home}})).expect("ns");
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.client().clone(), home);
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}})).expect("sa");
    let _ = accounts.create(&PostParams::default(), &sa).await;
    let secrets: Api<Secret> = Api::namespaced(admin.client().clone(), home);
    let mut token = None;
    for _ in 0..60 {
        let names: Vec<String> = accounts
            .get("nobody")
            .await
            .expect("sa")
            .secrets
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.name)
            .collect();
        if let Some(name) = names.first() {
            let s = secrets.get(name).await.expect("token secret");
            token = s.data.and_then(|d| {
                d.get("token")
                    .map(|t| String::from_utf8_lossy(&t.0).into_owned())
            });
            if token.is_some() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let token = token.expect("the ServiceAccount's token within 30 s");
    let nobody = tmp.path().join("nobody.kubeconfig");
    std::fs::write(&nobody, with_token(&text, &token)).expect("write");
    let cluster = bottle_kube::Cluster::connect(&target(nobody.clone()))
        .await
        .expect("client");
    let Err(e) = KubeEngine::connect(cluster, project, Settings::new(&registry), docker()).await
    else {
        panic!("a user without rights made the project's namespace");
    };
    let message = chain(&e);
    eprintln!("no rights (apply): {message}");
    assert!(
        message.contains("namespace bottle-krights") && message.contains("forbidden"),
        "{message}"
    );
    // `diff`, `get`, `delete` open the engine without making anything: the same refusal.
    let cluster = bottle_kube::Cluster::connect(&target(nobody))
        .await
        .expect("client");
    let Err(e) = KubeEngine::open(cluster, project, Settings::new(&registry), docker()).await
    else {
        panic!("a user without rights read the project's namespace");
    };
    let message = chain(&e);
    eprintln!("no rights (diff): {message}");
    assert!(message.contains("forbidden"), "{message}");
    assert!(
        namespaces
            .get_opt("bottle-krights")
            .await
            .expect("get")
            .is_none(),
        "nothing is made"
    );

    let _ = namespaces.delete(home, &DeleteParams::default()).await;
    down_if_started(started);
}
