//! Test fixtures shared by the unit tests, the benchmark and the end-to-end tests: a test
//! PKI (CA + leaf), a fake upstream (TLS, HTTP/1.1 + HTTP/2) that echoes what it received,
//! and a client that talks to an upstream through the proxy with CONNECT.
//!
//! The fake upstream also runs as `bottle sidecar fake-upstream` (cert and key files from
//! `BOTTLE_FAKE_CERT` / `BOTTLE_FAKE_KEY`). It is a test double: it echoes header values.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::certs;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A test CA and a leaf it signed for some names (all PEM).
pub struct TestPki {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub leaf_pem: String,
    pub leaf_key_pem: String,
}

impl TestPki {
    pub fn new(names: &[&str]) -> TestPki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "test upstream CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut leaf = CertificateParams::new(names).expect("params");
        leaf.distinguished_name.push(DnType::CommonName, "upstream");
        let leaf_cert = leaf.signed_by(&key, &issuer).expect("leaf");
        TestPki {
            ca_pem: ca_cert.pem(),
            ca_key_pem: issuer.key().serialize_pem(),
            leaf_pem: leaf_cert.pem(),
            leaf_key_pem: key.serialize_pem(),
        }
    }
}

/// A TLS server configuration from PEM cert chain and key, offering h2 and HTTP/1.1.
pub fn server_tls(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, BoxError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let mut cfg = ServerConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serve the fake upstream on `listener` until the task is dropped.
///
/// - `POST /echo`: the request body streamed back as it arrives.
/// - `POST /count`: the number of body bytes received.
/// - `GET /upgrade` with `Upgrade`: 101, then echoes bytes.
/// - `GET /sse`: three server-sent events.
/// - anything else: JSON `{method, path, version, headers}`.
pub async fn serve_upstream(listener: TcpListener, tls: ServerConfig) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(sock).await else {
                return;
            };
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service_fn(upstream_handler))
                .await;
        });
    }
}

/// Start the fake upstream on 127.0.0.1:0; returns its address.
pub async fn spawn_upstream(cert_pem: &str, key_pem: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let tls = server_tls(cert_pem, key_pem).expect("tls");
    tokio::spawn(serve_upstream(l, tls));
    addr
}

async fn upstream_handler(
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, hyper::Error>>, Infallible> {
    let full = |s: String| Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed();
    Ok(match (req.method().as_str(), req.uri().path()) {
        ("POST", "/echo") => Response::new(req.into_body().boxed()),
        ("POST", "/count") => {
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(full(n.to_string()))
        }
        ("GET", "/upgrade") => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut r = Response::new(full(String::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", http::HeaderValue::from_static("upgrade"));
            r.headers_mut()
                .insert("upgrade", http::HeaderValue::from_static("echo"));
            r
        }
        ("GET", "/sse") => {
            let mut r = Response::new(full(
                "data: one\n\ndata: two\n\ndata: three\n\n".to_string(),
            ));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                    )
                })
                .collect();
            let v = serde_json::json!({
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            let mut r = Response::new(full(v.to_string()));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
    })
}

/// `bottle sidecar fake-upstream`: serve on `listen` with the cert/key files named by
/// `BOTTLE_FAKE_CERT` and `BOTTLE_FAKE_KEY`.
pub async fn run_fake_upstream(listen: &str) -> Result<(), BoxError> {
    let cert = std::fs::read_to_string(std::env::var("BOTTLE_FAKE_CERT")?)?;
    let key = std::fs::read_to_string(std::env::var("BOTTLE_FAKE_KEY")?)?;
    let l = TcpListener::bind(listen).await?;
    serve_upstream(l, server_tls(&cert, &key)?).await?;
    Ok(())
}

/// The proxy answered CONNECT with something other than 200.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// CONNECT to `target` through the proxy at `proxy`; the stream is the tunnel.
pub async fn connect_tunnel(proxy: SocketAddr, target: &str) -> Result<TcpStream, Refused> {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    let _ = s.set_nodelay(true);
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.expect("read") == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status == 200 {
        return Ok(s);
    }
    let len: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body).await;
    Err(Refused {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A TLS client trusting only `roots_pem`, offering h2 (if `h2`) and HTTP/1.1.
pub fn tls_client(roots_pem: &str, h2: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    TlsConnector::from(Arc::new(cfg))
}

/// An HTTP sender over a TLS stream, h2 or HTTP/1.1 as ALPN decided.
pub enum Sender<B> {
    H1(hyper::client::conn::http1::SendRequest<B>),
    H2(hyper::client::conn::http2::SendRequest<B>),
}

impl<B> Sender<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub async fn send(&mut self, req: Request<B>) -> hyper::Result<Response<Incoming>> {
        // Wait for the connection task first: sending before it polled fails with
        // "connection was not ready".
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }
}

/// Open TLS to `host` over `tunnel` and an HTTP connection on it.
pub async fn http_over<B>(
    tunnel: TcpStream,
    tls: &TlsConnector,
    host: &str,
) -> Result<Sender<B>, BoxError>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let name = ServerName::try_from(host.to_string())?;
    let s = tls.connect(name, tunnel).await?;
    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(s);
    if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(Sender::H1(send))
    }
}

/// A streamed request body for upload benchmarks: `chunk` sent `total / chunk.len()`
/// times by a task as the reader takes it (8 frames in flight at most). Needs a runtime.
pub fn repeated_body(chunk: Bytes, total: u64) -> BoxBody<Bytes, std::io::Error> {
    type Frame = Result<hyper::body::Frame<Bytes>, std::io::Error>;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(8);
    tokio::spawn(async move {
        for _ in 0..(total / chunk.len().max(1) as u64) {
            if tx
                .send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
        .boxed()
}
