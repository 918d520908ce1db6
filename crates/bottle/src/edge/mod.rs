//! What only the running program on the host does, beside the command line: follow the
//! engine's event stream and the manifest file ([`sources`]), hold the project's advisory
//! lock ([`lock`]), keep the digest key ([`digest_key`]), and read what the desired state
//! takes from the host ([`host`]: the sidecar binary, the trust roots), and try the
//! engine's runsc once per build, caching the verdict ([`runsc`]).

pub mod digest_key;
pub mod host;
pub mod lock;
pub mod runsc;
pub mod sources;
