//! In-process tests of the egress proxy (linkerd2-proxy style): the proxy on 127.0.0.1:0,
//! a fake upstream with its own test CA, and a client speaking CONNECT.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tokio::net::TcpListener;

use super::audit::Sink;
use super::certs::Authority;
use super::config::{Scheme, inject};
use super::route::{Policy, Route};
use super::server::{self, Proxy};
use super::testkit::*;
use super::upstream::{Dialer, StaticResolve, Upstream};

const TOKEN: &str = "sk-real-secret-0123456789";
const HOST: &str = "api.example.test";

struct World {
    proxy: SocketAddr,
    upstream: SocketAddr,
    bottle_ca: String,
    upstream_pki: TestPki,
    audit: Arc<Mutex<Vec<String>>>,
}

/// A proxy with `routes` and `allow`, trusting the upstream's test CA, and the upstream.
async fn world(routes: Vec<Route>, allow: Vec<String>) -> World {
    let upstream_pki = TestPki::new(&[HOST, "other.example.test", "open.example.test"]);
    let upstream = spawn_upstream(&upstream_pki.leaf_pem, &upstream_pki.leaf_key_pem).await;
    // The bottle CA: a separate test CA (its leaf is unused).
    let bottle = TestPki::new(&["unused.test"]);
    let ca_pem = bottle.ca_pem.clone();
    let authority = Authority::from_pem(&ca_pem, &bottle.ca_key_pem).unwrap();
    let dialer = Dialer::new(
        Arc::new(StaticResolve(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        None,
    )
    .unwrap();
    let up = Upstream::new(dialer, Some(upstream_pki.ca_pem.as_bytes())).unwrap();
    let audit = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy {
        bottle: "b".into(),
        policy: crate::reload::Swap::new(Policy::new(routes, allow, &[])),
        authority,
        upstream: up,
        sink: Sink::Memory(audit.clone()),
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server::serve(l, Arc::new(proxy)));
    World {
        proxy: addr,
        upstream,
        bottle_ca: ca_pem,
        upstream_pki,
        audit,
    }
}

fn bearer_route(host: &str, prefix: Option<&str>) -> Route {
    Route {
        host: host.into(),
        path_prefix: prefix.map(str::to_string),
        passthrough: false,
        inject: Some(inject(host, &Scheme::Bearer, TOKEN, "/t".as_ref()).unwrap()),
    }
}

impl World {
    async fn sender(&self, host: &str, h2: bool) -> Sender<Full<Bytes>> {
        let t = connect_tunnel(self.proxy, &format!("{host}:{}", self.upstream.port()))
            .await
            .unwrap();
        http_over(t, &tls_client(&self.bottle_ca, h2), host)
            .await
            .unwrap()
    }

    async fn get(&self, host: &str, path: &str, h2: bool) -> (StatusCode, String) {
        let mut s = self.sender(host, h2).await;
        assert_eq!(s.is_h2(), h2);
        let req = Request::get(format!("https://{host}{path}"))
            .header("host", host)
            .header("authorization", "Bearer agent-fake")
            .header("proxy-authorization", "Basic agent-proxy")
            .header("cookie", "session=agent-cookie")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = s.send(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn audit(&self) -> Vec<String> {
        self.audit.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn route_injects_token_and_strips_agent_credentials_h1_and_h2() {
    let w = world(vec![bearer_route(HOST, None)], vec![]).await;
    for h2 in [false, true] {
        let (status, body) = w.get(HOST, "/v1/messages", h2).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["headers"]["authorization"], format!("Bearer {TOKEN}"));
        assert!(v["headers"].get("proxy-authorization").is_none(), "{body}");
        assert!(!body.contains("agent-fake"), "{body}");
        // Only credentials are replaced: the agent's cookie passes untouched.
        assert_eq!(v["headers"]["cookie"], "session=agent-cookie", "{body}");
        // The upstream negotiated h2 with the proxy in both cases.
        assert_eq!(v["version"], "HTTP/2.0");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let audit = w.audit();
    assert!(audit.len() >= 2, "{audit:?}");
    for line in &audit {
        assert!(
            !line.contains(TOKEN) && !line.contains("agent-fake"),
            "{line}"
        );
    }
    let rec: serde_json::Value = serde_json::from_str(&audit[0]).unwrap();
    assert_eq!(rec["host"], HOST);
    assert_eq!(rec["route"], HOST);
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["method"], "GET");
    assert_eq!(rec["path"], "/v1/messages");
    assert!(rec["bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn path_prefix_routes_and_unknown_hosts_are_refused() {
    let w = world(
        vec![bearer_route(HOST, Some("/v1"))],
        vec!["open.example.test".into()],
    )
    .await;
    let (s, body) = w.get(HOST, "/v1/x", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains(TOKEN));
    let (s, body) = w.get(HOST, "/v2/x", false).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains(HOST));
    // An allowed host gets no credential; the agent's own header passes.
    let (s, body) = w.get("open.example.test", "/", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !body.contains(TOKEN) && body.contains("agent-fake"),
        "{body}"
    );
    // A host with no route and not allowed: 403 naming it, at CONNECT.
    let err = connect_tunnel(w.proxy, "evil.example.test:443")
        .await
        .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.body.contains("evil.example.test"), "{}", err.body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        w.audit()
            .iter()
            .any(|l| l.contains("evil.example.test") && l.contains("403"))
    );
}

#[tokio::test]
async fn passthrough_shows_the_upstream_certificate() {
    let mut r = bearer_route(HOST, None);
    r.passthrough = true;
    r.inject = None;
    let w = world(vec![r], vec![]).await;
    let t = connect_tunnel(w.proxy, &format!("{HOST}:{}", w.upstream.port()))
        .await
        .unwrap();
    // Only the upstream's own CA is trusted: the bottle CA's leaf would fail.
    let mut s: Sender<Full<Bytes>> = http_over(t, &tls_client(&w.upstream_pki.ca_pem, false), HOST)
        .await
        .unwrap();
    let resp = s
        .send(
            Request::get("/")
                .header("host", HOST)
                .header("authorization", "Bearer agent-own")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("agent-own"), "untouched: {body}");
}

#[tokio::test]
async fn bad_upstream_certificate_is_a_502_with_the_reason() {
    let w = world(vec![bearer_route(HOST, None)], vec![]).await;
    // A second upstream whose CA the proxy does not trust.
    let rogue = TestPki::new(&[HOST]);
    let addr = spawn_upstream(&rogue.leaf_pem, &rogue.leaf_key_pem).await;
    let t = connect_tunnel(w.proxy, &format!("{HOST}:{}", addr.port()))
        .await
        .unwrap();
    let mut s: Sender<Full<Bytes>> = http_over(t, &tls_client(&w.bottle_ca, false), HOST)
        .await
        .unwrap();
    let resp = s
        .send(
            Request::get("/")
                .header("host", HOST)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("invalid peer certificate"), "{body}");
}

#[tokio::test]
async fn large_bodies_stream_both_ways_without_buffering() {
    let w = world(vec![bearer_route(HOST, None)], vec![]).await;
    for h2 in [false, true] {
        let t = connect_tunnel(w.proxy, &format!("{HOST}:{}", w.upstream.port()))
            .await
            .unwrap();
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
        let body = StreamBody::new(tokio_stream_from(rx));
        let mut s = http_over(t, &tls_client(&w.bottle_ca, h2), HOST)
            .await
            .unwrap();
        let req = Request::post("/echo")
            .header("host", HOST)
            .body(body)
            .unwrap();
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        tx.send(Ok(hyper::body::Frame::data(chunk.clone())))
            .await
            .unwrap();
        // The response head arrives while the request body is still open: nothing waits
        // for the whole body.
        let resp = tokio::time::timeout(Duration::from_secs(10), s.send(req))
            .await
            .expect("response head before the body ended")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut resp_body = resp.into_body();
        let first = tokio::time::timeout(Duration::from_secs(10), resp_body.frame())
            .await
            .expect("echo of the first chunk before the body ended");
        let mut got = first.unwrap().unwrap().into_data().unwrap().len() as u64;
        let total = 50u64 << 20;
        tokio::spawn(async move {
            for _ in 1..(total >> 20) {
                if tx
                    .send(Ok(hyper::body::Frame::data(chunk.clone())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        while let Some(f) = resp_body.frame().await {
            got += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        }
        assert_eq!(got, total, "h2={h2}");
    }
}

/// A `Stream` over an mpsc receiver (no tokio-stream dependency).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Unpin {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[tokio::test]
async fn upgrades_and_sse_pass() {
    let w = world(vec![bearer_route(HOST, None)], vec![]).await;
    let t = connect_tunnel(w.proxy, &format!("{HOST}:{}", w.upstream.port()))
        .await
        .unwrap();
    let mut s: Sender<Empty<Bytes>> = http_over(t, &tls_client(&w.bottle_ca, false), HOST)
        .await
        .unwrap();
    let mut resp = s
        .send(
            Request::get("/upgrade")
                .header("host", HOST)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let up = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut up = hyper_util::rt::TokioIo::new(up);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    up.write_all(b"ping over the upgrade").await.unwrap();
    let mut buf = [0u8; 21];
    up.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over the upgrade");

    let (status, body) = w.get(HOST, "/sse", true).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("data: three"), "{body}");
}

/// A client that sends plain text into an intercepted tunnel (no TLS) reads egress's
/// `200` and then a clean end, never a reset that loses the `200`: egress reads what the
/// client sent before it closes.
#[tokio::test]
async fn a_tunnel_without_tls_ends_without_a_reset() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let w = world(vec![], vec!["open.example.test".into()]).await;
    for _ in 0..40 {
        let mut c = tokio::net::TcpStream::connect(w.proxy).await.unwrap();
        c.write_all(
            b"CONNECT open.example.test:443 HTTP/1.1\r\nHost: open.example.test:443\r\n\r\n\
              GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: plain\r\n\r\n",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            matches!(read, Ok(Ok(_))) && text.starts_with("HTTP/1.1 200"),
            "{read:?}: {text:?}"
        );
    }
}
