//! The `supervise` node: MCP server for the agent's proposals, present when `supervise: true`. Here it is a real container serving a health check.

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind};

/// Port it listens on, on net-internal.
pub const PORT: u16 = 8765;

pub fn object(ctx: &BottleCtx<'_>) -> DesiredObject {
    sidecar::object(
        ctx,
        SidecarShape {
            node: NodeKind::Supervise,
            port: PORT,
            egress_network: false,
            ca_key: false,
            cap_add: &[],
            env: Vec::new(),
        },
    )
}
