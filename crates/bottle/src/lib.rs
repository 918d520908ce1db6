//! `bottle`: run AI coding agents in sandboxed Docker bottles, declaratively.
//!
//! This crate is the program: the command line ([`cli`]) and what only a running
//! program on the host does ([`edge`]: the engine's event stream, the manifest watch,
//! the project lock). The work is done by the crates below it: `bottle_model`
//! (manifest text -> validated model), `bottle_core` (graph, plan, apply, watch),
//! `bottle_docker` (the engine), `bottle_sidecars` (the servers in the sidecar image).

pub mod cli;
pub mod console;
pub mod edge;

pub use bottle_contract::{labels, supervise};
pub use bottle_core::{
    apply, graph, hash, images, nodes, plan, provenance, ready, runtime, subnets, verify, watch,
};
pub use bottle_engine as engine;
pub use bottle_model::{self as model, manifest, provider};
pub use bottle_secretscan as secretscan;
pub use bottle_sidecars as sidecar;

#[cfg(test)]
mod grammar_tests;
