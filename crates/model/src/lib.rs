//! `bottle-model`: `bottles.yaml` to the validated model. [`manifest`] reads and checks
//! the text (every problem located `file:line:column: field: message`); the types at this
//! crate's root are what the manifest means once every field has been checked;
//! [`provider`] holds what differs between agent CLIs (Claude Code, Codex);
//! [`codex_login`] Codex's `auth.json`, for an agent on the host's ChatGPT login.
//!
//! Stage two of the two-stage parse (see `manifest/`): nothing here carries spans or
//! raw YAML; every value is typed, every reference resolved, every path absolute and every
//! `from_env` value read from the host. The graph (`graph.rs`) and the node specs
//! (`nodes/`) are built from this model only.

pub mod codex_login;
pub mod manifest;
pub mod provider;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A host file the manifest names, read once when the manifest is loaded (so a file
/// that cannot be read is a located manifest error, and nothing later reads it again).
/// Its contents may be secret (an SSH key): `Debug` shows the path and size only.
#[derive(Clone, PartialEq, Eq)]
pub struct HostFile {
    /// Where it was read from (absolute).
    pub path: PathBuf,
    /// What it held.
    pub contents: Vec<u8>,
}

impl HostFile {
    /// The contents as text (lossy; the files read this way are PEM or TOML).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents).into_owned()
    }
}

impl fmt::Debug for HostFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostFile({}, {} bytes)",
            self.path.display(),
            self.contents.len()
        )
    }
}

/// A whole validated manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The manifest file, absolute.
    pub path: PathBuf,
    /// Project name: `project:` or the manifest directory's name, sanitised.
    pub project: String,
    /// Sandbox policies by name.
    pub bottles: BTreeMap<String, BottlePolicy>,
    /// Running bottles by agent name; each names a policy in `bottles`.
    pub agents: BTreeMap<String, Agent>,
}

impl Manifest {
    /// What `diff` and `apply` say on every run about choices that loosen a bottle:
    /// an agent with `remote_control` holds a credential of its own and its hosts are
    /// tunnelled unscanned.
    pub fn warnings(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, a)| a.remote_control)
            .map(|(name, _)| {
                format!(
                    "bottle {name}: remote_control: the agent holds its own claude.ai login, and \
                     what it sends to {} is tunnelled without interception or DLP",
                    provider::REMOTE_CONTROL_HOSTS.join(", ")
                )
            })
            .collect()
    }
}

/// A sandbox policy (`bottles.<name>`).
#[derive(Clone, Debug, PartialEq)]
pub struct BottlePolicy {
    pub image: ImageSource,
    pub runtime: RuntimeChoice,
    pub resources: Resources,
    pub env: BTreeMap<String, EnvValue>,
    pub egress: Egress,
    pub git: Vec<GitRemote>,
    pub supervise: bool,
}

/// Where the agent image comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// The provider's default Dockerfile, embedded in `bottle`.
    ProviderDefault,
    /// A Dockerfile of the user's; `context` defaults to the Dockerfile's directory.
    Dockerfile {
        dockerfile: PathBuf,
        context: PathBuf,
    },
    /// A Dockerfile the operator approved (`bottle queue approve`), built in the
    /// context of the bottle's own Dockerfile, or an empty one.
    Granted {
        dockerfile: String,
        context: Option<PathBuf>,
    },
}

/// `runtime:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RuntimeChoice {
    /// runsc when the engine lists it, else runc with a warning.
    #[default]
    Auto,
    Runc,
    Runsc,
}

impl RuntimeChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::Runc => "runc",
            RuntimeChoice::Runsc => "runsc",
        }
    }
}

/// `resources:`; absent fields take the defaults below.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resources {
    /// CPUs, may be fractional.
    pub cpus: f64,
    /// Memory limit in bytes.
    pub memory: u64,
    /// Maximum number of processes.
    pub pids: i64,
}

impl Resources {
    /// Defaults for an agent container.
    pub const AGENT_DEFAULT: Resources = Resources {
        cpus: 2.0,
        memory: 4 << 30,
        pids: 1024,
    };
    /// Limits of every sidecar container.
    pub const SIDECAR: Resources = Resources {
        cpus: 0.5,
        memory: 256 << 20,
        pids: 256,
    };
}

impl Default for Resources {
    fn default() -> Self {
        Resources::AGENT_DEFAULT
    }
}

/// A value that must never be printed: Debug and Display redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call sites are the few places allowed to see it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An environment value for the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    /// Written in the manifest.
    Literal(String),
    /// Copied from the host variable `var` when the manifest was validated. Treated as
    /// sensitive: hashed only as a keyed digest and never printed.
    FromEnv { var: String, value: Secret },
}

/// `egress:`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Egress {
    /// Hosts allowed without credentials: exact names or `*.suffix` wildcards, lowercased.
    pub allow: Vec<String>,
    /// Address blocks pipelock may connect to despite its SSRF guard (`a.b.c.d/n`).
    pub allow_cidrs: Vec<String>,
    pub routes: Vec<Route>,
    pub dlp: Dlp,
    /// Extra CA (PEM, read at load) trusted for upstream TLS besides webpki roots.
    pub upstream_ca: Option<HostFile>,
    /// `pipelock.image`: run the upstream pipelock project's image as the firewall, with
    /// this policy rendered in its own schema, instead of `bottle sidecar pipelock`.
    pub pipelock_image: Option<String>,
    /// `egress.responses`: what pipelock does with a response carrying prompt-injection
    /// shapes (default `block`).
    pub responses: bottle_contract::pipelock::Responses,
}

/// A credentialed (or passthrough) upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Lowercased host name.
    pub host: String,
    /// Optional path prefix, starting with `/`.
    pub path_prefix: Option<String>,
    pub auth: Option<RouteAuth>,
    pub roles: Vec<RouteRole>,
    pub tls_passthrough: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteAuth {
    pub scheme: AuthScheme,
    pub token: Secret,
    /// The host variable the token is read from (`from_env`): a name, not a secret;
    /// empty on a route bottle adds itself (an agent's `host_login`).
    pub var: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    Bearer,
    Basic,
    /// A named header carries the token verbatim.
    Header(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRole {
    /// The route is the agent's `ANTHROPIC_BASE_URL`.
    AnthropicBaseUrl,
    /// The route is the agent's `OPENAI_BASE_URL`.
    OpenaiBaseUrl,
    /// The route is Codex's ChatGPT backend, added for an agent's `host_login` (never
    /// written in a manifest): no environment, Codex's default URL.
    ChatgptLogin,
}

/// `egress.dlp`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dlp {
    pub enabled: bool,
    /// gitleaks-format TOML rules (read and compiled at load); built-in rules when absent.
    pub rules: Option<HostFile>,
}

impl Default for Dlp {
    fn default() -> Self {
        Dlp {
            enabled: true,
            rules: None,
        }
    }
}

/// `git:` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct GitRemote {
    pub name: String,
    pub upstream: String,
    /// Private key file on the host (absolute, `~` expanded), read at load: its path is
    /// kept out of build contexts, its contents go to git-gate only.
    pub identity_file: HostFile,
    pub known_host_key: String,
    pub allow_force: bool,
}

/// `agents.<name>`: one running bottle.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    /// The policy it runs under (a key of `Manifest::bottles`).
    pub bottle: String,
    pub provider: Provider,
    pub prompt: Option<String>,
    pub skills: Vec<Skill>,
    /// Host directory copied into the bottle (absolute).
    pub workspace: Option<PathBuf>,
    /// `host_login: true` (Codex): the host's ChatGPT login, read at load. Egress
    /// injects its token on the ChatGPT backend; the agent gets a stand-in `auth.json`.
    pub host_login: Option<codex_login::CodexLogin>,
    /// `remote_control: true` (Claude Code): the hosts Remote Control needs are
    /// tunnelled, and `bottle exec` starts Claude Code with `--remote-control`.
    pub remote_control: bool,
}

/// A skill: a directory on the host copied into the agent's `~/.claude/skills/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skill {
    pub name: String,
    /// `$BOTTLE_SKILLS_DIR/<name>` or `~/.claude/skills/<name>` (absolute; it exists).
    pub dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Provider {
    #[default]
    Claude,
    Codex,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Claude => "claude",
            Provider::Codex => "codex",
        }
    }
}
