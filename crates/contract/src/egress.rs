//! The egress sidecar's `config.json` as the host writes it: everything egress needs but
//! the tokens, which are files beside it (mode 0400, owned by the sidecar user) and are
//! named here, never held.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Port it listens on, on net-internal.
pub const PORT: u16 = 3128;

/// Where the config volume is mounted in the egress container.
pub const MOUNT: &str = "/etc/bottle/egress";
/// The config file inside the volume.
pub const CONFIG_FILE: &str = "config.json";
/// The extra upstream CA inside the volume, when `egress.upstream_ca` is set.
pub const UPSTREAM_CA_FILE: &str = "upstream-ca.pem";

/// `config.json`: everything the sidecar needs except the tokens themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The running bottle's name, for the audit log.
    pub bottle: String,
    /// Hosts allowed without credentials: exact names or `*.suffix`.
    pub allow: Vec<String>,
    /// A pipelock config file (`sidecar::pipelock::config`) whose `allow` list replaces
    /// [`allow`](Self::allow) and is reloaded whenever the file changes: in a bottle,
    /// pipelock's policy volume, which the reconciler rewrites in place, so a changed
    /// allowlist (or an approved grant) restarts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_file: Option<PathBuf>,
    /// Credentialed and passthrough routes.
    pub routes: Vec<RouteConfig>,
    /// Extra CA (PEM) trusted for upstream TLS besides the webpki roots.
    pub upstream_ca_file: Option<PathBuf>,
    /// An HTTP proxy to reach upstreams through with CONNECT (`http://pipelock:8888`).
    pub upstream_proxy: Option<String>,
}

/// One route of `egress.routes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's host: an exact name or `*.suffix`.
    pub host: String,
    /// Only requests under this path prefix take the route (see the host grammar's path rule).
    pub path_prefix: Option<String>,
    #[serde(default)]
    /// Tunnel CONNECT untouched: no interception, no injection, no DLP.
    pub tls_passthrough: bool,
    /// The credential to inject, if any.
    pub auth: Option<AuthConfig>,
}

/// How a route's credential is injected, and the file holding it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// How the token becomes a header.
    pub scheme: Scheme,
    /// The token file beside `config.json` (mode 0400).
    pub token_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// How a route's token is sent upstream.
pub enum Scheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic base64(<token>)`; the token is `user:password`.
    Basic,
    /// The named header carries the token verbatim.
    Header(String),
}
