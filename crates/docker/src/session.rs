//! Sessions on the real engine: `exec` with attached streams (a TTY or plain pipes),
//! `exec` with its output captured (the readiness probe, `verify`), signals, `logs`, and
//! the inspect `verify` reads. These are CLI features, not reconciler operations, so they
//! live beside the [`Engine`](crate::engine::Engine) implementation rather than in it.

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{LogsOptionsBuilder, ResizeExecOptionsBuilder};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Docker;

/// What an attached exec session prints.
type ExecStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
/// An attached exec session's standard input.
type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;
use bottle_engine::{EngineError, ExecOutput, MAX_EXEC_OUTPUT};

/// A container's runtime and named volumes, as the engine reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerDetails {
    /// `HostConfig.Runtime` (`runc`, `runsc`...).
    pub runtime: Option<String>,
    /// The names of the volumes mounted, sorted.
    pub volumes: Vec<String>,
}

/// A command to run in a container.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub container: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub working_dir: Option<String>,
}

impl Docker {
    /// Run `req` attached to this process's stdin, stdout and stderr; returns the
    /// command's exit status. `size` and `resizes` carry the terminal size under a TTY.
    pub async fn exec_attached(
        &self,
        req: &ExecRequest,
        size: Option<(u16, u16)>,
        mut resizes: impl Stream<Item = (u16, u16)> + Unpin,
    ) -> Result<i64, EngineError> {
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(req.tty),
            cmd: Some(req.cmd.clone()),
            working_dir: req.working_dir.clone(),
            ..Default::default()
        };
        let (id, mut output, mut input) = self.start_session(&req.container, config).await?;
        if let Some((w, h)) = size {
            self.resize(&id, w, h).await;
        }
        // stdin -> the session; EOF half-closes it so the command sees end of input.
        let pump = tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            let _ = input.shutdown().await;
        });
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(LogOutput::StdErr { message })) => write(&mut stderr, &message).await,
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                        write(&mut stdout, &message).await
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(e)) => {
                        pump.abort();
                        return Err(self.error(e, "exec stream", "container", &req.container));
                    }
                    None => break,
                },
                Some((w, h)) = resizes.next() => self.resize(&id, w, h).await,
            }
        }
        pump.abort();
        let done = self
            .client
            .inspect_exec(&id)
            .await
            .map_err(|e| self.error(e, "inspect exec", "container", &req.container))?;
        Ok(done.exit_code.unwrap_or(-1))
    }

    /// Run `cmd` in `container` with `stdin` as its input, no TTY, and capture what it
    /// prints (each stream cut at [`MAX_EXEC_OUTPUT`] bytes); its exit status.
    pub async fn exec_captured(
        &self,
        container: &str,
        cmd: &[String],
        user: Option<&str>,
        stdin: &[u8],
    ) -> Result<ExecOutput, EngineError> {
        let config = ExecConfig {
            attach_stdin: Some(!stdin.is_empty()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(cmd.to_vec()),
            user: user.map(str::to_string),
            ..Default::default()
        };
        let (id, mut output, mut input) = self.start_session(container, config).await?;
        if !stdin.is_empty() {
            let data = stdin.to_vec();
            tokio::spawn(async move {
                let _ = input.write_all(&data).await;
                let _ = input.shutdown().await;
            });
        } else {
            drop(input);
        }
        let mut out = capture(&mut output, |e| {
            self.error(e, "exec stream", "container", container)
        })
        .await?;
        let done = self
            .client
            .inspect_exec(&id)
            .await
            .map_err(|e| self.error(e, "inspect exec", "container", container))?;
        out.code = done.exit_code.unwrap_or(-1);
        Ok(out)
    }

    /// Create and start an attached exec session in `container`: its id and streams.
    async fn start_session(
        &self,
        container: &str,
        config: ExecConfig,
    ) -> Result<(String, ExecStream, ExecInput), EngineError> {
        let tty = config.tty.unwrap_or(false);
        let created = self
            .client
            .create_exec(container, config)
            .await
            .map_err(|e| self.error(e, "exec", "container", container))?;
        let start = StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        match self
            .client
            .start_exec(&created.id, Some(start))
            .await
            .map_err(|e| self.error(e, "start exec", "container", container))?
        {
            StartExecResults::Attached { output, input } => Ok((created.id, output, input)),
            StartExecResults::Detached => Err(EngineError::Api {
                op: "exec",
                name: container.to_string(),
                message: "the engine did not attach the session".into(),
            }),
        }
    }

    /// What `bottle verify` reads of a container on the host side: the runtime it runs
    /// under and the named volumes it mounts (one inspect request).
    pub async fn container_details(
        &self,
        container: &str,
    ) -> Result<ContainerDetails, EngineError> {
        let c = self
            .client
            .inspect_container(container, None)
            .await
            .map_err(|e| self.error(e, "inspect", "container", container))?;
        let mut volumes: Vec<String> = c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.name)
            .collect();
        volumes.sort();
        volumes.dedup();
        Ok(ContainerDetails {
            runtime: c.host_config.and_then(|h| h.runtime),
            volumes,
        })
    }

    /// Send `signal` to `container`'s main process.
    pub async fn signal(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        let opts = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.client
            .kill_container(container, Some(opts))
            .await
            .map_err(|e| self.error(e, "signal", "container", container))
    }

    async fn resize(&self, id: &str, w: u16, h: u16) {
        let opts = ResizeExecOptionsBuilder::new()
            .w(i32::from(w))
            .h(i32::from(h))
            .build();
        // A failed resize only leaves the old size.
        let _ = self.client.resize_exec(id, opts).await;
    }

    /// A container's log lines (stdout and stderr), each prefixed with the engine's
    /// RFC 3339 time stamp and a space, from `since` (seconds since the epoch, 0 for
    /// all); with `follow`, until the container stops. A line longer than `max_line`
    /// bytes is cut there (the rest of it is dropped), so memory stays bounded.
    pub fn log_lines(
        &self,
        container: &str,
        follow: bool,
        since: i32,
        max_line: usize,
    ) -> impl Stream<Item = Result<String, EngineError>> + Send + 'static {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .timestamps(true)
            .since(since)
            .build();
        let name = container.to_string();
        let this = self.clone();
        let chunks = self
            .client
            .logs(container, Some(opts))
            .filter_map(move |chunk| {
                let out = match chunk {
                    Ok(
                        LogOutput::StdErr { message }
                        | LogOutput::StdOut { message }
                        | LogOutput::Console { message },
                    ) => Some(Ok(message)),
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(this.error(e, "logs", "container", &name))),
                };
                std::future::ready(out)
            })
            .boxed();
        bottle_engine::log_lines(chunks, max_line)
    }

    /// Copy a container's logs to stdout and stderr; with `follow`, until it stops.
    pub async fn stream_logs(&self, container: &str, follow: bool) -> Result<(), EngineError> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .build();
        let mut logs = self.client.logs(container, Some(opts));
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        while let Some(chunk) = logs.next().await {
            match chunk {
                Ok(LogOutput::StdErr { message }) => write(&mut stderr, &message).await,
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    write(&mut stdout, &message).await
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => return Err(self.error(e, "logs", "container", container)),
            }
        }
        Ok(())
    }
}

/// Read `output` to its end: stdout and stderr, each cut at [`MAX_EXEC_OUTPUT`] bytes
/// (the rest read and dropped); the exit status is left at -1 for the caller.
pub(crate) async fn capture(
    output: &mut (impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin),
    fail: impl Fn(bollard::errors::Error) -> EngineError,
) -> Result<ExecOutput, EngineError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let keep = |buf: &mut Vec<u8>, b: &[u8]| {
        let room = MAX_EXEC_OUTPUT.saturating_sub(buf.len());
        buf.extend_from_slice(&b[..b.len().min(room)]);
    };
    while let Some(chunk) = output.next().await {
        match chunk.map_err(&fail)? {
            LogOutput::StdErr { message } => keep(&mut stderr, &message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                keep(&mut stdout, &message)
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(ExecOutput {
        code: -1,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

async fn write(out: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    // A closed stdout (a pipe to `head`) ends nothing here; the session still ends.
    let _ = out.write_all(bytes).await;
    let _ = out.flush().await;
}
