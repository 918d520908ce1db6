//! The forward proxy: CONNECT tunnels and absolute-form plain-HTTP requests, on hyper 1.
//!
//! Every request is decided before anything leaves: the host against the allowlist,
//! then (plain HTTP) the URL and headers against the DLP rules, then the name is
//! resolved once and every address vetted by the SSRF guard, and the connection goes
//! to the vetted address. A plain-HTTP body streams through the secret scanner and is
//! released upstream only up to the scanner's safe offset, so a secret split across
//! chunks never reaches the upstream: the upload is cut and the client gets a 403.
//! TLS inside CONNECT is not intercepted here (the egress sidecar does that upstream of
//! pipelock); a tunnel is allowed or refused by host.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::channel::Channel;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::audit::{Audit, Event};
use super::config::{Config, ConfigError};
use super::policy::{Host, Policy, Verdict, normalize};
use super::ssrf::{Resolve, SsrfError, vet, vet_ip};
use crate::secretscan::{Finding, RuleSet, StreamScanner};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of every response pipelock gives.
pub type Body = BoxBody<Bytes, BoxError>;

/// The upload was cut because it carried a secret.
#[derive(Debug, thiserror::Error)]
#[error("request body blocked by DLP rule {0}")]
pub struct DlpBlocked(String);

/// The proxy: policy, resolver, rules, audit sink.
pub struct Proxy {
    pub policy: Policy,
    pub resolver: Arc<dyn Resolve>,
    /// DLP rules; None when DLP is off.
    pub rules: Option<Arc<RuleSet>>,
    pub audit: Arc<dyn Audit>,
    pub connect_timeout: Duration,
}

impl Proxy {
    pub fn from_config(
        cfg: &Config,
        resolver: Arc<dyn Resolve>,
        audit: Arc<dyn Audit>,
    ) -> Result<Proxy, ConfigError> {
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
        Ok(Proxy {
            policy: Policy::from_config(cfg)?,
            resolver,
            rules,
            audit,
            connect_timeout: Duration::from_secs(10),
        })
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

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
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
        ev: &mut Event,
        req: &Request<Incoming>,
        default_port: Option<u16>,
    ) -> Result<(Host, u16), Box<Response<Body>>> {
        let Some(auth) = req.uri().authority() else {
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
        match self.policy.check(&host) {
            Verdict::Allow => Ok((host, port)),
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
        ev: &mut Event,
        host: &Host,
        port: u16,
    ) -> Result<TcpStream, Box<Response<Body>>> {
        let vetted = match host {
            Host::Ip(ip) => vet_ip(&self.policy, &host.to_string(), *ip).map(|()| *ip),
            Host::Name(n) => vet(&*self.resolver, &self.policy, n).await,
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
            Ok(Ok(s)) => Ok(s),
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
        let mut ev = Event {
            method: "CONNECT".into(),
            ..Default::default()
        };
        let (host, port) = match self.decide(&mut ev, &req, None) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        let mut upstream = match self.open(&mut ev, &host, port).await {
            Ok(s) => s,
            Err(r) => return *r,
        };
        ev.decision = "allow";
        ev.reason = "allowlist";
        self.audit.record(ev.clone());
        let audit = self.audit.clone();
        tokio::spawn(async move {
            ev.decision = "close";
            ev.reason = "done";
            match hyper::upgrade::on(req).await {
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
            audit.record(ev);
        });
        Response::new(empty())
    }

    async fn forward(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
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
        let (host, port) = match self.decide(&mut ev, &req, Some(80)) {
            Ok(t) => t,
            Err(r) => return *r,
        };
        if let Some(rules) = &self.rules
            && let Some(f) = most_specific(rules.scan(&url_and_headers(&req)))
        {
            return self.dlp_refusal(ev, &f, "url-headers");
        }
        let stream = match self.open(&mut ev, &host, port).await {
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
        strip_hop_by_hop(&mut parts.headers);
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&authority)
        {
            parts.headers.insert(header::HOST, v);
        }
        let (body, mut verdict) = match &self.rules {
            _ if body.is_end_stream() => (empty(), None),
            Some(rules) => {
                let (b, v) = scanned_body(body, rules.clone());
                (b, Some(v))
            }
            None => (body.map_err(|e| Box::new(e) as BoxError).boxed(), None),
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
                        format!("pipelock: upstream {}: {e}\n", ev_host(&host)),
                    );
                }
            };
        tokio::spawn(conn);
        let mut response = std::pin::pin!(sender.send_request(up));
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
        match outcome {
            Err(f) => self.dlp_refusal(ev, &f, "body"),
            Ok(Err(e)) => {
                if let Some(f) = verdict.as_mut().and_then(|v| v.try_recv().ok()) {
                    return self.dlp_refusal(ev, &f, "body");
                }
                ev.detail = Some(e.to_string());
                self.refuse(
                    ev,
                    "upstream",
                    StatusCode::BAD_GATEWAY,
                    format!("pipelock: upstream {}: {e}\n", ev_host(&host)),
                )
            }
            Ok(Ok(resp)) => {
                ev.decision = "allow";
                ev.reason = "allowlist";
                ev.detail = Some(format!("status {}", resp.status().as_u16()));
                self.audit.record(ev);
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
            }
        }
    }

    fn dlp_refusal(&self, mut ev: Event, f: &Finding, part: &'static str) -> Response<Body> {
        ev.rule = Some(f.rule_id.clone());
        ev.offset = Some(f.offset);
        ev.part = Some(part);
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
fn most_specific(findings: Vec<Finding>) -> Option<Finding> {
    findings
        .into_iter()
        .min_by_key(|f| (f.rule_id.starts_with("generic"), f.offset))
}

fn ev_host(h: &Host) -> String {
    h.to_string()
}

/// The URL and the forwarded headers, as one text to scan.
fn url_and_headers(req: &Request<Incoming>) -> Vec<u8> {
    let mut out = req.uri().to_string().into_bytes();
    out.push(b'\n');
    for (name, value) in req.headers() {
        if name == header::PROXY_AUTHORIZATION {
            continue; // consumed here, never forwarded
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Stream `body` through the scanner: bytes go upstream only once the scanner has
/// cleared them; a finding aborts the upstream body and is sent on the receiver.
fn scanned_body(mut body: Incoming, rules: Arc<RuleSet>) -> (Body, oneshot::Receiver<Finding>) {
    let (mut tx, chan) = Channel::<Bytes, BoxError>::new(4);
    let (vtx, vrx) = oneshot::channel();
    tokio::spawn(async move {
        let mut scanner = StreamScanner::new(&rules);
        let mut held: Vec<u8> = Vec::new();
        let mut released: u64 = 0;
        while let Some(frame) = body.frame().await {
            let data = match frame {
                Err(e) => {
                    tx.abort(Box::new(e));
                    return;
                }
                Ok(frame) => match frame.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers are not forwarded
                },
            };
            if let Some(f) = scanner.push(&data).into_iter().next() {
                let id = f.rule_id.clone();
                let _ = vtx.send(f);
                tx.abort(Box::new(DlpBlocked(id)));
                return;
            }
            held.extend_from_slice(&data);
            let n = (scanner.safe_offset() - released) as usize;
            if n > 0 {
                let out = Bytes::copy_from_slice(&held[..n]);
                held.drain(..n);
                released += n as u64;
                if tx.send_data(out).await.is_err() {
                    return;
                }
            }
        }
        if let Some(f) = scanner.finish().into_iter().next() {
            let id = f.rule_id.clone();
            let _ = vtx.send(f);
            tx.abort(Box::new(DlpBlocked(id)));
            return;
        }
        if !held.is_empty() {
            let _ = tx.send_data(Bytes::from(held)).await;
        }
    });
    (chan.boxed(), vrx)
}
