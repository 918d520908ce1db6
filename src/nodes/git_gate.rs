//! The `git-gate` node: the agent's only git remote, present when the bottle has `git:` entries. Here it is a real container serving a health check.

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind};

/// Port it listens on, on net-internal.
pub const PORT: u16 = 8418;

pub fn object(ctx: &BottleCtx<'_>) -> DesiredObject {
    sidecar::object(
        ctx,
        SidecarShape {
            node: NodeKind::GitGate,
            port: PORT,
            egress_network: true,
            ca_key: false,
            cap_add: &[],
            env: Vec::new(),
        },
    )
}
