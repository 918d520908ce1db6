//! pipelock's configuration as the host writes it and the sidecar reads it: a JSON file in
//! the bottle's pipelock config volume (live: rewritten in place, reloaded by pipelock and
//! egress). It holds policy only (host names, CIDRs, DLP rules), never a credential.

use serde::{Deserialize, Serialize};

/// Port it listens on, on net-internal.
pub const PORT: u16 = 8888;

/// Set (to `1`) by the node: take the gateway address when started as root.
pub const GATEWAY_ENV: &str = "BOTTLE_PIPELOCK_GATEWAY";

/// The UDP port on the gateway address where agent-net reports attempts.
pub const REPORT_PORT: u16 = 4790;

/// Where the config volume is mounted in the pipelock container.
pub const MOUNT: &str = "/etc/bottle/pipelock";
/// The config file inside the volume.
pub const FILE: &str = "config.json";
/// Environment variable naming the config file.
pub const ENV: &str = "BOTTLE_PIPELOCK_CONFIG";

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Allowed hosts: exact names or `*.suffix` (subdomains of suffix, not the suffix).
    pub allow: Vec<String>,
    /// Hosts of credentialed routes: allowed like `allow`.
    pub routes: Vec<String>,
    /// CIDRs whose addresses may be reached even though they are private or literal.
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    /// DLP on what leaves.
    pub dlp: DlpConfig,
    /// Hosts of `tls_passthrough` routes: CONNECT is tunnelled untouched (no
    /// interception, no DLP).
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// egress's routes as pipelock needs them: which header egress injects where, so
    /// that credential (and only it, on that route only) is exempt from DLP.
    #[serde(default)]
    pub route_headers: Vec<RouteHeader>,
    /// Extra CA (PEM) trusted for pipelock's TLS to upstreams besides the webpki roots
    /// (`egress.upstream_ca`).
    #[serde(default)]
    pub upstream_ca: Option<String>,
    /// What is done with a response to the agent that carries prompt-injection shapes
    /// (`egress.responses`); absent: [`Responses::Block`].
    #[serde(default)]
    pub responses: Responses,
}

/// `egress.responses`: what pipelock does with a response body (or SSE event) to the
/// agent that carries prompt-injection shapes (`bottle_secretscan::injection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Responses {
    /// Replace the response with an error to the agent (an SSE stream ends with an
    /// error event), and audit.
    #[default]
    Block,
    /// Pass it, and audit.
    Warn,
    /// Do not scan responses.
    Off,
}

impl Responses {
    /// The manifest's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Responses::Block => "block",
            Responses::Warn => "warn",
            Responses::Off => "off",
        }
    }
}

/// One non-passthrough route of egress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteHeader {
    /// The route's host: an exact name or `*.suffix`.
    pub host: String,
    #[serde(default)]
    /// The route's path prefix (see the host grammar's path rule).
    pub path_prefix: Option<String>,
    /// The header egress sets from the route's token (lowercase); None: no credential.
    #[serde(default)]
    pub header: Option<String>,
    /// The route is the agent's model API (it has a role): its responses are the
    /// model's own output, not scanned for prompt injection.
    #[serde(default)]
    pub model: bool,
}

/// DLP on requests: plain HTTP and intercepted HTTPS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    /// Whether requests are scanned at all.
    pub enabled: bool,
    /// gitleaks-format TOML; the built-in rules when absent.
    #[serde(default)]
    pub rules_toml: Option<String>,
    /// Set when the rules file could not be read at apply time: pipelock refuses to
    /// start rather than run without the rules the manifest asked for.
    #[serde(default)]
    pub rules_error: Option<String>,
}

impl Config {
    /// The rendered file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
}
