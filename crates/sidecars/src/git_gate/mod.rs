//! `bottle sidecar git-gate`: the agent's only git remote.
//!
//! Each configured remote is served by name over smart HTTP
//! (`http://git-gate:8418/<name>.git`) from a bare mirror that the gate clones from the
//! upstream at start, over SSH with the remote's key and pinned host key. While the
//! upstream cannot be reached the clone is retried with backoff and the agent gets a
//! clear `remote error`. Requests are handed to `git http-backend` (CGI); pushes pass
//! through the `pre-receive` hook ([`hook`]), which scans them and forwards them
//! upstream. Before each ref advertisement the mirror is refreshed from the upstream.

pub mod hook;
mod log;
mod objects;
pub mod scan;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use bottle_contract::git_gate::{CONFIG_FILE, CONFIG_MOUNT, GateConfig, GateRemote, MIRRORS};

type Body = BoxBody<Bytes, std::io::Error>;

/// Longest wait between two clone attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Longest a mirror refresh may hold up an advertisement.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The config directory (`BOTTLE_GIT_CONFIG`, default the volume's mount point).
pub fn config_dir() -> PathBuf {
    std::env::var_os("BOTTLE_GIT_CONFIG")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(CONFIG_MOUNT), PathBuf::from)
}

fn mirrors_dir() -> PathBuf {
    std::env::var_os("BOTTLE_GIT_MIRRORS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(MIRRORS), PathBuf::from)
}

/// Where the hook leaves its push verdicts for the server to write to the gate's stderr
/// (the hook's own stderr goes to the pushing client): one small file each.
fn audit_dir() -> PathBuf {
    mirrors_dir().join(".audit")
}

/// Push verdict files drained at most per request, and their largest size.
const AUDIT_FILES: usize = 64;
const AUDIT_FILE_BYTES: u64 = 4096;

/// Leave a push verdict for [`drain_audit`] (the hook). Best effort: a verdict that
/// cannot be written is lost, the push's outcome is not changed.
pub fn audit_push(event: &bottle_contract::audit::PushEvent) {
    audit_push_in(&audit_dir(), event);
}

fn audit_push_in(dir: &Path, event: &bottle_contract::audit::PushEvent) {
    use bottle_contract::audit::{GIT_GATE_COMPONENT, Line};
    let Some(line) = Line::now(GIT_GATE_COMPONENT, event).to_json() else {
        return;
    };
    let _ = std::fs::create_dir_all(dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("{nanos}-{}.json", std::process::id()));
    let _ = std::fs::write(path, line);
}

/// Write the verdicts the hook left to stderr, oldest first, each once (a file is
/// renamed before it is read, so two drains never both take it).
fn drain_audit() {
    drain_audit_in(&audit_dir(), &mut std::io::stderr().lock());
}

fn drain_audit_in(dir: &Path, out: &mut dyn std::io::Write) {
    use std::io::Read as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .take(AUDIT_FILES)
        .collect();
    names.sort();
    for name in names {
        let from = dir.join(&name);
        let taken = dir.join(format!("{name}.taken"));
        if std::fs::rename(&from, &taken).is_err() {
            continue;
        }
        let mut line = String::new();
        let read = std::fs::File::open(&taken)
            .and_then(|f| f.take(AUDIT_FILE_BYTES).read_to_string(&mut line));
        let _ = std::fs::remove_file(&taken);
        if read.is_ok() && !line.contains('\n') {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Read `gate.json` from the config directory.
pub fn load_config(dir: &Path) -> anyhow::Result<GateConfig> {
    let path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// `GIT_SSH_COMMAND` for a remote: its key only, its pinned host key only, no prompts.
pub fn ssh_command(dir: &Path, remote: &GateRemote) -> String {
    format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o IdentitiesOnly=yes -o IdentityAgent=none -i {} -o ConnectTimeout=20",
        dir.join(remote.known_hosts_file()).display(),
        dir.join(remote.key_file()).display()
    )
}

/// One served remote.
struct Repo {
    remote: GateRemote,
    path: PathBuf,
    /// `None` once the mirror is ready; else why it is not.
    unavailable: Mutex<Option<String>>,
    /// The first clone (or refresh) attempt has ended, either way.
    tried: std::sync::atomic::AtomicBool,
    /// One refresh at a time.
    fetch: tokio::sync::Mutex<()>,
}

struct Gate {
    config_dir: PathBuf,
    root: PathBuf,
    repos: HashMap<String, Arc<Repo>>,
}

/// Serve until killed.
pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let config_dir = config_dir();
    let config = load_config(&config_dir)?;
    let root = mirrors_dir();
    std::fs::create_dir_all(&root)?;
    let repos = config
        .remotes
        .into_iter()
        .map(|remote| {
            let repo = Arc::new(Repo {
                path: root.join(format!("{}.git", remote.name)),
                remote,
                unavailable: Mutex::new(Some("the mirror is being cloned".into())),
                tried: std::sync::atomic::AtomicBool::new(false),
                fetch: tokio::sync::Mutex::new(()),
            });
            (repo.remote.name.clone(), repo)
        })
        .collect();
    let gate = Arc::new(Gate {
        config_dir,
        root,
        repos,
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(kind = "git-gate", listen, "sidecar listening");
    report(&gate);
    for repo in gate.repos.values() {
        tokio::spawn(init_mirror(gate.clone(), repo.clone()));
    }
    loop {
        let (sock, peer) = listener.accept().await?;
        let gate = gate.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let gate = gate.clone();
                async move { Ok::<_, Infallible>(handle(&gate, req, peer).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

/// Write the gate's status: ready once every mirror's first clone attempt has ended,
/// naming each upstream that could not be reached (it is retried meanwhile).
fn report(gate: &Gate) {
    let mut names: Vec<&String> = gate.repos.keys().collect();
    names.sort();
    let mut pending = Vec::new();
    let mut unreachable = Vec::new();
    for name in names {
        let repo = &gate.repos[name];
        let why = repo
            .unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !repo.tried.load(std::sync::atomic::Ordering::SeqCst) {
            pending.push(name.as_str());
        } else if let Some(why) = why {
            unreachable.push(format!("{name} ({}): {why}", repo.remote.upstream));
        }
    }
    if !pending.is_empty() {
        crate::status::waiting(format!("cloning the mirror of {}", pending.join(", ")));
    } else if unreachable.is_empty() {
        crate::status::ready(format!("serving {} mirror(s)", gate.repos.len()));
    } else {
        crate::status::ready(format!(
            "serving; upstream unreachable, retried: {}",
            unreachable.join("; ")
        ));
    }
}

/// Clone the mirror (or reuse one from an earlier start), retrying with backoff.
async fn init_mirror(gate: Arc<Gate>, repo: Arc<Repo>) {
    let mut delay = Duration::from_secs(1);
    loop {
        let result = if repo.path.join("HEAD").exists() {
            refresh(&gate, &repo).await
        } else {
            clone_mirror(&gate, &repo).await
        };
        match result {
            Ok(()) => {
                *repo.unavailable.lock().unwrap_or_else(|e| e.into_inner()) = None;
                repo.tried.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(remote = %repo.remote.name, upstream = %repo.remote.upstream, "mirror ready");
                report(&gate);
                return;
            }
            Err(e) => {
                tracing::warn!(remote = %repo.remote.name, upstream = %repo.remote.upstream, error = %e, retry_in = ?delay, "upstream unavailable");
                *repo.unavailable.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                repo.tried.store(true, std::sync::atomic::Ordering::SeqCst);
                report(&gate);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn git(gate: &Gate, remote: &GateRemote) -> Command {
    let mut c = Command::new("git");
    c.env("GIT_SSH_COMMAND", ssh_command(&gate.config_dir, remote))
        .env("GIT_SSH_VARIANT", "ssh")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

/// Run a git command; on failure, its stderr in one line.
async fn run_git(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = tokio::time::timeout(FETCH_TIMEOUT * 4, cmd.output())
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // The last lines carry the verdict ("Host key verification failed.", "fatal: ...");
    // ssh's warning banners before them do not.
    let lines: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@'))
        .collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    let mut msg = format!("{what} failed: {}", tail.join("; "));
    msg.truncate(600);
    Err(msg)
}

async fn clone_mirror(gate: &Gate, repo: &Repo) -> Result<(), String> {
    let tmp = gate.root.join(format!(".{}.tmp", repo.remote.name));
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    let mut cmd = git(gate, &repo.remote);
    cmd.args(["clone", "--mirror", "--quiet", &repo.remote.upstream])
        .arg(&tmp);
    run_git(cmd, &format!("cloning {}", repo.remote.upstream)).await?;
    let mut cmd = git(gate, &repo.remote);
    cmd.arg("--git-dir")
        .arg(&tmp)
        .args(["config", "http.receivepack", "true"]);
    run_git(cmd, "configuring the mirror").await?;
    let exe = std::env::current_exe().map_err(|e| format!("locating bottle: {e}"))?;
    let hook = tmp.join("hooks/pre-receive");
    let script = format!(
        "#!/bin/sh\nexec '{}' sidecar git-gate-hook\n",
        exe.display()
    );
    let io = |e: std::io::Error| format!("installing the hook: {e}");
    tokio::fs::create_dir_all(tmp.join("hooks"))
        .await
        .map_err(io)?;
    tokio::fs::write(&hook, script).await.map_err(io)?;
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(io)?;
    }
    tokio::fs::rename(&tmp, &repo.path).await.map_err(io)
}

/// Bring the mirror's refs up to the upstream's.
async fn refresh(gate: &Gate, repo: &Repo) -> Result<(), String> {
    let _one = repo.fetch.lock().await;
    let mut cmd = git(gate, &repo.remote);
    cmd.arg("--git-dir")
        .arg(&repo.path)
        .args(["fetch", "--prune", "--quiet", "origin"]);
    run_git(cmd, &format!("fetching {}", repo.remote.upstream)).await
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "text/plain; charset=utf-8".parse().expect("valid"),
    );
    r
}

fn pkt_line(s: &str) -> String {
    format!("{:04x}{s}", s.len() + 4)
}

/// A smart-HTTP advertisement that makes the client stop with `remote error: MSG`.
fn advertise_error(service: &str, msg: &str) -> Response<Body> {
    let body = format!(
        "{}0000{}",
        pkt_line(&format!("# service={service}\n")),
        pkt_line(&format!("ERR {msg}\n"))
    );
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        "content-type",
        format!("application/x-{service}-advertisement")
            .parse()
            .expect("valid"),
    );
    r.headers_mut()
        .insert("cache-control", "no-cache".parse().expect("valid"));
    r
}

async fn handle(gate: &Gate, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/" || path == "/healthz" {
        return text(StatusCode::OK, "ok git-gate\n".into());
    }
    let Some((name, rest)) = path.strip_prefix('/').and_then(|p| p.split_once(".git/")) else {
        return text(StatusCode::NOT_FOUND, "not a repository path\n".into());
    };
    let Some(repo) = gate.repos.get(name).cloned() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("git-gate: no remote named {name}\n"),
        );
    };
    let service = match (rest, query.as_str()) {
        ("info/refs", q) => q
            .split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .map(str::to_string),
        ("git-upload-pack", _) => Some("git-upload-pack".into()),
        ("git-receive-pack", _) => Some("git-receive-pack".into()),
        _ => None,
    };
    let Some(service) = service.filter(|s| s == "git-upload-pack" || s == "git-receive-pack")
    else {
        return text(
            StatusCode::FORBIDDEN,
            "git-gate: only the smart HTTP protocol is served\n".into(),
        );
    };
    let advert = rest == "info/refs";
    let unavailable = repo
        .unavailable
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(why) = unavailable {
        let msg = format!(
            "git-gate: upstream of remote {} ({}) is not available yet, retrying: {why}",
            repo.remote.name, repo.remote.upstream
        );
        return if advert {
            advertise_error(&service, &msg)
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{msg}\n"))
        };
    }
    if advert && let Err(e) = refresh(gate, &repo).await {
        // Serve what the mirror has; the hook still refuses non-fast-forwards and the
        // upstream still has the last word on a push.
        tracing::warn!(remote = %repo.remote.name, error = %e, "refresh failed; serving the mirror as it is");
    }
    let method = req.method().to_string();
    match cgi(gate, req, &format!("/{name}.git/{rest}"), &query, peer).await {
        Ok(r) => {
            tracing::info!(remote = %repo.remote.name, %method, rest, status = r.status().as_u16(), "request");
            r
        }
        Err(e) => {
            tracing::warn!(remote = %repo.remote.name, error = %e, "http-backend failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git-gate: {e}\n"),
            )
        }
    }
}

/// Hand the request to `git http-backend` and stream its answer back.
async fn cgi(
    gate: &Gate,
    req: Request<Incoming>,
    path_info: &str,
    query: &str,
    peer: std::net::SocketAddr,
) -> std::io::Result<Response<Body>> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &gate.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", req.method().as_str())
        .env("REMOTE_USER", "agent")
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env_remove("CONTENT_LENGTH")
        .env_remove("HTTP_CONTENT_ENCODING")
        .env_remove("HTTP_GIT_PROTOCOL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (h, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = header(h) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut body = req.into_body();
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    tokio::spawn(async move {
        let mut err = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut err).await;
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        let status = child.wait().await;
        // The hook has run (it runs inside receive-pack): its verdict goes out now.
        drain_audit();
        if !err.is_empty() || !matches!(&status, Ok(s) if s.success()) {
            tracing::warn!(status = ?status, stderr = %String::from_utf8_lossy(&err).trim(), "http-backend");
        }
    });
    let mut out = BufReader::with_capacity(64 << 10, stdout);
    let mut builder = Response::builder();
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other(
                "http-backend ended before its headers",
            ));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(k, v);
        }
    }
    let stream = futures_util::stream::unfold(Some(out), |state| async move {
        let mut r = state?;
        let mut buf = vec![0u8; 64 << 10];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), Some(r)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod audit_tests {
    use super::*;
    use bottle_contract::audit::{PushEvent, Source, Verdict, parse};

    #[test]
    fn a_push_verdict_left_by_the_hook_is_written_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = dir.path().join(".audit");
        let event = PushEvent {
            decision: "deny".into(),
            reason: "secret".into(),
            remote: "origin".into(),
            host: PushEvent::host_of("git@github.com:acme/app.git"),
            refs: 2,
            detail: "rules github-pat".into(),
        };
        audit_push_in(&audit, &event);
        // A file that is not a verdict, and an oversized one, are not written out whole.
        std::fs::write(audit.join("junk.txt"), "x").expect("write");
        let mut out = Vec::new();
        drain_audit_in(&audit, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        let d = parse("git-gate", text.trim(), None).expect("decision");
        assert_eq!(
            (d.source, d.verdict, d.reason.as_str(), d.host.as_str()),
            (Source::GitGate, Verdict::Deny, "secret", "github.com")
        );
        let mut again = Vec::new();
        drain_audit_in(&audit, &mut again);
        assert!(again.is_empty());
        // No directory yet: nothing, no error.
        drain_audit_in(&dir.path().join("none"), &mut again);
        assert!(again.is_empty());
    }
}
