//! The way out: name resolution (hickory, never libc), a TCP path that is either direct or
//! a CONNECT tunnel through an upstream HTTP proxy (pipelock), TLS verified against the
//! webpki roots plus extra CAs (the bottle CA, whose leaves pipelock presents when it
//! intercepts, and `egress.upstream_ca`), and pooled HTTP/1.1 + HTTP/2 clients.
//! pipelock reuses [`tls_config`] for its own verified TLS to the real upstream.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::certs;
use super::server::ReqBody;

/// Time allowed to resolve, connect and finish a TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response head accepted from the upstream proxy.
const PROXY_HEAD_MAX: usize = 16 << 10;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Resolves host names. Sidecars never use libc resolution.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str) -> BoxFut<io::Result<Vec<IpAddr>>>;
}

/// hickory, configured from `/etc/resolv.conf` and `/etc/hosts` (Docker's embedded DNS).
pub struct HickoryResolve(hickory_resolver::TokioResolver);

impl HickoryResolve {
    pub fn from_system() -> io::Result<HickoryResolve> {
        let r = hickory_resolver::Resolver::builder_tokio()
            .map_err(io::Error::other)?
            .build()
            .map_err(io::Error::other)?;
        Ok(HickoryResolve(r))
    }
}

impl Resolve for HickoryResolve {
    fn resolve(&self, host: &str) -> BoxFut<io::Result<Vec<IpAddr>>> {
        let r = self.0.clone();
        let host = host.to_string();
        Box::pin(async move {
            let ips = r.lookup_ip(host.as_str()).await.map_err(io::Error::other)?;
            Ok(ips.iter().collect())
        })
    }
}

/// Every name resolves to one address (tests and benchmarks).
pub struct StaticResolve(pub IpAddr);

impl Resolve for StaticResolve {
    fn resolve(&self, _host: &str) -> BoxFut<io::Result<Vec<IpAddr>>> {
        let ip = self.0;
        Box::pin(async move { Ok(vec![ip]) })
    }
}

/// Reaching an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("resolving {host}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} has no address")]
    NoAddress { host: String },
    #[error("connecting to {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error("upstream proxy {proxy} refused CONNECT {host}:{port}: {status}")]
    ProxyRefused {
        proxy: String,
        host: String,
        port: u16,
        status: String,
    },
    #[error("talking to upstream proxy {proxy}")]
    ProxyIo { proxy: String, source: io::Error },
    #[error("TLS to {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("connecting to {host}:{port} timed out")]
    Timeout { host: String, port: u16 },
    #[error("invalid upstream proxy {0:?}: want http://host:port")]
    ProxyUri(String),
    #[error("invalid upstream CA: {0}")]
    Ca(String),
    #[error("invalid upstream address {0}")]
    Uri(String),
}

/// How TCP reaches upstreams.
#[derive(Clone)]
pub struct Dialer {
    resolver: Arc<dyn Resolve>,
    /// `(host, port)` of an HTTP proxy to CONNECT through.
    via: Option<(String, u16)>,
}

impl Dialer {
    pub fn new(resolver: Arc<dyn Resolve>, proxy: Option<&str>) -> Result<Dialer, UpstreamError> {
        let via = match proxy {
            None => None,
            Some(p) => {
                let uri: Uri = p
                    .parse()
                    .map_err(|_| UpstreamError::ProxyUri(p.to_string()))?;
                if uri.scheme_str() != Some("http") {
                    return Err(UpstreamError::ProxyUri(p.to_string()));
                }
                let host = uri
                    .host()
                    .ok_or_else(|| UpstreamError::ProxyUri(p.to_string()))?;
                Some((host.to_string(), uri.port_u16().unwrap_or(80)))
            }
        };
        Ok(Dialer { resolver, via })
    }

    /// A TCP stream to `host:port`, direct or tunnelled through the upstream proxy.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
        let fut = async {
            match &self.via {
                None => self.tcp(host, port).await,
                Some((ph, pp)) => {
                    let mut s = self.tcp(ph, *pp).await?;
                    proxy_connect(&mut s, &format!("{ph}:{pp}"), host, port).await?;
                    Ok(s)
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| UpstreamError::Timeout {
                host: host.to_string(),
                port,
            })?
    }

    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ips = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                self.resolver
                    .resolve(bare)
                    .await
                    .map_err(|source| UpstreamError::Resolve {
                        host: host.to_string(),
                        source,
                    })?
            }
        };
        let mut last = None;
        for ip in ips {
            match TcpStream::connect(SocketAddr::new(ip, port)).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(source) => UpstreamError::Connect {
                host: host.to_string(),
                port,
                source,
            },
            None => UpstreamError::NoAddress {
                host: host.to_string(),
            },
        })
    }
}

/// Ask the proxy on `s` for a tunnel to `host:port`; read its response head.
async fn proxy_connect(
    s: &mut TcpStream,
    proxy: &str,
    host: &str,
    port: u16,
) -> Result<(), UpstreamError> {
    let io = |source| UpstreamError::ProxyIo {
        proxy: proxy.to_string(),
        source,
    };
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(io)?;
    // Byte by byte: nothing after the head may be consumed.
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= PROXY_HEAD_MAX || s.read(&mut b).await.map_err(io)? == 0 {
            return Err(io(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad CONNECT response",
            )));
        }
        head.push(b[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        Err(UpstreamError::ProxyRefused {
            proxy: proxy.to_string(),
            host: host.to_string(),
            port,
            status: status_line.to_string(),
        })
    }
}

/// The PEM bundle of extra roots: the bottle CA (pipelock's interception) and, when
/// set, the manifest's `egress.upstream_ca`.
pub fn trust_bundle(bottle_ca: &[u8], upstream_ca: Option<&[u8]>) -> Vec<u8> {
    let mut pem = bottle_ca.to_vec();
    if let Some(extra) = upstream_ca {
        pem.push(b'\n');
        pem.extend_from_slice(extra);
    }
    pem
}

/// The rustls client configuration for upstreams: webpki roots plus `extra_ca` (PEM).
pub fn tls_config(extra_ca: Option<&[u8]>, alpn: &[&[u8]]) -> Result<ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca {
        use rustls_pki_types::pem::PemObject;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| UpstreamError::Ca(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| UpstreamError::Ca(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(UpstreamError::Ca("no certificate in the PEM file".into()));
        }
    }
    let mut cfg = ClientConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A connection to an upstream: plain (for `http://` to allowed hosts) or TLS.
pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpStream {
    fn connected(&self) -> Connected {
        match self {
            UpStream::Plain(_) => Connected::new(),
            UpStream::Tls(t) => {
                if t.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The hyper-util connector: dial, then TLS for `https`.
#[derive(Clone)]
pub struct Connector {
    dialer: Dialer,
    tls: TlsConnector,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpStream>;
    type Error = UpstreamError;
    type Future = BoxFut<Result<Self::Response, UpstreamError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| UpstreamError::Uri(uri.to_string()))?
                .to_string();
            let tls = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let tcp = this.dialer.dial(&host, port).await?;
            if !tls {
                return Ok(TokioIo::new(UpStream::Plain(tcp)));
            }
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_string())
                .map_err(|_| UpstreamError::Uri(uri.to_string()))?;
            let fut = this.tls.connect(name, tcp);
            let s = tokio::time::timeout(CONNECT_TIMEOUT, fut)
                .await
                .map_err(|_| UpstreamError::Timeout {
                    host: host.clone(),
                    port,
                })?
                .map_err(|e| UpstreamError::Tls {
                    host: host.clone(),
                    reason: e.to_string(),
                })?;
            Ok(TokioIo::new(UpStream::Tls(Box::new(s))))
        })
    }
}

/// The pooled clients of the proxy: one negotiating h2 or HTTP/1.1 by ALPN, one HTTP/1.1
/// only (for upgrades: websockets).
#[derive(Clone)]
pub struct Upstream {
    pub dialer: Dialer,
    pub client: Client<Connector, ReqBody>,
    pub client_h1: Client<Connector, ReqBody>,
}

impl Upstream {
    pub fn new(dialer: Dialer, extra_ca: Option<&[u8]>) -> Result<Upstream, UpstreamError> {
        let both = tls_config(extra_ca, &[b"h2", b"http/1.1"])?;
        let h1 = tls_config(extra_ca, &[b"http/1.1"])?;
        let mk = |cfg: ClientConfig| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(Connector {
                    dialer: dialer.clone(),
                    tls: TlsConnector::from(Arc::new(cfg)),
                })
        };
        Ok(Upstream {
            client: mk(both),
            client_h1: mk(h1),
            dialer: dialer.clone(),
        })
    }
}
