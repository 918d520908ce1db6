//! The kinds of node a bottle is made of, by the names labels and object names use, and
//! the static table of what each depends on (docs/design.md).

use std::fmt;

/// The kinds of node in a bottle's graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    /// The network every node of the bottle is on; `--internal`: no way out.
    NetInternal,
    /// The network only pipelock and git-gate reach the outside through.
    NetEgress,
    /// The bottle CA's two volumes.
    Ca,
    /// The firewall: allowlist, SSRF, DLP, audit.
    Pipelock,
    /// The agent's HTTP(S) proxy: credential injection.
    Egress,
    /// The agent's only git remote.
    GitGate,
    /// The MCP server the agent asks for more through.
    Supervise,
    /// Holds the agent's network namespace.
    AgentNet,
    /// The agent's container, its image and volumes.
    Agent,
    /// The sidecar image, shared by every bottle of every project.
    SidecarImage,
}

impl NodeKind {
    /// Every kind, in creation order.
    pub const ALL: [NodeKind; 10] = [
        NodeKind::NetInternal,
        NodeKind::NetEgress,
        NodeKind::Ca,
        NodeKind::Pipelock,
        NodeKind::Egress,
        NodeKind::GitGate,
        NodeKind::Supervise,
        NodeKind::AgentNet,
        NodeKind::Agent,
        NodeKind::SidecarImage,
    ];

    /// The name used in labels and object names.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::NetInternal => "net-internal",
            NodeKind::NetEgress => "net-egress",
            NodeKind::Ca => "ca",
            NodeKind::Pipelock => "pipelock",
            NodeKind::Egress => "egress",
            NodeKind::GitGate => "git-gate",
            NodeKind::Supervise => "supervise",
            NodeKind::AgentNet => "agent-net",
            NodeKind::Agent => "agent",
            NodeKind::SidecarImage => "sidecar-image",
        }
    }

    /// The kind whose [`as_str`](Self::as_str) is `s`.
    pub fn parse(s: &str) -> Option<NodeKind> {
        NodeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What this node depends on (DESIGN.md section 2). Nodes a bottle lacks are skipped
    /// when the graph is built.
    pub fn deps(self) -> &'static [NodeKind] {
        use NodeKind::*;
        match self {
            NetInternal | NetEgress | SidecarImage => &[],
            // The CA volumes are seeded through a container of the sidecar image.
            Ca => &[SidecarImage],
            Pipelock => &[NetInternal, NetEgress, Ca, SidecarImage],
            Egress => &[NetInternal, Ca, Pipelock, SidecarImage],
            GitGate => &[NetInternal, NetEgress, SidecarImage],
            Supervise => &[NetInternal, SidecarImage],
            // It reports to pipelock, on pipelock's gateway address.
            AgentNet => &[NetInternal, Pipelock, SidecarImage],
            Agent => &[AgentNet, Ca, Pipelock, Egress, GitGate, Supervise],
        }
    }

    /// Is `other` reachable from `self` through [`deps`](Self::deps)?
    pub fn depends_on(self, other: NodeKind) -> bool {
        self.deps()
            .iter()
            .any(|&d| d == other || d.depends_on(other))
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a node kind that may be unknown is shown: its name, or `?` for an object whose
/// node label is missing or not one of ours.
pub fn shown(node: Option<NodeKind>) -> &'static str {
    node.map_or("?", NodeKind::as_str)
}
