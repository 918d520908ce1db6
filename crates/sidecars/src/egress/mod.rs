//! `bottle sidecar egress`: the agent's HTTPS_PROXY. It intercepts TLS with leaves minted
//! from the bottle's CA, injects each route's credential (which the agent never sees),
//! tunnels `tls_passthrough` routes untouched, refuses everything else with 403, and
//! writes one audit line per request.
//!
//! Modules: [`config`] (the config volume), [`route`] (matching), [`certs`] (leaves,
//! `crate::certs`, shared with pipelock),
//! [`upstream`] (resolution, upstream proxy, TLS, pooled clients), [`server`] (the proxy),
//! [`audit`] (the log), [`testkit`] (a fake upstream and proxy clients for tests, the
//! benchmark and `bottle sidecar fake-upstream`).

pub mod audit;
/// Leaf minting, shared with pipelock.
pub use super::certs;
pub mod config;
pub mod route;
pub mod server;
#[cfg(any(test, feature = "test-util"))]
pub mod testkit;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::reload::{Swap, Watcher};

pub use server::Proxy;

/// The sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Build the proxy from the loaded config and the CA volume.
pub fn load(cfg: &config::Config, ca_dir: &Path) -> Result<Proxy, StartError> {
    let policy = config::policy(cfg)?;
    let read =
        |p: PathBuf| std::fs::read(&p).map_err(|source| StartError::Read { path: p, source });
    let ca_cert = read(ca_dir.join(bottle_contract::ca::CERT_FILE))?;
    let ca_key = read(ca_dir.join(bottle_contract::ca::KEY_FILE))?;
    let authority = certs::Authority::from_pem(
        &String::from_utf8_lossy(&ca_cert),
        &String::from_utf8_lossy(&ca_key),
    )?;
    let extra_ca = cfg.upstream_ca_file.clone().map(read).transpose()?;
    let resolver = upstream::HickoryResolve::from_system().map_err(|source| StartError::Read {
        path: "/etc/resolv.conf".into(),
        source,
    })?;
    let dialer = upstream::Dialer::new(Arc::new(resolver), cfg.upstream_proxy.as_deref())?;
    // pipelock intercepts the hop to it with leaves of the bottle CA: trust that CA as
    // well as the webpki roots and the manifest's extra upstream CA.
    let trust = upstream::trust_bundle(&ca_cert, extra_ca.as_deref());
    let upstream = upstream::Upstream::new(dialer, Some(&trust))?;
    Ok(Proxy {
        bottle: cfg.bottle.clone(),
        policy: Swap::new(policy),
        authority,
        upstream,
        sink: audit::Sink::Stderr,
    })
}

/// Serve on `listen` until killed.
pub async fn run(listen: &str) -> Result<(), StartError> {
    let config_path = std::env::var_os("BOTTLE_EGRESS_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(config::MOUNT).join(config::CONFIG_FILE));
    // Both paths can be moved for running the sidecar outside its container (the benchmark).
    let ca_dir = std::env::var_os("BOTTLE_EGRESS_CA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(bottle_contract::ca::MOUNT));
    let cfg = config::load(&config_path)?;
    let proxy = Arc::new(load(&cfg, &ca_dir)?);
    if let Some(path) = cfg.allow_file {
        let p = Arc::clone(&proxy);
        Watcher::json(
            "egress allow list",
            path,
            move |policy: crate::pipelock::config::Config| {
                p.policy
                    .set(p.policy.get().with_allow(policy.allow, &policy.allow_cidrs));
                Ok(())
            },
        )
        .spawn();
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: listen.to_string(),
            source,
        })?;
    tracing::info!(listen, "egress proxy listening");
    crate::status::ready("serving with its routes loaded");
    server::serve(listener, proxy)
        .await
        .map_err(|source| StartError::Listen {
            addr: listen.to_string(),
            source,
        })
}
