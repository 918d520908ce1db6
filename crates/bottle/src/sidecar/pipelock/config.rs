//! pipelock's configuration: rendered from the manifest by `nodes::pipelock` into a JSON
//! file in the bottle's pipelock config volume, read by the sidecar at start and again
//! whenever the file changes (see `sidecar::reload`).
//!
//! It holds policy only (host names, CIDRs, DLP rules), never a credential.

use serde::{Deserialize, Serialize};

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
}

/// One non-passthrough route of egress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteHeader {
    pub host: String,
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The header egress sets from the route's token (lowercase); None: no credential.
    #[serde(default)]
    pub header: Option<String>,
}

/// DLP on requests: plain HTTP and intercepted HTTPS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    pub enabled: bool,
    /// gitleaks-format TOML; the built-in rules when absent.
    #[serde(default)]
    pub rules_toml: Option<String>,
    /// Set when the rules file could not be read at apply time: pipelock refuses to
    /// start rather than run without the rules the manifest asked for.
    #[serde(default)]
    pub rules_error: Option<String>,
}

/// Why the configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("DLP rules could not be read when the bottle was applied: {0}")]
    RulesUnavailable(String),
    #[error("DLP rules: {0}")]
    Rules(#[from] crate::secretscan::RulesError),
    #[error("allow entry {0:?}: {1}")]
    Host(String, super::policy::HostError),
    #[error("allow_cidrs entry {0:?} is not a CIDR")]
    Cidr(String),
}

impl Config {
    /// Read and parse the file at `path`.
    pub fn load(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_string(),
            source,
        })
    }

    /// The rendered file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
}
