//! Unit tests of the spec -> object mapping (no cluster).

use super::*;
use bottle_engine::VolumeFile;

fn labels_of(node: &str) -> Labels {
    labels::object_labels(
        "p",
        "b",
        node,
        "0123456789abcdef",
        "cmd=0123456789ab,env=0123456789ab,image=0123456789ab,mounts=0123456789ab,networks=0123456789ab",
    )
}

fn sidecar(node: &str, port: u16) -> ContainerSpec {
    ContainerSpec {
        name: format!("bottle-p-b-{node}"),
        image: "bottle-sidecar:abc".into(),
        labels: labels_of(node),
        cmd: vec!["sidecar".into(), node.into()],
        env: vec![
            format!("BOTTLE_LISTEN=0.0.0.0:{port}"),
            "TOKEN=s3cr3t".into(),
        ],
        user: "65534:65534".into(),
        networks: vec!["bottle-p-b-net-internal".into()],
        aliases: vec![node.into()],
        mounts: vec![
            Mount::Tmpfs {
                target: "/tmp".into(),
                size_bytes: 16 << 20,
            },
            Mount::Volume {
                name: "bottle-p-b-ca".into(),
                target: "/etc/bottle/ca".into(),
                read_only: true,
            },
        ],
        cap_add: vec![],
        memory: 256 << 20,
        nano_cpus: 500_000_000,
        pids: 256,
        runtime: None,
        working_dir: None,
        init: false,
        sysctls: [("net.ipv4.ip_forward".to_string(), "0".to_string())].into(),
        dns_gateway_of: None,
        network_of: None,
        devices: vec![],
        probe: None,
    }
}

fn ca_backing() -> BTreeMap<String, Backing> {
    let s = volume_secret(&VolumeSpec {
        name: "bottle-p-b-ca".into(),
        labels: labels_of("ca"),
        files: vec![VolumeFile {
            path: "ca.key".into(),
            contents: b"KEY".to_vec(),
            mode: 0o400,
            uid: 65534,
            gid: 65534,
        }],
        seed_dirs: vec![],
        owner: None,
        seed_image: "x".into(),
    });
    BTreeMap::from([(
        "bottle-p-b-ca".to_string(),
        Backing::Files(secret_items(&s)),
    )])
}

fn agent_net() -> ContainerSpec {
    let mut s = sidecar("agent-net", 0);
    s.env.clear();
    s.user = "0:0".into();
    s.cap_add = vec!["NET_ADMIN".into()];
    s.devices = vec!["/dev/net/tun".into()];
    s.mounts.truncate(1);
    s
}

fn agent() -> ContainerSpec {
    let mut s = sidecar("agent", 0);
    s.image = "bottle-p-agent:123".into();
    s.user = "1000:1000".into();
    s.networks.clear();
    s.aliases.clear();
    s.mounts = vec![Mount::Volume {
        name: "bottle-p-b-home".into(),
        target: "/home/node".into(),
        read_only: false,
    }];
    s.network_of = Some("bottle-p-b-agent-net".into());
    s.cmd = vec!["sleep".into(), "infinity".into()];
    s.env = vec!["API_KEY=hunter2".into()];
    s
}

#[test]
fn long_and_odd_label_values_become_annotations_and_read_back_whole() {
    let l = labels_of("egress");
    let (k8s, ann) = split_labels(&l);
    assert_eq!(
        k8s.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            labels::BOTTLE,
            labels::MANAGED,
            labels::NODE,
            labels::PROJECT,
            labels::SPEC_HASH
        ]
    );
    assert!(k8s.values().all(|v| valid_label_value(v)));
    assert!(ann.contains_key(labels::SPEC_FIELDS));
    let cm = network_marker(&NetworkSpec {
        name: "bottle-p-b-net-internal".into(),
        labels: l.clone(),
        internal: true,
        options: BTreeMap::new(),
        subnet: None,
    });
    assert!(labels::is_ours(
        cm.metadata.labels.as_ref().expect("labels"),
        "p"
    ));
    let info = network_info(&cm);
    assert_eq!(info.labels, l);
    assert!(info.internal);
    assert!(!valid_label_value(&"a".repeat(64)));
    assert!(!valid_label_value("a=b,c"));
    assert!(!valid_label_value("-a"));
    assert!(valid_label_value(""));
}

#[test]
fn a_files_volume_is_a_secret_with_paths_and_modes_out_of_its_data_keys() {
    let spec = VolumeSpec {
        name: "bottle-p-b-egress-config".into(),
        labels: labels_of("egress"),
        files: vec![VolumeFile {
            path: "dir/config.json".into(),
            contents: b"{}".to_vec(),
            mode: 0o444,
            uid: 0,
            gid: 0,
        }],
        seed_dirs: vec![],
        owner: None,
        seed_image: "x".into(),
    };
    assert!(!is_claim(&spec));
    let s = volume_secret(&spec);
    assert_eq!(
        s.data.as_ref().expect("data").keys().collect::<Vec<_>>(),
        ["f0"]
    );
    assert_eq!(
        secret_items(&s),
        [FileItem {
            key: "f0".into(),
            path: "dir/config.json".into(),
            mode: 0o444,
            uid: 0
        }]
    );
    assert_eq!(volume_info(&s.metadata).labels, spec.labels);
    let home = VolumeSpec {
        owner: Some((1000, 1000)),
        files: vec![],
        ..spec
    };
    assert!(is_claim(&home));
    let c = volume_claim(&home, None, "1Gi");
    assert_eq!(c.metadata.labels.as_ref().expect("labels")[OBJECT], VOLUME);
}

#[test]
fn a_sidecar_pod_is_hardened_keeps_its_environment_out_of_the_spec_and_names_its_peers() {
    let spec = sidecar("egress", 3128);
    let peers = [Peer {
        ip: Ipv4Addr::new(10, 88, 0, 5),
        records: vec![record(&sidecar("pipelock", 8888))],
    }];
    let p = render_pod(&spec, "127.0.0.1:5000", &ca_backing(), &peers).expect("pod");
    // A rewrite of its Secret nudges it (and only the pods that mount that Secret).
    assert_eq!(
        mounting(std::slice::from_ref(&p), "bottle-p-b-ca"),
        [p.metadata.name.clone().expect("name")]
    );
    assert!(mounting(std::slice::from_ref(&p), "bottle-p-b-other").is_empty());
    let shown = serde_json::to_string(&p).expect("json");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    let s = p.spec.as_ref().expect("spec");
    let [c] = &s.containers[..] else {
        panic!("one container")
    };
    assert_eq!(c.name, "egress");
    assert_eq!(
        c.image.as_deref(),
        Some("127.0.0.1:5000/bottle-sidecar:abc")
    );
    assert_eq!(c.args.as_deref(), Some(&spec.cmd[..]));
    assert_eq!(c.env, None);
    assert_eq!(
        c.env_from.as_ref().expect("envFrom")[0]
            .secret_ref
            .as_ref()
            .expect("secret")
            .name,
        "bottle-p-b-egress-env"
    );
    let sc = c.security_context.as_ref().expect("sc");
    assert_eq!(sc.run_as_user, Some(65534));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(s.automount_service_account_token, Some(false));
    assert_eq!(s.enable_service_links, Some(false));
    assert_eq!(s.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        s.host_aliases.as_ref().expect("aliases")[0].hostnames,
        Some(vec!["pipelock".to_string()])
    );
    // The CA key (uid 65534, 0400) is readable by the pod's group, the sidecar's.
    let key = s
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.secret.as_ref())
        .and_then(|sv| sv.items.as_ref())
        .expect("items");
    assert_eq!(key[0].mode, Some(0o440));
    assert_eq!(
        s.security_context.as_ref().and_then(|c| c.fs_group),
        Some(65534)
    );
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .all(|m| m.mount_path != "/etc/bottle/ca" || m.read_only == Some(true))
    );
    // Read back: the seam's name, labels and networks.
    let [info] = &container_infos(&p, &[])[..] else {
        panic!("one info")
    };
    assert_eq!(info.name, spec.name);
    assert_eq!(info.labels, spec.labels);
    assert_eq!(info.networks, spec.networks);
    assert_eq!(info.state, ContainerState::NotRunning);
    // The environment Secret holds the values, under the container's selecting labels.
    let env = env_secret(&env_secret_name(&spec.name), &spec);
    assert_eq!(
        env.data.as_ref().expect("data")["TOKEN"],
        ByteString(b"s3cr3t".to_vec())
    );
    assert!(labels::is_ours(
        env.metadata.labels.as_ref().expect("l"),
        "p"
    ));
}

#[test]
fn a_missing_volume_is_an_error_not_a_pod_without_it() {
    let err = render_pod(&sidecar("egress", 3128), "r", &BTreeMap::new(), &[]).unwrap_err();
    assert!(matches!(err, RenderError::MissingVolume { .. }), "{err}");
}

#[test]
fn the_agent_joins_its_holders_pod_locked_to_the_sidecars_and_leaves_it_again() {
    let holder = render_pod(&agent_net(), "reg", &BTreeMap::new(), &[]).expect("holder");
    let peers = [
        Peer {
            ip: Ipv4Addr::new(10, 88, 0, 5),
            records: vec![record(&sidecar("egress", 3128))],
        },
        Peer {
            ip: Ipv4Addr::new(10, 88, 0, 6),
            records: vec![record(&sidecar("pipelock", 8888))],
        },
    ];
    let backing = BTreeMap::from([("bottle-p-b-home".to_string(), Backing::Claim)]);
    let p = join_pod(&holder, &agent(), "reg", &backing, &peers).expect("joined");
    let shown = serde_json::to_string(&p).expect("json");
    assert!(!shown.contains("hunter2"), "{shown}");
    let s = p.spec.as_ref().expect("spec");
    let names: Vec<&str> = s.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["agent-net", "agent"]);
    let [init] = &s.init_containers.as_ref().expect("init")[..] else {
        panic!("one init container")
    };
    assert_eq!(init.name, pod::NETLOCK);
    // Only egress is an endpoint: pipelock is not the agent's to reach.
    assert_eq!(
        init.command.as_ref().expect("cmd")[3..],
        ["10.88.0.5:3128".to_string()]
    );
    assert_eq!(init.image.as_deref(), Some("reg/bottle-sidecar:abc"));
    assert_eq!(s.dns_policy.as_deref(), Some("None"));
    let aliases = s.host_aliases.as_ref().expect("aliases");
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].ip, "10.88.0.5");
    let agent_c = &s.containers[1];
    let sc = agent_c.security_context.as_ref().expect("sc");
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.clone()), None);
    assert_eq!(
        p.metadata.labels.as_ref().expect("labels")[labels::NODE],
        "agent"
    );
    assert_eq!(
        s.security_context.as_ref().and_then(|c| c.fs_group),
        Some(1000)
    );
    // The tun device is given by path, not by privilege.
    assert!(s.volumes.iter().flatten().any(|v| {
        v.host_path
            .as_ref()
            .is_some_and(|h| h.path == "/dev/net/tun" && h.type_.as_deref() == Some("CharDevice"))
    }));
    assert_eq!(container_infos(&p, &[]).len(), 2);
    // What `verify` reads: the agent mounts its home claim only (agent-net's tun and
    // tmpfs are no volume of the seam's), under the node's default runtime.
    assert_eq!(
        container_details(&p, "agent"),
        ("runc".to_string(), vec!["bottle-p-b-home".to_string()])
    );
    assert_eq!(container_details(&p, "agent-net").1, Vec::<String>::new());
    // egress made anew elsewhere: the agent is stale, agent-net (which does not depend
    // on egress) is not.
    let moved = [Peer {
        ip: Ipv4Addr::new(10, 88, 0, 9),
        records: vec![record(&sidecar("egress", 3128))],
    }];
    assert_eq!(stale(&p, &moved), ["bottle-p-b-agent".to_string()]);
    let again = refresh(&p, &moved);
    assert!(stale(&again, &moved).is_empty());
    let init = &again
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.clone())
        .expect("init")[0];
    assert_eq!(init.command.as_ref().expect("cmd")[3], "10.88.0.9:3128");
    // Removing the agent leaves agent-net's pod; removing the holder, nothing.
    let rest = strip_pod(&p, "bottle-p-b-agent")
        .expect("strip")
        .expect("pod");
    let rs = rest.spec.as_ref().expect("spec");
    assert_eq!(rs.containers.len(), 1);
    assert!(
        rest.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("net.bottle/bottle-p-b-net-internal")),
        "agent-net's pod stays on its network"
    );
    assert_eq!(rs.init_containers, None);
    assert_eq!(records(&rest).len(), 1);
    // The agent's claim goes with it: a pod that still named it would hold it.
    assert!(
        rs.volumes
            .iter()
            .flatten()
            .all(|v| v.persistent_volume_claim.is_none()),
        "{:?}",
        rs.volumes
    );
    assert!(
        strip_pod(&p, "bottle-p-b-agent-net")
            .expect("strip")
            .is_none()
    );
    assert!(strip_pod(&p, "nope").is_err());
}

#[test]
fn a_gvisor_agent_asks_the_node_for_its_lock_and_only_verifies_it() {
    let holder = render_pod(&agent_net(), "reg", &BTreeMap::new(), &[]).expect("holder");
    let peers = [Peer {
        ip: Ipv4Addr::new(10, 88, 0, 5),
        records: vec![record(&sidecar("egress", 3128))],
    }];
    let backing = BTreeMap::from([("bottle-p-b-home".to_string(), Backing::Claim)]);
    let mut a = agent();
    a.runtime = Some("runsc".into());
    let p = join_pod(&holder, &a, "reg", &backing, &peers).expect("joined");
    let lock = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(pod::LOCK_ANNOTATION).cloned())
    };
    assert_eq!(lock(&p).as_deref(), Some("10.88.0.5:3128"));
    let s = p.spec.as_ref().expect("spec");
    assert_eq!(s.runtime_class_name.as_deref(), Some("runsc"));
    let cmd = |p: &Pod| {
        p.spec
            .as_ref()
            .expect("spec")
            .init_containers
            .as_ref()
            .expect("init")[0]
            .command
            .clone()
            .expect("cmd")
    };
    assert_eq!(cmd(&p)[3..], ["--verify", "10.88.0.5:3128"]);
    // agent-net sets no trap under gVisor (no TUN device there; the node's lock holds).
    let trap = |p: &Pod| {
        let c = p.spec.as_ref().expect("spec").containers.iter();
        let net = c
            .clone()
            .find(|c| c.name == pod::AGENT_NET)
            .expect("agent-net");
        !net.args.iter().flatten().any(|a| a == pod::NO_TRAP)
    };
    assert!(trap(&holder));
    assert!(!trap(&p));
    assert!(trap(
        &join_pod(&holder, &agent(), "reg", &backing, &peers).expect("runc")
    ));
    // egress moved: the annotation follows, as the endpoints do.
    let moved = [Peer {
        ip: Ipv4Addr::new(10, 88, 0, 9),
        records: vec![record(&sidecar("egress", 3128))],
    }];
    let again = refresh(&p, &moved);
    assert_eq!(lock(&again).as_deref(), Some("10.88.0.9:3128"));
    assert_eq!(cmd(&again)[3..], ["--verify", "10.88.0.9:3128"]);
    assert!(!trap(&again));
    // agent-net's pod without the agent asks for nothing, and runs under the node's
    // default runtime again (the class was the agent's).
    let rest = strip_pod(&p, "bottle-p-b-agent")
        .expect("strip")
        .expect("pod");
    assert_eq!(lock(&rest), None);
    assert_eq!(rest.spec.as_ref().expect("spec").runtime_class_name, None);
    assert!(trap(&rest), "agent-net alone, under runc: its trap back");
}

#[test]
fn a_pod_names_only_what_it_depends_on_and_is_stale_once_that_moves() {
    let pipelock = Peer {
        ip: Ipv4Addr::new(10, 88, 0, 6),
        records: vec![record(&sidecar("pipelock", 8888))],
    };
    let egress_spec = sidecar("egress", 3128);
    let egress = render_pod(
        &egress_spec,
        "r",
        &ca_backing(),
        std::slice::from_ref(&pipelock),
    )
    .expect("pod");
    assert!(stale(&egress, std::slice::from_ref(&pipelock)).is_empty());
    // pipelock does not depend on egress: it is not given egress's name.
    let pl = render_pod(
        &sidecar("pipelock", 8888),
        "r",
        &ca_backing(),
        &[Peer {
            ip: Ipv4Addr::new(10, 88, 0, 7),
            records: vec![record(&egress_spec)],
        }],
    )
    .expect("pod");
    assert_eq!(
        pl.spec.as_ref().and_then(|s| s.host_aliases.clone()),
        Some(vec![])
    );
    // pipelock made anew elsewhere, or gone: egress is stale, and refreshed.
    let moved = Peer {
        ip: Ipv4Addr::new(10, 88, 0, 9),
        ..pipelock
    };
    assert_eq!(
        stale(&egress, std::slice::from_ref(&moved)),
        std::slice::from_ref(&egress_spec.name)
    );
    assert_eq!(stale(&egress, &[]).len(), 1);
    let again = refresh(&egress, std::slice::from_ref(&moved));
    assert!(stale(&again, &[moved]).is_empty());
    assert!(
        container_infos(&egress, std::slice::from_ref(&egress_spec.name))
            .iter()
            .all(|c| c.state == ContainerState::NotRunning)
    );
}

#[test]
fn pipelock_takes_no_gateway_in_a_pod_and_runs_unprivileged() {
    let mut spec = sidecar("pipelock", 8888);
    spec.env
        .push(format!("{}=1", bottle_contract::pipelock::GATEWAY_ENV));
    spec.user = "0:0".into();
    spec.cap_add = vec!["NET_ADMIN".into(), "SETUID".into()];
    let p = render_pod(&spec, "r", &ca_backing(), &[]).expect("pod");
    let c = &p.spec.as_ref().expect("spec").containers[0];
    let sc = c.security_context.as_ref().expect("sc");
    assert_eq!(sc.run_as_user, Some(65534));
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.clone()), None);
    let env = env_secret("e", &on_kubernetes(&spec));
    assert!(
        !env.data
            .expect("data")
            .contains_key(bottle_contract::pipelock::GATEWAY_ENV)
    );
    // The record keeps the seam's spec: the plan compares what it asked for.
    assert_eq!(records(&p)[0].labels, spec.labels);
}

#[test]
fn a_claim_is_seeded_by_a_helper_pod_from_a_secret_plan() {
    let home = VolumeSpec {
        name: "bottle-p-b-home".into(),
        labels: labels_of("agent"),
        files: vec![VolumeFile {
            path: "/.gitconfig".into(),
            contents: b"[user]".to_vec(),
            mode: 0o644,
            uid: 1000,
            gid: 1000,
        }],
        seed_dirs: vec![],
        owner: Some((1000, 1000)),
        seed_image: "bottle-sidecar:abc".into(),
    };
    assert!(home.has_content());
    let name = seed_name(&home.name);
    let s = seed_secret(&name, &home.labels, &[&home]);
    let data = s.data.as_ref().expect("data");
    assert_eq!(data["v0f0"], ByteString(b"[user]".to_vec()));
    let plan: Vec<bottle_contract::seed::SeedVolume> =
        serde_json::from_slice(&data["plan.json"].0).expect("plan");
    assert_eq!(plan[0].dir, "/volumes/0");
    assert_eq!(plan[0].owner, Some((1000, 1000)));
    assert_eq!(plan[0].files[0].path, ".gitconfig");
    let p = seed_pod(
        &name,
        &home.labels,
        "reg/bottle-sidecar:abc",
        &[&home],
        None,
    );
    assert!(labels::is_ours(p.metadata.labels.as_ref().expect("l"), "p"));
    // A container of the seam whose labels name the claims it seeds: found by a later
    // run, it means a seeding that did not finish (section 1.6).
    let infos = all_container_infos(std::slice::from_ref(&p));
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].name, name);
    assert!(labels::is_ours(&infos[0].labels, "p"));
    assert_eq!(
        labels::seeding(&infos[0].labels).collect::<Vec<_>>(),
        ["bottle-p-b-home"]
    );
    let c = &p.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        c.args.as_deref(),
        Some(&["sidecar".to_string(), "seed".to_string()][..])
    );
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .and_then(|c| c.add)
        .expect("caps");
    assert_eq!(caps, ["CHOWN", "FOWNER", "DAC_OVERRIDE"]);
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .all(|m| m.mount_path != "/spool")
    );
    // With host trees: a bounded spool, and the main process waits for them.
    let trees = Trees {
        bytes: 10 << 20,
        await_secs: 300,
    };
    let p = seed_pod(&name, &home.labels, "i", &[&home], Some(trees));
    let spec = p.spec.as_ref().expect("spec");
    assert_eq!(
        spec.containers[0].args.as_deref(),
        Some(&["sidecar", "seed", "--await-trees", "300"].map(String::from)[..])
    );
    let spool = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "spool")
        .and_then(|v| v.empty_dir.clone())
        .expect("spool");
    assert_eq!(spool.size_limit, Some(Quantity((11u64 << 20).to_string())));
    assert!(
        spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/spool" && m.read_only != Some(true))
    );
}

#[test]
fn each_network_is_a_policy_over_the_pods_labelled_as_its_members() {
    let spec = |name: &str, internal: bool| NetworkSpec {
        name: name.into(),
        labels: labels_of("net"),
        internal,
        options: Default::default(),
        subnet: None,
    };
    // The internal network: members talk to members, nothing else in or out.
    let inside = network_policy(&spec("bottle-p-b-net-internal", true));
    let s = inside.spec.as_ref().expect("spec");
    let member = BTreeMap::from([(
        "net.bottle/bottle-p-b-net-internal".to_string(),
        "member".to_string(),
    )]);
    assert_eq!(
        s.pod_selector.as_ref().and_then(|p| p.match_labels.clone()),
        Some(member.clone())
    );
    assert_eq!(
        s.policy_types.as_deref(),
        Some(&["Ingress".to_string(), "Egress".to_string()][..])
    );
    let from = &s.ingress.as_ref().expect("ingress")[0]
        .from
        .as_ref()
        .expect("from")[0];
    assert_eq!(
        from.pod_selector
            .as_ref()
            .and_then(|p| p.match_labels.clone()),
        Some(member)
    );
    assert_eq!(
        s.egress.as_ref().expect("egress").len(),
        1,
        "only to its members"
    );
    // The network with a route out also lets its members open connections anywhere.
    let out = network_policy(&spec("bottle-p-b-net-egress", false));
    let egress = out.spec.expect("spec").egress.expect("egress");
    assert_eq!(
        egress[1].to.as_ref().expect("to")[0]
            .ip_block
            .as_ref()
            .map(|b| b.cidr.as_str()),
        Some("0.0.0.0/0")
    );
    // A pod is labelled with the networks of its containers, whoever joins or leaves.
    let mut pipelock = sidecar("pipelock", 8888);
    pipelock.networks.push("bottle-p-b-net-egress".into());
    let p = render_pod(&pipelock, "r", &ca_backing(), &[]).expect("pod");
    let nets: Vec<&String> = p
        .metadata
        .labels
        .as_ref()
        .expect("labels")
        .keys()
        .filter(|k| k.starts_with(NET_PREFIX))
        .collect();
    assert_eq!(
        nets,
        [
            "net.bottle/bottle-p-b-net-egress",
            "net.bottle/bottle-p-b-net-internal"
        ]
    );
    // A name too long for a label's name keeps its start and a digest: stable, valid.
    let long = format!("bottle-{}-b-net-internal", "p".repeat(80));
    let l = net_label(&long);
    assert_eq!(l, net_label(&long));
    let name = l.strip_prefix(NET_PREFIX).expect("prefix");
    assert!(
        name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "{l}"
    );
    assert_ne!(net_label(&format!("{long}x")), l);
}
