//! The [`Engine`] on the real Docker engine, through bollard.
//!
//! [`Docker`] talks to the local daemon over its unix socket (`DOCKER_HOST=unix://…` or
//! `/var/run/docker.sock`) with a fixed client version, 1.41 (Docker 20.10), and never
//! negotiates: a no-op reconcile costs exactly one list request per object type. Every
//! request is counted ([`Docker::api_calls`]) so benchmarks and tests can assert on it.
//!
//! Only 1.41 features are used. bollard 0.21.1 builds its URLs by joining an absolute
//! path onto `/v1.41/`, which drops the prefix: the requests go out unversioned, so the
//! daemon answers at its own version. That is what keeps Docker 29+ working (its minimum
//! API version is 1.44; an explicit `/v1.41/` is refused there). A test pins this.
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
//!   started: the files go in with `PUT /containers/{id}/archive`, then it is removed. The
//!   volumes of one `create_volumes` call share one helper (per seed image) and one
//!   archive; on any failure the call removes the volumes it made. A seeded volume is
//!   created by its helper's mount (with its labels), never before the helper: so a
//!   seeded volume without a finished seeding has a helper beside it, labelled
//!   `labels::SEEDING` with its name, and the next plan makes it anew.
//! - Errors map to [`EngineError`]: 404 -> `NotFound`, 409 -> `Conflict`, transport
//!   failures -> `Unreachable`, anything else -> `Api`. Creating a network, a subnet
//!   that overlaps one the engine has (403) is `SubnetTaken`, and a 404 is `Api` with
//!   the engine's words (its pools ran out): never "network not found".
//! - Container env values and seeded file contents are never logged.

mod files;
mod probe;
mod session;
pub use session::{ContainerDetails, ExecRequest};

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointSettings, HostConfig, Ipam, IpamConfig,
    Mount as BollardMount, MountTmpfsOptions, MountType, MountVolumeOptions, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::{ClientVersion, body_full};
use futures_util::StreamExt;

use bottle_engine::{
    BuildSpec, ContainerInfo, ContainerSpec, ContainerState, Engine, EngineError, Event, ImageInfo,
    Labels, Mount, NetworkInfo, NetworkSpec, VolumeInfo, VolumeSpec, seed_tar,
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

    /// Tag the local image `tag` (`repo:tag`) as `reference` (`registry/repo:tag`) and
    /// push it there (the Kubernetes backend's registry, docs/design.md section 9.6). A
    /// registry that has every layer already takes only the manifest. On failure the
    /// tag `reference` is removed again, so a local `reference` means "pushed".
    pub async fn push_image(&self, tag: &str, reference: &str) -> Result<(), EngineError> {
        let (repo, version) = reference
            .rsplit_once(':')
            .filter(|(r, v)| !r.is_empty() && !v.is_empty() && !v.contains('/'))
            .ok_or_else(|| EngineError::Api {
                op: "push image",
                name: reference.to_owned(),
                message: "not a repo:tag reference".into(),
            })?;
        let tagged = bollard::query_parameters::TagImageOptions {
            repo: Some(repo.to_owned()),
            tag: Some(version.to_owned()),
        };
        self.client
            .tag_image(tag, Some(tagged))
            .await
            .map_err(|e| self.error(e, "tag image", "image", tag))?;
        let options = bollard::query_parameters::PushImageOptions {
            tag: Some(version.to_owned()),
            platform: None,
        };
        let mut stream = self.client.push_image(repo, Some(options), None);
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        failure = Some(detail.message.unwrap_or_else(|| "push failed".into()));
                    }
                }
                Err(e) => {
                    failure = Some(self.error(e, "push image", "image", reference).to_string());
                    break;
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(message) => {
                let _ = self.remove_image_tag(reference).await;
                Err(EngineError::Api {
                    op: "push image",
                    name: reference.to_owned(),
                    message,
                })
            }
        }
    }

    /// Does the registry of `reference` (`registry/repo:tag`) hold it? Asked through
    /// the engine (`GET /distribution/{name}/json`), which reaches the registry as a
    /// pull would; any failure is "no", so the image is pushed again.
    pub async fn in_registry(&self, reference: &str) -> bool {
        self.client
            .inspect_registry_image(reference, None)
            .await
            .is_ok()
    }

    async fn remove_image_tag(&self, reference: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default().noprune(true).build();
        self.client
            .remove_image(reference, Some(options), None)
            .await
            .map(drop)
            .map_err(|e| self.error(e, "remove image", "image", reference))
    }

    /// Engine events from `since` (unix seconds; replayed by the daemon) on, matching
    /// `filters` (for example `{"type": ["container"], "label": ["bottle.managed=true"]}`).
    ///
    /// The stream is lazy: no request goes out until it is first polled, and events
    /// before that are lost unless `since` covers them, so start driving it before
    /// acting and resubscribe with the last seen time after an error. Network events
    /// carry only `name`/`type` attributes: a label filter never matches them. Each
    /// subscription is one counted request. The stream ends only on error.
    pub fn events(
        &self,
        since: Option<i64>,
        filters: &HashMap<String, Vec<String>>,
    ) -> impl futures_util::Stream<Item = Result<Event, EngineError>> + Send + 'static {
        let mut options = EventsOptionsBuilder::default().filters(filters);
        if let Some(since) = since {
            options = options.since(&since.to_string());
        }
        let this = self.clone();
        self.client
            .events(Some(options.build()))
            .map(move |item| match item {
                Ok(m) => {
                    let actor = m.actor.unwrap_or_default();
                    Ok(Event {
                        kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
                        action: m.action.unwrap_or_default(),
                        id: actor.id.unwrap_or_default(),
                        attributes: actor.attributes.unwrap_or_default().into_iter().collect(),
                        time_nano: m.time_nano.unwrap_or_default(),
                    })
                }
                Err(e) => Err(this.error(e, "events", "engine", &this.socket)),
            })
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

    /// Map an error of creating the network `spec`. A subnet that overlaps one the engine
    /// has (403, "Pool overlaps with other one on this address space") is
    /// [`EngineError::SubnetTaken`]; a 404 is not a missing network (the one being made
    /// cannot be), but the engine's own words, such as its pools running out ("could not
    /// find an available, non-overlapping IPv4 address pool").
    fn create_network_error(&self, e: BollardError, spec: &NetworkSpec) -> EngineError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 403,
                message,
            } if message.contains("overlaps") => EngineError::SubnetTaken {
                name: spec.name.clone(),
                subnet: spec.subnet.map(|s| s.to_string()).unwrap_or_default(),
            },
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => EngineError::Api {
                op: "create network",
                name: spec.name.clone(),
                message,
            },
            e => self.error(e, "create network", "network", &spec.name),
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

    /// Build `spec` once, collecting the tail of the build log for errors.
    async fn build_once(&self, spec: &BuildSpec) -> Result<(), EngineError> {
        let options = BuildImageOptionsBuilder::default()
            .t(&spec.tag)
            .dockerfile(&spec.dockerfile)
            .labels(&to_map(&spec.labels))
            .rm(true)
            .forcerm(true)
            .pull("false")
            .build();
        let body = match &spec.context {
            bottle_engine::BuildContext::Tar(tar) => body_full(tar.clone()),
            bottle_engine::BuildContext::Files(files) => {
                let files = files.clone();
                bollard::body_try_stream(stream_tar(move |w| files.write_tar(w)))
            }
        };
        let mut stream = self.client.build_image(options, None, Some(body));
        let mut log = Tail::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                        log.push(text);
                    }
                }
                Err(e) if is_transport(&e) => return Err(unreachable(&self.socket, &e)),
                Err(e) => {
                    let why = match e {
                        BollardError::DockerStreamError { error } => error,
                        BollardError::DockerResponseServerError { message, .. } => message,
                        e => chain(&e),
                    };
                    log.push(&why);
                    return Err(EngineError::Build {
                        tag: spec.tag.clone(),
                        log: log.text(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Seed the volumes `specs` (all of one seed image) through one created, never
    /// started helper container that mounts each (the `i`th at `SEED_MOUNT/i`) and
    /// takes their files in one archive.
    async fn seed_volumes(&self, specs: &[&VolumeSpec]) -> Result<(), EngineError> {
        let Some(first) = specs.first() else {
            return Ok(());
        };
        // Checked before anything is made; the archive itself is written while the
        // engine reads it.
        seed_tar::check_seed(specs, seed_tar::Links::Any)?;
        let helper = format!("{}-seed-{:08x}", first.name, rand::random::<u32>());
        let labels = to_map(&VolumeSpec::seeding_labels(specs));
        // A missing volume is created by its mount, with its labels, as the helper is:
        // never one without the other.
        let mounts = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| BollardMount {
                typ: Some(MountType::VOLUME),
                source: Some(spec.name.clone()),
                target: Some(format!("{SEED_MOUNT}/{i}")),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    labels: Some(to_map(&spec.labels)),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(first.seed_image.clone()),
            // Never run, but the engine refuses to create a container without a command
            // when the image has none.
            cmd: Some(vec!["true".to_owned()]),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                mounts: Some(mounts),
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
                match self.error(e, "create seed container", "image", &first.seed_image) {
                    EngineError::Conflict { .. } => EngineError::Conflict {
                        kind: "container",
                        name: helper.clone(),
                    },
                    e => e,
                }
            })?;
        // The archive holds `seed/<i>/...`, unpacked at `/`: each `seed/<i>` entry sets
        // the owner of a mount point, that is of a volume's root.
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        let owned: Vec<VolumeSpec> = specs.iter().map(|s| (*s).clone()).collect();
        let failed: Arc<std::sync::Mutex<Option<EngineError>>> = Arc::default();
        let slot = Arc::clone(&failed);
        let archive = stream_tar(move |w| {
            let refs: Vec<&VolumeSpec> = owned.iter().collect();
            let root = std::path::Path::new(SEED_MOUNT.trim_start_matches('/'));
            seed_tar::write_seed(&refs, root, seed_tar::Content::All, w).map_err(|e| {
                let message = e.to_string();
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(e);
                }
                std::io::Error::other(message)
            })
        });
        let uploaded = self
            .client
            .upload_to_container(&helper, Some(options), bollard::body_try_stream(archive))
            .await
            .map_err(|e| {
                // The archive's own error (a file that grew past the limit, one that
                // vanished) says more than the engine's "error in the body".
                let own = failed.lock().ok().and_then(|mut slot| slot.take());
                own.unwrap_or_else(|| self.error(e, "upload seed files", "volume", &first.name))
            });
        let removed = self.gone_ok(
            self.force_remove(&helper).await,
            "remove seed container",
            "container",
            &helper,
        );
        uploaded.and(removed)
    }

    /// Create the volumes of `specs` (the names of those that may have been made go to
    /// `made`): those without content directly, those with content through their
    /// seeding helper, one per seed image.
    async fn make_volumes<'a>(
        &self,
        specs: &'a [VolumeSpec],
        made: &mut Vec<&'a VolumeSpec>,
    ) -> Result<(), EngineError> {
        let plain: Vec<&VolumeSpec> = specs.iter().filter(|s| !s.has_content()).collect();
        let created = futures_util::future::join_all(plain.iter().map(|spec| async move {
            let request = VolumeCreateRequest {
                name: Some(spec.name.clone()),
                labels: Some(to_map(&spec.labels)),
                ..Default::default()
            };
            self.client
                .create_volume(request)
                .await
                .map_err(|e| self.error(e, "create volume", "volume", &spec.name))
        }))
        .await;
        let mut first_error = None;
        for (spec, r) in plain.into_iter().zip(created) {
            match r {
                Ok(_) => made.push(spec),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut by_image: Vec<(&str, Vec<&VolumeSpec>)> = Vec::new();
        for spec in specs.iter().filter(|s| s.has_content()) {
            match by_image
                .iter_mut()
                .find(|(image, _)| *image == spec.seed_image)
            {
                Some((_, group)) => group.push(spec),
                None => by_image.push((&spec.seed_image, vec![spec])),
            }
        }
        for (_, group) in &by_image {
            made.extend(group.iter().copied());
            self.seed_volumes(group).await?;
        }
        Ok(())
    }

    /// The IPv4 gateway address of `network` (for [`ContainerSpec::dns_gateway_of`]).
    async fn gateway(&self, network: &str, spec: &ContainerSpec) -> Result<String, EngineError> {
        let inspect = self
            .client
            .inspect_network(network, None)
            .await
            .map_err(|e| self.error(e, "inspect network", "network", network))?;
        inspect
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .find(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
            .ok_or_else(|| EngineError::Api {
                op: "inspect network",
                name: spec.name.clone(),
                message: format!("network {network} has no IPv4 gateway"),
            })
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
                .map_err(|e| self.run_error(e, "connect network", spec))?;
        }
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| self.run_error(e, "start container", spec))
    }

    /// Map an error of one step of [`Engine::run_container`]. A 404 there names a
    /// network (the 1.41 daemon checks extra networks only at start) or the image.
    fn run_error(&self, e: BollardError, op: &'static str, spec: &ContainerSpec) -> EngineError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => {
                let network = spec
                    .networks
                    .iter()
                    .filter(|n| message.contains(&format!("network {n} ")))
                    .max_by_key(|n| n.len());
                match network {
                    Some(n) => EngineError::NotFound {
                        kind: "network",
                        name: n.clone(),
                    },
                    None if op == "create container" && !message.contains("network") => {
                        EngineError::NotFound {
                            kind: "image",
                            name: spec.image.clone(),
                        }
                    }
                    None => EngineError::Api {
                        op,
                        name: spec.name.clone(),
                        message,
                    },
                }
            }
            e => self.error(e, op, "container", &spec.name),
        }
    }
}

/// A tar (a build context, a seed archive) written by `write` on a blocking thread as
/// the engine reads it: at most a few chunks are in memory, whatever its size. An error
/// of `write` ends the stream with that error, so the engine never takes a cut tar.
fn stream_tar(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    const CHUNK: usize = 256 << 10;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    struct Chunks {
        tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
        buf: Vec<u8>,
    }
    impl Chunks {
        fn send(&mut self) -> std::io::Result<()> {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .blocking_send(Ok(chunk.into()))
                .map_err(|_| std::io::Error::other("the engine stopped reading the context"))
        }
    }
    impl std::io::Write for Chunks {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= CHUNK {
                self.send()?;
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if self.buf.is_empty() {
                Ok(())
            } else {
                self.send()
            }
        }
    }
    tokio::task::spawn_blocking(move || {
        let mut w = Chunks {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = write(&mut w).and_then(|()| std::io::Write::flush(&mut w)) {
            // The engine's call fails with this error rather than with a cut tar.
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

impl bottle_engine::Events for Docker {
    fn events(
        &self,
        since: Option<i64>,
        filters: &HashMap<String, Vec<String>>,
    ) -> impl futures_util::Stream<Item = Result<Event, EngineError>> + Send + 'static {
        Docker::events(self, since, filters)
    }

    async fn ping(&self) -> Result<(), EngineError> {
        Docker::ping(self).await
    }
}

impl bottle_engine::VolumeFiles for Docker {
    async fn read_dir_files(
        &self,
        container: &str,
        dir: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        Docker::read_dir_files(self, container, dir).await
    }

    async fn write_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), EngineError> {
        Docker::write_file(self, container, dir, name, contents).await
    }
}

impl bottle_engine::Exec for Docker {
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        user: Option<&str>,
        stdin: &[u8],
    ) -> Result<bottle_engine::ExecOutput, EngineError> {
        Docker::exec_captured(self, container, cmd, user, stdin).await
    }

    async fn signal(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        Docker::signal(self, container, signal).await
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
                subnets: n
                    .ipam
                    .and_then(|i| i.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.subnet?.parse().ok())
                    .collect(),
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
                    created: c.created.and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
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
            options: (!spec.options.is_empty()).then(|| to_map(&spec.options)),
            // The gateway is the subnet's first address, as Docker picks it, but named:
            // unnamed, the engine does not report it, and `dns_gateway_of` reads it.
            ipam: spec.subnet.map(|subnet| Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.to_string()),
                    gateway: subnet.hosts().next().map(|g| g.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
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
            .map_err(|e| self.create_network_error(e, spec))
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        let r = self.client.remove_network(name).await;
        self.gone_ok(r, "remove network", "network", name)
    }

    async fn create_volumes(&self, specs: &[VolumeSpec]) -> Result<(), EngineError> {
        // Docker answers an existing name with 201 and the old volume: a seeded volume
        // must be new, so it is up to the caller to create only what is missing.
        let mut made = Vec::new();
        let r = self.make_volumes(specs, &mut made).await;
        if r.is_err() {
            // A half-seeded volume would look created and never be seeded again. Only a
            // volume that carries this spec's labels is removed: a helper's mount may
            // have found one of that name that is not ours.
            for spec in made {
                let ours = self.client.inspect_volume(&spec.name).await.is_ok_and(|v| {
                    spec.labels
                        .iter()
                        .all(|(k, value)| v.labels.get(k) == Some(value))
                });
                if ours {
                    let _ = self.remove_volume(&spec.name).await;
                }
            }
        }
        r
    }

    async fn rewrite_volume(&self, spec: &VolumeSpec) -> Result<(), EngineError> {
        // The seeding helper's mount would create a missing volume, unlabelled.
        self.client
            .inspect_volume(&spec.name)
            .await
            .map_err(|e| self.error(e, "inspect volume", "volume", &spec.name))?;
        self.seed_volumes(&[spec]).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let options = RemoveVolumeOptionsBuilder::default().build();
        let r = self.client.remove_volume(name, Some(options)).await;
        self.gone_ok(r, "remove volume", "volume", name)
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        let mut body = container_body(spec);
        if let Some(network) = &spec.dns_gateway_of {
            let gateway = self.gateway(network, spec).await?;
            if let Some(hc) = body.host_config.as_mut() {
                hc.dns = Some(vec![gateway]);
            }
        }
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .client
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.run_error(e, "create container", spec))?;
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
        match self.build_once(spec).await {
            // The build stream was cut mid-way while the engine still answers (seen here
            // as "bytes remaining on stream" under load): a build is idempotent and its
            // finished steps are cached, so it gets one more try.
            Err(EngineError::Unreachable(first)) if self.ping().await.is_ok() => {
                tracing::warn!(tag = %spec.tag, error = %first, "image build stream broke; building once more");
                self.build_once(spec).await
            }
            r => r,
        }
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
            "the Docker engine: DOCKER_HOST={host} is not supported: bottle talks to a local unix socket \
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
        "the Docker engine at {socket}: {cause} (is the Docker daemon running and may this user use it? \
         set DOCKER_HOST=unix:///path/to/docker.sock for another socket)"
    ))
}

/// `e` and its sources, joined by `: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    bottle_contract::ErrorChain(e).to_string()
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
    let (network_mode, networking_config) = match (&spec.network_of, spec.networks.first()) {
        (Some(holder), _) => (format!("container:{holder}"), None),
        (None, Some(first)) => (
            first.clone(),
            Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(first.clone(), endpoint(&spec.aliases))])),
            }),
        ),
        // No network at all means no network, not Docker's default bridge.
        (None, None) => ("none".to_owned(), None),
    };
    let devices: Vec<DeviceMapping> = spec
        .devices
        .iter()
        .map(|d| DeviceMapping {
            path_on_host: Some(d.clone()),
            path_in_container: Some(d.clone()),
            cgroup_permissions: Some("rwm".to_owned()),
        })
        .collect();
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
            sysctls: (!spec.sysctls.is_empty()).then(|| to_map(&spec.sysctls)),
            devices: (!devices.is_empty()).then_some(devices),
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    }
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

// Against the real engine (`$DOCKER_HOST` or the default socket): these fail, not skip,
// without one; `scripts/test.sh` turns them on with the `live-tests` feature.
#[cfg(all(test, feature = "live-tests"))]
mod live_tests {
    //! Against the real engine on this machine: these fail (not skip) without Docker.
    //! Each test names its objects with a random suffix, labels them
    //! `bottle.test=<suffix>`, and a [`Cleanup`] guard removes everything so labelled,
    //! even when an assertion fails.

    use super::*;
    use bottle_engine::{INHIBIT_IPV4, VolumeFile};
    use std::collections::BTreeSet;
    use std::process::Command;

    const IMAGE: &str = "debian:bookworm-slim";

    fn connect() -> Docker {
        Docker::connect().expect("the Docker engine must be reachable for these tests")
    }

    /// Removes every object labelled `bottle.test=<suffix>` when dropped.
    struct Cleanup {
        suffix: String,
    }

    impl Cleanup {
        fn new() -> Cleanup {
            Cleanup {
                suffix: format!("{:08x}", rand::random::<u32>()),
            }
        }

        fn label(&self) -> String {
            format!("bottle.test={}", self.suffix)
        }

        fn labels(&self) -> Labels {
            Labels::from([("bottle.test".to_owned(), self.suffix.clone())])
        }

        fn name(&self, what: &str) -> String {
            format!("bottle-test-{what}-{}", self.suffix)
        }
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            // By label, and by name for what the engine made implicitly (a volume named
            // in a mount is created unlabelled).
            let by_label = format!("label={}", self.label());
            let by_name = format!("name={}", self.suffix);
            for (list, remove) in [
                (&["ps", "-aq"][..], &["rm", "-f", "-v"][..]),
                (&["network", "ls", "-q"][..], &["network", "rm"][..]),
                (&["volume", "ls", "-q"][..], &["volume", "rm", "-f"][..]),
                (&["images", "-q"][..], &["rmi", "-f"][..]),
            ] {
                let mut ids = BTreeSet::new();
                for filter in [&by_label, &by_name] {
                    if list[0] == "images" && filter == &by_name {
                        continue;
                    }
                    if let Ok(out) = Command::new("docker")
                        .args(list)
                        .args(["--filter", filter])
                        .output()
                    {
                        let stdout = String::from_utf8_lossy(&out.stdout);
                        ids.extend(stdout.split_whitespace().map(str::to_owned));
                    }
                }
                if !ids.is_empty() {
                    let _ = Command::new("docker").args(remove).args(&ids).output();
                }
            }
        }
    }

    /// `docker <args>`, asserting success; returns stdout.
    fn docker_cli(args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(args)
            .output()
            .expect("docker CLI");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn inspect(kind: &str, name: &str) -> serde_json::Value {
        let text = docker_cli(&[kind, "inspect", name]);
        let mut all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("inspect JSON");
        all.pop().expect("one object")
    }

    #[tokio::test]
    async fn networks_are_created_listed_and_removed() {
        let t = Cleanup::new();
        let docker = connect();
        let internal = t.name("int");
        let external = t.name("ext");
        // The internal one on a subnet of its own (the end of bottle's default pool, which
        // the e2e tests fill from its start), the other from the engine's pools.
        let subnet: ipnet::Ipv4Net = "10.213.255.240/28".parse().expect("subnet");
        for (name, internal) in [(&internal, true), (&external, false)] {
            let spec = NetworkSpec {
                name: name.clone(),
                labels: t.labels(),
                internal,
                options: Default::default(),
                subnet: internal.then_some(subnet),
            };
            docker.create_network(&spec).await.expect("create network");
        }

        let before = docker.api_calls();
        let mut listed = docker.list_networks(&[t.label()]).await.expect("list");
        assert_eq!(docker.api_calls(), before + 1, "a list is one request");
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(
            (listed[0].name.as_str(), listed[0].internal),
            (external.as_str(), false)
        );
        assert_eq!(listed[0].subnets.len(), 1, "the engine's pick: {listed:?}");
        // The gateway of a subnet bottle chose is its first address, and reported.
        let n = inspect("network", &internal);
        assert_eq!(n["IPAM"]["Config"][0]["Gateway"], "10.213.255.241", "{n}");
        assert_eq!(
            listed[1],
            NetworkInfo {
                name: internal.clone(),
                labels: t.labels(),
                internal: true,
                subnets: vec![ipnet::IpNet::V4(subnet)],
            }
        );

        let again = NetworkSpec {
            name: internal.clone(),
            labels: t.labels(),
            internal: true,
            options: Default::default(),
            subnet: None,
        };
        let err = docker.create_network(&again).await.expect_err("duplicate");
        assert!(
            matches!(&err, EngineError::Conflict { kind: "network", name } if *name == internal),
            "{err:?}"
        );
        // Another network on an overlapping subnet: the engine refuses, and says so.
        let overlapping = NetworkSpec {
            name: t.name("overlap"),
            labels: t.labels(),
            internal: true,
            options: Default::default(),
            subnet: Some("10.213.255.248/29".parse().expect("subnet")),
        };
        let err = docker
            .create_network(&overlapping)
            .await
            .expect_err("overlap");
        assert!(
            matches!(&err, EngineError::SubnetTaken { name, subnet }
                if *name == overlapping.name && subnet == "10.213.255.248/29"),
            "{err:?}"
        );
        assert_eq!(
            docker
                .list_networks(&[t.label()])
                .await
                .expect("list")
                .len(),
            2
        );

        for name in [&internal, &external] {
            docker.remove_network(name).await.expect("remove");
            docker.remove_network(name).await.expect("remove again");
        }
        assert!(
            docker
                .list_networks(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
    }

    /// What `cmd` prints in a throwaway container with `volume` at `/v`.
    fn run_in(volume: &str, cmd: &[&str]) -> String {
        let mount = format!("{volume}:/v");
        let mut args = vec![
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "-v",
            &mount,
            IMAGE,
        ];
        args.extend_from_slice(cmd);
        docker_cli(&args)
    }

    /// `stat -c '%n %a %u %g' paths` in a throwaway container with `volume` at `/v`.
    fn stat_in(volume: &str, paths: &[&str]) -> String {
        let mut cmd = vec!["stat", "-c", "%n %a %u %g"];
        cmd.extend_from_slice(paths);
        run_in(volume, &cmd)
    }

    #[tokio::test]
    async fn volumes_are_seeded_with_mode_and_owner() {
        let t = Cleanup::new();
        let docker = connect();
        let name = t.name("vol");
        let spec = VolumeSpec {
            name: name.clone(),
            labels: t.labels(),
            files: vec![
                VolumeFile {
                    path: "f".to_owned(),
                    contents: b"hello\n".to_vec(),
                    mode: 0o640,
                    uid: 1234,
                    gid: 4321,
                },
                VolumeFile {
                    path: "sub/dir/key".to_owned(),
                    contents: b"secret".to_vec(),
                    mode: 0o600,
                    uid: 1000,
                    gid: 1000,
                },
            ],
            seed_dirs: Vec::new(),
            owner: None,
            seed_image: IMAGE.to_owned(),
        };
        docker.create_volume(&spec).await.expect("create volume");

        let listed = docker.list_volumes(&[t.label()]).await.expect("list");
        assert_eq!(
            listed,
            vec![VolumeInfo {
                name: name.clone(),
                labels: t.labels()
            }]
        );
        let stat = stat_in(&name, &["/v/f", "/v/sub", "/v/sub/dir", "/v/sub/dir/key"]);
        assert_eq!(
            stat,
            "/v/f 640 1234 4321\n/v/sub 755 1000 1000\n/v/sub/dir 755 1000 1000\n\
             /v/sub/dir/key 600 1000 1000\n"
        );
        let cat = run_in(&name, &["cat", "/v/f"]);
        assert_eq!(cat, "hello\n");
        // The helper container is gone.
        let helpers = docker_cli(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={}", t.label()),
            "--filter",
            "label=bottle.seeding",
        ]);
        assert_eq!(helpers.trim(), "");

        docker.remove_volume(&name).await.expect("remove");
        docker.remove_volume(&name).await.expect("remove again");
        assert!(
            docker
                .list_volumes(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_host_tree_is_streamed_into_a_volume_whole() {
        let t = Cleanup::new();
        let docker = connect();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("src/deep")).expect("mkdir");
        // Larger than a few of the stream's chunks, and not a multiple of one.
        let big: String = (0..300_001u32).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join("src/deep/big.bin"), &big).expect("write");
        std::fs::write(dir.path().join("README"), b"hi\n").expect("write");
        std::os::unix::fs::symlink("src/deep/big.bin", dir.path().join("link")).expect("ln");
        let spec = VolumeSpec {
            name: t.name("tree"),
            labels: t.labels(),
            files: Vec::new(),
            seed_dirs: vec![bottle_engine::SeedDir {
                host: dir.path().to_path_buf(),
                target: "ws".to_owned(),
                uid: 1000,
                gid: 1000,
            }],
            owner: Some((1000, 1000)),
            seed_image: IMAGE.to_owned(),
        };
        docker.create_volume(&spec).await.expect("create volume");
        assert_eq!(run_in(&spec.name, &["cat", "/v/ws/src/deep/big.bin"]), big);
        assert_eq!(run_in(&spec.name, &["cat", "/v/ws/README"]), "hi\n");
        assert_eq!(
            run_in(&spec.name, &["readlink", "/v/ws/link"]),
            "src/deep/big.bin\n"
        );
        assert_eq!(
            stat_in(&spec.name, &["/v/ws/src/deep/big.bin"]),
            "/v/ws/src/deep/big.bin 644 1000 1000\n"
        );
    }

    #[tokio::test]
    async fn failed_seeding_leaves_no_volume_behind() {
        let t = Cleanup::new();
        let docker = connect();
        let spec = VolumeSpec {
            name: t.name("vol"),
            labels: t.labels(),
            files: vec![VolumeFile {
                path: "f".to_owned(),
                contents: Vec::new(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            }],
            seed_dirs: Vec::new(),
            owner: None,
            seed_image: format!("bottle-test-missing-{}:none", t.suffix),
        };
        let err = docker
            .create_volume(&spec)
            .await
            .expect_err("no such image");
        assert!(
            matches!(&err, EngineError::NotFound { kind: "image", .. }),
            "{err:?}"
        );
        assert!(
            docker
                .list_volumes(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
        assert!(
            docker
                .list_containers(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );

        let bad = VolumeSpec {
            files: vec![VolumeFile {
                path: "../escape".to_owned(),
                contents: Vec::new(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            }],
            seed_dirs: Vec::new(),
            owner: None,
            seed_image: IMAGE.to_owned(),
            ..spec
        };
        let err = docker.create_volume(&bad).await.expect_err("bad path");
        assert!(matches!(&err, EngineError::Api { .. }), "{err:?}");
        assert!(
            docker
                .list_volumes(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn volumes_made_together_share_one_seeding_helper_and_fail_together() {
        let t = Cleanup::new();
        let docker = connect();
        let file = |path: &str, uid| VolumeFile {
            path: path.to_owned(),
            contents: path.as_bytes().to_vec(),
            mode: 0o640,
            uid,
            gid: uid,
        };
        let spec = |what: &str, files, owner| VolumeSpec {
            name: t.name(what),
            labels: t.labels(),
            files,
            seed_dirs: Vec::new(),
            owner,
            seed_image: IMAGE.to_owned(),
        };
        let specs = vec![
            spec("a", vec![file("x/a", 1001)], Some((7, 7))),
            spec("b", vec![file("b", 1002)], None),
            spec("empty", Vec::new(), None),
        ];
        let before = docker.api_calls();
        docker.create_volumes(&specs).await.expect("create volumes");
        // The empty volume, then one helper that makes the other two: create, upload,
        // remove.
        assert_eq!(docker.api_calls() - before, 4);
        assert_eq!(
            stat_in(&specs[0].name, &["/v", "/v/x", "/v/x/a"]),
            "/v 755 7 7\n/v/x 755 1001 1001\n/v/x/a 640 1001 1001\n"
        );
        assert_eq!(
            stat_in(&specs[1].name, &["/v", "/v/b"]),
            "/v 755 0 0\n/v/b 640 1002 1002\n"
        );
        let mut listed: Vec<String> = docker
            .list_volumes(&[t.label()])
            .await
            .expect("list")
            .into_iter()
            .map(|v| v.name)
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>()
        );
        let helpers = docker_cli(&["ps", "-aq", "--filter", &format!("label={}", t.label())]);
        assert_eq!(helpers.trim(), "", "no helper is left");

        // One bad path in the second volume: none of the three is left.
        let mut bad = vec![
            spec("c", vec![file("c", 0)], None),
            spec("d", vec![file("../escape", 0)], None),
            spec("e", Vec::new(), None),
        ];
        let err = docker.create_volumes(&bad).await.expect_err("bad path");
        assert!(
            matches!(&err, EngineError::Api { name, .. } if *name == bad[1].name),
            "{err:?}"
        );
        // A seed image that is missing: the same.
        bad[1] = spec("d", vec![file("d", 0)], None);
        bad[1].seed_image = format!("bottle-test-missing-{}:none", t.suffix);
        let err = docker
            .create_volumes(&bad)
            .await
            .expect_err("no such image");
        assert!(
            matches!(&err, EngineError::NotFound { kind: "image", .. }),
            "{err:?}"
        );
        let left: Vec<String> = docker
            .list_volumes(&[t.label()])
            .await
            .expect("list")
            .into_iter()
            .map(|v| v.name)
            .filter(|n| bad.iter().any(|b| b.name == *n))
            .collect();
        assert_eq!(left, Vec::<String>::new());
        assert!(
            docker
                .list_containers(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
    }

    fn container_spec(t: &Cleanup, networks: Vec<String>, volume: &str) -> ContainerSpec {
        ContainerSpec {
            name: t.name("ctr"),
            image: IMAGE.to_owned(),
            labels: t.labels(),
            cmd: vec!["sleep".to_owned(), "300".to_owned()],
            env: vec!["BOTTLE_TEST=1".to_owned()],
            user: "1000:1000".to_owned(),
            networks,
            aliases: vec!["agent".to_owned()],
            mounts: vec![
                Mount::Volume {
                    name: volume.to_owned(),
                    target: "/work".to_owned(),
                    read_only: false,
                },
                Mount::Tmpfs {
                    target: "/tmp".to_owned(),
                    size_bytes: 16 << 20,
                },
            ],
            cap_add: vec!["NET_BIND_SERVICE".to_owned()],
            memory: 256 << 20,
            nano_cpus: 500_000_000,
            pids: 128,
            runtime: None,
            working_dir: Some("/work".to_owned()),
            init: true,
            sysctls: Default::default(),
            dns_gateway_of: None,
            network_of: None,
            devices: Vec::new(),
            probe: None,
        }
    }

    #[tokio::test]
    async fn containers_run_hardened_on_two_networks() {
        let t = Cleanup::new();
        let docker = connect();
        let nets = vec![t.name("net-a"), t.name("net-b")];
        for (i, name) in nets.iter().enumerate() {
            let spec = NetworkSpec {
                name: name.clone(),
                labels: t.labels(),
                internal: i == 0,
                // The internal one as net-internal is made: no IPv4 on the host side.
                options: if i == 0 {
                    [(INHIBIT_IPV4.to_owned(), "true".to_owned())].into()
                } else {
                    Default::default()
                },
                subnet: None,
            };
            docker.create_network(&spec).await.expect("create network");
        }
        let n = inspect("network", &nets[0]);
        assert_eq!(n["Options"][INHIBIT_IPV4], "true", "{n}");
        let gateway = n["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .expect("gateway")
            .to_owned();
        let volume = t.name("vol");
        let vspec = VolumeSpec {
            name: volume.clone(),
            labels: t.labels(),
            files: Vec::new(),
            seed_dirs: Vec::new(),
            owner: None,
            seed_image: IMAGE.to_owned(),
        };
        docker.create_volume(&vspec).await.expect("create volume");

        let spec = ContainerSpec {
            sysctls: [("net.ipv4.ip_forward".to_owned(), "0".to_owned())].into(),
            dns_gateway_of: Some(nets[0].clone()),
            network_of: None,
            devices: Vec::new(),
            probe: None,
            ..container_spec(&t, nets.clone(), &volume)
        };
        docker.run_container(&spec).await.expect("run");

        let c = inspect("container", &spec.name);
        let hc = &c["HostConfig"];
        assert_eq!(hc["Sysctls"]["net.ipv4.ip_forward"], "0");
        assert_eq!(hc["Dns"], serde_json::json!([gateway]));
        assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(hc["CapAdd"], serde_json::json!(["NET_BIND_SERVICE"]));
        assert_eq!(hc["ReadonlyRootfs"], true);
        assert_eq!(
            hc["SecurityOpt"],
            serde_json::json!(["no-new-privileges:true"])
        );
        assert_eq!(hc["Memory"], 256 << 20);
        assert_eq!(hc["MemorySwap"], 256 << 20);
        assert_eq!(hc["NanoCpus"], 500_000_000);
        assert_eq!(hc["PidsLimit"], 128);
        assert_eq!(hc["Init"], true);
        assert_eq!(hc["RestartPolicy"]["Name"], "");
        assert_eq!(c["Config"]["User"], "1000:1000");
        assert_eq!(c["Config"]["WorkingDir"], "/work");
        assert_eq!(c["Config"]["Labels"]["bottle.test"], t.suffix.as_str());
        let mounts = c["Mounts"].as_array().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m["Type"] == "volume" && m["Name"] == volume.as_str()),
            "{mounts:?}"
        );
        assert_eq!(hc["Mounts"][1]["Type"], "tmpfs");
        assert_eq!(hc["Mounts"][1]["TmpfsOptions"]["SizeBytes"], 16 << 20);
        for net in &nets {
            let aliases = &c["NetworkSettings"]["Networks"][net]["Aliases"];
            assert!(
                aliases
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "agent")),
                "{net}: {aliases}"
            );
        }
        assert_eq!(
            c["NetworkSettings"]["Networks"]
                .as_object()
                .map(|m| m.len()),
            Some(2)
        );

        let before = docker.api_calls();
        let listed = docker.list_containers(&[t.label()]).await.expect("list");
        assert_eq!(docker.api_calls(), before + 1, "a list is one request");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, spec.name);
        assert_eq!(listed[0].image, IMAGE);
        assert_eq!(listed[0].labels, t.labels());
        assert_eq!(listed[0].state, ContainerState::Running);
        assert_eq!(listed[0].networks, nets);

        // A second run of the same name conflicts and leaves the first one alone.
        let err = docker.run_container(&spec).await.expect_err("conflict");
        assert!(
            matches!(
                &err,
                EngineError::Conflict {
                    kind: "container",
                    ..
                }
            ),
            "{err:?}"
        );
        // Stopped, then started again.
        docker_cli(&["stop", "-t", "1", &spec.name]);
        let listed = docker.list_containers(&[t.label()]).await.expect("list");
        assert_eq!(listed[0].state, ContainerState::NotRunning);
        docker.start_container(&spec.name).await.expect("start");
        let listed = docker.list_containers(&[t.label()]).await.expect("list");
        assert_eq!(listed[0].state, ContainerState::Running);

        docker.remove_container(&spec.name).await.expect("remove");
        docker
            .remove_container(&spec.name)
            .await
            .expect("remove again");
        assert!(
            docker
                .list_containers(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
        let err = docker.start_container(&spec.name).await.expect_err("gone");
        assert!(matches!(&err, EngineError::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn failed_runs_leave_no_container_behind() {
        let t = Cleanup::new();
        let docker = connect();
        let net = t.name("net");
        let spec = NetworkSpec {
            name: net.clone(),
            labels: t.labels(),
            internal: true,
            options: Default::default(),
            subnet: None,
        };
        docker.create_network(&spec).await.expect("create network");
        let volume = t.name("vol");

        // The second network is missing: created, then the connect fails.
        let missing = t.name("missing");
        let spec = container_spec(&t, vec![net.clone(), missing.clone()], &volume);
        let err = docker
            .run_container(&spec)
            .await
            .expect_err("missing network");
        assert!(
            matches!(&err, EngineError::NotFound { kind: "network", name } if *name == missing),
            "{err:?}"
        );
        assert!(
            docker
                .list_containers(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );

        // The image is missing: nothing is created.
        let mut spec = container_spec(&t, vec![net.clone()], &volume);
        spec.image = format!("bottle-test-missing-{}:none", t.suffix);
        let err = docker
            .run_container(&spec)
            .await
            .expect_err("missing image");
        assert!(
            matches!(&err, EngineError::NotFound { kind: "image", .. }),
            "{err:?}"
        );
        assert!(
            docker
                .list_containers(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
    }

    fn context(dockerfile: &str) -> bottle_engine::BuildContext {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
            .expect("tar");
        bottle_engine::BuildContext::Tar(builder.into_inner().expect("tar").into())
    }

    /// A context streamed from a host file (`/etc/os-release`, copied into the image)
    /// beside a held Dockerfile.
    fn streamed(dockerfile: &str) -> bottle_engine::BuildContext {
        use bottle_engine::{ContextEntry, ContextFiles, EntryData};
        let host = std::path::PathBuf::from("/etc/os-release");
        let size = std::fs::metadata(&host).expect("os-release").len();
        bottle_engine::BuildContext::Files(std::sync::Arc::new(ContextFiles {
            entries: vec![
                ContextEntry {
                    path: "Dockerfile".into(),
                    mode: 0o644,
                    data: EntryData::Inline(bytes::Bytes::from(dockerfile.to_owned())),
                },
                ContextEntry {
                    path: "os-release".into(),
                    mode: 0o644,
                    data: EntryData::Host { path: host, size },
                },
            ],
        }))
    }

    #[tokio::test]
    async fn images_are_built_listed_and_removed() {
        let t = Cleanup::new();
        let docker = connect();
        let tag = format!("bottle-test-img-{}:1", t.suffix);
        let spec = BuildSpec {
            tag: tag.clone(),
            labels: t.labels(),
            dockerfile: "Dockerfile".to_owned(),
            context: streamed(
                "FROM debian:bookworm-slim\nCOPY os-release /streamed\nLABEL org.example.kind=test\n",
            ),
        };
        docker.build_image(&spec).await.expect("build");

        let before = docker.api_calls();
        let listed = docker.list_images(&[t.label()]).await.expect("list");
        assert_eq!(docker.api_calls(), before + 1, "a list is one request");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].tag, tag);
        assert!(listed[0].id.starts_with("sha256:"));
        assert_eq!(listed[0].labels.get("bottle.test"), Some(&t.suffix));
        assert_eq!(
            listed[0].labels.get("org.example.kind").map(String::as_str),
            Some("test")
        );

        docker.remove_image(&tag).await.expect("remove");
        docker.remove_image(&tag).await.expect("remove again");
        assert!(
            docker
                .list_images(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn failed_builds_report_the_log_tail() {
        let t = Cleanup::new();
        let docker = connect();
        let tag = format!("bottle-test-bad-{}:1", t.suffix);
        let spec = BuildSpec {
            tag: tag.clone(),
            labels: t.labels(),
            dockerfile: "Dockerfile".to_owned(),
            context: context("FROM debian:bookworm-slim\nRUN echo marker-line && exit 3\n"),
        };
        let err = docker.build_image(&spec).await.expect_err("build fails");
        let EngineError::Build { tag: t2, log } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*t2, tag);
        assert!(log.contains("marker-line"), "{log}");
        assert!(log.contains("exit 3") || log.contains("code: 3"), "{log}");
        assert!(log.lines().count() <= BUILD_LOG_LINES, "{log}");

        let missing = BuildSpec {
            dockerfile: "Nope.Dockerfile".to_owned(),
            ..spec
        };
        let err = docker
            .build_image(&missing)
            .await
            .expect_err("no dockerfile");
        assert!(matches!(&err, EngineError::Build { .. }), "{err:?}");
        assert!(
            docker
                .list_images(&[t.label()])
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn each_list_is_exactly_one_request() {
        let t = Cleanup::new();
        let docker = connect();
        let labels = [t.label(), "bottle.managed=true".to_owned()];
        let start = docker.api_calls();
        assert!(
            docker
                .list_networks(&labels)
                .await
                .expect("list")
                .is_empty()
        );
        assert_eq!(docker.api_calls(), start + 1);
        assert!(docker.list_volumes(&labels).await.expect("list").is_empty());
        assert_eq!(docker.api_calls(), start + 2);
        assert!(
            docker
                .list_containers(&labels)
                .await
                .expect("list")
                .is_empty()
        );
        assert_eq!(docker.api_calls(), start + 3);
        assert!(docker.list_images(&labels).await.expect("list").is_empty());
        assert_eq!(docker.api_calls(), start + 4);
        // Clones share the counter.
        let clone = docker.clone();
        clone.ping().await.expect("ping");
        assert_eq!(docker.api_calls(), start + 5);
    }

    #[tokio::test]
    async fn events_replay_since_and_filter_by_label() {
        let t = Cleanup::new();
        let docker = connect();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
            - 1;
        let mut spec = container_spec(&t, Vec::new(), &t.name("vol"));
        spec.cmd = vec!["true".to_owned()];
        docker.run_container(&spec).await.expect("run");

        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![t.label()]),
        ]);
        let before = docker.api_calls();
        let events = docker.events(Some(since), &filters);
        let mut events = std::pin::pin!(events);
        let mut actions = Vec::new();
        let wait = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(event) = events.next().await {
                let event = event.expect("event");
                assert_eq!(event.kind, "container");
                assert_eq!(event.attributes.get("name"), Some(&spec.name));
                assert_eq!(event.attributes.get("bottle.test"), Some(&t.suffix));
                assert!(event.time_nano > since * 1_000_000_000);
                actions.push(event.action.clone());
                if event.action == "die" {
                    break;
                }
            }
        });
        wait.await.expect("create, start and die within 30s");
        assert_eq!(&actions[..2], ["create", "start"], "{actions:?}");
        assert_eq!(
            docker.api_calls(),
            before + 1,
            "one request per subscription"
        );
        docker.remove_container(&spec.name).await.expect("remove");
    }

    #[tokio::test]
    async fn requests_go_out_unversioned() {
        let docker = connect();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let client = docker.client.clone().with_request_modifier(move |req| {
            if let Ok(mut paths) = record.lock() {
                paths.push(req.uri().path().to_owned());
            }
            req
        });
        client.ping().await.expect("ping");
        let paths = seen.lock().expect("lock").clone();
        assert_eq!(paths, ["/_ping"], "see the module docs on API versions");
    }

    #[tokio::test]
    async fn exec_captures_output_status_and_stdin_bounded_signals_arrive_and_logs_read() {
        use bottle_engine::Exec as _;
        let t = Cleanup::new();
        let docker = connect();
        let volume = t.name("vol");
        docker
            .create_volume(&VolumeSpec {
                name: volume.clone(),
                labels: t.labels(),
                files: Vec::new(),
                seed_dirs: Vec::new(),
                owner: None,
                seed_image: IMAGE.to_owned(),
            })
            .await
            .expect("create volume");
        // PID 1 writes a mark on SIGHUP, as a sidecar's reload nudge does.
        let spec = ContainerSpec {
            init: false,
            user: "0:0".to_owned(),
            cmd: vec![
                "bash".to_owned(),
                "-c".to_owned(),
                "echo started; trap 'echo hup > /tmp/hup' HUP; while :; do sleep 0.1; done"
                    .to_owned(),
            ],
            ..container_spec(&t, Vec::new(), &volume)
        };
        docker.run_container(&spec).await.expect("run");
        let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];

        let out = docker
            .exec(&spec.name, &sh("echo out; echo err >&2; exit 3"), None, &[])
            .await
            .expect("exec");
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (3, "out\n", "err\n")
        );

        let out = docker
            .exec(&spec.name, &sh("id -u; cat"), Some("1000"), b"from stdin")
            .await
            .expect("exec as a user, with stdin");
        assert_eq!(out.stdout, "1000\nfrom stdin", "{out:?}");

        // A flood is cut at the bound, and the command still ends.
        let out = docker
            .exec(
                &spec.name,
                &sh("head -c 3000000 /dev/zero | tr '\\0' x"),
                None,
                &[],
            )
            .await
            .expect("exec flood");
        assert_eq!(out.code, 0);
        assert_eq!(out.stdout.len(), bottle_engine::MAX_EXEC_OUTPUT);

        docker.signal(&spec.name, "HUP").await.expect("signal");
        let mut seen = String::new();
        for _ in 0..50 {
            seen = docker
                .exec(&spec.name, &sh("cat /tmp/hup 2>/dev/null"), None, &[])
                .await
                .expect("exec")
                .stdout;
            if seen.contains("hup") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(seen, "hup\n");

        // Its log, time-stamped lines (what `audit` reads).
        let lines: Vec<String> = futures_util::StreamExt::collect::<Vec<_>>(
            docker.log_lines(&spec.name, false, 0, 4096),
        )
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("log lines");
        assert!(
            matches!(lines.as_slice(), [l] if l.ends_with("Z started")),
            "{lines:?}"
        );

        let missing = docker.exec(&t.name("nobody"), &sh("true"), None, &[]).await;
        assert!(
            matches!(missing, Err(EngineError::NotFound { .. })),
            "{missing:?}"
        );
        let missing = docker.signal(&t.name("nobody"), "HUP").await;
        assert!(
            matches!(missing, Err(EngineError::NotFound { .. })),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn runtimes_include_runc() {
        let docker = connect();
        let runtimes = docker.runtimes().await.expect("info");
        assert!(runtimes.iter().any(|r| r == "runc"), "{runtimes:?}");
    }
}

/// Hermetic: no daemon needed.
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_or_dead_socket_is_unreachable() {
        let err = Docker::connect_to("/nonexistent/bottle/docker.sock").expect_err("no socket");
        let EngineError::Unreachable(message) = &err else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("/nonexistent/bottle/docker.sock"),
            "{message}"
        );
        assert!(message.contains("DOCKER_HOST"), "{message}");

        let err = Docker::connect_to("tcp://localhost:2375").expect_err("tcp");
        assert!(matches!(err, EngineError::Unreachable(_)), "{err:?}");

        // Something is there, but it is not a daemon: the first request says so.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        std::fs::write(&path, b"").expect("write");
        let docker = Docker::connect_to(&format!("unix://{}", path.display())).expect("connect");
        let err = docker.list_networks(&[]).await.expect_err("not a socket");
        assert!(matches!(err, EngineError::Unreachable(_)), "{err:?}");
        let err = docker.ping().await.expect_err("not a socket");
        assert!(matches!(err, EngineError::Unreachable(_)), "{err:?}");
        assert_eq!(docker.api_calls(), 2);
    }
}
