//! Sessions in a bottle's pods (docs/design.md section 9.10): commands run through the
//! pod `exec` subresource, with their output captured (a sidecar's readiness probe,
//! `verify`) or attached to this process (`bottle exec`); signals sent through it; and a
//! container's log, read through the pod `log` subresource (`bottle logs`, `audit`).
//! These are what the engine seam's [`Exec`](bottle_engine::Exec) and the CLI's
//! sessions need, beside the [`Engine`](bottle_engine::Engine) implementation.
//!
//! What the exec subresource cannot do is refused, never done otherwise: it has no user
//! of its own (a command runs as its container's `runAsUser`), so an exec `as` another
//! user is an error; and before API server 1.30 (protocol `v4.channel.k8s.io`) a session
//! cannot be told that its standard input ended without being closed whole, so captured
//! input needs 1.30 or later, and an attached session there keeps its input open.

use bottle_engine::{EngineError, ExecOutput, MAX_EXEC_OUTPUT};
use futures_util::io::{AsyncBufRead, AsyncBufReadExt};
use futures_util::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::ResourceExt;
use kube::api::{Api, AttachParams, AttachedProcess, LogParams, TerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{KubeEngine, api_error, render};
use crate::KubeError;

/// A stream of log lines, each `RFC 3339 time stamp` + space + text.
pub type LogLines = std::pin::Pin<Box<dyn Stream<Item = Result<String, EngineError>> + Send>>;

impl<I> KubeEngine<I> {
    /// The pod that holds the seam's container `name` and its container's name inside
    /// it; `name` must be running.
    async fn target(&self, op: &'static str, name: &str) -> Result<(Pod, String), EngineError> {
        let (pod, _) = self.pod_of(name).await?;
        let running = render::container_infos(&pod, &[])
            .iter()
            .any(|c| c.name == name && c.state == bottle_engine::ContainerState::Running);
        if !running {
            return Err(EngineError::Api {
                op,
                name: name.into(),
                message: "the container is not running".into(),
            });
        }
        let inner = render::container_in(&pod, name).unwrap_or_default();
        Ok((pod, inner))
    }

    /// Start `cmd` in `container` of pod `pod` through the exec subresource.
    async fn start(
        &self,
        op: &'static str,
        name: &str,
        pod: &str,
        cmd: &[String],
        params: &AttachParams,
    ) -> Result<AttachedProcess, EngineError> {
        let api: Api<Pod> = self.api();
        api.exec(pod, cmd.to_vec(), params).await.map_err(|e| {
            api_error(
                op,
                name,
                KubeError::Api {
                    what: format!("exec in container {name}"),
                    cause: e,
                },
            )
        })
    }

    /// Run `cmd` in `container` with `stdin` as its input, no TTY: what it printed (each
    /// stream cut at [`MAX_EXEC_OUTPUT`] bytes, the rest read and dropped) and its exit
    /// status. `user` must be the container's own (the exec subresource has no other).
    pub async fn exec_captured(
        &self,
        container: &str,
        cmd: &[String],
        user: Option<&str>,
        stdin: &[u8],
    ) -> Result<ExecOutput, EngineError> {
        let (pod, inner) = self.target("exec", container).await?;
        if let Some(user) = user {
            exec_user(&pod, &inner, user).map_err(|message| EngineError::Api {
                op: "exec",
                name: container.into(),
                message,
            })?;
        }
        if !stdin.is_empty() && !self.stream_close {
            return Err(EngineError::Api {
                op: "exec",
                name: container.into(),
                message: format!(
                    "a command's standard input needs Kubernetes 1.30 or later (the API \
                     server is {}: its exec protocol cannot end the input without ending \
                     the session)",
                    self.server_version
                ),
            });
        }
        let input: Option<Input> =
            (!stdin.is_empty()).then(|| Box::pin(std::io::Cursor::new(stdin.to_vec())) as Input);
        self.run_captured(container, &pod, &inner, cmd, input, true)
            .await
    }

    /// Run `cmd` in the seam's container `container` as [`exec_captured`] does, fed
    /// `input` to its end; the session's input is then held open until the command ends
    /// (before Kubernetes 1.30 ending it ends the session): the command must know
    /// where its input stops (`bottle sidecar seed-trees --bytes N`).
    ///
    /// [`exec_captured`]: KubeEngine::exec_captured
    pub async fn exec_fed(
        &self,
        container: &str,
        cmd: &[String],
        input: impl AsyncRead + Send + 'static,
    ) -> Result<ExecOutput, EngineError> {
        let (pod, inner) = self.target("exec", container).await?;
        self.run_captured(container, &pod, &inner, cmd, Some(Box::pin(input)), false)
            .await
    }

    /// Run `cmd` in `inner` of `pod` (the seam's `container`), fed `input` (ended after
    /// it with `close`, else held open), capturing its output and exit status.
    async fn run_captured(
        &self,
        container: &str,
        pod: &Pod,
        inner: &str,
        cmd: &[String],
        input: Option<Input>,
        close: bool,
    ) -> Result<ExecOutput, EngineError> {
        let params = AttachParams::default()
            .container(inner)
            .stdin(input.is_some())
            .stdout(true)
            .stderr(true)
            .max_stdout_buf_size(64 << 10)
            .max_stderr_buf_size(64 << 10);
        let mut proc = self
            .start("exec", container, &pod.name_any(), cmd, &params)
            .await?;
        let pump = match (proc.stdin(), input) {
            (Some(w), Some(r)) => Some(feed(r, w, close)),
            _ => None,
        };
        let status = status_of(&mut proc);
        let (Some(o), Some(e)) = (proc.stdout(), proc.stderr()) else {
            unreachable!("stdout and stderr are attached");
        };
        let reads = async { tokio::join!(read_bounded(o), read_bounded(e)) };
        tokio::pin!(reads, status);
        let (status, (stdout, stderr)) = tokio::select! {
            out = &mut reads => (status.await, out),
            // The session ended: what is left in the pipes follows at once (a session
            // that failed may not close them).
            s = &mut status => (s, tokio::time::timeout(DRAIN, reads).await.unwrap_or_default()),
        };
        if let Some(p) = pump {
            p.abort();
        }
        let ended = proc.join().await;
        let code = exit_code(status.as_ref()).map_err(|message| EngineError::Api {
            op: "exec",
            name: container.into(),
            message,
        })?;
        if code == -1
            && let Err(e) = ended
        {
            return Err(EngineError::Api {
                op: "exec stream",
                name: container.into(),
                message: e.to_string(),
            });
        }
        Ok(ExecOutput {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Send `signal` (`HUP`, `TERM`...) to `container`'s main process: `kill -s SIGNAL 1`
    /// run by its `sh` (its process 1, as its own user). A container without a shell
    /// (bottle's sidecar image holds only the `bottle` binary) cannot be signalled: a
    /// clear error.
    pub async fn signal(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        if signal.is_empty() || !signal.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(EngineError::Api {
                op: "signal",
                name: container.into(),
                message: format!("{signal:?} is not a signal name"),
            });
        }
        // The shell's own `kill` (images without procps have no binary of it); the
        // name is an argument, never part of the script.
        let cmd: Vec<String> = ["sh", "-c", "kill -s \"$0\" 1", signal]
            .map(String::from)
            .into();
        let out = self
            .exec_captured(container, &cmd, None, &[])
            .await
            .map_err(|e| match e {
                EngineError::Api { message, .. } => EngineError::Api {
                    op: "signal",
                    name: container.into(),
                    message: format!(
                        "sent through `sh -c kill` in the container (Kubernetes has no \
                         signal call), which failed: {message}"
                    ),
                },
                e => e,
            })?;
        out.succeeded(
            "signal",
            container,
            &format!("`kill -s {signal} 1` in the container"),
        )
        .map(drop)
    }

    /// Run `cmd` in `container` attached to this process's stdin, stdout and stderr (one
    /// stream under a TTY); returns its exit status. `size` and `resizes` carry the
    /// terminal's size under a TTY. Before Kubernetes 1.30 the end of this process's
    /// input is not passed on (see the module's note): the session ends with the command.
    pub async fn exec_attached(
        &self,
        container: &str,
        cmd: &[String],
        tty: bool,
        size: Option<(u16, u16)>,
        mut resizes: impl Stream<Item = (u16, u16)> + Unpin,
    ) -> Result<i64, EngineError> {
        let (pod, inner) = self.target("exec", container).await?;
        // A TTY merges the two streams: the server refuses stderr beside it.
        let params = AttachParams::default()
            .container(inner.as_str())
            .stdin(true)
            .stdout(true)
            .stderr(!tty)
            .tty(tty);
        let mut proc = self
            .start("exec", container, &pod.name_any(), cmd, &params)
            .await?;
        let close = self.stream_close;
        let pump = proc
            .stdin()
            .map(|input| feed(tokio::io::stdin(), input, close));
        let mut sizes = proc.terminal_size();
        if let (Some(tx), Some((width, height))) = (sizes.as_mut(), size) {
            let _ = tx.send(TerminalSize { width, height }).await;
        }
        let status = status_of(&mut proc);
        let out = proc
            .stdout()
            .map(|r| tokio::spawn(copy_out(r, tokio::io::stdout())));
        let err = proc
            .stderr()
            .map(|r| tokio::spawn(copy_out(r, tokio::io::stderr())));
        tokio::pin!(status);
        let status = loop {
            tokio::select! {
                s = &mut status => break s,
                Some((width, height)) = resizes.next() => {
                    if let Some(tx) = sizes.as_mut() {
                        let _ = tx.send(TerminalSize { width, height }).await;
                    }
                }
            }
        };
        for t in [out, err].into_iter().flatten() {
            let abort = t.abort_handle();
            if tokio::time::timeout(DRAIN, t).await.is_err() {
                abort.abort();
            }
        }
        if let Some(p) = pump {
            p.abort();
        }
        let _ = proc.join().await;
        exit_code(status.as_ref()).map_err(|message| EngineError::Api {
            op: "exec",
            name: container.into(),
            message,
        })
    }

    /// `container`'s log lines (stdout and stderr as the kubelet keeps them, one log),
    /// each prefixed with the kubelet's RFC 3339 time stamp and a space, from `since`
    /// (seconds since the epoch, 0 for all); with `follow`, until the container stops.
    /// A line longer than `max_line` bytes is cut there (the rest of it is dropped).
    pub async fn log_lines(
        &self,
        container: &str,
        follow: bool,
        since: i64,
        max_line: usize,
    ) -> Result<LogLines, EngineError> {
        let reader = self.log_stream(container, follow, since, true).await?;
        let name = container.to_string();
        let chunks = futures_util::stream::unfold(Some(reader), move |reader| {
            let name = name.clone();
            async move {
                let mut reader = reader?;
                match reader.fill_buf().await {
                    Ok([]) => None,
                    Ok(chunk) => {
                        let chunk = chunk.to_vec();
                        reader.as_mut().consume(chunk.len());
                        Some((Ok(chunk), Some(reader)))
                    }
                    Err(e) => {
                        let e = EngineError::Api {
                            op: "logs",
                            name,
                            message: e.to_string(),
                        };
                        Some((Err(e), None))
                    }
                }
            }
        })
        .boxed();
        Ok(Box::pin(bottle_engine::log_lines(chunks, max_line)))
    }

    /// Copy `container`'s log to stdout as it comes, in bounded chunks; with `follow`,
    /// until the container stops.
    pub async fn stream_logs(&self, container: &str, follow: bool) -> Result<(), EngineError> {
        let mut reader = self.log_stream(container, follow, 0, false).await?;
        let mut stdout = tokio::io::stdout();
        loop {
            let chunk = reader.fill_buf().await.map_err(|e| EngineError::Api {
                op: "logs",
                name: container.into(),
                message: e.to_string(),
            })?;
            if chunk.is_empty() {
                return Ok(());
            }
            let n = chunk.len();
            // A closed stdout (a pipe to `head`) ends nothing here.
            let _ = stdout.write_all(chunk).await;
            let _ = stdout.flush().await;
            reader.as_mut().consume(n);
        }
    }

    async fn log_stream(
        &self,
        container: &str,
        follow: bool,
        since: i64,
        timestamps: bool,
    ) -> Result<std::pin::Pin<Box<dyn AsyncBufRead + Send>>, EngineError> {
        // Logs are kept for a container that ended too: it need not run.
        let (pod, _) = self.pod_of(container).await?;
        let inner = render::container_in(&pod, container).unwrap_or_default();
        let params = LogParams {
            container: Some(inner),
            follow,
            timestamps,
            since_seconds: since_seconds(since, unix_now()),
            ..Default::default()
        };
        let api: Api<Pod> = self.api();
        let reader = api
            .log_stream(&pod.name_any(), &params)
            .await
            .map_err(|e| {
                api_error(
                    "logs",
                    container,
                    KubeError::Api {
                        what: format!("reading the log of container {container}"),
                        cause: e,
                    },
                )
            })?;
        Ok(Box::pin(reader))
    }
}

/// A command's input.
type Input = std::pin::Pin<Box<dyn AsyncRead + Send>>;

/// How long what a session printed may take to arrive once it has ended.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The session's status: `None` when it ended without one (its task stopped).
fn status_of(proc: &mut AttachedProcess) -> impl Future<Output = Option<Status>> + use<> {
    let status = proc.take_status();
    async move {
        match status {
            Some(s) => s.await,
            None => None,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The log subresource's `sinceSeconds` for lines from `since` (seconds since the
/// epoch; 0: all) at `now`: whole seconds back, one more so no line of `since`'s second
/// is missed; at least 1 (the server refuses 0).
pub fn since_seconds(since: i64, now: i64) -> Option<i64> {
    (since > 0).then(|| (now - since + 1).max(1))
}

/// Feed `input` to a session's standard input, then end it (`close`: v5's close of the
/// stdin channel, 1.30 and later) or hold it open until the task is aborted (before
/// 1.30 dropping it would close the whole session).
fn feed(
    mut input: impl AsyncRead + Unpin + Send + 'static,
    mut stdin: impl AsyncWrite + Unpin + Send + 'static,
    close: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut input, &mut stdin).await;
        if close {
            let _ = stdin.shutdown().await;
        } else {
            std::future::pending::<()>().await;
        }
    })
}

/// Read `r` to its end, keeping the first [`MAX_EXEC_OUTPUT`] bytes.
async fn read_bounded(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

async fn copy_out(mut r: impl AsyncRead + Unpin, mut w: impl AsyncWrite + Unpin) {
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // A closed stdout (a pipe to `head`) ends nothing here; the session still ends.
                let _ = w.write_all(&chunk[..n]).await;
                let _ = w.flush().await;
            }
        }
    }
}

/// The exit status a session's status channel reports: 0 on `Success`, the code of a
/// `NonZeroExitCode`, -1 when the session ended without one; `Err` with the server's
/// words when the command could not run (no such binary, the container gone...).
pub fn exit_code(status: Option<&Status>) -> Result<i64, String> {
    let Some(s) = status else { return Ok(-1) };
    if s.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if s.reason.as_deref() == Some("NonZeroExitCode") {
        let code = s
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref()?.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(s
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the command failed: {s:?}")))
}

/// Whether a command that the exec subresource runs in `container` of `p` runs as `user`
/// (`uid[:gid]`): it has no user of its own, a command runs as its container's
/// (`runAsUser`/`runAsGroup`, else the pod's). `Err` says why not.
pub fn exec_user(p: &Pod, container: &str, user: &str) -> Result<(), String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let parse = |s: &str| s.parse::<i64>().ok();
    let (Some(uid), gid) = (parse(u), g.map(parse)) else {
        return Err(format!(
            "exec as user {user:?}: only a numeric uid[:gid] can be compared with the \
             container's user on Kubernetes"
        ));
    };
    if gid == Some(None) {
        return Err(format!("exec as user {user:?}: the group is not numeric"));
    }
    let spec = p.spec.as_ref();
    let pod_sc = spec.and_then(|s| s.security_context.as_ref());
    let sc = spec
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.security_context.as_ref());
    let run_uid = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    let run_gid = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group));
    let refuse = |what: String| {
        Err(format!(
            "exec as user {user}: the Kubernetes exec subresource runs a command as its \
             container's user, which is {what}; not run as another user"
        ))
    };
    match (run_uid, run_gid, gid.flatten()) {
        (None, _, _) => refuse("the image's (no runAsUser)".into()),
        (Some(ru), _, _) if ru != uid => refuse(format!("uid {ru}")),
        (Some(ru), rg, Some(want)) if rg != Some(want) => refuse(format!(
            "{ru}:{}",
            rg.map_or("the image's group".into(), |g| g.to_string())
        )),
        _ => Ok(()),
    }
}

/// Does an API server of `git_version` (`v1.30.2`) speak `v5.channel.k8s.io`, whose
/// sessions can end their standard input (1.30 and later)?
pub fn closes_stdin(git_version: &str) -> bool {
    let v = git_version.trim_start_matches('v');
    let mut parts = v.split('.');
    let num = |s: Option<&str>| -> Option<u32> {
        let s = s?;
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    match (num(parts.next()), num(parts.next())) {
        (Some(major), Some(minor)) => major > 1 || (major == 1 && minor >= 30),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn status(value: serde_json::Value) -> Status {
        serde_json::from_value(value).expect("status")
    }

    #[test]
    fn the_status_channel_gives_the_exit_status_or_the_servers_words() {
        assert_eq!(exit_code(None), Ok(-1));
        assert_eq!(
            exit_code(Some(&status(serde_json::json!({"status": "Success"})))),
            Ok(0)
        );
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&failed)), Ok(3));
        let cannot = status(serde_json::json!({
            "status": "Failure", "reason": "InternalError",
            "message": "executable file not found in $PATH"}));
        assert_eq!(
            exit_code(Some(&cannot)),
            Err("executable file not found in $PATH".into())
        );
    }

    fn pod(pod_user: Option<(i64, i64)>, user: Option<(i64, i64)>) -> Pod {
        let sc = |u: Option<(i64, i64)>| {
            u.map(|(u, g)| serde_json::json!({"runAsUser": u, "runAsGroup": g}))
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "securityContext": sc(pod_user),
                "containers": [{"name": "agent", "image": "x", "securityContext": sc(user)}],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn exec_runs_only_as_the_containers_own_user() {
        let p = pod(None, Some((1000, 1000)));
        assert_eq!(exec_user(&p, "agent", "1000:1000"), Ok(()));
        assert_eq!(exec_user(&p, "agent", "1000"), Ok(()));
        let e = exec_user(&p, "agent", "0").expect_err("root refused");
        assert!(
            e.contains("uid 1000") && e.contains("not run as another user"),
            "{e}"
        );
        assert!(exec_user(&p, "agent", "1000:0").is_err());
        assert!(exec_user(&p, "agent", "root").is_err());
        assert!(exec_user(&p, "agent", "1000:staff").is_err());
        // The pod's user when the container names none; none at all: unknown, refused.
        assert_eq!(exec_user(&pod(Some((7, 7)), None), "agent", "7:7"), Ok(()));
        let e = exec_user(&pod(None, None), "agent", "1000").expect_err("unknown");
        assert!(e.contains("no runAsUser"), "{e}");
    }

    #[test]
    fn stdin_can_end_from_kubernetes_1_30() {
        assert!(!closes_stdin("v1.20.2"));
        assert!(!closes_stdin("v1.29.9-gke.1"));
        assert!(closes_stdin("v1.30.0"));
        assert!(closes_stdin("v1.33.1+k3s1"));
        assert!(closes_stdin("v2.0.0"));
        assert!(!closes_stdin("nonsense"));
    }

    #[test]
    fn since_is_whole_seconds_back_never_zero() {
        assert_eq!(since_seconds(0, 1000), None);
        assert_eq!(since_seconds(990, 1000), Some(11));
        assert_eq!(since_seconds(2000, 1000), Some(1));
    }
}
