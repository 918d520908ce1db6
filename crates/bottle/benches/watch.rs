//! Watch-mode benchmark against the real Docker engine, median of 10 each:
//! - from `docker kill` of a watched agent to it running again (daemon timestamps of
//!   the `die` and the following `start` event);
//! - from a manifest save (an env change, so the agent is recreated) to the new agent's
//!   `start` event;
//! - beside them, in the same run: a raw create+start of the same container spec
//!   (`Docker::run_container`), and a raw start of a stopped one; the difference is the
//!   reconciler's own share (debounce, reload, observe, plan).
//!
//! Run: `BOTTLE_SIDECAR_BINARY=target/x86_64-unknown-linux-gnu/release/bottle cargo bench --bench watch`

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bottle::engine::Engine;
use bottle::hash::DigestKey;
use bottle::nodes::{NodeKind, ObjectKind, ObjectSpec};
use futures_util::StreamExt as _;
use {bottle::engine::Event, bottle_docker::Docker};

fn manifest(project: &str, n: usize) -> String {
    format!(
        "project: {project}\nbottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n    runtime: runc\n    \
         resources: {{cpus: 0.25, memory: 64m, pids: 64}}\n    env: {{N: \"{n}\"}}\nagents:\n  a: {{bottle: dev}}\n"
    )
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn docker_cli(args: &[&str]) {
    let s = Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("docker");
    assert!(s.success(), "docker {args:?}");
}

/// The next event of `action` on `name`.
async fn next(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    name: &str,
    action: &str,
) -> Event {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let e = rx.recv().await.expect("event stream");
            if e.action == action && e.attributes.get("name").map(String::as_str) == Some(name) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {action} of {name} within 120 s"))
}

struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sidecar_bin = std::env::var_os("BOTTLE_SIDECAR_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "target/x86_64-unknown-linux-gnu/release/bottle".into());
    assert!(
        sidecar_bin.exists(),
        "build the static binary first (scripts/build-static.sh)"
    );
    let docker = Docker::connect().expect("docker");
    let dir = tempfile::tempdir().expect("tmp");
    let state = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM debian:bookworm-slim\nCMD [\"sleep\", \"infinity\"]\n",
    )
    .expect("write");
    let project = format!("wbench{}", std::process::id());
    let m = dir.path().join("bottles.yaml");
    std::fs::write(&m, manifest(&project, 0)).expect("write");
    let agent = format!("bottle-{project}-a-agent");

    // Follow the project's container events from now (the stream is lazy: drive it first).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "label".to_string(),
            vec![format!("bottle.project={project}")],
        ),
    ]);
    let stream = docker.events(Some(now_nanos() / 1_000_000_000 - 1), &filters);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(e)) = stream.next().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });

    let log = std::fs::File::create(dir.path().join("watch.log")).expect("log");
    let watcher = Watcher(
        Command::new(env!("CARGO_BIN_EXE_bottle"))
            .args([
                "apply",
                "-f",
                m.to_str().expect("utf-8"),
                "--watch",
                "--resync",
                "3600",
            ])
            .env("BOTTLE_SIDECAR_BINARY", &sidecar_bin)
            .env("XDG_STATE_HOME", state.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn watcher"),
    );
    next(&mut rx, &agent, "start").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. docker kill -> running again.
    let mut kills = Vec::new();
    for _ in 0..10 {
        while rx.try_recv().is_ok() {}
        docker_cli(&["kill", &agent]);
        let die = next(&mut rx, &agent, "die").await;
        let start = next(&mut rx, &agent, "start").await;
        kills.push(Duration::from_nanos(
            (start.time_nano - die.time_nano) as u64,
        ));
        // Past the flap window, so the watcher sees drift, not a crash loop.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // 2. manifest save -> the recreated agent started.
    let mut saves = Vec::new();
    for i in 1..=10 {
        while rx.try_recv().is_ok() {}
        let tmp = dir.path().join(".bottles.yaml.tmp");
        std::fs::write(&tmp, manifest(&project, i)).expect("write");
        let t0 = now_nanos();
        std::fs::rename(&tmp, &m).expect("rename"); // as editors save
        let start = next(&mut rx, &agent, "start").await;
        saves.push(Duration::from_nanos((start.time_nano - t0) as u64));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The agent image as the watcher built it (its tag depends on the host's digest key).
    let image = Command::new("docker")
        .args(["inspect", "-f", "{{.Config.Image}}", &agent])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("inspect");
    drop(watcher);

    // 3. Baselines: the same agent spec, raw, through the engine layer.
    let env = |k: &str| std::env::var(k).ok();
    let model = bottle::manifest::load(&m, &env).expect("manifest");
    let key = DigestKey::fixed(1);
    let side = bottle::nodes::sidecar::image_object(
        &key,
        bottle::edge::host::sidecar_context(&sidecar_bin).expect("sidecar"),
    );
    let desired = bottle::graph::desired(&model, &key, &side, &std::sync::Arc::from(&b""[..]))
        .expect("desired");
    let mut spec = desired
        .objects
        .values()
        .find_map(|o| match (&o.spec, o.node, o.key.kind) {
            (ObjectSpec::Container(s, _), NodeKind::Agent, ObjectKind::Container) => {
                Some((**s).clone())
            }
            _ => None,
        })
        .expect("agent spec");
    spec.labels.clear();
    spec.image = image;
    spec.aliases.clear();
    let mut creates = Vec::new();
    let mut starts = Vec::new();
    for i in 0..10 {
        spec.name = format!("{project}-raw{i}");
        let t = Instant::now();
        docker.run_container(&spec).await.expect("raw run");
        creates.push(t.elapsed());
        docker_cli(&["kill", &spec.name]);
        let t = Instant::now();
        docker.start_container(&spec.name).await.expect("raw start");
        starts.push(t.elapsed());
        docker.remove_container(&spec.name).await.expect("raw rm");
    }

    let _ = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["delete", "--images", "-p", &project])
        .env("XDG_STATE_HOME", state.path())
        .output();

    let (kill, save, create, start) = (
        median(kills),
        median(saves),
        median(creates),
        median(starts),
    );
    println!(
        "machine: {} cores; medians of 10",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("docker kill -> agent running again   {:>8.1} ms", ms(kill));
    println!("  raw start of the stopped container {:>8.1} ms", ms(start));
    println!(
        "  reconciler's share                 {:>8.1} ms (debounce 200 ms, observe, plan)",
        ms(kill.saturating_sub(start))
    );
    println!("manifest save -> new agent started   {:>8.1} ms", ms(save));
    println!(
        "  raw create+start of the same spec  {:>8.1} ms",
        ms(create)
    );
    println!(
        "  reconciler's share                 {:>8.1} ms (debounce 200 ms, reload + hash, observe, plan, remove old)",
        ms(save.saturating_sub(create))
    );
}
