//! What every sidecar container shares: the sidecar image running `bottle sidecar
//! <kind>`, the sidecar user, the hardening, the limits. Each sidecar module states only
//! how it differs (networks, CA mount, capabilities, environment). A sidecar on both
//! networks gets `net.ipv4.ip_forward=0`: it proxies, it never routes; so does the
//! one that holds the agent's network namespace.

use super::{BottleCtx, DesiredObject, NodeKind, ObjectKey, ObjectKind, ObjectSpec, ca};
use crate::hash::SpecHasher;
use bottle_engine::{ContainerSpec, Mount};
use bottle_model::{Resources, RuntimeChoice};

/// Where the sidecar image keeps `bottle` (its entrypoint).
pub const SIDECAR_BINARY: &str = "/bottle";

/// The readiness probe of a container of `node` running our binary: the sidecars'
/// `bottle sidecar probe` (`bottle_contract::status`); `None` for the agent, which
/// reports nothing (running is ready).
pub fn probe(node: NodeKind) -> Option<Vec<String>> {
    let binary = match node {
        NodeKind::GitGate => bottle_contract::git_gate::BINARY,
        NodeKind::Pipelock | NodeKind::Egress | NodeKind::Supervise | NodeKind::AgentNet => {
            SIDECAR_BINARY
        }
        _ => return None,
    };
    Some(bottle_contract::status::probe_cmd(binary))
}

/// The sysctl that makes a container a router; off on the dual-homed sidecars.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";

/// How one sidecar differs from the others.
pub struct SidecarShape {
    /// The sidecar's node; its name is in the container's name, the `bottle sidecar <kind>`
    /// command and the container's alias on net-internal.
    pub node: NodeKind,
    /// Port it listens on, on net-internal.
    pub port: u16,
    /// Attached to net-egress too (it is a way out).
    pub egress_network: bool,
    /// Mounts the CA volume with the key, read-only.
    pub ca_key: bool,
    /// Capabilities added back after `cap_drop: ALL`.
    pub cap_add: &'static [&'static str],
    /// Starts as root (Docker grants `cap_add` to uid 0 only) and drops to
    /// [`ca::SIDECAR_UID`] itself once the privileged setup is done.
    pub starts_as_root: bool,
    /// Extra non-secret environment.
    pub env: Vec<(String, String)>,
    /// Holds the agent's network namespace (`nodes::agent_net`): named `agent` on
    /// net-internal too, given `/dev/net/tun`, the gateway as DNS server, and no
    /// forwarding.
    pub agent_netns: bool,
}

/// The container object of a sidecar.
pub fn object(ctx: &BottleCtx<'_>, shape: SidecarShape) -> DesiredObject {
    object_with_mounts(ctx, shape, Vec::new())
}

/// The container object of a sidecar that also mounts `extra` (read-only config
/// volumes); the container binds each volume, so a new volume recreates it.
pub fn object_with_mounts(
    ctx: &BottleCtx<'_>,
    shape: SidecarShape,
    extra: Vec<Mount>,
) -> DesiredObject {
    let node = shape.node;
    let name = ctx.name(node.as_str());
    let internal = ctx.name(NodeKind::NetInternal.as_str());
    let egress = ctx.name(NodeKind::NetEgress.as_str());
    let mut networks = vec![internal.clone()];
    let mut binds = vec![ObjectKey::new(ObjectKind::Network, internal.clone())];
    if shape.egress_network {
        networks.push(egress.clone());
        binds.push(ObjectKey::new(ObjectKind::Network, egress));
    }
    let mut mounts = vec![Mount::Tmpfs {
        target: "/tmp".into(),
        size_bytes: 16 << 20,
    }];
    if shape.ca_key {
        let vol = ctx.name("ca");
        binds.push(ObjectKey::new(ObjectKind::Volume, vol.clone()));
        mounts.push(Mount::Volume {
            name: vol,
            target: ca::MOUNT.into(),
            read_only: true,
        });
    }
    for m in extra {
        if let Mount::Volume { name, .. } = &m {
            binds.push(ObjectKey::new(ObjectKind::Volume, name.clone()));
        }
        mounts.push(m);
    }
    let mut env = vec![
        format!("BOTTLE_PROJECT={}", ctx.project),
        format!("BOTTLE_NAME={}", ctx.bottle),
        format!("BOTTLE_LISTEN=0.0.0.0:{}", shape.port),
        "RUST_LOG=info".to_string(),
    ];
    env.extend(shape.env.iter().map(|(k, v)| format!("{k}={v}")));
    let cmd = vec!["sidecar".to_string(), node.as_str().to_string()];
    let user = if shape.starts_as_root {
        "0:0".to_string()
    } else {
        format!("{}:{}", ca::SIDECAR_UID, ca::SIDECAR_UID)
    };
    // A sidecar on both networks must never route between them (containers here
    // default to forwarding on).
    let sysctls: std::collections::BTreeMap<String, String> =
        if shape.egress_network || shape.agent_netns {
            [(IP_FORWARD.to_string(), "0".to_string())].into()
        } else {
            Default::default()
        };
    let limits = Resources::SIDECAR;
    let mut aliases = vec![node.as_str().to_string()];
    let mut devices = Vec::new();
    let mut dns_gateway_of = None;
    if shape.agent_netns {
        aliases.push(super::agent_net::AGENT_ALIAS.to_string());
        devices.push(super::agent_net::TUN_DEVICE.to_string());
        dns_gateway_of = Some(internal.clone());
    }
    let mut hash = SpecHasher::new(ctx.key);
    hash.field("image", ctx.sidecar_image)
        .field("cmd", cmd.join("\0"))
        .field("env", env.join("\0"))
        .field("networks", networks.join(","))
        .field("mounts", format!("{mounts:?}"))
        .field("caps", shape.cap_add.join(","))
        .field("user", &user)
        .field("sysctls", format!("{sysctls:?}"))
        .field(
            "resources",
            format!("{}/{}/{}", limits.cpus, limits.memory, limits.pids),
        );
    if shape.agent_netns {
        hash.field("aliases", aliases.join(","))
            .field("devices", devices.join(","))
            .field("dns", "net-internal gateway");
    }
    let hash = hash.finish();
    DesiredObject {
        key: ObjectKey::new(ObjectKind::Container, name.clone()),
        bottle: ctx.bottle.to_string(),
        node,
        spec: ObjectSpec::Container(
            Box::new(ContainerSpec {
                name,
                image: ctx.sidecar_image.to_string(),
                labels: ctx.labels(node, &hash),
                cmd,
                env,
                user,
                networks,
                aliases,
                mounts,
                cap_add: shape.cap_add.iter().map(|c| c.to_string()).collect(),
                memory: limits.memory as i64,
                nano_cpus: (limits.cpus * 1e9) as i64,
                pids: limits.pids,
                runtime: None,
                working_dir: None,
                init: false,
                sysctls,
                dns_gateway_of,
                network_of: None,
                devices,
                probe: probe(node),
            }),
            // Sidecars are bottle's own code and need the network: always runc.
            RuntimeChoice::Runc,
        ),
        hash,
        binds,
        after: Vec::new(),
    }
}

/// The shared sidecar image object, from its build context.
pub fn image_object(
    key: &crate::hash::DigestKey,
    context: crate::images::Context,
) -> DesiredObject {
    let tag = crate::images::sidecar_tag(&context.hash);
    let hash = SpecHasher::new(key)
        .field("context", &context.hash)
        .finish();
    DesiredObject {
        key: ObjectKey::new(ObjectKind::Image, tag.clone()),
        bottle: String::new(),
        node: NodeKind::SidecarImage,
        spec: ObjectSpec::Image(bottle_engine::BuildSpec {
            tag,
            labels: bottle_contract::labels::sidecar_image_labels(&hash.hash),
            dockerfile: context.dockerfile,
            context: bottle_engine::BuildContext::Files(context.files),
        }),
        hash,
        binds: Vec::new(),
        after: Vec::new(),
    }
}
