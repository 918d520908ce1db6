//! Planner and executor against the in-memory engine: unit tests and properties.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::graph::{self, DesiredState};
use crate::hash::DigestKey;
use crate::images::Context;
use crate::nodes::sidecar;
use crate::plan::{self, Observed};
use bottle_engine::fake::FakeEngine;
use bottle_model::*;

/// One agent of a generated manifest.
#[derive(Clone, Debug)]
pub(crate) struct AgentGen {
    pub(crate) git: bool,
    pub(crate) supervise: bool,
    pub(crate) env: u8,
    pub(crate) runtime_runc: bool,
}

/// A key file as the manifest loader reads it (it seeds the gate's config volume).
fn test_key() -> HostFile {
    HostFile {
        path: "/home/u/.ssh/key".into(),
        contents: b"not a real key\n".to_vec(),
    }
}

pub(crate) fn manifest(project: &str, agents: &[AgentGen]) -> Manifest {
    let mut bottles = BTreeMap::new();
    let mut ags = BTreeMap::new();
    for (i, a) in agents.iter().enumerate() {
        let mut env = BTreeMap::new();
        env.insert("N".to_string(), EnvValue::Literal(a.env.to_string()));
        env.insert(
            "TOKEN".to_string(),
            EnvValue::FromEnv {
                var: "T".into(),
                value: Secret::new(format!("secret-{}", a.env % 2)),
            },
        );
        bottles.insert(
            format!("p{i}"),
            BottlePolicy {
                image: ImageSource::ProviderDefault,
                runtime: if a.runtime_runc {
                    RuntimeChoice::Runc
                } else {
                    RuntimeChoice::Auto
                },
                resources: Resources::default(),
                env,
                egress: Egress::default(),
                git: if a.git {
                    vec![GitRemote {
                        name: "origin".into(),
                        upstream: "ssh://git@h/r.git".into(),
                        identity_file: test_key(),
                        known_host_key: "h ssh-ed25519 AAAA".into(),
                        allow_force: false,
                    }]
                } else {
                    vec![]
                },
                supervise: a.supervise,
            },
        );
        ags.insert(
            format!("a{i}"),
            Agent {
                bottle: format!("p{i}"),
                provider: Provider::Claude,
                prompt: None,
                skills: vec![],
                workspace: None,
                host_login: None,
                remote_control: false,
            },
        );
    }
    Manifest {
        path: "/m/bottles.yaml".into(),
        project: project.into(),
        bottles,
        agents: ags,
    }
}

pub(crate) fn desired(m: &Manifest) -> DesiredState {
    let key = DigestKey::fixed(7);
    let side = sidecar::image_object(
        &key,
        Context {
            files: Default::default(),
            dockerfile: "Dockerfile".into(),
            hash: "0123456789abcdef".into(),
        },
    );
    graph::desired(m, &key, &side, &std::sync::Arc::from(&b"HOST ROOTS"[..])).unwrap()
}

async fn converge(engine: &FakeEngine, d: &DesiredState) -> Vec<OpReport> {
    let snap = observe(engine, &d.project).await.unwrap();
    let p = plan::plan(d, &Observed::from_snapshot(&d.project, &snap));
    let ops = schedule(&p, d);
    execute(engine, d, ops, 3, &mut |_| {}).await.unwrap()
}

async fn plan_now(engine: &FakeEngine, d: &DesiredState) -> plan::Plan {
    let snap = observe(engine, &d.project).await.unwrap();
    plan::plan(d, &Observed::from_snapshot(&d.project, &snap))
}

/// A runtime for a test that blocks on async steps.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

pub(crate) fn one(env: u8) -> Vec<AgentGen> {
    vec![AgentGen {
        git: false,
        supervise: false,
        env,
        runtime_runc: false,
    }]
}

#[test]
fn converge_then_nothing_to_do() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &one(1)));
        let reports = converge(&e, &d).await;
        assert!(reports.iter().all(|r| r.outcome == Outcome::Done));
        assert!(plan_now(&e, &d).await.is_empty());
        e.clear_calls();
        assert!(schedule(&plan_now(&e, &d).await, &d).is_empty());
        assert_eq!(e.calls().len(), 4, "a no-op reconcile is one list per type");
    });
}

#[test]
fn env_change_recreates_only_the_agent_and_names_the_field() {
    rt().block_on(async {
        let e = FakeEngine::default();
        converge(&e, &desired(&manifest("p", &one(1)))).await;
        let d2 = desired(&manifest("p", &one(3)));
        let p = plan_now(&e, &d2).await;
        assert_eq!(p.steps.len(), 1, "{p:#?}");
        assert_eq!(p.steps[0].key.name, "bottle-p-a0-agent");
        assert_eq!(
            p.steps[0].action,
            Action::Recreate {
                reasons: vec!["env changed".into()]
            }
        );
    });
}

#[test]
fn a_secret_change_is_detected_without_showing_it() {
    rt().block_on(async {
        let e = FakeEngine::default();
        converge(&e, &desired(&manifest("p", &one(1)))).await;
        let p = plan_now(&e, &desired(&manifest("p", &one(2)))).await;
        let text = format!("{p:?}{:?}", e.snapshot());
        assert!(!text.contains("secret-"), "{text}");
        assert_eq!(p.steps.len(), 1);
    });
}

#[test]
fn a_removed_sidecar_is_recreated_alone() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &one(1)));
        converge(&e, &d).await;
        e.remove_any("bottle-p-a0-pipelock");
        let p = plan_now(&e, &d).await;
        assert_eq!(p.steps.len(), 1, "{p:#?}");
        assert_eq!(p.steps[0].action, Action::Create);
        e.clear_calls();
        converge(&e, &d).await;
        assert_eq!(e.mutations(), vec!["run_container bottle-p-a0-pipelock"]);
    });
}

#[test]
fn a_removed_network_recreates_what_is_attached() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &one(1)));
        converge(&e, &d).await;
        e.remove_any("bottle-p-a0-agent");
        e.remove_any("bottle-p-a0-net-egress");
        let p = plan_now(&e, &d).await;
        let names: Vec<_> = p.steps.iter().map(|s| s.key.name.as_str()).collect();
        assert!(names.contains(&"bottle-p-a0-pipelock"), "{names:?}");
        assert!(
            !names.contains(&"bottle-p-a0-egress"),
            "egress is not on net-egress"
        );
        converge(&e, &d).await;
        assert!(plan_now(&e, &d).await.is_empty());
    });
}

#[test]
fn a_stopped_container_is_started() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &one(1)));
        converge(&e, &d).await;
        e.stop("bottle-p-a0-egress");
        let p = plan_now(&e, &d).await;
        assert_eq!(p.steps[0].action, Action::Start);
    });
}

#[test]
fn the_agent_follows_the_container_whose_network_namespace_it_joins() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &one(1)));
        converge(&e, &d).await;
        // Started again, the holder has a new namespace: the agent must join it anew.
        e.stop("bottle-p-a0-agent-net");
        let p = plan_now(&e, &d).await;
        let steps: Vec<_> = p
            .steps
            .iter()
            .map(|s| (s.key.name.as_str(), s.action.verb()))
            .collect();
        assert_eq!(
            steps,
            [
                ("bottle-p-a0-agent", "recreate"),
                ("bottle-p-a0-agent-net", "start")
            ],
            "{p:#?}"
        );
        let reasons = match &p.steps[0].action {
            Action::Recreate { reasons } => reasons.join(", "),
            other => format!("{other:?}"),
        };
        assert_eq!(reasons, "container bottle-p-a0-agent-net is started again");
        e.clear_calls();
        converge(&e, &d).await;
        let calls = e.mutations();
        let start = calls
            .iter()
            .position(|c| c == "start_container bottle-p-a0-agent-net");
        let run = calls
            .iter()
            .position(|c| c == "run_container bottle-p-a0-agent");
        assert!(start.is_some() && start < run, "{calls:?}");
        assert!(plan_now(&e, &d).await.is_empty());
        // Removed, likewise.
        e.remove_any("bottle-p-a0-agent-net");
        let p = plan_now(&e, &d).await;
        assert_eq!(p.steps.len(), 2, "{p:#?}");
        converge(&e, &d).await;
        assert!(plan_now(&e, &d).await.is_empty());
    });
}

#[test]
fn removing_an_agent_deletes_exactly_its_objects_and_spares_others() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let two = [one(1), one(2)].concat();
        converge(&e, &desired(&manifest("p", &two))).await;
        converge(&e, &desired(&manifest("other", &one(1)))).await;
        e.add_network("bottle-p-a1-net-internal-lookalike", Default::default());
        let before = e.snapshot();
        let d = desired(&manifest("p", &one(1)));
        converge(&e, &d).await;
        let after = e.snapshot();
        let gone: Vec<_> = before
            .containers
            .iter()
            .map(|c| c.name.clone())
            .chain(before.networks.iter().map(|n| n.name.clone()))
            .chain(before.volumes.iter().map(|n| n.name.clone()))
            .filter(|n| {
                !after.containers.iter().any(|c| &c.name == n)
                    && !after.networks.iter().any(|c| &c.name == n)
                    && !after.volumes.iter().any(|c| &c.name == n)
            })
            .collect();
        assert!(!gone.is_empty());
        assert!(
            gone.iter().all(|n| n.starts_with("bottle-p-a1-")),
            "{gone:?}"
        );
        assert!(
            after
                .networks
                .iter()
                .any(|n| n.name == "bottle-p-a1-net-internal-lookalike")
        );
        assert!(
            after
                .containers
                .iter()
                .any(|c| c.name == "bottle-other-a0-agent")
        );
    });
}

#[test]
fn a_failed_node_stops_only_its_dependents() {
    rt().block_on(async {
        let e = FakeEngine::default();
        e.fail_on("bottle-p-a0-supervise");
        let ag = vec![
            AgentGen {
                git: false,
                supervise: true,
                env: 1,
                runtime_runc: false,
            },
            one(1)[0].clone(),
        ];
        let d = desired(&manifest("p", &ag));
        let reports = converge(&e, &d).await;
        let failed: Vec<_> = reports
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| r.op.key.name.clone())
            .collect();
        let skipped: Vec<_> = reports
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped { .. }))
            .map(|r| r.op.key.name.clone())
            .collect();
        assert_eq!(failed, vec!["bottle-p-a0-supervise"]);
        assert_eq!(skipped, vec!["bottle-p-a0-agent"]);
        let snap = e.snapshot();
        assert!(
            snap.containers
                .iter()
                .any(|c| c.name == "bottle-p-a1-agent")
        );
        assert!(
            snap.containers
                .iter()
                .any(|c| c.name == "bottle-p-a0-pipelock")
        );
    });
}

#[test]
fn runsc_required_but_missing_fails_before_any_change() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let mut m = manifest("p", &one(1));
        if let Some(b) = m.bottles.get_mut("p0") {
            b.runtime = RuntimeChoice::Runsc;
        }
        let d = desired(&m);
        let snap = observe(&e, "p").await.unwrap();
        let p = plan::plan(&d, &Observed::from_snapshot("p", &snap));
        let err = execute(&e, &d, schedule(&p, &d), 2, &mut |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("runsc"), "{err}");
        assert!(e.mutations().is_empty(), "{:?}", e.mutations());
    });
}

/// `desired` with the engine's runtime facts attached, as the binary attaches them.
fn with_facts(mut d: DesiredState, runsc: crate::runtime::Runsc) -> DesiredState {
    d.runtimes = Some(Arc::new(crate::runtime::RuntimeFacts {
        available: vec!["runc".into(), "runsc".into()],
        runsc,
    }));
    d
}

fn broken_runsc() -> crate::runtime::Runsc {
    crate::runtime::verdict(&bottle_engine::ExecOutput {
        code: 2,
        stdout: String::new(),
        stderr: "ls: cannot access '/': Invalid argument\n".into(),
    })
}

fn runtime_label(e: &FakeEngine, name: &str) -> Option<String> {
    e.snapshot()
        .containers
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.labels.get(labels::RUNTIME).cloned())
}

#[test]
fn auto_with_a_broken_runsc_runs_the_agent_under_runc_and_says_why() {
    rt().block_on(async {
        let e = FakeEngine::default();
        e.set_runtimes(&["runc", "runsc"]);
        let d = with_facts(desired(&manifest("p", &one(1))), broken_runsc());
        let w = crate::runtime::warnings(&d);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("bottle a0") && w[0].contains("a newer runsc"),
            "{w:?}"
        );
        converge(&e, &d).await;
        assert_eq!(
            runtime_label(&e, "bottle-p-a0-agent").as_deref(),
            Some("runc")
        );
        // The facts came with the state: the engine was not asked again.
        assert!(!e.calls().iter().any(|c| c.starts_with("runtimes")));
        assert!(plan_now(&e, &d).await.is_empty());
    });
}

#[test]
fn runsc_with_a_broken_runsc_keeps_runsc_and_warns() {
    rt().block_on(async {
        let e = FakeEngine::default();
        e.set_runtimes(&["runc", "runsc"]);
        let mut m = manifest("p", &one(1));
        if let Some(b) = m.bottles.get_mut("p0") {
            b.runtime = RuntimeChoice::Runsc;
        }
        let d = with_facts(desired(&m), broken_runsc());
        let w = crate::runtime::warnings(&d);
        assert!(w.len() == 1 && w[0].contains("runtime runsc"), "{w:?}");
        converge(&e, &d).await;
        assert_eq!(
            runtime_label(&e, "bottle-p-a0-agent").as_deref(),
            Some("runsc")
        );
        // Sidecars stay on runc whatever the agent gets.
        assert_eq!(
            runtime_label(&e, "bottle-p-a0-egress").as_deref(),
            Some("runc")
        );
    });
}

#[test]
fn a_new_verdict_recreates_the_agent_once_and_the_same_one_changes_nothing() {
    rt().block_on(async {
        let e = FakeEngine::default();
        e.set_runtimes(&["runc", "runsc"]);
        let m = manifest("p", &one(1));
        let usable = with_facts(desired(&m), crate::runtime::Runsc::Usable);
        converge(&e, &usable).await;
        assert_eq!(
            runtime_label(&e, "bottle-p-a0-agent").as_deref(),
            Some("runsc")
        );
        assert!(plan_now(&e, &usable).await.is_empty());
        let broken = with_facts(desired(&m), broken_runsc());
        let p = plan_now(&e, &broken).await;
        let steps: Vec<_> = p
            .steps
            .iter()
            .map(|s| (s.key.name.as_str(), &s.action))
            .collect();
        assert_eq!(
            steps,
            vec![(
                "bottle-p-a0-agent",
                &plan::Action::Recreate {
                    reasons: vec!["runtime runsc, now runc".into()]
                }
            )]
        );
        converge(&e, &broken).await;
        assert_eq!(
            runtime_label(&e, "bottle-p-a0-agent").as_deref(),
            Some("runc")
        );
        assert!(plan_now(&e, &broken).await.is_empty());
        // Without facts (a hand-made state) the recorded runtime is not second-guessed.
        assert!(plan_now(&e, &desired(&m)).await.is_empty());
    });
}

#[test]
fn runsc_required_with_facts_saying_absent_fails_at_planning() {
    let mut m = manifest("p", &one(1));
    if let Some(b) = m.bottles.get_mut("p0") {
        b.runtime = RuntimeChoice::Runsc;
    }
    let mut d = desired(&m);
    d.runtimes = Some(Arc::new(crate::runtime::RuntimeFacts::unprobed(vec![
        "runc".into(),
    ])));
    let err = plan_observed(&d, &Snapshot::default(), &Grants::default()).unwrap_err();
    assert!(matches!(err, ApplyError::NoRunsc { .. }), "{err}");
}

fn agent_gen() -> impl Strategy<Value = AgentGen> {
    (any::<bool>(), any::<bool>(), 0u8..4, any::<bool>()).prop_map(|(git, supervise, env, r)| {
        AgentGen {
            git,
            supervise,
            env,
            runtime_runc: r,
        }
    })
}

/// Check that the engine's call log honours every ordering edge of `d`.
fn assert_order(calls: &[String], d: &DesiredState) {
    let pos = |verbs: &[&str], name: &str| {
        calls.iter().rposition(|c| {
            verbs
                .iter()
                .any(|v| c.strip_prefix(v).and_then(|r| r.strip_prefix(' ')) == Some(name))
        })
    };
    let makes = [
        "create_network",
        "create_volume",
        "run_container",
        "build_image",
    ];
    for o in d.objects.values() {
        let Some(me) = pos(&makes, &o.key.name) else {
            continue;
        };
        for a in &o.after {
            if let Some(dep) = pos(&makes, &a.name) {
                assert!(dep < me, "{} created before its dependency {}", o.key, a);
            }
        }
    }
}

#[test]
fn the_two_ca_volumes_get_one_ca_minted_when_they_are_made() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &one(1)));
        converge(&e, &d).await;
        let file = |vol: &str, path: &str| {
            e.volume_files(vol)
                .into_iter()
                .find(|f| f.path == path)
                .map(|f| f.contents)
        };
        let bottle = d
            .objects
            .values()
            .find(|o| o.node == NodeKind::Ca)
            .unwrap()
            .bottle
            .clone();
        let private = bottle_contract::labels::object_name("p", &bottle, "ca");
        let public = bottle_contract::labels::object_name("p", &bottle, "ca-cert");
        let cert = file(&private, ca::CERT_FILE).expect("a certificate");
        assert!(cert.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert_eq!(file(&public, ca::CERT_FILE), Some(cert.clone()), "one CA");
        assert!(file(&private, ca::KEY_FILE).is_some());
        assert!(
            file(&public, ca::KEY_FILE).is_none(),
            "the key never goes where the agent mounts"
        );
        let bundle = file(&public, ca::BUNDLE_FILE).unwrap();
        assert!(bundle.starts_with(b"HOST ROOTS\n") && bundle.ends_with(&cert));
        // Made again (both: they bind each other), they get a new CA.
        e.remove_any(&private);
        converge(&e, &d).await;
        let again = file(&public, ca::CERT_FILE).unwrap();
        assert_ne!(again, cert);
        assert_eq!(file(&private, ca::CERT_FILE), Some(again));
    });
}

/// The volumes of `bottle` that a cold apply creates and seeds (plain and CA ones).
fn seeded_volumes(d: &DesiredState, bottle: &str) -> BTreeSet<String> {
    d.objects
        .values()
        .filter(|o| {
            o.bottle == bottle && matches!(o.spec, ObjectSpec::Volume(_) | ObjectSpec::Ca(_))
        })
        .map(|o| o.key.name.clone())
        .collect()
}

#[test]
fn a_bottles_volumes_are_made_in_one_engine_call_and_fail_together() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let ag = vec![one(1)[0].clone(), one(2)[0].clone()];
        let d = desired(&manifest("p", &ag));
        e.fail_on("bottle-p-a0-ca-cert");
        let reports = converge(&e, &d).await;
        let a0 = seeded_volumes(&d, "a0");
        assert!(a0.len() >= 4, "{a0:?}");
        // a0's seeded volumes went in one call, which failed as a whole: none is left,
        // each reports the failure, and bottle a1 is whole.
        let calls: Vec<_> = e
            .volume_batches()
            .iter()
            .filter(|b| b.iter().any(|n| a0.contains(n)))
            .map(|b| b.iter().cloned().collect::<BTreeSet<_>>())
            .collect();
        assert_eq!(calls, vec![a0.clone()]);
        for r in reports.iter().filter(|r| a0.contains(&r.op.key.name)) {
            assert!(matches!(r.outcome, Outcome::Failed(_)), "{r:?}");
        }
        let snap = e.snapshot();
        assert!(
            !snap.volumes.iter().any(|v| a0.contains(&v.name)),
            "{:?}",
            snap.volumes
        );
        assert!(
            snap.containers
                .iter()
                .any(|c| c.name == "bottle-p-a1-agent")
        );
        // Healed, the next apply makes them, again in one call.
        e.heal("bottle-p-a0-ca-cert");
        let before = e.volume_batches().len();
        for r in converge(&e, &d).await {
            assert_eq!(r.outcome, Outcome::Done, "{r:?}");
        }
        assert!(plan_now(&e, &d).await.is_empty());
        let again: Vec<_> = e.volume_batches()[before..]
            .iter()
            .filter(|b| b.iter().any(|n| a0.contains(n)))
            .map(|b| b.iter().cloned().collect::<BTreeSet<_>>())
            .collect();
        assert_eq!(again, vec![a0.clone()]);
        // From nothing, each bottle's volumes are one call.
        let fresh = FakeEngine::default();
        converge(&fresh, &d).await;
        for bottle in ["a0", "a1"] {
            let want = seeded_volumes(&d, bottle);
            let calls = fresh
                .volume_batches()
                .into_iter()
                .filter(|b| b.iter().any(|n| want.contains(n)))
                .collect::<Vec<_>>();
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert_eq!(calls[0].iter().cloned().collect::<BTreeSet<_>>(), want);
        }
    });
}

#[test]
fn volumes_a_stopped_seeding_left_behind_are_made_anew() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &one(1)));
        converge(&e, &d).await;
        // An apply stopped while seeding: the volumes exist with their labels, not (or
        // half) written, and their seeding helper is still there.
        let bottle = "a0".to_string();
        let volumes: Vec<String> = seeded_volumes(&d, &bottle)
            .into_iter()
            .filter(|v| !e.volume_files(v).is_empty())
            .take(2)
            .collect();
        assert_eq!(volumes.len(), 2, "{volumes:?}");
        for v in &volumes {
            e.empty_volume(v);
        }
        let helper = format!("{}-seed-0badc0de", volumes[0]);
        let mut helper_labels = bottle_contract::labels::object_labels("p", &bottle, "", "", "");
        helper_labels.remove(bottle_contract::labels::NODE);
        helper_labels.insert(
            bottle_contract::labels::SEEDING.into(),
            bottle_contract::labels::seeding_value(volumes.iter().map(String::as_str)),
        );
        e.add_container(&helper, "bottle-sidecar:x", helper_labels);
        // The plan says so, and does not take them as in place.
        let p = plan_now(&e, &d).await;
        for v in &volumes {
            let step = p
                .steps
                .iter()
                .find(|s| s.key.name == *v)
                .unwrap_or_else(|| panic!("{v} is not in the plan: {p:#?}"));
            assert_eq!(
                step.action,
                plan::Action::Recreate {
                    reasons: vec![format!(
                        "left half-seeded (seeding helper {helper} remains)"
                    )]
                }
            );
        }
        assert!(
            p.steps
                .iter()
                .any(|s| s.key.name == helper && s.action == plan::Action::Delete)
        );
        // One apply: the helper goes before its volumes (they are in use by it), and the
        // volumes are written again.
        e.clear_calls();
        for r in converge(&e, &d).await {
            assert_eq!(r.outcome, Outcome::Done, "{r:?}");
        }
        let calls = e.mutations();
        let at = |what: &str| calls.iter().position(|c| c == what).unwrap();
        for v in &volumes {
            assert!(
                at(&format!("remove_container {helper}")) < at(&format!("remove_volume {v}")),
                "{calls:#?}"
            );
            assert!(!e.volume_files(v).is_empty(), "{v} seeded again");
        }
        assert!(plan_now(&e, &d).await.is_empty());
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// The desired state is a function of its inputs: built twice (with and without
    /// grants) from the same inputs, it is the same, key material included (there is
    /// none: CAs are minted at execution).
    #[test]
    fn desired_state_is_deterministic(agents in prop::collection::vec(agent_gen(), 1..4)) {
        let m = manifest("p", &agents);
        let (a, b) = (desired(&m), desired(&m));
        prop_assert_eq!(format!("{:?}", a.objects), format!("{:?}", b.objects));
        let mut grants = bottle_contract::supervise::Grants::default();
        for name in m.agents.keys() {
            grants.by_bottle.entry(name.clone()).or_default().push(bottle_contract::supervise::Grant {
                id: "p0000000001".into(),
                bottle: name.clone(),
                ask: bottle_contract::supervise::Ask::Host { host: "pypi.org".into() },
                at: 1,
                until: None,
            });
        }
        let (ga, gb) = (a.with_grants(&grants).unwrap(), b.with_grants(&grants).unwrap());
        prop_assert_eq!(format!("{:?}", ga.objects), format!("{:?}", gb.objects));
    }

    /// plan(x, x) is empty: once converged, nothing is left to do.
    #[test]
    fn plan_of_converged_state_is_empty(agents in prop::collection::vec(agent_gen(), 1..4)) {
        rt().block_on(async {
            let e = FakeEngine::default();
            let d = desired(&manifest("p", &agents));
            converge(&e, &d).await;
            let p = plan_now(&e, &d).await;
            prop_assert!(p.is_empty(), "{:#?}", p);
            Ok(())
        })?;
    }

    /// From any earlier state, perturbed, one apply reaches the desired state, and every
    /// operation order respects every edge.
    #[test]
    fn execute_reaches_desired_from_anywhere(
        first in prop::collection::vec(agent_gen(), 0..4),
        second in prop::collection::vec(agent_gen(), 1..4),
        kill in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        stop in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        rt().block_on(async {
            let e = FakeEngine::default();
            if !first.is_empty() {
                converge(&e, &desired(&manifest("p", &first))).await;
            }
            let snap = e.snapshot();
            let names: Vec<String> = snap.containers.iter().map(|c| c.name.clone())
                .chain(snap.networks.iter().map(|n| n.name.clone()))
                .chain(snap.volumes.iter().map(|n| n.name.clone()))
                .collect();
            if !names.is_empty() {
                for k in &kill {
                    let n: &String = k.get(&names);
                    // Removing a network under running containers is what `docker network
                    // rm` refuses; model `docker rm -f` of containers and volumes only.
                    if !n.contains("-net-") {
                        e.remove_any(n);
                    }
                }
                for s in &stop {
                    e.stop(s.get(&names).as_str());
                }
            }
            e.clear_calls();
            let d = desired(&manifest("p", &second));
            let reports = converge(&e, &d).await;
            for r in &reports {
                prop_assert_eq!(&r.outcome, &Outcome::Done, "{:?}", r.op);
            }
            assert_order(&e.calls(), &d);
            let p = plan_now(&e, &d).await;
            prop_assert!(p.is_empty(), "{:#?}", p);
            Ok(())
        })?;
    }
}

/// Grant bottle `a0` of `project` the host `docs.example` as `bottle queue approve`
/// does (a volume made with the graph's constructor), approved `at`, ending at `until`:
/// the volume's name.
pub(crate) async fn grant_docs_example(
    engine: &FakeEngine,
    project: &str,
    id: &str,
    at: u64,
    until: Option<u64>,
) -> String {
    use bottle_contract::supervise::{Ask, Grant};
    let grant = Grant {
        id: id.into(),
        bottle: "a0".into(),
        ask: Ask::Host {
            host: "docs.example".into(),
        },
        at,
        until,
    };
    let obj = crate::nodes::supervise::grant_object(project, &DigestKey::fixed(7), "img", &grant);
    let ObjectSpec::Volume(spec) = &obj.spec else {
        panic!("a grant is a volume")
    };
    engine.create_volume(spec).await.unwrap();
    spec.name.clone()
}

/// The desired state of project `p`: one agent with `supervise: true`.
fn supervised(p: &str) -> DesiredState {
    desired(&manifest(
        p,
        &[AgentGen {
            git: false,
            supervise: true,
            env: 0,
            runtime_runc: true,
        }],
    ))
}

#[test]
fn a_host_grant_rewrites_the_firewall_policy_in_place_and_restarts_nothing() {
    rt().block_on(async {
        let engine = FakeEngine::default();
        let d = supervised("g");
        let noop = ReconcileOptions::default();
        let made = reconcile_once(&engine, &d, &noop, &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        // A live volume made in this run already holds its files: its marker is planned
        // as a plain create and only recorded, nothing is written twice.
        let markers: Vec<&crate::plan::Step> = made
            .plan
            .steps
            .iter()
            .filter(|s| s.key.name.contains("-rev-"))
            .collect();
        assert!(!markers.is_empty());
        assert!(
            markers.iter().all(|s| s.action == Action::Create),
            "{markers:?}"
        );
        let first = engine.mutations();
        assert!(
            !first.iter().any(|c| c.starts_with("rewrite_volume")),
            "{first:?}"
        );
        assert!(
            first.iter().any(|c| c.contains("pipelock-config-rev-")),
            "{first:?}"
        );
        let grant = grant_docs_example(&engine, "g", "p00000000aa", 1, None).await;
        let before = engine.mutations().len();
        let r = reconcile_once(&engine, &d, &noop, &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        // pipelock's policy gets a new revision (the old marker goes), written into the
        // live volume in place; pipelock and egress reload it, so no container is touched.
        let only_revisions = |steps: &[crate::plan::Step]| {
            steps.iter().all(|s| {
                s.key.kind == ObjectKind::Volume && s.key.name.contains("-pipelock-config-rev-")
            })
        };
        assert!(only_revisions(&r.plan.steps), "{:?}", r.plan.steps);
        let verbs: BTreeSet<&str> = r.plan.steps.iter().map(|s| s.action.verb()).collect();
        assert_eq!(verbs, BTreeSet::from(["rewrite", "delete"]));
        let rewrites: Vec<String> = engine
            .mutations()
            .into_iter()
            .skip(before)
            .filter(|c| c.starts_with("rewrite_volume"))
            .collect();
        assert_eq!(rewrites, ["rewrite_volume bottle-g-a0-pipelock-config"]);
        // Converged: the grant is desired, so the next pass does nothing.
        let again = reconcile_once(&engine, &d, &noop, &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert!(again.plan.is_empty(), "{:?}", again.plan.steps);
        // Revoked: the firewall closes again, still without touching the agent.
        engine.remove_volume(&grant).await.unwrap();
        let r = reconcile_once(&engine, &d, &noop, &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert!(only_revisions(&r.plan.steps), "{:?}", r.plan.steps);
        assert!(!r.plan.is_empty());
    });
}

#[test]
fn a_time_boxed_grant_stops_counting_at_its_end_and_its_volume_stays() {
    rt().block_on(async {
        let engine = FakeEngine::default();
        let d = supervised("t");
        let at = |now| ReconcileOptions {
            now,
            ..ReconcileOptions::default()
        };
        reconcile_once(&engine, &d, &at(100), &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        let grant = grant_docs_example(&engine, "t", "p00000000bb", 100, Some(160)).await;
        let r = reconcile_once(&engine, &d, &at(101), &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(r.next_expiry, Some(160), "the watch wakes at the end");
        assert!(
            r.plan.steps.iter().any(|s| s.action
                == Action::Rewrite {
                    volume: "bottle-t-a0-pipelock-config".into()
                }),
            "{:?}",
            r.plan.steps
        );
        let same = reconcile_once(&engine, &d, &at(159), &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert!(same.plan.is_empty(), "{:?}", same.plan.steps);
        // At its end the policy is rewritten without the host; the grant volume is kept
        // (shown as expired), and nothing more is scheduled.
        let r = reconcile_once(&engine, &d, &at(160), &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(r.next_expiry, None);
        assert!(!r.plan.is_empty());
        assert!(
            r.plan.steps.iter().all(|s| s.key.name != grant),
            "{:?}",
            r.plan.steps
        );
        let again = reconcile_once(&engine, &d, &at(10_000), &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert!(again.plan.is_empty(), "{:?}", again.plan.steps);
    });
}

#[test]
fn an_old_image_is_removed_only_after_every_build_of_the_run() {
    let step = |name: &str, bottle: &str, node: &str, action| plan::Step {
        key: ObjectKey::new(ObjectKind::Image, name),
        bottle: bottle.into(),
        node: NodeKind::parse(node),
        action,
    };
    let p = plan::Plan {
        steps: vec![
            step("bottle-p-a-agent:new", "a", "agent", Action::Create),
            step("bottle-p-a-agent:old", "a", "agent", Action::Delete),
            step("bottle-sidecar:new", "", "sidecar-image", Action::Create),
            step("bottle-sidecar:old", "", "sidecar-image", Action::Delete),
        ],
        ..Default::default()
    };
    let ops = schedule(&p, &DesiredState::empty("p"));
    let index = |name: &str, kind| {
        ops.iter()
            .position(|o| o.key.name == name && o.kind == kind)
            .expect("op")
    };
    let builds = [
        index("bottle-p-a-agent:new", OpKind::Make),
        index("bottle-sidecar:new", OpKind::Make),
    ];
    for old in ["bottle-p-a-agent:old", "bottle-sidecar:old"] {
        let preds = &ops[index(old, OpKind::Remove)].preds;
        for b in builds {
            assert!(preds.contains(&b), "{old} may go before {}", ops[b].key);
        }
    }
}

/// A rebuild with grants (every watch trigger, once a project has one) reuses the build
/// contexts and skill digests of the state it rebuilds: it reads no file. Shown by
/// removing the context and the skill before the rebuild.
#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "the test makes a build context on disk to show the rebuild does not read it"
)]
fn a_rebuild_with_grants_reads_no_build_context_again() {
    use bottle_contract::supervise::{Ask, Grant, Grants};
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    let skill = dir.path().join("skill");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(skill.join("SKILL.md"), "a skill\n").unwrap();
    let mut m = manifest(
        "g",
        &[AgentGen {
            git: false,
            supervise: true,
            env: 0,
            runtime_runc: true,
        }],
    );
    let policy = m.bottles.get_mut("p0").unwrap();
    policy.image = ImageSource::Dockerfile {
        dockerfile: context.join("Dockerfile"),
        context: context.clone(),
    };
    m.agents.get_mut("a0").unwrap().skills = vec![Skill {
        name: "s".into(),
        dir: skill.clone(),
    }];
    let d = desired(&m);
    let cache = &d.blueprint.as_ref().unwrap().contexts;
    assert_eq!(cache.len(), (1, 1));
    std::fs::remove_dir_all(dir.path()).unwrap();
    let mut grants = Grants::default();
    grants
        .by_bottle
        .entry("a0".into())
        .or_default()
        .push(Grant {
            id: "p0000000001".into(),
            bottle: "a0".into(),
            ask: Ask::Host {
                host: "pypi.org".into(),
            },
            at: 1,
            until: None,
        });
    let granted = d.with_grants(&grants).expect("rebuilt from the cache");
    assert_ne!(format!("{:?}", granted.objects), format!("{:?}", d.objects));
    let image = |s: &DesiredState| {
        s.objects
            .keys()
            .find(|k| k.kind == ObjectKind::Image && k.name.contains("-agent:"))
            .cloned()
    };
    assert_eq!(image(&granted), image(&d));
    assert_eq!(cache.len(), (1, 1));
}

#[test]
fn agents_with_one_context_share_one_image_kept_while_any_wants_it() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let agent_images = |e: &FakeEngine| {
            let mut tags: Vec<String> = e
                .snapshot()
                .images
                .iter()
                .filter(|i| i.tag.contains("-agent:"))
                .map(|i| i.tag.clone())
                .collect();
            tags.sort();
            tags
        };
        // Three agents on the provider's default Dockerfile: one context, one build.
        let three = [one(1), one(2), one(3)].concat();
        converge(&e, &desired(&manifest("p", &three))).await;
        let images = agent_images(&e);
        assert_eq!(images.len(), 1, "{images:?}");
        assert!(images[0].starts_with("bottle-p-agent:"), "{images:?}");
        let builds = e
            .calls()
            .iter()
            .filter(|c| c.starts_with("build_image"))
            .filter(|c| c.contains("-agent:"))
            .count();
        assert_eq!(builds, 1);
        // Removing two of them keeps the image the third still runs on.
        converge(&e, &desired(&manifest("p", &one(1)))).await;
        assert_eq!(agent_images(&e), images);
        // With none left, it is garbage-collected.
        converge(&e, &DesiredState::empty("p")).await;
        assert!(agent_images(&e).is_empty());
    });
}
