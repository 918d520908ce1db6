//! End-to-end test of the supervise queue on the Kubernetes engine (feature `kube-e2e`;
//! docs/design.md sections 9.6 and 9.10) on the test cluster of scripts/kube/cluster.sh:
//! a bottle with `supervise: true` converged as in tests/engine.rs; the agent proposes
//! through supervise's real MCP interface from inside its pod (a stateless streamable
//! HTTP `tools/call`, sent with bash's `/dev/tcp` through the pod's lock); the operator
//! reads and decides through `bottle_core::queue` on `KubeEngine` (its `VolumeFiles`:
//! `bottle sidecar read-files`/`write-file` exec'd in supervise's container) and
//! through the `bottle queue --backend kubernetes` command line.
//!
//! Shows: the proposals are listed pending (library and CLI); a bad id writes nothing
//! and an engine write of a bad name is refused before any exec; an approval makes the
//! grant volume and its decision, which the agent reads; the next pass puts the grant
//! in force (pipelock's policy Secret names the host, and the readiness wait finds
//! pipelock running that policy); a denial's reason reaches the agent; a decided
//! proposal cannot be decided again; a revocation removes the grant and the next pass
//! takes the host out of the policy again.
#![cfg(feature = "kube-e2e")]

mod common;

use std::path::Path;
use std::time::Duration;

use bottle_contract::supervise::{DECISIONS_DIR, STATE_MOUNT, Verdict};
use bottle_core::graph::DesiredState;
use bottle_core::hash::DigestKey;
use bottle_core::queue::{self, QueueError};
use bottle_core::ready;
use bottle_engine::{Engine, EngineError, Exec, VolumeFiles};
use common::{down_if_started, pass};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

const PROJECT: &str = "kqueue";
const GRANTED: &str = "docs.example.test";
const DENIED: &str = "other.example.test";

/// The seam's name of agent `hello`'s `node` container (each agent has its own).
fn name(node: &str) -> String {
    bottle_contract::labels::object_name(PROJECT, "hello", node)
}

/// Call supervise's MCP tool `tool` from inside the agent container, as the agent would:
/// one stateless `tools/call` POST to `supervise:8765/mcp`. The tool's text result.
async fn mcp_call<E: Exec>(engine: &E, tool: &str, args: serde_json::Value) -> String {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args},
    })
    .to_string();
    let script = r#"exec 3<>/dev/tcp/supervise/8765 || exit 9
printf 'POST /mcp HTTP/1.1\r\nHost: supervise:8765\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#1}" "$1" >&3
timeout 20 cat <&3"#;
    let cmd: Vec<String> = ["bash", "-c", script, "mcp", &body]
        .map(String::from)
        .into();
    let out = engine
        .exec(&name("agent"), &cmd, None, &[])
        .await
        .expect("exec in the agent");
    assert_eq!(out.code, 0, "{tool}: {out:?}");
    let text = &out.stdout;
    let (Some(start), Some(end)) = (text.find("{\""), text.rfind('}')) else {
        panic!("{tool}: no JSON in the answer: {text}");
    };
    let v: serde_json::Value =
        serde_json::from_str(&text[start..=end]).unwrap_or_else(|e| panic!("{tool}: {e}: {text}"));
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{tool}: no text result: {v}"))
        .to_string()
}

async fn propose<E: Exec>(engine: &E, host: &str) -> String {
    let out = mcp_call(
        engine,
        "egress-block",
        serde_json::json!({"host": host, "reason": format!("read {host}")}),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["id"].as_str().expect("a proposal id").to_string()
}

async fn status_of<E: Exec>(engine: &E, id: &str) -> serde_json::Value {
    let out = mcp_call(engine, "proposal-status", serde_json::json!({"id": id})).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Does one of pipelock's Secrets (its policy) name `host`?
async fn policy_names(secrets: &Api<Secret>, host: &str) -> bool {
    let list = secrets
        .list(&ListParams::default().labels("bottle.node=pipelock"))
        .await
        .expect("pipelock's Secrets");
    list.items.iter().any(|s| {
        s.data
            .iter()
            .flatten()
            .any(|(_, v)| String::from_utf8_lossy(&v.0).contains(host))
    })
}

/// The decisions in supervise's state volume, through the engine.
async fn decisions<E: VolumeFiles>(engine: &E) -> Vec<String> {
    let mut names: Vec<String> = engine
        .read_dir_files(
            &name("supervise"),
            &format!("{STATE_MOUNT}/{DECISIONS_DIR}"),
        )
        .await
        .expect("reading the decisions")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

async fn grants<E: Engine>(engine: &E) -> Vec<String> {
    let mut out: Vec<String> = engine
        .list_volumes(&bottle_contract::labels::project_filter(PROJECT))
        .await
        .expect("volumes")
        .into_iter()
        .filter(|v| v.labels.contains_key(bottle_contract::labels::GRANT_ID))
        .map(|v| v.name)
        .collect();
    out.sort();
    out
}

/// Apply: one pass, then the readiness wait `apply` runs (every sidecar's live config in
/// force).
async fn apply<E: Engine + Exec>(engine: &E, desired: &DesiredState, what: &str) {
    let r = pass(engine, desired, what).await;
    let settled = ready::settle(
        engine,
        r.expects.clone(),
        Duration::from_secs(120),
        &mut |s| eprintln!("{what}: {} {:?} after {:?}", s.container, s.outcome, s.took),
    )
    .await;
    for s in &settled {
        assert!(
            s.outcome.is_ready(),
            "{what}: {} not ready: {:?}",
            s.container,
            s.outcome
        );
    }
}

/// `bottle queue ARGS... --backend kubernetes` with the static `bottle`.
fn cli(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let binary = std::env::var_os("BOTTLE_SIDECAR_BINARY")
        .expect("BOTTLE_SIDECAR_BINARY must name the static bottle");
    std::process::Command::new(binary)
        .arg("queue")
        .args(args)
        .args(["-p", PROJECT, "--backend", "kubernetes", "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .expect("running bottle queue")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_proposes_and_the_operator_decides_on_the_cluster() {
    let (cluster, engine, started) = common::engine(PROJECT).await;
    let (kubeconfig, _, _) = common::cluster_up();
    // One bottle with supervise; the agent a plain Debian image (bash, no curl).
    let dir = common::manifest_dir_with(
        PROJECT,
        "queue",
        "    supervise: true\n    egress:\n      allow: [pypi.org]\n",
    );
    let desired = common::desired_state(&dir);
    let secrets: Api<Secret> = Api::namespaced(cluster.client().clone(), engine.namespace());
    let key = DigestKey::fixed(7);

    // What an interrupted run left goes first: everything below is made anew.
    pass(&engine, &DesiredState::empty(PROJECT), "clean start").await;
    apply(&engine, &desired, "apply").await;
    assert!(!policy_names(&secrets, GRANTED).await);

    // 1. The agent proposes through supervise's MCP interface; the operator sees both
    //    pending, through the library and the command line.
    let granted = propose(&engine, GRANTED).await;
    let denied = propose(&engine, DENIED).await;
    assert_eq!(status_of(&engine, &granted).await["status"], "pending");
    let found = queue::read(&engine, PROJECT).await.expect("queue read");
    let ids: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|f| (f.proposal.id.as_str(), f.status(), f.bottle()))
        .collect();
    // Oldest first, by whole seconds, then by id: two proposals of one second come in
    // id order, in this list and in every list below.
    let same_second = found[0].proposal.created == found[1].proposal.created;
    assert_eq!(
        ids,
        in_read_order(
            same_second,
            [
                (granted.as_str(), "pending", "hello"),
                (denied.as_str(), "pending", "hello"),
            ]
        )
    );
    let listed = cli(&kubeconfig, &["list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.contains(&granted) && text.contains(GRANTED),
        "queue list: {text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // 2. A bad id writes nothing; neither does a bad name given to the engine.
    assert!(matches!(
        queue::find(&found, "../../etc", PROJECT),
        Err(QueueError::NotAnId(_))
    ));
    assert!(matches!(
        queue::find(&found, "p00000000ff", PROJECT),
        Err(QueueError::Missing { .. })
    ));
    let bad = cli(&kubeconfig, &["approve", "p00000000ff"]);
    assert!(!bad.status.success(), "approve of a missing id succeeded");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no proposal p00000000ff"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let state = format!("{STATE_MOUNT}/{DECISIONS_DIR}");
    for bad_name in ["../proposals/x.json", "a/b", ".."] {
        match engine
            .write_file(&name("supervise"), &state, bad_name, b"{}")
            .await
        {
            Err(EngineError::Api { message, .. }) => {
                assert!(message.contains("not a plain file name"), "{message}")
            }
            other => panic!("a write of {bad_name:?}: {other:?}"),
        }
    }
    match engine
        .write_file(&name("supervise"), "/state/../etc", "x", b"{}")
        .await
    {
        Err(EngineError::Api { message, .. }) => {
            assert!(message.contains("directory"), "{message}")
        }
        other => panic!("a write into /state/../etc: {other:?}"),
    }
    assert!(decisions(&engine).await.is_empty());
    assert!(grants(&engine).await.is_empty());

    // 3. Approve: the grant volume and the decision; the agent reads it.
    let f = queue::find(&found, &granted, PROJECT).expect("found");
    let grant = queue::approve(&engine, PROJECT, &key, f, common::now(), None)
        .await
        .expect("approve");
    assert_eq!(grant.bottle, "hello");
    assert_eq!(grants(&engine).await.len(), 1);
    assert_eq!(decisions(&engine).await, [format!("{granted}.json")]);
    assert_eq!(status_of(&engine, &granted).await["status"], "approved");

    // 4. The next apply puts it in force: pipelock's policy names the host, and the
    //    readiness wait finds pipelock running that policy.
    apply(&engine, &desired, "apply with the grant").await;
    assert!(policy_names(&secrets, GRANTED).await);
    assert!(!policy_names(&secrets, DENIED).await);
    let again = pass(&engine, &desired, "apply again").await;
    assert!(
        again.plan.steps.is_empty(),
        "the grant is stable: {:?}",
        again.plan.steps
    );

    // 5. Deny through the command line, with a reason the agent reads.
    let out = cli(&kubeconfig, &["deny", &denied, "--reason", "not this one"]);
    assert!(
        out.status.success(),
        "queue deny: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status_of(&engine, &denied).await;
    assert_eq!(
        (st["status"].as_str(), st["reason"].as_str()),
        (Some("denied"), Some("not this one")),
        "{st}"
    );
    let found = queue::read(&engine, PROJECT).await.expect("queue read");
    let f = queue::find(&found, &denied, PROJECT).expect("found");
    assert_eq!(
        f.decision.as_ref().map(|d| d.verdict),
        Some(Verdict::Denied)
    );
    // Decided: neither approved nor revoked now, and nothing is written.
    assert!(matches!(
        queue::approve(&engine, PROJECT, &key, f, common::now(), None).await,
        Err(QueueError::Decided {
            status: "denied",
            ..
        })
    ));
    assert!(matches!(
        queue::revoke(&engine, PROJECT, f, common::now()).await,
        Err(QueueError::NotApproved {
            status: "denied",
            ..
        })
    ));
    assert_eq!(grants(&engine).await.len(), 1);
    assert!(!policy_names(&secrets, DENIED).await);

    // 6. Revoke: the grant goes, and the next apply takes the host out again.
    let out = cli(&kubeconfig, &["revoke", &granted]);
    assert!(
        out.status.success(),
        "queue revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(grants(&engine).await.is_empty());
    assert_eq!(status_of(&engine, &granted).await["status"], "revoked");
    apply(&engine, &desired, "apply after the revocation").await;
    assert!(!policy_names(&secrets, GRANTED).await);
    let listed = cli(&kubeconfig, &["list", "--all", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("queue list -o json");
    let statuses: Vec<(&str, &str)> = v
        .as_array()
        .expect("an array")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        in_read_order(
            same_second,
            [(granted.as_str(), "revoked"), (denied.as_str(), "denied")]
        )
    );

    // Gone again.
    pass(&engine, &DesiredState::empty(PROJECT), "garbage collection").await;
    cluster.delete_namespace(PROJECT).await.expect("namespace");
    let _ = std::fs::remove_dir_all(&dir);
    down_if_started(started);
}

/// `want`, written in the order the proposals were made, as a queue read lists it: oldest
/// first by whole seconds, so two made in one second come by id (each entry starts with it).
fn in_read_order<T: Ord, const N: usize>(same_second: bool, mut want: [T; N]) -> [T; N] {
    if same_second {
        want.sort();
    }
    want
}
