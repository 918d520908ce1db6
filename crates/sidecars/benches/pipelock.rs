//! pipelock benchmark (harness = false): the chain agent -> egress -> pipelock ->
//! upstream against the direct baseline, in one run, in process (all on 127.0.0.1): a
//! fake TLS upstream; pipelock with TLS interception and DLP on (built-in rules); egress
//! in front of it (interception, credential injection, CONNECT through pipelock).
//!
//! Printed: sequential small GETs on one connection (req/s, p50, p99) direct, through
//! pipelock alone and through egress + pipelock, with the chain's added p50; a streamed
//! 30 MB upload of code-like text (MB/s; under pipelock's 32 MiB body cap) the same
//! three ways; and the DLP scanner alone over the same text (MB/s: streaming, and with
//! normalization on the whole body as pipelock scans one). Ratios are
//! against the direct figures of the same run.
//! Run: `cargo bench --bench pipelock`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bottle_secretscan::{Limits, RuleSet, StreamScanner};
use bottle_sidecars::certs::Authority;
use bottle_sidecars::egress;
use bottle_sidecars::egress::testkit::{self, Sender, TestPki};
use bottle_sidecars::egress::upstream::{
    Dialer, StaticResolve, Upstream, tls_config, trust_bundle,
};
use bottle_sidecars::pipelock::audit::{Audit, Event};
use bottle_sidecars::pipelock::config::{Config, DlpConfig};
use bottle_sidecars::pipelock::server::{Intercept, Proxy};
use bottle_sidecars::pipelock::ssrf::MapResolve;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

const HOST: &str = "api.example.test";
const SMALL: usize = 2000;
const UPLOAD: u64 = 30 << 20;

/// Audit events are counted, not kept (a long run would hold them all).
struct CountAudit(std::sync::atomic::AtomicU64);

impl Audit for CountAudit {
    fn record(&self, event: Event) {
        let _ = serde_json::to_string(&event); // the cost of a log line, without the I/O
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Pipelock,
    Chain,
}

struct Setup {
    upstream: SocketAddr,
    pipelock: SocketAddr,
    egress: SocketAddr,
    upstream_ca: String,
    bottle_ca: String,
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

async fn setup() -> Setup {
    let up = TestPki::new(&[HOST]);
    let upstream = testkit::spawn_upstream(&up.leaf_pem, &up.leaf_key_pem).await;
    let bottle = TestPki::new(&["unused.test"]);
    let cfg = Config {
        allow: vec![HOST.into()],
        allow_cidrs: vec!["127.0.0.1/32".into()],
        dlp: DlpConfig {
            enabled: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let tls = Intercept {
        authority: Authority::from_pem(&bottle.ca_pem, &bottle.ca_key_pem).expect("ca"),
        client: Arc::new(tls_config(Some(up.ca_pem.as_bytes()), &[]).expect("roots")),
    };
    let audit = Arc::new(CountAudit(Default::default()));
    let pipelock = Proxy::from_config(
        &cfg,
        Arc::new(MapResolve::default().with(HOST, &["127.0.0.1"])),
        audit,
    )
    .expect("pipelock")
    .with_tls(tls);
    let (l, pipelock_addr) = listen().await;
    tokio::spawn(bottle_sidecars::pipelock::server::serve(
        l,
        Arc::new(pipelock),
    ));

    let dialer = Dialer::new(
        Arc::new(StaticResolve(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        Some(&format!("http://{pipelock_addr}")),
    )
    .expect("dialer");
    let trust = trust_bundle(bottle.ca_pem.as_bytes(), None);
    let route = egress::route::Route {
        host: HOST.into(),
        path_prefix: None,
        passthrough: false,
        inject: Some(
            egress::config::inject(
                HOST,
                &egress::config::Scheme::Bearer,
                "bench-token",
                "/t".as_ref(),
            )
            .expect("inject"),
        ),
    };
    let eg = egress::Proxy {
        bottle: "bench".into(),
        policy: bottle_sidecars::reload::Swap::new(egress::route::Policy::new(
            vec![route],
            vec![],
            &[],
        )),
        authority: Authority::from_pem(&bottle.ca_pem, &bottle.ca_key_pem).expect("ca"),
        upstream: Upstream::new(dialer, Some(&trust)).expect("upstream"),
        sink: egress::audit::Sink::Memory(Default::default()),
    };
    let (l, egress_addr) = listen().await;
    tokio::spawn(egress::server::serve(l, Arc::new(eg)));
    Setup {
        upstream,
        pipelock: pipelock_addr,
        egress: egress_addr,
        upstream_ca: up.ca_pem,
        bottle_ca: bottle.ca_pem,
    }
}

async fn sender<B>(s: &Setup, path: Path) -> Sender<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let target = format!("{HOST}:{}", s.upstream.port());
    let (tcp, roots) = match path {
        Path::Direct => {
            let t = tokio::net::TcpStream::connect(s.upstream)
                .await
                .expect("connect");
            let _ = t.set_nodelay(true);
            (t, &s.upstream_ca)
        }
        Path::Pipelock => (
            testkit::connect_tunnel(s.pipelock, &target)
                .await
                .expect("tunnel"),
            &s.bottle_ca,
        ),
        Path::Chain => (
            testkit::connect_tunnel(s.egress, &target)
                .await
                .expect("tunnel"),
            &s.bottle_ca,
        ),
    };
    testkit::http_over(tcp, &testkit::tls_client(roots, false), HOST)
        .await
        .expect("http")
}

struct Small {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn small(s: &Setup, path: Path) -> Small {
    let mut snd: Sender<Full<Bytes>> = sender(s, path).await;
    let mut lat = Vec::with_capacity(SMALL);
    let start = Instant::now();
    for _ in 0..SMALL {
        let t = Instant::now();
        let req = Request::get("/small?q=1")
            .header("host", HOST)
            .header("user-agent", "bench/1")
            .body(Full::new(Bytes::new()))
            .expect("req");
        if let Sender::H1(h1) = &mut snd {
            h1.ready().await.expect("ready");
        }
        let resp = snd.send(req).await.expect("send");
        assert!(resp.status().is_success(), "{}", resp.status());
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

/// 256 KiB of code-like text with the words DLP keys on (token, key, secret, auth), no
/// secret.
fn text_chunk() -> Bytes {
    let lines = [
        "    let token = session.refresh(&config.auth_path)?; // rotated by the operator\n",
        "    if key.len() > MAX_KEY { return Err(Error::KeyTooLong(key.len())); }\n",
        "fn secret_store(cfg: &Config) -> Store { Store::open(&cfg.secret_dir) }\n",
        "    headers.insert(AUTHORIZATION, bearer(&auth.current()));\n",
        "    for (i, line) in body.lines().enumerate() { total += line.len() * i; }\n",
    ];
    let mut out = Vec::with_capacity(256 << 10);
    let mut i = 0;
    while out.len() < 256 << 10 {
        out.extend_from_slice(lines[i % lines.len()].as_bytes());
        i += 1;
    }
    out.truncate(256 << 10);
    Bytes::from(out)
}

async fn upload(s: &Setup, path: Path) -> f64 {
    let mut snd = sender(s, path).await;
    let body = testkit::repeated_body(text_chunk(), UPLOAD);
    let start = Instant::now();
    let req = Request::post("/count")
        .header("host", HOST)
        .body(body)
        .expect("req");
    let resp = snd.send(req).await.expect("send");
    let status = resp.status();
    let got = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&got)
    );
    let n: u64 = String::from_utf8_lossy(&got).parse().expect("count");
    assert_eq!(n, UPLOAD);
    (UPLOAD as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64()
}

/// The DLP scanner alone over the same upload, in 256 KiB chunks.
fn scanner_only() -> f64 {
    let rules = RuleSet::builtin();
    let chunk = text_chunk();
    let start = Instant::now();
    let mut s = StreamScanner::new(&rules);
    let mut found = 0;
    for _ in 0..(UPLOAD / chunk.len() as u64) {
        found += s.push(&chunk).len();
    }
    found += s.finish().len();
    assert_eq!(found, 0, "the bench text has no secret");
    (UPLOAD as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64()
}

/// The DLP scanner with normalization on, as pipelock runs it on a request body: every
/// decoded form of the whole body at once (`scan_deep`).
fn scan_deep_only() -> f64 {
    let rules = RuleSet::builtin();
    let body: Vec<u8> = text_chunk()
        .iter()
        .copied()
        .cycle()
        .take(UPLOAD as usize)
        .collect();
    let start = Instant::now();
    let found = rules
        .scan_deep(&body, &Limits::default())
        .expect("within the budget");
    assert!(found.is_empty(), "the bench text has no secret");
    (UPLOAD as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let scan = scanner_only();
    let deep = scan_deep_only();
    rt.block_on(async {
        let s = setup().await;
        // Warm up: connections, leaf minting.
        let _ = small(&s, Path::Chain).await;
        println!(
            "pipelock benchmark: {SMALL} sequential small GETs on one HTTP/1.1 connection; {} MB upload of code-like text; DLP on",
            UPLOAD >> 20
        );
        let d = small(&s, Path::Direct).await;
        let p = small(&s, Path::Pipelock).await;
        let c = small(&s, Path::Chain).await;
        for (name, x) in [("direct", &d), ("pipelock", &p), ("egress+pipelock", &c)] {
            println!(
                "small  {name:16} {:7.0} req/s  p50 {:6.0}us  p99 {:6.0}us  | rate x{:.2} p50 x{:.2}",
                x.rps,
                us(x.p50),
                us(x.p99),
                x.rps / d.rps,
                x.p50.as_secs_f64() / d.p50.as_secs_f64(),
            );
        }
        println!(
            "added p50: pipelock {:.0}us, egress+pipelock chain {:.0}us (target < 1000us)",
            us(p.p50) - us(d.p50),
            us(c.p50) - us(d.p50)
        );
        let du = upload(&s, Path::Direct).await;
        let pu = upload(&s, Path::Pipelock).await;
        let cu = upload(&s, Path::Chain).await;
        println!(
            "upload direct {du:7.1} MB/s | pipelock (DLP) {pu:7.1} MB/s x{:.2} | egress+pipelock {cu:7.1} MB/s x{:.2}",
            pu / du,
            cu / du
        );
    });
    println!(
        "DLP scanner alone, same text: streaming {scan:.0} MB/s, with normalization (scan_deep of the whole body, as pipelock) {deep:.0} MB/s (target >= 300 MB/s)"
    );
}
