//! Issue 2 acceptance: the declarative core against the real engine.

use crate::util::*;

/// Three bottles: a plain one, one with supervise, one with a git remote.
fn three(p: &Project, env_value: &str) -> std::path::PathBuf {
    std::fs::write(p.path("deploy_key"), "not a real key\n").expect("key");
    p.manifest(&format!(
        r#"
bottles:
  plain:
    image: {{dockerfile: Dockerfile}}
    resources: {{cpus: 0.5, memory: 256m, pids: 128}}
    env: {{MODE: "{env_value}"}}
  sup:
    image: {{dockerfile: Dockerfile}}
    supervise: true
  gated:
    image: {{dockerfile: Dockerfile}}
    git:
      - name: origin
        upstream: ssh://git@git.example.test/acme/app.git
        identity_file: deploy_key
        known_host_key: "git.example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
agents:
  a: {{bottle: plain}}
  b: {{bottle: sup}}
  c: {{bottle: gated}}
"#
    ))
}

#[test]
fn apply_creates_every_node_then_diff_is_clean_and_reapply_is_silent() {
    let p = Project::new("core");
    let m = three(&p, "one");
    let m = m.to_str().expect("utf-8 path");
    p.bottle(&["apply", "-f", m]).expect(0);

    let containers = p.objects("container");
    let mut want = Vec::new();
    for (b, extra) in [
        ("a", None),
        ("b", Some("supervise")),
        ("c", Some("git-gate")),
    ] {
        for node in ["agent", "agent-net", "egress", "pipelock"]
            .into_iter()
            .chain(extra)
        {
            want.push(p.obj(b, node));
        }
    }
    want.sort();
    assert_eq!(containers, want);
    for c in &containers {
        assert_eq!(
            inspect(c, "{{.State.Running}}"),
            "true",
            "{c} is not running"
        );
    }
    let networks = p.objects("network");
    assert_eq!(networks.len(), 6, "{networks:?}");
    let volumes = p.objects("volume");
    assert_eq!(
        volumes.len(),
        23,
        "per bottle: two CA volumes, the pipelock config and its revision marker, the \
         egress config, the agent's home; for the bottle with supervise also its config, \
         that config's revision marker and its state; \
         for the bottle with a git remote also the gate's config and mirrors: {volumes:?}"
    );
    assert!(!p.objects("container").contains(&p.obj("a", "supervise")));

    p.bottle(&["diff", "-f", m]).expect(0);

    let since = engine_now();
    let again = p.bottle(&["apply", "-f", m]).expect(0);
    assert!(
        again.stdout.contains("0 created, 0 removed, 0 started"),
        "{}",
        again.stdout
    );
    let events = events_since(&since, &format!("bottle-{}-", p.name));
    assert!(
        events.is_empty(),
        "a second apply changed Docker: {events:?}"
    );
}

#[test]
fn env_change_recreates_one_agent_and_diff_names_the_field() {
    let p = Project::new("env");
    let m = three(&p, "one");
    let m = m.to_str().expect("utf-8 path");
    p.bottle(&["apply", "-f", m]).expect(0);
    let ids = |p: &Project| -> Vec<(String, String)> {
        p.objects("container")
            .into_iter()
            .map(|c| {
                let id = inspect(&c, "{{.Id}}");
                (c, id)
            })
            .collect()
    };
    let before = ids(&p);

    three(&p, "two");
    let d = p.bottle(&["diff", "-f", m]).expect(1);
    assert!(d.stdout.contains(&p.obj("a", "agent")), "{}", d.stdout);
    assert!(d.stdout.contains("env changed"), "{}", d.stdout);
    assert_eq!(
        d.stdout.lines().filter(|l| l.contains("recreate")).count(),
        1,
        "{}",
        d.stdout
    );

    p.bottle(&["apply", "-f", m]).expect(0);
    let after = ids(&p);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        if *name == p.obj("a", "agent") {
            assert_ne!(a, b, "{name} was not recreated");
        } else {
            assert_eq!(a, b, "{name} was recreated");
        }
    }
    let env = inspect(&p.obj("a", "agent"), "{{json .Config.Env}}");
    assert!(env.contains("MODE=two"), "{env}");
    p.bottle(&["diff", "-f", m]).expect(0);
}

#[test]
fn removing_an_agent_deletes_exactly_its_objects() {
    let p = Project::new("gc");
    let other = Project::new("gco");
    let body = "bottles:\n  dev: {image: {dockerfile: Dockerfile}}\nagents:\n  x: {bottle: dev}\n  y: {bottle: dev}\n";
    let m = p.manifest(body);
    let m = m.to_str().expect("utf-8 path");
    p.bottle(&["apply", "-f", m]).expect(0);
    let om = other.manifest(
        "bottles:\n  dev: {image: {dockerfile: Dockerfile}}\nagents:\n  x: {bottle: dev}\n",
    );
    other
        .bottle(&["apply", "-f", om.to_str().expect("utf-8")])
        .expect(0);
    // Not ours: named like ours, but without labels.
    let impostor = format!("bottle-{}-y-net-lookalike", p.name);
    docker(&["network", "create", &impostor]);

    p.manifest("bottles:\n  dev: {image: {dockerfile: Dockerfile}}\nagents:\n  x: {bottle: dev}\n");
    // --prune=false leaves the orphans; diff still shows them.
    p.bottle(&["apply", "-f", m, "--prune=false"]).expect(0);
    assert!(p.objects("container").contains(&p.obj("y", "agent")));
    let d = p.bottle(&["diff", "-f", m]).expect(1);
    assert!(d.stdout.contains("delete"), "{}", d.stdout);
    let out = p.bottle(&["apply", "-f", m]).expect(0);
    let ys = format!("bottle-{}-y-", p.name);
    for kind in ["container", "network", "volume"] {
        let left = p.objects(kind);
        assert!(
            left.iter().all(|n| !n.starts_with(&ys)),
            "{kind}s of y left: {left:?}"
        );
        assert!(
            left.iter()
                .any(|n| n.starts_with(&format!("bottle-{}-x-", p.name)))
        );
    }
    assert!(out.stderr.contains("remove"), "{}", out.stderr);
    assert_eq!(
        inspect(&impostor, "{{.Name}}"),
        impostor,
        "unlabelled network removed"
    );
    assert_eq!(
        other.objects("container").len(),
        4,
        "the other project was touched"
    );
    docker(&["network", "rm", &impostor]);
}

#[test]
fn a_removed_sidecar_is_named_by_diff_and_recreated_alone() {
    let p = Project::new("rm");
    let m = p.manifest(
        "bottles:\n  dev: {image: {dockerfile: Dockerfile}}\nagents:\n  x: {bottle: dev}\n",
    );
    let m = m.to_str().expect("utf-8 path");
    p.bottle(&["apply", "-f", m]).expect(0);
    let agent_id = inspect(&p.obj("x", "agent"), "{{.Id}}");
    let egress_id = inspect(&p.obj("x", "egress"), "{{.Id}}");
    docker(&["rm", "-f", &p.obj("x", "pipelock")]);

    let d = p.bottle(&["diff", "-f", m]).expect(1);
    assert!(d.stdout.contains(&p.obj("x", "pipelock")), "{}", d.stdout);
    assert_eq!(
        d.stdout
            .lines()
            .filter(|l| l.trim_start().starts_with('+'))
            .count(),
        1
    );

    let out = p.bottle(&["apply", "-f", m]).expect(0);
    assert!(
        out.stdout.contains("1 created, 0 removed"),
        "{}",
        out.stdout
    );
    assert_eq!(
        inspect(&p.obj("x", "pipelock"), "{{.State.Running}}"),
        "true"
    );
    assert_eq!(inspect(&p.obj("x", "agent"), "{{.Id}}"), agent_id);
    assert_eq!(inspect(&p.obj("x", "egress"), "{{.Id}}"), egress_id);
}

#[test]
fn five_mistakes_are_all_reported_and_docker_is_never_called() {
    let p = Project::new("bad");
    let m = p.manifest(
        r#"bottles:
  dev:
    image: {dockerfile: Dockerfile}
    runtime: kata
    resources: {cpus: lots}
    colour: blue
agents:
  x: {bottle: nope}
  y:
    bottle: dev
    prompt: hi
  z:
    bottle: dev
bottlez: {}
"#,
    );
    let since = engine_now();
    // An unreachable engine proves no Docker call is even attempted.
    let out = p
        .bottle_env(
            &["apply", "-f", m.to_str().expect("utf-8")],
            &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
        )
        .expect(2);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("bottles.yaml:"))
        .collect();
    assert_eq!(lines.len(), 5, "{}", out.stderr);
    for (needle, line) in [
        ("runtime", 5),
        ("cpus", 6),
        ("colour", 7),
        ("nope", 9),
        ("bottlez", 15),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(needle) && l.contains(&format!("bottles.yaml:{line}:"))),
            "no problem about {needle} at line {line}: {lines:#?}"
        );
    }
    assert!(!out.stderr.contains("Docker engine"), "{}", out.stderr);
    assert!(events_since(&since, &p.name).is_empty());
}

#[test]
fn an_agent_is_hardened_and_on_its_internal_network_only() {
    let p = Project::new("hard");
    let m = p.manifest(
        "bottles:\n  dev:\n    image: {dockerfile: Dockerfile}\n    resources: {cpus: 1.5, memory: 512m, pids: 200}\nagents:\n  x: {bottle: dev}\n",
    );
    p.bottle(&["apply", "-f", m.to_str().expect("utf-8")])
        .expect(0);
    let agent = p.obj("x", "agent");
    // No network of its own: it shares agent-net's namespace, which is on
    // net-internal only.
    let networks = |c: &str| {
        inspect(
            c,
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        )
    };
    let holder = p.obj("x", "agent-net");
    assert_eq!(networks(&agent).trim(), "");
    assert_eq!(
        inspect(&agent, "{{.HostConfig.NetworkMode}}"),
        format!("container:{}", inspect(&holder, "{{.Id}}"))
    );
    assert_eq!(networks(&holder).trim(), p.obj("x", "net-internal"));
    assert_eq!(
        inspect(&p.obj("x", "net-internal"), "{{.Internal}}"),
        "true"
    );
    assert_eq!(inspect(&agent, "{{json .HostConfig.CapDrop}}"), "[\"ALL\"]");
    assert!(inspect(&agent, "{{json .HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    assert_eq!(inspect(&agent, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(
        inspect(&agent, "{{.HostConfig.Memory}}"),
        (512u64 << 20).to_string()
    );
    assert_eq!(inspect(&agent, "{{.HostConfig.NanoCpus}}"), "1500000000");
    assert_eq!(inspect(&agent, "{{.HostConfig.PidsLimit}}"), "200");
    let uid = docker(&["exec", &agent, "id", "-u"]);
    assert_ne!(uid.trim(), "0");
    // The CA key is in no mount of the agent; the certificate is.
    // (`test`, not `ls`: this machine's gVisor build fails statx with EINVAL.)
    let key = docker_try(&[
        "exec",
        &agent,
        "sh",
        "-c",
        "test -s /etc/bottle/ca/ca.crt && echo CERT; test -e /etc/bottle/ca/ca.key && echo KEY; true",
    ]);
    assert!(key.contains("CERT") && !key.contains("KEY"), "{key}");
    // Sidecars are hardened too.
    for s in ["egress", "pipelock", "agent-net"] {
        let c = p.obj("x", s);
        assert_eq!(inspect(&c, "{{json .HostConfig.CapDrop}}"), "[\"ALL\"]");
        assert_eq!(inspect(&c, "{{.HostConfig.ReadonlyRootfs}}"), "true");
        assert_ne!(inspect(&c, "{{.HostConfig.Memory}}"), "0");
        // pipelock starts as root to take net-internal's gateway, agent-net to set up
        // the agent's route; both then run as the sidecar user with no capability
        // left, like the others.
        let user = if s != "egress" { "0:0" } else { "65534:65534" };
        assert_eq!(inspect(&c, "{{.Config.User}}"), user);
        let pid = inspect(&c, "{{.State.Pid}}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        for (field, want) in [("Uid:", "65534"), ("CapEff:", "0000000000000000")] {
            let line = status
                .lines()
                .find(|l| l.starts_with(field))
                .unwrap_or_default();
            assert!(
                line.split_whitespace().skip(1).all(|v| v == want),
                "{s}: {line}"
            );
        }
    }
    assert_eq!(
        inspect(
            &p.obj("x", "net-internal"),
            "{{index .Options \"com.docker.network.bridge.inhibit_ipv4\"}}"
        ),
        "true"
    );
}

#[test]
fn an_agent_cannot_reach_the_bridge_or_resolve_names() {
    let p = Project::new("leak");
    let m = p.manifest(
        "bottles:\n  dev: {image: {dockerfile: Dockerfile}}\nagents:\n  x: {bottle: dev}\n",
    );
    p.bottle(&["apply", "-f", m.to_str().expect("utf-8")])
        .expect(0);
    // A listener on the default bridge: the test servers' plain listener.
    let target = format!("{}-bridge-target", p.name);
    let image = crate::util::testkit_image();
    docker(&[
        "run",
        "-d",
        "--name",
        &target,
        &image,
        "health",
        "--listen",
        "0.0.0.0:8080",
    ]);
    let ip = inspect(&target, "{{.NetworkSettings.IPAddress}}");
    assert!(!ip.is_empty());
    let probe =
        format!("timeout 5 bash -c 'echo > /dev/tcp/{ip}/8080' && echo REACHED || echo BLOCKED");
    // Control: from the bridge, the listener answers.
    let control = docker(&["run", "--rm", "debian:bookworm-slim", "bash", "-c", &probe]);
    let agent = p.obj("x", "agent");
    let from_agent = docker_try(&["exec", &agent, "bash", "-c", &probe]);
    let resolve = docker_try(&[
        "exec",
        &agent,
        "bash",
        "-c",
        "getent hosts deb.debian.org && echo RESOLVED || echo NXDOMAIN",
    ]);
    docker_try(&["rm", "-f", &target]);
    assert!(control.contains("REACHED"), "control failed: {control}");
    assert!(
        from_agent.contains("BLOCKED"),
        "agent reached the bridge: {from_agent}"
    );
    assert!(
        resolve.contains("NXDOMAIN"),
        "agent resolved an external name: {resolve}"
    );
    // Its own sidecars are reachable by name.
    let own = docker_try(&[
        "exec",
        &agent,
        "bash",
        "-c",
        "timeout 5 bash -c 'echo > /dev/tcp/egress/3128' && echo REACHED",
    ]);
    assert!(
        own.contains("REACHED"),
        "agent cannot reach its egress sidecar: {own}"
    );
}

#[test]
fn delete_leaves_nothing_labelled() {
    let p = Project::new("del");
    let m = p.manifest("bottles:\n  dev: {image: {dockerfile: Dockerfile}, supervise: true}\nagents:\n  x: {bottle: dev}\n");
    let m = m.to_str().expect("utf-8 path");
    p.bottle(&["apply", "-f", m]).expect(0);
    let g = p.bottle(&["get", "-f", m, "-o", "json"]).expect(0);
    assert!(g.stdout.contains("\"bottle\":\"x\""), "{}", g.stdout);
    p.bottle(&["delete", "-f", m]).expect(0);
    for kind in ["container", "network", "volume"] {
        assert!(
            p.objects(kind).is_empty(),
            "{kind}s left: {:?}",
            p.objects(kind)
        );
    }
    // Deleting again is a no-op.
    p.bottle(&["delete", "-f", m]).expect(0);
}

/// Issue 17: listing and removing bottles needs their names, not their secrets.
#[test]
fn get_audit_and_delete_work_without_the_secrets() {
    let p = Project::new("nosec");
    let var = format!("BOTTLE_TEST_NOSECRET_{}", p.name.to_uppercase());
    let m = p.manifest(&format!(
        "bottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n    env: {{TOKEN: {{from_env: {var}}}}}\nagents:\n  x: {{bottle: dev}}\n"
    ));
    let m = m.to_str().expect("utf-8 path");
    p.bottle_env(&["apply", "-f", m], &[(&var, "value")])
        .expect(0);
    // Without the variable: diff still refuses, located.
    let d = p.bottle(&["diff", "-f", m]).expect(2);
    assert!(
        d.stderr
            .contains(&format!("host environment variable `{var}` is not set"))
            && d.stderr
                .contains("bottles.yaml:5:29: bottles.dev.env.TOKEN.from_env"),
        "{}",
        d.stderr
    );
    // get, audit and delete need only the names.
    let g = p.bottle(&["get", "-f", m, "-o", "json"]).expect(0);
    assert!(g.stdout.contains("\"bottle\":\"x\""), "{}", g.stdout);
    p.bottle(&["audit", "--file", m, "-o", "json"]).expect(0);
    p.bottle(&["delete", "-f", m]).expect(0);
    for kind in ["container", "network", "volume"] {
        assert!(
            p.objects(kind).is_empty(),
            "{kind}s left: {:?}",
            p.objects(kind)
        );
    }
}

/// Issue 21: the `bottle` of a plain `cargo build` (dynamically linked) applies with no
/// static binary anywhere: the sidecar image takes its loader and libraries.
#[test]
fn a_dynamically_linked_bottle_makes_its_own_sidecar_image() {
    let p = Project::new("dyn");
    let m = p.manifest("bottles:\n  dev: {image: {dockerfile: Dockerfile}, supervise: true}\nagents:\n  x: {bottle: dev}\n");
    let m = m.to_str().expect("utf-8 path");
    // An empty BOTTLE_SIDECAR_BINARY is unset: the test's `bottle` (a debug build) is used.
    let unset = [("BOTTLE_SIDECAR_BINARY", "")];
    let applied = p.bottle_env(&["apply", "-f", m], &unset).expect(0);
    for node in ["pipelock", "egress", "supervise", "agent-net"] {
        let name = p.obj("x", node);
        assert!(
            applied.stderr.contains(&format!("ready   {name}")),
            "{name} not ready: {}",
            applied.stderr
        );
    }
    let image = inspect(&p.obj("x", "pipelock"), "{{.Config.Image}}");
    let help = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bottle",
        &image,
        "sidecar",
        "--help",
    ]);
    assert!(help.contains("egress"), "{help}");
    assert!(
        inspect(&image, "{{.Config.Env}}").contains("LD_LIBRARY_PATH=/usr/lib/bottle"),
        "{image}"
    );
    p.bottle_env(&["diff", "-f", m], &unset).expect(0);
    p.bottle_env(&["delete", "-f", m], &unset).expect(0);
    docker_try(&["rmi", &image]);
}
