//! The agent-net node: the container that holds the agent's network namespace. It is
//! on net-internal under the agent's name (`agent`); the agent container joins its
//! namespace (`--network container:`) and has no network of its own.
//!
//! It runs `bottle sidecar agent-net` (see `sidecar::agent_net`): as root with
//! `NET_ADMIN` and `/dev/net/tun` it points the namespace's default route into a TUN
//! device, then drops to the sidecar user with no capability. From then on every packet
//! the agent sends past the sidecars fails at once (a TCP reset, an ICMP "prohibited")
//! and is reported to pipelock's audit log, where Docker alone would drop it unseen.
//! Its DNS server is net-internal's gateway address, which pipelock holds
//! (`sidecar::pipelock::sink`): external names are refused there and audited.
//!
//! The agent binds this container: when it is made anew, or started again, the agent
//! is recreated (a namespace cannot be re-joined).

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind};

/// The agent's name on net-internal, held by this container.
pub const AGENT_ALIAS: &str = "agent";
/// The TUN device node the container is given.
pub const TUN_DEVICE: &str = "/dev/net/tun";
/// What it needs, as root, until it drops them all: open the TUN device and set the
/// route (`NET_ADMIN`), become the sidecar user (`SETUID`, `SETGID`).
pub const CAPS: &[&str] = &["NET_ADMIN", "SETUID", "SETGID"];

/// The container.
pub fn object(ctx: &BottleCtx<'_>) -> DesiredObject {
    sidecar::object(
        ctx,
        SidecarShape {
            node: NodeKind::AgentNet,
            // It serves nothing on net-internal.
            port: 0,
            egress_network: false,
            ca_key: false,
            cap_add: CAPS,
            starts_as_root: true,
            env: Vec::new(),
            agent_netns: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{ObjectSpec, with_ctx};
    use bottle_model::*;

    #[test]
    fn it_holds_the_agents_name_the_tun_device_and_the_gateway_dns_and_never_forwards() {
        let policy = BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Runc,
            resources: Resources::default(),
            env: Default::default(),
            egress: Egress::default(),
            git: vec![],
            supervise: false,
        };
        with_ctx(&policy, |ctx| {
            let o = object(ctx);
            let ObjectSpec::Container(spec, _) = &o.spec else {
                panic!("a container");
            };
            assert_eq!(spec.networks, [ctx.name("net-internal")]);
            assert!(spec.aliases.contains(&AGENT_ALIAS.to_string()));
            assert_eq!(spec.devices, [TUN_DEVICE]);
            assert_eq!(
                spec.dns_gateway_of.as_deref(),
                Some(&*ctx.name("net-internal"))
            );
            assert_eq!(spec.user, "0:0");
            assert_eq!(spec.cap_add, CAPS);
            assert_eq!(
                spec.sysctls.get(sidecar::IP_FORWARD).map(String::as_str),
                Some("0")
            );
            assert_eq!(spec.network_of, None);
        });
    }
}
