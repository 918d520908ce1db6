//! The audit log: one JSON line per request (or tunnel) on stderr, written when the
//! response body ends. It names bottle, host, method, path (never the query), the route
//! that matched, the status, the bytes each way and the duration: never a header value or
//! a body byte.
//!
//! egress writes what the agent asked for, before pipelock's DLP refuses a secret in it,
//! so the line is redacted as it is written ([`Record::scrubbed`], `bottle_secretscan::
//! redact`): path segments shaped like tokens (after percent-decoding), host labels
//! shaped like encoded data and such words in the error become `<redacted:HASH>`, a
//! per-process keyed hash that correlates lines without revealing the value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bottle_contract::audit::{EGRESS_COMPONENT, Line};
use bottle_secretscan::redact;
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

impl Record {
    /// The record as it may be written: host, path and error redacted.
    pub fn scrubbed(&self) -> Record {
        Record {
            host: redact::name(&self.host),
            path: redact::path(&self.path),
            error: self.error.as_deref().map(redact::text),
            ..self.clone()
        }
    }

    /// The JSON line of [`Record::scrubbed`], in the audit envelope (time, component).
    fn line(&self) -> Option<String> {
        Line::now(EGRESS_COMPONENT, &self.scrubbed()).to_json()
    }
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
    /// Write `r`, scrubbed.
    pub fn write(&self, r: &Record) {
        let Some(line) = r.line() else { return };
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

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghp_Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3";
    const LABEL: &str = "6b6579206f6620313620627974657321";

    fn record() -> Record {
        Record {
            bottle: "b".into(),
            host: format!("{LABEL}.attacker.example"),
            method: "GET".into(),
            path: format!("/v1/upload/{TOKEN}/x"),
            route: "allow".into(),
            status: 502,
            bytes: 0,
            bytes_up: 0,
            duration_ms: 0,
            error: Some(format!(
                "upstream proxy refused CONNECT {LABEL}.attacker.example:443 for {TOKEN}"
            )),
        }
    }

    #[test]
    fn the_memory_writer_records_no_token() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        Sink::Memory(lines.clone()).write(&record());
        let lines = lines.lock().expect("lines");
        assert_eq!(lines.len(), 1);
        for secret in [TOKEN, &TOKEN[4..20], LABEL, &LABEL[..12]] {
            assert!(!lines[0].contains(secret), "{}", lines[0]);
        }
        let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
        let path = v["path"].as_str().expect("path");
        assert!(path.starts_with("/v1/upload/<redacted:") && path.ends_with(">/x"));
    }

    #[test]
    fn the_stderr_line_is_the_scrubbed_record() {
        let line = record().line().expect("line");
        assert!(!line.contains(TOKEN) && !line.contains(LABEL), "{line}");
        // A plain request is written as it is.
        let plain = Record {
            host: "api.anthropic.com".into(),
            path: "/v1/messages".into(),
            error: None,
            ..record()
        };
        let v: serde_json::Value =
            serde_json::from_str(&plain.line().expect("line")).expect("json");
        assert_eq!(v["host"], "api.anthropic.com");
        assert_eq!(v["path"], "/v1/messages");
        assert_eq!(v["component"], EGRESS_COMPONENT);
        // `bottle audit` reads it back.
        let line = plain.line().expect("line");
        let read = bottle_contract::audit::parse("egress", &line, None).expect("decision");
        assert_eq!(read.host, "api.anthropic.com");
        assert!(read.ts > 0.0);
    }
}
