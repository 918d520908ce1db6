//! The contract between `bottle` on the host and its sidecars: everything both sides must
//! agree on, in one place. Label keys and object names ([`labels`]), node kinds
//! ([`node`]), where the CA is ([`ca`]), each sidecar's config file and ports
//! ([`pipelock`], [`egress`], [`git_gate`], [`supervise`]), the supervise queue's records
//! ([`supervise`]), and the one host grammar every entry point parses hosts, patterns,
//! CIDR blocks and route path prefixes with ([`host`]).
//!
//! The audit stream's line format and its reader ([`audit`]); a sidecar's readiness and
//! the digests of the live config it has in force ([`status`]); the one duration grammar
//! ([`duration`]). How a volume claim is seeded on Kubernetes ([`seed`]); how small files in a
//! sidecar's volume are read and written through exec there ([`volume_files`]); how a gVisor
//! agent pod asks its node for its network lock ([`netlock`]).
//!
//! Nothing here does I/O but [`supervise::now`] and [`audit::Line::now`], the time
//! stamps the queue's records and the audit lines carry.

#![warn(missing_docs)]

pub mod audit;
pub mod ca;
pub mod duration;
pub mod egress;
pub mod error;
pub mod git_gate;
pub mod host;
pub mod labels;
pub mod netlock;
pub mod node;
pub mod pipelock;
pub mod seed;
pub mod status;
pub mod supervise;
pub mod volume_files;

/// Labels of a Docker object (or a Kubernetes one): key to value, ordered.
pub type Labels = std::collections::BTreeMap<String, String>;
pub use error::ErrorChain;
