//! In-process proxy tests: pipelock on 127.0.0.1:0 with an injected resolver, a mock
//! upstream HTTP server, and raw HTTP/1.1 clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::audit::{Event, MemoryAudit};
use super::config::{Config, DlpConfig};
use super::server::{Proxy, serve};
use super::ssrf::MapResolve;

/// What the mock upstream received: request heads and (the first MiB of) bodies.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) heads: Vec<String>,
    pub(super) body: Vec<u8>,
}

pub(super) async fn upstream() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let head = format!("{} {} {:?}", req.method(), req.uri(), req.headers());
                        s.lock().unwrap().heads.push(head);
                        let mut body = req.into_body();
                        let mut n = 0u64;
                        while let Some(Ok(f)) = body.frame().await {
                            if let Ok(d) = f.into_data() {
                                n += d.len() as u64;
                                let mut g = s.lock().unwrap();
                                if g.body.len() < (1 << 20) {
                                    g.body.extend_from_slice(&d);
                                }
                            }
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                            "got {n}"
                        )))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Harness {
    proxy: SocketAddr,
    up: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    audit: Arc<MemoryAudit>,
}

async fn harness() -> Harness {
    let (up, seen) = upstream().await;
    let cfg = Config {
        allow: vec![
            "allowed.test".into(),
            "*.wild.test".into(),
            "meta.test".into(),
            "lan.test".into(),
            "loop.test".into(),
            "mapped.test".into(),
        ],
        routes: vec!["route.test".into()],
        // The mock upstream lives on 127.0.0.1: only that address is let through.
        allow_cidrs: vec!["127.0.0.1/32".into()],
        dlp: DlpConfig {
            enabled: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let resolver = MapResolve::default()
        .with("allowed.test", &["127.0.0.1"])
        .with("a.wild.test", &["127.0.0.1"])
        .with("route.test", &["127.0.0.1"])
        .with("denied.test", &["127.0.0.1"])
        .with("meta.test", &["169.254.169.254"])
        .with("lan.test", &["10.1.2.3"])
        .with("loop.test", &["127.0.0.2"])
        .with("mapped.test", &["::ffff:127.0.0.1"]);
    let audit = Arc::new(MemoryAudit::default());
    let proxy = Proxy::from_config(&cfg, Arc::new(resolver), audit.clone()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(l, Arc::new(proxy)));
    Harness {
        proxy: addr,
        up,
        seen,
        audit,
    }
}

/// Send raw bytes, read the whole response (the request says `Connection: close`).
async fn raw(proxy: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(host: &str, port: u16, path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn last(audit: &MemoryAudit) -> Event {
    audit.events().last().cloned().expect("an audit event")
}

#[tokio::test]
async fn allowed_plain_http_passes_and_is_logged() {
    let h = harness().await;
    let port = h.up.port();
    for host in ["allowed.test", "ALLOWED.test.", "a.wild.test", "route.test"] {
        let r = raw(
            h.proxy,
            &get(
                host,
                port,
                "/hello?x=1",
                "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n",
            ),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{host}: {r}");
        assert!(r.ends_with("got 0"), "{r}");
        let e = last(&h.audit);
        assert_eq!((e.decision, e.reason), ("allow", "allowlist"));
        assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
    }
    let heads = h.seen.lock().unwrap().heads.clone();
    assert!(
        heads[0].starts_with("GET /hello?x=1 "),
        "origin-form upstream: {heads:?}"
    );
    assert!(
        !heads[0].to_lowercase().contains("proxy-authorization"),
        "{heads:?}"
    );
}

#[tokio::test]
async fn unlisted_hosts_get_a_403_that_says_how_to_ask() {
    let h = harness().await;
    let port = h.up.port();
    for host in ["denied.test", "wild.test", "allowed.test.evil.test"] {
        let r = raw(h.proxy, &get(host, port, "/", "")).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
        assert!(
            r.contains(&format!("{host} is not on this bottle's egress allowlist")),
            "{r}"
        );
        assert!(r.contains("egress-block"), "{r}");
        let e = last(&h.audit);
        assert_eq!(
            (e.decision, e.reason, e.host.as_str()),
            ("deny", "not-allowlisted", host)
        );
    }
    let r = raw(
        h.proxy,
        b"CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("egress-block"),
        "{r}"
    );
    assert_eq!(last(&h.audit).method, "CONNECT");
    assert!(
        h.seen.lock().unwrap().heads.is_empty(),
        "nothing reached upstream"
    );
}

#[tokio::test]
async fn ip_literals_and_internal_answers_are_refused() {
    let h = harness().await;
    let port = h.up.port();
    for (host, reason) in [
        ("10.0.0.1", "ip-literal"),
        ("[::1]", "ip-literal"),
        ("169.254.169.254", "ip-literal"),
        ("meta.test", "ssrf"),
        ("lan.test", "ssrf"),
        ("loop.test", "ssrf"),
        ("mapped.test", "ssrf"),
    ] {
        let r = raw(h.proxy, &get(host, port, "/", "")).await;
        assert!(r.starts_with("HTTP/1.1 403"), "{host}: {r}");
        assert_eq!(last(&h.audit).reason, reason, "{host}");
        let c = raw(
            h.proxy,
            format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(c.starts_with("HTTP/1.1 403"), "CONNECT {host}: {c}");
    }
    // The allowed CIDR holds the upstream's literal address.
    let r = raw(h.proxy, &get("127.0.0.1", port, "/", "")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(h.seen.lock().unwrap().heads.len(), 1);
}

#[tokio::test]
async fn connect_tunnels_to_the_vetted_address() {
    let h = harness().await;
    let port = h.up.port();
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(
        format!("CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Inside the tunnel: a plain request to the upstream, bytes untouched.
    s.write_all(b"GET /in-tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("got 0"),
        "{out}"
    );
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let events = h.audit.events();
    assert_eq!(events[0].decision, "allow");
    let close = events
        .iter()
        .find(|e| e.decision == "close")
        .expect("close event");
    assert!(
        close.bytes_up.unwrap() > 0 && close.bytes_down.unwrap() > 0,
        "{close:?}"
    );
    // CONNECT without a port is a bad request.
    let r = raw(
        h.proxy,
        b"CONNECT allowed.test HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
}

pub(super) fn anthropic_key() -> String {
    format!(
        "sk-ant-api03-{}AA",
        bottle_secretscan::test_support::rnd(
            21,
            93,
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
        )
    )
}

#[tokio::test]
async fn secrets_in_url_or_headers_are_blocked_before_connecting() {
    let h = harness().await;
    let port = h.up.port();
    let key = anthropic_key();
    let r = raw(
        h.proxy,
        &get("allowed.test", port, &format!("/?k={key}"), ""),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("anthropic-api-key"),
        "{r}"
    );
    assert!(!r.contains(&key[10..]));
    let r = raw(
        h.proxy,
        &get("allowed.test", port, "/", &format!("X-Api-Key: {key}\r\n")),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let e = last(&h.audit);
    assert_eq!(
        (e.reason, e.rule.as_deref(), e.part),
        ("dlp", Some("anthropic-api-key"), Some("url-headers"))
    );
    let logged = serde_json::to_string(&h.audit.events()).unwrap();
    assert!(
        !logged.contains(&key[14..]),
        "the audit log holds the secret"
    );
    assert!(h.seen.lock().unwrap().heads.is_empty());
}

#[tokio::test]
async fn a_key_split_across_upload_chunks_is_blocked() {
    let h = harness().await;
    let port = h.up.port();
    let key = anthropic_key();
    let (a, b) = key.split_at(9);
    let filler = "let value = compute(input); // ordinary code\n".repeat(200);
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(
        format!(
            "POST http://allowed.test:{port}/upload HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let chunk = |c: &str| format!("{:x}\r\n{c}\r\n", c.len());
    for part in [
        filler.as_str(),
        &format!("token: {a}"),
        &format!("{b}\n"),
        filler.as_str(),
    ] {
        s.write_all(chunk(part).as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 403") && out.contains("anthropic-api-key"),
        "{out}"
    );
    let e = last(&h.audit);
    assert_eq!((e.reason, e.part), ("dlp", Some("body")));
    let got = String::from_utf8_lossy(&h.seen.lock().unwrap().body).into_owned();
    assert!(
        !got.contains("sk-ant"),
        "part of the key reached the upstream"
    );
}

/// A chunked upload whose trailer carries a key: refused and audited as a DLP finding
/// in the trailers; the same upload with a harmless trailer passes.
#[tokio::test]
async fn a_key_in_a_chunked_trailer_is_refused() {
    let h = harness().await;
    let port = h.up.port();
    let key = anthropic_key();
    let send = |trailer: String| async move {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        let req = format!(
            "POST http://allowed.test:{port}/upload HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\nd\r\nbuild log ok\n\r\n0\r\nX-Checksum: {trailer}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let out = send("sha256-2f1a9c".into()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let out = send(key.clone()).await;
    assert!(
        out.starts_with("HTTP/1.1 403") && out.contains("anthropic-api-key"),
        "{out}"
    );
    assert!(!out.contains(&key[10..]));
    let e = last(&h.audit);
    assert_eq!(
        (e.reason, e.rule.as_deref(), e.part),
        ("dlp", Some("anthropic-api-key"), Some("trailers"))
    );
    let logged = serde_json::to_string(&h.audit.events()).unwrap();
    assert!(
        !logged.contains(&key[14..]),
        "the audit log holds the secret"
    );
    assert_eq!(
        h.seen.lock().unwrap().heads.len(),
        1,
        "only the harmless upload reached upstream"
    );
}

/// Stream `total` bytes of code-like text as the body of a POST; the response.
async fn upload(h: &Harness, total: usize, length: bool) -> String {
    let port = h.up.port();
    let line = b"fn handle(request: Request) -> Response { respond(request.body()) }\n";
    let block: Vec<u8> = line.iter().cycle().take(64 << 10).copied().collect();
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let framing = if length {
        format!("Content-Length: {total}")
    } else {
        "Transfer-Encoding: chunked".into()
    };
    s.write_all(
        format!(
            "POST http://allowed.test:{port}/big HTTP/1.1\r\nHost: allowed.test\r\n{framing}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let n = block.len().min(total - sent);
            let ok = if length {
                wr.write_all(&block[..n]).await
            } else {
                wr.write_all(format!("{n:x}\r\n").as_bytes()).await.ok();
                wr.write_all(&block[..n]).await.ok();
                wr.write_all(b"\r\n").await
            };
            if ok.is_err() {
                break; // refused: pipelock closed the connection
            }
            sent += n;
        }
        if !length {
            let _ = wr.write_all(b"0\r\n\r\n").await;
        }
        wr
    });
    let mut out = Vec::new();
    let _ = rd.read_to_end(&mut out).await;
    drop(writer.await);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_upload_under_the_cap_passes_and_one_over_it_is_refused() {
    let h = harness().await;
    const TOTAL: usize = 20 << 20;
    let out = upload(&h, TOTAL, true).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(&format!("got {TOTAL}")), "{out}");
    // Declared over the cap: refused before reading; streamed over it: refused at it.
    for length in [true, false] {
        let out = upload(&h, super::server::BODY_CAP + (1 << 20), length).await;
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        assert!(out.contains("more than DLP inspects"), "{out}");
        let e = last(&h.audit);
        assert_eq!(
            (e.decision, e.reason, e.part),
            ("deny", "dlp-limit", Some("body"))
        );
    }
    assert_eq!(
        h.seen.lock().unwrap().heads.len(),
        1,
        "only the first reached upstream"
    );
}

/// POST `body` with extra headers; the response.
async fn post(h: &Harness, extra: &str, body: &[u8]) -> String {
    let port = h.up.port();
    let mut req = format!(
        "POST http://allowed.test:{port}/api HTTP/1.1\r\nHost: allowed.test\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(h.proxy, &req).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn encoded_and_compressed_secrets_are_refused() {
    use base64::Engine as _;
    let h = harness().await;
    let key = anthropic_key();
    let percent: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("key={key}"));
    let json = format!("{{\"data\": \"{b64}\", \"n\": 1}}");
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "percent-encoded body",
            String::new(),
            format!("q={percent}").into_bytes(),
            "percent",
        ),
        (
            "base64 in JSON",
            "Content-Type: application/json\r\n".into(),
            json.clone().into_bytes(),
            "base64",
        ),
        (
            "gzip",
            "Content-Encoding: gzip\r\n".into(),
            gzip(format!("token: {key}\n").as_bytes()),
            "",
        ),
        (
            "gzip of base64",
            "Content-Encoding: gzip\r\n".into(),
            gzip(json.as_bytes()),
            "base64",
        ),
    ];
    for (name, extra, body, via) in cases {
        let r = post(&h, &extra, &body).await;
        assert!(
            r.starts_with("HTTP/1.1 403") && r.contains("anthropic-api-key"),
            "{name}: {r}"
        );
        let e = last(&h.audit);
        assert_eq!((e.reason, e.part), ("dlp", Some("body")), "{name}");
        if !via.is_empty() {
            assert!(
                e.detail.as_deref().is_some_and(|d| d.contains(via)),
                "{name}: {e:?}"
            );
        }
    }
    // In the URL too.
    let r = raw(
        h.proxy,
        &get("allowed.test", h.up.port(), &format!("/?k={percent}"), ""),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("anthropic-api-key"),
        "{r}"
    );
    // A secret no rule knows, as a long random token in the path or a query value, is
    // refused by the entropy check; a sha256 download path is not.
    let token = bottle_secretscan::test_support::rnd(
        7,
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    );
    for (path, rule) in [
        (format!("/upload/{token}"), "high-entropy-path"),
        (format!("/?q={token}"), "high-entropy-query"),
    ] {
        let r = raw(h.proxy, &get("allowed.test", h.up.port(), &path, "")).await;
        assert!(
            r.starts_with("HTTP/1.1 403") && r.contains(rule),
            "{path}: {r}"
        );
        let e = last(&h.audit);
        assert_eq!((e.reason, e.part), ("dlp", Some("url")), "{path}");
    }
    let digest = "/files/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/x.tgz";
    let r = raw(h.proxy, &get("allowed.test", h.up.port(), digest, "")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        !serde_json::to_string(&h.audit.events())
            .unwrap()
            .contains(&token)
    );
    // Clean compressed bodies pass, unchanged.
    let clean = gzip(b"{\"hello\": \"world\"}");
    let r = post(&h, "Content-Encoding: gzip\r\n", &clean).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(h.seen.lock().unwrap().body, clean);
    // What cannot be inspected is refused: an unknown coding, a corrupt one, a bomb.
    let bomb = gzip(&vec![0u8; super::server::BODY_CAP + 1]);
    for (extra, body, status, reason) in [
        (
            "Content-Encoding: compress\r\n",
            b"x".to_vec(),
            "415",
            "dlp-encoding",
        ),
        (
            "Content-Encoding: gzip\r\n",
            b"not gzip at all".to_vec(),
            "400",
            "dlp-encoding",
        ),
        ("Content-Encoding: gzip\r\n", bomb, "413", "dlp-limit"),
    ] {
        let r = post(&h, extra, &body).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{extra}: {r}");
        assert_eq!(last(&h.audit).reason, reason, "{extra}");
    }
    let logged = serde_json::to_string(&h.audit.events()).unwrap();
    assert!(
        !logged.contains(&key[14..]),
        "the audit log holds the secret"
    );
    assert_eq!(
        h.seen.lock().unwrap().heads.len(),
        2,
        "only the digest download and the clean body reached upstream"
    );
}

#[tokio::test]
async fn origin_form_requests_are_not_proxied() {
    let h = harness().await;
    let r = raw(
        h.proxy,
        b"GET /healthz HTTP/1.1\r\nHost: pipelock\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("ok pipelock\n"),
        "{r}"
    );
    let r = raw(
        h.proxy,
        b"GET /x HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(
        h.proxy,
        b"GET https://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
}
