//! `bottle apply --watch`: keep Docker converged.
//!
//! After the first converge, the same reconcile pass ([`crate::apply::reconcile_once`])
//! runs again whenever a [`Trigger`] asks: a manifest edit, an engine event on one of
//! the project's objects, the periodic resync, a held bottle's retry, or the event
//! stream coming back after a loss. The decisions are pure and tested against the
//! in-memory engine with paused time (kube-runtime's controller shape):
//!
//! - [`triggers`]: what triggers exist, which engine events are ours, and the debouncer
//!   that turns a burst of them into one reconcile;
//! - [`backoff`]: exponential backoff with jitter, and per-bottle holds, so a failing or
//!   crash-looping bottle is retried ever later while the others are reconciled as usual;
//! - [`Scheduler`]: debouncer + resync timer + holds + engine retry + the next grant
//!   expiry: when to run next;
//! - [`run`]: the loop itself. A manifest that no longer loads is reported (with its
//!   line and column) and the last good desired state stays in force.
//!
//! The I/O around it is the binary's (`bottle::edge`: inotify on the manifest's
//! directory, the project lock); the event-stream follower is [`events`], over the
//! engine's `Events` trait; [`metrics`] counts.

pub mod backoff;
pub mod events;
pub mod metrics;
pub mod triggers;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::apply::{OpReport, Outcome, ReconcileOptions, reconcile_once, verb};
use crate::graph::DesiredState;
use crate::plan::Action;
use bottle_engine::{Engine, Exec};
use futures_util::stream::{FuturesUnordered, StreamExt};

pub use backoff::{Backoff, BottleOutcome, Holds};
pub use metrics::Metrics;
pub use triggers::{Debouncer, Trigger};

/// How the watch loop behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Quiet time after the last trigger of a burst before reconciling.
    pub debounce: Duration,
    /// A burst never delays a reconcile by more than this.
    pub max_wait: Duration,
    /// Time between full resyncs.
    pub resync: Duration,
    /// Remove the project's objects that are not desired (see
    /// [`ReconcileOptions::prune`]).
    pub prune: bool,
    /// Operations run at once, at most, in each reconcile.
    pub concurrency: usize,
    /// Backoff of failing bottles.
    pub backoff: Backoff,
    /// Backoff of retries when the engine cannot be reached.
    pub engine_backoff: Backoff,
    /// How long each bottle's sidecars get to be ready after a pass changed them.
    pub ready_timeout: Duration,
    /// The wall clock, as the time since the epoch: time-boxed grants end by it (the
    /// binary passes the system's; tests a fixed one).
    pub clock: fn() -> Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debounce: Duration::from_millis(200),
            max_wait: Duration::from_secs(2),
            resync: Duration::from_secs(60),
            prune: true,
            concurrency: crate::apply::DEFAULT_CONCURRENCY,
            backoff: Backoff::BOTTLES,
            engine_backoff: Backoff::ENGINE,
            ready_timeout: crate::ready::DEFAULT_TIMEOUT,
            clock: bottle_contract::supervise::unix_now,
        }
    }
}

/// When the next reconcile runs, and why.
#[derive(Debug)]
pub struct Scheduler {
    debounce: Debouncer,
    resync: Duration,
    next_resync: Instant,
    holds: Holds,
    engine_backoff: Backoff,
    engine_failures: u32,
    engine_retry: Option<Instant>,
    expiry: Option<Instant>,
}

impl Scheduler {
    /// A scheduler whose first batch, `[Start]`, is due at `now`.
    pub fn new(opts: &Options, now: Instant) -> Scheduler {
        let mut debounce = Debouncer::new(opts.debounce, opts.max_wait);
        debounce.push(Trigger::Start, now);
        Scheduler {
            debounce,
            resync: opts.resync,
            next_resync: now + opts.resync,
            holds: Holds::new(opts.backoff),
            engine_backoff: opts.engine_backoff,
            engine_failures: 0,
            engine_retry: None,
            expiry: None,
        }
    }

    /// Add trigger `t`, seen at `now`, to the pending burst.
    pub fn push(&mut self, t: Trigger, now: Instant) {
        self.debounce.push(t, now);
    }

    /// The earliest instant something may be due.
    pub fn next_wakeup(&self) -> Instant {
        [
            self.debounce.deadline(),
            Some(self.next_resync),
            self.holds.next_release(),
            self.engine_retry,
            self.expiry,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_resync)
    }

    /// The batch of triggers to reconcile for, when one is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Trigger>> {
        if self.next_resync <= now {
            self.next_resync = now + self.resync;
            self.debounce.push(Trigger::Resync, now);
        }
        for bottle in self.holds.take_released(now) {
            self.debounce.push(Trigger::Retry { bottle }, now);
        }
        if self.engine_retry.is_some_and(|t| t <= now) {
            self.engine_retry = None;
            self.debounce.push(Trigger::EngineRetry, now);
        }
        if self.expiry.is_some_and(|t| t <= now) {
            self.expiry = None;
            self.debounce.push(Trigger::GrantExpired, now);
        }
        self.debounce.take(now)
    }

    /// A reconcile ended at `now`: the next resync is a full period away.
    pub fn reconciled(&mut self, now: Instant) {
        self.next_resync = now + self.resync;
    }

    /// The first time-boxed grant in force ends at `at` (`None`: none is time-boxed):
    /// a reconcile is due then, which no longer holds it.
    pub fn expire_at(&mut self, at: Option<Instant>) {
        self.expiry = at;
    }

    /// The engine could not be reached: retry after a backoff, returned.
    pub fn engine_failed(&mut self, now: Instant, rng: &mut impl rand::Rng) -> Duration {
        self.engine_failures += 1;
        let d = self.engine_backoff.delay(self.engine_failures, rng);
        self.engine_retry = Some(now + d);
        d
    }

    /// The engine answered: its failures are forgotten and no engine retry is pending.
    pub fn engine_ok(&mut self) {
        self.engine_failures = 0;
        self.engine_retry = None;
    }

    /// The per-bottle holds.
    pub fn holds(&self) -> &Holds {
        &self.holds
    }

    /// The per-bottle holds, to record outcomes or clear them.
    pub fn holds_mut(&mut self) -> &mut Holds {
        &mut self.holds
    }
}

/// Past a grant's end before the reconcile that drops it: the clock's reading and the
/// timer may disagree by a little.
const EXPIRY_MARGIN: Duration = Duration::from_millis(20);

/// What decides whether two desired states differ: every object's key and spec hash.
fn fingerprint(d: &DesiredState) -> BTreeMap<String, String> {
    d.objects
        .iter()
        .map(|(k, o)| (k.to_string(), o.hash.hash.clone()))
        .collect()
}

/// Loads the desired state (manifest -> model -> desired); called at start and after
/// every manifest change.
pub type Load<'a> = dyn FnMut() -> anyhow::Result<DesiredState> + 'a;

/// Sees each pass's reports once the pass is over (the binary places the engine's
/// refusals in the manifest with them, as `apply` does).
pub type OnReports<'a> = dyn FnMut(&[OpReport]) + 'a;

/// Converge, then keep converging until `shutdown` turns true (or its sender goes).
/// A reconcile in flight is always finished first. The first load must succeed: there
/// is no last good state to keep yet.
pub async fn run<E: Engine + Exec>(
    engine: &E,
    load: &mut Load<'_>,
    opts: &Options,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
    mut shutdown: watch::Receiver<bool>,
    metrics: &Metrics,
    on_reports: &mut OnReports<'_>,
) -> anyhow::Result<()> {
    let mut desired = load()?;
    let mut sched = Scheduler::new(opts, Instant::now());
    let mut triggers_open = true;
    // Each bottle's wait for what a pass changed in it, side by side: a slow bottle
    // delays neither the others' nor the next pass.
    let mut waits = FuturesUnordered::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(batch) = sched.poll(Instant::now()) {
            let (expects, reports) =
                pass(engine, load, &mut desired, opts, &mut sched, batch, metrics).await;
            if !reports.is_empty() {
                on_reports(&reports);
            }
            let mut by_bottle: BTreeMap<String, Vec<crate::ready::Expect>> = BTreeMap::new();
            for e in expects {
                by_bottle.entry(e.bottle.clone()).or_default().push(e);
            }
            for (bottle, expects) in by_bottle {
                let timeout = opts.ready_timeout;
                waits.push(async move {
                    let settled = crate::ready::settle(engine, expects, timeout, &mut |_| {}).await;
                    (bottle, settled)
                });
            }
            sched.reconciled(Instant::now());
            continue;
        }
        let wake = sched.next_wakeup();
        tokio::select! {
            Some((bottle, settled)) = waits.next(), if !waits.is_empty() => {
                log_readiness(&bottle, &settled, metrics);
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            t = triggers.recv(), if triggers_open => match t {
                Some(t) => {
                    tracing::debug!(trigger = %t, "trigger");
                    sched.push(t, Instant::now());
                }
                None => triggers_open = false,
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    tracing::info!("watch stopped; the bottles keep running");
    Ok(())
}

/// How a bottle's wait ended, in the log.
fn log_readiness(bottle: &str, settled: &[crate::ready::Settled], metrics: &Metrics) {
    use crate::ready::Readiness;
    let took = settled.iter().map(|s| s.took).max().unwrap_or_default();
    let mut ready = true;
    for s in settled {
        match &s.outcome {
            Readiness::Ready(_) => {}
            Readiness::Refused { path, why } => {
                ready = false;
                tracing::warn!(%bottle, node = s.node.as_str(), path, why, "the new config was refused; the previous one stays in force");
            }
            Readiness::NotReady(last) => {
                ready = false;
                tracing::warn!(%bottle, node = s.node.as_str(), last, took_ms = s.took.as_millis() as u64, "not ready in time");
            }
        }
    }
    if ready {
        tracing::info!(%bottle, took_ms = took.as_millis() as u64, "ready: the changes are in force");
    } else {
        metrics.error();
    }
}

/// One reconcile for `batch`: reload the manifest when it changed, then reconcile with
/// the held bottles left out, and record per bottle how it went. Returns what to wait
/// for before its changes are in force.
async fn pass<E: Engine>(
    engine: &E,
    load: &mut Load<'_>,
    desired: &mut DesiredState,
    opts: &Options,
    sched: &mut Scheduler,
    batch: Vec<Trigger>,
    metrics: &Metrics,
) -> (Vec<crate::ready::Expect>, Vec<OpReport>) {
    let started = Instant::now();
    let trigger = batch
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Drift is change nobody asked for; the first converge and manifest edits are asked for.
    let mut drift = !batch.contains(&Trigger::Start);
    if batch.contains(&Trigger::Manifest) {
        match load() {
            Ok(d) => {
                if fingerprint(&d) != fingerprint(desired) {
                    tracing::info!(
                        objects = d.objects.len(),
                        "manifest changed: new desired state"
                    );
                    sched.holds_mut().clear();
                    drift = false;
                }
                *desired = d;
            }
            Err(e) => {
                metrics.manifest_error();
                tracing::error!(
                    "manifest not applied; the last good desired state stays in force:\n{e:#}"
                );
                if batch.iter().all(|t| *t == Trigger::Manifest) {
                    return (Vec::new(), Vec::new());
                }
            }
        }
    }
    let now = Instant::now();
    let held = sched.holds().held(now);
    tracing::info!(%trigger, held = held.len(), "reconcile");
    let options = ReconcileOptions {
        prune: opts.prune,
        concurrency: opts.concurrency,
        held: held.clone(),
        now: (opts.clock)().as_secs(),
    };
    let result = reconcile_once(
        engine,
        desired,
        &options,
        &mut |p| {
            for s in &p.steps {
                let reasons = match &s.action {
                    Action::Recreate { reasons } => reasons.join(", "),
                    _ => String::new(),
                };
                tracing::info!(
                    bottle = %s.bottle,
                    node = bottle_contract::node::shown(s.node),
                    object = %s.key,
                    action = s.action.verb(),
                    reasons,
                    "plan"
                );
            }
        },
        &mut |r| match &r.outcome {
            Outcome::Done => tracing::info!(
                op = verb(r.op.kind),
                object = %r.op.key,
                took_ms = r.took.as_millis() as u64,
                "done"
            ),
            Outcome::Failed(e) => tracing::warn!(
                op = verb(r.op.kind),
                object = %r.op.key,
                error = %e,
                "failed"
            ),
            Outcome::Skipped { because } => tracing::warn!(
                op = verb(r.op.kind),
                object = %r.op.key,
                because = %because,
                "skipped"
            ),
        },
    )
    .await;
    let took = started.elapsed();
    metrics.reconciled(took);
    let mut rng = rand::rng();
    let r = match result {
        Ok(r) => {
            sched.engine_ok();
            r
        }
        Err(e) => {
            metrics.error();
            let wait = sched.engine_failed(Instant::now(), &mut rng);
            tracing::error!(error = %bottle_contract::ErrorChain(&e), retry_in_ms = wait.as_millis() as u64, "reconcile failed");
            return (Vec::new(), Vec::new());
        }
    };
    for s in &r.plan.steps {
        metrics.action(s.action.verb());
    }
    // Wake when the first time-boxed grant ends: it is in force while the clock's whole
    // seconds are below its end, so the wake-up is that second, to the millisecond.
    let expiry = r.next_expiry.map(|until| {
        let left = Duration::from_secs(until).saturating_sub((opts.clock)());
        Instant::now() + left + EXPIRY_MARGIN
    });
    if let Some(u) = r.next_expiry {
        tracing::info!(until = u, "a grant ends; reconciling again then");
    }
    sched.expire_at(expiry);
    let mut outcome: BTreeMap<&str, BottleOutcome> = BTreeMap::new();
    for rep in &r.reports {
        let o = match rep.outcome {
            Outcome::Done => BottleOutcome::Repaired,
            _ => {
                metrics.error();
                BottleOutcome::Failed
            }
        };
        let e = outcome.entry(rep.op.bottle.as_str()).or_insert(o);
        if o == BottleOutcome::Failed {
            *e = o;
        }
    }
    let repaired = r
        .reports
        .iter()
        .filter(|rep| rep.outcome == Outcome::Done)
        .count();
    if drift && repaired > 0 {
        metrics.drift_repairs(repaired as u64);
    }
    let bottles: BTreeSet<&str> = desired
        .objects
        .values()
        .map(|o| o.bottle.as_str())
        .collect();
    for b in bottles {
        if !held.contains(b) {
            outcome.entry(b).or_insert(BottleOutcome::Healthy);
        }
    }
    let now = Instant::now();
    for (b, o) in outcome {
        if let Some(hold) = sched.holds_mut().record(b, o, drift, now, &mut rng) {
            tracing::warn!(
                bottle = %b,
                failures = sched.holds().failures(b),
                retry_in_ms = hold.as_millis() as u64,
                "bottle held back after {}",
                if o == BottleOutcome::Failed { "a failure" } else { "repeated repairs (crash loop?)" }
            );
        }
    }
    let failed = r
        .reports
        .iter()
        .filter(|rep| rep.outcome != Outcome::Done)
        .count();
    tracing::info!(
        %trigger,
        actions = r.plan.steps.len(),
        done = repaired,
        failed,
        held_steps = r.held.len(),
        took_ms = took.as_millis() as u64,
        "{}",
        if r.plan.is_empty() { "in sync" } else { "reconciled" }
    );
    (r.expects, r.reports)
}

#[cfg(test)]
mod tests;
