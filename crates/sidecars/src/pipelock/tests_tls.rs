//! In-process tests of TLS interception: pipelock with a bottle CA between a client (or
//! the real egress proxy) and the TLS fake upstream of `egress::testkit`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::net::TcpListener;

use super::audit::{Event, MemoryAudit};
use super::config::{Config, DlpConfig, RouteHeader};
use super::server::{Intercept, Proxy, serve};
use super::ssrf::MapResolve;
use super::tests::anthropic_key;
use crate::certs::Authority;
use crate::egress;
use crate::egress::testkit::*;
use crate::egress::upstream::{Dialer, StaticResolve, Upstream, tls_config, trust_bundle};

const HOST: &str = "secure.test";
const ROUTE: &str = "api.route.test";
const PASS: &str = "pass.test";

struct World {
    pipelock: SocketAddr,
    upstream: SocketAddr,
    bottle: TestPki,
    audit: Arc<MemoryAudit>,
}

fn github_token() -> String {
    format!("ghp_{}", "Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3")
}

async fn world() -> World {
    let up_pki = TestPki::new(&[HOST, ROUTE, PASS, "other.test"]);
    let upstream = spawn_upstream(&up_pki.leaf_pem, &up_pki.leaf_key_pem).await;
    let bottle = TestPki::new(&["unused.test"]);
    let cfg = Config {
        allow: vec![HOST.into(), "other.test".into()],
        routes: vec![ROUTE.into(), PASS.into()],
        allow_cidrs: vec!["127.0.0.1/32".into()],
        dlp: DlpConfig {
            enabled: true,
            ..Default::default()
        },
        passthrough: vec![PASS.into()],
        route_headers: vec![RouteHeader {
            host: ROUTE.into(),
            path_prefix: Some("/v1".into()),
            header: Some("authorization".into()),
            model: false,
        }],
        upstream_ca: Some(up_pki.ca_pem.clone()),
        responses: Default::default(),
    };
    let resolver = MapResolve::default()
        .with(HOST, &["127.0.0.1"])
        .with(ROUTE, &["127.0.0.1"])
        .with(PASS, &["127.0.0.1"])
        .with("other.test", &["127.0.0.1"]);
    let audit = Arc::new(MemoryAudit::default());
    let tls = Intercept {
        authority: Authority::from_pem(&bottle.ca_pem, &bottle.ca_key_pem).unwrap(),
        client: Arc::new(tls_config(cfg.upstream_ca.as_deref().map(str::as_bytes), &[]).unwrap()),
    };
    let proxy = Proxy::from_config(&cfg, Arc::new(resolver), audit.clone())
        .unwrap()
        .with_tls(tls);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pipelock = l.local_addr().unwrap();
    tokio::spawn(serve(l, Arc::new(proxy)));
    World {
        pipelock,
        upstream,
        bottle,
        audit,
    }
}

impl World {
    fn target(&self, host: &str) -> String {
        format!("{host}:{}", self.upstream.port())
    }

    /// CONNECT through pipelock, TLS with `sni`, trusting the bottle CA.
    async fn sender(&self, host: &str, sni: &str, h2: bool) -> Result<Sender<Full<Bytes>>, String> {
        let t = connect_tunnel(self.pipelock, &self.target(host))
            .await
            .map_err(|r| format!("CONNECT {}: {}", r.status, r.body))?;
        let tls = if h2 {
            h2_only(&self.bottle.ca_pem)
        } else {
            tls_client(&self.bottle.ca_pem, false)
        };
        http_over(t, &tls, sni).await.map_err(|e| e.to_string())
    }

    fn denied(&self, reason: &str) -> Option<Event> {
        self.audit
            .events()
            .into_iter()
            .find(|e| e.decision == "deny" && e.reason == reason)
    }
}

/// A TLS client that offers only h2 (pipelock picks HTTP/1.1 whenever it is offered).
fn h2_only(roots_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(crate::certs::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn req(host: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://{host}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn text(r: http::Response<hyper::body::Incoming>) -> String {
    String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

/// HTTP/1.1 and HTTP/2 both reach the upstream through the minted leaf, and the body
/// is scanned: a token in a POST body is a 403 and never reaches the upstream.
#[tokio::test]
async fn intercepted_https_is_relayed_and_scanned() {
    let w = world().await;
    for h2 in [false, true] {
        let mut s = w.sender(HOST, HOST, h2).await.unwrap();
        assert_eq!(s.is_h2(), h2, "h2 only for an h2-only client");
        let r = s.send(req(HOST, "/echo", "hello")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(text(r).await, "hello");
        let secret = format!("token = \"{}\"\n", github_token());
        let r = s.send(req(HOST, "/echo", &secret)).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(text(r).await.contains("github-pat"));
        let r = s
            .send(req(HOST, &format!("/q?k={}", anthropic_key()), ""))
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
        }
    }
    let events = w.audit.events();
    let dlp: Vec<_> = events.iter().filter(|e| e.reason == "dlp").collect();
    assert!(
        dlp.iter()
            .any(|e| e.part == Some("body") && e.tls == Some("intercept"))
    );
    assert!(dlp.iter().any(|e| e.part == Some("url-headers")));
    let logged = serde_json::to_string(&events).unwrap();
    assert!(!logged.contains(&github_token()[4..]), "{logged}");
}

#[tokio::test]
async fn host_and_sni_must_be_the_connect_host() {
    let w = world().await;
    // SNI names another (allowed) host than CONNECT: no handshake.
    let r = w.sender(HOST, "other.test", false).await;
    assert!(r.is_err(), "SNI mismatch was served");
    assert!(w.denied("sni-mismatch").is_some(), "{:?}", w.audit.events());
    // Host header names another host: 403, nothing upstream.
    let mut s = w.sender(HOST, HOST, false).await.unwrap();
    let r = s.send(req("other.test", "/", "")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e = w.denied("host-mismatch").expect("audited");
    assert_eq!(e.host, HOST);
    // The same with HTTP/2's :authority.
    let mut s = w.sender(HOST, HOST, true).await.unwrap();
    let r = s.send(req("other.test", "/", "")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The CONNECT host with its port is fine.
    let r = s.send(req(&w.target(HOST), "/echo", "x")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn passthrough_hosts_are_tunnelled_untouched() {
    let w = world().await;
    // The client sees the upstream's own certificate: it must trust the upstream CA,
    // and the bottle CA alone does not do.
    let t = connect_tunnel(w.pipelock, &w.target(PASS)).await.unwrap();
    assert!(
        http_over::<Full<Bytes>>(t, &tls_client(&w.bottle.ca_pem, false), PASS)
            .await
            .is_err()
    );
    let events = w.audit.events();
    assert!(
        events
            .iter()
            .any(|e| e.host == PASS && e.tls == Some("tunnel"))
    );
}

/// A secret split across the chunks of a streamed upload is caught inside TLS too.
#[tokio::test]
async fn a_key_split_across_chunks_of_an_intercepted_upload_is_blocked() {
    let w = world().await;
    let mut s = w.sender(HOST, HOST, false).await.unwrap();
    drop(s.send(req(HOST, "/", "")).await.unwrap());
    let key = anthropic_key();
    let (a, b) = key.split_at(11);
    let filler = "let value = compute(input); // ordinary code\n".repeat(300);
    let parts: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(hyper::body::Frame::data(Bytes::from(filler.clone()))),
        Ok(hyper::body::Frame::data(Bytes::from(format!("key: {a}")))),
        Ok(hyper::body::Frame::data(Bytes::from(format!("{b}\n")))),
        Ok(hyper::body::Frame::data(Bytes::from(filler))),
    ];
    let body = StreamBody::new(futures_util::stream::iter(parts));
    let t = connect_tunnel(w.pipelock, &w.target(HOST)).await.unwrap();
    let mut s2 = http_over(t, &tls_client(&w.bottle.ca_pem, false), HOST)
        .await
        .unwrap();
    let r = s2
        .send(
            Request::post(format!("https://{HOST}/count"))
                .header("host", HOST)
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e = w.denied("dlp").unwrap();
    assert_eq!(
        (e.part, e.rule.as_deref()),
        (Some("body"), Some("anthropic-api-key"))
    );
}

/// egress -> pipelock -> upstream: egress trusts the bottle CA for its hop, the route's
/// injected credential is exempt from DLP on its route only, and a secret of the agent
/// is still caught.
#[tokio::test]
async fn egress_chain_injects_and_pipelock_exempts_only_the_route_credential() {
    let w = world().await;
    let token = anthropic_key();
    let routes = vec![egress::route::Route {
        host: ROUTE.into(),
        path_prefix: Some("/v1".into()),
        passthrough: false,
        inject: Some(
            egress::config::inject(
                ROUTE,
                &egress::config::Scheme::Bearer,
                &token,
                "/t".as_ref(),
            )
            .unwrap(),
        ),
    }];
    let dialer = Dialer::new(
        Arc::new(StaticResolve(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        Some(&format!("http://{}", w.pipelock)),
    )
    .unwrap();
    let trust = trust_bundle(w.bottle.ca_pem.as_bytes(), None);
    let upstream = Upstream::new(dialer, Some(&trust)).unwrap();
    let agent_ca = TestPki::new(&["unused.test"]);
    let eg = egress::Proxy {
        bottle: "b".into(),
        policy: crate::reload::Swap::new(egress::route::Policy::new(
            routes,
            vec![HOST.into(), ROUTE.into()],
            &[],
        )),
        authority: Authority::from_pem(&agent_ca.ca_pem, &agent_ca.ca_key_pem).unwrap(),
        upstream,
        sink: egress::audit::Sink::Memory(Arc::new(Mutex::new(Vec::new()))),
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let eg_addr = l.local_addr().unwrap();
    tokio::spawn(egress::server::serve(l, Arc::new(eg)));
    let port = w.upstream.port();
    let t = connect_tunnel(eg_addr, &format!("{ROUTE}:{port}"))
        .await
        .unwrap();
    let mut s = http_over::<Full<Bytes>>(t, &tls_client(&agent_ca.ca_pem, true), ROUTE)
        .await
        .unwrap();
    // On the route: the injected key passes pipelock's DLP and reaches the upstream.
    let get = |path: &str, extra: Option<(&str, String)>| {
        let mut b = Request::get(format!("https://{ROUTE}:{port}{path}"));
        if let Some((k, v)) = extra {
            b = b.header(k, v);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let r = s.send(get("/v1/messages", None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", text(r).await);
    let seen = text(r).await;
    assert!(seen.contains(&format!("Bearer {token}")), "{seen}");
    // The same key as another header, or off the route's prefix: caught.
    let r = s
        .send(get("/v1/messages", Some(("x-leak", token.clone()))))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(text(r).await.contains("anthropic-api-key"));
    let t = connect_tunnel(eg_addr, &format!("{HOST}:{port}"))
        .await
        .unwrap();
    let mut s = http_over::<Full<Bytes>>(t, &tls_client(&agent_ca.ca_pem, false), HOST)
        .await
        .unwrap();
    let r = s
        .send(
            Request::get(format!("https://{HOST}:{port}/"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "not a route: no exemption"
    );
}

/// Plain HTTP inside a CONNECT tunnel (how egress sends `http://`) is relayed and checked
/// like intercepted HTTPS.
#[tokio::test]
async fn plain_http_inside_a_tunnel_is_checked_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let (plain, seen) = super::tests::upstream().await;
    let target = format!("{HOST}:{}", plain.port());
    let ask = |extra: String| {
        let target = target.clone();
        async move {
            let mut t = connect_tunnel(w.pipelock, &target).await.unwrap();
            t.write_all(
                format!("GET /p HTTP/1.1\r\nHost: {target}\r\n{extra}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            let _ = t.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let ok = ask(String::new()).await;
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("got 0"),
        "{ok}"
    );
    let bad = ask(format!("X-Token: {}\r\n", github_token())).await;
    assert!(bad.starts_with("HTTP/1.1 403"), "{bad}");
    assert_eq!(seen.lock().unwrap().heads.len(), 1);
    let e = w.denied("dlp").unwrap();
    assert_eq!(e.tls, Some("plain"));
}

/// An upstream that answers each request with `ok`, then closes the connection:
/// at once, saying `Connection: close` (`close`), or silently after `idle_ms` without
/// another request (an idle keep-alive ending, as servers do).
async fn closing_upstream(close: bool, idle_ms: u64) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let wait = std::time::Duration::from_millis(idle_ms);
                    let Ok(Ok(n @ 1..)) = tokio::time::timeout(wait, s.read(&mut buf)).await else {
                        return; // idle, or the client went: close
                    };
                    head.extend_from_slice(&buf[..n]);
                    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    head.clear();
                    let how = if close { "connection: close\r\n" } else { "" };
                    let r = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{how}\r\nok");
                    if s.write_all(r.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Everything the proxy sends until it closes the tunnel (at most 5 s).
async fn until_closed(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out));
    assert!(
        read.await.is_ok(),
        "the tunnel stayed open: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// CI found it: a client (egress) kept a plain-HTTP tunnel for its next request, the
/// upstream had closed its side after the first, and that request failed with
/// "channel closed". The client's connection now ends with the upstream's.
#[tokio::test]
async fn a_tunnel_ends_when_its_upstream_connection_does() {
    let w = world().await;
    // One request through a new tunnel to `upstream`; everything until the tunnel closes.
    let once = |upstream: SocketAddr| async move {
        let mut s = tunnel_with_get(w.pipelock, upstream.port()).await;
        until_closed(&mut s).await
    };
    // The upstream says `Connection: close`: the client is told in the response.
    let out = once(closing_upstream(true, 5_000).await).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("connection: close") && out.ends_with("ok"),
        "{out}"
    );
    // The upstream ends an idle keep-alive silently: the tunnel closes too, instead of
    // taking the next request and failing it.
    let out = once(closing_upstream(false, 200).await).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("ok"),
        "{out}"
    );
    // While the upstream keeps the connection, the tunnel carries request after request.
    let port = closing_upstream(false, 5_000).await.port();
    let mut s = tunnel_with_get(w.pipelock, port).await;
    for i in 0..3 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if i > 0 {
            s.write_all(format!("GET /again HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n").as_bytes())
                .await
                .unwrap();
        }
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        let r = String::from_utf8_lossy(&buf[..n]);
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("ok") && !r.contains("close"),
            "{r}"
        );
    }
    assert!(
        !w.audit.events().iter().any(|e| e.reason == "upstream"),
        "{:?}",
        w.audit.events()
    );
}

/// A tunnel through `pipelock` to `HOST:port` with one keep-alive GET sent in it.
async fn tunnel_with_get(
    pipelock: SocketAddr,
    port: u16,
) -> impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {
    use tokio::io::AsyncWriteExt;
    let mut s = connect_tunnel(pipelock, &format!("{HOST}:{port}"))
        .await
        .unwrap();
    s.write_all(format!("GET /one HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}
