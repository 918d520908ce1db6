//! The pure half of the Kubernetes engine (docs/design.md section 9.9): the engine
//! seam's Docker-shaped specs turned into Kubernetes objects, and those objects read back
//! as the seam's `*Info`. No I/O: everything here is unit-tested without a cluster.
//!
//! - A network is a label-only ConfigMap marker (`bottle.object=network`): on Kubernetes
//!   a pod's own network namespace and its pod-local rules (9.3) do a network's work.
//! - A volume of files (config, certificates, keys, revision and grant markers) is a
//!   Secret, mounted read-only with each file at its path and mode; a volume the
//!   containers write (it has an owner or host directories to copy) is a
//!   PersistentVolumeClaim, seeded by a helper pod (`bottle sidecar seed`) from a Secret
//!   holding the plan and the files.
//! - A pod names its bottle's pods that it depends on through `hostAliases` (pod
//!   addresses: no kube-proxy on the test cluster); [`stale`] says which containers name
//!   a peer at an address it no longer has, [`refresh`] makes their pod with the new one.
//! - A container is a pod (one per node); a container with `network_of` joins the pod of
//!   the container it names. The pod that holds the agent is the agent pod of
//!   [`crate::pod::agent_pod`]: init `netlock` locked to its sidecars' endpoints, loopback
//!   DNS, no token. A container's environment is a Secret of its own (`envFrom`), never
//!   in the pod spec.
//! - Label values are at most 63 characters of `[A-Za-z0-9._-]`: the selecting labels
//!   stay labels, every other `bottle.*` label becomes an annotation of the same name, and
//!   reading an object merges them back.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use bottle_contract::{Labels, labels};
use bottle_engine::{ContainerInfo, ContainerSpec, ContainerState, Mount, NetworkInfo};
use bottle_engine::{NetworkSpec, VolumeInfo, VolumeSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EmptyDirVolumeSource, EnvFromSource, HostAlias, HostPathVolumeSource,
    KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    Pod, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretEnvSource, SecretVolumeSource, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::pod::{self, AgentPod, Endpoint};
use bottle_contract::node::NodeKind;

/// What a labelled object stands for: `network`, `volume` or `env`.
pub const OBJECT: &str = "bottle.object";
/// The label value of a network marker.
pub const NETWORK: &str = "network";
/// The label value of a volume (Secret or PersistentVolumeClaim).
pub const VOLUME: &str = "volume";
/// The label value of a container's environment Secret.
pub const ENV: &str = "env";
/// `bottle.object` of a seeding helper pod and its Secret.
pub const SEED: &str = "seed";
/// Pod annotation: the containers of the pod as the seam knows them (JSON).
pub const CONTAINERS: &str = "bottle.containers";
/// Secret annotation: where each key of a volume Secret goes (JSON).
pub const FILES: &str = "bottle.files";

/// The labels that select objects server-side; they stay labels (section 9.4).
const SELECTING: [&str; 6] = [
    labels::MANAGED,
    labels::PROJECT,
    labels::BOTTLE,
    labels::NODE,
    labels::SPEC_HASH,
    OBJECT,
];

/// Is `v` a valid label value (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends)?
pub fn valid_label_value(v: &str) -> bool {
    let ends = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && ends(v.chars().next())
        && ends(v.chars().last())
}

/// `labels` split into Kubernetes labels (the selecting ones) and annotations (the rest).
pub fn split_labels(l: &Labels) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    l.iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, v)| SELECTING.contains(&k.as_str()) && valid_label_value(v))
}

/// The seam's labels of an object: its labels and its `bottle.*` annotations, without the
/// engine's own bookkeeping ([`OBJECT`], [`CONTAINERS`], [`FILES`]).
pub fn merged_labels(meta: &ObjectMeta) -> Labels {
    let mut out = Labels::new();
    for map in [&meta.labels, &meta.annotations].into_iter().flatten() {
        for (k, v) in map {
            if k.starts_with("bottle.")
                && ![OBJECT, CONTAINERS, FILES, NUDGED].contains(&k.as_str())
            {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn meta(name: &str, l: &Labels, object: &str) -> ObjectMeta {
    let (mut labels, annotations) = split_labels(l);
    labels.insert(OBJECT.into(), object.into());
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..Default::default()
    }
}

/// The ConfigMap that marks a network as made.
pub fn network_marker(spec: &NetworkSpec) -> ConfigMap {
    let mut data = BTreeMap::from([("internal".to_string(), spec.internal.to_string())]);
    if let Some(s) = spec.subnet {
        data.insert("subnet".into(), s.to_string());
    }
    ConfigMap {
        metadata: meta(&spec.name, &spec.labels, NETWORK),
        data: Some(data),
        ..Default::default()
    }
}

/// The prefix of a pod's network labels ([`net_label`]).
pub const NET_PREFIX: &str = "net.bottle/";

/// The pod label that says a pod's containers are on network `name`: the name itself
/// when it fits a label's name (63 characters), else its start and a digest.
pub fn net_label(name: &str) -> String {
    use sha2::Digest as _;
    let short = if name.len() <= 63 {
        name.to_string()
    } else {
        let digest = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..8]);
        let start: String = name.chars().take(46).collect();
        format!("{}-{digest}", start.trim_end_matches(['-', '.', '_']))
    };
    format!("{NET_PREFIX}{short}")
}

/// Label `p` with each network its containers are on (their records), and no other.
pub fn label_networks(p: &mut Pod) {
    let nets: std::collections::BTreeSet<String> =
        records(p).into_iter().flat_map(|r| r.networks).collect();
    let l = p.metadata.labels.get_or_insert_with(BTreeMap::new);
    l.retain(|k, _| !k.starts_with(NET_PREFIX));
    for n in nets {
        l.insert(net_label(&n), "member".into());
    }
}

/// The NetworkPolicy of a network (section 9.2, the second layer, for clusters whose
/// network plugin enforces policies): its member pods ([`label_networks`]) take
/// connections only from each other and open them only to each other, and, on a
/// network that is not internal (Docker's route out), to any address. Policies add up:
/// a pod on two networks may do what either allows.
pub fn network_policy(spec: &NetworkSpec) -> NetworkPolicy {
    let members = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            net_label(&spec.name),
            "member".to_string(),
        )])),
        ..Default::default()
    };
    let peers = NetworkPolicyPeer {
        pod_selector: Some(members.clone()),
        ..Default::default()
    };
    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![peers.clone()]),
        ..Default::default()
    }];
    if !spec.internal {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: "0.0.0.0/0".into(),
                    except: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
    }
    NetworkPolicy {
        metadata: meta(&spec.name, &spec.labels, NETWORK),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(members),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![peers]),
                ..Default::default()
            }]),
            egress: Some(egress),
        }),
    }
}

/// A network marker read back.
pub fn network_info(cm: &ConfigMap) -> NetworkInfo {
    let data = cm.data.clone().unwrap_or_default();
    NetworkInfo {
        name: cm.metadata.name.clone().unwrap_or_default(),
        labels: merged_labels(&cm.metadata),
        internal: data.get("internal").map(String::as_str) == Some("true"),
        subnets: data
            .get("subnet")
            .and_then(|s| s.parse().ok())
            .into_iter()
            .collect(),
    }
}

/// Is the volume a claim (written by its containers) rather than a Secret of files?
pub fn is_claim(spec: &VolumeSpec) -> bool {
    spec.owner.is_some() || !spec.seed_dirs.is_empty()
}

/// Where one key of a volume Secret goes in the volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileItem {
    pub key: String,
    pub path: String,
    pub mode: u32,
    pub uid: u64,
}

/// The Secret that holds a volume's files (none for a label-only marker).
pub fn volume_secret(spec: &VolumeSpec) -> Secret {
    let mut metadata = meta(&spec.name, &spec.labels, VOLUME);
    let items: Vec<FileItem> = spec
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| FileItem {
            key: format!("f{i}"),
            path: f.path.trim_start_matches('/').to_string(),
            mode: f.mode,
            uid: f.uid,
        })
        .collect();
    let data: BTreeMap<String, ByteString> = items
        .iter()
        .zip(&spec.files)
        .map(|(it, f)| (it.key.clone(), ByteString(f.contents.clone())))
        .collect();
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            FILES.into(),
            serde_json::to_string(&items).unwrap_or_default(),
        );
    Secret {
        metadata,
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The items of a volume Secret, from its [`FILES`] annotation.
pub fn secret_items(s: &Secret) -> Vec<FileItem> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FILES))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// The claim of a volume the containers write.
pub fn volume_claim(
    spec: &VolumeSpec,
    storage_class: Option<&str>,
    size: &str,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(&spec.name, &spec.labels, VOLUME),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage_class.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The name of the helper pod that seeds a batch of claims, and of its Secret.
pub fn seed_name(first: &str) -> String {
    format!("{first}-seed")
}

/// The Secret the helper pod reads: the plan and every file's contents.
pub fn seed_secret(name: &str, labels: &Labels, claims: &[&VolumeSpec]) -> Secret {
    use bottle_contract::seed::{SeedFile, SeedVolume, VOLUMES};
    let mut data = BTreeMap::new();
    let mut plan = Vec::new();
    for (i, v) in claims.iter().enumerate() {
        let mut files = Vec::new();
        for (j, f) in v.files.iter().enumerate() {
            let key = format!("v{i}f{j}");
            data.insert(key.clone(), ByteString(f.contents.clone()));
            files.push(SeedFile {
                key,
                path: f.path.trim_start_matches('/').to_string(),
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
            });
        }
        plan.push(SeedVolume {
            dir: format!("{VOLUMES}/{i}"),
            owner: v.owner,
            files,
        });
    }
    data.insert(
        bottle_contract::seed::PLAN_FILE.to_string(),
        ByteString(serde_json::to_vec(&plan).unwrap_or_default()),
    );
    Secret {
        metadata: meta(name, labels, SEED),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// How a helper takes the host trees of its claims (section 9.10): a tar of `bytes`
/// bytes, exec'd in while its main process waits `await_secs` at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trees {
    pub bytes: u64,
    pub await_secs: u64,
}

/// The helper pod that runs `bottle sidecar seed` over `claims` (the sidecar image, root
/// with `CHOWN`, `FOWNER` and `DAC_OVERRIDE` only), then ends. With `trees`, it has a
/// spool (an emptyDir bounded to the tar and its unpacking's margin) and waits for
/// `bottle sidecar seed-trees` before it writes the files.
///
/// It is one container of the seam, as Docker's seeding helper is (section 1.6): its
/// record carries the labels its claims share and `bottle.seeding` naming them, so a
/// helper found by a later run means a seeding that did not finish, and the plan makes
/// those claims anew after removing it. Made before its claims (it waits for them), so
/// no claim exists without it until the seeding is done.
pub fn seed_pod(
    name: &str,
    labels: &Labels,
    image: &str,
    claims: &[&VolumeSpec],
    trees: Option<Trees>,
) -> Pod {
    let mut pod = seed_pod_spec(name, labels, image, claims, trees);
    set_records(
        &mut pod,
        &[Record {
            name: name.into(),
            container: "seed".into(),
            image: image.into(),
            labels: VolumeSpec::seeding_labels(claims),
            networks: Vec::new(),
            aliases: Vec::new(),
            port: None,
        }],
    );
    pod
}

/// The pods of `pods` that mount Secret `secret`, by name.
pub fn mounting(pods: &[Pod], secret: &str) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// The pod annotation whose change makes the kubelet sync a pod now: the last Secret
/// rewritten under it and that Secret's version, `name:version`. No record reads it.
pub const NUDGED: &str = "bottle.nudged";

/// Is `p` a seeding helper ([`seed_pod`])?
pub fn is_seed_pod(p: &Pod) -> bool {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OBJECT))
        .is_some_and(|o| o == SEED)
}

fn seed_pod_spec(
    name: &str,
    labels: &Labels,
    image: &str,
    claims: &[&VolumeSpec],
    trees: Option<Trees>,
) -> Pod {
    use bottle_contract::seed::{MOUNT, SPOOL, VOLUMES};
    let mut volumes = vec![Volume {
        name: "seed".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "seed".into(),
        mount_path: MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    for (i, v) in claims.iter().enumerate() {
        volumes.push(Volume {
            name: format!("v{i}"),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: v.name.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: format!("v{i}"),
            mount_path: format!("{VOLUMES}/{i}"),
            ..Default::default()
        });
    }
    let mut args = vec!["sidecar".to_string(), "seed".to_string()];
    if let Some(t) = trees {
        volumes.push(Volume {
            name: "spool".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity((t.bytes + (1 << 20)).to_string())),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "spool".into(),
            mount_path: SPOOL.into(),
            ..Default::default()
        });
        args.extend(["--await-trees".to_string(), t.await_secs.to_string()]);
    }
    Pod {
        metadata: meta(name, labels, SEED),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "seed".into(),
                image: Some(image.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                args: Some(args),
                security_context: Some(pod::hardened(0, 0, &["CHOWN", "FOWNER", "DAC_OVERRIDE"])),
                volume_mounts: Some(mounts),
                ..Default::default()
            }],
            volumes: Some(volumes),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A volume (Secret or claim) read back.
pub fn volume_info(meta: &ObjectMeta) -> VolumeInfo {
    VolumeInfo {
        name: meta.name.clone().unwrap_or_default(),
        labels: merged_labels(meta),
    }
}

/// The environment Secret of a container: `KEY=value` pairs as keys and values.
pub fn env_secret(name: &str, spec: &ContainerSpec) -> Secret {
    let mut labels = spec.labels.clone();
    // Only the selecting labels: the spec hash names the pod, which owns the Secret.
    labels.retain(|k, _| SELECTING.contains(&k.as_str()));
    let data: BTreeMap<String, ByteString> = spec
        .env
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), ByteString(v.as_bytes().to_vec()))
        })
        .collect();
    Secret {
        metadata: meta(name, &labels, ENV),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The name of a container's environment Secret.
pub fn env_secret_name(container: &str) -> String {
    format!("{container}-env")
}

/// How a volume a container mounts is backed, as found in the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A Secret of files.
    Files(Vec<FileItem>),
    /// A PersistentVolumeClaim.
    Claim,
}

/// A container of a pod as the seam knows it, kept in the pod's [`CONTAINERS`]
/// annotation so listing gives back the seam's names, labels and networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The seam's container name.
    pub name: String,
    /// The container's name inside the pod (its node).
    pub container: String,
    pub image: String,
    pub labels: Labels,
    pub networks: Vec<String>,
    pub aliases: Vec<String>,
    /// The port it listens on (`BOTTLE_LISTEN`), for the agent's endpoints.
    pub port: Option<u16>,
}

/// A pod of the same bottle already running: its address and what it answers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub records: Vec<Record>,
}

/// Why a spec cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("container {container} mounts volume {volume}, which does not exist")]
    MissingVolume { container: String, volume: String },
    #[error("container {container}: user {user:?} is not uid[:gid]")]
    User { container: String, user: String },
    #[error("pod {pod} holds no container {container}")]
    NotInPod { pod: String, container: String },
}

/// The records of a pod, from its annotation.
pub fn records(p: &Pod) -> Vec<Record> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONTAINERS))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// The name inside pod `p` of the seam's container `name` (its node), if `p` holds it.
pub fn container_in(p: &Pod, name: &str) -> Option<String> {
    records(p)
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| r.container)
}

fn set_records(p: &mut Pod, records: &[Record]) {
    p.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            CONTAINERS.into(),
            serde_json::to_string(records).unwrap_or_default(),
        );
}

/// The containers of a pod read back, one per record; the `stale` ones not running.
pub fn container_infos(p: &Pod, stale: &[String]) -> Vec<ContainerInfo> {
    let status = p.status.clone().unwrap_or_default();
    let pod_running = status.phase.as_deref() == Some("Running");
    let running = |c: &str| {
        status
            .container_statuses
            .iter()
            .flatten()
            .any(|s| s.name == c && s.state.as_ref().is_some_and(|st| st.running.is_some()))
    };
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second().max(0) as u64);
    records(p)
        .into_iter()
        .map(|r| ContainerInfo {
            state: if pod_running && running(&r.container) && !stale.contains(&r.name) {
                ContainerState::Running
            } else {
                ContainerState::NotRunning
            },
            name: r.name,
            id: p.metadata.uid.clone().unwrap_or_default(),
            image: r.image,
            labels: r.labels,
            networks: r.networks,
            created,
        })
        .collect()
}

fn parse_user(spec: &ContainerSpec) -> Result<(i64, i64), RenderError> {
    let bad = || RenderError::User {
        container: spec.name.clone(),
        user: spec.user.clone(),
    };
    let (u, g) = spec
        .user
        .split_once(':')
        .unwrap_or((&spec.user, &spec.user));
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

fn listen_port(spec: &ContainerSpec) -> Option<u16> {
    spec.env
        .iter()
        .find_map(|kv| kv.strip_prefix("BOTTLE_LISTEN="))
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
}

fn record(spec: &ContainerSpec) -> Record {
    Record {
        name: spec.name.clone(),
        container: container_name(spec),
        image: spec.image.clone(),
        labels: spec.labels.clone(),
        networks: spec.networks.clone(),
        aliases: spec.aliases.clone(),
        port: listen_port(spec),
    }
}

/// The container's name inside its pod: its node (`egress`, `agent-net`, `agent`).
fn container_name(spec: &ContainerSpec) -> String {
    spec.labels
        .get(labels::NODE)
        .filter(|n| valid_label_value(n) && !n.is_empty())
        .cloned()
        .unwrap_or_else(|| "main".into())
}

/// The image reference the node pulls: the seam's `repo:tag` under the registry.
pub fn pushed_reference(registry: &str, tag: &str) -> String {
    format!("{}/{tag}", registry.trim_end_matches('/'))
}

/// The pod volumes and mounts of one container; volume names are `<prefix><i>`.
fn volumes_of(
    spec: &ContainerSpec,
    prefix: &str,
    backing: &BTreeMap<String, Backing>,
) -> Result<(Vec<Volume>, Vec<VolumeMount>), RenderError> {
    let mut volumes: Vec<Volume> = Vec::new();
    let mut mounts = Vec::new();
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        match m {
            Mount::Volume {
                name,
                target,
                read_only,
            } => {
                let vol = match by_name.get(name) {
                    Some(v) => v.clone(),
                    None => {
                        let vol = format!("{prefix}{i}");
                        let source =
                            backing
                                .get(name)
                                .ok_or_else(|| RenderError::MissingVolume {
                                    container: spec.name.clone(),
                                    volume: name.clone(),
                                })?;
                        volumes.push(match source {
                            Backing::Files(items) => Volume {
                                name: vol.clone(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(name.clone()),
                                    items: Some(items.iter().map(key_to_path).collect()),
                                    default_mode: Some(0o444),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            Backing::Claim => Volume {
                                name: vol.clone(),
                                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                    claim_name: name.clone(),
                                    read_only: Some(*read_only),
                                }),
                                ..Default::default()
                            },
                        });
                        by_name.insert(name.clone(), vol.clone());
                        vol
                    }
                };
                let ro = *read_only || matches!(backing.get(name), Some(Backing::Files(_)));
                mounts.push(VolumeMount {
                    name: vol,
                    mount_path: target.clone(),
                    read_only: Some(ro),
                    ..Default::default()
                });
            }
            Mount::Tmpfs { target, size_bytes } => {
                let vol = format!("{prefix}{i}");
                volumes.push(Volume {
                    name: vol.clone(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(Quantity(size_bytes.to_string())),
                    }),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name: vol,
                    mount_path: target.clone(),
                    ..Default::default()
                });
            }
        }
    }
    for (j, dev) in spec.devices.iter().enumerate() {
        let vol = format!("{prefix}d{j}");
        volumes.push(Volume {
            name: vol.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dev.clone(),
                type_: Some("CharDevice".into()),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vol,
            mount_path: dev.clone(),
            ..Default::default()
        });
    }
    Ok((volumes, mounts))
}

/// A Secret file's item: its mode, with the owner's read given to the pod's group
/// (`fsGroup`, the container's group) when the file belongs to a non-root user, since a
/// Secret's files are owned by root.
fn key_to_path(it: &FileItem) -> KeyToPath {
    let mut mode = it.mode & 0o777;
    if it.uid != 0 {
        mode |= (mode & 0o400) >> 3;
    }
    KeyToPath {
        key: it.key.clone(),
        path: it.path.clone(),
        mode: Some(mode as i32),
    }
}

fn resources(spec: &ContainerSpec) -> Option<ResourceRequirements> {
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if spec.memory > 0 {
        limits.insert("memory".to_string(), Quantity(spec.memory.to_string()));
        requests.insert("memory".to_string(), Quantity(spec.memory.to_string()));
    }
    if spec.nano_cpus > 0 {
        limits.insert(
            "cpu".to_string(),
            Quantity(format!("{}m", (spec.nano_cpus / 1_000_000).max(1))),
        );
        // A limit, not a reservation (as under Docker): a small request keeps a node
        // from refusing bottles for CPU it is not using.
        requests.insert("cpu".to_string(), Quantity("10m".into()));
    }
    (!limits.is_empty()).then(|| ResourceRequirements {
        limits: Some(limits),
        requests: Some(requests),
        ..Default::default()
    })
}

/// `spec` as it runs on Kubernetes. pipelock's gateway sink (`GATEWAY_ENV`) takes the
/// gateway address of its Docker network; in a pod that address is the node's pod
/// network's, which must not be taken from every pod on the node. So pipelock runs as
/// it does without the sink under Docker: as the sidecar user, with no capability.
pub fn on_kubernetes(spec: &ContainerSpec) -> std::borrow::Cow<'_, ContainerSpec> {
    let gateway = format!("{}=", bottle_contract::pipelock::GATEWAY_ENV);
    if !spec.env.iter().any(|e| e.starts_with(&gateway)) {
        return std::borrow::Cow::Borrowed(spec);
    }
    let mut s = spec.clone();
    s.env.retain(|e| !e.starts_with(&gateway));
    let uid = bottle_contract::ca::SIDECAR_UID;
    s.user = format!("{uid}:{uid}");
    s.cap_add.clear();
    std::borrow::Cow::Owned(s)
}

/// One container of a pod, with its volumes (named `<prefix><i>`).
fn container(
    spec: &ContainerSpec,
    registry: &str,
    prefix: &str,
    backing: &BTreeMap<String, Backing>,
) -> Result<(Container, Vec<Volume>), RenderError> {
    let spec = &*on_kubernetes(spec);
    let (uid, gid) = parse_user(spec)?;
    let (volumes, mounts) = volumes_of(spec, prefix, backing)?;
    let c = Container {
        name: container_name(spec),
        image: Some(pushed_reference(registry, &spec.image)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env_from: (!spec.env.is_empty()).then(|| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: env_secret_name(&spec.name),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        working_dir: spec.working_dir.clone(),
        security_context: Some(pod::hardened(
            uid,
            gid,
            &spec.cap_add.iter().map(String::as_str).collect::<Vec<_>>(),
        )),
        resources: resources(spec),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    };
    Ok((c, volumes))
}

/// The names of the peers' containers that a pod of `node` depends on (section 2's
/// table), for `/etc/hosts`, one entry per address. Only dependencies: two pods never
/// name each other, so a pod made anew (a new address) makes only its dependents stale.
fn peer_aliases(node: &str, peers: &[Peer]) -> Vec<HostAlias> {
    let node = NodeKind::parse(node);
    peers
        .iter()
        .filter_map(|p| {
            let names: Vec<String> = p
                .records
                .iter()
                .filter(|r| {
                    let theirs = r.labels.get(labels::NODE).and_then(|n| NodeKind::parse(n));
                    matches!((node, theirs), (Some(a), Some(b)) if a.depends_on(b))
                })
                .flat_map(|r| r.aliases.clone())
                .collect();
            (!names.is_empty()).then(|| HostAlias {
                ip: p.ip.to_string(),
                hostnames: Some(names),
            })
        })
        .collect()
}

/// The pods of `bottle` in `pods` other than `except` that have an address, as peers.
pub fn peers_of(pods: &[Pod], bottle: &str, except: &str) -> Vec<Peer> {
    pods.iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::BOTTLE))
                .map(String::as_str)
                == Some(bottle)
                && p.metadata.name.as_deref() != Some(except)
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some(Peer {
                ip,
                records: records(p),
            })
        })
        .collect()
}

/// Every container of `pods` read back, a pod that names a peer at an old address
/// ([`stale`]) as not running.
pub fn all_container_infos(pods: &[Pod]) -> Vec<ContainerInfo> {
    pods.iter()
        .flat_map(|p| {
            let bottle = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::BOTTLE))
                .cloned()
                .unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let peers = peers_of(pods, &bottle, &name);
            container_infos(p, &stale(p, &peers))
        })
        .collect()
}

/// The node of a pod: its holder's (first record's).
fn pod_node(p: &Pod) -> String {
    records(p)
        .first()
        .and_then(|r| r.labels.get(labels::NODE).cloned())
        .unwrap_or_default()
}

/// Is the pod locked by `netlock` (the agent's pod)?
fn locked(p: &Pod) -> bool {
    p.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .any(|c| c.name == pod::NETLOCK)
}

/// `p` as a new object with its peers' addresses as they are now: its `hostAliases`,
/// and for the agent's pod the endpoints `netlock` lets through.
pub fn refresh(p: &Pod, peers: &[Peer]) -> Pod {
    let mut out = fresh(p);
    let is_locked = locked(p);
    let node = pod_node(p);
    let eps = endpoints(peers);
    if let Some(s) = out.spec.as_mut() {
        s.host_aliases = Some(if is_locked {
            pod::host_aliases(&eps)
        } else {
            peer_aliases(&node, peers)
        });
    }
    if is_locked {
        let image = out
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .find(|c| c.name == pod::NETLOCK)
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        pod::set_lock(&mut out, &image, &eps);
    }
    out
}

/// The names `p` gives its peers that point at an address they no longer have (made
/// anew, or gone).
fn moved_names(p: &Pod, peers: &[Peer]) -> Vec<String> {
    let now: BTreeMap<&str, String> = peers
        .iter()
        .flat_map(|peer| {
            peer.records
                .iter()
                .flat_map(|r| r.aliases.iter())
                .map(|a| (a.as_str(), peer.ip.to_string()))
        })
        .collect();
    p.spec
        .iter()
        .flat_map(|s| s.host_aliases.iter().flatten())
        .flat_map(|h| {
            h.hostnames
                .iter()
                .flatten()
                .filter(|n| now.get(n.as_str()) != Some(&h.ip))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The containers of `p` (seam names) that depend on a peer `p` names at an address it
/// no longer has: they are listed as not running, so the plan starts them again, which
/// makes their pod anew ([`refresh`]ed). A name is a peer's node (`egress`), so only the
/// containers whose node depends on it are stale: in the agent's pod the agent, not
/// agent-net.
pub fn stale(p: &Pod, peers: &[Peer]) -> Vec<String> {
    let moved: Vec<NodeKind> = moved_names(p, peers)
        .iter()
        .filter_map(|n| NodeKind::parse(n))
        .collect();
    records(p)
        .into_iter()
        .filter(|r| {
            let node = r.labels.get(labels::NODE).and_then(|n| NodeKind::parse(n));
            node.is_some_and(|a| moved.iter().any(|b| a.depends_on(*b)))
        })
        .map(|r| r.name)
        .collect()
}

/// The sidecars the agent may reach: each peer container of node egress, git-gate or
/// supervise that listens on a port, at its pod's address.
pub fn endpoints(peers: &[Peer]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for p in peers {
        for r in &p.records {
            let node = r.labels.get(labels::NODE).map(String::as_str);
            if let (Some("egress" | "git-gate" | "supervise"), Some(port)) = (node, r.port) {
                for host in &r.aliases {
                    out.push(Endpoint {
                        host: host.clone(),
                        addr: SocketAddrV4::new(p.ip, port),
                    });
                }
            }
        }
    }
    out
}

/// The pod of one container (none joins it yet): `spec`'s container, its volumes, the
/// peers' names, hardening. Its name is the container's.
pub fn render_pod(
    spec: &ContainerSpec,
    registry: &str,
    backing: &BTreeMap<String, Backing>,
    peers: &[Peer],
) -> Result<Pod, RenderError> {
    let (c, volumes) = container(spec, registry, "v", backing)?;
    let (labels, annotations) = split_labels(&spec.labels);
    let (_, gid) = parse_user(&on_kubernetes(spec))?;
    let mut p = Pod {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![c],
            volumes: (!volumes.is_empty()).then_some(volumes),
            runtime_class_name: spec.runtime.clone().filter(|r| r != "runc"),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            share_process_namespace: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            // The node's resolver: pipelock and git-gate resolve outside names; the
            // bottle's own names come from `hostAliases`.
            dns_policy: Some("Default".into()),
            host_aliases: Some(peer_aliases(&container_name(spec), peers)),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(5),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                fs_group: Some(if gid == 0 {
                    bottle_contract::ca::SIDECAR_UID as i64
                } else {
                    gid
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    set_records(&mut p, &[record(spec)]);
    label_networks(&mut p);
    Ok(p)
}

/// `holder`'s pod (as read from the cluster) with `joiner` added: a container that
/// shares its network namespace (`network_of`). When the joiner is the agent, the pod
/// becomes the agent's pod (section 9.2): `netlock` first, locked to the sidecars among
/// `peers`, loopback DNS, the sidecars' names only, the agent hardened as
/// [`pod::agent_pod`] renders it.
pub fn join_pod(
    holder: &Pod,
    joiner: &ContainerSpec,
    registry: &str,
    backing: &BTreeMap<String, Backing>,
    peers: &[Peer],
) -> Result<Pod, RenderError> {
    let mut p = fresh(holder);
    let (mut c, volumes) = container(joiner, registry, "j", backing)?;
    let mut recs = records(holder);
    recs.push(record(joiner));
    set_records(&mut p, &recs);
    let Some(s) = p.spec.as_mut() else {
        return Ok(p);
    };
    s.volumes.get_or_insert_with(Vec::new).extend(volumes);
    if container_name(joiner) == pod::AGENT {
        let endpoints = endpoints(peers);
        let sidecar_image = s
            .containers
            .first()
            .and_then(|h| h.image.clone())
            .unwrap_or_default();
        let shape = pod::agent_pod(&AgentPod {
            name: String::new(),
            labels: Labels::new(),
            image: String::new(),
            sidecar_image: sidecar_image.clone(),
            command: Vec::new(),
            endpoints: endpoints.clone(),
            runtime_class: None,
            memory: None,
        });
        let shape = shape.spec.unwrap_or_default();
        let agent = shape.containers.into_iter().next().unwrap_or_default();
        c.security_context = agent.security_context.map(|mut sc| {
            // The agent's own uid and gid, hardened as agent_pod makes it.
            if let Ok((u, g)) = parse_user(joiner) {
                sc.run_as_user = Some(u);
                sc.run_as_group = Some(g);
                sc.run_as_non_root = Some(u != 0);
            }
            sc
        });
        s.init_containers = None;
        // The agent's own group, never the sidecars': its supplementary group is this.
        if let (Some(sc), Ok((_, gid))) = (s.security_context.as_mut(), parse_user(joiner)) {
            sc.fs_group = Some(gid);
        }
        s.dns_policy = shape.dns_policy;
        s.dns_config = shape.dns_config;
        s.host_aliases = shape.host_aliases;
        if joiner.runtime.as_deref().is_some_and(|r| r != "runc") {
            s.runtime_class_name = joiner.runtime.clone();
        }
        // The agent's pod is labelled as the agent's (its spec hash names the agent).
        let (labels, annotations) = split_labels(&joiner.labels);
        p.metadata.labels = Some(labels);
        let a = p.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.extend(annotations);
        // After the RuntimeClass: under one the node writes the lock (section 9.5).
        pod::set_lock(&mut p, &sidecar_image, &endpoints);
    }
    if let Some(s) = p.spec.as_mut() {
        s.containers.push(c);
    }
    label_networks(&mut p);
    Ok(p)
}

/// `p` with `container` (a seam name) taken out; `None` when it was the pod's last (or
/// its holder: the pod goes with it).
pub fn strip_pod(p: &Pod, container: &str) -> Result<Option<Pod>, RenderError> {
    let recs = records(p);
    let Some(pos) = recs.iter().position(|r| r.name == container) else {
        return Err(RenderError::NotInPod {
            pod: p.metadata.name.clone().unwrap_or_default(),
            container: container.into(),
        });
    };
    if pos == 0 {
        return Ok(None);
    }
    let gone = recs[pos].container.clone();
    let mut keep = recs.clone();
    keep.remove(pos);
    let mut out = fresh(p);
    set_records(&mut out, &keep);
    let holder = &keep[0];
    let (labels, _) = split_labels(&holder.labels);
    out.metadata.labels = Some(labels);
    if gone == pod::AGENT {
        pod::clear_lock(&mut out);
    }
    if let Some(s) = out.spec.as_mut() {
        s.containers.retain(|c| c.name != gone);
        if gone == pod::AGENT {
            s.dns_policy = Some("Default".into());
            s.dns_config = None;
            // The class was the agent's (`join_pod`); a sidecar asks for none.
            s.runtime_class_name = None;
        }
        // Its volumes go with it: a claim still named here would be held (its
        // protection finalizer) by a pod that no longer uses it.
        let used: std::collections::BTreeSet<&str> = s
            .containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .map(|m| m.name.as_str())
            .collect();
        let kept: Option<Vec<Volume>> = s.volumes.as_ref().map(|vs| {
            vs.iter()
                .filter(|v| used.contains(v.name.as_str()))
                .cloned()
                .collect()
        });
        s.volumes = kept.filter(|v| !v.is_empty());
    }
    label_networks(&mut out);
    Ok(Some(out))
}

/// `p` as a new object: the same name, labels, annotations and spec, nothing the server
/// filled in (uid, status, node, resource version).
pub fn fresh(p: &Pod) -> Pod {
    let mut spec = p.spec.clone().unwrap_or_default();
    spec.node_name = None;
    Pod {
        metadata: ObjectMeta {
            name: p.metadata.name.clone(),
            labels: p.metadata.labels.clone(),
            annotations: p.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

/// What `verify` reads of container `container` (its name inside the pod) of `p` on the
/// host side, as the Docker engine reports it of a container: the runtime it runs under
/// (its pod's RuntimeClass, else `runc`: bottle sets none, so the node's default
/// handler runs it) and the seam's volumes it mounts (the Secrets and claims behind its
/// mounts), sorted, once each.
pub fn container_details(p: &Pod, container: &str) -> (String, Vec<String>) {
    let spec = p.spec.clone().unwrap_or_default();
    let runtime = spec
        .runtime_class_name
        .clone()
        .unwrap_or_else(|| "runc".into());
    let mounts: Vec<String> = spec
        .containers
        .iter()
        .filter(|c| c.name == container)
        .flat_map(|c| c.volume_mounts.iter().flatten().map(|m| m.name.clone()))
        .collect();
    let mut volumes: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| mounts.contains(&v.name))
        .filter_map(|v| {
            v.secret
                .as_ref()
                .and_then(|s| s.secret_name.clone())
                .or_else(|| {
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|c| c.claim_name.clone())
                })
        })
        .collect();
    volumes.sort();
    volumes.dedup();
    (runtime, volumes)
}
