//! `bottle get`: the bottles of a project and the state of each node.

use std::collections::BTreeMap;

use serde_json::json;

use super::{GetArgs, Output, connect, project_of};
use crate::apply::observe;
use crate::plan::Observed;

pub async fn run(args: GetArgs) -> anyhow::Result<i32> {
    let project = project_of(args.file.as_deref(), args.project.as_deref())?;
    let docker = connect().await?;
    let snap = observe(&docker, &project).await?;
    let observed = Observed::from_snapshot(&project, &snap);
    // bottle -> node -> [(object, state)]
    let mut bottles: BTreeMap<String, BTreeMap<String, Vec<(String, String)>>> = BTreeMap::new();
    for o in observed.objects.values() {
        if o.bottle().is_empty() {
            continue;
        }
        let state = match o.running {
            Some(true) => "running",
            Some(false) => "stopped",
            None => "present",
        };
        bottles
            .entry(o.bottle().to_string())
            .or_default()
            .entry(o.node().map_or("?", |n| n.as_str()).to_string())
            .or_default()
            .push((o.key.to_string(), state.to_string()));
    }
    match args.output {
        Output::Json => {
            let v: Vec<_> = bottles
                .iter()
                .map(|(b, nodes)| {
                    let nodes: Vec<_> = nodes
                        .iter()
                        .flat_map(|(n, objs)| {
                            objs.iter()
                                .map(move |(o, s)| json!({"node": n, "object": o, "state": s}))
                        })
                        .collect();
                    json!({"bottle": b, "nodes": nodes})
                })
                .collect();
            println!("{}", json!({"project": project, "bottles": v}));
        }
        Output::Text => {
            if bottles.is_empty() {
                eprintln!("project {project}: no bottles");
            }
            for (b, nodes) in &bottles {
                println!("{b}");
                for (n, objs) in nodes {
                    for (o, s) in objs {
                        println!("  {n:<13} {s:<8} {o}");
                    }
                }
            }
        }
    }
    Ok(0)
}
