//! What git-gate is told by the host: its port and name, where its config volume is
//! mounted, and the remotes file (no secrets: each remote's key is a file beside it).

use serde::{Deserialize, Serialize};

/// Port it listens on, on net-internal.
pub const PORT: u16 = 8418;
/// Where the gate sees its config volume.
pub const CONFIG_MOUNT: &str = "/etc/bottle/git";
/// The remotes, as JSON ([`GateConfig`]), in the config volume.
pub const CONFIG_FILE: &str = "gate.json";
/// Where the gate keeps its bare mirrors (in the container's own layer).
pub const MIRRORS: &str = "/var/lib/bottle-git";
/// The `bottle` binary inside the gate image.
pub const BINARY: &str = "/usr/local/bin/bottle";
/// The gate's DNS name on net-internal.
pub const HOST: &str = "git-gate";

/// What the gate knows about its remotes (no secrets: keys are files next to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// One entry per `git:` remote of the manifest.
    pub remotes: Vec<GateRemote>,
}

/// One `git:` entry as the gate sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateRemote {
    /// The remote's name: the agent pushes to `http://git-gate:8418/<name>.git`.
    pub name: String,
    /// The SSH URL pushes are forwarded to.
    pub upstream: String,
    /// Whether a non-fast-forward push is forwarded.
    pub allow_force: bool,
}

impl GateRemote {
    /// The private key file of this remote, relative to the config directory.
    pub fn key_file(&self) -> String {
        format!("{}.key", self.name)
    }

    /// The known_hosts file of this remote, relative to the config directory.
    pub fn known_hosts_file(&self) -> String {
        format!("{}.known_hosts", self.name)
    }
}
