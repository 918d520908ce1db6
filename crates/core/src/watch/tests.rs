//! The watch loop against the in-memory engine, with paused time: every timer (debounce,
//! resync, backoff) runs in virtual time, so these tests take milliseconds.

use std::cell::RefCell;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::apply::tests::{AgentGen, desired, grant_docs_example, manifest, one};
use bottle_engine::ContainerState;
use bottle_engine::fake::FakeEngine;

fn two() -> Vec<AgentGen> {
    vec![one(1)[0].clone(), one(2)[0].clone()]
}

fn running(e: &FakeEngine, name: &str) -> bool {
    e.snapshot()
        .containers
        .iter()
        .any(|c| c.name == name && c.state == ContainerState::Running)
}

fn count(e: &FakeEngine, call: &str) -> usize {
    e.calls().iter().filter(|c| *c == call).count()
}

fn die(name: &str) -> Trigger {
    Trigger::Event {
        kind: "container".into(),
        action: "die".into(),
        name: name.into(),
    }
}

fn sec(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

struct Harness {
    tx: mpsc::UnboundedSender<Trigger>,
    stop: watch::Sender<bool>,
}

/// Run the watch loop on `engine` while `driver` runs; the driver stops it at the end.
async fn with_watch<F, Fut>(
    engine: &FakeEngine,
    load: &mut Load<'_>,
    opts: Options,
    metrics: &Metrics,
    driver: F,
) where
    F: FnOnce(Harness) -> Fut,
    Fut: std::future::Future<Output = Harness>,
{
    with_watch_seeing(engine, load, opts, metrics, &mut |_| {}, driver).await
}

/// [`with_watch`], each pass's reports handed to `on_reports`.
async fn with_watch_seeing<F, Fut>(
    engine: &FakeEngine,
    load: &mut Load<'_>,
    opts: Options,
    metrics: &Metrics,
    on_reports: &mut OnReports<'_>,
    driver: F,
) where
    F: FnOnce(Harness) -> Fut,
    Fut: std::future::Future<Output = Harness>,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let watcher = run(engine, load, &opts, rx, stop_rx, metrics, on_reports);
    let drive = async move {
        let h = driver(Harness { tx, stop }).await;
        h.stop.send(true).unwrap();
        h
    };
    let (r, _h) = tokio::join!(watcher, drive);
    r.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stopped_agent_is_started_on_its_event_and_a_removed_one_on_resync() {
    let e = FakeEngine::default();
    let d = desired(&manifest("p", &one(1)));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    let opts = Options {
        resync: sec(30.0),
        ..Options::default()
    };
    with_watch(&e, &mut load, opts, &m, |h| async {
        tokio::time::sleep(sec(1.0)).await;
        assert!(running(&e, "bottle-p-a0-agent"), "first converge");
        e.clear_calls();

        e.stop("bottle-p-a0-agent");
        h.tx.send(die("bottle-p-a0-agent")).unwrap();
        tokio::time::sleep(sec(0.1)).await;
        assert!(!running(&e, "bottle-p-a0-agent"), "debounced: not yet");
        tokio::time::sleep(sec(0.15)).await;
        assert!(
            running(&e, "bottle-p-a0-agent"),
            "started after the debounce"
        );
        assert_eq!(e.mutations(), vec!["start_container bottle-p-a0-agent"]);

        // No event at all (a lost one): the resync finds it.
        tokio::time::sleep(sec(5.0)).await;
        e.remove_any("bottle-p-a0-egress");
        tokio::time::sleep(sec(20.0)).await;
        assert!(!running(&e, "bottle-p-a0-egress"));
        tokio::time::sleep(sec(6.0)).await;
        assert!(running(&e, "bottle-p-a0-egress"), "resync repaired it");
        h
    })
    .await;
    assert_eq!(m.reconciles(), 3);
    let text = m.render();
    assert!(text.contains("bottle_drift_repairs_total 2"), "{text}");
    assert!(
        text.contains("bottle_actions_total{action=\"start\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_bottle_backs_off_without_stalling_the_other_and_recovers() {
    let e = FakeEngine::default();
    e.fail_on("bottle-p-a0-agent");
    let d = desired(&manifest("p", &two()));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    let opts = Options {
        backoff: Backoff {
            jitter: 0.0,
            ..Backoff::new(sec(1.0), sec(8.0))
        },
        resync: sec(3600.0),
        ..Options::default()
    };
    with_watch(&e, &mut load, opts, &m, |h| async {
        tokio::time::sleep(sec(0.01)).await;
        assert!(
            running(&e, "bottle-p-a1-agent"),
            "the healthy bottle converged"
        );
        assert_eq!(count(&e, "run_container bottle-p-a0-agent"), 1);
        // Retries at 1 s, then 2 s later, then 4 s later.
        tokio::time::sleep(sec(1.0)).await;
        assert_eq!(count(&e, "run_container bottle-p-a0-agent"), 2);
        tokio::time::sleep(sec(1.9)).await;
        assert_eq!(count(&e, "run_container bottle-p-a0-agent"), 2);
        tokio::time::sleep(sec(0.1)).await;
        assert_eq!(count(&e, "run_container bottle-p-a0-agent"), 3);

        // Meanwhile the healthy bottle is repaired at once, and events about the held
        // one do not make it retry early.
        e.stop("bottle-p-a1-agent");
        h.tx.send(die("bottle-p-a1-agent")).unwrap();
        h.tx.send(die("bottle-p-a0-agent")).unwrap();
        tokio::time::sleep(sec(0.3)).await;
        assert!(running(&e, "bottle-p-a1-agent"));
        assert_eq!(count(&e, "run_container bottle-p-a0-agent"), 3);

        // The cause goes: the next retry converges it.
        e.heal("bottle-p-a0-agent");
        tokio::time::sleep(sec(3.8)).await;
        assert!(running(&e, "bottle-p-a0-agent"), "recovered");
        assert_eq!(count(&e, "run_container bottle-p-a0-agent"), 4);
        h
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn each_pass_hands_its_reports_on_failures_included() {
    let e = FakeEngine::default();
    e.fail_on("bottle-p-a0-agent");
    let d = desired(&manifest("p", &one(1)));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    let mut failed: Vec<String> = Vec::new();
    let mut seen = |reports: &[crate::apply::OpReport]| {
        failed.extend(
            reports
                .iter()
                .filter(|r| matches!(r.outcome, crate::apply::Outcome::Failed(_)))
                .map(|r| r.op.key.to_string()),
        )
    };
    with_watch_seeing(
        &e,
        &mut load,
        Options::default(),
        &m,
        &mut seen,
        |h| async {
            tokio::time::sleep(sec(0.01)).await;
            h
        },
    )
    .await;
    assert!(
        failed.iter().any(|k| k.contains("bottle-p-a0-agent")),
        "{failed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_broken_manifest_keeps_the_last_good_state_and_a_fixed_one_converges() {
    let e = FakeEngine::default();
    let good2 = desired(&manifest("p", &two()));
    let good1 = desired(&manifest("p", &one(1)));
    let versions: RefCell<Vec<anyhow::Result<DesiredState>>> = RefCell::new(vec![
        Ok(good1.clone()),
        Err(anyhow::anyhow!("bottles.yaml:3:7: agents.a1: unknown key")),
        Ok(good2),
    ]);
    let mut load = || versions.borrow_mut().remove(0);
    let m = Metrics::default();
    with_watch(&e, &mut load, Options::default(), &m, |h| async {
        tokio::time::sleep(sec(1.0)).await;
        assert!(running(&e, "bottle-p-a0-agent"));
        e.clear_calls();

        h.tx.send(Trigger::Manifest).unwrap();
        tokio::time::sleep(sec(1.0)).await;
        assert!(e.mutations().is_empty(), "a typo tears nothing down");
        assert!(m.render().contains("bottle_manifest_errors_total 1"));
        // Drift is still repaired with the last good state.
        e.stop("bottle-p-a0-agent");
        h.tx.send(die("bottle-p-a0-agent")).unwrap();
        tokio::time::sleep(sec(1.0)).await;
        assert!(running(&e, "bottle-p-a0-agent"));

        h.tx.send(Trigger::Manifest).unwrap();
        tokio::time::sleep(sec(1.0)).await;
        assert!(
            running(&e, "bottle-p-a1-agent"),
            "the fixed manifest converged"
        );
        h
    })
    .await;
    assert!(versions.borrow().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_agent_removed_from_the_manifest_is_deleted() {
    let e = FakeEngine::default();
    let versions = RefCell::new(vec![
        desired(&manifest("p", &two())),
        desired(&manifest("p", &one(1))),
    ]);
    let mut load = || Ok(versions.borrow_mut().remove(0));
    let m = Metrics::default();
    with_watch(&e, &mut load, Options::default(), &m, |h| async {
        tokio::time::sleep(sec(1.0)).await;
        assert!(running(&e, "bottle-p-a1-agent"));
        h.tx.send(Trigger::Manifest).unwrap();
        tokio::time::sleep(sec(1.0)).await;
        let snap = e.snapshot();
        assert!(
            !snap.containers.iter().any(|c| c.name.contains("-a1-")),
            "{:?}",
            snap.containers
        );
        assert!(running(&e, "bottle-p-a0-agent"));
        h
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_engine_is_retried_with_backoff() {
    let e = FakeEngine::default();
    e.fail_on("networks");
    let d = desired(&manifest("p", &one(1)));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    with_watch(&e, &mut load, Options::default(), &m, |h| async {
        tokio::time::sleep(sec(1.2)).await;
        let tries = count(&e, "list networks");
        assert!((3..=6).contains(&tries), "{tries} tries in 1.2 s");
        e.heal("networks");
        tokio::time::sleep(sec(6.0)).await;
        assert!(running(&e, "bottle-p-a0-agent"));
        h
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_looping_agent_is_held_back() {
    let e = FakeEngine::default();
    let d = desired(&manifest("p", &one(1)));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    let opts = Options {
        backoff: Backoff {
            jitter: 0.0,
            ..Backoff::new(sec(1.0), sec(60.0))
        },
        ..Options::default()
    };
    with_watch(&e, &mut load, opts, &m, |h| async {
        tokio::time::sleep(sec(1.0)).await;
        e.clear_calls();
        // It dies right after every start, for 10 s.
        let t0 = tokio::time::Instant::now();
        while t0.elapsed() < sec(10.0) {
            if !running(&e, "bottle-p-a0-agent") {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(sec(0.05)).await;
                e.stop("bottle-p-a0-agent");
                h.tx.send(die("bottle-p-a0-agent")).unwrap();
            }
            tokio::time::sleep(sec(0.05)).await;
        }
        let starts = count(&e, "start_container bottle-p-a0-agent");
        // Without backoff that would be ~30; with it: now, +0.25, +1, +2, +4 s.
        assert!((3..=6).contains(&starts), "{starts} starts in 10 s");
        h
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_and_leaves_the_bottles_running() {
    let e = FakeEngine::default();
    let d = desired(&manifest("p", &one(1)));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    with_watch(&e, &mut load, Options::default(), &m, |h| async {
        tokio::time::sleep(sec(0.5)).await;
        h
    })
    .await;
    assert!(running(&e, "bottle-p-a0-agent"));
    assert!(!e.mutations().iter().any(|c| c.starts_with("remove")));
}

#[test]
fn the_scheduler_wakes_for_the_earliest_of_its_timers() {
    let now = Instant::now();
    let opts = Options::default();
    let mut s = Scheduler::new(&opts, now);
    assert_eq!(s.next_wakeup(), now);
    assert_eq!(s.poll(now), Some(vec![Trigger::Start]));
    assert_eq!(s.next_wakeup(), now + opts.resync);
    s.push(Trigger::Manifest, now);
    assert_eq!(s.next_wakeup(), now + opts.debounce);
    assert_eq!(s.poll(now + opts.debounce), Some(vec![Trigger::Manifest]));
    let mut rng = rand::rng();
    let d = s.engine_failed(now, &mut rng);
    assert_eq!(s.next_wakeup(), now + d);
    assert_eq!(s.poll(now + d), Some(vec![Trigger::EngineRetry]));
    s.reconciled(now + d);
    assert_eq!(s.poll(now + d + opts.resync), Some(vec![Trigger::Resync]));
}

#[test]
fn the_scheduler_wakes_at_a_grants_end() {
    let now = Instant::now();
    let opts = Options::default();
    let mut s = Scheduler::new(&opts, now);
    assert_eq!(s.poll(now), Some(vec![Trigger::Start]));
    let end = now + sec(30.0);
    s.expire_at(Some(end));
    assert_eq!(s.next_wakeup(), end, "earlier than the resync");
    assert_eq!(s.poll(end - sec(0.001)), None);
    assert_eq!(s.poll(end), Some(vec![Trigger::GrantExpired]), "urgent");
    assert_eq!(s.next_wakeup(), now + opts.resync, "once");
    s.expire_at(Some(end + sec(10.0)));
    s.expire_at(None);
    assert_eq!(s.next_wakeup(), now + opts.resync, "cleared");
}

thread_local! {
    /// When the grant test's virtual clock started (tokio's paused time).
    static EPOCH: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// A wall clock that follows tokio's paused time: unix second 1000 when the test starts.
fn virtual_clock() -> Duration {
    let start = EPOCH.with(|e| e.get()).unwrap_or_else(Instant::now);
    Duration::from_secs(1000) + start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_time_boxed_grant_is_dropped_at_its_end_without_a_trigger() {
    EPOCH.with(|e| e.set(Some(Instant::now())));
    let e = FakeEngine::default();
    let agent = AgentGen {
        supervise: true,
        ..one(1)[0].clone()
    };
    let d = desired(&manifest("p", &[agent]));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    let opts = Options {
        resync: sec(3600.0),
        clock: virtual_clock,
        ..Options::default()
    };
    let policy_writes = || {
        e.mutations()
            .iter()
            .filter(|c| c.starts_with("rewrite_volume bottle-p-a0-pipelock-config"))
            .count()
    };
    with_watch(&e, &mut load, opts, &m, |h| async {
        tokio::time::sleep(sec(1.0)).await;
        // Approved at 1001 for a minute: until 1061.
        let grant = grant_docs_example(&e, "p", "p00000000cc", 1001, Some(1061)).await;
        h.tx.send(Trigger::Resync).unwrap();
        tokio::time::sleep(sec(1.0)).await;
        assert_eq!(policy_writes(), 1, "the grant widens the policy");
        tokio::time::sleep(sec(58.5)).await;
        assert_eq!(policy_writes(), 1, "still in force at 1060.5");
        // No trigger is sent: the loop wakes at the grant's end by itself.
        tokio::time::sleep(sec(1.0)).await;
        assert_eq!(policy_writes(), 2, "narrowed again by 1061.5");
        assert!(
            e.snapshot().volumes.iter().any(|v| v.name == grant),
            "the expired grant's volume is kept"
        );
        h
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn each_bottle_is_waited_for_on_its_own_and_the_loop_goes_on() {
    let e = FakeEngine::default();
    // a1's sidecars serve at once; a0's never say so.
    let serving = bottle_engine::ExecOutput {
        code: 0,
        stdout: r#"{"ready":true,"detail":"serving"}"#.into(),
        stderr: String::new(),
    };
    for node in ["pipelock", "egress", "agent-net"] {
        e.script_exec(&format!("bottle-p-a1-{node}"), vec![serving.clone()]);
    }
    let d = desired(&manifest("p", &two()));
    let mut load = || Ok(d.clone());
    let m = Metrics::default();
    let opts = Options {
        resync: sec(3600.0),
        ready_timeout: sec(30.0),
        ..Options::default()
    };
    let probes = |c: &str| {
        e.calls()
            .iter()
            .filter(|x| x.starts_with(&format!("exec {c}:")))
            .count()
    };
    with_watch(&e, &mut load, opts, &m, |h| async {
        tokio::time::sleep(sec(2.0)).await;
        assert_eq!(
            probes("bottle-p-a1-pipelock"),
            1,
            "ready at the first probe"
        );
        let waiting = probes("bottle-p-a0-pipelock");
        assert!(waiting > 3, "a0 is still probed: {waiting}");
        // The loop is not blocked by a0's wait: a1's stopped agent is repaired at once.
        e.stop("bottle-p-a1-agent");
        h.tx.send(die("bottle-p-a1-agent")).unwrap();
        tokio::time::sleep(sec(0.3)).await;
        assert!(running(&e, "bottle-p-a1-agent"));
        tokio::time::sleep(sec(5.0)).await;
        assert!(
            probes("bottle-p-a0-pipelock") > waiting,
            "a0's wait goes on"
        );
        assert_eq!(probes("bottle-p-a1-pipelock"), 1);
        // Past the deadline a0's wait ends (logged as not ready): no more probes.
        tokio::time::sleep(sec(30.0)).await;
        let done = probes("bottle-p-a0-pipelock");
        tokio::time::sleep(sec(5.0)).await;
        assert_eq!(probes("bottle-p-a0-pipelock"), done);
        h
    })
    .await;
}
