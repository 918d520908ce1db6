//! Loading pipelock's configuration (the contract's `pipelock::Config`, rendered by
//! `nodes::pipelock`) at start and again whenever the file changes (see `sidecar::reload`).

pub use bottle_contract::pipelock::{Config, DlpConfig, ENV, FILE, MOUNT, RouteHeader};

/// Why the configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("DLP rules could not be read when the bottle was applied: {0}")]
    RulesUnavailable(String),
    #[error("DLP rules")]
    Rules(#[from] bottle_secretscan::RulesError),
    /// The error quotes the entry.
    #[error("allow entry: {0}")]
    Host(bottle_contract::host::HostError),
}

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
