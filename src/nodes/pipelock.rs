//! The `pipelock` node: firewall on the way out: default-deny allowlist, SSRF guard, DLP, audit log. Its behaviour comes with its own issue; here it is a real container serving a health check.

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind};

/// Port it listens on, on net-internal.
pub const PORT: u16 = 8888;

pub fn object(ctx: &BottleCtx<'_>) -> DesiredObject {
    sidecar::object(
        ctx,
        SidecarShape {
            node: NodeKind::Pipelock,
            port: PORT,
            egress_network: true,
            ca_key: true,
            cap_add: &[],
            env: Vec::new(),
        },
    )
}
