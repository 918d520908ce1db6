//! The two networks of a bottle: `net-internal` (`--internal`: agent and sidecars, no
//! route out) and `net-egress` (sidecars only, the way out).

use super::{BottleCtx, DesiredObject, NodeKind, ObjectKind, ObjectSpec};
use crate::engine::NetworkSpec;
use crate::hash::SpecHasher;

/// The network object of `node` (`NetInternal` or `NetEgress`).
pub fn object(ctx: &BottleCtx<'_>, node: NodeKind) -> DesiredObject {
    let internal = node == NodeKind::NetInternal;
    let name = ctx.name(node.as_str());
    let hash = SpecHasher::new(ctx.key)
        .field("internal", if internal { "true" } else { "false" })
        .finish();
    ctx.object(node, ObjectKind::Network, name.clone(), hash, |labels| {
        ObjectSpec::Network(NetworkSpec {
            name,
            labels,
            internal,
        })
    })
}
