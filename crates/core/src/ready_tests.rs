//! What a pass waits for, and the wait itself under paused time against the fake engine.

use super::*;
use crate::apply::tests::{desired, manifest, one};
use crate::apply::{execute, observe, schedule};
use crate::plan::{self, Observed};
use bottle_contract::labels::object_name;
use bottle_contract::status::Rejected;
use bottle_engine::ExecOutput;
use bottle_engine::fake::FakeEngine;

async fn converge(engine: &FakeEngine, d: &DesiredState) -> Vec<OpReport> {
    let snap = observe(engine, &d.project).await.unwrap();
    let p = plan::plan(d, &Observed::from_snapshot(&d.project, &snap));
    execute(engine, d, schedule(&p, d), 3, &mut |_| {})
        .await
        .unwrap()
}

fn status(ready: bool, detail: &str, loaded: &BTreeMap<String, String>) -> ExecOutput {
    let s = Status {
        ready,
        detail: detail.into(),
        loaded: loaded.clone(),
        ..Status::default()
    };
    ExecOutput {
        code: if ready { 0 } else { 1 },
        stdout: serde_json::to_string(&s).unwrap(),
        stderr: String::new(),
    }
}

fn by_node(expects: &[Expect]) -> BTreeMap<NodeKind, &Expect> {
    expects.iter().map(|e| (e.node, e)).collect()
}

#[tokio::test]
async fn a_new_bottle_waits_for_each_sidecar_with_its_live_config() {
    let engine = FakeEngine::default();
    let d = desired(&manifest("r", &one(0)));
    let reports = converge(&engine, &d).await;
    let expects = expectations(&d, &reports);
    let nodes = by_node(&expects);
    assert_eq!(
        nodes.keys().copied().collect::<Vec<_>>(),
        [NodeKind::Pipelock, NodeKind::Egress, NodeKind::AgentNet],
        "every sidecar made, and not the agent (it has no probe)"
    );
    let pipelock = nodes[&NodeKind::Pipelock];
    assert!(!pipelock.nudge, "a new container is not nudged");
    assert_eq!(pipelock.probe, ["/bottle", "sidecar", "probe"]);
    assert!(
        !pipelock.files.is_empty(),
        "pipelock must have its live config in force"
    );
    let file_names = |e: &Expect| {
        e.files
            .iter()
            .map(|(p, d)| (p.rsplit('/').next().unwrap().to_string(), d.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        file_names(nodes[&NodeKind::Egress]),
        file_names(pipelock),
        "egress reads pipelock's config volume too"
    );
    // In sync: a second pass changes nothing and waits for nothing.
    let again = converge(&engine, &d).await;
    assert!(expectations(&d, &again).is_empty());
}

#[tokio::test]
async fn an_allowlist_change_nudges_both_readers_of_the_rewritten_volume() {
    let engine = FakeEngine::default();
    let mut m = manifest("r", &one(0));
    converge(&engine, &desired(&m)).await;
    let before = expectations(&desired(&m), &converge(&engine, &desired(&m)).await);
    assert!(before.is_empty());

    m.bottles.get_mut("p0").unwrap().egress.allow = vec!["api.example.com".into()];
    let d = desired(&m);
    let reports = converge(&engine, &d).await;
    let expects = expectations(&d, &reports);
    let nodes = by_node(&expects);
    assert_eq!(
        nodes.keys().copied().collect::<Vec<_>>(),
        [NodeKind::Pipelock, NodeKind::Egress],
        "only the running readers of the rewritten volume"
    );
    for e in &expects {
        assert!(e.nudge, "{} is nudged to reload", e.container);
        assert!(!e.files.is_empty());
    }
}

fn pipelock_expect(files: &[(&str, &str)], nudge: bool) -> Expect {
    Expect {
        bottle: "p0".into(),
        node: NodeKind::Pipelock,
        container: object_name("r", "p0", "pipelock"),
        probe: status::probe_cmd("/bottle"),
        files: files
            .iter()
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .collect(),
        nudge,
    }
}

#[tokio::test(start_paused = true)]
async fn the_wait_ends_when_the_new_config_is_in_force() {
    let engine = FakeEngine::default();
    let e = pipelock_expect(&[("/c/config.json", "new")], true);
    engine.add_container(&e.container, "img", Default::default());
    let old: BTreeMap<_, _> = [("/c/config.json".to_string(), "old".to_string())].into();
    let new: BTreeMap<_, _> = [("/c/config.json".to_string(), "new".to_string())].into();
    engine.script_exec(
        &e.container,
        vec![
            status(true, "serving", &old),
            status(true, "serving", &old),
            status(true, "serving", &new),
        ],
    );
    let mut seen = Vec::new();
    let out = settle(&engine, vec![e.clone()], DEFAULT_TIMEOUT, &mut |s| {
        seen.push(s.clone())
    })
    .await;
    assert_eq!(out, seen);
    assert_eq!(out[0].outcome, Readiness::Ready("serving".into()));
    assert!(out[0].took < Duration::from_secs(1), "{:?}", out[0].took);
    let calls = engine.calls();
    assert_eq!(calls[0], format!("signal HUP {}", e.container));
    assert_eq!(calls.iter().filter(|c| c.starts_with("exec")).count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_that_never_serves_is_named_with_what_it_last_said() {
    let engine = FakeEngine::default();
    let e = pipelock_expect(&[], false);
    engine.add_container(&e.container, "img", Default::default());
    engine.script_exec(
        &e.container,
        vec![
            status(false, "starting", &BTreeMap::new()),
            status(false, "cloning the mirror of origin", &BTreeMap::new()),
        ],
    );
    let timeout = Duration::from_secs(7);
    let out = settle(&engine, vec![e], timeout, &mut |_| {}).await;
    assert_eq!(
        out[0].outcome,
        Readiness::NotReady("cloning the mirror of origin".into())
    );
    assert!(out[0].took >= timeout && out[0].took < timeout + MAX_PAUSE);
}

#[tokio::test(start_paused = true)]
async fn a_refused_config_ends_the_wait_at_once_with_the_reason() {
    let engine = FakeEngine::default();
    let e = pipelock_expect(&[("/c/config.json", "new")], true);
    engine.add_container(&e.container, "img", Default::default());
    let mut s = Status {
        ready: true,
        detail: "serving".into(),
        ..Status::default()
    };
    s.loaded.insert("/c/config.json".into(), "old".into());
    s.rejected.insert(
        "/c/config.json".into(),
        Rejected {
            digest: "new".into(),
            why: "invalid host bad_host!".into(),
        },
    );
    engine.script_exec(
        &e.container,
        vec![ExecOutput {
            code: 0,
            stdout: serde_json::to_string(&s).unwrap(),
            stderr: String::new(),
        }],
    );
    let out = settle(&engine, vec![e], DEFAULT_TIMEOUT, &mut |_| {}).await;
    assert_eq!(
        out[0].outcome,
        Readiness::Refused {
            path: "/c/config.json".into(),
            why: "invalid host bad_host!".into()
        }
    );
    assert_eq!(out[0].took, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_container_and_garbage_output_keep_it_not_ready() {
    let engine = FakeEngine::default();
    let gone = pipelock_expect(&[], false);
    let out = settle(&engine, vec![gone], Duration::from_secs(2), &mut |_| {}).await;
    let Readiness::NotReady(why) = &out[0].outcome else {
        panic!("{:?}", out[0].outcome)
    };
    assert!(why.contains("not found"), "{why}");

    let e = pipelock_expect(&[], false);
    engine.add_container(&e.container, "img", Default::default());
    engine.script_exec(
        &e.container,
        vec![ExecOutput {
            code: 126,
            stdout: "exec: \"/bottle\": no such file\nmore".into(),
            stderr: String::new(),
        }],
    );
    let out = settle(&engine, vec![e], Duration::from_secs(2), &mut |_| {}).await;
    assert_eq!(
        out[0].outcome,
        Readiness::NotReady("the probe exited 126: exec: \"/bottle\": no such file".into())
    );
}
