//! Egress proxy benchmark (harness = false): small-request rate and latency, and the
//! throughput of a 100 MB upload, direct to a fake TLS upstream vs through the egress
//! proxy (in process, CONNECT + interception + injection), printed as ratios against the
//! direct baseline. Run: `cargo bench --bench egress`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bottle::sidecar::egress::audit::Sink;
use bottle::sidecar::egress::certs::Authority;
use bottle::sidecar::egress::config::{Scheme, inject};
use bottle::sidecar::egress::route::{Policy, Route};
use bottle::sidecar::egress::server::{self, Proxy};
use bottle::sidecar::egress::testkit::{self, Sender, TestPki};
use bottle::sidecar::egress::upstream::{Dialer, StaticResolve, Upstream};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};

const HOST: &str = "api.example.test";
const SMALL: usize = 2000;
const UPLOAD: u64 = 100 << 20;

struct Setup {
    upstream: SocketAddr,
    proxy: SocketAddr,
    upstream_ca: String,
    bottle_ca: String,
}

async fn setup() -> Setup {
    let up = TestPki::new(&[HOST]);
    let upstream = testkit::spawn_upstream(&up.leaf_pem, &up.leaf_key_pem).await;
    let bottle = TestPki::new(&["unused.test"]);
    let authority = Authority::from_pem(&bottle.ca_pem, &bottle.ca_key_pem).expect("ca");
    let dialer = Dialer::new(
        Arc::new(StaticResolve(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        None,
    )
    .expect("dialer");
    let upstream_client = Upstream::new(dialer, Some(up.ca_pem.as_bytes())).expect("upstream");
    let route = Route {
        host: HOST.into(),
        path_prefix: None,
        passthrough: false,
        inject: Some(inject(HOST, &Scheme::Bearer, "bench-token", "/t".as_ref()).expect("inject")),
    };
    let proxy = Proxy {
        bottle: "bench".into(),
        policy: Policy::new(vec![route], vec![]),
        authority,
        upstream: upstream_client,
        // The audit lines are part of the cost; keep them, in memory.
        sink: Sink::Memory(Default::default()),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_addr = l.local_addr().expect("addr");
    tokio::spawn(server::serve(l, Arc::new(proxy)));
    Setup {
        upstream,
        proxy: proxy_addr,
        upstream_ca: up.ca_pem,
        bottle_ca: bottle.ca_pem,
    }
}

async fn sender<B>(s: &Setup, via_proxy: bool, h2: bool) -> Sender<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tcp, roots) = if via_proxy {
        let t = testkit::connect_tunnel(s.proxy, &format!("{HOST}:{}", s.upstream.port()))
            .await
            .expect("tunnel");
        (t, &s.bottle_ca)
    } else {
        let t = tokio::net::TcpStream::connect(s.upstream)
            .await
            .expect("connect");
        let _ = t.set_nodelay(true);
        (t, &s.upstream_ca)
    };
    testkit::http_over(tcp, &testkit::tls_client(roots, h2), HOST)
        .await
        .expect("http")
}

struct Small {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn small(s: &Setup, via_proxy: bool, h2: bool) -> Small {
    let mut snd: Sender<Full<Bytes>> = sender(s, via_proxy, h2).await;
    let mut lat = Vec::with_capacity(SMALL);
    let start = Instant::now();
    for _ in 0..SMALL {
        let t = Instant::now();
        let req = Request::get("/small")
            .header("host", HOST)
            .body(Full::new(Bytes::new()))
            .expect("req");
        let resp = snd.send(req).await.expect("send");
        let _ = resp.into_body().collect().await.expect("body");
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    Small {
        rps: SMALL as f64 / total.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
    }
}

async fn upload(s: &Setup, via_proxy: bool, h2: bool) -> f64 {
    type Frame = Result<hyper::body::Frame<Bytes>, std::io::Error>;
    let mut snd = sender(s, via_proxy, h2).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(8);
    let body = StreamBody::new(Box::pin(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
    })));
    let chunk = Bytes::from(vec![1u8; 256 << 10]);
    let start = Instant::now();
    tokio::spawn(async move {
        for _ in 0..(UPLOAD / chunk.len() as u64) {
            if tx
                .send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let req = Request::post("/count")
        .header("host", HOST)
        .body(body)
        .expect("req");
    let resp = snd.send(req).await.expect("send");
    let got = resp.into_body().collect().await.expect("body").to_bytes();
    let n: u64 = String::from_utf8_lossy(&got).parse().expect("count");
    assert_eq!(n, UPLOAD);
    (UPLOAD as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = setup().await;
        // Warm up: connections, leaf minting.
        let _ = small(&s, true, false).await;
        println!("egress benchmark: {SMALL} sequential small GETs on one connection; {} MB upload", UPLOAD >> 20);
        for h2 in [false, true] {
            let proto = if h2 { "h2" } else { "http/1.1" };
            let d = small(&s, false, h2).await;
            let p = small(&s, true, h2).await;
            println!(
                "{proto:8} small  direct {:7.0} req/s p50 {:6.0}us p99 {:6.0}us | egress {:7.0} req/s p50 {:6.0}us p99 {:6.0}us | rate x{:.2} p50 x{:.2} p99 x{:.2}",
                d.rps,
                d.p50.as_secs_f64() * 1e6,
                d.p99.as_secs_f64() * 1e6,
                p.rps,
                p.p50.as_secs_f64() * 1e6,
                p.p99.as_secs_f64() * 1e6,
                p.rps / d.rps,
                p.p50.as_secs_f64() / d.p50.as_secs_f64(),
                p.p99.as_secs_f64() / d.p99.as_secs_f64(),
            );
            let du = upload(&s, false, h2).await;
            let pu = upload(&s, true, h2).await;
            println!(
                "{proto:8} upload direct {du:7.1} MB/s | egress {pu:7.1} MB/s | x{:.2}",
                pu / du
            );
        }
    });
}
