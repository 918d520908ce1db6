//! The audit log: one JSON line per decision on stderr (`docker logs` of the pipelock
//! container). An event names the host, the decision, the reason and, for DLP, the
//! rule id and offset; never a secret, a header value or a body.

use std::io::Write;

use serde::Serialize;

/// One audit event.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Event {
    /// `allow`, `deny`, `close` (a tunnel or request finished) or `warn` (a response
    /// carrying prompt injection passed under `egress.responses: warn`).
    pub decision: &'static str,
    /// Short machine-readable reason: `allowlist`, `not-allowlisted`, `ip-literal`,
    /// `ssrf`, `dlp`, `resolve`, `connect`, `bad-request`, `sni-mismatch`,
    /// `host-mismatch`, `upstream-tls`, `upstream`, `done`, `injection` (a response to
    /// the agent; `rule` is the class), `injection-unscanned` (compressed anyway),
    /// `upstream-body`; from the gateway sink
    /// (`sink`): `dns` (a name asked of the bottle's DNS that is not the bottle's own:
    /// refused; or a packet to port 53 outside), `direct` (a packet sent past the
    /// proxy) and `suppressed` (how many such lines were held back).
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
    /// For CONNECT and the requests inside it: `intercept` (TLS terminated, requests
    /// checked one by one) or `tunnel` (bytes copied untouched: `tls_passthrough`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// Which part was scanned: `url-headers` or `body`.
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

/// Where events go.
pub trait Audit: Send + Sync {
    fn record(&self, event: Event);
}

/// JSON lines on stderr.
pub struct StderrAudit;

#[derive(Serialize)]
struct Line<'a> {
    ts: f64,
    component: &'static str,
    #[serde(flatten)]
    event: &'a Event,
}

impl Audit for StderrAudit {
    fn record(&self, event: Event) {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = Line {
            ts,
            component: "pipelock.audit",
            event: &event,
        };
        if let Ok(mut text) = serde_json::to_string(&line) {
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
        self.0.lock().expect("audit lock").push(event);
    }
}
