//! The [`Engine`](super::Engine) on the real Docker engine, through bollard.
//!
//! [`Docker`] talks to the local daemon over its unix socket (`DOCKER_HOST=unix://…` or
//! `/var/run/docker.sock`) with a fixed API version, 1.41 (Docker 20.10), and never
//! negotiates: a no-op reconcile costs exactly one list request per object type. Every
//! request is counted ([`Docker::api_calls`]) so benchmarks and tests can assert on it.
//!
//! Behaviour worth knowing:
//! - Lists filter by label on the server (`filters={"label":[…]}`), one request each.
//! - Removals are idempotent: a 404 (and for images a 409, "in use") is success.
//! - Networks are created with `CheckDuplicate` (the 1.41 daemon otherwise happily
//!   creates a second network of the same name); bollard's 1.53 model lacks the field,
//!   so the request body is rewritten for that one request.
//! - Containers are hardened here only in the ways every bottle container shares
//!   (`cap_drop ALL`, `no-new-privileges`, read-only rootfs, swap = memory, no restart
//!   policy); everything else comes resolved in the [`ContainerSpec`].
//! - Volumes with files are seeded through a helper container that is created, never
//!   started: the files go in with `PUT /containers/{id}/archive`, then it is removed.
//! - Errors map to [`EngineError`]: 404 -> `NotFound`, 409 -> `Conflict`, transport
//!   failures -> `Unreachable`, anything else -> `Api`.
//! - Container env values and seeded file contents are never logged.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount as BollardMount, MountTmpfsOptions,
    MountType, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RemoveVolumeOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::{ClientVersion, body_full};
use futures_util::StreamExt;

use super::{
    BuildSpec, ContainerInfo, ContainerSpec, ContainerState, Engine, EngineError, ImageInfo,
    Labels, Mount, NetworkInfo, NetworkSpec, VolumeFile, VolumeInfo, VolumeSpec,
};

/// The API version spoken: Docker 20.10. Features of later versions are not used.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Per-request timeout (until the response headers arrive), in seconds.
const TIMEOUT_SECS: u64 = 120;

/// The socket used when `DOCKER_HOST` is not set.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where a seeding helper container mounts the volume being seeded.
const SEED_MOUNT: &str = "/seed";

/// Label marking a seeding helper container.
const SEED_LABEL: &str = "bottle.seed";

/// How many lines of build output an [`EngineError::Build`] carries.
const BUILD_LOG_LINES: usize = 20;

/// The Docker engine, reached over its local unix socket.
#[derive(Clone, Debug)]
pub struct Docker {
    client: bollard::Docker,
    socket: String,
    calls: Arc<AtomicU64>,
}

impl Docker {
    /// Connect to the socket named by `DOCKER_HOST` (`unix://` only), else
    /// `/var/run/docker.sock`. Makes no request; a missing socket is
    /// [`EngineError::Unreachable`] right here.
    pub fn connect() -> Result<Docker, EngineError> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => Docker::connect_to(&socket_path(&host)?),
            _ => Docker::connect_to(DEFAULT_SOCKET),
        }
    }

    /// Connect to the unix socket at `socket` (a path, or a `unix://` URL).
    pub fn connect_to(socket: &str) -> Result<Docker, EngineError> {
        let socket = socket_path(socket)?;
        let calls = Arc::new(AtomicU64::new(0));
        let client = bollard::Docker::connect_with_unix(&socket, TIMEOUT_SECS, &API_VERSION)
            .map_err(|e| unreachable(&socket, &e))?;
        let client = client.with_request_modifier(counting(Arc::clone(&calls)));
        Ok(Docker {
            client,
            socket,
            calls,
        })
    }

    /// How many API requests this client (and its clones) has made.
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Check that the daemon answers (`GET /_ping`): one request.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.client
            .ping()
            .await
            .map(drop)
            .map_err(|e| self.error(e, "ping", "engine", &self.socket))
    }

    /// Map a bollard error of operation `op` on object `kind` `name`.
    fn error(
        &self,
        e: BollardError,
        op: &'static str,
        kind: &'static str,
        name: &str,
    ) -> EngineError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => EngineError::NotFound {
                kind,
                name: name.to_owned(),
            },
            BollardError::DockerResponseServerError {
                status_code: 409, ..
            } => EngineError::Conflict {
                kind,
                name: name.to_owned(),
            },
            BollardError::DockerResponseServerError { message, .. } => EngineError::Api {
                op,
                name: name.to_owned(),
                message,
            },
            e if is_transport(&e) => unreachable(&self.socket, &e),
            e => EngineError::Api {
                op,
                name: name.to_owned(),
                message: chain(&e),
            },
        }
    }

    /// Like [`Docker::error`], but 404 is success.
    fn gone_ok(
        &self,
        r: Result<(), BollardError>,
        op: &'static str,
        kind: &'static str,
        name: &str,
    ) -> Result<(), EngineError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) => match self.error(e, op, kind, name) {
                EngineError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Force-remove a container and its anonymous volumes.
    async fn force_remove(&self, name: &str) -> Result<(), BollardError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        self.client.remove_container(name, Some(options)).await
    }

    /// Seed volume `spec.name` with `spec.files` through a created, never started helper.
    async fn seed_volume(&self, spec: &VolumeSpec) -> Result<(), EngineError> {
        let archive = seed_tar(&spec.files).map_err(|message| EngineError::Api {
            op: "seed volume",
            name: spec.name.clone(),
            message,
        })?;
        let helper = format!("{}-seed-{:08x}", spec.name, rand::random::<u32>());
        let mut labels = to_map(&spec.labels);
        labels.insert(SEED_LABEL.to_owned(), "true".to_owned());
        let body = ContainerCreateBody {
            image: Some(spec.seed_image.clone()),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                mounts: Some(vec![BollardMount {
                    typ: Some(MountType::VOLUME),
                    source: Some(spec.name.clone()),
                    target: Some(SEED_MOUNT.to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&helper)
            .build();
        self.client
            .create_container(Some(options), body)
            .await
            .map_err(|e| {
                match self.error(e, "create seed container", "image", &spec.seed_image) {
                    EngineError::Conflict { .. } => EngineError::Conflict {
                        kind: "container",
                        name: helper.clone(),
                    },
                    e => e,
                }
            })?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(SEED_MOUNT)
            .build();
        let uploaded = self
            .client
            .upload_to_container(&helper, Some(options), body_full(archive.into()))
            .await
            .map_err(|e| self.error(e, "upload seed files", "volume", &spec.name));
        let removed = self.gone_ok(
            self.force_remove(&helper).await,
            "remove seed container",
            "container",
            &helper,
        );
        uploaded.and(removed)
    }

    /// Connect the extra networks of `spec` to container `id`, then start it.
    async fn connect_and_start(&self, id: &str, spec: &ContainerSpec) -> Result<(), EngineError> {
        for network in spec.networks.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: id.to_owned(),
                endpoint_config: Some(endpoint(&spec.aliases)),
            };
            self.client
                .connect_network(network, request)
                .await
                .map_err(|e| self.error(e, "connect network", "network", network))?;
        }
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| self.error(e, "start container", "container", &spec.name))
    }
}

impl Engine for Docker {
    async fn list_networks(&self, labels: &[String]) -> Result<Vec<NetworkInfo>, EngineError> {
        let options = ListNetworksOptionsBuilder::default()
            .filters(&label_filter(labels))
            .build();
        let networks = self
            .client
            .list_networks(Some(options))
            .await
            .map_err(|e| self.error(e, "list networks", "network", ""))?;
        Ok(networks
            .into_iter()
            .map(|n| NetworkInfo {
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default().into_iter().collect(),
                internal: n.internal.unwrap_or(false),
            })
            .collect())
    }

    async fn list_volumes(&self, labels: &[String]) -> Result<Vec<VolumeInfo>, EngineError> {
        let options = ListVolumesOptionsBuilder::default()
            .filters(&label_filter(labels))
            .build();
        let response = self
            .client
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.error(e, "list volumes", "volume", ""))?;
        Ok(response
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                labels: v.labels.into_iter().collect(),
            })
            .collect())
    }

    async fn list_containers(&self, labels: &[String]) -> Result<Vec<ContainerInfo>, EngineError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&label_filter(labels))
            .build();
        let containers = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error(e, "list containers", "container", ""))?;
        Ok(containers
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .unwrap_or_default()
                    .into_iter()
                    .next()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                let mut networks: Vec<String> = c
                    .network_settings
                    .and_then(|s| s.networks)
                    .map(|n| n.into_keys().collect())
                    .unwrap_or_default();
                networks.sort();
                let state = match c.state {
                    Some(bollard::models::ContainerSummaryStateEnum::RUNNING) => {
                        ContainerState::Running
                    }
                    _ => ContainerState::NotRunning,
                };
                ContainerInfo {
                    name,
                    id: c.id.unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    state,
                    networks,
                }
            })
            .collect())
    }

    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageInfo>, EngineError> {
        let options = ListImagesOptionsBuilder::default()
            .filters(&label_filter(labels))
            .build();
        let images = self
            .client
            .list_images(Some(options))
            .await
            .map_err(|e| self.error(e, "list images", "image", ""))?;
        let mut out = Vec::new();
        for image in images {
            let labels: Labels = image.labels.into_iter().collect();
            for tag in image.repo_tags {
                if tag != "<none>:<none>" {
                    out.push(ImageInfo {
                        tag,
                        id: image.id.clone(),
                        labels: labels.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<(), EngineError> {
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("bridge".to_owned()),
            internal: Some(spec.internal),
            labels: Some(to_map(&spec.labels)),
            ..Default::default()
        };
        // API 1.41 creates a second network of the same name unless `CheckDuplicate`
        // is set, and bollard's model (API 1.53) no longer has that field: send the
        // same body with it added, through a clone whose modifier swaps the body.
        let mut json = serde_json::to_value(&request).map_err(|e| EngineError::Api {
            op: "create network",
            name: spec.name.clone(),
            message: e.to_string(),
        })?;
        if let Some(object) = json.as_object_mut() {
            object.insert("CheckDuplicate".to_owned(), serde_json::Value::Bool(true));
        }
        let body = json.to_string().into_bytes();
        let counter = Arc::clone(&self.calls);
        let client = self.client.clone().with_request_modifier(move |req| {
            counter.fetch_add(1, Ordering::Relaxed);
            req.map(|_| body_full(body.clone().into()))
        });
        client
            .create_network(request)
            .await
            .map(drop)
            .map_err(|e| self.error(e, "create network", "network", &spec.name))
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        let r = self.client.remove_network(name).await;
        self.gone_ok(r, "remove network", "network", name)
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<(), EngineError> {
        let request = VolumeCreateRequest {
            name: Some(spec.name.clone()),
            labels: Some(to_map(&spec.labels)),
            ..Default::default()
        };
        // Docker answers an existing name with 201 and the old volume: a seeded volume
        // must be new, so it is up to the caller to create only what is missing.
        self.client
            .create_volume(request)
            .await
            .map_err(|e| self.error(e, "create volume", "volume", &spec.name))?;
        if spec.files.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.seed_volume(spec).await {
            // A half-seeded volume would look created and never be seeded again.
            let _ = self.remove_volume(&spec.name).await;
            return Err(e);
        }
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let options = RemoveVolumeOptionsBuilder::default().build();
        let r = self.client.remove_volume(name, Some(options)).await;
        self.gone_ok(r, "remove volume", "volume", name)
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        let body = container_body(spec);
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = match self.client.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => {
                // The image, or the first network, is missing.
                let (kind, name) = match spec.networks.first() {
                    Some(net) if message.contains("network") => ("network", net.clone()),
                    _ => ("image", spec.image.clone()),
                };
                return Err(EngineError::NotFound { kind, name });
            }
            Err(e) => return Err(self.error(e, "create container", "container", &spec.name)),
        };
        if let Err(e) = self.connect_and_start(&created.id, spec).await {
            // Leave nothing half-made behind; the first error is the one that matters.
            let _ = self.force_remove(&created.id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        self.client
            .start_container(name, None)
            .await
            .map_err(|e| self.error(e, "start container", "container", name))
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        let r = self.force_remove(name).await;
        self.gone_ok(r, "remove container", "container", name)
    }

    async fn build_image(&self, spec: &BuildSpec) -> Result<(), EngineError> {
        let options = BuildImageOptionsBuilder::default()
            .t(&spec.tag)
            .dockerfile(&spec.dockerfile)
            .labels(&to_map(&spec.labels))
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream = self.client.build_image(
            options,
            None,
            Some(body_full(spec.context_tar.clone().into())),
        );
        let mut log = Tail::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                        log.push(text);
                    }
                }
                Err(e) if is_transport(&e) => return Err(unreachable(&self.socket, &e)),
                Err(BollardError::DockerStreamError { error }) => {
                    log.push(&error);
                    return Err(EngineError::Build {
                        tag: spec.tag.clone(),
                        log: log.text(),
                    });
                }
                Err(BollardError::DockerResponseServerError { message, .. }) => {
                    log.push(&message);
                    return Err(EngineError::Build {
                        tag: spec.tag.clone(),
                        log: log.text(),
                    });
                }
                Err(e) => {
                    log.push(&chain(&e));
                    return Err(EngineError::Build {
                        tag: spec.tag.clone(),
                        log: log.text(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn remove_image(&self, tag: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(false)
            .build();
        match self.client.remove_image(tag, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) => match self.error(e, "remove image", "image", tag) {
                EngineError::NotFound { .. } | EngineError::Conflict { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn runtimes(&self) -> Result<Vec<String>, EngineError> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| self.error(e, "info", "engine", &self.socket))?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }
}

/// A request modifier that counts requests.
fn counting(
    calls: Arc<AtomicU64>,
) -> impl Fn(bollard::BollardRequest) -> bollard::BollardRequest + Send + Sync + 'static {
    move |req| {
        calls.fetch_add(1, Ordering::Relaxed);
        req
    }
}

/// The socket path in `host`: `unix:///path` or a bare absolute path.
fn socket_path(host: &str) -> Result<String, EngineError> {
    if let Some(path) = host.strip_prefix("unix://") {
        Ok(path.to_owned())
    } else if host.starts_with('/') {
        Ok(host.to_owned())
    } else {
        Err(EngineError::Unreachable(format!(
            "DOCKER_HOST={host} is not supported: bottle talks to a local unix socket \
             (unix:///path/to/docker.sock)"
        )))
    }
}

/// Whether `e` is a failure to talk to the daemon at all, rather than an answer.
fn is_transport(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::SocketNotFoundError(_)
            | BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
    )
}

/// An [`EngineError::Unreachable`] naming the socket and what to check.
fn unreachable(socket: &str, e: &BollardError) -> EngineError {
    let cause = match e {
        BollardError::SocketNotFoundError(_) => "no such socket".to_owned(),
        BollardError::RequestTimeoutError => format!("no answer within {TIMEOUT_SECS}s"),
        e => chain(e),
    };
    EngineError::Unreachable(format!(
        "{socket}: {cause} (is the Docker daemon running and may this user use it? \
         set DOCKER_HOST=unix:///path/to/docker.sock for another socket)"
    ))
}

/// `e` and its sources, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// `{"label": [...]}`, or no filter for no labels.
fn label_filter(labels: &[String]) -> HashMap<&'static str, Vec<String>> {
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        filters.insert("label", labels.to_vec());
    }
    filters
}

fn to_map(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// An endpoint with DNS `aliases`.
fn endpoint(aliases: &[String]) -> EndpointSettings {
    EndpointSettings {
        aliases: (!aliases.is_empty()).then(|| aliases.to_vec()),
        ..Default::default()
    }
}

/// Some(v) for a positive limit, None (engine default: unlimited) otherwise.
fn limit(v: i64) -> Option<i64> {
    (v > 0).then_some(v)
}

/// The create body for `spec`: the shared hardening plus the spec's own settings, with
/// the first network attached (API 1.41 takes one network at create).
fn container_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mounts = spec
        .mounts
        .iter()
        .map(|m| match m {
            Mount::Volume {
                name,
                target,
                read_only,
            } => BollardMount {
                typ: Some(MountType::VOLUME),
                source: Some(name.clone()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                ..Default::default()
            },
            Mount::Tmpfs { target, size_bytes } => BollardMount {
                typ: Some(MountType::TMPFS),
                target: Some(target.clone()),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: limit(*size_bytes),
                    ..Default::default()
                }),
                ..Default::default()
            },
        })
        .collect();
    let (network_mode, networking_config) = match spec.networks.first() {
        Some(first) => (
            first.clone(),
            Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(first.clone(), endpoint(&spec.aliases))])),
            }),
        ),
        // No network at all means no network, not Docker's default bridge.
        None => ("none".to_owned(), None),
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: Some(spec.env.clone()),
        user: (!spec.user.is_empty()).then(|| spec.user.clone()),
        labels: Some(to_map(&spec.labels)),
        working_dir: spec.working_dir.clone(),
        host_config: Some(HostConfig {
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            readonly_rootfs: Some(true),
            mounts: Some(mounts),
            memory: limit(spec.memory),
            memory_swap: limit(spec.memory),
            nano_cpus: limit(spec.nano_cpus),
            pids_limit: limit(spec.pids),
            runtime: spec.runtime.clone(),
            init: Some(spec.init),
            network_mode: Some(network_mode),
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    }
}

/// A tar of `files` (paths relative to the volume root), with their parent directories
/// (mode 0755, owned like the first file placed in them).
fn seed_tar(files: &[VolumeFile]) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = BTreeSet::new();
    for file in files {
        let path = std::path::Path::new(&file.path);
        let relative = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !relative || file.path.is_empty() {
            return Err(format!(
                "file path {:?} must be relative, without `..`",
                file.path
            ));
        }
        for dir in path.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || !dirs.insert(dir.to_path_buf()) {
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(file.uid);
            header.set_gid(file.gid);
            header.set_size(0);
            builder
                .append_data(&mut header, dir, std::io::empty())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(file.mode);
        header.set_uid(file.uid);
        header.set_gid(file.gid);
        header.set_size(file.contents.len() as u64);
        builder
            .append_data(&mut header, path, file.contents.as_slice())
            .map_err(|e| format!("{}: {e}", file.path))?;
    }
    builder.into_inner().map_err(|e| e.to_string())
}

/// The last [`BUILD_LOG_LINES`] non-empty lines of build output.
#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, text: &str) {
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if self.0.len() == BUILD_LOG_LINES {
                self.0.pop_front();
            }
            self.0.push_back(line.to_owned());
        }
    }

    fn text(&self) -> String {
        Vec::from(self.0.clone()).join("\n")
    }
}
