//! The forward proxy: CONNECT tunnels and absolute-form plain-HTTP requests, on hyper 1.
//!
//! Every request is decided before anything leaves: the host against the allowlist,
//! then the URL and headers against the DLP rules, then the name is resolved once and
//! every address vetted by the SSRF guard, and the connection goes to the vetted
//! address. DLP looks at every decoded form (`scan_deep`: percent, base64, hex, JSON
//! escapes, Unicode ...). With DLP on, a request body is read whole (up to
//! [`BODY_CAP`]), inflated per its `Content-Encoding`, and scanned before any of it
//! leaves; a secret, a body over the cap or one that cannot be decoded is refused.
//!
//! With a CA ([`Intercept`]), a CONNECT is intercepted: pipelock reads the client's TLS
//! ClientHello, refuses a server name (SNI) that is not the CONNECT host, opens verified
//! TLS to the upstream offering the client's ALPN protocols, then completes the client's
//! handshake with a leaf minted from the bottle CA for the protocol the upstream chose,
//! and relays request by request (HTTP/1.1 or HTTP/2), each one checked like plain HTTP
//! plus: its Host (or `:authority`) must be the CONNECT host. `tls_passthrough` hosts,
//! and every CONNECT when pipelock has no CA, are tunnelled byte for byte.
//!
//! What a config file decides ([`Live`]) is swapped whole on reload; a request uses the
//! snapshot it started with.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use super::audit::{Audit, Event};
use super::config::{Config, ConfigError, RouteHeader};
use super::policy::{Host, Policy, Verdict, normalize};
use super::responses::Inspect;
use super::ssrf::{Resolve, SsrfError, vet, vet_ip};
use super::websocket;
use crate::certs::Authority;
use bottle_contract::host::path_prefix_matches;
use bottle_contract::pipelock::Responses;
use bottle_secretscan::{
    Finding, InflateError, Limits, RuleSet, encoded_labels, encoded_labels_dlp, entropy,
    high_entropy_tokens, inflate,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// HTTP/2 flow control inside interception: hyper's defaults (1 MiB windows, 16 KiB
/// frames) cap a streamed upload through two h2 hops far below the scanner's speed.
const H2_STREAM_WINDOW: u32 = 8 << 20;
const H2_CONN_WINDOW: u32 = 16 << 20;
const H2_MAX_FRAME: u32 = 256 << 10;

/// Body type of every response pipelock gives.
pub type Body = BoxBody<Bytes, BoxError>;

/// The largest request body DLP reads (and the largest it inflates to): a body is
/// scanned whole before any of it is sent. 32 MiB is the largest request the model
/// APIs take (Anthropic's Messages API: 32 MB, images inline as base64), the biggest
/// bodies an agent sends in its work; an upload over it is refused, not passed.
pub const BODY_CAP: usize = 32 << 20;

/// What the config file decides: swapped whole when the file changes.
pub struct Live {
    pub policy: Policy,
    /// DLP rules; None when DLP is off.
    pub rules: Option<Arc<RuleSet>>,
    /// Normalized hosts whose CONNECT is never intercepted.
    passthrough: Vec<String>,
    /// egress's routes (normalized host), for the DLP exemption of the injected header.
    routes: Vec<RouteHeader>,
    /// `egress.responses`: what a response carrying prompt injection gets.
    pub responses: Responses,
}

impl Live {
    pub fn from_config(cfg: &Config) -> Result<Live, ConfigError> {
        let rules = if cfg.dlp.enabled {
            if let Some(e) = &cfg.dlp.rules_error {
                return Err(ConfigError::RulesUnavailable(e.clone()));
            }
            Some(Arc::new(match &cfg.dlp.rules_toml {
                Some(t) => RuleSet::from_toml(t)?,
                None => RuleSet::builtin(),
            }))
        } else {
            None
        };
        let name = |raw: &String| match normalize(raw) {
            Ok(h) => Ok(h.to_string()),
            Err(e) => Err(ConfigError::Host(e)),
        };
        let passthrough = cfg.passthrough.iter().map(name).collect::<Result<_, _>>()?;
        let routes = cfg
            .route_headers
            .iter()
            .map(|r| {
                Ok(RouteHeader {
                    host: name(&r.host)?,
                    path_prefix: r.path_prefix.clone(),
                    header: r.header.as_ref().map(|h| h.to_ascii_lowercase()),
                    model: r.model,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Live {
            policy: Policy::from_config(cfg)?,
            rules,
            passthrough,
            routes,
            responses: cfg.responses,
        })
    }

    fn is_passthrough(&self, host: &Host) -> bool {
        let h = host.to_string();
        self.passthrough.contains(&h)
    }

    /// The header egress injects on the route a request to `host` + `path` takes, the
    /// way egress picks it (the longest matching path prefix): exempt from DLP there.
    pub fn injected_header(&self, host: &Host, path: &str) -> Option<&str> {
        self.route(host, path).and_then(|r| r.header.as_deref())
    }

    /// Whether a request to `host` + `path` takes a model-API route (its responses are
    /// the agent's own model's output: not scanned for injection).
    pub fn model_route(&self, host: &Host, path: &str) -> bool {
        self.route(host, path).is_some_and(|r| r.model)
    }

    /// The route a request to `host` + `path` takes, the way egress picks it.
    fn route(&self, host: &Host, path: &str) -> Option<&RouteHeader> {
        let h = host.to_string();
        self.routes
            .iter()
            .filter(|r| r.host == h)
            .filter(|r| {
                r.path_prefix
                    .as_deref()
                    .is_none_or(|p| path_prefix_matches(p, path))
            })
            .max_by_key(|r| r.path_prefix.as_deref().map_or(0, str::len))
    }
}

/// TLS interception: the bottle CA's leaves towards the client, verified TLS upstream.
pub struct Intercept {
    pub authority: Authority,
    /// Roots for upstreams (webpki plus `egress.upstream_ca`); ALPN is set per
    /// connection to what the client offered.
    pub client: Arc<ClientConfig>,
}

/// The proxy: what the config decides, resolver, audit sink, optional interception.
pub struct Proxy {
    live: RwLock<Arc<Live>>,
    pub resolver: Arc<dyn Resolve>,
    pub audit: Arc<dyn Audit>,
    pub connect_timeout: Duration,
    pub tls: Option<Intercept>,
}

impl Proxy {
    pub fn from_config(
        cfg: &Config,
        resolver: Arc<dyn Resolve>,
        audit: Arc<dyn Audit>,
    ) -> Result<Proxy, ConfigError> {
        Ok(Proxy {
            live: RwLock::new(Arc::new(Live::from_config(cfg)?)),
            resolver,
            audit,
            connect_timeout: Duration::from_secs(10),
            tls: None,
        })
    }

    /// Intercept CONNECTs with `tls`.
    pub fn with_tls(mut self, tls: Intercept) -> Proxy {
        self.tls = Some(tls);
        self
    }

    /// The current snapshot of the configuration.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swap in a new configuration; connections in flight keep their snapshot per
    /// request. An invalid configuration leaves the current one in force.
    pub fn reload(&self, cfg: &Config) -> Result<(), ConfigError> {
        let next = Arc::new(Live::from_config(cfg)?);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }
}

/// Accept connections until the listener fails.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<()> {
    loop {
        let (sock, _) = listener.accept().await?;
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

impl Proxy {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.method() == Method::CONNECT {
            self.connect(req).await
        } else if req.uri().authority().is_some() {
            self.forward(req).await
        } else if req.uri().path() == "/healthz" {
            text(StatusCode::OK, "ok pipelock\n".into())
        } else {
            text(
                StatusCode::BAD_REQUEST,
                "pipelock is a forward proxy: send CONNECT or absolute-form http:// requests\n"
                    .into(),
            )
        }
    }

    fn refuse(
        &self,
        mut ev: Event,
        reason: &'static str,
        status: StatusCode,
        msg: String,
    ) -> Response<Body> {
        ev.decision = "deny";
        ev.reason = reason;
        self.audit.record(ev);
        text(status, msg)
    }

    /// Parse and decide the target; on refusal, the response to give.
    fn decide(
        &self,
        live: &Live,
        ev: &mut Event,
        auth: Option<&http::uri::Authority>,
        default_port: Option<u16>,
    ) -> Result<(Host, u16), Box<Response<Body>>> {
        let Some(auth) = auth else {
            return Err(Box::new(self.refuse(
                ev.clone(),
                "bad-request",
                StatusCode::BAD_REQUEST,
                "pipelock: the request names no host\n".into(),
            )));
        };
        ev.host = auth.host().to_string();
        let Some(port) = auth.port_u16().or(default_port) else {
            return Err(Box::new(self.refuse(
                ev.clone(),
                "bad-request",
                StatusCode::BAD_REQUEST,
                format!("pipelock: CONNECT {} names no port\n", auth),
            )));
        };
        ev.port = port;
        let host = match normalize(auth.host()) {
            Ok(h) => h,
            Err(e) => {
                ev.detail = Some(e.to_string());
                return Err(Box::new(self.refuse(
                    ev.clone(),
                    "bad-host",
                    StatusCode::FORBIDDEN,
                    format!("pipelock: host {:?} refused: {e}\n", auth.host()),
                )));
            }
        };
        ev.host = host.to_string();
        self.allowed(live, ev, &host)?;
        Ok((host, port))
    }

    /// The allowlist's verdict on `host`, as a refusal when it is not allowed; then, for
    /// a name allowed by a wildcard, the labels the agent chose must not look like
    /// encoded data (the DNS lookup would carry it out). A name on an exact entry is
    /// exempt: the operator fixed all of it, nothing in it can vary.
    fn allowed(&self, live: &Live, ev: &Event, host: &Host) -> Result<(), Box<Response<Body>>> {
        match live.policy.check(host) {
            Verdict::Allow => {
                let chosen = host.name().and_then(|n| live.policy.chosen_labels(n));
                let why = chosen.and_then(|c| match &live.rules {
                    Some(rules) => encoded_labels_dlp(c, rules),
                    None => encoded_labels(c),
                });
                let Some(why) = why else { return Ok(()) };
                let mut ev = ev.clone();
                ev.detail = Some(format!("host name refused before any DNS lookup: {why}"));
                Err(Box::new(self.refuse(
                    ev,
                    "host-label-encoded",
                    StatusCode::FORBIDDEN,
                    format!(
                        "pipelock: the host name was refused: {why}. Names under a wildcard \
                         entry may not carry encoded data (the DNS lookup alone would send \
                         it out). If this is a real host, ask for it by its exact name with \
                         the supervise tool `egress-block`.\n"
                    ),
                )))
            }
            Verdict::NotAllowed => Err(Box::new(self.refuse(
                ev.clone(),
                "not-allowlisted",
                StatusCode::FORBIDDEN,
                format!(
                    "pipelock: {host} is not on this bottle's egress allowlist, so the request was blocked.\n\
                     To ask for access, propose it with the supervise tool `egress-block` \
                     (host: {host}, and why it is needed); the operator approves or denies it.\n"
                ),
            ))),
            Verdict::IpLiteral => Err(Box::new(self.refuse(
                ev.clone(),
                "ip-literal",
                StatusCode::FORBIDDEN,
                format!(
                    "pipelock: {host} is an IP address; only allowlisted host names are reachable.\n\
                     To ask for access, propose it with the supervise tool `egress-block` (host: {host}).\n"
                ),
            ))),
        }
    }

    /// Resolve, vet, connect to the vetted address.
    async fn open(
        &self,
        live: &Live,
        ev: &mut Event,
        host: &Host,
        port: u16,
    ) -> Result<TcpStream, Box<Response<Body>>> {
        let vetted = match host {
            Host::Ip(ip) => vet_ip(&live.policy, &host.to_string(), *ip).map(|()| *ip),
            Host::Name(n) => vet(&*self.resolver, &live.policy, n.as_str()).await,
        };
        let ip: IpAddr = match vetted {
            Ok(ip) => ip,
            Err(e @ SsrfError::Internal { .. }) => {
                ev.detail = Some(e.to_string());
                return Err(Box::new(self.refuse(
                    ev.clone(),
                    "ssrf",
                    StatusCode::FORBIDDEN,
                    format!("pipelock: refused: {e}; internal addresses are never reached.\n"),
                )));
            }
            Err(e) => {
                ev.detail = Some(e.to_string());
                return Err(Box::new(self.refuse(
                    ev.clone(),
                    "resolve",
                    StatusCode::BAD_GATEWAY,
                    format!("pipelock: {e}\n"),
                )));
            }
        };
        ev.ip = Some(ip.to_string());
        match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(SocketAddr::new(ip, port)),
        )
        .await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => {
                ev.detail = Some(e.to_string());
                Err(Box::new(self.refuse(
                    ev.clone(),
                    "connect",
                    StatusCode::BAD_GATEWAY,
                    format!("pipelock: connecting to {}:{port}: {e}\n", ev.host),
                )))
            }
            Err(_) => Err(Box::new(self.refuse(
                ev.clone(),
                "connect",
                StatusCode::GATEWAY_TIMEOUT,
                format!("pipelock: connecting to {}:{port} timed out\n", ev.host),
            ))),
        }
    }

    async fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let live = self.live();
        let mut ev = Event {
            method: "CONNECT".into(),
            ..Default::default()
        };
        let (host, port) = match self.decide(&live, &mut ev, req.uri().authority(), None) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let intercept = self.tls.is_some() && !live.is_passthrough(&host);
        ev.tls = Some(if intercept { "intercept" } else { "tunnel" });
        let mut upstream = match self.open(&live, &mut ev, &host, port).await {
            Ok(s) => s,
            Err(r) => return *r,
        };
        ev.decision = "allow";
        ev.reason = "allowlist";
        self.audit.record(ev.clone());
        tokio::spawn(async move {
            ev.decision = "close";
            ev.reason = "done";
            match hyper::upgrade::on(req).await {
                Ok(up) if intercept => {
                    self.clone()
                        .intercept(TokioIo::new(up), upstream, host, port, &mut ev)
                        .await
                }
                Ok(up) => {
                    let mut client = TokioIo::new(up);
                    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                        Ok((up_bytes, down_bytes)) => {
                            ev.bytes_up = Some(up_bytes);
                            ev.bytes_down = Some(down_bytes);
                        }
                        Err(e) => ev.detail = Some(e.to_string()),
                    }
                }
                Err(e) => ev.detail = Some(format!("upgrade failed: {e}")),
            }
            if ev.decision == "close" {
                self.audit.record(ev);
            }
        });
        Response::new(empty())
    }

    /// Terminate the client's TLS inside an allowed CONNECT and relay its requests over
    /// verified TLS to the vetted upstream. A refusal at this level is recorded here
    /// (and `ev.decision` set to `deny`); the caller records the `close` otherwise.
    async fn intercept(
        self: Arc<Self>,
        client: TokioIo<hyper::upgrade::Upgraded>,
        upstream: TcpStream,
        host: Host,
        port: u16,
        ev: &mut Event,
    ) {
        let Some(tls) = &self.tls else { return };
        // TLS or not: a TLS record starts with 0x16 (handshake). Plain HTTP inside a
        // tunnel (egress sends `http://` that way) gets the same checks.
        let mut client = client;
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.connect_timeout, client.read(&mut first)).await {
            Ok(Ok(1)) => {}
            Ok(Ok(_)) => return,
            Ok(Err(e)) => {
                ev.detail = Some(e.to_string());
                return;
            }
            Err(_) => {
                ev.detail = Some("the client sent nothing".into());
                return;
            }
        }
        let client = Prefixed::new(first[0], client);
        if first[0] != 0x16 {
            return self.plain_in_tunnel(client, upstream, host, port, ev).await;
        }
        let start = match LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client).await
        {
            Ok(s) => s,
            Err(e) => {
                ev.detail = Some(format!("client TLS: {e}"));
                return;
            }
        };
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_string);
        // HTTP/1.1 whenever the client speaks it: a streamed body through h2 on both
        // sides of pipelock is several times slower (flow control on two hops; see
        // BENCHMARKS.md), and a client's concurrency becomes parallel connections. A
        // client that offers only h2 gets h2.
        let protos: Vec<&[u8]> = hello
            .alpn()
            .map(|ps| ps.filter(|p| *p == b"h2" || *p == b"http/1.1").collect())
            .unwrap_or_default();
        let offered: Vec<Vec<u8>> = if protos.contains(&&b"http/1.1"[..]) {
            vec![b"http/1.1".to_vec()]
        } else {
            protos.into_iter().map(<[u8]>::to_vec).collect()
        };
        // The TLS server name must be the CONNECT host (an IP literal has none).
        let sni_ok = match (&host, sni.as_deref().map(normalize)) {
            (Host::Ip(_), None) => true,
            (_, Some(Ok(named))) => named == host,
            _ => false,
        };
        if !sni_ok {
            ev.detail = Some(format!(
                "TLS server name {} is not the CONNECT host {host}",
                sni.as_deref().unwrap_or("(none)")
            ));
            self.refuse(
                ev.clone(),
                "sni-mismatch",
                StatusCode::FORBIDDEN,
                String::new(),
            );
            ev.decision = "deny";
            return;
        }
        let name = match &host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(n) => match ServerName::try_from(n.as_str().to_owned()) {
                Ok(n) => n,
                Err(_) => return,
            },
        };
        let mut cfg = (*tls.client).clone();
        cfg.alpn_protocols = offered;
        let connecting = TlsConnector::from(Arc::new(cfg)).connect(name, upstream);
        let up = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                ev.detail = Some(format!("upstream TLS: {e}"));
                self.refuse(
                    ev.clone(),
                    "upstream-tls",
                    StatusCode::BAD_GATEWAY,
                    String::new(),
                );
                ev.decision = "deny";
                return;
            }
            Err(_) => {
                ev.detail = Some("upstream TLS handshake timed out".into());
                self.refuse(
                    ev.clone(),
                    "upstream-tls",
                    StatusCode::GATEWAY_TIMEOUT,
                    String::new(),
                );
                ev.decision = "deny";
                return;
            }
        };
        let alpn = up.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let server_cfg = match tls
            .authority
            .server_config_alpn(&host.to_string(), alpn.as_deref())
        {
            Ok(c) => c,
            Err(e) => {
                ev.detail = Some(e.to_string());
                return;
            }
        };
        let client = match start.into_stream(server_cfg).await {
            Ok(c) => TokioIo::new(c),
            Err(e) => {
                ev.detail = Some(format!("client TLS: {e}"));
                return;
            }
        };
        let up = TokioIo::new(up);
        let this = self.clone();
        let result = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) =
                match hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(H2_STREAM_WINDOW)
                    .initial_connection_window_size(H2_CONN_WINDOW)
                    .max_frame_size(H2_MAX_FRAME)
                    .handshake(up)
                    .await
                {
                    Ok(x) => x,
                    Err(e) => {
                        ev.detail = Some(format!("upstream HTTP/2: {e}"));
                        return;
                    }
                };
            tokio::spawn(conn);
            let svc = service_fn(move |req| {
                let this = this.clone();
                let host = host.clone();
                let sender = Upstream::H2(sender.clone());
                async move { Ok::<_, Infallible>(this.inner(req, host, port, sender, "https").await) }
            });
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONN_WINDOW)
                .max_frame_size(H2_MAX_FRAME)
                .serve_connection(client, svc)
                .await
                .map_err(|e| e.to_string())
        } else {
            this.relay_h1(client, up, host, port, "https").await
        };
        if let Err(e) = result {
            ev.detail = Some(e);
        }
    }

    /// Relay HTTP/1.1 from `client` over one `upstream` connection, request by request,
    /// each checked by [`Self::inner`]; the error says which side failed.
    async fn relay_h1<C, U>(
        self: Arc<Self>,
        client: C,
        upstream: U,
        host: Host,
        port: u16,
        scheme: &'static str,
    ) -> Result<(), String>
    where
        C: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        U: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(upstream)
            .await
            .map_err(|e| format!("upstream HTTP/1.1: {e}"))?;
        let gone = Arc::new(tokio::sync::Notify::new());
        tokio::spawn({
            let gone = gone.clone();
            async move {
                let _ = conn.with_upgrades().await;
                gone.notify_one();
            }
        });
        let link = Arc::new(H1Link {
            sender: tokio::sync::Mutex::new(sender),
            upgrading: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let watched = link.clone();
        let svc = service_fn(move |req| {
            let this = self.clone();
            let host = host.clone();
            let sender = Upstream::H1(link.clone());
            async move { Ok::<_, Infallible>(this.inner(req, host, port, sender, scheme).await) }
        });
        let served = http1::Builder::new()
            .serve_connection(client, svc)
            .with_upgrades();
        let mut served = std::pin::pin!(served);
        // The client's connection lives no longer than the upstream one it is tied to:
        // when the upstream closes (`Connection: close`, or an idle keep-alive ends), the
        // client's ends after the response in flight, so its next request opens a new
        // tunnel instead of failing on a dead one. An upgrade ends the upstream
        // connection too, and is left alone.
        tokio::select! {
            r = served.as_mut() => return r.map_err(|e| e.to_string()),
            () = gone.notified() => {
                if !watched.upgrading.load(Ordering::Acquire) {
                    served.as_mut().graceful_shutdown();
                }
            }
        }
        served.await.map_err(|e| e.to_string())
    }

    /// Plain HTTP/1.1 inside a CONNECT tunnel: relayed request by request to the vetted
    /// upstream connection, each checked like intercepted HTTPS.
    async fn plain_in_tunnel(
        self: Arc<Self>,
        client: Prefixed<TokioIo<hyper::upgrade::Upgraded>>,
        upstream: TcpStream,
        host: Host,
        port: u16,
        ev: &mut Event,
    ) {
        if let Err(e) = self
            .relay_h1(
                TokioIo::new(client),
                TokioIo::new(upstream),
                host,
                port,
                "http",
            )
            .await
        {
            ev.detail = Some(e);
        }
    }

    /// One request inside an intercepted tunnel to `host:port`.
    async fn inner(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        host: Host,
        port: u16,
        sender: Upstream,
        scheme: &'static str,
    ) -> Response<Body> {
        let live = self.live();
        let mut ev = Event {
            method: req.method().to_string(),
            host: host.to_string(),
            port,
            tls: Some(if scheme == "https" {
                "intercept"
            } else {
                "plain"
            }),
            ..Default::default()
        };
        // No domain fronting: Host (HTTP/1.1) or :authority (HTTP/2) names the CONNECT
        // host (and port, when it gives one).
        let named = match req.uri().authority() {
            Some(a) => Some(a.as_str().to_string()),
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        if !names_target(named.as_deref(), &host, port) {
            ev.detail = Some(format!(
                "Host {} is not the CONNECT host {host}",
                named.as_deref().unwrap_or("(none)")
            ));
            return self.refuse(
                ev,
                "host-mismatch",
                StatusCode::FORBIDDEN,
                format!(
                    "pipelock: this connection was opened for {host}; a request for another \
                     host ({}) is refused.\n",
                    named.as_deref().unwrap_or("none")
                ),
            );
        }
        // The allowlist may have changed since the CONNECT.
        if let Err(r) = self.allowed(&live, &ev, &host) {
            return *r;
        }
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let url = format!("{scheme}://{authority}{path}");
        let exempt = live.injected_header(&host, req.uri().path());
        if let Some(rules) = &live.rules
            && let Err(r) = self.dlp_head(
                &ev,
                rules,
                &url,
                &url_and_headers(&url, req.headers(), exempt),
            )
        {
            return *r;
        }
        // Only a WebSocket upgrade is relayed (frame by frame, inspected: `websocket`);
        // any other Upgrade header is dropped with the hop-by-hop ones.
        let upgrade = req.version() < http::Version::HTTP_2 && websocket::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        crate::hop::strip(&mut parts.headers, crate::hop::Keep::default());
        if upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts
                .headers
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            websocket::offer_known_extensions(&mut parts.headers);
        }
        let inspect = Inspect::prepare(
            live.responses,
            live.model_route(&host, parts.uri.path()),
            &parts.method,
            &path,
            &mut parts.headers,
        );
        let uri = match &sender {
            Upstream::H1(_) => path.parse(),
            Upstream::H2(_) => url.parse(),
        };
        let Ok(uri) = uri else {
            return self.refuse(
                ev,
                "bad-request",
                StatusCode::BAD_REQUEST,
                "pipelock: bad path\n".into(),
            );
        };
        match &sender {
            Upstream::H1(_) => {
                if let Ok(v) = HeaderValue::from_str(&authority) {
                    parts.headers.insert(header::HOST, v);
                }
            }
            Upstream::H2(_) => {
                parts.headers.remove(header::HOST);
            }
        }
        let (body, verdict) = match self.scan_body(&live, &ev, &parts.headers, body).await {
            Ok(b) => b,
            Err(r) => return *r,
        };
        let mut up = Request::new(body);
        *up.method_mut() = parts.method;
        *up.uri_mut() = uri;
        *up.headers_mut() = parts.headers;
        if let Upstream::H2(_) = &sender {
            *up.version_mut() = http::Version::HTTP_2;
        }
        let link = match &sender {
            Upstream::H1(l) => Some(l.clone()),
            Upstream::H2(_) => None,
        };
        let send = async move {
            match sender {
                Upstream::H1(link) => {
                    let mut s = link.sender.lock().await;
                    s.ready().await?;
                    // Before the response can arrive: `relay_h1` must not end the
                    // client's connection when this one is upgraded.
                    link.upgrading.store(upgrade, Ordering::Release);
                    let r = s.send_request(up).await;
                    if !matches!(&r, Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS) {
                        link.upgrading.store(false, Ordering::Release);
                    }
                    if let Ok(r) = &r
                        && closes_after(r)
                    {
                        link.closing.store(true, Ordering::Release);
                    }
                    r
                }
                Upstream::H2(mut s) => s.send_request(up).await,
            }
        };
        let mut ws_ev = ev.clone();
        let mut resp = self.exchange(ev, &host, send, verdict, inspect).await;
        // The upstream closes after this response (or failed): so does the client's
        // connection, said in the response rather than found out on the next request.
        if link.is_some_and(|l| {
            l.closing.load(Ordering::Acquire) || l.sender.try_lock().is_ok_and(|s| s.is_closed())
        }) && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Relayed only as a WebSocket whose frames pipelock can read.
            let relayable = match client_upgrade {
                Some(c) => websocket::negotiated(resp.headers()).map(|x| (x, c)),
                None => Err(websocket::HandshakeError::NotWebSocket),
            };
            let (extensions, client_upgrade) = match relayable {
                Ok(x) => x,
                Err(e) => {
                    ws_ev.detail = Some(e.to_string());
                    return self.refuse(
                        ws_ev,
                        "websocket",
                        StatusCode::BAD_GATEWAY,
                        format!("pipelock: upstream {host}: {e}\n"),
                    );
                }
            };
            // The upstream's side of the upgrade travels in the response's extensions.
            let up_upgrade = hyper::upgrade::on(&mut resp);
            let relay = websocket::Relay {
                extensions,
                rules: live.rules.clone(),
                audit: self.audit.clone(),
                event: ws_ev,
                limits: websocket::Limits::default(),
            };
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = tokio::join!(client_upgrade, up_upgrade) {
                    relay.run(TokioIo::new(a), TokioIo::new(b)).await;
                }
            });
        }
        resp
    }

    /// DLP on a request's head: the rules over the URL and headers in every decoded
    /// form, then long high-entropy tokens in the URL's path, query and userinfo (host
    /// labels are judged before any lookup, by `hostname`, with exact entries exempt).
    fn dlp_head(
        &self,
        ev: &Event,
        rules: &RuleSet,
        url: &str,
        head: &[u8],
    ) -> Result<(), Box<Response<Body>>> {
        match rules.scan_deep(head, &Limits::default()) {
            Ok(found) => {
                if let Some(f) = most_specific(found) {
                    return Err(Box::new(self.dlp_refusal(ev.clone(), &f, "url-headers")));
                }
            }
            Err(e) => {
                return Err(Box::new(self.body_refusal(
                    ev.clone(),
                    "url-headers",
                    BodyRefusal::Limit(e.to_string()),
                )));
            }
        }
        match high_entropy_tokens(url)
            .into_iter()
            .find(|f| f.rule_id != entropy::RULE_HOST)
        {
            Some(f) => Err(Box::new(self.dlp_refusal(ev.clone(), &f, "url"))),
            None => Ok(()),
        }
    }

    /// The body to send upstream. With DLP on it is read whole (up to [`BODY_CAP`]),
    /// inflated per `Content-Encoding` and scanned in every decoded form before any
    /// of it is sent; the verdict receiver is then always None (nothing to race).
    async fn scan_body(
        &self,
        live: &Live,
        ev: &Event,
        headers: &HeaderMap,
        body: Incoming,
    ) -> Result<(Body, Option<oneshot::Receiver<Finding>>), Box<Response<Body>>> {
        let Some(rules) = &live.rules else {
            return Ok((body.map_err(|e| Box::new(e) as BoxError).boxed(), None));
        };
        if body.is_end_stream() {
            return Ok((empty(), None));
        }
        let refuse = |r: BodyRefusal| Err(Box::new(self.body_refusal(ev.clone(), "body", r)));
        if body.size_hint().lower() > BODY_CAP as u64 {
            return refuse(BodyRefusal::TooLarge);
        }
        let (bytes, trailers) = match Limited::new(body, BODY_CAP).collect().await {
            Ok(c) => {
                // Trailers are not forwarded, but what they carry has still left the
                // agent's hands: scanned like the body, as `name: value` lines.
                let trailers = c.trailers().map(|t| {
                    let mut text = Vec::new();
                    for (name, value) in t {
                        text.extend_from_slice(name.as_str().as_bytes());
                        text.extend_from_slice(b": ");
                        text.extend_from_slice(value.as_bytes());
                        text.extend_from_slice(b"\r\n");
                    }
                    text
                });
                (c.to_bytes(), trailers)
            }
            Err(e) if e.is::<LengthLimitError>() => return refuse(BodyRefusal::TooLarge),
            Err(e) => return refuse(BodyRefusal::Read(e.to_string())),
        };
        let mut coding = String::new();
        for v in headers.get_all(header::CONTENT_ENCODING) {
            let Ok(v) = v.to_str() else {
                return refuse(BodyRefusal::Encoding("(not text)".into()));
            };
            if !coding.is_empty() {
                coding.push(',');
            }
            coding.push_str(v);
        }
        let (rules, plain) = (rules.clone(), bytes.clone());
        let verdict = tokio::task::spawn_blocking(move || {
            if let Some(t) = trailers.filter(|t| !t.is_empty()) {
                let found = rules
                    .scan_deep(&t, &Limits::default())
                    .map_err(|e| (BodyRefusal::Limit(e.to_string()), "trailers"))?;
                if !found.is_empty() {
                    return Ok((found, "trailers"));
                }
            }
            let inflated;
            let data: &[u8] = if coding.trim().is_empty() {
                &plain
            } else {
                inflated = inflate(&coding, &plain, BODY_CAP)
                    .map_err(|e| match e {
                        InflateError::TooLarge { .. } => BodyRefusal::TooLarge,
                        e @ (InflateError::Unknown(_) | InflateError::TooManyLayers { .. }) => {
                            BodyRefusal::Encoding(e.to_string())
                        }
                        e => BodyRefusal::Corrupt(e.to_string()),
                    })
                    .map_err(|r| (r, "body"))?;
                &inflated
            };
            rules
                .scan_deep(data, &Limits::default())
                .map(|found| (found, "body"))
                .map_err(|e| (BodyRefusal::Limit(e.to_string()), "body"))
        })
        .await;
        match verdict {
            Ok(Ok((found, part))) => match most_specific(found) {
                Some(f) => Err(Box::new(self.dlp_refusal(ev.clone(), &f, part))),
                None => Ok((Full::new(bytes).map_err(|e| match e {}).boxed(), None)),
            },
            Ok(Err((r, part))) => Err(Box::new(self.body_refusal(ev.clone(), part, r))),
            Err(e) => refuse(BodyRefusal::Read(e.to_string())),
        }
    }

    /// A request DLP cannot inspect: refused, never passed.
    fn body_refusal(&self, mut ev: Event, part: &'static str, r: BodyRefusal) -> Response<Body> {
        let host = ev.host.clone();
        ev.part = Some(part);
        let (reason, status, why) = match &r {
            BodyRefusal::TooLarge => (
                "dlp-limit",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "its body is (or inflates to) over {} MiB, more than DLP inspects",
                    BODY_CAP >> 20
                ),
            ),
            BodyRefusal::Limit(_) => (
                "dlp-limit",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("its {part} holds more encoded content than DLP inspects"),
            ),
            BodyRefusal::Encoding(_) => (
                "dlp-encoding",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "its Content-Encoding is not one DLP can inspect (gzip, deflate, br and zstd are)"
                    .into(),
            ),
            BodyRefusal::Corrupt(_) => (
                "dlp-encoding",
                StatusCode::BAD_REQUEST,
                "its body does not decode as its Content-Encoding says".into(),
            ),
            BodyRefusal::Read(_) => (
                "bad-request",
                StatusCode::BAD_REQUEST,
                "its body could not be read".into(),
            ),
        };
        ev.detail = Some(match r {
            BodyRefusal::TooLarge => format!("body over {BODY_CAP} bytes"),
            BodyRefusal::Limit(d)
            | BodyRefusal::Encoding(d)
            | BodyRefusal::Corrupt(d)
            | BodyRefusal::Read(d) => d,
        });
        let mut resp = self.refuse(
            ev,
            reason,
            status,
            format!("pipelock: request to {host} refused: {why}. Nothing was sent.\n"),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// Send upstream while watching the DLP verdict on the body; the response to give.
    async fn exchange(
        &self,
        mut ev: Event,
        host: &Host,
        send: impl std::future::Future<Output = Result<Response<Incoming>, hyper::Error>>,
        mut verdict: Option<oneshot::Receiver<Finding>>,
        inspect: Inspect,
    ) -> Response<Body> {
        let mut response = std::pin::pin!(send);
        let outcome = loop {
            tokio::select! {
                v = async { verdict.as_mut().expect("guarded").await }, if verdict.is_some() => {
                    match v {
                        Ok(f) => break Err(f),
                        Err(_) => verdict = None,
                    }
                }
                r = &mut response => break Ok(r),
            }
        };
        // The upstream connection is cut mid-body: the client's goes too (HTTP/1.1).
        let cut = |mut r: Response<Body>| {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        };
        match outcome {
            Err(f) => cut(self.dlp_refusal(ev, &f, "body")),
            Ok(Err(e)) => {
                if let Some(f) = verdict.as_mut().and_then(|v| v.try_recv().ok()) {
                    return cut(self.dlp_refusal(ev, &f, "body"));
                }
                ev.detail = Some(e.to_string());
                self.refuse(
                    ev,
                    "upstream",
                    StatusCode::BAD_GATEWAY,
                    format!("pipelock: upstream {host}: {e}\n"),
                )
            }
            Ok(Ok(resp)) => {
                ev.decision = "allow";
                ev.reason = "allowlist";
                ev.detail = Some(format!("status {}", resp.status().as_u16()));
                let request = ev.clone();
                self.audit.record(ev);
                let (mut parts, body) = resp.into_parts();
                if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    crate::hop::strip(&mut parts.headers, crate::hop::Keep::default());
                    // The body to the agent, checked for prompt injection.
                    return inspect
                        .apply(self.audit.clone(), request, parts, body)
                        .await;
                }
                Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
            }
        }
    }

    async fn forward(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let live = self.live();
        let mut ev = Event {
            method: req.method().to_string(),
            ..Default::default()
        };
        if req.uri().scheme_str() != Some("http") {
            ev.host = req.uri().host().unwrap_or_default().to_string();
            return self.refuse(
                ev,
                "bad-request",
                StatusCode::BAD_REQUEST,
                "pipelock: only http:// URLs are proxied in absolute form; use CONNECT for https\n"
                    .into(),
            );
        }
        let (host, port) = match self.decide(&live, &mut ev, req.uri().authority(), Some(80)) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        if let Some(rules) = &live.rules
            && let Err(r) = self.dlp_head(
                &ev,
                rules,
                &req.uri().to_string(),
                &url_and_headers(&req.uri().to_string(), req.headers(), None),
            )
        {
            return *r;
        }
        let stream = match self.open(&live, &mut ev, &host, port).await {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        crate::hop::strip(&mut parts.headers, crate::hop::Keep::default());
        let inspect = Inspect::prepare(
            live.responses,
            live.model_route(&host, parts.uri.path()),
            &parts.method,
            &path,
            &mut parts.headers,
        );
        // The target was decided on the URL's authority: the Host sent is that one
        // (RFC 9112 3.2.2), never another name the agent wrote in the header.
        match HeaderValue::from_str(&authority) {
            Ok(v) => {
                parts.headers.insert(header::HOST, v);
            }
            Err(_) => {
                parts.headers.remove(header::HOST);
            }
        }
        let (body, verdict) = match self.scan_body(&live, &ev, &parts.headers, body).await {
            Ok(b) => b,
            Err(r) => return *r,
        };
        let mut up = Request::new(body);
        *up.method_mut() = parts.method;
        *up.uri_mut() = match path.parse() {
            Ok(u) => u,
            Err(_) => {
                return self.refuse(
                    ev,
                    "bad-request",
                    StatusCode::BAD_REQUEST,
                    "pipelock: bad path\n".into(),
                );
            }
        };
        *up.headers_mut() = parts.headers;
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(x) => x,
                Err(e) => {
                    ev.detail = Some(e.to_string());
                    return self.refuse(
                        ev,
                        "connect",
                        StatusCode::BAD_GATEWAY,
                        format!("pipelock: upstream {host}: {e}\n"),
                    );
                }
            };
        tokio::spawn(conn);
        self.exchange(ev, &host, sender.send_request(up), verdict, inspect)
            .await
    }

    fn dlp_refusal(&self, mut ev: Event, f: &Finding, part: &'static str) -> Response<Body> {
        ev.rule = Some(f.rule_id.clone());
        ev.offset = Some(f.offset);
        ev.hash = Some(f.hash.clone());
        ev.part = Some(part);
        if !f.via.is_empty() {
            ev.detail = Some(format!("found after decoding {}", f.via));
        }
        let host = ev.host.clone();
        self.refuse(
            ev,
            "dlp",
            StatusCode::FORBIDDEN,
            format!(
                "pipelock: request to {host} blocked: its {part} carries what looks like a secret \
                 (DLP rule {}). The secret was not sent.\n",
                f.rule_id
            ),
        )
    }
}

/// Of several findings, the first of a specific rule over a generic one.
pub(super) fn most_specific(findings: Vec<Finding>) -> Option<Finding> {
    findings
        .into_iter()
        .min_by_key(|f| (f.rule_id.starts_with("generic"), f.offset))
}

/// A stream whose first byte was already read (to tell TLS from plain HTTP).
struct Prefixed<IO> {
    first: Option<u8>,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    fn new(first: u8, inner: IO) -> Self {
        Prefixed {
            first: Some(first),
            inner,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(b) = self.first.take() {
            buf.put_slice(&[b]);
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The upstream connection of an intercepted tunnel.
enum Upstream {
    H1(Arc<H1Link>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// An HTTP/1.1 upstream connection shared by the requests of one client connection.
struct H1Link {
    sender: tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Body>>,
    /// A WebSocket upgrade is under way or done: the upstream connection's end is the
    /// upgrade, not a close.
    upgrading: AtomicBool,
    /// The upstream said it closes after its last response.
    closing: AtomicBool,
}

/// Does the upstream close its connection after response `r` (RFC 9112 9.3:
/// `Connection: close`, or HTTP/1.0 without `keep-alive`)?
fn closes_after<B>(r: &Response<B>) -> bool {
    let tokens = || {
        r.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    tokens().any(|t| t.eq_ignore_ascii_case("close"))
        || (r.version() == http::Version::HTTP_10
            && !tokens().any(|t| t.eq_ignore_ascii_case("keep-alive")))
}

/// Does a request's Host / `:authority` name `host` (and `port`, when it has one)?
fn names_target(named: Option<&str>, host: &Host, port: u16) -> bool {
    let Some(named) = named else { return false };
    let Ok(a) = named.parse::<http::uri::Authority>() else {
        return false;
    };
    a.port_u16().is_none_or(|p| p == port) && normalize(a.host()).is_ok_and(|h| h == *host)
}

/// The URL and the forwarded headers, as one text to scan. `exempt` names the header
/// whose value egress injected on this route: the route's own credential.
fn url_and_headers(url: &str, headers: &HeaderMap, exempt: Option<&str>) -> Vec<u8> {
    let mut out = url.as_bytes().to_vec();
    out.push(b'\n');
    for (name, value) in headers {
        if name == header::PROXY_AUTHORIZATION || Some(name.as_str()) == exempt {
            continue; // consumed here, never forwarded; or the route's own credential
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Why a request could not be inspected (never holds request bytes).
enum BodyRefusal {
    /// Over [`BODY_CAP`], read or inflated.
    TooLarge,
    /// Over the decoding budget of `scan_deep`.
    Limit(String),
    /// A `Content-Encoding` DLP does not know.
    Encoding(String),
    /// Not valid in its `Content-Encoding`.
    Corrupt(String),
    /// The client's body failed.
    Read(String),
}
