//! `bottle get`: per bottle, its provider, image, runtime and workspace volume, and the
//! state of every node; for each running sidecar, its readiness as its probe reports it
//! (`bottle_contract::status`, run through the engine); its grants with the time left.
//! [`bottles`] gathers it for `get`, [`bottles_in`] from objects already listed (the
//! console's).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Backend, GetArgs, Output, connect, connect_kube, project_of, render};
use crate::apply::{grants_of, observe};
use crate::engine::{Engine, Exec, Snapshot};
use crate::labels;
use crate::nodes::{NodeKind, ObjectKind, sidecar};
use crate::plan::Observed;
use crate::supervise::Grants;

/// One bottle as `get` and the console show it.
#[derive(Default)]
pub(crate) struct BottleView {
    pub provider: String,
    pub image: String,
    pub runtime: String,
    pub workspace: Option<String>,
    /// When its agent container was created, unix seconds (0: no agent).
    pub created: u64,
    pub nodes: Vec<NodeView>,
}

/// One object of a bottle's node, with a running sidecar's readiness (in `get`'s JSON,
/// `ready` and `detail` beside the other fields).
#[derive(serde::Serialize)]
pub(crate) struct NodeView {
    pub node: String,
    pub object: String,
    pub state: String,
    #[serde(flatten)]
    pub ready: Option<Ready>,
}

/// A running sidecar's readiness as its probe reported it.
#[derive(Clone, serde::Serialize)]
pub(crate) struct Ready {
    pub ready: bool,
    pub detail: String,
}

/// Readiness already probed, for a caller that asks again and again (the console, every
/// second): a container found ready is probed again only after `ttl`; one not ready, each
/// time. Keyed by container id, so a container made again under its name is probed anew.
/// Time is tokio's (paused in tests).
pub(crate) struct ProbeCache {
    ttl: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<String, (tokio::time::Instant, Ready)>>,
}

impl ProbeCache {
    pub(crate) fn new(ttl: std::time::Duration) -> ProbeCache {
        ProbeCache {
            ttl,
            seen: Default::default(),
        }
    }

    /// A ready verdict for container `id` younger than the ttl.
    fn fresh(&self, id: &str) -> Option<Ready> {
        let seen = self.seen.lock().ok()?;
        let (at, r) = seen.get(id)?;
        (r.ready && at.elapsed() < self.ttl).then(|| r.clone())
    }

    /// Keep `r` for `id`, and forget the containers not among `live`.
    fn keep(&self, id: &str, r: &Ready, live: &std::collections::BTreeSet<&str>) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|k, _| live.contains(k.as_str()));
            seen.insert(id.to_string(), (tokio::time::Instant::now(), r.clone()));
        }
    }
}

/// Probe running container `name` of `node` (`None` when such a node has no probe).
async fn probe<E: Exec>(engine: &E, name: &str, node: Option<NodeKind>) -> Option<Ready> {
    let cmd = sidecar::probe(node?)?;
    Some(match crate::ready::probe_once(engine, name, &cmd).await {
        Ok(s) => Ready {
            ready: s.ready,
            detail: s.detail,
        },
        Err(detail) => Ready {
            ready: false,
            detail,
        },
    })
}

/// The project's bottles, each node's state and each running sidecar's readiness
/// (probed through the engine, all at once), and the grants as of `now`.
pub(crate) async fn bottles<E: Engine + Exec>(
    engine: &E,
    project: &str,
    now: u64,
) -> anyhow::Result<(BTreeMap<String, BottleView>, Grants)> {
    let snap = observe(engine, project).await?;
    Ok(bottles_in(engine, project, &snap, now, None).await)
}

/// As [`bottles`], from objects already listed: `snap` may hold other projects' too
/// (the console lists every project's at once). With `cache`, a sidecar found ready
/// lately is not probed again ([`ProbeCache`]).
pub(crate) async fn bottles_in<E: Exec>(
    engine: &E,
    project: &str,
    snap: &Snapshot,
    now: u64,
    cache: Option<&ProbeCache>,
) -> (BTreeMap<String, BottleView>, Grants) {
    let observed = Observed::from_snapshot(project, snap);
    let mut bottles: BTreeMap<String, BottleView> = BTreeMap::new();
    // Running containers to probe: (bottle, index in its nodes, name, node).
    let mut to_probe = Vec::new();
    for o in observed.objects.values() {
        if o.bottle().is_empty() {
            continue;
        }
        let view = bottles.entry(o.bottle().to_string()).or_default();
        let state = match o.running {
            Some(true) => "running",
            Some(false) => "stopped",
            None => "present",
        };
        let node = o.node().map_or("?", |n| n.as_str()).to_string();
        if o.key.kind == ObjectKind::Volume
            && o.key.name == labels::workspace_volume(project, o.bottle())
        {
            view.workspace = Some(o.key.name.clone());
        }
        if o.key.kind == ObjectKind::Container && o.running == Some(true) {
            to_probe.push((
                o.bottle().to_string(),
                view.nodes.len(),
                o.key.name.clone(),
                o.node(),
            ));
        }
        view.nodes.push(NodeView {
            node,
            object: o.key.to_string(),
            state: state.to_string(),
            ready: None,
        });
    }
    let ids: BTreeMap<&str, &str> = snap
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.id.as_str()))
        .collect();
    let live: std::collections::BTreeSet<&str> = ids.values().copied().collect();
    let probed = futures_util::future::join_all(to_probe.into_iter().map(|(b, i, name, node)| {
        let id = ids.get(name.as_str()).copied().unwrap_or_default();
        let live = &live;
        async move {
            if let Some(r) = cache.and_then(|c| c.fresh(id)) {
                return (b, i, Some(r));
            }
            let r = probe(engine, &name, node).await;
            if let (Some(c), Some(r)) = (cache, &r) {
                c.keep(id, r, live);
            }
            (b, i, r)
        }
    }))
    .await;
    for (b, i, ready) in probed {
        if let Some(view) = bottles.get_mut(&b) {
            view.nodes[i].ready = ready;
        }
    }
    for c in snap
        .containers
        .iter()
        .filter(|c| labels::is_ours(&c.labels, project))
    {
        let is_agent = c.labels.get(labels::NODE).map(String::as_str) == Some("agent");
        let Some(b) = c.labels.get(labels::BOTTLE).filter(|_| is_agent) else {
            continue;
        };
        let view = bottles.entry(b.clone()).or_default();
        view.image = c.image.clone();
        view.provider = c.labels.get(labels::PROVIDER).cloned().unwrap_or_default();
        view.runtime = c.labels.get(labels::RUNTIME).cloned().unwrap_or_default();
        view.created = c.created;
    }
    (bottles, grants_of(project, snap, now))
}

pub async fn run(args: GetArgs) -> anyhow::Result<i32> {
    let project = project_of(args.file.as_deref(), args.project.as_deref())?;
    let now = bottle_contract::supervise::now();
    let (bottles, grants) = match args.backend.backend {
        Backend::Docker => bottles(&connect().await?, &project, now).await?,
        Backend::Kubernetes => {
            bottles(
                &connect_kube(&project, &args.backend, false).await?,
                &project,
                now,
            )
            .await?
        }
    };
    match args.output {
        Output::Json => {
            let v: Vec<Value> = bottles
                .iter()
                .map(|(b, view)| {
                    json!({
                        "bottle": b,
                        "provider": view.provider,
                        "image": view.image,
                        "runtime": view.runtime,
                        "workspace": view.workspace,
                        "nodes": view.nodes,
                        "grants": grants
                            .listed()
                            .into_iter()
                            .filter(|(g, _)| g.bottle == *b)
                            .map(|(g, expired)| render::grant_json(g, expired, now))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", json!({"project": project, "bottles": v}));
        }
        Output::Text => {
            if bottles.is_empty() {
                eprintln!("project {project}: no bottles");
            }
            for (b, view) in &bottles {
                println!(
                    "{b}: provider {} runtime {} image {}",
                    or_dash(&view.provider),
                    or_dash(&view.runtime),
                    or_dash(&view.image)
                );
                println!("  workspace {}", view.workspace.as_deref().unwrap_or("-"));
                for (g, _) in grants.listed().into_iter().filter(|(g, _)| g.bottle == *b) {
                    println!(
                        "  grant {} {} {} ({})",
                        g.id,
                        g.ask.kind(),
                        g.ask.summary(),
                        render::grant_left(g, now)
                    );
                }
                for n in &view.nodes {
                    let ready = match &n.ready {
                        Some(r) if r.ready => "  ready".to_string(),
                        Some(r) => format!("  NOT READY ({})", r.detail),
                        None => String::new(),
                    };
                    println!("  {:<13} {:<8} {}{ready}", n.node, n.state, n.object);
                }
            }
        }
    }
    Ok(0)
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_cached_ready_sidecar_is_not_probed_again_until_the_ttl() {
        use bottle_contract::status::Status;
        use bottle_engine::ExecOutput;
        use bottle_engine::fake::FakeEngine;
        let out = |ready: bool| ExecOutput {
            code: if ready { 0 } else { 1 },
            stdout: serde_json::to_string(&Status {
                ready,
                detail: if ready { "serving" } else { "starting" }.into(),
                ..Status::default()
            })
            .unwrap(),
            stderr: String::new(),
        };
        let e = FakeEngine::default();
        let name = "bottle-p-b-pipelock";
        e.add_container(
            name,
            "img",
            labels::object_labels("p", "b", "pipelock", "h", ""),
        );
        e.script_exec(name, vec![out(false), out(true), out(false)]);
        let cache = ProbeCache::new(std::time::Duration::from_secs(10));
        let execs = || e.calls().iter().filter(|c| c.starts_with("exec ")).count();
        let ready = |views: &BTreeMap<String, BottleView>| {
            views["b"]
                .nodes
                .iter()
                .find_map(|n| n.ready.as_ref().map(|r| r.ready))
        };
        let snap = observe(&e, "p").await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (views, _) = bottles_in(&e, "p", &snap, 0, Some(&cache)).await;
            seen.push((ready(&views), execs()));
            tokio::time::advance(std::time::Duration::from_secs(1)).await;
        }
        // Not ready: probed at each call; ready: kept, with no probe, for the ttl.
        assert_eq!(
            seen,
            [
                (Some(false), 1),
                (Some(true), 2),
                (Some(true), 2),
                (Some(true), 2)
            ]
        );
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        let (views, _) = bottles_in(&e, "p", &snap, 0, Some(&cache)).await;
        assert_eq!(
            (ready(&views), execs()),
            (Some(false), 3),
            "probed again after the ttl"
        );
        // Without a cache (`bottle get`), every call probes.
        bottles_in(&e, "p", &snap, 0, None).await;
        assert_eq!(execs(), 4);
    }

    #[test]
    fn a_node_in_json_has_its_readiness_beside_its_fields() {
        let node = |ready| NodeView {
            node: "egress".into(),
            object: "container bottle-p-dev-egress".into(),
            state: "running".into(),
            ready,
        };
        assert_eq!(
            json!(node(None)),
            json!({"node": "egress", "object": "container bottle-p-dev-egress", "state": "running"})
        );
        let probed = node(Some(Ready {
            ready: false,
            detail: "no config".into(),
        }));
        assert_eq!(
            json!(probed),
            json!({"node": "egress", "object": "container bottle-p-dev-egress",
                   "state": "running", "ready": false, "detail": "no config"})
        );
    }
}
