//! The command line: argument parsing and one module per command. Commands load the
//! manifest (every problem reported before any Docker call), build the desired state,
//! and talk to Docker only through [`crate::engine`].

mod apply;
pub(crate) mod audit;
mod completions;
mod delete;
mod diff;
mod exec;
pub(crate) mod get;
mod logs;
pub(crate) mod queue;
mod render;
mod schema;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::graph::{self, DesiredState};
use crate::hash::DigestKey;
use crate::model::{Manifest, RuntimeChoice};
use crate::nodes::sidecar;
use bottle_core::runtime::RuntimeFacts;
use bottle_docker::Docker;

/// Run AI coding agents in sandboxed Docker bottles, declaratively.
#[derive(Debug, Parser)]
#[command(name = "bottle", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what `apply` would change; exit 0 in sync, 1 with differences, 2 on error.
    Diff(DiffArgs),
    /// Converge Docker to the manifest.
    Apply(ApplyArgs),
    /// Remove bottles (all of the project, or the NAMEs), dependents first.
    Delete(DeleteArgs),
    /// Show bottles and the state of their nodes.
    Get(GetArgs),
    /// Open a session inside a running agent (default: the provider's CLI).
    Exec(ExecArgs),
    /// Show the logs of a bottle's agent or one of its sidecars.
    Logs(LogsArgs),
    /// The supervise queue: what agents proposed, and the operator's verdicts.
    Queue(QueueArgs),
    /// Every decision of the bottles' sidecars, as one time-ordered stream.
    Audit(AuditArgs),
    /// Serve the operator's web page: bottles, the queue, grants, the audit stream.
    Console(ConsoleArgs),
    /// Check from inside running agents that each bottle keeps its promise; exit 0 when
    /// every check holds, 1 when one fails, 2 when a bottle is not running.
    Verify(VerifyArgs),
    /// Print the JSON Schema of bottles.yaml, for editors.
    ///
    /// E.g. `bottle schema > bottles.schema.json`, then start the manifest with
    /// `# yaml-language-server: $schema=bottles.schema.json`.
    Schema,
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish.
    ///
    /// E.g. `bottle completions bash > ~/.local/share/bash-completion/completions/bottle`.
    Completions(CompletionsArgs),
    /// Run a sidecar server (inside the sidecar image).
    #[command(hide = true)]
    Sidecar(crate::sidecar::SidecarArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The manifest.
    #[arg(short = 'f', long = "file", default_value = "bottles.yaml")]
    pub file: PathBuf,
    /// Output format on stdout.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
}

/// Where the bottles run (docs/design.md section 9).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Backend {
    /// The local Docker engine.
    #[default]
    Docker,
    /// A Kubernetes cluster: a namespace per project (`bottle-<project>`).
    Kubernetes,
}

/// The backend and, for Kubernetes, which cluster and registry. Global, so that a
/// command with subcommands (`queue`) takes them after its subcommand too.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Where the bottles run.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub backend: Backend,
    /// With `--backend kubernetes`: the kubeconfig context (default: its current one).
    #[arg(long, value_name = "NAME", global = true)]
    pub context: Option<String>,
    /// With `--backend kubernetes`: the kubeconfig file (default: KUBECONFIG, then
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// With `--backend kubernetes`: the registry the cluster pulls from; `bottle` pushes
    /// the images it builds there (`host:port`). `exec`, `logs` and `audit` need none.
    #[arg(long, env = "BOTTLE_KUBE_REGISTRY", value_name = "HOST", global = true)]
    pub registry: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Remove this project's objects that the manifest no longer wants.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub prune: bool,
    /// Operations run at once, at most.
    #[arg(long, default_value_t = crate::apply::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Keep converging after the first apply: on manifest edits, on engine events about
    /// the project's objects, and every --resync seconds; until SIGINT/SIGTERM, which
    /// leave the bottles running.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: seconds between full resyncs.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub resync: u64,
    /// Log format on stderr (`RUST_LOG` filters; --watch logs at info by default).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// With --watch: serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR", requires = "watch")]
    pub metrics: Option<std::net::SocketAddr>,
    /// When another apply or delete holds the project, wait for it instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
    /// How long to wait for what changed to be in force (sidecars serving, live config
    /// loaded): `90s`, `5m`...; past it, apply names what is not ready and exits 2.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Return once the engine has carried out the operations, without waiting for the
    /// sidecars to serve or to load changed config (they poll it about once a second).
    #[arg(long, conflicts_with = "timeout")]
    pub no_wait: bool,
    /// The IPv4 block the networks' subnets come from: each new network gets the first
    /// /28 of it that overlaps no network of the engine (any project's) and no route of
    /// the host.
    #[arg(long, env = "BOTTLE_SUBNET_POOL", value_name = "CIDR",
          default_value_t = crate::subnets::DEFAULT_POOL, value_parser = crate::subnets::parse_pool)]
    pub subnet_pool: ipnet::Ipv4Net,
}

/// A duration as `500ms`, `90s`, `10m`, `2h`, `1d` (`bottle_contract::duration`), or
/// plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(secs) if secs <= bottle_contract::duration::MAX.as_secs() => {
            Ok(std::time::Duration::from_secs(secs))
        }
        _ => bottle_contract::duration::parse(s),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The manifest whose project to delete.
    #[arg(short = 'f', long = "file", conflicts_with = "project")]
    pub file: Option<PathBuf>,
    /// The project to delete.
    #[arg(short = 'p', long = "project")]
    pub project: Option<String>,
    /// Only these bottles.
    pub names: Vec<String>,
    /// Remove the bottles' agent images too (kept by default as a build cache).
    #[arg(long)]
    pub images: bool,
    /// Keep the workspace volumes (what the agents wrote).
    #[arg(long)]
    pub keep_workspace: bool,
    /// When another apply or delete holds the project, wait for it instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The manifest naming the project (read for its names only).
    #[arg(short = 'f', long = "file", conflicts_with = "project")]
    pub file: Option<PathBuf>,
    /// The project.
    #[arg(short = 'p', long = "project")]
    pub project: Option<String>,
    /// Output format on stdout.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Which running bottle: its name, and the project when more than one has it.
#[derive(Debug, Args)]
pub struct BottleTarget {
    /// The bottle (agent) name.
    pub name: String,
    /// The project (default: the one of `bottles.yaml` here, else any project that has NAME).
    #[arg(short = 'p', long = "project")]
    pub project: Option<String>,
    /// A manifest naming the project (`-f` is `--follow` for `logs`).
    #[arg(long = "file", conflicts_with = "project")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: BottleTarget,
    /// The command to run (after `--`); default: the provider's CLI with the prompt.
    #[arg(last = true)]
    pub cmd: Vec<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: BottleTarget,
    /// The node: agent, agent-net, egress, pipelock, git-gate, supervise.
    #[arg(long, default_value = "agent")]
    pub node: String,
    /// Keep streaming.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The bottle (agent) name; every bottle of the project when omitted.
    pub name: Option<String>,
    /// The project (default: the one of `bottles.yaml` here; with NAME, any project that
    /// has it).
    #[arg(short = 'p', long = "project")]
    pub project: Option<String>,
    /// A manifest naming the project (`-f` is `--follow`, as for `logs`).
    #[arg(long = "file", conflicts_with = "project")]
    pub file: Option<PathBuf>,
    /// Only decisions since: a duration back from now (90s, 10m, 2h, 1d), an RFC 3339
    /// time or seconds since the epoch.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Keep streaming new decisions.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// Only refusals.
    #[arg(long)]
    pub denied: bool,
    /// Text lines, or JSON lines.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// A manifest naming a project to serve (repeatable); with it, a proposed Dockerfile
    /// is shown as a diff against the bottle's own.
    #[arg(short = 'f', long = "file")]
    pub file: Vec<PathBuf>,
    /// A project to serve (repeatable). With neither `-f` nor `-p`: bottles.yaml here,
    /// else every project that has objects on the engine (new ones appear as they come).
    #[arg(short = 'p', long = "project")]
    pub project: Vec<String>,
    /// Where to listen: a loopback address only (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bottle (agent) name; every bottle of the manifest (or of `-p`) when omitted.
    /// `-f` gives each bottle's runtime and allowlist (names only); with `-p` alone
    /// they are unknown.
    pub name: Option<String>,
    #[command(flatten)]
    pub target: GetArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub action: QueueAction,
    /// The manifest naming the project (default: bottles.yaml here).
    #[arg(short = 'f', long = "file", global = true, conflicts_with = "project")]
    pub file: Option<PathBuf>,
    /// The project.
    #[arg(short = 'p', long = "project", global = true)]
    pub project: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Pending proposals (id, bottle, kind, status, age, what and why).
    List {
        /// Decided proposals too.
        #[arg(long)]
        all: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// One proposal in full (a proposed Dockerfile included).
    Show { id: String },
    /// Grant a pending proposal: the next reconcile merges it into the desired state.
    Approve {
        id: String,
        /// Time-box the grant (`90s`, `10m`, `2h`, `1d`, `1h30m`): at its end every
        /// `apply` leaves it out again (`--watch` on time), and it shows as expired.
        #[arg(long = "for", value_parser = parse_grant_duration)]
        for_: Option<u64>,
    },
    /// Refuse a pending proposal; the agent sees the reason through proposal-status.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw an approved grant.
    Revoke { id: String },
}

fn parse_grant_duration(s: &str) -> Result<u64, String> {
    bottle_contract::supervise::parse_duration(s)
}

/// A command's failure with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Exit(pub i32);

/// Run a parsed command line; returns the exit status.
/// The line `bottle` prints for a command's error: `error: ` and the error with each of
/// its causes once (no error repeats its `#[source]` in its own message).
pub fn error_line(e: &anyhow::Error) -> String {
    format!("error: {e:#}")
}

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Diff(a) => diff::run(a).await,
        Command::Apply(a) => apply::run(a).await,
        Command::Delete(a) => delete::run(a).await,
        Command::Get(a) => get::run(a).await,
        Command::Exec(a) => exec::run(a).await,
        Command::Logs(a) => logs::run(a).await,
        Command::Queue(a) => queue::run(a).await,
        Command::Audit(a) => audit::run(a).await,
        Command::Console(a) => crate::console::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Schema => schema::run(),
        Command::Completions(a) => completions::run(a),
        Command::Sidecar(a) => crate::sidecar::run(a).await.map(|()| 0),
    }
}

/// Write `bytes` to stdout; a reader that has gone (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// Load and validate a manifest, reading `from_env` values from this process.
pub(crate) fn load_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let env = |k: &str| std::env::var(k).ok();
    crate::manifest::load(path, &env).map_err(anyhow::Error::new)
}

/// What a manifest names, for the commands that need no secrets (`delete`, `get`,
/// `logs`, `exec`, `audit`, `queue`, `verify`): nothing of the host is read, so an unset
/// `from_env` variable or a missing skill is not an error; bad YAML still is, located.
pub(crate) fn load_names(path: &Path) -> anyhow::Result<crate::manifest::Names> {
    crate::manifest::load_names(path).map_err(anyhow::Error::new)
}

/// The project named by `-f` or `-p` (the manifest read for its names only).
pub(crate) fn project_of(file: Option<&Path>, project: Option<&str>) -> anyhow::Result<String> {
    match (file, project) {
        (_, Some(p)) => Ok(p.to_string()),
        (Some(f), None) => Ok(load_names(f)?.project),
        (None, None) => Ok(load_names(Path::new("bottles.yaml"))?.project),
    }
}

/// Take the project's writer lock (one apply or delete at a time), or fail naming its
/// holder; with `wait`, wait for it.
async fn lock_project(project: &str, wait: bool) -> anyhow::Result<crate::edge::lock::ProjectLock> {
    use crate::edge::lock::{Holder, ProjectLock};
    let dir = ProjectLock::default_dir()?;
    Ok(ProjectLock::acquire(&dir, project, wait, &Holder::me()).await?)
}

/// The desired state of a manifest: every image context read and hashed (the CAs are
/// minted only when their volumes are created), the manifest's warnings printed on
/// stderr. No Docker call.
fn desired_state(manifest: &Manifest) -> anyhow::Result<DesiredState> {
    for w in manifest.warnings() {
        eprintln!("warning: {w}");
    }
    let key = digest_key()?;
    let binary = crate::edge::host::find_sidecar_binary()?;
    let context = crate::edge::host::sidecar_context(&binary)?;
    let side = sidecar::image_object(&key, context);
    let roots = crate::edge::host::trust_roots()?;
    // Build context digests by file metadata, kept across runs: a no-op reads no content.
    // Loaded once per process: a watch's later loads find them in memory.
    static LOADED: std::sync::Once = std::sync::Once::new();
    let digests = crate::edge::cache_path("context-digests");
    if let Some(p) = &digests {
        LOADED.call_once(|| crate::images::load_digests(p));
    }
    let desired = graph::desired(manifest, &key, &side, &roots)?;
    if let Some(p) = &digests
        && let Err(e) = crate::images::save_digests(p)
    {
        tracing::debug!(path = %p.display(), error = %e, "the context digest cache was not saved");
    }
    Ok(desired)
}

/// This host's key for digests of secrets, created on first use.
pub(crate) fn digest_key() -> anyhow::Result<DigestKey> {
    let key_path = crate::edge::digest_key::default_path()
        .context("neither XDG_STATE_HOME nor HOME is set: nowhere to keep the digest key")?;
    crate::edge::digest_key::load_or_create(&key_path)
        .with_context(|| format!("reading digest key {}", key_path.display()))
}

/// A running bottle's agent container, found by labels.
struct AgentRef {
    project: String,
    container: String,
    provider: Option<crate::model::Provider>,
}

/// The project `target` names: `-p`, else `--file`'s; `None` for any project.
fn target_project(target: &BottleTarget) -> anyhow::Result<Option<String>> {
    Ok(match (&target.project, &target.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(load_names(f)?.project),
        (None, None) => None,
    })
}

/// Find the agent container of `target` on `engine`, of `project` (or of any project);
/// a clear error when there is none, it is not running, or the name is ambiguous across
/// projects.
async fn find_agent<E: crate::engine::Engine>(
    engine: &E,
    target: &BottleTarget,
    project: Option<&str>,
) -> anyhow::Result<AgentRef> {
    use crate::labels;
    let mut filter = labels::managed_filter();
    filter.push(format!("{}={}", labels::BOTTLE, target.name));
    filter.push(format!("{}=agent", labels::NODE));
    if let Some(p) = project {
        filter.push(format!("{}={p}", labels::PROJECT));
    }
    agent_in(&engine.list_containers(&filter).await?, &target.name)
}

/// The agent container of bottle `name` among `found` (bottle's containers of one
/// project, or of any project when the name alone is known): the errors of
/// [`find_agent`].
fn agent_in(found: &[crate::engine::ContainerInfo], name: &str) -> anyhow::Result<AgentRef> {
    use crate::engine::ContainerState;
    use crate::labels;
    let found: Vec<_> = found
        .iter()
        .filter(|c| {
            let label = |key: &str| c.labels.get(key).map(String::as_str);
            label(labels::BOTTLE) == Some(name) && label(labels::NODE) == Some("agent")
        })
        .collect();
    let hint = "run `bottle apply -f <manifest>` to create it";
    let c = match found.as_slice() {
        [] => anyhow::bail!("no bottle named {name} exists; {hint}"),
        [one] => one,
        many => {
            let projects: Vec<&str> = many
                .iter()
                .filter_map(|c| c.labels.get(labels::PROJECT).map(String::as_str))
                .collect();
            anyhow::bail!(
                "bottle {name} exists in several projects ({}): choose one with -p",
                projects.join(", ")
            )
        }
    };
    if c.state != ContainerState::Running {
        anyhow::bail!("bottle {name} is not running; {hint}");
    }
    let provider = match c.labels.get(labels::PROVIDER).map(String::as_str) {
        Some("codex") => Some(crate::model::Provider::Codex),
        Some("claude") => Some(crate::model::Provider::Claude),
        _ => None,
    };
    Ok(AgentRef {
        project: c.labels.get(labels::PROJECT).cloned().unwrap_or_default(),
        container: c.name.clone(),
        provider,
    })
}

/// Connect to the engine. No request is made here: an unreachable engine shows at the
/// first list call, so a no-op reconcile costs only its four list calls.
pub(crate) async fn connect() -> anyhow::Result<Docker> {
    Ok(Docker::connect()?)
}

/// The Kubernetes engine of `project` (docs/design.md section 9.10): the cluster must
/// answer and the project's namespace be ours (made if missing) before anything else;
/// images are built by the local Docker and pushed to `--registry`.
/// With `make`, the namespace is made when missing (`apply`); else nothing is (`diff`,
/// `get`, `delete`).
pub(crate) async fn connect_kube(
    project: &str,
    args: &BackendArgs,
    make: bool,
) -> anyhow::Result<bottle_kube::engine::KubeEngine<Docker>> {
    let registry = args.registry.clone().context(
        "--backend kubernetes needs --registry (or BOTTLE_KUBE_REGISTRY): the registry the \
         cluster pulls the bottles' images from",
    )?;
    kube_engine(project, args, &registry, make).await
}

/// The Kubernetes engine of `project` for sessions in its running bottles (`exec`,
/// `logs`, `audit`): no registry needed, nothing made. The project must be known (the
/// namespace is the project's): `project`, else the one of `bottles.yaml` here.
pub(crate) async fn connect_kube_sessions(
    project: Option<&str>,
    args: &BackendArgs,
) -> anyhow::Result<bottle_kube::engine::KubeEngine<Docker>> {
    let here = Path::new("bottles.yaml");
    let project = match project {
        Some(p) => p.to_string(),
        None if here.exists() => load_names(here)?.project,
        None => anyhow::bail!(
            "--backend kubernetes needs the project (each has its own namespace): give -p \
             PROJECT or --file MANIFEST, or run where bottles.yaml is"
        ),
    };
    let registry = args.registry.clone().unwrap_or_default();
    kube_engine(&project, args, &registry, false).await
}

async fn kube_engine(
    project: &str,
    args: &BackendArgs,
    registry: &str,
    make: bool,
) -> anyhow::Result<bottle_kube::engine::KubeEngine<Docker>> {
    let target = bottle_kube::Target {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
    };
    let cluster = bottle_kube::Cluster::connect(&target)
        .await
        .context("connecting to the Kubernetes cluster")?;
    let settings = bottle_kube::engine::Settings::new(registry);
    let docker = Docker::connect()?;
    let engine = if make {
        bottle_kube::engine::KubeEngine::connect(cluster, project, settings, docker).await
    } else {
        bottle_kube::engine::KubeEngine::open(cluster, project, settings, docker).await
    };
    engine.with_context(|| format!("reaching the Kubernetes cluster for project {project}"))
}

/// Containers' log lines, on either backend: each line the engine's RFC 3339 time stamp,
/// a space and the text (what `bottle_contract::audit` parses).
#[allow(async_fn_in_trait)] // used through generics only
pub(crate) trait LogLines {
    /// `container`'s lines from `since` (seconds since the epoch, 0 for all), each cut at
    /// `max_line` bytes; with `follow`, until the container stops.
    async fn log_lines(
        &self,
        container: &str,
        follow: bool,
        since: i64,
        max_line: usize,
    ) -> Result<bottle_kube::engine::session::LogLines, crate::engine::EngineError>;
}

impl LogLines for Docker {
    async fn log_lines(
        &self,
        container: &str,
        follow: bool,
        since: i64,
        max_line: usize,
    ) -> Result<bottle_kube::engine::session::LogLines, crate::engine::EngineError> {
        let since = i32::try_from(since).unwrap_or(i32::MAX);
        Ok(Box::pin(Docker::log_lines(
            self, container, follow, since, max_line,
        )))
    }
}

impl LogLines for bottle_kube::engine::KubeEngine<Docker> {
    async fn log_lines(
        &self,
        container: &str,
        follow: bool,
        since: i64,
        max_line: usize,
    ) -> Result<bottle_kube::engine::session::LogLines, crate::engine::EngineError> {
        bottle_kube::engine::KubeEngine::log_lines(self, container, follow, since, max_line).await
    }
}

/// The engine's runtimes and the verdict on its runsc (probed once per engine and runsc
/// build, then cached: [`crate::edge::runsc`]).
async fn runtime_facts(docker: &Docker) -> anyhow::Result<Arc<RuntimeFacts>> {
    let cache = crate::edge::runsc::default_path();
    let facts = crate::edge::runsc::facts(docker, cache.as_deref())
        .await
        .context("checking the engine's runsc (gVisor)")?;
    Ok(Arc::new(facts))
}

/// `desired` with the engine's runtime facts attached, when a container of it asks for
/// gVisor (`runtime: auto` or `runsc`); each bottle's runtime warning printed on stderr.
async fn with_runtime_facts(
    docker: &Docker,
    mut desired: DesiredState,
) -> anyhow::Result<DesiredState> {
    let wants_gvisor = desired.objects.values().any(|d| {
        matches!(&d.spec, crate::nodes::ObjectSpec::Container(_, c) if *c != RuntimeChoice::Runc)
    });
    if wants_gvisor {
        desired.runtimes = Some(runtime_facts(docker).await?);
        for w in bottle_core::runtime::warnings(&desired) {
            eprintln!("warning: {w}");
        }
    }
    Ok(desired)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Three levels (graph -> build context -> io), through `main`'s path: each cause
    /// is printed once.
    #[test]
    fn an_error_prints_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = graph::GraphError::Image {
            bottle: "dev".into(),
            source: crate::images::ImageError::Io {
                path: "/nonexistent/ctx".into(),
                source: io,
            },
        };
        assert_eq!(
            error_line(&anyhow::Error::new(e)),
            "error: bottle dev: reading build context /nonexistent/ctx: entity not found"
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The backend flags are global: `queue` takes them after its subcommand too, and
    /// the session commands take them.
    #[test]
    fn every_command_on_a_bottle_takes_the_backend() {
        let backend = |args: &[&str]| -> Backend {
            let cli = Cli::try_parse_from(args).expect("parses");
            match cli.command {
                Command::Queue(a) => a.backend.backend,
                Command::Exec(a) => a.backend.backend,
                Command::Logs(a) => a.backend.backend,
                Command::Audit(a) => a.backend.backend,
                Command::Verify(a) => a.target.backend.backend,
                other => panic!("{other:?}"),
            }
        };
        let k = Backend::Kubernetes;
        assert_eq!(
            backend(&["bottle", "queue", "list", "--backend", "kubernetes"]),
            k
        );
        assert_eq!(
            backend(&["bottle", "queue", "--backend", "kubernetes", "list"]),
            k
        );
        assert_eq!(
            backend(&["bottle", "exec", "dev", "--backend", "kubernetes"]),
            k
        );
        assert_eq!(
            backend(&["bottle", "logs", "dev", "-f", "--backend", "kubernetes"]),
            k
        );
        assert_eq!(backend(&["bottle", "audit", "--backend", "kubernetes"]), k);
        assert_eq!(backend(&["bottle", "verify", "--backend", "kubernetes"]), k);
        assert_eq!(backend(&["bottle", "exec", "dev"]), Backend::Docker);
    }
}
