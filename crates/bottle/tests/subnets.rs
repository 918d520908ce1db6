//! Issue 18: each network gets a /28 of bottle's own pool, so a project of many bottles
//! does not run the engine's default pools dry; two projects applied at once get
//! disjoint blocks; a full pool is an error naming the pool and the option.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

use crate::util::*;

/// A manifest of `n` agents sharing one cheap bottle (one image build for all; runc, as
/// the runtime is not what is tested and gVisor costs more per bottle).
fn many(p: &Project, n: usize) -> String {
    let mut body = String::from(
        "bottles:\n  plain:\n    image: {dockerfile: Dockerfile}\n    runtime: runc\n    resources: {cpus: 0.25, memory: 64m, pids: 64}\nagents:\n",
    );
    for i in 0..n {
        body.push_str(&format!("  a{i}: {{bottle: plain}}\n"));
    }
    p.manifest(&body).to_str().expect("utf-8 path").to_string()
}

/// Each of the project's networks with its IPAM subnet, checked against its
/// `bottle.subnet` label.
fn subnets(p: &Project) -> Vec<(String, Ipv4Net)> {
    p.objects("network")
        .into_iter()
        .map(|n| {
            let shown = inspect(
                &n,
                r#"{{range .IPAM.Config}}{{.Subnet}} {{end}}| {{index .Labels "bottle.subnet"}}"#,
            );
            let (ipam, label) = shown.split_once('|').expect("two fields");
            let ipam: Vec<&str> = ipam.split_whitespace().collect();
            assert_eq!(ipam, [label.trim()], "{n}: IPAM config and label differ");
            let subnet = ipam[0]
                .parse()
                .unwrap_or_else(|e| panic!("{n}: {shown}: {e}"));
            (n, subnet)
        })
        .collect()
}

/// Every subnet is a /28 of `pool`, and no two overlap.
fn assert_disjoint_in(pool: Ipv4Net, all: &[(String, Ipv4Net)]) {
    for (n, s) in all {
        assert!(
            pool.contains(s) && s.prefix_len() == 28,
            "{n}: {s} is not a /28 of {pool}"
        );
    }
    let distinct: BTreeSet<Ipv4Net> = all.iter().map(|(_, s)| *s).collect();
    assert_eq!(distinct.len(), all.len(), "a subnet given twice: {all:?}");
}

/// 20 bottles (40 networks, more than the engine's default pools hold) converge.
#[test]
fn twenty_bottles_converge_each_network_on_a_28_of_the_pool() {
    const N: usize = 20;
    let pool: Ipv4Net = "10.213.64.0/20".parse().expect("pool");
    let p = Project::new("many");
    let m = many(&p, N);
    let env = [("BOTTLE_SUBNET_POOL", "10.213.64.0/20")];
    p.bottle_env(&["apply", "-f", &m, "--timeout", "600s"], &env)
        .expect(0);

    let containers = p.objects("container");
    assert_eq!(containers.len(), 4 * N, "{containers:?}");
    for c in &containers {
        assert_eq!(inspect(c, "{{.State.Running}}"), "true", "{c}");
    }
    let all = subnets(&p);
    assert_eq!(all.len(), 2 * N, "{all:?}");
    assert_disjoint_in(pool, &all);

    // The subnet is not part of the plan: nothing to do, nothing changes.
    p.bottle_env(&["diff", "-f", &m], &env).expect(0);

    p.bottle(&["delete", "-f", &m]).expect(0);
    for kind in ["container", "network"] {
        assert!(
            p.objects(kind).is_empty(),
            "{kind}s left: {:?}",
            p.objects(kind)
        );
    }
}

/// Two projects applied at the same moment from one pool race for the same blocks: the
/// engine refuses the second network on a block, and its apply takes the next.
#[test]
fn two_projects_applied_at_once_get_disjoint_subnets() {
    let pool = "10.213.96.0/24";
    let (a, b) = (Project::new("racea"), Project::new("raceb"));
    let (ma, mb) = (many(&a, 3), many(&b, 3));
    let args = |m: &str| -> Vec<String> {
        ["apply", "-f", m, "--subnet-pool", pool, "--timeout", "300s"]
            .map(String::from)
            .to_vec()
    };
    let (aa, ab) = (args(&ma), args(&mb));
    std::thread::scope(|s| {
        let ra = s.spawn(|| a.bottle(&aa.iter().map(String::as_str).collect::<Vec<_>>()));
        let rb = s.spawn(|| b.bottle(&ab.iter().map(String::as_str).collect::<Vec<_>>()));
        ra.join().expect("apply a").expect(0);
        rb.join().expect("apply b").expect(0);
    });
    let mut all = subnets(&a);
    all.extend(subnets(&b));
    assert_eq!(all.len(), 12, "{all:?}");
    assert_disjoint_in(pool.parse().expect("pool"), &all);
}

/// A pool of one /28 holds one network: the bottle's second fails naming the pool and
/// the option, and what needs it is skipped naming it (no "network ... not found").
#[test]
fn a_full_pool_is_an_error_naming_the_pool_and_the_option() {
    let p = Project::new("full");
    let m = many(&p, 1);
    let r = p
        .bottle(&["apply", "-f", &m, "--subnet-pool", "10.213.112.0/28"])
        .expect(2);
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert!(
        out.contains("the subnet pool 10.213.112.0/28 has no free /28 left")
            && out.contains("--subnet-pool (or BOTTLE_SUBNET_POOL)"),
        "{out}"
    );
    assert!(!out.contains("not found"), "{out}");
    assert!(out.contains("did not succeed"), "{out}");
    assert_eq!(p.objects("network").len(), 1);
    assert!(p.objects("container").is_empty());
}
