//! `bottle`: run AI coding agents in sandboxed Docker bottles, declaratively.
//!
//! The data flows one way: [`manifest`] text -> validated [`model`] -> per-bottle
//! [`graph`] of node specs ([`nodes`]) -> [`plan`] against what Docker holds ->
//! operations run on an [`engine`] by [`apply`].

pub mod apply;
pub mod cli;
pub use bottle_engine as engine;
pub mod graph;
pub mod hash;
pub mod images;
pub use bottle_contract::labels;
pub mod manifest;
pub mod model;
pub mod nodes;
pub mod plan;
pub mod provider;
pub use bottle_contract::supervise;
pub use bottle_secretscan as secretscan;
pub use bottle_sidecars as sidecar;
pub mod watch;
