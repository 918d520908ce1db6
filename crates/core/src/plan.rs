//! The planner: a pure function from desired and observed state to actions, each with
//! its reason. No I/O: `plan(desired, observed)` is unit-tested and property-tested
//! without an engine (kube-runtime's reconciler shape).

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::DesiredState;
use crate::nodes::{NodeKind, ObjectKey, ObjectKind};
use bottle_contract::labels;
use bottle_engine::{ContainerState, Labels, Snapshot};

/// One object as Docker holds it, reduced to what the planner compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedObject {
    /// The object's type and name.
    pub key: ObjectKey,
    /// The object's labels: project, bottle, node, spec hash and per-field digests.
    pub labels: Labels,
    /// For containers: running or not.
    pub running: Option<bool>,
    /// For containers: attached networks.
    pub networks: Vec<String>,
    /// For volumes: the seeding helper left beside it (an apply stopped while seeding
    /// it, so it may be empty or half written: made anew, never taken as in place).
    pub seeding_left: Option<String>,
}

impl ObservedObject {
    /// The bottle the object is labelled with; empty when it carries no bottle label.
    pub fn bottle(&self) -> &str {
        self.labels.get(labels::BOTTLE).map_or("", String::as_str)
    }

    /// The node kind the object is labelled with; `None` when the label is missing or
    /// names no node.
    pub fn node(&self) -> Option<NodeKind> {
        self.labels
            .get(labels::NODE)
            .and_then(|n| NodeKind::parse(n))
    }
    fn hash(&self) -> &str {
        self.labels
            .get(labels::SPEC_HASH)
            .map_or("", String::as_str)
    }
}

/// What one project holds in Docker.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The project's objects and the shared sidecar images, by key.
    pub objects: BTreeMap<ObjectKey, ObservedObject>,
}

impl Observed {
    /// Keep the project's objects and the shared sidecar images from a snapshot.
    pub fn from_snapshot(project: &str, snap: &Snapshot) -> Observed {
        let mut objects = BTreeMap::new();
        // The volumes a seeding helper of the project still mounts, and the helper.
        let half_seeded: BTreeMap<&str, &str> = snap
            .containers
            .iter()
            .filter(|c| labels::is_ours(&c.labels, project))
            .flat_map(|c| labels::seeding(&c.labels).map(|v| (v, c.name.as_str())))
            .collect();
        let mut put = |kind, name: &str, labels: &Labels, running, networks: Vec<String>| {
            let key = ObjectKey::new(kind, name);
            let seeding_left = (kind == ObjectKind::Volume)
                .then(|| half_seeded.get(name).map(|h| h.to_string()))
                .flatten();
            objects.insert(
                key.clone(),
                ObservedObject {
                    key,
                    labels: labels.clone(),
                    running,
                    networks,
                    seeding_left,
                },
            );
        };
        for n in snap
            .networks
            .iter()
            .filter(|n| labels::is_ours(&n.labels, project))
        {
            put(ObjectKind::Network, &n.name, &n.labels, None, Vec::new());
        }
        for v in snap
            .volumes
            .iter()
            .filter(|v| labels::is_ours(&v.labels, project))
        {
            put(ObjectKind::Volume, &v.name, &v.labels, None, Vec::new());
        }
        for c in snap
            .containers
            .iter()
            .filter(|c| labels::is_ours(&c.labels, project))
        {
            let running = c.state == ContainerState::Running;
            put(
                ObjectKind::Container,
                &c.name,
                &c.labels,
                Some(running),
                c.networks.clone(),
            );
        }
        for i in &snap.images {
            let shared = i.labels.get(labels::NODE).map(String::as_str)
                == Some(NodeKind::SidecarImage.as_str())
                && i.labels.get(labels::MANAGED).map(String::as_str) == Some("true");
            if labels::is_ours(&i.labels, project) || shared {
                put(ObjectKind::Image, &i.tag, &i.labels, None, Vec::new());
            }
        }
        Observed { objects }
    }
}

/// What to do with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// It is missing.
    Create,
    /// It exists but differs; the reasons name the fields.
    Recreate {
        /// What differs, one phrase each (`env changed`, `not attached to network n`,
        /// `volume v is made anew`).
        reasons: Vec<String>,
    },
    /// It exists as desired but is not running.
    Start,
    /// A live volume's new revision: its files are written into `volume` in place,
    /// and the sidecars reading them reload (see `nodes::BottleCtx::live_volume`).
    Rewrite {
        /// The name of the live volume whose files are rewritten.
        volume: String,
    },
    /// It is ours but no longer wanted.
    Delete,
}

impl Action {
    /// The word that names the action in plans and logs (`create`, `recreate`, `start`,
    /// `rewrite`, `delete`).
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Recreate { .. } => "recreate",
            Action::Start => "start",
            Action::Rewrite { .. } => "rewrite",
            Action::Delete => "delete",
        }
    }
}

/// One planned change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The object the step changes.
    pub key: ObjectKey,
    /// Running bottle, empty for shared objects.
    pub bottle: String,
    /// Node kind as labelled (None when an orphan carries no valid node label).
    pub node: Option<NodeKind>,
    /// What is done to the object, and why.
    pub action: Action,
}

/// All changes, plus the objects left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The changes, sorted by bottle then object key.
    pub steps: Vec<Step>,
    /// The desired objects Docker already holds as desired.
    pub unchanged: Vec<ObjectKey>,
}

impl Plan {
    /// True when nothing needs to change (unchanged objects do not count).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Decide what must change for `observed` to become `desired`.
pub fn plan(desired: &DesiredState, observed: &Observed) -> Plan {
    let mut actions: BTreeMap<&ObjectKey, Option<Action>> = BTreeMap::new();
    for (key, d) in &desired.objects {
        let action = match observed.objects.get(key) {
            None => Some(match &d.spec {
                crate::nodes::ObjectSpec::Revision(r) => Action::Rewrite {
                    volume: r.content.name.clone(),
                },
                _ => Action::Create,
            }),
            Some(o) => compare(d, o, desired.runtimes.as_deref()),
        };
        actions.insert(key, action);
    }
    // A (re)created object forces the objects bound to it to be recreated too, and so
    // does a container started again (one that joined its network namespace holds a
    // stale one). Each round only turns keep/start into recreate, so this ends.
    loop {
        let mut changed = false;
        for (key, d) in &desired.objects {
            if matches!(
                actions.get(key),
                Some(Some(Action::Create | Action::Recreate { .. }))
            ) {
                continue;
            }
            let cause = d.binds.iter().find(|b| {
                matches!(
                    actions.get(b),
                    Some(Some(
                        Action::Create | Action::Recreate { .. } | Action::Start
                    ))
                )
            });
            if let Some(b) = cause {
                let how = match actions.get(b) {
                    Some(Some(Action::Start)) => "is started again",
                    _ => "is made anew",
                };
                actions.insert(
                    key,
                    Some(Action::Recreate {
                        reasons: vec![format!("{b} {how}")],
                    }),
                );
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // A revision whose volume is made in this run is only recorded: the volume is
    // seeded with these very files.
    let made: BTreeSet<&ObjectKey> = actions
        .iter()
        .filter(|(_, a)| matches!(a, Some(Action::Create | Action::Recreate { .. })))
        .map(|(k, _)| *k)
        .collect();
    for action in actions.values_mut() {
        if let Some(Action::Rewrite { volume }) = action
            && made.contains(&ObjectKey::new(ObjectKind::Volume, volume.clone()))
        {
            *action = Some(Action::Create);
        }
    }
    let mut plan = Plan::default();
    for (key, action) in actions {
        let d = &desired.objects[key];
        match action {
            Some(action) => plan.steps.push(Step {
                key: key.clone(),
                bottle: d.bottle.clone(),
                node: Some(d.node),
                action,
            }),
            None => plan.unchanged.push(key.clone()),
        }
    }
    for (key, o) in &observed.objects {
        if desired.objects.contains_key(key) || !labels::is_ours(&o.labels, &desired.project) {
            continue;
        }
        plan.steps.push(Step {
            key: key.clone(),
            bottle: o.bottle().to_string(),
            node: o.node(),
            action: Action::Delete,
        });
    }
    plan.steps
        .sort_by(|a, b| (&a.bottle, &a.key).cmp(&(&b.bottle, &b.key)));
    plan
}

/// Compare one desired object with what Docker holds. With the engine's runtime facts,
/// a container whose recorded runtime is not the one it resolves to now is recreated
/// (the resolved runtime is part of its identity, `crate::runtime`).
fn compare(
    d: &crate::nodes::DesiredObject,
    o: &ObservedObject,
    runtimes: Option<&crate::runtime::RuntimeFacts>,
) -> Option<Action> {
    if let Some(helper) = &o.seeding_left {
        return Some(Action::Recreate {
            reasons: vec![format!(
                "left half-seeded (seeding helper {helper} remains)"
            )],
        });
    }
    if o.hash() != d.hash.hash {
        return Some(Action::Recreate {
            reasons: changed_fields(&d.hash.fields, &o.labels),
        });
    }
    if let crate::nodes::ObjectSpec::Container(spec, choice) = &d.spec {
        let want: BTreeSet<&String> = spec.networks.iter().collect();
        let have: BTreeSet<&String> = o.networks.iter().collect();
        if want != have {
            let mut reasons: Vec<String> = want
                .difference(&have)
                .map(|n| format!("not attached to network {n}"))
                .collect();
            reasons.extend(
                have.difference(&want)
                    .map(|n| format!("attached to network {n}")),
            );
            return Some(Action::Recreate { reasons });
        }
        if let (Some(facts), Some(have)) = (runtimes, o.labels.get(labels::RUNTIME))
            && let Ok(r) = crate::runtime::resolve(&d.bottle, *choice, facts)
            && r.label() != have
        {
            return Some(Action::Recreate {
                reasons: vec![format!("runtime {have}, now {}", r.label())],
            });
        }
        if o.running == Some(false) {
            return Some(Action::Start);
        }
    }
    None
}

/// The fields whose digests differ, as `field changed`.
fn changed_fields(want: &BTreeMap<String, String>, have: &Labels) -> Vec<String> {
    let have: BTreeMap<&str, &str> = have
        .get(labels::SPEC_FIELDS)
        .map(|v| labels::parse_fields(v).into_iter().collect())
        .unwrap_or_default();
    let mut names: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    names.extend(have.keys().copied());
    let reasons: Vec<String> = names
        .into_iter()
        .filter(|n| want.get(*n).map(String::as_str) != have.get(n).copied())
        .map(|n| format!("{n} changed"))
        .collect();
    if reasons.is_empty() {
        vec!["spec changed".to_string()]
    } else {
        reasons
    }
}
