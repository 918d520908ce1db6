//! End-to-end test (feature `kube-e2e`) of a bottle's way out on the test cluster of
//! scripts/kube/cluster.sh: from inside the agent's pod, a request through egress and
//! pipelock reaches an allowed upstream (a real `bottle-testkit recorder` pod that writes
//! down every request it gets), a request carrying a secret is refused by pipelock and
//! never reaches it, and a direct connect to the same upstream fails (the pod's lock).
//! The upstream is allowed by address (`egress.allow_cidrs`): this cluster has no DNS
//! that pods could ask.
#![cfg(feature = "kube-e2e")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use bottle_engine::{Engine, Exec};
use bottle_kube::NamespaceOutcome;
use common::{down_if_started, pass, wait_running};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};

const PROJECT: &str = "kchain";
const UPSTREAM_NS: &str = "kchain-upstream";
/// A real-format AWS key id, which pipelock's DLP refuses.
const SECRET: &str = "AKIAQYLPMN5HHHFPZAM2";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The upstream's image (busybox, the testkit and a self-signed certificate for the
/// recorder's TLS side), pushed to the cluster's registry.
fn push_upstream(registry: &str) -> String {
    let testkit = std::env::var_os("BOTTLE_TESTKIT_BINARY")
        .map(PathBuf::from)
        .expect("BOTTLE_TESTKIT_BINARY must name the static testkit");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(&testkit, dir.path().join("testkit")).expect("copy testkit");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=upstream",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir.path()));
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {registry}/busybox:1.35\nCOPY testkit /testkit\nCOPY cert.pem key.pem /tls/\n"
        ),
    )
    .expect("Dockerfile");
    let image = format!("{registry}/bottle-kube-e2e-upstream:{}", std::process::id());
    run(Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(dir.path()));
    run(Command::new("docker").args(["push", "-q", &image]));
    image
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reaches_an_allowed_upstream_only_through_egress_and_pipelock() {
    let (cluster, engine, started) = common::engine(PROJECT).await;
    let client = cluster.client().clone();
    let registry = std::env::var("BOTTLE_KUBE_REGISTRY").unwrap_or_else(|_| {
        let out = common::cluster_sh("env");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export BOTTLE_KUBE_REGISTRY="))
            .expect("registry")
            .to_owned()
    });

    // The upstream: a recorder pod in a namespace of its own, not bottle's.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": UPSTREAM_NS}})).expect("ns");
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), UPSTREAM_NS);
    let image = push_upstream(&registry);
    let upstream: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "recorder"},
        "spec": {
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["/testkit", "recorder"],
                "env": [
                    {"name": "BOTTLE_FAKE_CERT", "value": "/tls/cert.pem"},
                    {"name": "BOTTLE_FAKE_KEY", "value": "/tls/key.pem"},
                    {"name": "BOTTLE_LISTEN", "value": "0.0.0.0:8443"},
                    {"name": "BOTTLE_PLAIN_LISTEN", "value": "0.0.0.0:8080"},
                ],
            }],
        },
    }))
    .expect("pod");
    let _ = pods
        .delete("recorder", &DeleteParams::default().grace_period(0))
        .await;
    for _ in 0..60 {
        if pods.get_opt("recorder").await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    pods.create(&PostParams::default(), &upstream)
        .await
        .expect("upstream pod");
    wait_running(&pods, "recorder").await;
    let ip = pods
        .get("recorder")
        .await
        .expect("pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("the upstream's address");

    // The bottle, allowed to reach that one address.
    let dir = common::manifest_dir(PROJECT, "chain");
    std::fs::write(
        dir.join("bottles.yaml"),
        format!(
            "project: {PROJECT}\nbottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n    \
             egress:\n      allow_cidrs: [{ip}/32]\nagents:\n  hello:\n    bottle: dev\n"
        ),
    )
    .expect("manifest");
    let desired = common::desired_state(&dir);
    pass(&engine, &desired, "apply").await;
    let agent = engine
        .list_containers(&[format!("{}=agent", bottle_contract::labels::NODE)])
        .await
        .expect("containers")
        .into_iter()
        .find(|c| c.name.ends_with("-agent"))
        .expect("the agent container")
        .name;

    // From inside the agent: through its proxy (HTTP_PROXY names egress), then directly.
    let script = format!(
        r#"p=${{HTTP_PROXY#http://}}; p=${{p%/}}; host=${{p%:*}}; port=${{p##*:}}
get() {{
  exec 3<>"/dev/tcp/$host/$port" || {{ echo "$1 no-proxy"; return; }}
  printf 'GET http://{ip}:8080/%s HTTP/1.1\r\nHost: {ip}:8080\r\nConnection: close\r\n\r\n' "$2" >&3
  # Under the test cluster's gVisor (2022, host networking) a read of a bash /dev/tcp
  # socket can fail with EAGAIN before the answer arrives: read again, a while.
  status=""; for _ in $(seq 100); do read -r status <&3 2>/dev/null && break; sleep 0.1; done
  echo "$1 $status"; exec 3<&-
}}
get allowed chain-check
get secret "leak?key={SECRET}"
if timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/8080' 2>/dev/null; then echo "direct open"; else echo "direct refused"; fi
"#
    );
    let cmd: Vec<String> = vec!["bash".into(), "-c".into(), script];
    let out = engine
        .exec(&agent, &cmd, None, &[])
        .await
        .expect("exec in the agent");
    eprintln!("agent: {out:?}");
    let line = |what: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("allowed").contains(" 200"), "{}", out.stdout);
    assert!(line("secret").contains(" 403"), "{}", out.stdout);
    assert_eq!(line("direct"), "direct refused", "{}", out.stdout);

    // What reached the upstream: the allowed request, and nothing of the secret.
    let log = pods
        .logs("recorder", &LogParams::default())
        .await
        .expect("the recorder's log");
    assert!(log.contains("chain-check"), "{log}");
    assert!(!log.contains(SECRET) && !log.contains("leak"), "{log}");

    // Removed again, with the namespace.
    pass(
        &engine,
        &bottle_core::graph::DesiredState::empty(PROJECT),
        "removal",
    )
    .await;
    assert_eq!(
        cluster
            .remove_namespace(PROJECT, std::time::Duration::from_secs(120))
            .await
            .expect("remove"),
        NamespaceOutcome::Removed
    );
    let _ = namespaces
        .delete(UPSTREAM_NS, &DeleteParams::default())
        .await;
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    let _ = std::fs::remove_dir_all(&dir);
    down_if_started(started);
}
