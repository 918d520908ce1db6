//! Egress proxy benchmark (harness = false), in one run: a fake TLS upstream on 127.0.0.1
//! (in process), reached three ways: direct; through the real `bottle sidecar egress`
//! process (CONNECT, interception with a minted leaf, credential injection, upstream TLS,
//! an audit line per request); and through mitmproxy's `mitmdump` doing the same
//! interception and injection. For HTTP/1.1 and h2: sequential small GETs on one
//! connection (req/s, p50, p99), concurrent small GETs on several connections (req/s), and
//! a streamed 100 MB upload (MB/s). Also the resident memory of the egress process, idle
//! and after the run. Figures are printed with ratios against the direct baseline and
//! against mitmproxy, measured in the same run: each the median of interleaved rounds.
//!
//! Run: `cargo bench --bench egress`. mitmproxy is required: `mitmdump` on `PATH` or named
//! by `$MITMDUMP` (see BENCHMARKS.md for the setup).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bottle_sidecars::egress::config::{AuthConfig, Config, RouteConfig, Scheme};
use bottle_sidecars::egress::testkit::{self, Sender, TestPki};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

/// The upstream's name: an IP literal, so that every path (mitmproxy resolves with libc)
/// reaches the same listener with no resolver in the way.
const HOST: &str = "127.0.0.1";
const TOKEN: &str = "bench-token";
/// Sequential small requests on one connection.
const SMALL: usize = 2000;
/// Concurrent connections, and small requests on each.
const CONNS: usize = 16;
const PER_CONN: usize = 200;
const UPLOAD: u64 = 100 << 20;
/// Rounds of every measurement (`$EGRESS_BENCH_ROUNDS` overrides).
const ROUNDS: usize = 3;
/// How long a proxy may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A proxy under test: a child process, killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    /// The CA (PEM) whose leaves the proxy presents.
    ca_pem: String,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Resident memory in KiB (`VmRSS` of /proc/PID/status).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Wait until the proxy accepts connections (and `file`, if any, exists).
    fn wait_ready(mut self, what: &str, file: Option<&Path>) -> Proc {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("{what} exited at start ({status}):\n{log}");
            }
            let file_ok = file.is_none_or(Path::exists);
            if file_ok && std::net::TcpStream::connect(self.addr).is_ok() {
                return self;
            }
            assert!(Instant::now() < deadline, "{what} did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `bottle sidecar egress` as its own process: a config volume and a CA directory in
/// `dir`, one bearer route for the upstream.
fn start_egress(dir: &Path, upstream_ca: &Path) -> Proc {
    let ca = TestPki::new(&["unused.test"]);
    let ca_dir = dir.join("ca");
    std::fs::create_dir(&ca_dir).expect("ca dir");
    write(&ca_dir.join(bottle_contract::ca::CERT_FILE), &ca.ca_pem);
    write(&ca_dir.join(bottle_contract::ca::KEY_FILE), &ca.ca_key_pem);
    let token_file = dir.join("token");
    write(&token_file, TOKEN);
    let cfg = Config {
        bottle: "bench".into(),
        allow: vec![],
        routes: vec![RouteConfig {
            host: HOST.into(),
            path_prefix: None,
            tls_passthrough: false,
            auth: Some(AuthConfig {
                scheme: Scheme::Bearer,
                token_file,
            }),
        }],
        upstream_ca_file: Some(upstream_ca.to_path_buf()),
        upstream_proxy: None,
        allow_file: None,
    };
    let cfg_path = dir.join("config.json");
    write(&cfg_path, &serde_json::to_string(&cfg).expect("json"));
    let addr = free_port();
    // The audit lines go to a file, as they would to Docker's log driver.
    let log = dir.join("egress.log");
    let child = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["sidecar", "egress"])
        .env("BOTTLE_LISTEN", addr.to_string())
        .env("BOTTLE_EGRESS_CONFIG", &cfg_path)
        .env("BOTTLE_EGRESS_CA_DIR", &ca_dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn bottle sidecar egress");
    let p = Proc {
        child,
        addr,
        ca_pem: ca.ca_pem,
        log,
    };
    p.wait_ready("bottle sidecar egress", None)
}

/// `mitmdump` from `$MITMDUMP` or `PATH`, or a panic that says how to install it.
fn mitmdump() -> PathBuf {
    if let Some(p) = std::env::var_os("MITMDUMP") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "MITMDUMP={} does not exist", p.display());
        return p;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("mitmdump"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "the egress benchmark compares against mitmproxy, and no `mitmdump` was found: \
                 python3 -m venv /work/venv-mitm && /work/venv-mitm/bin/pip install mitmproxy, \
                 then run with MITMDUMP=/work/venv-mitm/bin/mitmdump (or put it on PATH)"
            )
        })
}

/// mitmproxy doing egress's job: intercept with its own CA, verify the upstream against
/// the test CA, set the route's `Authorization` (replacing the agent's), stream bodies.
/// Its per-flow output is off (`flow_detail=0`): it writes less than egress's audit log.
fn start_mitmproxy(dir: &Path, upstream_ca: &Path) -> Proc {
    let bin = mitmdump();
    let conf = dir.join("mitm");
    std::fs::create_dir(&conf).expect("mitm dir");
    let addr = free_port();
    let log = dir.join("mitm.log");
    let opt = |k: &str, v: &str| format!("{k}={v}");
    let child = Command::new(&bin)
        .args(["--listen-host", HOST, "--listen-port"])
        .arg(addr.port().to_string())
        .args(["--set", &opt("confdir", &conf.display().to_string())])
        .args([
            "--set",
            &opt(
                "ssl_verify_upstream_trusted_ca",
                &upstream_ca.display().to_string(),
            ),
        ])
        .args(["--set", "stream_large_bodies=1m"])
        .args(["--set", "flow_detail=0"])
        .args(["--set", "termlog_verbosity=error"])
        .args([
            "--modify-headers",
            &format!("/~q/Authorization/Bearer {TOKEN}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let ca_file = conf.join("mitmproxy-ca-cert.pem");
    let mut p = Proc {
        child,
        addr,
        ca_pem: String::new(),
        log,
    }
    .wait_ready("mitmdump", Some(&ca_file));
    p.ca_pem = std::fs::read_to_string(&ca_file).expect("mitmproxy CA");
    p
}

/// One way to the upstream.
struct Way {
    name: &'static str,
    upstream: SocketAddr,
    proxy: Option<SocketAddr>,
    /// The CA (PEM) the client trusts on this way.
    roots: String,
}

impl Way {
    async fn sender<B>(&self, h2: bool) -> Sender<B>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = match self.proxy {
            Some(p) => testkit::connect_tunnel(p, &self.upstream.to_string())
                .await
                .unwrap_or_else(|r| panic!("{}: CONNECT {}: {}", self.name, r.status, r.body)),
            None => {
                let t = tokio::net::TcpStream::connect(self.upstream)
                    .await
                    .expect("connect");
                let _ = t.set_nodelay(true);
                t
            }
        };
        let s = testkit::http_over(tcp, &testkit::tls_client(&self.roots, h2), HOST)
            .await
            .unwrap_or_else(|e| panic!("{}: TLS/HTTP: {e}", self.name));
        assert_eq!(s.is_h2(), h2, "{}: ALPN", self.name);
        s
    }

    /// A request for `path`: origin-form for HTTP/1.1, absolute for h2 (`:authority`).
    fn request<B>(&self, method: http::Method, path: &str, h2: bool, body: B) -> Request<B> {
        let authority = self.upstream.to_string();
        let uri = if h2 {
            format!("https://{authority}{path}")
        } else {
            path.to_string()
        };
        Request::builder()
            .method(method)
            .uri(uri)
            .header("host", authority)
            .body(body)
            .expect("request")
    }

    /// `n` sequential small GETs on `snd`; latencies, sorted.
    async fn gets(&self, snd: &mut Sender<Full<Bytes>>, n: usize, h2: bool) -> Vec<Duration> {
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let req = self.request(http::Method::GET, "/small", h2, Full::new(Bytes::new()));
            let resp = snd
                .send(req)
                .await
                .unwrap_or_else(|e| panic!("{} (h2 {h2}): {e:?}", self.name));
            assert!(
                resp.status().is_success(),
                "{}: {}",
                self.name,
                resp.status()
            );
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            // The route's credential reached the upstream on every intercepting way.
            if self.proxy.is_some() {
                assert!(
                    body.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                    "{}: no injected token in {}",
                    self.name,
                    String::from_utf8_lossy(&body)
                );
            }
            lat.push(t.elapsed());
        }
        lat.sort();
        lat
    }

    async fn sequential(&self, h2: bool) -> Small {
        let mut snd = self.sender(h2).await;
        let start = Instant::now();
        let lat = self.gets(&mut snd, SMALL, h2).await;
        let total = start.elapsed();
        Small {
            rps: SMALL as f64 / total.as_secs_f64(),
            p50: lat[lat.len() / 2],
            p99: lat[lat.len() * 99 / 100],
        }
    }

    /// Requests/s of `CONNS` connections doing `PER_CONN` GETs each, all at once.
    async fn concurrent(self: &std::sync::Arc<Self>, h2: bool) -> f64 {
        let mut senders = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            senders.push(self.sender(h2).await);
        }
        let start = Instant::now();
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|mut snd| {
                let me = self.clone();
                tokio::spawn(async move { me.gets(&mut snd, PER_CONN, h2).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        (CONNS * PER_CONN) as f64 / start.elapsed().as_secs_f64()
    }

    /// MB/s of a streamed 100 MB POST whose size the upstream counts.
    async fn upload(&self, h2: bool) -> f64 {
        let mut snd = self.sender(h2).await;
        let body = testkit::repeated_body(Bytes::from(vec![1u8; 256 << 10]), UPLOAD);
        let start = Instant::now();
        let req = self.request(http::Method::POST, "/count", h2, body);
        let resp = snd.send(req).await.expect("send");
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        let n: u64 = String::from_utf8_lossy(&got)
            .parse()
            .unwrap_or_else(|_| panic!("{}: count: {}", self.name, String::from_utf8_lossy(&got)));
        assert_eq!(n, UPLOAD, "{}: bytes the upstream received", self.name);
        (UPLOAD as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64()
    }
}

struct Small {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median of some figures (the upper one of an even count).
fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn main() {
    let rounds: usize = match std::env::var("EGRESS_BENCH_ROUNDS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .expect("EGRESS_BENCH_ROUNDS: a positive count"),
        Err(_) => ROUNDS,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let up = TestPki::new(&[HOST]);
    let upstream_ca = dir.path().join("upstream-ca.pem");
    write(&upstream_ca, &up.ca_pem);
    let egress = start_egress(dir.path(), &upstream_ca);
    // Idle: started, listening, nothing served yet.
    std::thread::sleep(Duration::from_millis(500));
    let egress_idle = egress.rss_kib();
    let mitm = start_mitmproxy(dir.path(), &upstream_ca);
    std::thread::sleep(Duration::from_millis(500));
    let mitm_idle = mitm.rss_kib();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let upstream = testkit::spawn_upstream(&up.leaf_pem, &up.leaf_key_pem).await;
        let ways = [
            Way {
                name: "direct",
                upstream,
                proxy: None,
                roots: up.ca_pem.clone(),
            },
            Way {
                name: "egress",
                upstream,
                proxy: Some(egress.addr),
                roots: egress.ca_pem.clone(),
            },
            Way {
                name: "mitmproxy",
                upstream,
                proxy: Some(mitm.addr),
                roots: mitm.ca_pem.clone(),
            },
        ]
        .map(std::sync::Arc::new);
        // Warm up: connections, leaf minting, caches.
        for w in &ways {
            for h2 in [false, true] {
                let mut snd = w.sender(h2).await;
                let _ = w.gets(&mut snd, 50, h2).await;
            }
        }
        println!(
            "egress benchmark: {SMALL} sequential small GETs on one connection; \
             {CONNS} connections x {PER_CONN} GETs at once; one {} MB upload; \
             median of {rounds} interleaved rounds",
            UPLOAD >> 20
        );
        let mut verdicts = Vec::new();
        for h2 in [false, true] {
            let proto = if h2 { "h2" } else { "http/1.1" };
            // Rounds interleave the ways, so a burst of load from elsewhere hits all
            // three alike; each figure is the median over the rounds.
            let mut runs: Vec<Vec<(Small, f64, f64)>> = (0..ways.len()).map(|_| vec![]).collect();
            for _ in 0..rounds {
                for (w, r) in ways.iter().zip(&mut runs) {
                    r.push((
                        w.sequential(h2).await,
                        w.concurrent(h2).await,
                        w.upload(h2).await,
                    ));
                }
            }
            let seq: Vec<Small> = runs
                .iter()
                .map(|r| Small {
                    rps: median(r.iter().map(|x| x.0.rps)),
                    p50: Duration::from_secs_f64(median(r.iter().map(|x| x.0.p50.as_secs_f64()))),
                    p99: Duration::from_secs_f64(median(r.iter().map(|x| x.0.p99.as_secs_f64()))),
                })
                .collect();
            let conc: Vec<f64> = runs.iter().map(|r| median(r.iter().map(|x| x.1))).collect();
            let upl: Vec<f64> = runs.iter().map(|r| median(r.iter().map(|x| x.2))).collect();
            println!("{proto}:");
            for (i, w) in ways.iter().enumerate() {
                println!(
                    "  {:9} sequential {:6.0} req/s  p50 {:6.0} us  p99 {:6.0} us | concurrent {:6.0} req/s | upload {:6.1} MB/s",
                    w.name,
                    seq[i].rps,
                    us(seq[i].p50),
                    us(seq[i].p99),
                    conc[i],
                    upl[i]
                );
            }
            let (d, e, m) = (0, 1, 2);
            for (x, name) in [(e, "egress"), (m, "mitmproxy")] {
                println!(
                    "  {name:9} vs direct: sequential x{:.2}, p50 +{:.0} us (x{:.2}), p99 x{:.2}, concurrent x{:.2}, upload x{:.2}",
                    seq[x].rps / seq[d].rps,
                    us(seq[x].p50) - us(seq[d].p50),
                    us(seq[x].p50) / us(seq[d].p50),
                    us(seq[x].p99) / us(seq[d].p99),
                    conc[x] / conc[d],
                    upl[x] / upl[d],
                );
            }
            let seq_ratio = seq[e].rps / seq[m].rps;
            let conc_ratio = conc[e] / conc[m];
            let added = us(seq[e].p50) - us(seq[d].p50);
            println!(
                "  egress vs mitmproxy: sequential x{seq_ratio:.2}, concurrent x{conc_ratio:.2}, p50 x{:.2}, p99 x{:.2}, upload x{:.2}",
                us(seq[e].p50) / us(seq[m].p50),
                us(seq[e].p99) / us(seq[m].p99),
                upl[e] / upl[m],
            );
            verdicts.push(format!(
                "{proto}: >=5x mitmproxy req/s: {} (sequential x{seq_ratio:.1}, concurrent x{conc_ratio:.1}); <1 ms added p50: {} (+{added:.0} us)",
                verdict(seq_ratio >= 5.0 && conc_ratio >= 5.0),
                verdict(added < 1000.0),
            ));
        }
        let loaded = egress.rss_kib();
        println!(
            "memory: egress idle {:.1} MiB, after the run {:.1} MiB; mitmproxy idle {:.1} MiB (egress idle x{:.2})",
            egress_idle as f64 / 1024.0,
            loaded as f64 / 1024.0,
            mitm_idle as f64 / 1024.0,
            egress_idle as f64 / mitm_idle as f64,
        );
        println!("targets:");
        for v in verdicts {
            println!("  {v}");
        }
        println!(
            "  idle RSS < 15 MB: {} ({:.1} MiB)",
            verdict(egress_idle * 1024 < 15_000_000),
            egress_idle as f64 / 1024.0
        );
    });
    drop(mitm);
    drop(egress);
}
