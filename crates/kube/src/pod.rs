//! The agent's pod, rendered (pure; docs/design.md sections 9.2, 9.3 and 9.6): the init
//! container `netlock` (the sidecar image, `bottle sidecar netlock ADDR:PORT...`, uid 0
//! with `NET_ADMIN` only) that locks the pod's network to the sidecar endpoints before
//! anything else starts, then the agent container with the hardening of section 1.7 as
//! a `securityContext`. The pod holds no secret and no credential: no ServiceAccount
//! token, no Service environment variables, no DNS but loopback (where agent-net
//! answers); the sidecars are named through `hostAliases`, and their addresses are the
//! same ones netlock lets through, so a name and its way out never disagree.
//!
//! Under a RuntimeClass (gVisor, section 9.5) nothing inside the pod can write the lock:
//! the pod carries the annotation [`LOCK_ANNOTATION`] naming the endpoints, the node's
//! chained CNI plugin (`bottle sidecar cni`) writes the same table into the pod's network
//! namespace before any container starts, and the init container runs `netlock --verify`
//! instead (no capability, uid 65534): it proves the lock is in force and fails the pod
//! if it is not, so a node without the plugin never runs the agent.
//!
//! The backend adds volumes, environment and agent-net; this module fixes what must hold
//! whatever it adds.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use bottle_contract::Labels;
use bottle_contract::ca::AGENT_UID;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, HostAlias, Pod, PodDNSConfig, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The init container's name.
pub const NETLOCK: &str = "netlock";
/// The agent container's name.
pub const AGENT: &str = "agent";
/// The name of the container that holds the agent's pod (its node).
pub const AGENT_NET: &str = "agent-net";
/// agent-net's argument for a pod the node locks (section 9.5): no TUN trap, which
/// gVisor cannot give it; the node's lock refuses every way out on its own.
pub const NO_TRAP: &str = "--no-trap";
/// The sidecar binary's path in the sidecar image (`Dockerfile.egress`).
pub const SIDECAR_BINARY: &str = "/bottle";
/// The annotation that asks the node's CNI plugin for the lock (section 9.5).
pub use bottle_contract::netlock::ANNOTATION as LOCK_ANNOTATION;
/// The uid `netlock --verify` runs as: it needs no privilege.
const NOBODY: i64 = 65534;
/// The RuntimeClass of gVisor agents.
pub const RUNSC: &str = "runsc";
/// The label (value `cni`) with which the operator says that every node of a
/// RuntimeClass chains the netlock CNI plugin; only then is `runsc` offered.
pub use bottle_contract::netlock::RUNTIME_CLASS_LABEL as LOCKED_BY_NODE;

/// Does this RuntimeClass carry [`LOCKED_BY_NODE`]`=cni`?
pub fn locked_by_node(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(LOCKED_BY_NODE))
        .is_some_and(|v| v == bottle_contract::netlock::BY_CNI)
}

/// The one nameserver the agent's pod has: loopback, inside the lock.
pub const NAMESERVER: &str = "127.0.0.1";

/// A sidecar the agent may reach: its host name (as the agent's configuration names
/// it, e.g. `egress`) and the address and port it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub addr: SocketAddrV4,
}

/// What the agent's pod is made of.
#[derive(Debug, Clone)]
pub struct AgentPod {
    pub name: String,
    /// Ownership labels (`labels::object_labels`): the pod is ours like every object.
    pub labels: Labels,
    /// The agent's image.
    pub image: String,
    /// The sidecar image, which runs `netlock`.
    pub sidecar_image: String,
    /// The agent's command (the image's entrypoint when empty).
    pub command: Vec<String>,
    /// Everything the pod may connect to.
    pub endpoints: Vec<Endpoint>,
    /// A RuntimeClass (`runsc` for gVisor), resolved before rendering (section 9.5).
    pub runtime_class: Option<String>,
    /// The agent's memory, limit and request alike (section 9.6).
    pub memory: Option<String>,
}

/// A container's hardening (section 1.7): its uid and gid, no privilege, a read-only
/// root, every capability dropped but `add`.
pub(crate) fn hardened(uid: i64, gid: i64, add: &[&str]) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(gid),
        run_as_non_root: Some(uid != 0),
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: (!add.is_empty()).then(|| add.iter().map(|c| (*c).into()).collect()),
        }),
        ..Default::default()
    }
}

/// The `netlock` init container: locks the pod to `endpoints` and exits; or, when the
/// node writes the lock (`by_node`, under a RuntimeClass), proves it is in force.
pub fn netlock_container(sidecar_image: &str, endpoints: &[Endpoint], by_node: bool) -> Container {
    let mut command = vec![SIDECAR_BINARY.into(), "sidecar".into(), NETLOCK.into()];
    if by_node {
        command.push("--verify".into());
    }
    command.extend(endpoints.iter().map(|e| e.addr.to_string()));
    // Root in the pod's namespace with NET_ADMIN alone: nf_tables over netlink needs
    // nothing else (no NET_RAW: netlock opens no raw socket). Verifying needs nothing.
    let security_context = if by_node {
        hardened(NOBODY, NOBODY, &[])
    } else {
        hardened(0, 0, &["NET_ADMIN"])
    };
    Container {
        name: NETLOCK.into(),
        image: Some(sidecar_image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        security_context: Some(security_context),
        ..Default::default()
    }
}

/// Locks `pod` to `endpoints`: its `netlock` init container first (replacing one it
/// has), and under a RuntimeClass the annotation that asks the node for the lock (taken
/// away otherwise). Call it after the RuntimeClass is set.
pub fn set_lock(pod: &mut Pod, sidecar_image: &str, endpoints: &[Endpoint]) {
    let by_node = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.runtime_class_name.is_some());
    if by_node {
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                LOCK_ANNOTATION.into(),
                bottle_contract::netlock::annotation(endpoints.iter().map(|e| e.addr)),
            );
    } else {
        remove_lock_annotation(pod);
    }
    set_trap(pod, !by_node);
    let Some(s) = pod.spec.as_mut() else {
        return;
    };
    let inits = s.init_containers.get_or_insert_with(Vec::new);
    inits.retain(|c| c.name != NETLOCK);
    inits.insert(0, netlock_container(sidecar_image, endpoints, by_node));
}

/// Undoes [`set_lock`] in a pod the agent has left: no netlock container, no lock
/// annotation, and agent-net's trap back (it runs alone, under runc, again).
pub fn clear_lock(pod: &mut Pod) {
    remove_lock_annotation(pod);
    set_trap(pod, true);
    if let Some(s) = pod.spec.as_mut() {
        if let Some(inits) = s.init_containers.as_mut() {
            inits.retain(|c| c.name != NETLOCK);
        }
        if s.init_containers.as_ref().is_some_and(Vec::is_empty) {
            s.init_containers = None;
        }
    }
}

/// No lock annotation in `pod` (and no annotations at all when it was the only one, as
/// the server gives them back).
fn remove_lock_annotation(pod: &mut Pod) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(LOCK_ANNOTATION);
        if a.is_empty() {
            pod.metadata.annotations = None;
        }
    }
}

/// Sets up agent-net's TUN trap in `pod` (`on`), or not ([`NO_TRAP`]: under a
/// RuntimeClass, where the node locks the pod and gVisor has no TUN device). A pod
/// without agent-net is left as it is.
pub fn set_trap(pod: &mut Pod, on: bool) {
    let Some(s) = pod.spec.as_mut() else {
        return;
    };
    for c in s.containers.iter_mut().filter(|c| c.name == AGENT_NET) {
        let args = c.args.get_or_insert_with(Vec::new);
        args.retain(|a| a != NO_TRAP);
        if !on {
            args.push(NO_TRAP.into());
        }
    }
}

/// The sidecars' names for `/etc/hosts`, one entry per address.
pub fn host_aliases(endpoints: &[Endpoint]) -> Vec<HostAlias> {
    let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in endpoints {
        let names = by_ip.entry(e.addr.ip().to_string()).or_default();
        if !names.contains(&e.host) {
            names.push(e.host.clone());
        }
    }
    by_ip
        .into_iter()
        .map(|(ip, hostnames)| HostAlias {
            ip,
            hostnames: Some(hostnames),
        })
        .collect()
}

/// The agent's pod (see the module doc).
pub fn agent_pod(p: &AgentPod) -> Pod {
    let resources = p.memory.as_ref().map(|m| {
        let q = BTreeMap::from([("memory".to_string(), Quantity(m.clone()))]);
        ResourceRequirements {
            limits: Some(q.clone()),
            requests: Some(q),
            ..Default::default()
        }
    });
    let agent = Container {
        name: AGENT.into(),
        image: Some(p.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: (!p.command.is_empty()).then(|| p.command.clone()),
        security_context: Some(hardened(AGENT_UID as i64, AGENT_UID as i64, &[])),
        resources,
        ..Default::default()
    };
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(p.name.clone()),
            labels: Some(p.labels.clone().into_iter().collect()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![agent],
            runtime_class_name: p.runtime_class.clone(),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            share_process_namespace: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some(vec![NAMESERVER.into()]),
                ..Default::default()
            }),
            host_aliases: Some(host_aliases(&p.endpoints)),
            // The plan repairs drift by recreating, not the kubelet (section 9.6).
            restart_policy: Some("Never".into()),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    set_lock(&mut pod, &p.sidecar_image, &p.endpoints);
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, addr: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            addr: addr.parse().expect("addr"),
        }
    }

    fn spec(runtime: Option<&str>) -> AgentPod {
        AgentPod {
            name: "bottle-p-b-agent".into(),
            labels: bottle_contract::labels::object_labels("p", "b", "agent", "abc", ""),
            image: "reg/agent:1".into(),
            sidecar_image: "reg/sidecar:2".into(),
            command: vec!["sleep".into(), "infinity".into()],
            endpoints: vec![
                ep("egress", "10.96.0.10:3128"),
                ep("git-gate", "10.96.0.11:8418"),
                ep("supervise", "10.96.0.12:8765"),
            ],
            runtime_class: runtime.map(str::to_owned),
            memory: Some("512Mi".into()),
        }
    }

    #[test]
    fn netlock_runs_first_as_root_with_net_admin_only_and_the_endpoints_as_arguments() {
        let pod = agent_pod(&spec(None));
        let s = pod.spec.expect("spec");
        let [init] = &s.init_containers.expect("init")[..] else {
            panic!("one init container")
        };
        assert_eq!(init.name, NETLOCK);
        assert_eq!(init.image.as_deref(), Some("reg/sidecar:2"));
        assert_eq!(
            init.command.as_deref().expect("command"),
            [
                "/bottle",
                "sidecar",
                "netlock",
                "10.96.0.10:3128",
                "10.96.0.11:8418",
                "10.96.0.12:8765"
            ]
        );
        let sc = init.security_context.as_ref().expect("sc");
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.run_as_non_root, Some(false));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.as_ref().expect("caps");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
    }

    #[test]
    fn the_agent_is_hardened_and_the_pod_has_no_token_no_service_env_and_only_loopback_dns() {
        let pod = agent_pod(&spec(None));
        assert_eq!(
            pod.metadata.labels.as_ref().expect("labels")["bottle.project"],
            "p"
        );
        let s = pod.spec.expect("spec");
        let [agent] = &s.containers[..] else {
            panic!("one container")
        };
        assert_eq!(agent.name, AGENT);
        let sc = agent.security_context.as_ref().expect("sc");
        assert_eq!(sc.run_as_user, Some(1000));
        assert_eq!(sc.run_as_group, Some(1000));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let caps = sc.capabilities.as_ref().expect("caps");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(caps.add, None);
        let mem = agent.resources.as_ref().expect("resources");
        assert_eq!(mem.limits, mem.requests);
        assert_eq!(
            s.security_context
                .and_then(|c| c.seccomp_profile)
                .map(|p| p.type_),
            Some("RuntimeDefault".into())
        );
        assert_eq!(s.automount_service_account_token, Some(false));
        assert_eq!(s.enable_service_links, Some(false));
        assert_eq!(s.share_process_namespace, Some(false));
        assert_eq!(s.host_network, Some(false));
        assert_eq!(s.dns_policy.as_deref(), Some("None"));
        assert_eq!(
            s.dns_config.and_then(|d| d.nameservers),
            Some(vec!["127.0.0.1".to_string()])
        );
        assert_eq!(s.restart_policy.as_deref(), Some("Never"));
        assert_eq!(s.runtime_class_name, None);
        assert_eq!(
            agent_pod(&spec(Some("runsc")))
                .spec
                .and_then(|s| s.runtime_class_name),
            Some("runsc".into())
        );
    }

    #[test]
    fn under_a_runtime_class_the_node_writes_the_lock_and_netlock_only_verifies_it() {
        let runc = agent_pod(&spec(None));
        assert!(
            runc.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(LOCK_ANNOTATION))
        );
        let mut pod = agent_pod(&spec(Some("runsc")));
        assert_eq!(
            pod.metadata.annotations.as_ref().expect("annotations")[LOCK_ANNOTATION],
            "10.96.0.10:3128 10.96.0.11:8418 10.96.0.12:8765"
        );
        let s = pod.spec.as_ref().expect("spec");
        let [init] = &s.init_containers.as_ref().expect("init")[..] else {
            panic!("one init container")
        };
        assert_eq!(
            init.command.as_deref().expect("command")[..5],
            [
                "/bottle",
                "sidecar",
                "netlock",
                "--verify",
                "10.96.0.10:3128"
            ]
        );
        let sc = init.security_context.as_ref().expect("sc");
        assert_eq!(sc.run_as_user, Some(65534));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.clone()), None);

        // Locked anew (the sidecars moved), then back under runc: one netlock, first.
        set_lock(
            &mut pod,
            "reg/sidecar:3",
            &[ep("egress", "10.96.0.20:3128")],
        );
        assert_eq!(
            pod.metadata.annotations.as_ref().expect("a")[LOCK_ANNOTATION],
            "10.96.0.20:3128"
        );
        if let Some(s) = pod.spec.as_mut() {
            s.runtime_class_name = None;
        }
        set_lock(
            &mut pod,
            "reg/sidecar:3",
            &[ep("egress", "10.96.0.20:3128")],
        );
        assert_eq!(pod.metadata.annotations, None);
        let inits = pod.spec.and_then(|s| s.init_containers).expect("init");
        assert_eq!(inits.len(), 1);
        assert_eq!(
            inits[0].command.as_deref().expect("command"),
            ["/bottle", "sidecar", "netlock", "10.96.0.20:3128"]
        );
    }

    #[test]
    fn clear_lock_undoes_set_lock_in_a_pod_the_agent_left() {
        let mut pod = agent_pod(&spec(Some("runsc")));
        if let Some(s) = pod.spec.as_mut() {
            s.containers.push(Container {
                name: AGENT_NET.into(),
                args: Some(vec!["agent-net".into()]),
                ..Default::default()
            });
        }
        set_lock(
            &mut pod,
            "reg/sidecar:3",
            &[ep("egress", "10.96.0.20:3128")],
        );
        let agent_net_args = |p: &Pod| {
            p.spec
                .as_ref()
                .expect("spec")
                .containers
                .iter()
                .find(|c| c.name == AGENT_NET)
                .and_then(|c| c.args.clone())
        };
        assert_eq!(
            agent_net_args(&pod),
            Some(vec!["agent-net".to_string(), NO_TRAP.to_string()])
        );
        clear_lock(&mut pod);
        assert_eq!(pod.metadata.annotations, None);
        let s = pod.spec.as_ref().expect("spec");
        assert_eq!(s.init_containers, None);
        assert_eq!(agent_net_args(&pod), Some(vec!["agent-net".to_string()]));
        // Twice is once.
        let once = pod.clone();
        clear_lock(&mut pod);
        assert_eq!(pod, once);
    }

    #[test]
    fn host_aliases_name_each_address_once_with_every_host_on_it() {
        let aliases = host_aliases(&[
            ep("egress", "10.96.0.10:3128"),
            ep("git-gate", "10.96.0.9:8418"),
            ep("egress", "10.96.0.10:3129"),
            ep("proxy", "10.96.0.10:3128"),
        ]);
        let got: Vec<(String, Vec<String>)> = aliases
            .into_iter()
            .map(|a| (a.ip, a.hostnames.unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.96.0.10".into(), vec!["egress".into(), "proxy".into()]),
                ("10.96.0.9".into(), vec!["git-gate".into()]),
            ]
        );
    }
}
