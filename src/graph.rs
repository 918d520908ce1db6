//! From the validated model to the desired state: each agent expands into the nodes of
//! DESIGN.md section 2 (a petgraph per bottle; a node the bottle does not use is absent),
//! each node into its Docker objects, and each object learns what must exist before it.
//! No I/O on Docker here.

use std::collections::BTreeMap;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::hash::DigestKey;
use crate::images::ImageError;
use crate::model::{Agent, BottlePolicy, Manifest};
use crate::nodes::{
    self, BottleCtx, DesiredObject, NodeKind, ObjectKey, ObjectKind, ca, egress, git_gate, network,
    pipelock, supervise,
};

/// Why the desired state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("bottle {bottle}: dependency cycle through {}", nodes.join(" -> "))]
    Cycle { bottle: String, nodes: Vec<String> },
    #[error("agent {agent}: no bottle policy named {bottle}")]
    Dangling { agent: String, bottle: String },
    #[error("bottle {bottle}: {source}")]
    Image {
        bottle: String,
        #[source]
        source: ImageError,
    },
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    UpstreamCa(#[from] egress::UpstreamCaError),
    #[error(transparent)]
    GitGate(#[from] git_gate::GitGateError),
}

/// Every object the manifest wants, by key.
#[derive(Clone, Debug, Default)]
pub struct DesiredState {
    pub project: String,
    pub objects: BTreeMap<ObjectKey, DesiredObject>,
}

/// The node graph of one running bottle: edges go from a node to what it depends on.
pub fn bottle_graph(policy: &BottlePolicy) -> DiGraph<NodeKind, ()> {
    let present = |k: NodeKind| match k {
        NodeKind::GitGate => !policy.git.is_empty(),
        NodeKind::Supervise => policy.supervise,
        _ => true,
    };
    let mut g = DiGraph::new();
    let idx: BTreeMap<NodeKind, NodeIndex> = NodeKind::ALL
        .into_iter()
        .filter(|&k| present(k))
        .map(|k| (k, g.add_node(k)))
        .collect();
    for (&k, &i) in &idx {
        for d in k.deps() {
            if let Some(&j) = idx.get(d) {
                g.add_edge(i, j, ());
            }
        }
    }
    g
}

/// The nodes of `g` in creation order (dependencies first), or the cycle.
pub fn creation_order(
    bottle: &str,
    g: &DiGraph<NodeKind, ()>,
) -> Result<Vec<NodeKind>, GraphError> {
    match toposort(g, None) {
        Ok(order) => Ok(order.into_iter().rev().map(|i| g[i]).collect()),
        Err(_) => {
            let nodes = tarjan_scc(g)
                .into_iter()
                .find(|scc| scc.len() > 1 || scc.iter().any(|&n| g.contains_edge(n, n)))
                .unwrap_or_default()
                .into_iter()
                .map(|i| g[i].to_string())
                .collect();
            Err(GraphError::Cycle {
                bottle: bottle.to_string(),
                nodes,
            })
        }
    }
}

/// Build the desired state. `sidecar_image` is the shared sidecar image object.
pub fn desired(
    manifest: &Manifest,
    key: &DigestKey,
    sidecar_image: &DesiredObject,
) -> Result<DesiredState, GraphError> {
    let mut state = DesiredState {
        project: manifest.project.clone(),
        objects: BTreeMap::new(),
    };
    state
        .objects
        .insert(sidecar_image.key.clone(), sidecar_image.clone());
    for (name, agent) in &manifest.agents {
        let policy = manifest
            .bottles
            .get(&agent.bottle)
            .ok_or_else(|| GraphError::Dangling {
                agent: name.clone(),
                bottle: agent.bottle.clone(),
            })?;
        for obj in bottle_objects(manifest, name, agent, policy, key, sidecar_image)? {
            state.objects.insert(obj.key.clone(), obj);
        }
    }
    Ok(state)
}

fn bottle_objects(
    manifest: &Manifest,
    bottle: &str,
    agent: &Agent,
    policy: &BottlePolicy,
    key: &DigestKey,
    sidecar_image: &DesiredObject,
) -> Result<Vec<DesiredObject>, GraphError> {
    let project = manifest.project.as_str();
    let ctx = BottleCtx {
        project,
        manifest_path: &manifest.path,
        bottle,
        agent,
        policy,
        key,
        sidecar_image: &sidecar_image.key.name,
    };
    let g = bottle_graph(policy);
    let order = creation_order(bottle, &g)?;
    let mut objects: Vec<DesiredObject> = Vec::new();
    for kind in &order {
        match kind {
            NodeKind::NetInternal | NodeKind::NetEgress => {
                objects.push(network::object(&ctx, *kind))
            }
            NodeKind::Ca => objects.extend(ca::objects(&ctx, &ca::generate(project, bottle)?)),
            NodeKind::Pipelock => objects.extend(pipelock::objects(&ctx)),
            NodeKind::Egress => objects.extend(egress::objects(&ctx)?),
            NodeKind::GitGate => objects.extend(git_gate::objects(&ctx)?),
            NodeKind::Supervise => objects.push(supervise::object(&ctx)),
            NodeKind::Agent => {
                objects.extend(
                    nodes::agent::objects(&ctx).map_err(|source| GraphError::Image {
                        bottle: bottle.to_string(),
                        source,
                    })?,
                )
            }
            NodeKind::SidecarImage => {}
        }
    }
    // Order: an object comes after every object of the nodes its node depends on, and
    // after the objects of its own node that are of an earlier kind (image before
    // container). An image needs nothing: it builds while the rest is made. A volume
    // needs only the sidecar image, which seeds it.
    let keys: Vec<(NodeKind, ObjectKind, ObjectKey)> = objects
        .iter()
        .map(|o| (o.node, o.key.kind, o.key.clone()))
        .chain(std::iter::once((
            NodeKind::SidecarImage,
            ObjectKind::Image,
            sidecar_image.key.clone(),
        )))
        .collect();
    for o in objects
        .iter_mut()
        .filter(|o| o.key.kind != ObjectKind::Image)
    {
        let volume = o.key.kind == ObjectKind::Volume;
        o.after = keys
            .iter()
            .filter(|(n, k, key)| {
                if volume {
                    return *n == NodeKind::SidecarImage;
                }
                *key != o.key && (o.node.deps().contains(n) || (*n == o.node && *k < o.key.kind))
            })
            .map(|(_, _, key)| key.clone())
            .collect();
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn policy(git: bool, supervise: bool) -> BottlePolicy {
        BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Auto,
            resources: Resources::default(),
            env: Default::default(),
            egress: Egress::default(),
            git: if git {
                vec![GitRemote {
                    name: "origin".into(),
                    upstream: "ssh://git@h/r.git".into(),
                    identity_file: "/k".into(),
                    known_host_key: "h ssh-ed25519 AAAA".into(),
                    allow_force: false,
                }]
            } else {
                vec![]
            },
            supervise,
        }
    }

    #[test]
    fn absent_nodes_are_absent_and_order_respects_deps() {
        let g = bottle_graph(&policy(false, false));
        let order = creation_order("b", &g).unwrap();
        assert!(!order.contains(&NodeKind::GitGate));
        assert!(!order.contains(&NodeKind::Supervise));
        let g = bottle_graph(&policy(true, true));
        let order = creation_order("b", &g).unwrap();
        assert_eq!(order.len(), NodeKind::ALL.len());
        for (i, a) in order.iter().enumerate() {
            for b in &order[i + 1..] {
                assert!(!a.depends_on(*b), "{a} created before its dependency {b}");
            }
        }
        assert_eq!(order.last(), Some(&NodeKind::Agent));
    }

    #[test]
    fn a_cycle_names_its_nodes() {
        let mut g = DiGraph::new();
        let a = g.add_node(NodeKind::Egress);
        let b = g.add_node(NodeKind::Pipelock);
        g.add_edge(a, b, ());
        g.add_edge(b, a, ());
        let err = creation_order("dev", &g).unwrap_err().to_string();
        assert!(err.contains("egress") && err.contains("pipelock"), "{err}");
    }
}
