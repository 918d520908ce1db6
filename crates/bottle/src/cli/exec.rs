//! `bottle exec NAME [-- CMD...]`: a session inside a running agent. By default the
//! provider's CLI with the bottle's prompt; with a TTY when stdin is a terminal, plain
//! pipes otherwise (so it scripts). The exit status is the command's.

use futures_util::StreamExt;
use rustix::termios;

use super::{ExecArgs, connect, find_agent};
use crate::model::Provider;
use bottle_docker::ExecRequest;

pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let docker = connect().await?;
    let agent = find_agent(&docker, &args.target).await?;
    let cmd = if args.cmd.is_empty() {
        agent.provider.unwrap_or(Provider::Claude).session_command()
    } else {
        args.cmd.clone()
    };
    let stdin = std::io::stdin();
    let tty = termios::isatty(&stdin);
    let req = ExecRequest {
        container: agent.container,
        cmd,
        tty,
        working_dir: None,
    };
    let code = if tty {
        let _raw = RawMode::enter();
        let size = termios::tcgetwinsize(std::io::stdout())
            .ok()
            .map(|w| (w.ws_col, w.ws_row));
        let resizes = window_changes();
        docker.exec_attached(&req, size, resizes).await?
    } else {
        docker
            .exec_attached(&req, None, futures_util::stream::pending())
            .await?
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
