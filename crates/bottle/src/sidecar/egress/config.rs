//! The egress sidecar's configuration: the non-secret `config.json` that `nodes/egress.rs`
//! writes into the config volume, and its loading into a [`Policy`] inside the sidecar.
//!
//! The file names token FILES, never tokens: each token lives in its own file (mode 0400,
//! owned by the sidecar user) next to it, and is read only here, into header values marked
//! sensitive.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::route::{Inject, Policy, Route};

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
    pub host: String,
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub tls_passthrough: bool,
    pub auth: Option<AuthConfig>,
}

/// How a route's credential is injected, and the file holding it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub scheme: Scheme,
    pub token_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic base64(<token>)`; the token is `user:password`.
    Basic,
    /// The named header carries the token verbatim.
    Header(String),
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("route {host}: invalid header name {name:?}")]
    HeaderName { host: String, name: String },
    /// The token has bytes a header cannot carry; the token itself is never shown.
    #[error("route {host}: the token in {path} is not a valid header value")]
    TokenValue { host: String, path: PathBuf },
}

impl Config {
    /// Read and parse `config.json`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Read the token files and the allow file, and build the policy.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let mut routes = Vec::with_capacity(self.routes.len());
        for r in &self.routes {
            let inject = match &r.auth {
                None => None,
                Some(a) => {
                    let raw = read(&a.token_file)?;
                    let token = String::from_utf8_lossy(&raw).trim().to_string();
                    Some(inject(&r.host, &a.scheme, &token, &a.token_file)?)
                }
            };
            routes.push(Route {
                host: r.host.to_ascii_lowercase(),
                path_prefix: r.path_prefix.clone(),
                passthrough: r.tls_passthrough,
                inject,
            });
        }
        let allow = match &self.allow_file {
            Some(p) => allow_of(&read(p)?).map_err(|source| ConfigError::Parse {
                path: p.clone(),
                source,
            })?,
            None => self.allow.clone(),
        };
        Ok(Policy::new(routes, allow))
    }
}

/// The allow list of a pipelock config file (lower-cased by [`Policy::new`]).
fn allow_of(pipelock_config: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let cfg: crate::sidecar::pipelock::config::Config = serde_json::from_slice(pipelock_config)?;
    Ok(cfg.allow)
}

/// The header to inject for `token` under `scheme`.
pub fn inject(
    host: &str,
    scheme: &Scheme,
    token: &str,
    path: &Path,
) -> Result<Inject, ConfigError> {
    let (name, value) = match scheme {
        Scheme::Bearer => (http::header::AUTHORIZATION, format!("Bearer {token}")),
        Scheme::Basic => (
            http::header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(token)
            ),
        ),
        Scheme::Header(n) => (
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| ConfigError::HeaderName {
                host: host.to_string(),
                name: n.clone(),
            })?,
            token.to_string(),
        ),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| ConfigError::TokenValue {
        host: host.to_string(),
        path: path.to_path_buf(),
    })?;
    value.set_sensitive(true);
    Ok(Inject { name, value })
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}
