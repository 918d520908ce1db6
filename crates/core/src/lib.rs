//! `bottle-core`: from the validated model to Docker objects, with no I/O of its own
//! but through the engine traits.
//!
//! The data flows one way: the model (`bottle_model`) -> per-bottle [`graph`] of node
//! specs ([`nodes`]) -> [`plan`] against what the engine holds (pure) -> operations run
//! on an engine (`bottle_engine::Engine`) by [`apply`]; [`watch`] keeps doing that on
//! triggers, with backoff and holds; [`ready`] waits until what a pass changed is in force;
//! [`runtime`] decides each container's runtime from facts the binary gathers; [`verify`]
//! checks a running bottle from inside its agent; [`subnets`] picks each new network's
//! subnet from bottle's pool when the executor makes it. [`hash`] is the only place that
//! hashes specs.

#![warn(missing_docs)]

pub mod apply;
pub mod dockerignore;
pub mod graph;
pub mod hash;
pub mod images;
pub mod nodes;
pub mod plan;
pub mod provenance;
pub mod queue;
pub mod ready;
pub mod runtime;
pub mod subnets;
pub mod verify;
pub mod watch;
