//! `bottle sidecar pipelock`: the bottle's firewall on the way out. A forward proxy
//! (CONNECT and absolute-form HTTP) on [`crate::nodes::pipelock::PORT`] with a
//! default-deny allowlist, an SSRF guard, DLP on plain-HTTP requests and a JSON audit
//! log on stderr.
//!
//! `config` is what the manifest says (rendered by `nodes::pipelock`), `policy` the
//! allowlist, `ssrf` resolution and address vetting, `server` the proxy, `audit` the
//! log lines.

pub mod audit;
pub mod config;
pub mod policy;
pub mod server;
pub mod ssrf;
#[cfg(test)]
mod tests;

use std::sync::Arc;

/// Load the configuration, then serve on `listen` until killed.
pub async fn run(listen: &str) -> anyhow::Result<()> {
    let path = std::env::var(config::ENV)
        .unwrap_or_else(|_| format!("{}/{}", config::MOUNT, config::FILE));
    let cfg = config::Config::load(&path)?;
    let resolver = Arc::new(ssrf::HickoryResolve::from_system()?);
    let proxy = server::Proxy::from_config(&cfg, resolver, Arc::new(audit::StderrAudit))?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(
        listen,
        allow = cfg.allow.len(),
        routes = cfg.routes.len(),
        dlp = proxy.rules.is_some(),
        "pipelock listening"
    );
    server::serve(listener, Arc::new(proxy)).await?;
    Ok(())
}
