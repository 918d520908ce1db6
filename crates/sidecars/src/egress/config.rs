//! The egress sidecar's configuration: the non-secret `config.json` that `nodes/egress.rs`
//! writes into the config volume, and its loading into a [`Policy`] inside the sidecar.
//!
//! The file names token FILES, never tokens: each token lives in its own file (mode 0400,
//! owned by the sidecar user) next to it, and is read only here, into header values marked
//! sensitive.

use std::path::{Path, PathBuf};

use base64::Engine as _;
pub use bottle_contract::egress::{
    AuthConfig, CONFIG_FILE, Config, MOUNT, RouteConfig, Scheme, UPSTREAM_CA_FILE,
};
use http::{HeaderName, HeaderValue};

use super::route::{Inject, Policy, Route};

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The route's host is not a host name (the error quotes it).
    #[error("route host: {0}")]
    Host(bottle_contract::host::HostError),
    #[error("route {host}: invalid header name {name:?}")]
    HeaderName { host: String, name: String },
    /// The token has bytes a header cannot carry; the token itself is never shown.
    #[error("route {host}: the token in {path} is not a valid header value")]
    TokenValue { host: String, path: PathBuf },
}

/// Read and parse `config.json`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Read the token files and the allow file, and build the policy.
pub fn policy(cfg: &Config) -> Result<Policy, ConfigError> {
    let mut routes = Vec::with_capacity(cfg.routes.len());
    for r in &cfg.routes {
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
    let (allow, cidrs) = match &cfg.allow_file {
        Some(p) => allow_of(&read(p)?).map_err(|source| ConfigError::Parse {
            path: p.clone(),
            source,
        })?,
        None => (cfg.allow.clone(), Vec::new()),
    };
    Ok(Policy::new(routes, allow, &cidrs))
}

/// The allow list and blocks of a pipelock config file (parsed by [`Policy::new`]).
fn allow_of(pipelock_config: &[u8]) -> Result<(Vec<String>, Vec<String>), serde_json::Error> {
    let cfg: bottle_contract::pipelock::Config = serde_json::from_slice(pipelock_config)?;
    Ok((cfg.allow, cfg.allow_cidrs))
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
