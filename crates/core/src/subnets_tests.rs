//! The subnet allocator: the pure block search, the pool's syntax, and creation against
//! the in-memory engine (which refuses overlapping subnets as Docker does): races,
//! exhaustion, and whole applies.

use std::collections::BTreeSet;

use super::*;
use crate::apply::tests::{AgentGen, desired, manifest, one};
use crate::apply::{Outcome, ReconcileOptions, reconcile_once};
use bottle_engine::fake::FakeEngine;

use crate::apply::tests::rt;
use bottle_engine::{Labels, Snapshot};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        labels: Labels::new(),
        internal: true,
        options: Default::default(),
        subnet: None,
    }
}

/// The subnet each network of `snap` holds, by name.
fn subnet_of(snap: &Snapshot, name: &str) -> Ipv4Net {
    let n = snap.networks.iter().find(|n| n.name == name).unwrap();
    match n.subnets.as_slice() {
        [IpNet::V4(s)] => *s,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn the_first_block_of_an_empty_pool_is_its_start() {
    assert_eq!(
        next_free(net("10.213.0.0/16"), &[]),
        Some(net("10.213.0.0/28"))
    );
}

#[test]
fn blocks_in_use_or_routed_are_skipped() {
    let pool = net("10.213.0.0/16");
    // A /28 in use, a /29 route inside the next block, then a /24 route.
    let used = [
        net("10.213.0.0/28"),
        net("10.213.0.24/29"),
        net("10.213.0.32/27"),
        net("10.213.0.64/26"),
    ];
    assert_eq!(next_free(pool, &used), Some(net("10.213.0.128/28")));
    // A larger block covering the start of the pool is jumped over at once.
    assert_eq!(
        next_free(pool, &[net("10.213.0.0/17")]),
        Some(net("10.213.128.0/28"))
    );
    // A block in use elsewhere changes nothing.
    assert_eq!(
        next_free(pool, &[net("172.17.0.0/16"), net("10.212.0.0/16")]),
        Some(net("10.213.0.0/28"))
    );
}

#[test]
fn a_pool_with_every_block_taken_has_none_free() {
    let pool = net("10.213.0.0/27");
    assert_eq!(
        next_free(pool, &[net("10.213.0.0/28"), net("10.213.0.16/28")]),
        None
    );
    // A route covering the whole pool (a VPN's 10.0.0.0/8) leaves nothing.
    assert_eq!(next_free(net("10.213.0.0/16"), &[net("10.0.0.0/8")]), None);
    // The last block of the address space is found without overflow.
    let top = net("255.255.255.224/27");
    assert_eq!(
        next_free(top, &[net("255.255.255.224/28")]),
        Some(net("255.255.255.240/28"))
    );
    assert_eq!(next_free(top, &[top]), None);
}

#[test]
fn every_block_found_is_free_and_aligned() {
    // Fill a /24 one block at a time around scattered used blocks: each answer is a
    // /28 inside the pool overlapping nothing used, and the pool ends exhausted.
    let pool = net("10.213.7.0/24");
    let mut used = vec![
        net("10.213.7.40/29"),
        net("10.213.7.128/26"),
        net("10.213.7.255/32"),
    ];
    let mut found = 0;
    while let Some(b) = next_free(pool, &used) {
        assert_eq!(b.prefix_len(), BLOCK_PREFIX);
        assert!(pool.contains(&b), "{b}");
        assert!(!used.iter().any(|u| overlaps(b, *u)), "{b} overlaps");
        used.push(b);
        found += 1;
    }
    // 16 blocks, less the one holding .40/29, the four of .128/26, the last (.255).
    assert_eq!(found, 16 - 1 - 4 - 1);
}

#[test]
fn pools_are_read_strictly() {
    assert_eq!(parse_pool("10.213.0.0/16"), Ok(DEFAULT_POOL));
    assert_eq!(parse_pool("100.64.0.0/10"), Ok(net("100.64.0.0/10")));
    assert_eq!(parse_pool("10.9.8.16/28"), Ok(net("10.9.8.16/28")));
    for bad in [
        "",
        "10.213.0.0",
        "10.213.0.0/33",
        "fd00::/8",
        "ten/8",
        " 10.0.0.0/8",
    ] {
        assert!(
            matches!(parse_pool(bad), Err(PoolError::Syntax { .. })),
            "{bad}: {:?}",
            parse_pool(bad)
        );
    }
    let e = parse_pool("10.213.0.1/16").unwrap_err();
    assert_eq!(
        e.to_string(),
        "10.213.0.1/16: host bits set (the block is 10.213.0.0/16)"
    );
    let e = parse_pool("10.9.8.0/29").unwrap_err();
    assert_eq!(e.to_string(), "10.9.8.0/29: smaller than one /28");
    let e = parse_pool("127.0.0.0/16").unwrap_err();
    assert_eq!(
        e.to_string(),
        "127.0.0.0/16: overlaps 127.0.0.0/8 (loopback)"
    );
    assert!(matches!(
        parse_pool("0.0.0.0/0"),
        Err(PoolError::Reserved { .. })
    ));
    assert!(matches!(
        parse_pool("224.0.0.0/24"),
        Err(PoolError::Reserved { .. })
    ));
}

#[test]
fn the_default_pool_is_clear_of_the_engines_default_pools() {
    assert_eq!(parse_pool(&DEFAULT_POOL.to_string()), Ok(DEFAULT_POOL));
    for docker in [
        "172.17.0.0/16",
        "172.31.0.0/16",
        "192.168.0.0/16",
        "100.64.0.0/10",
    ] {
        assert!(!overlaps(DEFAULT_POOL, net(docker)), "{docker}");
    }
    // 172.17.0.0/16 .. 172.31.0.0/16 as one block.
    assert!(!overlaps(DEFAULT_POOL, net("172.16.0.0/12")));
}

#[test]
fn a_network_gets_the_first_block_clear_of_the_engine_and_the_host() {
    rt().block_on(async {
        let e = FakeEngine::default();
        // Another project's (or tool's) network, and the host's routes.
        e.add_network_on("other", Labels::new(), &[IpNet::V4(net("10.213.0.0/28"))]);
        let addressing = Addressing {
            pool: DEFAULT_POOL,
            routes: vec![
                net("0.0.0.0/0"),
                net("0.0.0.0/1"),
                net("128.0.0.0/1"),
                net("10.213.0.16/28"),
            ],
        };
        let alloc = Allocator::new(&addressing);
        alloc.create(&e, &spec("n1")).await.unwrap();
        alloc.create(&e, &spec("n2")).await.unwrap();
        let snap = e.snapshot();
        assert_eq!(subnet_of(&snap, "n1"), net("10.213.0.32/28"));
        assert_eq!(subnet_of(&snap, "n2"), net("10.213.0.48/28"));
        // One listing of the engine's networks serves the execution.
        let lists = e.calls().iter().filter(|c| *c == "list networks").count();
        assert_eq!(lists, 1, "{:?}", e.calls());
        let n1 = snap.networks.iter().find(|n| n.name == "n1").unwrap();
        assert_eq!(
            n1.labels.get(labels::SUBNET).map(String::as_str),
            Some("10.213.0.32/28")
        );
        // A spec with its subnet set is made on it, as it is.
        let mut fixed = spec("n3");
        fixed.subnet = Some(net("10.99.0.0/28"));
        alloc.create(&e, &fixed).await.unwrap();
        assert_eq!(subnet_of(&e.snapshot(), "n3"), net("10.99.0.0/28"));
    });
}

#[test]
fn a_block_taken_since_the_listing_is_given_up_for_the_next() {
    rt().block_on(async {
        let e = FakeEngine::default();
        // Another apply made its network on the first block after we listed.
        e.add_network_on("theirs", Labels::new(), &[IpNet::V4(net("10.213.0.0/28"))]);
        e.script_network_lists(vec![vec![]]);
        let addressing = Addressing::default();
        Allocator::new(&addressing)
            .create(&e, &spec("ours"))
            .await
            .unwrap();
        assert_eq!(subnet_of(&e.snapshot(), "ours"), net("10.213.0.16/28"));
        assert_eq!(
            e.calls(),
            vec![
                "list networks",
                "create_network ours",
                "list networks",
                "create_network ours"
            ]
        );
    });
}

#[test]
fn the_retries_are_bounded() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let taken: Vec<IpNet> = DEFAULT_POOL
            .subnets(BLOCK_PREFIX)
            .unwrap()
            .take(MAX_ATTEMPTS)
            .map(IpNet::V4)
            .collect();
        e.add_network_on("theirs", Labels::new(), &taken);
        // Every listing stale: each pick is refused.
        e.script_network_lists(vec![vec![]; MAX_ATTEMPTS]);
        let addressing = Addressing::default();
        let err = Allocator::new(&addressing)
            .create(&e, &spec("ours"))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("refused 16 free-looking /28s of the subnet pool 10.213.0.0/16"),
            "{err}"
        );
        let creates = e.calls().iter().filter(|c| c.starts_with("create")).count();
        assert_eq!(creates, MAX_ATTEMPTS);
    });
}

#[test]
fn an_exhausted_pool_is_an_error_naming_the_pool_and_the_option() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let addressing = Addressing {
            pool: net("10.213.0.0/27"),
            routes: vec![],
        };
        let alloc = Allocator::new(&addressing);
        alloc.create(&e, &spec("n1")).await.unwrap();
        alloc.create(&e, &spec("n2")).await.unwrap();
        let err = alloc.create(&e, &spec("n3")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "create network n3: the subnet pool 10.213.0.0/27 has no free /28 left (each \
             overlaps a network of the engine or a route of the host); give a larger or \
             another pool with --subnet-pool (or BOTTLE_SUBNET_POOL)"
        );
        assert!(!e.calls().contains(&"create_network n3".to_string()));
    });
}

fn agents(n: usize) -> Vec<AgentGen> {
    vec![one(1)[0].clone(); n]
}

#[test]
fn every_network_of_an_apply_gets_its_own_block_and_a_reapply_plans_nothing() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &agents(20)));
        let opts = ReconcileOptions::default();
        let r = reconcile_once(&e, &d, &opts, &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert!(r.reports.iter().all(|r| r.outcome == Outcome::Done));
        let snap = e.snapshot();
        assert_eq!(snap.networks.len(), 40);
        let blocks: BTreeSet<Ipv4Net> = snap
            .networks
            .iter()
            .map(|n| subnet_of(&snap, &n.name))
            .collect();
        assert_eq!(blocks.len(), 40, "distinct");
        assert!(
            blocks
                .iter()
                .all(|b| DEFAULT_POOL.contains(b) && b.prefix_len() == 28)
        );
        let again = reconcile_once(&e, &d, &opts, &mut |_| {}, &mut |_| {})
            .await
            .unwrap();
        assert!(again.plan.is_empty(), "{:?}", again.plan);
    });
}

#[test]
fn two_projects_applied_at_once_get_disjoint_blocks() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let a = desired(&manifest("pa", &agents(3)));
        let b = desired(&manifest("pb", &agents(3)));
        let opts = ReconcileOptions::default();
        let (ra, rb) = futures_util::future::join(
            reconcile_once(&e, &a, &opts, &mut |_| {}, &mut |_| {}),
            reconcile_once(&e, &b, &opts, &mut |_| {}, &mut |_| {}),
        )
        .await;
        for r in [ra.unwrap(), rb.unwrap()] {
            assert!(r.reports.iter().all(|r| r.outcome == Outcome::Done));
        }
        let snap = e.snapshot();
        let blocks: BTreeSet<Ipv4Net> = snap
            .networks
            .iter()
            .map(|n| subnet_of(&snap, &n.name))
            .collect();
        assert_eq!(blocks.len(), 12);
    });
}

#[test]
fn an_exhausted_pool_fails_the_network_and_skips_what_needs_it_naming_it() {
    rt().block_on(async {
        let e = FakeEngine::default();
        let d = desired(&manifest("p", &agents(2))).with_addressing(Addressing {
            pool: net("10.213.0.0/27"),
            routes: vec![],
        });
        let r = reconcile_once(
            &e,
            &d,
            &ReconcileOptions {
                concurrency: 1,
                ..ReconcileOptions::default()
            },
            &mut |_| {},
            &mut |_| {},
        )
        .await
        .unwrap();
        let failed: Vec<(String, String)> = r
            .reports
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed(e) => Some((r.op.key.name.clone(), e.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(
            failed.iter().all(|(_, e)| e.contains("has no free /28")),
            "{failed:?}"
        );
        let failed_nets: BTreeSet<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        // Every container of a bottle short of a network is skipped naming the network.
        for r in &r.reports {
            if let Outcome::Skipped { because } = &r.outcome {
                assert!(
                    failed_nets
                        .iter()
                        .any(|n| because == &format!("create network {n} did not succeed")),
                    "{}: {because}",
                    r.op.key
                );
            }
        }
        let skipped = r
            .reports
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped { .. }))
            .count();
        assert!(skipped > 0);
    });
}
