//! The [`Engine`](super::Engine) on the real Docker engine, through bollard.
