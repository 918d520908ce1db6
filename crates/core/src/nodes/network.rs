//! The two networks of a bottle: `net-internal` (`--internal`: agent and sidecars, no
//! route out) and `net-egress` (sidecars only, the way out).
//!
//! `net-internal` is created with `com.docker.network.bridge.inhibit_ipv4`: the host's
//! bridge holds no IPv4 address on it, so nothing on the network reaches the host over
//! IPv4, and the gateway address Docker still hands out (the subnet's first address,
//! every container's default route and, for the agent, its DNS server) is free for
//! pipelock to take (see `sidecar::pipelock::sink`).

use std::collections::BTreeMap;

use super::{BottleCtx, DesiredObject, NodeKind, ObjectKind, ObjectSpec};
use crate::hash::SpecHasher;
use bottle_engine::NetworkSpec;

pub use bottle_engine::INHIBIT_IPV4;

/// The network object of `node` (`NetInternal` or `NetEgress`).
pub fn object(ctx: &BottleCtx<'_>, node: NodeKind) -> DesiredObject {
    let internal = node == NodeKind::NetInternal;
    let name = ctx.name(node.as_str());
    let options: BTreeMap<String, String> = if internal {
        BTreeMap::from([(INHIBIT_IPV4.to_string(), "true".to_string())])
    } else {
        BTreeMap::new()
    };
    let hash = SpecHasher::new(ctx.key)
        .field("internal", if internal { "true" } else { "false" })
        .field(
            "options",
            options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .finish();
    ctx.object(node, ObjectKind::Network, name.clone(), hash, |labels| {
        ObjectSpec::Network(NetworkSpec {
            name,
            labels,
            internal,
            options,
            // Chosen by the executor when it makes the network (crate::subnets).
            subnet: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_model::*;

    fn network(node: NodeKind) -> NetworkSpec {
        let policy = BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Auto,
            resources: Resources::default(),
            env: Default::default(),
            egress: Egress::default(),
            git: vec![],
            supervise: false,
        };
        let obj = crate::nodes::with_ctx(&policy, |ctx| object(ctx, node));
        match obj.spec {
            ObjectSpec::Network(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_internal_network_leaves_the_host_bridge_without_ipv4() {
        let internal = network(NodeKind::NetInternal);
        assert!(internal.internal);
        assert_eq!(
            internal.options.get(INHIBIT_IPV4).map(String::as_str),
            Some("true")
        );
        let egress = network(NodeKind::NetEgress);
        assert!(!egress.internal);
        assert!(egress.options.is_empty());
    }
}
