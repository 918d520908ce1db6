//! Counters of the watch loop, served as Prometheus text by a tiny HTTP responder
//! (`--metrics ADDR`; any path answers).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// What the watch loop counts.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    errors: AtomicU64,
    drift_repairs: AtomicU64,
    manifest_errors: AtomicU64,
    stream_reconnects: AtomicU64,
    last_duration_micros: AtomicU64,
    actions: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Count a reconcile pass (failed or not) and record `took` as the last duration.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.last_duration_micros.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Count a planned step whose action is named `verb` (`create`, `recreate`, ...).
    pub fn action(&self, verb: &str) {
        let mut a = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        *a.entry(verb.to_string()).or_default() += 1;
    }

    /// Count a reconcile that could not run, or an operation that failed or was skipped.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Count `n` operations that succeeded in undoing drift (a reconcile not caused by a
    /// manifest change).
    pub fn drift_repairs(&self, n: u64) {
        self.drift_repairs.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a manifest edit that did not load (the last good state stayed in force).
    pub fn manifest_error(&self) {
        self.manifest_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a loss of the engine event stream and its resubscription.
    pub fn stream_reconnect(&self) {
        self.stream_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Reconcile passes counted so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "bottle_reconciles_total",
            "Reconciles run.",
            get(&self.reconciles),
        );
        counter(
            "bottle_reconcile_errors_total",
            "Reconciles or operations that failed.",
            get(&self.errors),
        );
        counter(
            "bottle_drift_repairs_total",
            "Actions taken to undo drift (the manifest had not changed).",
            get(&self.drift_repairs),
        );
        counter(
            "bottle_manifest_errors_total",
            "Manifest edits that did not load; the last good state stayed.",
            get(&self.manifest_errors),
        );
        counter(
            "bottle_event_stream_reconnects_total",
            "Times the engine event stream was lost and resubscribed.",
            get(&self.stream_reconnects),
        );
        let _ = writeln!(
            out,
            "# HELP bottle_actions_total Planned actions run, by kind.\n# TYPE bottle_actions_total counter"
        );
        let actions = self.actions.lock().unwrap_or_else(|p| p.into_inner());
        for (verb, n) in actions.iter() {
            let _ = writeln!(out, "bottle_actions_total{{action=\"{verb}\"}} {n}");
        }
        let secs = get(&self.last_duration_micros) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP bottle_last_reconcile_duration_seconds How long the last reconcile took.\n\
             # TYPE bottle_last_reconcile_duration_seconds gauge\n\
             bottle_last_reconcile_duration_seconds {secs}"
        );
        out
    }
}

/// Answer every connection on `listener` with the metrics, until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let m = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            // Read the request head (bounded); its content does not matter.
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 << 10 {
                match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let body = m.render();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_prometheus_text() {
        let m = std::sync::Arc::new(Metrics::default());
        m.reconciled(Duration::from_millis(1500));
        m.action("start");
        m.action("start");
        m.action("create");
        m.drift_repairs(2);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(serve(l, std::sync::Arc::clone(&m)));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        server.abort();
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        for line in [
            "bottle_reconciles_total 1",
            "bottle_actions_total{action=\"start\"} 2",
            "bottle_actions_total{action=\"create\"} 1",
            "bottle_drift_repairs_total 2",
            "bottle_last_reconcile_duration_seconds 1.5",
        ] {
            assert!(resp.contains(line), "{line} missing in\n{resp}");
        }
    }
}
