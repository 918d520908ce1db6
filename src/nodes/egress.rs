//! The `egress` node: the agent's HTTPS_PROXY: TLS interception and credential injection per route. Its behaviour comes with its own issue; here it is a real container serving a health check.

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind};

/// Port it listens on, on net-internal.
pub const PORT: u16 = 3128;

pub fn object(ctx: &BottleCtx<'_>) -> DesiredObject {
    sidecar::object(
        ctx,
        SidecarShape {
            node: NodeKind::Egress,
            port: PORT,
            egress_network: false,
            ca_key: true,
            cap_add: &[],
            env: Vec::new(),
        },
    )
}
