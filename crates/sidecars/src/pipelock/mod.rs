//! `bottle sidecar pipelock`: the bottle's firewall on the way out. A forward proxy
//! (CONNECT and absolute-form HTTP) on [`bottle_contract::pipelock::PORT`] with a
//! default-deny allowlist, an SSRF guard, TLS interception with the bottle's CA, DLP on
//! URLs, headers, streamed bodies and WebSocket messages, and a JSON audit log on stderr.
//!
//! `config` is what the manifest says (rendered by `nodes::pipelock`), `policy` the
//! allowlist, `ssrf` resolution and address vetting, `server` the proxy, [`watcher`] the
//! config-file watch (`sidecar::reload`), `audit` the log lines, `websocket` the
//! frame relay after a WebSocket upgrade, `sink` the gateway address it holds on
//! net-internal and the DNS queries it refuses and audits there, `upstream_yaml` the
//! same policy in the upstream pipelock project's schema (for `pipelock.image`).

pub mod audit;
pub mod config;
pub mod policy;
pub mod responses;
pub mod server;
pub mod sink;
pub mod ssrf;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_names;
#[cfg(test)]
mod tests_responses;
#[cfg(test)]
mod tests_tls;
pub mod websocket;

use std::path::Path;
use std::sync::Arc;

use crate::certs::{Authority, CertError};
use crate::egress::upstream::{UpstreamError, tls_config};

/// The sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Resolver(#[from] ssrf::ResolveError),
    #[error("reading {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("upstream TLS roots")]
    Roots(#[from] UpstreamError),
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// The interception half: the bottle CA from `ca_dir` (absent: no interception, every
/// CONNECT is a tunnel) and upstream roots (webpki plus `upstream_ca`).
pub fn intercept(
    ca_dir: &Path,
    upstream_ca: Option<&str>,
) -> Result<Option<server::Intercept>, StartError> {
    let cert_path = ca_dir.join(bottle_contract::ca::CERT_FILE);
    let key_path = ca_dir.join(bottle_contract::ca::KEY_FILE);
    if !key_path.exists() {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| StartError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let authority = Authority::from_pem(&read(&cert_path)?, &read(&key_path)?)?;
    let client = tls_config(upstream_ca.map(str::as_bytes), &[])?;
    Ok(Some(server::Intercept {
        authority,
        client: Arc::new(client),
    }))
}

pub use server::Proxy;

/// The watch that swaps a changed configuration file at `path` into `proxy`.
pub fn watcher(path: impl Into<std::path::PathBuf>, proxy: Arc<Proxy>) -> crate::reload::Watcher {
    crate::reload::Watcher::json(
        "pipelock configuration",
        path,
        move |cfg: config::Config| {
            proxy
                .reload(&cfg)
                .map_err(|e| bottle_contract::ErrorChain(&e).to_string())
        },
    )
}

/// Load the configuration, then serve on `listen` until killed, reloading the
/// configuration when its file changes; with `gateway` (see [`sink::prepare`], run
/// before the runtime), also the DNS sink on net-internal's gateway address.
pub async fn run(listen: &str, gateway: Option<sink::Gateway>) -> Result<(), StartError> {
    let path = std::env::var(config::ENV)
        .unwrap_or_else(|_| format!("{}/{}", config::MOUNT, config::FILE));
    let cfg = config::load(&path)?;
    let resolver = Arc::new(ssrf::HickoryResolve::from_system()?);
    let audit: Arc<dyn audit::Audit> = Arc::new(audit::StderrAudit);
    let mut proxy = server::Proxy::from_config(&cfg, resolver, audit.clone())?;
    if let Some(tls) = intercept(
        Path::new(bottle_contract::ca::MOUNT),
        cfg.upstream_ca.as_deref(),
    )? {
        proxy = proxy.with_tls(tls);
    }
    let proxy = Arc::new(proxy);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: listen.to_string(),
            source,
        })?;
    tracing::info!(
        listen,
        allow = cfg.allow.len(),
        routes = cfg.routes.len(),
        dlp = cfg.dlp.enabled,
        intercept = proxy.tls.is_some(),
        "pipelock listening"
    );
    watcher(&path, proxy.clone()).spawn();
    let mut serving = String::from("serving with its policy loaded");
    if let Some(gw) = gateway {
        let addr = gw.addr;
        if let Err(e) = sink::spawn(gw, Arc::new(sink::Sink::new(audit))) {
            tracing::warn!(gateway = %addr, error = %e, "pipelock runs without the gateway sink");
            serving.push_str(&format!("; without the gateway sink on {addr}: {e}"));
        }
    }
    crate::status::ready(serving);
    server::serve(listener, proxy)
        .await
        .map_err(|source| StartError::Listen {
            addr: listen.to_string(),
            source,
        })
}
