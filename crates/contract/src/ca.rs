//! The bottle CA as the sidecars and the agent find it: mount point, file names, and the
//! user that owns the key. The key file is mounted only into the sidecars that mint
//! certificates, never into the agent.

/// UID the sidecars run as; it owns the CA key.
pub const SIDECAR_UID: u64 = 65534;
/// The non-root user the agent runs as (`node` in the provider images), under Docker
/// and Kubernetes alike.
pub const AGENT_UID: u64 = 1000;
/// Where sidecars and the agent find the CA volume.
pub const MOUNT: &str = "/etc/bottle/ca";
/// The CA certificate (PEM) in the CA volumes.
pub const CERT_FILE: &str = "ca.crt";
/// In the agent's certificate volume: the host's trust roots plus the bottle CA. The
/// volume is also mounted at `/etc/ssl/certs`, so this is the agent's system bundle.
pub const BUNDLE_FILE: &str = "ca-certificates.crt";
/// Where the agent sees its system trust store.
pub const AGENT_TRUST_DIR: &str = "/etc/ssl/certs";
/// The CA private key (PEM) in the sidecars' CA volume; never in the agent's.
pub const KEY_FILE: &str = "ca.key";
