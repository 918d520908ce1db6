//! `bottle-testkit`: the servers the end-to-end tests start in containers, kept out of
//! the shipped `bottle` (the binary that runs as every bottle's firewall).
//!
//! - `bottle-testkit fake-upstream`: a TLS upstream (certificate and key from
//!   `BOTTLE_FAKE_CERT` / `BOTTLE_FAKE_KEY`) that echoes what it received;
//! - `bottle-testkit health`: a plain TCP listener that answers any request `200 ok`
//!   and logs who sent what;
//! - `bottle-testkit recorder`: a TLS and plain-HTTP upstream that writes down every
//!   server name, request and WebSocket frame it sees (see [`recorder`]).
//!
//! Both listen on `--listen ADDR` or `$BOTTLE_LISTEN` (default `0.0.0.0:8080`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod recorder;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let mut listen = std::env::var("BOTTLE_LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            _ => fail(&format!("unexpected argument {a:?}")),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("starting the runtime: {e}")));
    let result = rt.block_on(async {
        match kind.as_str() {
            "fake-upstream" => bottle_sidecars::egress::testkit::run_fake_upstream(&listen)
                .await
                .map_err(|e| format!("fake upstream: {e}")),
            "health" => health(&listen).await.map_err(|e| format!("health: {e}")),
            "recorder" => recorder::run().await.map_err(|e| format!("recorder: {e}")),
            other => Err(format!(
                "unknown server {other:?}: expected fake-upstream, health or recorder"
            )),
        }
    });
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

/// Answer every connection `200 ok health` after reading (at most 1 KiB of) its request,
/// and write down who sent what: `health: <peer> sent <first line>` on stderr (the
/// container's log is the record).
async fn health(listen: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("health listening on {listen}");
    loop {
        let (mut sock, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]);
            let line: String = text.lines().next().unwrap_or("").escape_debug().collect();
            eprintln!("health: {peer} sent {line}");
            let body = "ok health\n";
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
