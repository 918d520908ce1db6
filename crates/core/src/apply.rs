//! The executor: turns a [`Plan`] into operations ordered by the graph and runs them on
//! an [`Engine`]: creations dependencies-first, removals dependents-first, independent
//! operations concurrently (bounded). A failed operation stops only what depends on it.
//! The volumes a bottle creates and seeds that are ready together are made in one engine
//! call, taking one place (one seeding helper per bottle, not one per volume).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::graph::DesiredState;
use crate::nodes::{DesiredObject, NodeKind, ObjectKey, ObjectKind, ObjectSpec, ca};
use crate::plan::{self, Action, Observed, Plan, Step};
use crate::runtime::{RuntimeFacts, resolve};
use bottle_contract::labels;
use bottle_contract::supervise::Grants;
use bottle_engine::{Engine, EngineError, Snapshot};
use bottle_model::RuntimeChoice;

/// Operations run at once, at most.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Read what the project holds: one list call per object type, run together.
pub async fn observe<E: Engine>(engine: &E, project: &str) -> Result<Snapshot, EngineError> {
    let ours = labels::project_filter(project);
    let managed = labels::managed_filter();
    let (networks, volumes, containers, images) = futures_util::future::join4(
        engine.list_networks(&ours),
        engine.list_volumes(&ours),
        engine.list_containers(&ours),
        engine.list_images(&managed),
    )
    .await;
    Ok(Snapshot {
        networks: networks?,
        volumes: volumes?,
        containers: containers?,
        images: images?,
    })
}

/// How one reconcile runs.
#[derive(Clone, Debug)]
pub struct ReconcileOptions {
    /// Remove the project's objects that are not desired.
    pub prune: bool,
    /// Operations run at once, at most.
    pub concurrency: usize,
    /// Bottles whose steps are left out this time (backing off after failures).
    pub held: BTreeSet<String>,
    /// Unix seconds now: time-boxed grants that end at or before it are left out of
    /// the desired state (time is data: the caller reads the clock).
    pub now: u64,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            prune: true,
            concurrency: DEFAULT_CONCURRENCY,
            held: BTreeSet::new(),
            now: 0,
        }
    }
}

/// What one reconcile did.
#[derive(Clone, Debug)]
pub struct Reconciled {
    /// The plan that ran (held bottles' steps removed).
    pub plan: Plan,
    /// The steps left out because their bottle is held.
    pub held: Vec<Step>,
    /// Every operation of the run, in the order it ended (skipped ones included).
    pub reports: Vec<OpReport>,
    /// What to wait for before the run's changes are in force ([`crate::ready`]).
    pub expects: Vec<crate::ready::Expect>,
    /// When the first time-boxed grant in force ends (unix seconds): a watch reconciles
    /// again then, so the grant stops counting on time.
    pub next_expiry: Option<u64>,
}

/// One pass of the reconciler, shared by `apply` and `apply --watch`: observe the
/// project, plan against `desired`, drop what `options` leaves out, and execute.
/// `on_plan` sees the plan before anything runs; `progress` each operation as it ends.
pub async fn reconcile_once<E: Engine>(
    engine: &E,
    desired: &DesiredState,
    options: &ReconcileOptions,
    on_plan: &mut dyn FnMut(&Plan),
    progress: &mut dyn FnMut(&OpReport),
) -> Result<Reconciled, ApplyError> {
    let snap = observe(engine, &desired.project).await?;
    let grants = grants_of(&desired.project, &snap, options.now);
    let (desired, mut p) = plan_observed(desired, &snap, &grants)?;
    let next_expiry = grants.next_expiry();
    let desired = desired.as_ref();
    if !options.prune {
        p.steps.retain(|s| s.action != Action::Delete);
    }
    let (held, steps): (Vec<Step>, Vec<Step>) = p
        .steps
        .into_iter()
        .partition(|s| options.held.contains(&s.bottle));
    p.steps = steps;
    on_plan(&p);
    let ops = schedule(&p, desired);
    let reports = execute(engine, desired, ops, options.concurrency, progress).await?;
    let expects = crate::ready::expectations(desired, &reports);
    Ok(Reconciled {
        plan: p,
        held,
        reports,
        expects,
        next_expiry,
    })
}

/// The operator's grants among the project's volumes in `snap`, as of `now` (unix
/// seconds): in force, or expired.
pub fn grants_of(project: &str, snap: &Snapshot, now: u64) -> Grants {
    Grants::from_volumes(
        snap.volumes
            .iter()
            .filter(|v| labels::is_ours(&v.labels, project))
            .map(|v| &v.labels),
        now,
    )
}

/// The plan from `desired` to what `snap` holds, with `grants` (those [`grants_of`]
/// found in `snap`; the ones in force) merged into the desired state first (which is
/// returned, as the plan refers to it).
pub fn plan_observed<'a>(
    desired: &'a DesiredState,
    snap: &Snapshot,
    grants: &Grants,
) -> Result<(std::borrow::Cow<'a, DesiredState>, Plan), ApplyError> {
    crate::runtime::check(desired)?;
    let desired = desired.with_grants(grants)?;
    let p = plan::plan(&desired, &Observed::from_snapshot(&desired.project, snap));
    Ok((desired, p))
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// Remove the object from the engine.
    Remove,
    /// Create the object from its desired spec: build an image, create a network or
    /// volume (rewriting a revision's files), or run a container.
    Make,
    /// Start an existing, stopped container.
    Start,
    /// Only create a live volume's revision marker: the volume itself is being made in
    /// the same run with these very files, so rewriting them would be a no-op.
    Mark,
}

/// One engine operation and the operations it waits for.
#[derive(Clone, Debug)]
pub struct Op {
    /// What the operation does to the object.
    pub kind: OpKind,
    /// The object it acts on.
    pub key: ObjectKey,
    /// The bottle the object belongs to.
    pub bottle: String,
    /// The node kind (None for an orphan without a valid node label).
    pub node: Option<NodeKind>,
    /// Indexes of the operations that must succeed first.
    pub preds: Vec<usize>,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The engine carried it out.
    Done,
    /// The engine refused it.
    Failed(EngineError),
    /// Not run because an operation it waits for did not succeed.
    Skipped {
        /// The failed operation at the root of the chain waited for, as `verb key did not
        /// succeed`.
        because: String,
    },
}

/// A finished operation, for progress and the summary.
#[derive(Clone, Debug)]
pub struct OpReport {
    /// The operation that ended.
    pub op: Op,
    /// How it ended.
    pub outcome: Outcome,
    /// How long the engine took (zero for skipped operations).
    pub took: std::time::Duration,
}

/// Why an apply could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A bottle asks for `runtime: runsc` and the engine has no `runsc` runtime
    /// registered; found before any operation runs.
    #[error(
        "bottle {bottle} asks for runtime runsc, but the engine offers only: {}; \
         give it gVisor (Docker: install runsc and register it, see README; Kubernetes: \
         a RuntimeClass `runsc` labelled bottle.netlock=cni, whose nodes chain the netlock \
         CNI plugin, docs/design.md 9.5) or set `runtime: auto`",
        available.join(", ")
    )]
    NoRunsc {
        /// The bottle that asks for `runsc`.
        bottle: String,
        /// The runtimes the engine offers.
        available: Vec<String>,
    },
    /// Observing the project or listing the engine's runtimes failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The grants found on the project's volumes could not be merged into the desired
    /// state.
    #[error("merging the approved grants")]
    Grants(#[from] crate::graph::GraphError),
}

/// Order of removal inside one node: containers before volumes and networks, images last.
fn removal_rank(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Container => 0,
        ObjectKind::Volume => 1,
        ObjectKind::Network => 2,
        ObjectKind::Image => 3,
    }
}

/// Expand a plan into operations with their ordering edges.
pub fn schedule(plan: &Plan, desired: &DesiredState) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    let mut make: BTreeMap<&ObjectKey, usize> = BTreeMap::new();
    let mut remove: BTreeMap<&ObjectKey, usize> = BTreeMap::new();
    let push = |ops: &mut Vec<Op>, kind, step: &crate::plan::Step| {
        ops.push(Op {
            kind,
            key: step.key.clone(),
            bottle: step.bottle.clone(),
            node: step.node,
            preds: Vec::new(),
        });
        ops.len() - 1
    };
    for step in &plan.steps {
        match &step.action {
            // A revision created (not rewritten) is one whose volume is made in this
            // run with its files: only its marker is recorded (see `plan`).
            Action::Create => {
                let revision = desired
                    .objects
                    .get(&step.key)
                    .is_some_and(|d| matches!(d.spec, ObjectSpec::Revision(_)));
                let kind = if revision { OpKind::Mark } else { OpKind::Make };
                make.insert(&step.key, push(&mut ops, kind, step));
            }
            Action::Rewrite { .. } => {
                make.insert(&step.key, push(&mut ops, OpKind::Make, step));
            }
            Action::Recreate { .. } => {
                remove.insert(&step.key, push(&mut ops, OpKind::Remove, step));
                make.insert(&step.key, push(&mut ops, OpKind::Make, step));
            }
            Action::Start => {
                make.insert(&step.key, push(&mut ops, OpKind::Start, step));
            }
            Action::Delete => {
                remove.insert(&step.key, push(&mut ops, OpKind::Remove, step));
            }
        }
    }
    // Creations: after the object's own removal and after what it needs.
    for (key, &i) in &make {
        let mut preds = Vec::new();
        if let Some(&r) = remove.get(key) {
            preds.push(r);
        }
        if let Some(d) = desired.objects.get(*key) {
            preds.extend(d.after.iter().filter_map(|a| make.get(a).copied()));
        }
        ops[i].preds = preds;
    }
    // Removals: dependents first, within a bottle.
    let removals: Vec<(usize, Option<NodeKind>)> =
        remove.values().map(|&i| (i, ops[i].node)).collect();
    for &(a, na) in &removals {
        for &(b, nb) in &removals {
            if a == b || ops[a].bottle != ops[b].bottle {
                continue;
            }
            // `a` goes first when its node depends on `b`'s, or, in one node, by rank.
            // An object with no known node goes first: it may depend on anything.
            let first = match (na, nb) {
                (Some(x), Some(y)) if x == y => {
                    removal_rank(ops[a].key.kind) < removal_rank(ops[b].key.kind)
                }
                (Some(x), Some(y)) => x.depends_on(y),
                (None, Some(_)) => true,
                _ => false,
            };
            if first {
                ops[b].preds.push(a);
            }
        }
    }
    // An image is removed only once every build of this run is done: removing it
    // prunes its untagged parent layers, which a build running meanwhile may be
    // using as its cache ("unable to find image sha256:...").
    let builds: Vec<usize> = make
        .iter()
        .filter(|(k, i)| k.kind == ObjectKind::Image && ops[**i].kind == OpKind::Make)
        .map(|(_, &i)| i)
        .collect();
    // An image may be shared by the bottles of a project (agents with one context): it
    // goes after every container removal of the run, whichever bottle, as an image in
    // use is left in place by the engine.
    let container_removals: Vec<usize> = remove
        .values()
        .copied()
        .filter(|&i| ops[i].key.kind == ObjectKind::Container)
        .collect();
    for &i in remove.values() {
        if ops[i].key.kind == ObjectKind::Image {
            ops[i]
                .preds
                .extend(builds.iter().copied().filter(|&b| b != i));
            ops[i].preds.extend(container_removals.iter().copied());
        }
    }
    ops
}

/// Run `ops` on `engine`. `progress` sees each operation as it ends.
pub async fn execute<E: Engine>(
    engine: &E,
    desired: &DesiredState,
    ops: Vec<Op>,
    concurrency: usize,
    progress: &mut dyn FnMut(&OpReport),
) -> Result<Vec<OpReport>, ApplyError> {
    let runtimes = resolve_runtimes(engine, desired, &ops).await?;
    let n = ops.len();
    let mut outcome: Vec<Option<Outcome>> = vec![None; n];
    let mut started = vec![false; n];
    let mints = Mints::default();
    let mints = &mints;
    let subnets = crate::subnets::Allocator::new(&desired.addressing);
    let subnets = &subnets;
    let mut running = FuturesUnordered::new();
    let mut reports = Vec::with_capacity(n);
    loop {
        // Settle what can no longer run, then start what is ready, in a stable order.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for i in 0..n {
                if started[i] {
                    continue;
                }
                let blocker = ops[i].preds.iter().find(|&&p| {
                    matches!(
                        outcome[p],
                        Some(Outcome::Failed(_) | Outcome::Skipped { .. })
                    )
                });
                if let Some(&p) = blocker {
                    started[i] = true;
                    // Name the failure at the root of the chain, not the skip before.
                    let because = match &outcome[p] {
                        Some(Outcome::Skipped { because }) => because.clone(),
                        _ => format!("{} {} did not succeed", verb(ops[p].kind), ops[p].key),
                    };
                    let o = Outcome::Skipped { because };
                    outcome[i] = Some(o.clone());
                    let r = OpReport {
                        op: ops[i].clone(),
                        outcome: o,
                        took: Default::default(),
                    };
                    progress(&r);
                    reports.push(r);
                    progressed = true;
                }
            }
        }
        let ready = |i: usize, started: &[bool]| {
            !started[i]
                && ops[i]
                    .preds
                    .iter()
                    .all(|&p| outcome[p] == Some(Outcome::Done))
        };
        for i in 0..n {
            if running.len() >= concurrency.max(1) {
                break;
            }
            if !ready(i, &started) {
                continue;
            }
            // The seeded volumes of a bottle that are ready together are made together,
            // in one engine call (one seeding helper), taking one place.
            let seeded = seeded_volume(desired, &ops[i]).is_some();
            let batch: Vec<usize> = if seeded {
                (i..n)
                    .filter(|&j| {
                        ready(j, &started)
                            && ops[j].bottle == ops[i].bottle
                            && seeded_volume(desired, &ops[j]).is_some()
                    })
                    .collect()
            } else {
                vec![i]
            };
            for &j in &batch {
                started[j] = true;
            }
            let ops = &ops;
            let runtime = runtimes.get(&ops[i].key).cloned().flatten();
            running.push(async move {
                let t = std::time::Instant::now();
                let results = if seeded {
                    make_volumes(engine, desired, ops, &batch, mints).await
                } else {
                    vec![(
                        i,
                        run_op(engine, desired, &ops[i], runtime, mints, subnets).await,
                    )]
                };
                (results, t.elapsed())
            });
        }
        let Some((results, took)) = running.next().await else {
            break;
        };
        for (i, result) in results {
            let o = match result {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(e),
            };
            outcome[i] = Some(o.clone());
            let r = OpReport {
                op: ops[i].clone(),
                outcome: o,
                took,
            };
            progress(&r);
            reports.push(r);
        }
    }
    Ok(reports)
}

/// The volume `op` creates and seeds: a plain or a CA volume made anew (a revision's
/// rewrite and marker are not).
fn seeded_volume<'a>(desired: &'a DesiredState, op: &Op) -> Option<&'a DesiredObject> {
    let d = desired.objects.get(&op.key)?;
    (op.kind == OpKind::Make && matches!(d.spec, ObjectSpec::Volume(_) | ObjectSpec::Ca(_)))
        .then_some(d)
}

/// Make the volumes of the operations `batch` (each a [`seeded_volume`]) with one
/// [`Engine::create_volumes`]: all succeed or all fail, with the same error.
async fn make_volumes<E: Engine>(
    engine: &E,
    desired: &DesiredState,
    ops: &[Op],
    batch: &[usize],
    mints: &Mints,
) -> Vec<(usize, Result<(), EngineError>)> {
    let specs: Result<Vec<bottle_engine::VolumeSpec>, EngineError> = batch
        .iter()
        .filter_map(|&i| {
            let d = seeded_volume(desired, &ops[i])?;
            match &d.spec {
                ObjectSpec::Ca(c) => Some(mints.of(&d.bottle, c).map(|m| c.materialize(&m))),
                ObjectSpec::Volume(s) => Some(Ok(s.clone())),
                _ => None,
            }
        })
        .collect();
    let r = match specs {
        Ok(specs) => engine.create_volumes(&specs).await,
        Err(e) => Err(e),
    };
    batch.iter().map(|&i| (i, r.clone())).collect()
}

/// The word that names an operation of `kind` in progress lines, logs and reports
/// (`remove`, `create`, `start`, `record`).
pub fn verb(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Remove => "remove",
        OpKind::Make => "create",
        OpKind::Start => "start",
        OpKind::Mark => "record",
    }
}

/// Decide each new container's runtime before anything changes, so a bottle that needs
/// runsc on an engine without it fails with nothing touched. The decision is
/// [`crate::runtime::resolve`]'s, from the facts attached to `desired` (whose warnings
/// the binary prints), else from the engine's runtimes, a listed runsc presumed usable
/// (warnings logged here).
async fn resolve_runtimes<E: Engine>(
    engine: &E,
    desired: &DesiredState,
    ops: &[Op],
) -> Result<BTreeMap<ObjectKey, Option<String>>, ApplyError> {
    let mut out = BTreeMap::new();
    let mut asked: Option<RuntimeFacts> = None;
    for op in ops.iter().filter(|o| o.kind == OpKind::Make) {
        let Some(d) = desired.objects.get(&op.key) else {
            continue;
        };
        let ObjectSpec::Container(_, choice) = &d.spec else {
            continue;
        };
        let r = match (choice, desired.runtimes.as_deref()) {
            (RuntimeChoice::Runc, _) => None,
            (_, Some(facts)) => resolve(&d.bottle, *choice, facts)?.runtime,
            (_, None) => {
                let facts = match asked.take() {
                    Some(f) => f,
                    None => RuntimeFacts::unprobed(engine.runtimes().await?),
                };
                let r = resolve(&d.bottle, *choice, &facts)?;
                asked = Some(facts);
                if let Some(w) = &r.warning {
                    tracing::warn!("{w}");
                }
                r.runtime
            }
        };
        out.insert(op.key.clone(), r);
    }
    Ok(out)
}

/// The CAs minted in one execution, by bottle: the two volumes of a bottle's CA get one.
#[derive(Default)]
struct Mints(std::sync::Mutex<BTreeMap<String, Arc<ca::CaMaterial>>>);

impl Mints {
    /// The CA of `bottle` in this execution, minted on first use.
    fn of(&self, bottle: &str, spec: &ca::CaVolume) -> Result<Arc<ca::CaMaterial>, EngineError> {
        let mut minted = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = minted.get(bottle) {
            return Ok(Arc::clone(m));
        }
        // The one place the clock is read and a key generated: creating a CA volume.
        #[expect(
            clippy::disallowed_methods,
            reason = "the executor mints a CA when it creates its volumes, at the time it does"
        )]
        let m = ca::generate(bottle, &spec.common_name, time::OffsetDateTime::now_utc()).map_err(
            |e| EngineError::Api {
                op: "mint CA",
                name: spec.volume.name.clone(),
                message: e.to_string(),
            },
        )?;
        let m = Arc::new(m);
        minted.insert(bottle.to_string(), Arc::clone(&m));
        Ok(m)
    }
}

async fn run_op<E: Engine>(
    engine: &E,
    desired: &DesiredState,
    op: &Op,
    runtime: Option<String>,
    mints: &Mints,
    subnets: &crate::subnets::Allocator<'_>,
) -> Result<(), EngineError> {
    let name = op.key.name.as_str();
    match op.kind {
        OpKind::Remove => match op.key.kind {
            ObjectKind::Container => engine.remove_container(name).await,
            ObjectKind::Network => engine.remove_network(name).await,
            ObjectKind::Volume => engine.remove_volume(name).await,
            ObjectKind::Image => engine.remove_image(name).await,
        },
        OpKind::Start => engine.start_container(name).await,
        OpKind::Mark => match desired.objects.get(&op.key).map(|d| &d.spec) {
            Some(ObjectSpec::Revision(r)) => engine.create_volume(&r.marker).await,
            _ => Ok(()),
        },
        OpKind::Make => {
            let Some(d) = desired.objects.get(&op.key) else {
                return Ok(());
            };
            match &d.spec {
                ObjectSpec::Network(s) => subnets.create(engine, s).await,
                // `execute` makes these in batches; one is a batch of one.
                ObjectSpec::Volume(_) | ObjectSpec::Ca(_) => {
                    let made = make_volumes(engine, desired, std::slice::from_ref(op), &[0], mints);
                    made.await.pop().map_or(Ok(()), |(_, r)| r)
                }
                ObjectSpec::Revision(r) => {
                    engine.rewrite_volume(&r.content).await?;
                    engine.create_volume(&r.marker).await
                }
                ObjectSpec::Image(s) => engine.build_image(s).await,
                ObjectSpec::Container(s, _) => {
                    let mut spec = (**s).clone();
                    spec.labels.insert(
                        labels::RUNTIME.into(),
                        runtime.clone().unwrap_or_else(|| "runc".into()),
                    );
                    spec.runtime = runtime;
                    engine.run_container(&spec).await
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
pub(crate) mod tests;
