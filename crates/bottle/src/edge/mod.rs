//! What only the running program on the host does, beside the command line: follow the
//! engine's event stream and the manifest file ([`sources`]), and hold the project's
//! advisory lock ([`lock`]).

pub mod lock;
pub mod sources;
