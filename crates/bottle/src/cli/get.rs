//! `bottle get`: per bottle, its provider, image, runtime and workspace volume, and the
//! state of every node; for each running sidecar, its readiness as its probe reports it
//! (`bottle_contract::status`, run through the engine).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{GetArgs, Output, connect, project_of};
use crate::apply::observe;
use crate::engine::Exec;
use crate::labels;
use crate::nodes::{NodeKind, ObjectKind, sidecar};
use crate::plan::Observed;
use bottle_contract::status::Status;

#[derive(Default)]
struct BottleView {
    provider: String,
    image: String,
    runtime: String,
    workspace: Option<String>,
    /// (node, object, state, readiness of a running sidecar)
    nodes: Vec<(String, String, String, Option<Ready>)>,
}

/// A running sidecar's readiness as its probe reported it.
struct Ready {
    ready: bool,
    detail: String,
}

/// Probe running container `name` of `node` (`None` when such a node has no probe).
async fn probe<E: Exec>(engine: &E, name: &str, node: Option<NodeKind>) -> Option<Ready> {
    let cmd = sidecar::probe(node?)?;
    Some(match engine.exec(name, &cmd, None, &[]).await {
        Ok(out) => match Status::parse(&out.stdout) {
            Some(s) => Ready {
                ready: s.ready && out.code == 0,
                detail: s.detail,
            },
            None => Ready {
                ready: false,
                detail: format!("the probe exited {} printing no status", out.code),
            },
        },
        Err(e) => Ready {
            ready: false,
            detail: bottle_contract::ErrorChain(&e).to_string(),
        },
    })
}

pub async fn run(args: GetArgs) -> anyhow::Result<i32> {
    let project = project_of(args.file.as_deref(), args.project.as_deref())?;
    let docker = connect().await?;
    let snap = observe(&docker, &project).await?;
    let observed = Observed::from_snapshot(&project, &snap);
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
            && o.key.name == labels::workspace_volume(&project, o.bottle())
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
        view.nodes
            .push((node, o.key.to_string(), state.to_string(), None));
    }
    let probed = futures_util::future::join_all(to_probe.into_iter().map(|(b, i, name, node)| {
        let docker = &docker;
        async move { (b, i, probe(docker, &name, node).await) }
    }))
    .await;
    for (b, i, ready) in probed {
        if let Some(view) = bottles.get_mut(&b) {
            view.nodes[i].3 = ready;
        }
    }
    for c in &snap.containers {
        let is_agent = c.labels.get(labels::NODE).map(String::as_str) == Some("agent");
        let Some(b) = c.labels.get(labels::BOTTLE).filter(|_| is_agent) else {
            continue;
        };
        let view = bottles.entry(b.clone()).or_default();
        view.image = c.image.clone();
        view.provider = c.labels.get(labels::PROVIDER).cloned().unwrap_or_default();
        view.runtime = c.labels.get(labels::RUNTIME).cloned().unwrap_or_default();
    }
    match args.output {
        Output::Json => {
            let v: Vec<Value> = bottles
                .iter()
                .map(|(b, view)| {
                    let nodes: Vec<Value> = view
                        .nodes
                        .iter()
                        .map(|(n, o, s, r)| {
                            let mut v = json!({"node": n, "object": o, "state": s});
                            if let Some(r) = r {
                                v["ready"] = json!(r.ready);
                                v["detail"] = json!(r.detail);
                            }
                            v
                        })
                        .collect();
                    json!({
                        "bottle": b,
                        "provider": view.provider,
                        "image": view.image,
                        "runtime": view.runtime,
                        "workspace": view.workspace,
                        "nodes": nodes,
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
                for (n, o, s, r) in &view.nodes {
                    let ready = match r {
                        Some(r) if r.ready => "  ready".to_string(),
                        Some(r) => format!("  NOT READY ({})", r.detail),
                        None => String::new(),
                    };
                    println!("  {n:<13} {s:<8} {o}{ready}");
                }
            }
        }
    }
    Ok(0)
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}
