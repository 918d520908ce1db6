//! `bottle`: run AI coding agents in sandboxed Docker bottles, declaratively.
//!
//! The data flows one way: manifest text -> validated [`model`] -> per-bottle graph of
//! node specs -> plan against what Docker holds -> actions executed on an [`engine`].

pub mod engine;
pub mod manifest;
pub mod model;
