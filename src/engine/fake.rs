//! An in-memory [`Engine`](super::Engine) for tests of the planner and executor.
