//! The hidden `bottle sidecar <kind>` servers that run inside the sidecar image.
//!
//! For now each kind serves a health check on `BOTTLE_LISTEN`; the issues for each
//! sidecar give them their behaviour. Sidecars never reach into `cli/`.

pub mod git_gate;

use clap::{Args, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Pipelock,
    Egress,
    GitGate,
    Supervise,
    /// The git-gate's `pre-receive` hook, run by `git receive-pack` inside the gate.
    #[value(hide = true)]
    GitGateHook,
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    pub kind: Kind,
    /// Address to listen on.
    #[arg(long, env = "BOTTLE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
}

/// Serve the health check until killed.
pub async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    match args.kind {
        Kind::GitGate => return git_gate::serve(&args.listen).await,
        Kind::GitGateHook => {
            // Its output goes to the pushing agent: the exit status is the verdict.
            let code = tokio::task::spawn_blocking(git_gate::hook::run).await?;
            std::process::exit(code);
        }
        _ => {}
    }
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let kind = format!("{:?}", args.kind).to_lowercase();
    tracing::info!(kind, listen = %args.listen, "sidecar listening");
    loop {
        let (mut sock, _) = listener.accept().await?;
        let body = format!("ok {kind}\n");
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            // Read the request head (bounded), answer, close.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
