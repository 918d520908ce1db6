//! An in-memory [`Engine`] for tests of the planner and executor: it keeps objects in
//! maps, records every call, and can be told to fail on a name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetworkInfo>,
    volumes: BTreeMap<String, VolumeInfo>,
    containers: BTreeMap<String, ContainerInfo>,
    images: BTreeMap<String, ImageInfo>,
    calls: Vec<String>,
    fail: BTreeSet<String>,
    runtimes: Vec<String>,
    next_id: u64,
    /// The volumes of each [`Engine::create_volumes`] call, in call order.
    volume_batches: Vec<Vec<String>>,
    /// The files each volume was created with, by volume name.
    volume_files: BTreeMap<String, Vec<VolumeFile>>,
    /// Files by (container, dir), name -> contents ([`VolumeFiles`]).
    files: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// What each successive [`Events::events`] subscription yields; then it stays
    /// open with nothing more.
    scripts: std::collections::VecDeque<Vec<Result<Event, EngineError>>>,
    /// The `since` of each subscription so far.
    subscriptions: Vec<Option<i64>>,
    /// Results of successive [`Events::ping`] calls; `Ok` once they run out.
    pings: std::collections::VecDeque<Result<(), EngineError>>,
    /// What successive [`Engine::list_networks`] calls return instead of the networks
    /// held (a listing gone stale while another client creates), unfiltered.
    network_lists: std::collections::VecDeque<Vec<NetworkInfo>>,
    /// What successive [`Exec::exec`] calls in a container print; the last one stays.
    execs: BTreeMap<String, std::collections::VecDeque<ExecOutput>>,
    /// What [`RuntimeProbe::probe_runtime`] returns; exit 0 printing nothing unscripted.
    probe: Option<Result<ExecOutput, EngineError>>,
    /// Runtime paths and arguments by name ([`RuntimeProbe::runtime_info`]).
    runtime_entries: BTreeMap<String, RuntimeEntry>,
}

/// The in-memory engine.
pub struct FakeEngine {
    state: Mutex<State>,
}

impl Default for FakeEngine {
    fn default() -> Self {
        FakeEngine {
            state: Mutex::new(State {
                runtimes: vec!["runc".into()],
                ..State::default()
            }),
        }
    }
}

use crate::matches_labels as matches;

impl FakeEngine {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only happens after a test already panicked.
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        f(&mut s)
    }

    /// Script the next event subscription: it yields `items`, then (unless the last is
    /// an error) stays open with nothing more.
    pub fn script_events(&self, items: Vec<Result<Event, EngineError>>) {
        self.with(|s| s.scripts.push_back(items));
    }

    /// Script the results of the next pings.
    pub fn script_pings(&self, results: Vec<Result<(), EngineError>>) {
        self.with(|s| s.pings.extend(results));
    }

    /// Script what the next [`Exec::exec`] calls in `container` return, in turn; the
    /// last one is returned from then on. Unscripted, an exec exits 0 printing nothing.
    pub fn script_exec(&self, container: &str, outputs: Vec<ExecOutput>) {
        self.with(|s| {
            s.execs
                .entry(container.to_string())
                .or_default()
                .extend(outputs)
        });
    }

    /// Script what the next [`Engine::list_networks`] calls return, in turn, as if
    /// another client changed the engine between the listing and what follows it.
    pub fn script_network_lists(&self, lists: Vec<Vec<NetworkInfo>>) {
        self.with(|s| s.network_lists.extend(lists));
    }

    /// The `since` of every event subscription so far.
    pub fn subscriptions(&self) -> Vec<Option<i64>> {
        self.with(|s| s.subscriptions.clone())
    }

    /// The files volume `name` was last created with.
    pub fn volume_files(&self, name: &str) -> Vec<VolumeFile> {
        self.with(|s| s.volume_files.get(name).cloned().unwrap_or_default())
    }

    /// The volumes of each [`Engine::create_volumes`] call so far (a single
    /// [`Engine::create_volume`] is a call of one), in call order.
    pub fn volume_batches(&self) -> Vec<Vec<String>> {
        self.with(|s| s.volume_batches.clone())
    }

    /// The file `dir/name` of `container`, if written.
    pub fn file(&self, container: &str, dir: &str, name: &str) -> Option<Vec<u8>> {
        self.with(|s| {
            s.files
                .get(&(container.to_string(), dir.to_string()))
                .and_then(|d| d.get(name).cloned())
        })
    }

    /// Every call so far, as `op name`.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// Mutating calls only (no lists, no info).
    pub fn mutations(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| {
                !c.starts_with("list") && !c.starts_with("runtimes") && !c.starts_with("exec ")
            })
            .collect()
    }

    pub fn clear_calls(&self) {
        self.with(|s| s.calls.clear());
    }

    /// Put a running container `name` of `image` with `labels` in place, as if another
    /// run had made it.
    pub fn add_container(&self, name: &str, image: &str, labels: Labels) {
        self.with(|s| {
            s.next_id += 1;
            let id = format!("fake{}", s.next_id);
            s.containers.insert(
                name.to_string(),
                ContainerInfo {
                    name: name.to_string(),
                    id,
                    image: image.to_string(),
                    labels,
                    state: ContainerState::Running,
                    networks: Vec::new(),
                    created: 0,
                },
            );
        });
    }

    /// Drop the files recorded in volume `name`, as an apply stopped while seeding it
    /// leaves it (created, not or half written).
    pub fn empty_volume(&self, name: &str) {
        self.with(|s| {
            s.volume_files.remove(name);
        });
    }

    /// Make every mutating call on `name` fail.
    pub fn fail_on(&self, name: &str) {
        self.with(|s| s.fail.insert(name.to_string()));
    }

    /// Undo [`FakeEngine::fail_on`].
    pub fn heal(&self, name: &str) {
        self.with(|s| s.fail.remove(name));
    }

    pub fn set_runtimes(&self, runtimes: &[&str]) {
        self.with(|s| s.runtimes = runtimes.iter().map(|r| r.to_string()).collect());
    }

    /// Register `name` at `path` with `args`, as `docker info` shows it (it joins
    /// [`Engine::runtimes`] too).
    pub fn set_runtime_entry(&self, name: &str, path: &str, args: &[&str]) {
        self.with(|s| {
            if !s.runtimes.iter().any(|r| r == name) {
                s.runtimes.push(name.to_string());
            }
            s.runtime_entries.insert(
                name.to_string(),
                RuntimeEntry {
                    name: name.to_string(),
                    path: path.to_string(),
                    args: args.iter().map(|a| a.to_string()).collect(),
                },
            );
        });
    }

    /// Script what every [`RuntimeProbe::probe_runtime`] returns from now on.
    pub fn script_probe(&self, result: Result<ExecOutput, EngineError>) {
        self.with(|s| s.probe = Some(result));
    }

    /// Simulate `docker stop`.
    pub fn stop(&self, name: &str) {
        self.with(|s| {
            if let Some(c) = s.containers.get_mut(name) {
                c.state = ContainerState::NotRunning;
            }
        });
    }

    /// Simulate `docker rm -f` / `docker network rm` by someone else.
    pub fn remove_any(&self, name: &str) {
        self.with(|s| {
            s.containers.remove(name);
            s.networks.remove(name);
            s.volumes.remove(name);
            s.images.remove(name);
        });
    }

    /// Add an object created outside `bottle`.
    pub fn add_network(&self, name: &str, labels: Labels) {
        self.add_network_on(name, labels, &[]);
    }

    /// Add a network created outside `bottle` that holds `subnets`.
    pub fn add_network_on(&self, name: &str, labels: Labels, subnets: &[ipnet::IpNet]) {
        self.with(|s| {
            s.networks.insert(
                name.into(),
                NetworkInfo {
                    name: name.into(),
                    labels,
                    internal: false,
                    subnets: subnets.to_vec(),
                },
            )
        });
    }

    /// The current state as a snapshot, without recording a call.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|s| Snapshot {
            networks: s.networks.values().cloned().collect(),
            volumes: s.volumes.values().cloned().collect(),
            containers: s.containers.values().cloned().collect(),
            images: s.images.values().cloned().collect(),
        })
    }

    fn call(&self, op: &str, name: &str) -> Result<(), EngineError> {
        self.with(|s| {
            s.calls.push(format!("{op} {name}"));
            if s.fail.contains(name) {
                Err(EngineError::Api {
                    op: "fake",
                    name: name.to_string(),
                    message: "injected failure".into(),
                })
            } else {
                Ok(())
            }
        })
    }
}

impl Engine for FakeEngine {
    async fn list_networks(&self, labels: &[String]) -> Result<Vec<NetworkInfo>, EngineError> {
        self.call("list", "networks")?;
        Ok(self.with(|s| {
            if let Some(scripted) = s.network_lists.pop_front() {
                return scripted;
            }
            s.networks
                .values()
                .filter(|n| matches(&n.labels, labels))
                .cloned()
                .collect()
        }))
    }

    async fn list_volumes(&self, labels: &[String]) -> Result<Vec<VolumeInfo>, EngineError> {
        self.call("list", "volumes")?;
        Ok(self.with(|s| {
            s.volumes
                .values()
                .filter(|n| matches(&n.labels, labels))
                .cloned()
                .collect()
        }))
    }

    async fn list_containers(&self, labels: &[String]) -> Result<Vec<ContainerInfo>, EngineError> {
        self.call("list", "containers")?;
        Ok(self.with(|s| {
            s.containers
                .values()
                .filter(|n| matches(&n.labels, labels))
                .cloned()
                .collect()
        }))
    }

    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageInfo>, EngineError> {
        self.call("list", "images")?;
        Ok(self.with(|s| {
            s.images
                .values()
                .filter(|n| matches(&n.labels, labels))
                .cloned()
                .collect()
        }))
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<(), EngineError> {
        self.call("create_network", &spec.name)?;
        self.with(|s| {
            if s.networks.contains_key(&spec.name) {
                return Err(EngineError::Conflict {
                    kind: "network",
                    name: spec.name.clone(),
                });
            }
            // Docker refuses a subnet that overlaps one it has ("Pool overlaps...").
            let subnets: Vec<ipnet::IpNet> =
                spec.subnet.map(ipnet::IpNet::V4).into_iter().collect();
            let taken = |a: &ipnet::IpNet, b: &ipnet::IpNet| {
                a.contains(&b.network()) || b.contains(&a.network())
            };
            if let Some(subnet) = subnets.iter().find(|a| {
                s.networks
                    .values()
                    .any(|n| n.subnets.iter().any(|b| taken(a, b)))
            }) {
                return Err(EngineError::SubnetTaken {
                    name: spec.name.clone(),
                    subnet: subnet.to_string(),
                });
            }
            s.networks.insert(
                spec.name.clone(),
                NetworkInfo {
                    name: spec.name.clone(),
                    labels: spec.labels.clone(),
                    internal: spec.internal,
                    subnets,
                },
            );
            Ok(())
        })
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.call("remove_network", name)?;
        self.with(|s| {
            if s.containers
                .values()
                .any(|c| c.networks.iter().any(|n| n == name))
            {
                return Err(EngineError::Api {
                    op: "remove network",
                    name: name.into(),
                    message: "network has active endpoints".into(),
                });
            }
            s.networks.remove(name);
            Ok(())
        })
    }

    async fn create_volumes(&self, specs: &[VolumeSpec]) -> Result<(), EngineError> {
        self.with(|s| {
            s.volume_batches
                .push(specs.iter().map(|v| v.name.clone()).collect())
        });
        // Each volume is one `create_volume` call in the log; a failure on any name
        // fails the whole call, and the volumes made by it are removed again.
        for (i, spec) in specs.iter().enumerate() {
            if let Err(e) = self.call("create_volume", &spec.name) {
                self.with(|s| {
                    for made in &specs[..i] {
                        s.volumes.remove(&made.name);
                        s.volume_files.remove(&made.name);
                    }
                });
                return Err(e);
            }
            self.with(|s| {
                s.volume_files.insert(spec.name.clone(), spec.files.clone());
                s.volumes.insert(
                    spec.name.clone(),
                    VolumeInfo {
                        name: spec.name.clone(),
                        labels: spec.labels.clone(),
                    },
                );
            });
        }
        Ok(())
    }

    async fn rewrite_volume(&self, spec: &VolumeSpec) -> Result<(), EngineError> {
        self.call("rewrite_volume", &spec.name)?;
        self.with(|s| {
            if s.volumes.contains_key(&spec.name) {
                Ok(())
            } else {
                Err(EngineError::NotFound {
                    kind: "volume",
                    name: spec.name.clone(),
                })
            }
        })
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.call("remove_volume", name)?;
        self.with(|s| s.volumes.remove(name));
        Ok(())
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        self.call("run_container", &spec.name)?;
        self.with(|s| {
            if s.containers.contains_key(&spec.name) {
                return Err(EngineError::Conflict {
                    kind: "container",
                    name: spec.name.clone(),
                });
            }
            for n in spec.networks.iter().chain(&spec.dns_gateway_of) {
                if !s.networks.contains_key(n) {
                    return Err(EngineError::NotFound {
                        kind: "network",
                        name: n.clone(),
                    });
                }
            }
            if !s.images.contains_key(&spec.image) {
                return Err(EngineError::NotFound {
                    kind: "image",
                    name: spec.image.clone(),
                });
            }
            // Docker joins only a running container's network namespace.
            if let Some(holder) = &spec.network_of
                && s.containers.get(holder).map(|c| c.state) != Some(ContainerState::Running)
            {
                return Err(EngineError::NotFound {
                    kind: "running container",
                    name: holder.clone(),
                });
            }
            s.next_id += 1;
            s.containers.insert(
                spec.name.clone(),
                ContainerInfo {
                    name: spec.name.clone(),
                    id: format!("c{}", s.next_id),
                    image: spec.image.clone(),
                    labels: spec.labels.clone(),
                    state: ContainerState::Running,
                    networks: spec.networks.clone(),
                    created: 0,
                },
            );
            Ok(())
        })
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        self.call("start_container", name)?;
        self.with(|s| match s.containers.get_mut(name) {
            Some(c) => {
                c.state = ContainerState::Running;
                Ok(())
            }
            None => Err(EngineError::NotFound {
                kind: "container",
                name: name.into(),
            }),
        })
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        self.call("remove_container", name)?;
        self.with(|s| s.containers.remove(name));
        Ok(())
    }

    async fn build_image(&self, spec: &BuildSpec) -> Result<(), EngineError> {
        self.call("build_image", &spec.tag)?;
        self.with(|s| {
            s.next_id += 1;
            s.images.insert(
                spec.tag.clone(),
                ImageInfo {
                    tag: spec.tag.clone(),
                    id: format!("i{}", s.next_id),
                    labels: spec.labels.clone(),
                },
            );
        });
        Ok(())
    }

    async fn remove_image(&self, tag: &str) -> Result<(), EngineError> {
        self.call("remove_image", tag)?;
        self.with(|s| {
            if !s.containers.values().any(|c| c.image == tag) {
                s.images.remove(tag);
            }
        });
        Ok(())
    }

    async fn runtimes(&self) -> Result<Vec<String>, EngineError> {
        self.call("runtimes", "")?;
        Ok(self.with(|s| s.runtimes.clone()))
    }
}

impl RuntimeProbe for FakeEngine {
    async fn runtime_info(&self) -> Result<RuntimeInfo, EngineError> {
        self.call("runtimes", "")?;
        Ok(self.with(|s| RuntimeInfo {
            engine_id: "FAKE:ENGINE".to_string(),
            runtimes: s
                .runtimes
                .iter()
                .map(|r| {
                    s.runtime_entries.get(r).cloned().unwrap_or(RuntimeEntry {
                        name: r.clone(),
                        path: r.clone(),
                        args: Vec::new(),
                    })
                })
                .collect(),
        }))
    }

    async fn probe_runtime(
        &self,
        runtime: &str,
        image: &str,
        cmd: &[String],
    ) -> Result<ExecOutput, EngineError> {
        self.call("probe", &format!("{runtime} {image}: {}", cmd.join(" ")))?;
        self.with(|s| s.probe.clone().unwrap_or(Ok(ExecOutput::default())))
    }
}

impl Events for FakeEngine {
    fn events(
        &self,
        since: Option<i64>,
        _filters: &std::collections::HashMap<String, Vec<String>>,
    ) -> impl futures_util::Stream<Item = Result<Event, EngineError>> + Send + 'static {
        use futures_util::StreamExt as _;
        let items = self.with(|s| {
            s.subscriptions.push(since);
            s.calls.push("subscribe events".to_string());
            s.scripts.pop_front().unwrap_or_default()
        });
        let tail: futures_util::stream::BoxStream<'static, _> =
            if items.last().is_some_and(Result::is_err) {
                futures_util::stream::empty().boxed()
            } else {
                futures_util::stream::pending().boxed()
            };
        futures_util::stream::iter(items).chain(tail)
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.with(|s| {
            s.calls.push("ping engine".to_string());
            s.pings.pop_front().unwrap_or(Ok(()))
        })
    }
}

impl VolumeFiles for FakeEngine {
    async fn read_dir_files(
        &self,
        container: &str,
        dir: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        self.call("read files", container)?;
        Ok(self.with(|s| {
            s.files
                .get(&(container.to_string(), dir.to_string()))
                .map(|d| d.iter().map(|(n, b)| (n.clone(), b.clone())).collect())
                .unwrap_or_default()
        }))
    }

    async fn write_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), EngineError> {
        self.call("write file", container)?;
        self.with(|s| {
            if !s.containers.contains_key(container) {
                return Err(EngineError::NotFound {
                    kind: "container",
                    name: container.to_string(),
                });
            }
            s.files
                .entry((container.to_string(), dir.to_string()))
                .or_default()
                .insert(name.to_string(), contents.to_vec());
            Ok(())
        })
    }
}

impl Exec for FakeEngine {
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        user: Option<&str>,
        _stdin: &[u8],
    ) -> Result<ExecOutput, EngineError> {
        let user = user.map(|u| format!(" as {u}")).unwrap_or_default();
        self.call("exec", &format!("{container}{user}: {}", cmd.join(" ")))?;
        self.with(|s| {
            match s.containers.get(container) {
                Some(c) if c.state == ContainerState::Running => {}
                _ => {
                    return Err(EngineError::NotFound {
                        kind: "running container",
                        name: container.to_string(),
                    });
                }
            }
            let q = s.execs.entry(container.to_string()).or_default();
            Ok(if q.len() > 1 {
                q.pop_front().unwrap_or_default()
            } else {
                q.front().cloned().unwrap_or_default()
            })
        })
    }

    async fn signal(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        self.call(&format!("signal {signal}"), container)?;
        self.with(|s| match s.containers.get(container) {
            Some(c) if c.state == ContainerState::Running => Ok(()),
            _ => Err(EngineError::NotFound {
                kind: "running container",
                name: container.to_string(),
            }),
        })
    }
}
