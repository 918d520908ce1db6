//! `bottle get`: per bottle, its provider, image, runtime and workspace volume, and the
//! state of every node.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{GetArgs, Output, connect, project_of};
use crate::apply::observe;
use crate::labels;
use crate::nodes::ObjectKind;
use crate::plan::Observed;

#[derive(Default)]
struct BottleView {
    provider: String,
    image: String,
    runtime: String,
    workspace: Option<String>,
    /// (node, object, state)
    nodes: Vec<(String, String, String)>,
}

pub async fn run(args: GetArgs) -> anyhow::Result<i32> {
    let project = project_of(args.file.as_deref(), args.project.as_deref())?;
    let docker = connect().await?;
    let snap = observe(&docker, &project).await?;
    let observed = Observed::from_snapshot(&project, &snap);
    let mut bottles: BTreeMap<String, BottleView> = BTreeMap::new();
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
        view.nodes
            .push((node, o.key.to_string(), state.to_string()));
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
                        .map(|(n, o, s)| json!({"node": n, "object": o, "state": s}))
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
                for (n, o, s) in &view.nodes {
                    println!("  {n:<13} {s:<8} {o}");
                }
            }
        }
    }
    Ok(0)
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}
