//! `bottle exec NAME [-- CMD...]`: a session inside a running agent. By default the
//! provider's CLI with the bottle's prompt; with a TTY when stdin is a terminal, plain
//! pipes otherwise (so it scripts). The exit status is the command's. On Kubernetes
//! through the pod `exec` subresource (`bottle_kube::engine::session`).

use futures_util::StreamExt;
use rustix::termios;

use super::{Backend, ExecArgs, connect, connect_kube_sessions, find_agent, target_project};
use crate::model::Provider;
use bottle_docker::ExecRequest;

pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let project = target_project(&args.target)?;
    let kube = match args.backend.backend {
        Backend::Docker => None,
        Backend::Kubernetes => {
            Some(connect_kube_sessions(project.as_deref(), &args.backend).await?)
        }
    };
    let docker = match &kube {
        None => Some(connect().await?),
        Some(_) => None,
    };
    let agent = match (&docker, &kube) {
        (Some(d), _) => find_agent(d, &args.target, project.as_deref()).await?,
        (_, Some(k)) => find_agent(k, &args.target, project.as_deref()).await?,
        _ => unreachable!("one backend"),
    };
    let cmd = if args.cmd.is_empty() {
        agent.provider.unwrap_or(Provider::Claude).session_command()
    } else {
        args.cmd.clone()
    };
    let stdin = std::io::stdin();
    let tty = termios::isatty(&stdin);
    let _raw = tty.then(RawMode::enter);
    let size = tty
        .then(|| termios::tcgetwinsize(std::io::stdout()).ok())
        .flatten()
        .map(|w| (w.ws_col, w.ws_row));
    let resizes: std::pin::Pin<Box<dyn futures_util::Stream<Item = (u16, u16)> + Send>> = if tty {
        window_changes()
    } else {
        Box::pin(futures_util::stream::pending())
    };
    let code = match (&docker, &kube) {
        (Some(d), _) => {
            let req = ExecRequest {
                container: agent.container,
                cmd,
                tty,
                working_dir: None,
            };
            d.exec_attached(&req, size, resizes).await?
        }
        (_, Some(k)) => {
            k.exec_attached(&agent.container, &cmd, tty, size, resizes)
                .await?
        }
        _ => unreachable!("one backend"),
    };
    Ok(i32::try_from(code).unwrap_or(1))
}

/// Terminal sizes, each time the window changes.
fn window_changes() -> std::pin::Pin<Box<dyn futures_util::Stream<Item = (u16, u16)> + Send>> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::window_change()) {
        Ok(sig) => Box::pin(
            futures_util::stream::unfold(sig, |mut sig| async move {
                sig.recv().await.map(|()| ((), sig))
            })
            .filter_map(|()| async {
                termios::tcgetwinsize(std::io::stdout())
                    .ok()
                    .map(|w| (w.ws_col, w.ws_row))
            }),
        ),
        Err(_) => Box::pin(futures_util::stream::pending()),
    }
}

/// Puts the terminal in raw mode; restores it when dropped.
struct RawMode(Option<termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        match termios::tcsetattr(&stdin, termios::OptionalActions::Now, &raw) {
            Ok(()) => RawMode(Some(saved)),
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), termios::OptionalActions::Now, saved);
        }
    }
}
