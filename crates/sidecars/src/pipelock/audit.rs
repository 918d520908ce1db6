//! The audit log: one JSON line per decision on stderr (`docker logs` of the pipelock
//! container). An event names the host, the decision, the reason and, for DLP, the
//! rule id, offset and a keyed hash of the secret; never a secret, a header value or a
//! body. Every writer scrubs an event before it writes it ([`Event::scrubbed`]): labels
//! of the host and words of the detail that are shaped like encoded data are replaced
//! by their keyed hash (`bottle_secretscan::redact`), so a name refused for carrying a
//! secret (`host-label-encoded`), or named in an error, is not written down.

use std::io::Write;

use bottle_contract::audit::{Line, PIPELOCK_COMPONENT};
use bottle_secretscan::redact;
use serde::Serialize;

/// One audit event.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Event {
    /// `allow`, `deny`, `close` (a tunnel or request finished) or `warn` (a response
    /// carrying prompt injection passed under `egress.responses: warn`).
    pub decision: &'static str,
    /// Short machine-readable reason: `allowlist`, `not-allowlisted`, `ip-literal`,
    /// `ssrf`, `dlp`, `resolve`, `connect`, `bad-request`, `sni-mismatch`,
    /// `host-mismatch`, `host-label-encoded` (labels of the name, below the allowed
    /// wildcard, look like encoded data: refused before any DNS lookup), `upstream-tls`,
    /// `upstream`, `websocket` (a WebSocket handshake or frame pipelock cannot or will not
    /// relay), `done`, `injection` (a response to the agent; `rule` is the class),
    /// `injection-unscanned` (compressed anyway), `upstream-body`; from the gateway sink
    /// (`sink`): `dns` (a name asked of the bottle's DNS that is not the bottle's own:
    /// refused; or a packet to port 53 outside), `direct` (a packet sent past the
    /// proxy), `host-label-encoded` (a DNS query whose name looks like it carries data)
    /// and `suppressed` (how many such lines were held back).
    pub reason: &'static str,
    /// `CONNECT` or the HTTP method.
    pub method: String,
    pub host: String,
    pub port: u16,
    /// The vetted address connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// DLP rule that fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Where in the scanned part the secret started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Keyed hash of the secret (`Finding::hash`): correlates lines, reveals nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// For CONNECT and the requests inside it: `intercept` (TLS terminated, requests
    /// checked one by one) or `tunnel` (bytes copied untouched: `tls_passthrough`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// Which part was scanned: `url-headers` or `body`; for a WebSocket, the direction
    /// of the refused frame (`websocket-up` from the client, `websocket-down`), or
    /// `websocket` on its `close`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<&'static str>,
    /// Human-readable detail without secrets (e.g. the SSRF address class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Bytes client to upstream and back, on `close`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_down: Option<u64>,
}

impl Event {
    /// The event as it may be written: host and detail redacted.
    pub fn scrubbed(mut self) -> Event {
        self.host = redact::name(&self.host);
        self.detail = self.detail.map(|d| redact::text(&d));
        self
    }
}

/// Where events go. Every writer records [`Event::scrubbed`].
pub trait Audit: Send + Sync {
    fn record(&self, event: Event);
}

/// JSON lines on stderr.
pub struct StderrAudit;

impl Audit for StderrAudit {
    fn record(&self, event: Event) {
        let event = event.scrubbed();
        let line = Line::now(PIPELOCK_COMPONENT, &event);
        if let Some(mut text) = line.to_json() {
            text.push('\n');
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

/// Events kept in memory, for tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct MemoryAudit(pub std::sync::Mutex<Vec<Event>>);

#[cfg(any(test, feature = "test-util"))]
impl MemoryAudit {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("audit lock").clone()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Audit for MemoryAudit {
    fn record(&self, event: Event) {
        self.0.lock().expect("audit lock").push(event.scrubbed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "6b6579206f6620313620627974657321";

    fn event() -> Event {
        Event {
            decision: "deny",
            reason: "host-label-encoded",
            method: "CONNECT".into(),
            host: format!("{SECRET}.attacker.example"),
            port: 443,
            detail: Some(format!(
                "TLS server name {SECRET}.attacker.example is not it"
            )),
            ..Default::default()
        }
    }

    #[test]
    fn the_memory_writer_records_no_encoded_label() {
        let audit = MemoryAudit::default();
        audit.record(event());
        let events = audit.events();
        let line = serde_json::to_string(&events[0]).expect("json");
        assert!(!line.contains(&SECRET[..12]), "{line}");
        assert!(events[0].host.ends_with(">.attacker.example"), "{line}");
    }

    #[test]
    fn the_stderr_line_is_built_from_the_scrubbed_event() {
        let scrubbed = event().scrubbed();
        let line = Line {
            ts: 0.0,
            component: PIPELOCK_COMPONENT,
            event: &scrubbed,
        }
        .to_json()
        .expect("json");
        // `bottle audit` reads it back.
        let read = bottle_contract::audit::parse("pipelock", &line, None).expect("decision");
        assert_eq!(read.reason, "host-label-encoded");
        assert!(!read.host.contains(&SECRET[..12]), "{read:?}");
        assert!(!line.contains(&SECRET[..12]), "{line}");
        // Real names stay readable.
        let plain = Event {
            host: "registry.npmjs.org".into(),
            detail: Some("status 200".into()),
            ..Default::default()
        }
        .scrubbed();
        assert_eq!(plain.host, "registry.npmjs.org");
        assert_eq!(plain.detail.as_deref(), Some("status 200"));
    }
}
