//! Issue 6 acceptance: `bottle apply --watch` keeps Docker converged. Each test runs the
//! real `bottle apply --watch` as a child process and stops it at the end.

use std::io::Read as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

/// Time allowed for a first converge (image builds on a shared machine).
const FIRST: Duration = Duration::from_secs(240);
/// Time allowed for a repair.
const REPAIR: Duration = Duration::from_secs(60);

/// One policy, runc: under this machine's gVisor build the test agent exits (code 2)
/// seconds after start, which a watcher rightly treats as a crash loop.
fn manifest_body(agents: &[&str]) -> String {
    let mut s = String::from(
        "bottles:\n  plain:\n    image: {dockerfile: Dockerfile}\n    runtime: runc\n    resources: {cpus: 0.25, memory: 128m, pids: 64}\nagents:\n",
    );
    for a in agents {
        s.push_str(&format!("  {a}: {{bottle: plain}}\n"));
    }
    s
}

/// A running `bottle apply --watch`; SIGTERMed (then killed) on drop.
pub(crate) struct Watcher {
    child: Child,
    log: PathBuf,
}

impl Watcher {
    pub(crate) fn start(
        p: &Project,
        manifest: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Watcher {
        let log = std::env::temp_dir().join(format!(
            "bottle-watch-{}-{}.log",
            p.name,
            rand::random::<u32>()
        ));
        let out = std::fs::File::create(&log).expect("log file");
        let mut c = Command::new(env!("CARGO_BIN_EXE_bottle"));
        c.args(["apply", "-f", manifest.to_str().expect("utf-8"), "--watch"])
            .args(extra)
            .current_dir(p.dir.path())
            .env("BOTTLE_SIDECAR_BINARY", sidecar_binary())
            .env(
                "XDG_STATE_HOME",
                std::env::temp_dir().join("bottle-test-state"),
            )
            .env("RUST_LOG", "bottle=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in env {
            c.env(k, v);
        }
        Watcher {
            child: c.spawn().expect("spawn bottle apply --watch"),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the exit status (None when it had to be killed).
    fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Poll `cond` every 200 ms until it holds; panic with `what` and the log after `limit`.
fn wait_for(w: &Watcher, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out after {limit:?} waiting for {what}\n--- watcher log\n{}",
        w.log()
    );
}

fn running(name: &str) -> bool {
    docker_try(&["inspect", "-f", "{{.State.Running}}", name]).trim() == "true"
}

fn exists(name: &str) -> bool {
    !docker_try(&["inspect", "-f", "{{.Id}}", name])
        .trim()
        .is_empty()
}

/// `path:LINE:COL:` somewhere in `text`.
fn has_line_col(text: &str, file: &str) -> bool {
    text.match_indices(file).any(|(i, _)| {
        let rest = &text[i + file.len()..];
        let mut parts = rest.splitn(3, ':');
        parts.next() == Some("")
            && parts
                .next()
                .is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
            && parts
                .next()
                .is_some_and(|r| r.chars().next().is_some_and(|c| c.is_ascii_digit()))
    })
}

/// GET the metrics from the address the watcher logged.
fn scrape(log: &str) -> String {
    use std::io::Write as _;
    let addr = log
        .lines()
        .find(|l| l.contains("serving metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in\n{log}"));
    let mut c = std::net::TcpStream::connect(addr).expect("connect to metrics");
    c.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut s = String::new();
    c.read_to_string(&mut s).expect("response");
    assert!(s.starts_with("HTTP/1.1 200"), "{s}");
    s
}

#[test]
fn a_killed_agent_and_a_disconnected_network_are_repaired_without_an_apply() {
    let p = Project::new("wkill");
    let m = p.manifest(&manifest_body(&["a"]));
    let mut w = Watcher::start(&p, &m, &["--metrics", "127.0.0.1:0"], &[]);
    let agent = p.obj("a", "agent");
    wait_for(&w, FIRST, "the first converge", || running(&agent));

    let started = inspect(&agent, "{{.State.StartedAt}}");
    docker(&["kill", &agent]);
    wait_for(&w, REPAIR, "the killed agent to run again", || {
        running(&agent) && inspect(&agent, "{{.State.StartedAt}}") != started
    });

    let egress = p.obj("a", "egress");
    let nets = inspect(
        &egress,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    let net = nets
        .split_whitespace()
        .find(|n| n.starts_with(&format!("bottle-{}-", p.name)))
        .expect("egress is on a network of the bottle")
        .to_string();
    let id = inspect(&egress, "{{.Id}}");
    docker(&["network", "disconnect", &net, &egress]);
    wait_for(&w, REPAIR, "the egress sidecar back on its network", || {
        running(&egress)
            && inspect(&egress, "{{.Id}}") != id
            && inspect(&egress, "{{json .NetworkSettings.Networks}}").contains(&net)
    });
    let log = w.log();
    assert!(log.contains(&format!("container {agent} die")), "{log}");
    assert!(log.contains("disconnect"), "{log}");

    let metrics = scrape(&w.log());
    assert!(metrics.contains("bottle_reconciles_total"), "{metrics}");
    let repairs = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bottle_drift_repairs_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(repairs >= 2, "kill + disconnect repaired: {metrics}");
    assert!(
        metrics.contains("bottle_actions_total{action=\"start\"}"),
        "{metrics}"
    );

    // SIGTERM: exit 0, bottles left running.
    assert_eq!(w.stop(), Some(0), "{}", w.log());
    assert!(running(&agent));
}

#[test]
fn manifest_edits_converge_and_a_broken_one_tears_nothing_down() {
    let p = Project::new("wedit");
    let m = p.manifest(&manifest_body(&["a"]));
    let w = Watcher::start(&p, &m, &["--log-format", "json"], &[]);
    let (a, b) = (p.obj("a", "agent"), p.obj("b", "agent"));
    wait_for(&w, FIRST, "the first converge", || running(&a));

    p.manifest(&manifest_body(&["a", "b"]));
    wait_for(&w, FIRST, "the added agent", || running(&b));

    // A typo: reported with line and column; nothing is removed.
    let before = p.objects("container");
    std::fs::write(
        &m,
        format!(
            "project: {}\n{}  c: {{bottel: plain}}\n",
            p.name,
            manifest_body(&["a"])
        ),
    )
    .expect("write");
    wait_for(&w, REPAIR, "the manifest error in the log", || {
        w.log().contains("manifest not applied")
    });
    let log = w.log();
    assert!(
        has_line_col(&log, "bottles.yaml"),
        "no line:column in\n{log}"
    );
    assert!(log.lines().any(|l| l.starts_with('{')), "json logs: {log}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        p.objects("container"),
        before,
        "a broken manifest changed Docker"
    );

    // Fixed (without b): b goes, a stays.
    p.manifest(&manifest_body(&["a"]));
    wait_for(&w, REPAIR, "the removed agent's objects to go", || {
        !p.objects("container").iter().any(|c| c.contains("-b-"))
    });
    assert!(running(&a));
    assert!(!exists(&b));
}

#[test]
fn a_stray_object_labelled_as_ours_is_removed_on_resync() {
    let p = Project::new("wstray");
    let m = p.manifest(&manifest_body(&["a"]));
    let w = Watcher::start(&p, &m, &["--resync", "2"], &[]);
    wait_for(&w, FIRST, "the first converge", || {
        running(&p.obj("a", "agent"))
    });
    let stray = p.obj("zz", "agent");
    docker(&[
        "run",
        "-d",
        "--name",
        &stray,
        "--label",
        "bottle.managed=true",
        "--label",
        &format!("bottle.project={}", p.name),
        "--label",
        "bottle.bottle=zz",
        "--label",
        "bottle.node=agent",
        "debian:bookworm-slim",
        "sleep",
        "infinity",
    ]);
    wait_for(&w, REPAIR, "the stray container to be removed", || {
        !exists(&stray)
    });
    assert!(running(&p.obj("a", "agent")));
}

/// A unix-socket proxy to the Docker socket that can be cut and restored.
struct Proxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<UnixStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(path: &Path) -> Proxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind proxy socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<std::sync::Mutex<Vec<UnixStream>>> = Arc::default();
        let (s, c) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
                list.push(client);
                list.push(upstream);
            }
        });
        Proxy {
            path: path.to_path_buf(),
            stop,
            conns,
            accept: Some(accept),
        }
    }

    /// Refuse new connections and cut every open one (the daemon "goes away").
    fn cut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[test]
fn a_lost_event_stream_reconnects_and_repairs_what_happened_meanwhile() {
    let p = Project::new("wlost");
    let m = p.manifest(&manifest_body(&["a"]));
    let sock = std::env::temp_dir().join(format!("bottle-proxy-{}.sock", p.name));
    let mut proxy = Proxy::start(&sock);
    let host = format!("unix://{}", sock.display());
    // A long resync: the repair must come from the reconnect, not the timer.
    let w = Watcher::start(&p, &m, &["--resync", "3600"], &[("DOCKER_HOST", &host)]);
    let egress = p.obj("a", "egress");
    wait_for(&w, FIRST, "the first converge", || {
        running(&p.obj("a", "agent"))
    });
    std::thread::sleep(Duration::from_secs(1));

    proxy.cut();
    wait_for(&w, REPAIR, "the watcher to notice the loss", || {
        w.log().contains("event stream lost")
    });
    docker(&["rm", "-f", &egress]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!exists(&egress), "repaired without an engine?");

    let _proxy = Proxy::start(&sock);
    wait_for(&w, REPAIR, "the removed sidecar to come back", || {
        running(&egress)
    });
    let log = w.log();
    assert!(log.contains("resubscribed"), "{log}");
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn a_second_writer_on_the_project_exits_naming_the_holder() {
    let p = Project::new("wlock");
    let m = p.manifest(&manifest_body(&["a"]));
    let w = Watcher::start(&p, &m, &[], &[]);
    let pid = w.pid().to_string();
    // The lock is taken before anything else: wait until the holder says who it is.
    let lock = std::env::temp_dir()
        .join("bottle-test-state/bottle/locks")
        .join(format!("{}.lock", p.name));
    wait_for(&w, REPAIR, "the lock file", || {
        let mut s = String::new();
        std::fs::File::open(&lock)
            .and_then(|mut f| f.read_to_string(&mut s))
            .is_ok()
            && s.contains(&format!("pid={pid}"))
    });
    let mf = m.to_str().expect("utf-8");
    for args in [
        vec!["apply", "-f", mf, "--watch"],
        vec!["apply", "-f", mf],
        vec!["delete", "-p", &p.name],
    ] {
        let r = p.bottle(&args).expect(2);
        assert!(
            r.stderr.contains(&format!("pid {pid}")) && r.stderr.contains("--wait-lock"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("apply -f"),
            "names the command: {}",
            r.stderr
        );
    }
    wait_for(&w, FIRST, "the first watcher to converge", || {
        running(&p.obj("a", "agent"))
    });
}
