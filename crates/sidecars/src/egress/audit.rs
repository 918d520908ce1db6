//! The audit log: one JSON line per request (or tunnel) on stderr, written when the
//! response body ends. It names bottle, host, method, path (never the query), the route
//! that matched, the status, the bytes each way and the duration: never a header value or
//! a body byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub bottle: String,
    pub host: String,
    pub method: String,
    pub path: String,
    /// `host[/prefix]` of the matched route, `allow`, `passthrough` or `deny`.
    pub route: String,
    pub status: u16,
    /// Response body bytes (for a tunnel: bytes from the upstream).
    pub bytes: u64,
    /// Request body bytes (for a tunnel: bytes to the upstream).
    pub bytes_up: u64,
    pub duration_ms: u64,
    /// Why the proxy answered itself (403, 502), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where records go.
#[derive(Clone, Default)]
pub enum Sink {
    #[default]
    Stderr,
    /// Kept in memory (tests).
    Memory(Arc<Mutex<Vec<String>>>),
}

impl Sink {
    pub fn write(&self, r: &Record) {
        let line = match serde_json::to_string(r) {
            Ok(l) => l,
            Err(_) => return,
        };
        match self {
            Sink::Stderr => {
                use std::io::Write;
                let mut e = std::io::stderr().lock();
                let _ = writeln!(e, "{line}");
            }
            Sink::Memory(m) => m.lock().unwrap_or_else(|p| p.into_inner()).push(line),
        }
    }
}

/// A record in progress: written once, when dropped (the body ended or was abandoned).
pub struct Pending {
    sink: Sink,
    record: Record,
    start: Instant,
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
}

impl Pending {
    pub fn new(sink: Sink, record: Record, start: Instant) -> Pending {
        Pending {
            sink,
            record,
            start,
            up: Arc::new(AtomicU64::new(0)),
            down: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn set_status(&mut self, status: u16) {
        self.record.status = status;
    }

    pub fn set_error(&mut self, e: String) {
        self.record.error = Some(e);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.record.bytes = self.down.load(Ordering::Relaxed);
        self.record.bytes_up = self.up.load(Ordering::Relaxed);
        self.record.duration_ms = self.start.elapsed().as_millis() as u64;
        self.sink.write(&self.record);
    }
}
