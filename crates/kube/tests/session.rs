//! End-to-end test of sessions on the Kubernetes engine (feature `kube-e2e`;
//! docs/design.md section 9.10) on the test cluster of scripts/kube/cluster.sh: a small
//! manifest converged as in tests/engine.rs, then what `apply`, `get`, `exec` and `logs`
//! do through the engine.
//!
//! Shows: after the pass the readiness wait `apply` runs (`bottle_core::ready::settle`,
//! through the pod `exec` subresource) finds every sidecar ready, and so does `get`'s
//! probe; a command's output, error output and exit status come back, its output cut at
//! the bound; a command runs as the container's user and an exec as another user is
//! refused; the agent's runtime and volumes as `verify` reads them; a sidecar without a
//! shell cannot be signalled and says so; a sidecar's log lines come back time-stamped.
#![cfg(feature = "kube-e2e")]

mod common;

use std::time::Duration;

use bottle_core::graph::DesiredState;
use bottle_core::nodes::{NodeKind, sidecar};
use bottle_core::ready;
use bottle_engine::{EngineError, Exec, MAX_EXEC_OUTPUT};
use common::{down_if_started, pass};
use futures_util::StreamExt;

const PROJECT: &str = "ksession";

fn name(node: &str) -> String {
    bottle_contract::labels::object_name(PROJECT, "hello", node)
}

fn cmd(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_get_ready_and_exec_and_logs_work_on_the_cluster() {
    let (cluster, engine, started) = common::engine(PROJECT).await;
    let dir = common::manifest_dir(PROJECT, "session");
    let desired = common::desired_state(&dir);

    // What an interrupted run left goes first: everything below is made anew.
    pass(&engine, &DesiredState::empty(PROJECT), "clean start").await;

    // 1. `apply`: one pass, then the wait until what it made is in force.
    let r = pass(&engine, &desired, "apply").await;
    let expects = ready::expectations(&desired, &r.reports);
    let waited: Vec<String> = expects.iter().map(|e| e.container.clone()).collect();
    for node in ["pipelock", "egress", "agent-net"] {
        assert!(
            waited.contains(&name(node)),
            "{node} not waited for: {waited:?}"
        );
    }
    let settled = ready::settle(&engine, expects, Duration::from_secs(120), &mut |s| {
        eprintln!("{} {:?} after {:?}", s.container, s.outcome, s.took)
    })
    .await;
    for s in &settled {
        assert!(
            s.outcome.is_ready(),
            "{} not ready: {:?}",
            s.container,
            s.outcome
        );
    }

    // 2. `get`'s probe of a running sidecar.
    for node in [NodeKind::Egress, NodeKind::Pipelock, NodeKind::AgentNet] {
        let probe = sidecar::probe(node).expect("a sidecar has a probe");
        let status = ready::probe_once(&engine, &name(node.as_str()), &probe)
            .await
            .unwrap_or_else(|e| panic!("{node:?}: {e}"));
        assert!(status.ready, "{node:?}: {}", status.detail);
    }

    // 3. `exec`: output, error output and exit status; the bound; the user.
    let agent = name("agent");
    let out = engine
        .exec(
            &agent,
            &cmd(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            None,
            &[],
        )
        .await
        .expect("exec");
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "err\n")
    );
    let ok = engine
        .exec(&agent, &cmd(&["true"]), None, &[])
        .await
        .expect("exec true");
    assert_eq!(ok.code, 0);
    let big = engine
        .exec(
            &agent,
            &cmd(&["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"]),
            None,
            &[],
        )
        .await
        .expect("exec big");
    assert_eq!((big.code, big.stdout.len()), (0, MAX_EXEC_OUTPUT));
    let id = engine
        .exec(
            &agent,
            &cmd(&["id", "-u"]),
            Some(bottle_core::nodes::agent::AGENT_USER),
            &[],
        )
        .await
        .expect("exec as the agent user");
    assert_eq!(id.stdout.trim(), "1000");
    match engine
        .exec(&agent, &cmd(&["id", "-u"]), Some("0:0"), &[])
        .await
    {
        Err(EngineError::Api { message, .. }) => {
            assert!(message.contains("not run as another user"), "{message}")
        }
        other => panic!("exec as root was not refused: {other:?}"),
    }
    match engine
        .exec(&agent, &cmd(&["no-such-binary"]), None, &[])
        .await
    {
        Err(EngineError::Api { message, .. }) => {
            assert!(message.contains("no-such-binary"), "{message}")
        }
        Ok(o) => assert!(o.code != 0, "{o:?}"),
        Err(e) => panic!("{e}"),
    }
    // What `verify` reads on the host side: the agent's runtime and its volumes (its
    // home, never the CA's key).
    let details = engine.container_details(&agent).await.expect("details");
    // `runtime: auto`: gVisor where the cluster offers it (scripts/test.sh's does).
    let runtime = if common::gvisor_offered(cluster.client()).await {
        "runsc"
    } else {
        "runc"
    };
    assert_eq!(details.runtime.as_deref(), Some(runtime));
    assert!(details.volumes.contains(&name("home")), "{details:?}");
    assert!(!details.volumes.contains(&name("ca")), "{details:?}");
    // Standard input: passed and ended from Kubernetes 1.30; before (this cluster is
    // 1.20) refused rather than left open or cut.
    let version = cluster.version().await.expect("version");
    match engine.exec(&agent, &cmd(&["cat"]), None, b"piped\n").await {
        Ok(o) if bottle_kube::engine::session::closes_stdin(&version) => {
            assert_eq!((o.code, o.stdout.as_str()), (0, "piped\n"))
        }
        Err(EngineError::Api { message, .. })
            if !bottle_kube::engine::session::closes_stdin(&version) =>
        {
            assert!(message.contains("1.30"), "{message}")
        }
        other => panic!("exec with stdin on {version}: {other:?}"),
    }
    match engine
        .exec(&name("nothing"), &cmd(&["true"]), None, &[])
        .await
    {
        Err(EngineError::NotFound { .. }) => {}
        other => panic!("exec in a missing container: {other:?}"),
    }
    // A signal is the shell's `kill` in the container: the agent's image has a shell, a
    // sidecar's not.
    engine
        .signal(&agent, "CONT")
        .await
        .expect("signal the agent");
    match engine.signal(&name("egress"), "HUP").await {
        Err(EngineError::Api { message, .. }) => assert!(message.contains("kill"), "{message}"),
        other => panic!("signalling a sidecar without kill: {other:?}"),
    }

    // 4. `logs`: a sidecar's lines, time-stamped (what `audit` parses).
    let mut lines = Vec::new();
    for _ in 0..20 {
        let stream = engine
            .log_lines(&name("egress"), false, 0, 4096)
            .await
            .expect("logs");
        lines = stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .expect("log lines");
        if lines.iter().any(|l| l.contains("egress proxy listening")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listening = lines
        .iter()
        .find(|l| l.contains("egress proxy listening"))
        .unwrap_or_else(|| panic!("egress's log: {lines:#?}"));
    let (ts, _) = bottle_contract::audit::split_docker_line(listening);
    assert!(ts.is_some_and(|t| t > 1.6e9), "{listening}");
    let later = engine
        .log_lines(&name("egress"), false, i64::MAX / 2, 4096)
        .await
        .expect("logs since the future")
        .collect::<Vec<_>>()
        .await;
    assert!(later.is_empty(), "{later:?}");

    // Gone again.
    pass(&engine, &DesiredState::empty(PROJECT), "garbage collection").await;
    cluster.delete_namespace(PROJECT).await.expect("namespace");
    let _ = std::fs::remove_dir_all(&dir);
    down_if_started(started);
}
