//! The engine's event stream on Kubernetes (`bottle_engine::Events` for [`KubeEngine`]):
//! what `apply --watch` follows (docs/design.md section 9.10). Three watches of the API
//! server (`kube::runtime::watcher`) over the project's namespace, each selected by the
//! project's labels: its pods, its network markers (ConfigMaps, metadata only) and its
//! volume Secrets (metadata only: no Secret's data is read here).
//!
//! Their changes become the Docker-shaped events the core's watch triggers know
//! (`bottle_core::watch::triggers::relevant`), in [`Mapper`] (pure, unit-tested):
//!
//! - a pod deleted: `destroy` of each seam container recorded in it ([`render::records`]),
//!   with the container's labels as attributes;
//! - a pod whose container stopped (terminated, or the pod failed or ended): `die` of
//!   that container, once; a pod being deleted says nothing until it is gone;
//! - a network marker deleted: network `destroy`, by name;
//! - a volume Secret added or deleted: volume `create` or `destroy` (the core keeps the
//!   grants among them).
//!
//! Each watch's initial list is the state now, not a change: it gives no event. A watch
//! cannot replay from a time, so `since` is not used: after a loss the core resyncs
//! anyway. The stream is pulled (nothing is buffered beyond one change's events) and ends
//! at the first error, or when a watch lists again in the middle (events may have been
//! missed), so the core's `follow` backs off, pings and resubscribes.

use std::collections::{BTreeSet, HashMap};

use bottle_engine::{EngineError, Event};
use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::watcher;

use super::KubeEngine;
use super::render::{self, NETWORK, OBJECT, VOLUME};

/// One object a watch reports.
#[derive(Clone, Debug)]
pub enum Object {
    Pod(Box<Pod>),
    /// A network marker's metadata.
    Network(ObjectMeta),
    /// A volume Secret's metadata.
    Volume(ObjectMeta),
}

/// The watch of pods, in [`Change::Listing`] and [`Change::ListDone`].
pub const PODS: usize = 0;
/// The watch of network markers.
pub const NETWORKS: usize = 1;
/// The watch of volume Secrets.
pub const VOLUMES: usize = 2;

/// A change one watch reports; `of` names the watch ([`PODS`], [`NETWORKS`], [`VOLUMES`]).
#[derive(Clone, Debug)]
pub enum Change {
    /// The watch (re)starts listing.
    Listing { of: usize },
    /// An object of the listing.
    Listed(Object),
    /// The listing is complete.
    ListDone { of: usize },
    /// An object was added or modified.
    Applied(Object),
    /// An object is gone.
    Deleted(Object),
}

/// A watch listed again after its first listing: what changed in between is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the API server's watch was restarted: changes may have been missed")]
pub struct Restarted;

/// Turns the watches' changes into engine events, remembering what it has said: which
/// containers it reported dead (until their pod goes) and which volume Secrets exist.
/// Holds at most one entry per container and volume in the namespace.
#[derive(Debug)]
pub struct Mapper {
    listings: [u8; 3],
    dead: BTreeSet<(String, String)>,
    volumes: BTreeSet<String>,
    filters: HashMap<String, Vec<String>>,
}

impl Mapper {
    /// A mapper keeping only the events `filters` asks for (`type` and `event`, as the
    /// Docker daemon's filters: each given key must list the event's value).
    pub fn new(filters: &HashMap<String, Vec<String>>) -> Self {
        Mapper {
            listings: [0; 3],
            dead: BTreeSet::new(),
            volumes: BTreeSet::new(),
            filters: filters.clone(),
        }
    }

    /// The events of `change`, seen at `now_nano` (nanoseconds since the epoch).
    pub fn map(&mut self, change: Change, now_nano: i64) -> Result<Vec<Event>, Restarted> {
        let events = match change {
            Change::Listing { of } => {
                self.listings[of] = self.listings[of].saturating_add(1);
                if self.listings[of] > 1 {
                    return Err(Restarted);
                }
                Vec::new()
            }
            Change::ListDone { .. } => Vec::new(),
            Change::Listed(o) => {
                // What is so now was not a change: remembered, never reported.
                match o {
                    Object::Pod(p) => {
                        let uid = uid(&p.metadata);
                        for name in stopped(&p) {
                            self.dead.insert((uid.clone(), name));
                        }
                    }
                    Object::Volume(m) => {
                        self.volumes.insert(name(&m));
                    }
                    Object::Network(_) => {}
                }
                Vec::new()
            }
            Change::Applied(Object::Pod(p)) => {
                let uid = uid(&p.metadata);
                let records = render::records(&p);
                stopped(&p)
                    .into_iter()
                    .filter(|n| self.dead.insert((uid.clone(), n.clone())))
                    .filter_map(|n| records.iter().find(|r| r.name == n))
                    .map(|r| container_event("die", &uid, r, now_nano))
                    .collect()
            }
            Change::Deleted(Object::Pod(p)) => {
                let uid = uid(&p.metadata);
                self.dead.retain(|(u, _)| *u != uid);
                render::records(&p)
                    .iter()
                    .map(|r| container_event("destroy", &uid, r, now_nano))
                    .collect()
            }
            Change::Applied(Object::Network(_)) => Vec::new(),
            Change::Deleted(Object::Network(m)) => {
                vec![named_event("network", "destroy", &m, now_nano)]
            }
            Change::Applied(Object::Volume(m)) => {
                if self.volumes.insert(name(&m)) {
                    vec![named_event("volume", "create", &m, now_nano)]
                } else {
                    Vec::new()
                }
            }
            Change::Deleted(Object::Volume(m)) => {
                self.volumes.remove(&name(&m));
                vec![named_event("volume", "destroy", &m, now_nano)]
            }
        };
        Ok(events.into_iter().filter(|e| self.wanted(e)).collect())
    }

    fn wanted(&self, e: &Event) -> bool {
        let allows = |key: &str, value: &str| {
            self.filters
                .get(key)
                .is_none_or(|vs| vs.iter().any(|v| v == value))
        };
        allows("type", &e.kind) && allows("event", &e.action)
    }
}

fn name(m: &ObjectMeta) -> String {
    m.name.clone().unwrap_or_default()
}

fn uid(m: &ObjectMeta) -> String {
    m.uid.clone().unwrap_or_default()
}

/// The seam containers of `p` that stopped: all of them when the pod failed or ended,
/// else those whose container terminated. None while the pod is being deleted (its
/// deletion is reported once it is gone: a pod made anew before would meet the old).
fn stopped(p: &Pod) -> Vec<String> {
    if p.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let status = p.status.clone().unwrap_or_default();
    let ended = matches!(status.phase.as_deref(), Some("Failed" | "Succeeded"));
    let terminated = |c: &str| {
        status
            .container_statuses
            .iter()
            .flatten()
            .any(|s| s.name == c && s.state.as_ref().is_some_and(|st| st.terminated.is_some()))
    };
    render::records(p)
        .into_iter()
        .filter(|r| ended || terminated(&r.container))
        .map(|r| r.name)
        .collect()
}

fn container_event(action: &str, uid: &str, r: &render::Record, now_nano: i64) -> Event {
    let mut attributes = r.labels.clone();
    attributes.insert("name".into(), r.name.clone());
    Event {
        kind: "container".into(),
        action: action.into(),
        id: uid.into(),
        attributes,
        time_nano: now_nano,
    }
}

fn named_event(kind: &str, action: &str, m: &ObjectMeta, now_nano: i64) -> Event {
    let mut attributes = render::merged_labels(m);
    attributes.insert("name".into(), name(m));
    Event {
        kind: kind.into(),
        action: action.into(),
        id: name(m),
        attributes,
        time_nano: now_nano,
    }
}

fn change<K>(of: usize, e: watcher::Event<K>, wrap: impl Fn(K) -> Object) -> Change {
    match e {
        watcher::Event::Init => Change::Listing { of },
        watcher::Event::InitApply(k) => Change::Listed(wrap(k)),
        watcher::Event::InitDone => Change::ListDone { of },
        watcher::Event::Apply(k) => Change::Applied(wrap(k)),
        watcher::Event::Delete(k) => Change::Deleted(wrap(k)),
    }
}

fn now_nano() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

type Changes = std::pin::Pin<Box<dyn Stream<Item = Result<Change, watcher::Error>> + Send>>;

impl<I> bottle_engine::Events for KubeEngine<I> {
    fn events(
        &self,
        _since: Option<i64>,
        filters: &HashMap<String, Vec<String>>,
    ) -> impl Stream<Item = Result<Event, EngineError>> + Send + 'static {
        let client = self.cluster.client().clone();
        let ns = self.namespace.clone();
        let ours = crate::project_selector(&self.project);
        let config = |object: Option<&str>| {
            let selector = match object {
                Some(o) => format!("{ours},{OBJECT}={o}"),
                None => ours.clone(),
            };
            watcher::Config::default().labels(&selector)
        };
        let pods: Changes = watcher(Api::<Pod>::namespaced(client.clone(), &ns), config(None))
            .map(|r| r.map(|e| change(PODS, e, |p| Object::Pod(Box::new(p)))))
            .boxed();
        let nets: Changes = watcher(
            Api::<PartialObjectMeta<ConfigMap>>::namespaced(client.clone(), &ns),
            config(Some(NETWORK)),
        )
        .map(|r| r.map(|e| change(NETWORKS, e, |m| Object::Network(m.metadata))))
        .boxed();
        let vols: Changes = watcher(
            Api::<PartialObjectMeta<Secret>>::namespaced(client, &ns),
            config(Some(VOLUME)),
        )
        .map(|r| r.map(|e| change(VOLUMES, e, |m| Object::Volume(m.metadata))))
        .boxed();
        let mapper = Mapper::new(filters);
        futures_util::stream::select_all([pods, nets, vols])
            .scan((mapper, false), |(mapper, failed), item| {
                if *failed {
                    return std::future::ready(None);
                }
                let out = match item {
                    Ok(c) => mapper.map(c, now_nano()).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("watching the namespace: {e}")),
                };
                *failed = out.is_err();
                std::future::ready(Some(out))
            })
            .flat_map(|out| {
                futures_util::stream::iter(match out {
                    Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(EngineError::Unreachable(e))],
                })
            })
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.cluster
            .version()
            .await
            .map(drop)
            .map_err(|e| EngineError::Unreachable(e.to_string()))
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
