//! The narrow seam between `bottle` and a container engine.
//!
//! Everything the reconciler needs from Docker goes through [`Engine`]: one list call per
//! object type, create/remove per object, image build, and the engine's runtimes. There
//! are two implementations: `bottle_docker::Docker` on bollard, and [`fake::FakeEngine`] in
//! memory, so the planner and executor are tested without an engine (as youki's
//! `Syscall`). Specs passed in here are fully resolved: the engine layer makes no policy
//! decisions.

#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod seed_tar;

use std::collections::BTreeMap;

/// Labels attached to an object.
pub use bottle_contract::Labels;

/// A failure talking to the engine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached at all (socket missing, daemon down).
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// The object does not exist.
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// The object already exists (a name conflict).
    #[error("{kind} {name} already exists")]
    Conflict { kind: &'static str, name: String },
    /// An image build failed; `log` is the tail of the build output.
    #[error("building image {tag} failed: {log}")]
    Build { tag: String, log: String },
    /// The subnet asked for a network overlaps one the engine already has (Docker: "Pool
    /// overlaps with other one on this address space"): someone took it first.
    #[error("network {name}: subnet {subnet} overlaps a network the engine has")]
    SubnetTaken { name: String, subnet: String },
    /// The engine judged the object itself unacceptable: invalid, or forbidden by the
    /// cluster's policy (Kubernetes' 422 and 403: a LimitRange, a quota, admission,
    /// RBAC). `message` is the engine's own words; the CLI places it at the manifest
    /// field the refused value came from, where it came from one.
    #[error("{op} {name}: {message}")]
    Refused {
        op: &'static str,
        name: String,
        message: String,
    },
    /// Any other error the engine returned.
    #[error("{op} {name}: {message}")]
    Api {
        op: &'static str,
        name: String,
        message: String,
    },
}

/// A network as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub labels: Labels,
    pub internal: bool,
    /// The subnets of its IPAM config (IPv4 and IPv6), whoever chose them.
    pub subnets: Vec<ipnet::IpNet>,
}

/// A volume as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub labels: Labels,
}

/// An image as listed: one entry per repo tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// `repo:tag`.
    pub tag: String,
    pub id: String,
    pub labels: Labels,
}

/// Coarse container state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    /// Created, exited, dead, paused...: anything but running.
    NotRunning,
}

/// A container as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Name without the leading `/`.
    pub name: String,
    pub id: String,
    pub image: String,
    pub labels: Labels,
    pub state: ContainerState,
    /// Names of the networks it is attached to.
    pub networks: Vec<String>,
    /// When it was created, unix seconds (0 when the engine did not say).
    pub created: u64,
}

/// A network to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: Labels,
    /// No route out (`docker network create --internal`).
    pub internal: bool,
    /// Driver options (`docker network create -o KEY=VALUE`).
    pub options: BTreeMap<String, String>,
    /// Its IPv4 subnet (`docker network create --subnet`), or `None` for one from the
    /// engine's own pools. Chosen by the executor when it creates the network, never
    /// part of the desired spec (nor of its hash).
    pub subnet: Option<ipnet::Ipv4Net>,
}

/// A file to place in a volume.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path relative to the volume root.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl std::fmt::Debug for VolumeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contents may be key material: never print them.
        f.debug_struct("VolumeFile")
            .field("path", &self.path)
            .field("len", &self.contents.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// A volume to create, optionally seeded with files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub labels: Labels,
    /// Written once at creation. Seeding runs a helper container from `seed_image`
    /// that is created, never started, and removed again (one for all the volumes of
    /// one [`Engine::create_volumes`] call with this image).
    pub files: Vec<VolumeFile>,
    /// Host directories copied in at creation, read only then (not at plan time).
    pub seed_dirs: Vec<SeedDir>,
    /// Owner (uid, gid) of the volume's root directory; root when absent.
    pub owner: Option<(u64, u64)>,
    pub seed_image: String,
}

impl VolumeSpec {
    /// Does making it take more than creating it: files, host trees, or its root's owner
    /// (what a seeding helper is for)?
    pub fn has_content(&self) -> bool {
        !(self.files.is_empty() && self.seed_dirs.is_empty() && self.owner.is_none())
    }

    /// The labels of the helper that seeds `specs` together, in either backend: those
    /// they all share (project, bottle...), so that one left behind by a crash is one of
    /// the project's objects, and `bottle.seeding` naming them, so that the next plan
    /// makes them anew (docs/design.md section 1.6).
    pub fn seeding_labels(specs: &[&VolumeSpec]) -> Labels {
        let mut labels = specs.first().map(|s| s.labels.clone()).unwrap_or_default();
        labels.retain(|k, v| specs.iter().all(|s| s.labels.get(k) == Some(&*v)));
        labels.insert(
            bottle_contract::labels::SEEDING.to_owned(),
            bottle_contract::labels::seeding_value(specs.iter().map(|s| s.name.as_str())),
        );
        labels
    }
}

/// A host directory tree to copy into a volume, every entry owned by `uid:gid`.
/// Symlinks are copied as links, never followed; other special files are skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedDir {
    pub host: std::path::PathBuf,
    /// Where in the volume, relative to its root; empty for the root itself.
    pub target: String,
    pub uid: u64,
    pub gid: u64,
}

/// A mount of a named volume or a tmpfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    Volume {
        name: String,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        size_bytes: i64,
    },
}

/// A container to create and start. The first network is attached at create time; the
/// others are connected before start (API 1.41 takes one network at create). Its
/// `Debug` shows the environment's names only: values may be secrets.
#[derive(Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: Labels,
    pub cmd: Vec<String>,
    /// `KEY=value` pairs. May hold values from the host environment: never log them.
    pub env: Vec<String>,
    pub user: String,
    pub networks: Vec<String>,
    /// DNS aliases on every network.
    pub aliases: Vec<String>,
    pub mounts: Vec<Mount>,
    pub cap_add: Vec<String>,
    pub memory: i64,
    pub nano_cpus: i64,
    pub pids: i64,
    /// `None` uses the engine's default runtime.
    pub runtime: Option<String>,
    pub working_dir: Option<String>,
    /// Run docker-init as PID 1.
    pub init: bool,
    /// Namespaced kernel settings (`--sysctl KEY=VALUE`).
    pub sysctls: BTreeMap<String, String>,
    /// The network (one of `networks`) whose gateway address becomes the container's
    /// DNS server (`--dns`), looked up when the container is created: Docker's embedded
    /// DNS then forwards the names it does not know there, on that network.
    pub dns_gateway_of: Option<String>,
    /// Join this running container's network namespace (`--network container:NAME`)
    /// instead of attaching networks: `networks`, `aliases` and `dns_gateway_of` are
    /// then empty, and the container shares the other's DNS settings.
    pub network_of: Option<String>,
    /// Host device nodes given to the container at the same path (`--device`).
    pub devices: Vec<String>,
    /// The command that reports the container's readiness, run through [`Exec`]: exit 0
    /// when it serves, its status (`bottle_contract::status`) on stdout. `None` when
    /// the container says nothing (the agent, a foreign image): running is ready. Not
    /// given to the engine at creation.
    pub probe: Option<Vec<String>>,
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self
            .env
            .iter()
            .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
            .collect();
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("labels", &self.labels)
            .field("cmd", &self.cmd)
            .field("env (names only)", &env)
            .field("user", &self.user)
            .field("networks", &self.networks)
            .field("aliases", &self.aliases)
            .field("mounts", &self.mounts)
            .field("cap_add", &self.cap_add)
            .field("memory", &self.memory)
            .field("nano_cpus", &self.nano_cpus)
            .field("pids", &self.pids)
            .field("runtime", &self.runtime)
            .field("working_dir", &self.working_dir)
            .field("init", &self.init)
            .field("sysctls", &self.sysctls)
            .field("dns_gateway_of", &self.dns_gateway_of)
            .field("network_of", &self.network_of)
            .field("devices", &self.devices)
            .field("probe", &self.probe)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_failed_is_the_operations_error() {
        let out = |code| ExecOutput {
            code,
            stdout: String::new(),
            stderr: "no such file\n".into(),
        };
        assert_eq!(out(0).succeeded("op", "c", "x"), Ok(out(0)));
        assert_eq!(
            out(2)
                .succeeded("op", "c", "`x`")
                .map_err(|e| e.to_string()),
            Err("op c: `x` exited 2: no such file".to_string())
        );
    }

    #[test]
    fn log_lines_are_split_and_cut() {
        let mut buf = Vec::new();
        let mut ready = std::collections::VecDeque::new();
        split_log_lines(&mut buf, b"2024 a\n2024 bcdefgh", 6, &mut ready);
        assert_eq!(ready, ["2024 a"]);
        split_log_lines(&mut buf, b"ij\n\n", 6, &mut ready);
        assert_eq!(ready, ["2024 a", "2024 b", ""]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_container_specs_debug_names_its_environment_without_values() {
        let spec = ContainerSpec {
            name: "c".into(),
            image: "i".into(),
            labels: Labels::new(),
            cmd: vec![],
            env: vec!["TOKEN=s3cr3t-value".into(), "PLAIN".into()],
            user: "1000".into(),
            networks: vec![],
            aliases: vec![],
            mounts: vec![],
            cap_add: vec![],
            memory: 0,
            nano_cpus: 0,
            pids: 0,
            runtime: None,
            working_dir: None,
            init: false,
            sysctls: BTreeMap::new(),
            dns_gateway_of: None,
            network_of: None,
            devices: vec![],
            probe: None,
        };
        let shown = format!("{spec:?}");
        assert!(
            shown.contains("TOKEN") && shown.contains("PLAIN"),
            "{shown}"
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}

/// An image to build from a tar build context.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// `repo:tag`.
    pub tag: String,
    pub labels: Labels,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    /// The build context.
    pub context: BuildContext,
}

/// What an image is built from: a tar made in memory (small contexts: the sidecar
/// image, the git-gate), or files on the host, tarred while the build streams them, so a
/// plan that builds nothing reads no file and holds no tar.
#[derive(Clone, Debug)]
pub enum BuildContext {
    /// An uncompressed tar (shared: desired states built from one manifest hold one copy).
    Tar(bytes::Bytes),
    /// Entries in tar order, read when the build runs.
    Files(std::sync::Arc<ContextFiles>),
}

/// The entries of a build context, in the order they go into the tar.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ContextFiles {
    pub entries: Vec<ContextEntry>,
}

/// One file of a build context.
#[derive(Debug, PartialEq, Eq)]
pub struct ContextEntry {
    /// Its path in the tar (relative, `/`-separated).
    pub path: String,
    /// 0o644 or 0o755.
    pub mode: u32,
    pub data: EntryData,
}

/// Where a context file's bytes come from.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryData {
    /// Held (a Dockerfile made by bottle).
    Inline(bytes::Bytes),
    /// A host file of `size` bytes, read when the tar is written.
    Host { path: std::path::PathBuf, size: u64 },
}

impl ContextFiles {
    /// Write the deterministic tar of the entries (mtime 0, uid and gid 0, in entry
    /// order) to `w`, reading host files as it goes. A host file is sent as it is now,
    /// as Docker would send it: when it changed since it was hashed, the tag is stale
    /// until the next plan, which sees the change and builds again.
    pub fn write_tar(&self, w: impl std::io::Write) -> std::io::Result<()> {
        use std::io::Read as _;
        let mut b = tar::Builder::new(w);
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            match &e.data {
                EntryData::Inline(bytes) => {
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, &e.path, &bytes[..])?;
                }
                EntryData::Host { path, .. } => {
                    let f = std::fs::File::open(path)?;
                    let size = f.metadata()?.len();
                    h.set_size(size);
                    b.append_data(&mut h, &e.path, f.take(size))?;
                }
            }
        }
        b.into_inner()?.flush()
    }

    /// The whole tar in memory (tests, and engines that cannot stream).
    pub fn to_tar(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_tar(&mut out)?;
        Ok(out)
    }
}

/// What is observed in one pass: one list call per object type.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub networks: Vec<NetworkInfo>,
    pub volumes: Vec<VolumeInfo>,
    pub containers: Vec<ContainerInfo>,
    pub images: Vec<ImageInfo>,
}

/// The bridge driver option that leaves the host's bridge without an IPv4 address.
pub const INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";

/// An engine event (a container died, a volume was removed...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The object type: `container`, `network`, `volume`, `image`...
    pub kind: String,
    /// What happened: `create`, `start`, `die`, `destroy`, `connect`...
    pub action: String,
    /// The object's ID (for images, the reference).
    pub id: String,
    /// The actor's attributes: `name`, and for containers and volumes their labels.
    pub attributes: BTreeMap<String, String>,
    /// When, in nanoseconds since the epoch.
    pub time_nano: i64,
}

/// The operations `bottle` needs from a container engine.
///
/// List calls filter by label server-side (`key=value` strings, ANDed).
#[allow(async_fn_in_trait)] // used through generics only, on one task; no Send bound needed
pub trait Engine {
    async fn list_networks(&self, labels: &[String]) -> Result<Vec<NetworkInfo>, EngineError>;
    async fn list_volumes(&self, labels: &[String]) -> Result<Vec<VolumeInfo>, EngineError>;
    /// All containers, running or not.
    async fn list_containers(&self, labels: &[String]) -> Result<Vec<ContainerInfo>, EngineError>;
    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageInfo>, EngineError>;

    async fn create_network(&self, spec: &NetworkSpec) -> Result<(), EngineError>;
    /// Removing a missing network succeeds.
    async fn remove_network(&self, name: &str) -> Result<(), EngineError>;

    /// Create the volume and seed it ([`create_volumes`](Self::create_volumes) of one).
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<(), EngineError> {
        self.create_volumes(std::slice::from_ref(spec)).await
    }
    /// Create the volumes (all missing: an existing one is the caller's error) and seed
    /// those with content, through one helper container per seed image rather than one
    /// per volume. All or nothing: on any failure the volumes made here are removed
    /// again, so none is left half-seeded to look created.
    async fn create_volumes(&self, specs: &[VolumeSpec]) -> Result<(), EngineError>;
    /// Write `spec.files` into the existing volume `spec.name`, over what is there (a
    /// live volume's new revision). A missing volume is an error, never created.
    async fn rewrite_volume(&self, spec: &VolumeSpec) -> Result<(), EngineError>;
    /// Removing a missing volume succeeds.
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError>;

    /// Create, connect the extra networks, and start.
    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), EngineError>;
    /// Start an existing stopped container.
    async fn start_container(&self, name: &str) -> Result<(), EngineError>;
    /// Force-remove (kill if running). Removing a missing container succeeds.
    async fn remove_container(&self, name: &str) -> Result<(), EngineError>;

    async fn build_image(&self, spec: &BuildSpec) -> Result<(), EngineError>;
    /// Removing a missing or in-use image succeeds (in-use images are left alone).
    async fn remove_image(&self, tag: &str) -> Result<(), EngineError>;

    /// Names of the runtimes the engine offers (`docker info`).
    async fn runtimes(&self) -> Result<Vec<String>, EngineError>;
}

/// The engine's event stream and liveness: what `apply --watch` follows, and how it
/// knows the engine is back after the stream was lost.
#[allow(async_fn_in_trait)] // used through generics only
pub trait Events {
    /// Engine events from `since` (unix seconds; replayed by the engine) on, matching
    /// `filters` (for example `{"type": ["container"], "label": ["bottle.managed=true"]}`).
    /// The stream is lazy (nothing is asked before it is first polled) and ends only on
    /// an error or when the engine closes it.
    fn events(
        &self,
        since: Option<i64>,
        filters: &std::collections::HashMap<String, Vec<String>>,
    ) -> impl futures_util::Stream<Item = Result<Event, EngineError>> + Send + 'static;

    /// Does the engine answer?
    async fn ping(&self) -> Result<(), EngineError>;
}

/// Small files in a running container's filesystem: how `bottle queue` reads the
/// supervise state volume and writes decisions into it, through the engine (nothing on
/// a bottle's network can reach this path).
#[allow(async_fn_in_trait)] // used through generics only
pub trait VolumeFiles {
    /// The regular files directly in `dir` of `container` (name, contents); an empty
    /// list when `dir` does not exist.
    async fn read_dir_files(
        &self,
        container: &str,
        dir: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, EngineError>;

    /// Write `contents` as `dir/name` in `container`; `dir` is created when missing.
    async fn write_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), EngineError>;
}

/// A runtime the engine has registered (`docker info`'s `Runtimes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeEntry {
    /// The name containers ask for (`runc`, `runsc`).
    pub name: String,
    /// The binary's path on the engine's host.
    pub path: String,
    /// The arguments the engine passes it (`runtimeArgs`).
    pub args: Vec<String>,
}

/// What the engine says of itself and its runtimes: what a probe verdict is cached by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The engine's ID (`docker info`'s `ID`), stable across restarts.
    pub engine_id: String,
    /// Every registered runtime, by name.
    pub runtimes: Vec<RuntimeEntry>,
}

/// Trying a runtime before an agent gets it: the engine's runtimes, and one throwaway
/// container under one of them (no network, no capability, removed afterwards).
#[allow(async_fn_in_trait)] // used through generics only
pub trait RuntimeProbe {
    /// The engine's ID and its registered runtimes.
    async fn runtime_info(&self) -> Result<RuntimeInfo, EngineError>;

    /// Run `cmd` in a new container of `image` under `runtime`, wait for it to end,
    /// and remove it: what it printed (each stream cut at [`MAX_EXEC_OUTPUT`] bytes)
    /// and its exit status.
    async fn probe_runtime(
        &self,
        runtime: &str,
        image: &str,
        cmd: &[String],
    ) -> Result<ExecOutput, EngineError>;
}

/// What a command run in a container printed (each stream cut at [`MAX_EXEC_OUTPUT`]
/// bytes) and how it exited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit status; -1 when the engine did not report one.
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// `self` when the command exited 0; else `op`'s error on `name`, saying that `what`
    /// exited with its status and what it printed on stderr.
    pub fn succeeded(self, op: &'static str, name: &str, what: &str) -> Result<Self, EngineError> {
        if self.code == 0 {
            return Ok(self);
        }
        Err(EngineError::Api {
            op,
            name: name.into(),
            message: format!("{what} exited {}: {}", self.code, self.stderr.trim()),
        })
    }
}

/// The most kept of each stream of an [`Exec::exec`]: the rest is read and dropped.
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;

/// Whether `labels` pass the list filters `filters`, as the engines read them (Docker's
/// `label` filter): `key=value` asks for that value, a bare `key` for the key alone; all
/// must hold. Every engine that filters in memory calls this.
pub fn matches_labels(labels: &Labels, filters: &[String]) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).map(String::as_str) == Some(v),
        None => labels.contains_key(f.as_str()),
    })
}

/// A container's log as lines (without their `\n`): `chunks` as the engine sends them,
/// cut anywhere, split by [`split_log_lines`] (a line longer than `max_line` bytes is cut
/// there, so memory stays bounded). An error is passed on and ends the stream. Both
/// engines' log readers make their lines with it.
pub fn log_lines<B: AsRef<[u8]>>(
    chunks: impl futures_util::Stream<Item = Result<B, EngineError>> + Send + Unpin + 'static,
    max_line: usize,
) -> impl futures_util::Stream<Item = Result<String, EngineError>> + Send + 'static {
    use futures_util::StreamExt;
    let state = (
        chunks,
        Vec::<u8>::new(),
        std::collections::VecDeque::new(),
        false,
    );
    futures_util::stream::unfold(
        state,
        move |(mut chunks, mut buf, mut ready, mut done)| async move {
            loop {
                if let Some(line) = ready.pop_front() {
                    return Some((Ok(line), (chunks, buf, ready, done)));
                }
                if done {
                    return None;
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        split_log_lines(&mut buf, chunk.as_ref(), max_line, &mut ready)
                    }
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(e), (chunks, buf, ready, done)));
                    }
                    None => {
                        done = true;
                        if !buf.is_empty() {
                            ready.push_back(String::from_utf8_lossy(&buf).into_owned());
                            buf.clear();
                        }
                    }
                }
            }
        },
    )
}

/// Append `chunk` of a container's log to the line being read (`buf`): each complete
/// line (without its `\n`) goes to `ready`, the rest stays in `buf`; a line is cut at
/// `max_line` bytes (the rest of it dropped).
pub fn split_log_lines(
    buf: &mut Vec<u8>,
    chunk: &[u8],
    max_line: usize,
    ready: &mut std::collections::VecDeque<String>,
) {
    for &b in chunk {
        if b == b'\n' {
            ready.push_back(String::from_utf8_lossy(buf).into_owned());
            buf.clear();
        } else if buf.len() < max_line {
            buf.push(b);
        }
    }
}

/// Commands run in a running container with their output captured, and signals: how
/// the host reads a sidecar's readiness (`bottle sidecar probe`), nudges a sidecar to
/// reload a rewritten config volume (SIGHUP), and how `bottle verify` checks a bottle
/// from inside its agent. Through the engine's API only: nothing on a bottle's network
/// reaches these paths.
#[allow(async_fn_in_trait)] // used through generics only
pub trait Exec {
    /// Run `cmd` in `container` (as `user`, or the container's user), no TTY, with
    /// `stdin` as its standard input; wait for it to end.
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        user: Option<&str>,
        stdin: &[u8],
    ) -> Result<ExecOutput, EngineError>;

    /// Send `signal` (`HUP`, `TERM`...) to the container's main process. A stopped or
    /// missing container is an error.
    async fn signal(&self, container: &str, signal: &str) -> Result<(), EngineError>;
}
