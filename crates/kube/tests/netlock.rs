//! End-to-end test of the agent pod's containment without NetworkPolicy (feature
//! `kube-e2e`; docs/design.md section 9.3) on the test cluster of scripts/kube/cluster.sh:
//! an agent pod rendered by `bottle_kube::pod::agent_pod`, whose init container is the
//! real `bottle sidecar netlock`, under runc and under gVisor (RuntimeClass `runsc`).
//! Under gVisor the node's chained CNI plugin (`bottle sidecar cni`, scripts/kube/cluster.sh
//! with BOTTLE_KUBE_NETLOCK_BINARY) writes the lock and netlock only verifies it: the pod
//! must run and fail the same probes as under runc when the RuntimeClass is labelled
//! `bottle.netlock=cni`, and fail closed otherwise; a gVisor pod without the annotation
//! (which the plugin then leaves alone) must fail closed either way.
//!
//! Images: the cluster's busybox with the static `bottle` ($BOTTLE_SIDECAR_BINARY) and
//! `bottle-testkit` ($BOTTLE_TESTKIT_BINARY, whose `health` listener writes down who sent
//! what), built with Docker and pushed to the cluster's registry, which the node pulls
//! from. Pods: `sidecar` (the stand-in sidecar: listens on 3128, the endpoint the agent
//! is given, and on 8080, a port it is not), `open` (another pod, unlocked: the control
//! that shows what an unlocked pod reaches), the agent (its command runs the probes as
//! uid 1000 and prints one `RESULT` line each, then listens on 7000), and `prober`
//! (unlocked: tries to connect in to the agent's listener and, as the control, to the
//! open pod's). Every probe is bounded (`timeout`, `nc -w`), every wait too.
#![cfg(feature = "kube-e2e")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bottle_contract::labels;
use bottle_kube::pod::{AgentPod, Endpoint, agent_pod};
use common::{cluster_up, down_if_started, labelled, wait_running};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, LogParams};

/// One agent pod of the test: its runtime, whether it must run locked, and whether the
/// annotation that asks the node for the lock is taken away.
struct Run {
    tag: &'static str,
    runtime: Option<&'static str>,
    lock_expected: bool,
    unannotated: bool,
}

/// Where an agent pod stands once it has settled.
#[derive(Debug)]
enum Settled {
    /// Locked and running, at this address.
    Running(String),
    /// netlock refused: the pod failed, or its netlock said why.
    Refused(String),
    /// netlock said nothing and its pod stays `Init:0/1` for a minute, so the agent
    /// never starts (a runtime that loses an init container's exit does this: the test
    /// cluster's runsc did, until its wrapper said an ended sandbox's kill as runc does).
    Stuck(String),
}

fn binary(var: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} must name a static binary (scripts/build-static.sh --testkit)")
    });
    assert!(p.is_file(), "{var}={} is not a file", p.display());
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test image, pushed to the cluster's registry; returns its reference.
fn push_image(registry: &str) -> String {
    let dir = tempfile_dir();
    std::fs::copy(binary("BOTTLE_SIDECAR_BINARY"), dir.join("bottle")).expect("copy bottle");
    std::fs::copy(binary("BOTTLE_TESTKIT_BINARY"), dir.join("testkit")).expect("copy testkit");
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {registry}/busybox:1.35\nCOPY bottle /bottle\nCOPY testkit /testkit\n"),
    )
    .expect("Dockerfile");
    let image = format!("{registry}/bottle-kube-e2e-netlock:{}", std::process::id());
    run(Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(&dir));
    run(Command::new("docker").args(["push", "-q", &image]));
    let _ = std::fs::remove_dir_all(&dir);
    image
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("bottle-kube-e2e-netlock-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn plain_pod(name: &str, image: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
            }],
        },
    }))
    .expect("pod")
}

/// Waits (at most 120 s) until the agent pod runs or netlock has refused; a pod still
/// initializing after 60 s whose netlock said nothing is [`Settled::Stuck`].
async fn settle(api: &Api<Pod>, name: &str) -> Settled {
    for i in 0..240 {
        let p = api.get(name).await.expect("reading pod");
        let status = p.status.clone().unwrap_or_default();
        let netlock_exit = status
            .init_container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == "netlock")
            .and_then(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code));
        let log = logs(api, name, "netlock").await;
        match status.phase.as_deref() {
            Some("Running") => return Settled::Running(status.pod_ip.unwrap_or_default()),
            Some("Failed") => return Settled::Refused(log),
            _ if netlock_exit.is_some_and(|c| c != 0) || log.contains("error: netlock") => {
                return Settled::Refused(log);
            }
            _ if i >= 120 && netlock_exit.is_none() && log.is_empty() => {
                return Settled::Stuck(format!("{:?}", status.phase));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    panic!(
        "pod {name} neither running nor refused after 120 s: {:?}",
        api.get(name).await.ok().and_then(|p| p.status)
    );
}

async fn ip_of(api: &Api<Pod>, name: &str) -> String {
    wait_running(api, name).await;
    api.get(name)
        .await
        .expect("pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("pod IP")
}

async fn logs(api: &Api<Pod>, name: &str, container: &str) -> String {
    api.logs(
        name,
        &LogParams {
            container: Some(container.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_default()
}

/// Reads the `RESULT <name> ok|fail <detail>` lines of a container once it printed
/// `DONE` (at most 120 s).
async fn results(api: &Api<Pod>, name: &str, container: &str) -> BTreeMap<String, (bool, String)> {
    for _ in 0..240 {
        let text = logs(api, name, container).await;
        if text.lines().any(|l| l == "DONE") {
            return text
                .lines()
                .filter_map(|l| l.strip_prefix("RESULT "))
                .filter_map(|l| {
                    let mut w = l.splitn(3, ' ');
                    let (n, v) = (w.next()?, w.next()?);
                    Some((n.to_owned(), (v == "ok", w.next().unwrap_or("").to_owned())))
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "{name}/{container} printed no DONE within 120 s:\n{}",
        logs(api, name, container).await
    );
}

/// The probe helpers: `check NAME "COMMAND"` and `req PATH ADDR PORT` (an HTTP request
/// by `nc`, as a command string).
const PROBES_HEAD: &str = r#"check() { n=$1; shift; if out=$(timeout 8 sh -c "$*" 2>&1); then echo "RESULT $n ok $(echo $out | head -c 160)"; else echo "RESULT $n fail $? $(echo $out | head -c 160)"; fi; }
req() { echo "printf 'GET /$1 HTTP/1.0\r\n\r\n' | nc -w 3 $2 $3"; }"#;

/// The probes, in busybox sh: each bounded by `timeout`, one `RESULT` line each.
const PROBES: &str = r#"
check sidecar "$(req from-agent $SIDECAR 3128)"
check sidecar-unlisted-port "$(req unlisted $SIDECAR 8080)"
check other-pod "$(req other $OPEN 7000)"
check api-service "$(req api 10.96.0.1 443)"
check kubelet "$(req kubelet $NODE 10250)"
check metadata "$(req metadata 169.254.169.254 80)"
check outside "$(req outside 1.1.1.1 443)"
# A datagram that reaches the other pod comes back as ICMP port unreachable.
check udp-other-pod "nslookup example.com $OPEN 2>&1 | grep 'Connection refused'"
check dns-out "nslookup example.com $OPEN"
check dns-pod "nslookup example.com"
check token "test -e /var/run/secrets/kubernetes.io/serviceaccount/token"
check undo "/bottle sidecar netlock $OPEN:7000"
check other-pod-after-undo "$(req other $OPEN 7000)"
check id "id -u"
echo DONE
"#;

/// The script of an agent (or the unlocked control): probes, then a listener on 7000.
fn agent_script(sidecar: &str, open: &str, node: &str) -> String {
    format!(
        "SIDECAR={sidecar} OPEN={open} NODE={node}\n{PROBES_HEAD}\n{PROBES}\nexec /testkit health --listen 0.0.0.0:7000"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_pod_reaches_its_sidecar_and_nothing_else_under_runc_and_runsc() {
    let (kubeconfig, registry, started) = cluster_up();
    let cluster = common::connect(kubeconfig).await;
    let image = push_image(&registry);
    let project = format!("netlock{}", std::process::id());
    let ns = cluster.ensure_namespace(&project).await.expect("namespace");
    let pods: Api<Pod> = Api::namespaced(cluster.client().clone(), &ns);
    let create = |pod: Pod| {
        let (cluster, ns, project) = (&cluster, &ns, &project);
        async move { cluster.create(ns, project, &pod).await.expect("create pod") }
    };

    create(labelled(
        plain_pod(
            "sidecar",
            &image,
            "/testkit health --listen 0.0.0.0:8080 & exec /testkit health --listen 0.0.0.0:3128",
        ),
        &project,
        "b",
        "egress",
    ))
    .await;
    let sidecar = ip_of(&pods, "sidecar").await;
    create(labelled(
        plain_pod("open", &image, "exec /testkit health --listen 0.0.0.0:7000"),
        &project,
        "b",
        "other",
    ))
    .await;
    let open = ip_of(&pods, "open").await;
    // The node's address as pods see it: the pod network's first address.
    let node = {
        let mut o: Vec<u8> = sidecar.split('.').filter_map(|x| x.parse().ok()).collect();
        o[3] = 1;
        format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])
    };

    // The control: the same probes from a pod without netlock.
    create(labelled(
        plain_pod("control", &image, &agent_script(&sidecar, &open, &node)),
        &project,
        "b",
        "control",
    ))
    .await;
    let control = results(&pods, "control", "main").await;
    eprintln!("control (unlocked): {control:#?}");
    assert!(
        control["sidecar"].0 && control["sidecar"].1.contains("ok health"),
        "{control:?}"
    );
    assert!(control["sidecar-unlisted-port"].0, "{control:?}");
    assert!(
        control["other-pod"].0,
        "unlocked, another pod answers: {control:?}"
    );
    assert!(
        control["udp-other-pod"].0,
        "unlocked, a datagram leaves: {control:?}"
    );

    // Under runc the pod locks itself. Under runsc the node's CNI plugin locks it when
    // the RuntimeClass says its nodes chain the plugin (as the backend reads it), and
    // `netlock --verify` proves it; a runsc pod the plugin does not lock (its annotation
    // taken away: what a node without the plugin does) must fail closed.
    let runtimes: Api<RuntimeClass> = Api::all(cluster.client().clone());
    let mut runs = vec![Run {
        tag: "runc",
        runtime: None,
        lock_expected: true,
        unannotated: false,
    }];
    if let Some(rc) = runtimes.get_opt("runsc").await.expect("runtime classes") {
        let plugin = bottle_kube::pod::locked_by_node(&rc.metadata);
        eprintln!("RuntimeClass runsc; the node's netlock plugin: {plugin}");
        runs.push(Run {
            tag: "runsc",
            runtime: Some("runsc"),
            lock_expected: plugin,
            unannotated: false,
        });
        runs.push(Run {
            tag: "runsc-unlocked",
            runtime: Some("runsc"),
            lock_expected: false,
            unannotated: true,
        });
    }
    for Run {
        tag,
        runtime,
        lock_expected,
        unannotated,
    } in runs
    {
        let name = format!("agent-{tag}");
        let spec = AgentPod {
            name: name.clone(),
            labels: labels::object_labels(&project, tag, "agent", "0123456789abcdef", ""),
            image: image.clone(),
            sidecar_image: image.clone(),
            command: vec![
                "sh".into(),
                "-c".into(),
                agent_script(&sidecar, &open, &node),
            ],
            endpoints: vec![Endpoint {
                host: "egress".into(),
                addr: format!("{sidecar}:3128").parse().expect("endpoint"),
            }],
            runtime_class: runtime.map(str::to_owned),
            memory: Some("128Mi".into()),
        };
        let mut pod = agent_pod(&spec);
        if unannotated && let Some(a) = pod.metadata.annotations.as_mut() {
            a.remove(bottle_kube::pod::LOCK_ANNOTATION);
        }
        create(pod).await;
        let agent_ip = match settle(&pods, &name).await {
            Settled::Running(ip) => {
                assert!(lock_expected, "{name}: runs although nothing locked it");
                ip
            }
            Settled::Stuck(phase) if runtime.is_some() => {
                // The lock may be in force, but the agent never starts: closed, not run.
                assert!(
                    !lock_expected,
                    "{name}: stays initializing ({phase}) although it should run"
                );
                eprintln!("{name}: stays initializing, the agent never started ({phase})");
                continue;
            }
            Settled::Stuck(phase) => panic!("{name}: stays initializing under runc ({phase})"),
            Settled::Refused(log) => {
                // Fails closed: the agent never started, so nothing of it reached anyone.
                assert!(
                    !lock_expected,
                    "{name}: netlock failed although it should lock: {log}"
                );
                let status = pods
                    .get(&name)
                    .await
                    .expect("pod")
                    .status
                    .unwrap_or_default();
                let agent = status
                    .container_statuses
                    .iter()
                    .flatten()
                    .find(|c| c.name == "agent")
                    .expect("agent status");
                assert!(
                    agent.state.as_ref().is_some_and(|s| s.waiting.is_some())
                        && agent.started != Some(true),
                    "{name}: the agent started although netlock failed: {agent:?}"
                );
                assert!(logs(&pods, &name, "agent").await.is_empty());
                eprintln!("{name}: netlock refused, the agent never started (fails closed): {log}");
                continue;
            }
        };
        let got = results(&pods, &name, "agent").await;
        eprintln!("{name}: {got:#?}");
        let ok = |k: &str| got.get(k).unwrap_or_else(|| panic!("no {k} in {got:?}")).0;
        assert!(
            ok("sidecar") && got["sidecar"].1.contains("ok health"),
            "{name}: the sidecar answers: {got:?}"
        );
        for k in [
            "sidecar-unlisted-port",
            "other-pod",
            "api-service",
            "kubelet",
            "metadata",
            "outside",
            "udp-other-pod",
            "dns-out",
            "dns-pod",
            "token",
            "undo",
            "other-pod-after-undo",
        ] {
            assert!(!ok(k), "{name}: {k} must fail: {:?}", got[k]);
        }
        assert_eq!(
            got["id"].1.trim(),
            "1000",
            "{name}: the agent runs as uid 1000"
        );
        let done = common::init_exit(&pods.get(&name).await.expect("pod"), "netlock");
        assert_eq!(
            done,
            Some(0),
            "{name}: netlock exited 0 before the agent started"
        );

        // The sidecar wrote down the agent's request on 3128, and nothing on 8080 from it.
        let seen = logs(&pods, "sidecar", "main").await;
        assert!(
            seen.lines()
                .any(|l| l.contains(&format!("health: {agent_ip}:"))
                    && l.contains("GET /from-agent")),
            "{name}: the sidecar saw nothing from the agent:\n{seen}"
        );
        assert!(
            !seen.lines().any(|l| l.contains(&format!("health: {agent_ip}:")) && l.contains("GET /unlisted")),
            "{name}: the unlisted port was reached:\n{seen}"
        );
        assert!(
            !logs(&pods, "open", "main")
                .await
                .contains(&format!("health: {agent_ip}:")),
            "{name}: the other pod heard from the agent"
        );

        // Nothing connects in: a prober reaches the open pod's listener, not the agent's.
        let prober = format!("prober-{tag}");
        let script = format!(
            "{PROBES_HEAD}\ncheck agent \"$(req in {agent_ip} 7000)\"\ncheck open \"$(req in {open} 7000)\"\necho DONE\nexec sleep 600"
        );
        create(labelled(
            plain_pod(&prober, &image, &script),
            &project,
            "b",
            "prober",
        ))
        .await;
        let inward = results(&pods, &prober, "main").await;
        assert!(
            inward["open"].0,
            "{name}: the control listener answers: {inward:?}"
        );
        assert!(
            !inward["agent"].0,
            "{name}: a connection in to the agent succeeded: {inward:?}"
        );
        assert!(
            !logs(&pods, &name, "agent").await.contains("GET /in"),
            "{name}: the agent's listener heard the prober"
        );
    }

    assert_eq!(
        cluster.delete_namespace(&project).await.expect("rm ns"),
        bottle_kube::Deleted::Deleted
    );
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    down_if_started(started);
}
