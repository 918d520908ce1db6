//! Reconcile benchmark against the real Docker engine: cold apply of 1 and 10 bottles,
//! a no-op apply of 10 bottles (time and Docker API calls), and delete; each printed
//! beside a baseline measured in the same run (one raw list call; a raw container
//! create+start+remove).
//!
//! Run: `BOTTLE_SIDECAR_BINARY=target/x86_64-unknown-linux-gnu/release/bottle cargo bench --bench reconcile`

use std::path::Path;
use std::time::{Duration, Instant};

use bottle::apply::{execute, observe, schedule};
use bottle::engine::{ContainerSpec, Engine};
use bottle::graph::{self, DesiredState};
use bottle::hash::DigestKey;
use bottle::nodes::sidecar;
use bottle::plan::{self, Observed};
use bottle_docker::Docker;

fn manifest_text(project: &str, n: usize) -> String {
    let mut s = format!(
        "project: {project}\nbottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n    resources: {{cpus: 0.25, memory: 64m, pids: 64}}\nagents:\n"
    );
    for i in 0..n {
        s.push_str(&format!("  a{i}: {{bottle: dev}}\n"));
    }
    s
}

/// Everything `bottle apply` does before touching Docker: read and validate the
/// manifest, hash the contexts, build the desired state.
fn desired(path: &Path, sidecar_bin: &Path) -> DesiredState {
    let env = |k: &str| std::env::var(k).ok();
    let m = bottle::manifest::load(path, &env).expect("manifest");
    let key = DigestKey::fixed(9);
    let side = sidecar::image_object(
        &key,
        bottle::edge::host::sidecar_context(sidecar_bin).expect("sidecar"),
    );
    graph::desired(&m, &key, &side, &std::sync::Arc::from(&b""[..])).expect("desired")
}

async fn apply(docker: &Docker, d: &DesiredState) -> usize {
    let snap = observe(docker, &d.project).await.expect("observe");
    let p = plan::plan(d, &Observed::from_snapshot(&d.project, &snap));
    let ops = schedule(&p, d);
    let n = ops.len();
    let reports = execute(docker, d, ops, 4, &mut |_| {})
        .await
        .expect("execute");
    assert!(
        reports
            .iter()
            .all(|r| r.outcome == bottle::apply::Outcome::Done)
    );
    n
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
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
    std::fs::write(dir.path().join("Dockerfile"), "FROM debian:bookworm-slim\n").expect("write");
    let m1 = dir.path().join("one.yaml");
    let m10 = dir.path().join("ten.yaml");
    let project = format!("bench{}", std::process::id());
    std::fs::write(&m1, manifest_text(&format!("{project}a"), 1)).expect("write");
    std::fs::write(&m10, manifest_text(&format!("{project}b"), 10)).expect("write");

    // Baseline 1: one raw list call.
    let mut lists = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        docker
            .list_containers(&["bottle.managed=true".into()])
            .await
            .expect("list");
        lists.push(t.elapsed());
    }
    let list = median(lists);

    // Warm-up: build the images once so "cold" below means no objects, images cached.
    let d1 = desired(&m1, &sidecar_bin);
    apply(&docker, &d1).await;
    // Baseline 2: a raw create+start and remove of one container, the same image.
    let image = d1
        .objects
        .keys()
        .find(|k| k.name.contains("-agent:"))
        .map(|k| k.name.clone())
        .expect("agent image");
    let raw = ContainerSpec {
        name: format!("{project}-raw"),
        image,
        labels: Default::default(),
        cmd: vec!["sleep".into(), "infinity".into()],
        env: vec![],
        user: "1000:1000".into(),
        networks: vec![],
        aliases: vec![],
        mounts: vec![],
        cap_add: vec![],
        memory: 64 << 20,
        nano_cpus: 250_000_000,
        pids: 64,
        runtime: None,
        working_dir: None,
        init: true,
        sysctls: Default::default(),
        dns_gateway_of: None,
        network_of: None,
        devices: vec![],
        probe: None,
    };
    let t = Instant::now();
    docker.run_container(&raw).await.expect("raw run");
    docker.remove_container(&raw.name).await.expect("raw rm");
    let raw_container = t.elapsed();

    let empty = DesiredState::empty;
    apply(&docker, &empty(&d1.project)).await;

    let t = Instant::now();
    let d1 = desired(&m1, &sidecar_bin);
    let ops1 = apply(&docker, &d1).await;
    let cold1 = t.elapsed();

    let t = Instant::now();
    let d10 = desired(&m10, &sidecar_bin);
    let ops10 = apply(&docker, &d10).await;
    let cold10 = t.elapsed();

    let mut noops = Vec::new();
    let mut calls = 0;
    for _ in 0..10 {
        let before = docker.api_calls();
        let t = Instant::now();
        let d = desired(&m10, &sidecar_bin);
        let n = apply(&docker, &d).await;
        noops.push(t.elapsed());
        assert_eq!(n, 0, "a no-op apply planned changes");
        calls = docker.api_calls() - before;
    }
    let noop = median(noops);

    let t = Instant::now();
    apply(&docker, &empty(&d10.project)).await;
    let del10 = t.elapsed();
    apply(&docker, &empty(&d1.project)).await;

    println!("machine: {} cores, {}", num_cpus(), kernel());
    println!("baseline: one list call            {:>9.1} ms", ms(list));
    println!(
        "baseline: raw container run+remove {:>9.1} ms",
        ms(raw_container)
    );
    println!(
        "cold apply, 1 bottle ({ops1} ops)      {:>9.1} ms  = {:.1}x raw container",
        ms(cold1),
        cold1.as_secs_f64() / raw_container.as_secs_f64()
    );
    println!(
        "cold apply, 10 bottles ({ops10} ops)   {:>9.1} ms  = {:.1}x raw container",
        ms(cold10),
        cold10.as_secs_f64() / raw_container.as_secs_f64()
    );
    println!(
        "no-op apply, 10 bottles (median/10) {:>9.1} ms  = {:.1}x one list call; {calls} API calls",
        ms(noop),
        noop.as_secs_f64() / list.as_secs_f64()
    );
    println!(
        "delete, 10 bottles                  {:>9.1} ms  = {:.1}x raw container",
        ms(del10),
        del10.as_secs_f64() / raw_container.as_secs_f64()
    );
    // Remove the bench's images.
    for k in d1.objects.keys().chain(d10.objects.keys()) {
        if k.name.starts_with(&format!("bottle-{project}")) && k.name.contains(':') {
            let _ = docker.remove_image(&k.name).await;
        }
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_default()
}
