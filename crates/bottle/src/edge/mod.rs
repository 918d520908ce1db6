//! What only the running program on the host does, beside the command line: follow the
//! engine's event stream and the manifest file ([`sources`]), hold the project's advisory
//! lock ([`lock`]), keep the digest key ([`digest_key`]), and read what the desired state
//! takes from the host ([`host`]: the sidecar binary, the trust roots; [`linkage`]: what
//! a dynamically linked binary needs in the sidecar image), and try the
//! engine's runsc once per build, caching the verdict ([`runsc`]). Where bottle keeps its
//! files on the host: [`state_path`] and [`cache_path`].

pub mod digest_key;
pub mod host;
pub mod linkage;
pub mod lock;
pub mod runsc;
pub mod sources;

/// `rel` under `$XDG_STATE_HOME/bottle` (else `~/.local/state/bottle`): what must
/// persist (the digest key, the project locks).
pub fn state_path(rel: &str) -> Option<std::path::PathBuf> {
    xdg_path("XDG_STATE_HOME", ".local/state", rel)
}

/// `rel` under `$XDG_CACHE_HOME/bottle` (else `~/.cache/bottle`): what may be lost at
/// the cost of work (build context digests).
pub fn cache_path(rel: &str) -> Option<std::path::PathBuf> {
    xdg_path("XDG_CACHE_HOME", ".cache", rel)
}

fn xdg_path(var: &str, home_default: &str, rel: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("bottle").join(rel));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(home_default).join("bottle").join(rel))
}
