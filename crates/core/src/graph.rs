//! From the validated model to the desired state: each agent expands into the nodes of
//! DESIGN.md section 2 (a petgraph per bottle; a node the bottle does not use is absent),
//! each node into its Docker objects, and each object learns what must exist before it.
//! No I/O on Docker here.

use std::collections::BTreeMap;
use std::sync::Arc;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::hash::DigestKey;
use crate::images::{self, ImageError};
use crate::nodes::{
    self, BottleCtx, DesiredObject, NodeKind, ObjectKey, ObjectKind, ca, egress, git_gate, network,
    pipelock, supervise,
};
use crate::subnets;
use bottle_contract::supervise::{Ask, Grants};
use bottle_model::{Agent, BottlePolicy, ImageSource, Manifest};

/// Why the desired state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The nodes of a bottle depend on each other in a cycle, so they have no creation
    /// order.
    #[error("bottle {bottle}: dependency cycle through {}", nodes.join(" -> "))]
    Cycle {
        /// The bottle whose node graph has the cycle.
        bottle: String,
        /// The nodes on the cycle, by name.
        nodes: Vec<String>,
    },
    /// An agent names a bottle policy the manifest does not define.
    #[error("agent {agent}: no bottle policy named {bottle}")]
    Dangling {
        /// The agent that names the policy.
        agent: String,
        /// The policy name it gives.
        bottle: String,
    },
    /// The agent image of a bottle could not be specified.
    #[error("bottle {bottle}")]
    Image {
        /// The bottle whose image failed.
        bottle: String,
        /// Why the image spec failed.
        #[source]
        source: ImageError,
    },
}

/// Every object the manifest wants, by key.
#[derive(Clone, Debug, Default)]
pub struct DesiredState {
    /// The project the objects belong to (its label scopes what the engine lists).
    pub project: String,
    /// Every desired object, by key.
    pub objects: BTreeMap<ObjectKey, DesiredObject>,
    /// What the state was built from, so the reconciler can rebuild it with the grants it
    /// observes (see [`DesiredState::with_grants`]); `None` for hand-made states.
    pub blueprint: Option<Arc<Blueprint>>,
    /// The engine's runtimes and the verdict on its runsc, gathered by the binary; they
    /// decide each container's runtime ([`crate::runtime`]). `None`: the executor asks
    /// the engine for its runtimes and presumes a listed runsc usable.
    pub runtimes: Option<Arc<crate::runtime::RuntimeFacts>>,
    /// Where the executor takes the subnets of the networks it creates from
    /// ([`crate::subnets`]). Not part of any object's spec: the plan never depends on it.
    pub addressing: Arc<subnets::Addressing>,
}

/// The inputs of a desired state: the manifest, the digest key, the sidecar image.
#[derive(Clone, Debug)]
pub struct Blueprint {
    /// The validated manifest.
    pub manifest: Manifest,
    /// The host-local key for digests of secrets.
    pub key: DigestKey,
    /// The sidecar image object shared by every bottle.
    pub sidecar_image: DesiredObject,
    /// The host's trust roots (PEM; empty when the host has none), which each agent's
    /// trust store starts from.
    pub host_roots: Arc<[u8]>,
    /// Build contexts and skill digests made while building the state, kept so a
    /// rebuild with grants (every watch trigger, once a project has one) reuses them
    /// instead of reading and tarring every context again.
    pub contexts: images::ContextCache,
}

impl DesiredState {
    /// A project that wants nothing: what `delete` converges to.
    pub fn empty(project: &str) -> DesiredState {
        DesiredState {
            project: project.to_string(),
            ..DesiredState::default()
        }
    }

    /// This state with `grants` merged in: approved hosts join their bottle's allowlist,
    /// the newest approved Dockerfile becomes its image, and the grant volumes are wanted
    /// (so they are not garbage-collected). Without grants, or without a blueprint, the
    /// state itself.
    pub fn with_grants(
        &self,
        grants: &Grants,
    ) -> Result<std::borrow::Cow<'_, DesiredState>, GraphError> {
        match &self.blueprint {
            Some(b) if !grants.is_empty() => {
                let mut state = build(b, grants)?;
                state.runtimes = self.runtimes.clone();
                state.addressing = Arc::clone(&self.addressing);
                Ok(std::borrow::Cow::Owned(state))
            }
            _ => Ok(std::borrow::Cow::Borrowed(self)),
        }
    }

    /// This state with its networks' subnets taken as `addressing` says.
    pub fn with_addressing(self, addressing: subnets::Addressing) -> DesiredState {
        DesiredState {
            addressing: Arc::new(addressing),
            ..self
        }
    }
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

/// Build the desired state of the manifest alone. `sidecar_image` is the shared
/// sidecar image object; `host_roots` the host's trust roots (PEM, read once by the
/// caller; empty when the host has none), which the agent's trust store starts from.
///
/// A pure function of its arguments: no file is read, no clock consulted and no key
/// minted here (the CA is minted by the executor when it creates the CA volumes).
pub fn desired(
    manifest: &Manifest,
    key: &DigestKey,
    sidecar_image: &DesiredObject,
    host_roots: &Arc<[u8]>,
) -> Result<DesiredState, GraphError> {
    desired_with_grants(manifest, key, sidecar_image, host_roots, &Grants::default())
}

/// Build the desired state of the manifest with the operator's grants merged in.
pub fn desired_with_grants(
    manifest: &Manifest,
    key: &DigestKey,
    sidecar_image: &DesiredObject,
    host_roots: &Arc<[u8]>,
    grants: &Grants,
) -> Result<DesiredState, GraphError> {
    let blueprint = Arc::new(Blueprint {
        manifest: manifest.clone(),
        key: key.clone(),
        sidecar_image: sidecar_image.clone(),
        host_roots: Arc::clone(host_roots),
        contexts: images::ContextCache::default(),
    });
    build(&blueprint, grants)
}

/// The desired state of `blueprint` with `grants` merged in.
fn build(blueprint: &Arc<Blueprint>, grants: &Grants) -> Result<DesiredState, GraphError> {
    let Blueprint {
        manifest,
        sidecar_image,
        ..
    } = &**blueprint;
    let mut state = DesiredState {
        project: manifest.project.clone(),
        objects: BTreeMap::new(),
        blueprint: Some(Arc::clone(blueprint)),
        runtimes: None,
        addressing: Arc::default(),
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
        let declared = agent_policy(policy, agent);
        let granted = agent_policy(&granted_policy(policy, grants, name), agent);
        for obj in bottle_objects(blueprint, name, agent, (&declared, &granted), grants)? {
            state.objects.insert(obj.key.clone(), obj);
        }
    }
    Ok(state)
}

/// `policy` with the grants of `bottle` merged in. Grants count only while the bottle
/// has `supervise: true`: turning supervise off withdraws them (and GC removes them).
/// Expired grants are not merged (their volumes stay wanted, see `bottle_objects`).
fn granted_policy(policy: &BottlePolicy, grants: &Grants, bottle: &str) -> BottlePolicy {
    let mut p = policy.clone();
    if !policy.supervise {
        return p;
    }
    for host in grants.hosts(bottle) {
        if !p.egress.allow.contains(&host) {
            p.egress.allow.push(host);
        }
    }
    if let Some(g) = grants.dockerfile(bottle)
        && let Ask::Dockerfile { dockerfile } = &g.ask
    {
        let context = match &policy.image {
            ImageSource::ProviderDefault => None,
            ImageSource::Dockerfile { context, .. } => Some(context.clone()),
            ImageSource::Granted { context, .. } => context.clone(),
        };
        p.image = ImageSource::Granted {
            dockerfile: dockerfile.clone(),
            context,
        };
    }
    p
}

/// `policy` with what the agent itself asks of its bottle's egress: for `host_login`, a
/// route to Codex's ChatGPT backend whose token is the host's access token (the route
/// machinery writes it to egress's token file and exempts its header from DLP; the agent
/// holds a stand-in, `nodes::agent`); for `remote_control`, a passthrough route per
/// Remote Control host (`provider::REMOTE_CONTROL_HOSTS`) the bottle does not tunnel
/// already. The manifest refuses an agent whose bottle routes these hosts otherwise.
fn agent_policy(policy: &BottlePolicy, agent: &Agent) -> BottlePolicy {
    use bottle_model::{AuthScheme, Route, RouteAuth, RouteRole, codex_login};
    let mut p = policy.clone();
    if let Some(login) = &agent.host_login {
        p.egress.routes.push(Route {
            host: codex_login::HOST.into(),
            path_prefix: Some(codex_login::PATH_PREFIX.into()),
            auth: Some(RouteAuth {
                scheme: AuthScheme::Bearer,
                token: login.access_token.clone(),
                var: String::new(),
            }),
            roles: vec![RouteRole::ChatgptLogin],
            tls_passthrough: false,
        });
    }
    if agent.remote_control {
        for host in bottle_model::provider::REMOTE_CONTROL_HOSTS {
            if !p.egress.routes.iter().any(|r| r.host == *host) {
                p.egress.routes.push(Route {
                    host: (*host).into(),
                    path_prefix: None,
                    auth: None,
                    roles: Vec::new(),
                    tls_passthrough: true,
                });
            }
        }
    }
    p
}

/// The objects of one running bottle. `policies` is the manifest's policy and the same
/// with grants merged; the supervise node shows the agent the former, everything else
/// is built from the latter.
fn bottle_objects(
    inputs: &Blueprint,
    bottle: &str,
    agent: &Agent,
    policies: (&BottlePolicy, &BottlePolicy),
    grants: &Grants,
) -> Result<Vec<DesiredObject>, GraphError> {
    let Blueprint {
        manifest,
        key,
        sidecar_image,
        host_roots,
        contexts,
    } = inputs;
    let (declared, policy) = policies;
    let project = manifest.project.as_str();
    let ctx = BottleCtx {
        project,
        manifest_path: &manifest.path,
        bottle,
        agent,
        policy,
        key,
        sidecar_image: &sidecar_image.key.name,
        contexts,
    };
    let g = bottle_graph(policy);
    let order = creation_order(bottle, &g)?;
    let mut objects: Vec<DesiredObject> = Vec::new();
    for kind in &order {
        match kind {
            NodeKind::NetInternal | NodeKind::NetEgress => {
                objects.push(network::object(&ctx, *kind))
            }
            NodeKind::Ca => objects.extend(ca::objects(&ctx, host_roots)),
            NodeKind::Pipelock => objects.extend(pipelock::objects(&ctx)),
            NodeKind::Egress => objects.extend(egress::objects(&ctx)),
            NodeKind::GitGate => objects.extend(git_gate::objects(&ctx)),
            NodeKind::Supervise => {
                objects.extend(supervise::objects(&ctx, declared, grants.all_of(bottle)))
            }
            NodeKind::AgentNet => objects.push(nodes::agent_net::object(&ctx)),
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
        // A revision marker is made by rewriting its volume, which must exist first.
        let rewrites = match &o.spec {
            nodes::ObjectSpec::Revision(r) => Some(r.content.name.as_str()),
            _ => None,
        };
        o.after = keys
            .iter()
            .filter(|(n, k, key)| {
                if volume {
                    return *n == NodeKind::SidecarImage
                        || (*k == ObjectKind::Volume && Some(key.name.as_str()) == rewrites);
                }
                *key != o.key && (o.node.deps().contains(n) || (*n == o.node && *k < o.key.kind))
            })
            .map(|(_, _, key)| key.clone())
            .collect();
    }
    Ok(objects)
}

#[cfg(test)]
#[path = "graph_agent_tests.rs"]
mod agent_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_model::*;

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
                    identity_file: bottle_model::HostFile {
                        path: "/k".into(),
                        contents: b"key".to_vec(),
                    },
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
