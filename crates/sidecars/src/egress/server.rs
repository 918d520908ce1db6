//! The proxy itself: an HTTP/1.1 forward proxy (CONNECT and absolute-form requests) that
//! terminates the agent's TLS with a minted leaf, serves HTTP/1.1 and HTTP/2 inside, and
//! forwards each request upstream with the route's credential in place of the agent's.
//! Bodies stream through (never buffered whole); upgrades (websockets) are spliced; SSE is
//! just a streamed body.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bottle_contract::ErrorChain;
use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::audit::{Pending, Record, Sink};
use super::certs::Authority;
use super::route::{Decision, Policy, Tunnel};
use super::upstream::{Upstream, UpstreamError};
use crate::reload::Swap;

/// Body of requests sent upstream.
pub type ReqBody = BoxBody<Bytes, hyper::Error>;
/// Body of responses to the agent.
pub type RespBody = BoxBody<Bytes, hyper::Error>;

/// Everything a connection needs.
pub struct Proxy {
    pub bottle: String,
    /// Swapped whole when the allow file changes (see `sidecar::reload`).
    pub policy: Swap<Policy>,
    pub authority: Authority,
    pub upstream: Upstream,
    pub sink: Sink,
}

/// Accept connections on `listener` forever.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<()> {
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(proxy.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "proxy connection ended");
            }
        });
    }
}

/// A request on the proxy port: CONNECT, absolute-form HTTP, or the health check.
async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    if req.method() == Method::CONNECT {
        return Ok(connect(proxy, req).await);
    }
    let target = req
        .uri()
        .authority()
        .map(|a| (a.host().to_ascii_lowercase(), a.port_u16()));
    match (req.uri().scheme_str(), target) {
        (Some("http"), Some((host, port))) => {
            Ok(forward(proxy, req, "http", host, port.unwrap_or(80)).await)
        }
        (None, None) if req.uri().path() == "/healthz" => Ok(text(StatusCode::OK, "ok egress\n")),
        _ => Ok(text(
            StatusCode::BAD_REQUEST,
            "egress: send CONNECT host:port or an absolute http:// URL\n",
        )),
    }
}

/// CONNECT host:port: deny, tunnel untouched (passthrough), or intercept.
async fn connect(proxy: Arc<Proxy>, mut req: Request<Incoming>) -> Response<RespBody> {
    let start = Instant::now();
    let Some((host, port)) = req
        .uri()
        .authority()
        .map(|a| (a.host().to_ascii_lowercase(), a.port_u16().unwrap_or(443)))
    else {
        return text(StatusCode::BAD_REQUEST, "egress: CONNECT needs host:port\n");
    };
    let record = |route: &str, status: u16| Record {
        bottle: proxy.bottle.clone(),
        host: host.clone(),
        method: "CONNECT".into(),
        path: String::new(),
        route: route.into(),
        status,
        bytes: 0,
        bytes_up: 0,
        duration_ms: 0,
        error: None,
    };
    let tunnel = proxy.policy.get().tunnel(&host);
    match tunnel {
        Tunnel::Deny => {
            let mut p = Pending::new(proxy.sink.clone(), record("deny", 403), start);
            p.set_error("no route and not in egress.allow".into());
            denied(&host)
        }
        Tunnel::Passthrough => {
            let up = match proxy.upstream.dialer.dial(&host, port).await {
                Ok(s) => s,
                Err(e) => {
                    let mut p = Pending::new(proxy.sink.clone(), record("passthrough", 502), start);
                    p.set_error(e.to_string());
                    return bad_gateway(&host, &e.to_string());
                }
            };
            let pending = Pending::new(proxy.sink.clone(), record("passthrough", 200), start);
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(agent) = on.await else { return };
                let mut agent = TokioIo::new(agent);
                let mut up = up;
                if let Ok((to, from)) = tokio::io::copy_bidirectional(&mut agent, &mut up).await {
                    pending.up.store(to, Ordering::Relaxed);
                    pending.down.store(from, Ordering::Relaxed);
                }
            });
            Response::new(empty())
        }
        Tunnel::Intercept => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(agent) = on.await else { return };
                if let Err(e) = intercept(proxy, TokioIo::new(agent), host.clone(), port).await {
                    let host = bottle_secretscan::redact::name(&host);
                    tracing::debug!(host, error = %e, "intercepted connection ended");
                }
            });
            Response::new(empty())
        }
    }
}

/// Close a tunnel whose client spoke no TLS without resetting it: end our side, then read
/// and drop what the client had already sent (at most [`LINGER_BYTES`], for at most
/// [`LINGER`]). Closing with its bytes unread would make the kernel send a reset, and a
/// reset makes the client lose the `200` it had not read yet.
async fn linger_close<IO>(mut io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = io.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The most [`linger_close`] reads of a client's leftover bytes.
const LINGER_BYTES: usize = 64 * 1024;
/// The longest [`linger_close`] waits for them.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Terminate the agent's TLS for `host` and serve HTTP/1.1 or HTTP/2 inside.
async fn intercept<IO>(
    proxy: Arc<Proxy>,
    io: IO,
    host: String,
    port: u16,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cfg = proxy.authority.server_config(&host)?;
    let tls = match TlsAcceptor::from(cfg).accept(io).into_fallible().await {
        Ok(tls) => tls,
        Err((e, io)) => {
            linger_close(io).await;
            return Err(e.into());
        }
    };
    let svc = service_fn(move |req| {
        let proxy = proxy.clone();
        let host = host.clone();
        async move { Ok::<_, Infallible>(forward(proxy, req, "https", host, port).await) }
    });
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
        .await
}

/// Forward one request to `host:port`, with the route's credential.
async fn forward(
    proxy: Arc<Proxy>,
    mut req: Request<Incoming>,
    scheme: &'static str,
    host: String,
    port: u16,
) -> Response<RespBody> {
    let start = Instant::now();
    let path = req.uri().path().to_string();
    let mut record = Record {
        bottle: proxy.bottle.clone(),
        host: host.clone(),
        method: req.method().to_string(),
        path: path.clone(),
        route: String::new(),
        status: 0,
        bytes: 0,
        bytes_up: 0,
        duration_ms: 0,
        error: None,
    };
    let policy = proxy.policy.get();
    let (scheme, port, inject) = match policy.request(&host, &path) {
        Decision::Deny => {
            record.route = "deny".into();
            record.status = 403;
            record.error = Some("no route and not in egress.allow".into());
            drop(Pending::new(proxy.sink.clone(), record, start));
            return denied(&host);
        }
        Decision::Allow => {
            record.route = "allow".into();
            (scheme, port, None)
        }
        Decision::Route(r) => {
            record.route = r.label();
            // A credential never travels in clear: plain http to a route goes out as https.
            let port = if scheme == "http" && port == 80 {
                443
            } else {
                port
            };
            ("https", port, Some(r.inject.clone()))
        }
    };
    let mut pending = Pending::new(proxy.sink.clone(), record, start);

    let upgrade = req.version() < Version::HTTP_2 && req.headers().contains_key(header::UPGRADE);
    let agent_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // Trailers go on to pipelock, which scans them (`Trailer` declares them to hyper).
    crate::hop::strip(
        &mut parts.headers,
        crate::hop::Keep {
            upgrade,
            trailers: true,
        },
    );
    parts.headers.remove(header::HOST);
    // On a route the agent's own credentials never pass; the route's replaces them.
    if let Some(inject) = inject {
        parts.headers.remove(header::AUTHORIZATION);
        if let Some(inj) = inject {
            parts.headers.insert(inj.name, inj.value);
        }
    }
    let authority = if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    parts.uri = match format!("{scheme}://{authority}{pq}").parse() {
        Ok(u) => u,
        Err(_) => return text(StatusCode::BAD_REQUEST, "egress: invalid request target\n"),
    };
    parts.version = Version::HTTP_11;
    let body = Counted::new(body, pending.up.clone(), None).boxed();
    let client = if upgrade {
        &proxy.upstream.client_h1
    } else {
        &proxy.upstream.client
    };
    let mut resp = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            let reason = chain(&e);
            pending.set_status(502);
            pending.set_error(reason.clone());
            return bad_gateway(&host, &reason);
        }
    };
    pending.set_status(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(agent_upgrade) = agent_upgrade
    {
        let up = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(a), Ok(u)) = tokio::join!(agent_upgrade, up) else {
                return;
            };
            let (mut a, mut u) = (TokioIo::new(a), TokioIo::new(u));
            if let Ok((to, from)) = tokio::io::copy_bidirectional(&mut a, &mut u).await {
                pending.up.store(to, Ordering::Relaxed);
                pending.down.store(from, Ordering::Relaxed);
            }
        });
        return resp.map(|_| empty());
    }
    crate::hop::strip(resp.headers_mut(), crate::hop::Keep::default());
    let down = pending.down.clone();
    resp.map(|b| Counted::new(b, down, Some(pending)).boxed())
}

/// An error and its sources, `: `-joined (the reason of a 502). The connector's own
/// error says the most; lead with it when present.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e.source();
    while let Some(s) = cur {
        if let Some(u) = s.downcast_ref::<UpstreamError>() {
            return ErrorChain(u).to_string();
        }
        cur = s.source();
    }
    ErrorChain(e).to_string()
}

fn empty() -> RespBody {
    Full::new(Bytes::new()).map_err(|n| match n {}).boxed()
}

fn text(status: StatusCode, body: &str) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn denied(host: &str) -> Response<RespBody> {
    text(
        StatusCode::FORBIDDEN,
        &format!("egress: {host} is not allowed: no route and not in egress.allow\n"),
    )
}

fn bad_gateway(host: &str, reason: &str) -> Response<RespBody> {
    text(
        StatusCode::BAD_GATEWAY,
        &format!("egress: upstream {host} failed: {reason}\n"),
    )
}

/// A body that counts its data bytes and, for responses, holds the audit record until it
/// ends.
struct Counted<B> {
    inner: B,
    n: Arc<AtomicU64>,
    audit: Option<Pending>,
}

impl<B> Counted<B> {
    fn new(inner: B, n: Arc<AtomicU64>, audit: Option<Pending>) -> Self {
        Counted { inner, n, audit }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.n.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => {
                // Ended: write the audit record now, not when hyper drops the body.
                self.audit.take();
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
