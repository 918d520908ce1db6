//! Tests of netlock's rule set: its shape from the endpoints, the batch's framing, and
//! (as root) the batch in a real kernel: in a network namespace of the test's own,
//! read back by `nft` and shown to refuse what it must.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;
use crate::netlink::{align, messages};
use crate::netlock::{LockError, lock, parse_endpoints, prove};

fn ep(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

#[test]
fn the_rule_set_accepts_only_loopback_the_endpoints_and_the_trap_and_refuses_the_rest() {
    let egress = ep([10, 96, 0, 10], 3128);
    let gate = ep([10, 96, 0, 11], 8418);
    let chains = ruleset(&[egress, gate, egress], "bottle0");
    let names: Vec<&str> = chains.iter().map(|c| c.name).collect();
    assert_eq!(names, ["input", "forward", "output"]);
    let accept = |m: Vec<Match>| Rule {
        matches: m,
        action: Action::Accept,
    };
    assert_eq!(
        chains[0].rules,
        [
            accept(vec![Match::IifName("lo")]),
            accept(vec![Match::EstablishedOrRelated]),
        ]
    );
    assert!(chains[1].rules.is_empty(), "nothing is forwarded");
    assert_eq!(
        chains[2].rules,
        [
            accept(vec![Match::OifName("lo")]),
            accept(vec![Match::TcpTo(egress)]),
            accept(vec![Match::TcpTo(gate)]),
            accept(vec![Match::OifName("bottle0")]),
            Rule {
                matches: vec![],
                action: Action::Reject
            },
        ],
        "a duplicate endpoint is one rule; the refusal is last"
    );
}

#[test]
fn the_batch_is_one_transaction_that_replaces_the_table_then_adds_chains_and_rules() {
    let chains = ruleset(&[ep([10, 1, 2, 3], 3128)], "bottle0");
    let (b, acks) = batch(&chains, 7);
    assert_eq!(b.len() % 4, 0);
    let msgs = messages(&b).expect("well-formed");
    let types: Vec<u16> = msgs.iter().map(|m| m.0).collect();
    let nft = |cmd: u16| (NFNL_SUBSYS_NFTABLES << 8) | cmd;
    let mut want = vec![
        NFNL_MSG_BATCH_BEGIN,
        nft(NFT_MSG_NEWTABLE),
        nft(NFT_MSG_DELTABLE),
        nft(NFT_MSG_NEWTABLE),
    ];
    want.extend([nft(NFT_MSG_NEWCHAIN); 3]);
    want.extend([nft(NFT_MSG_NEWRULE); 2 + 4]);
    want.push(NFNL_MSG_BATCH_END);
    assert_eq!(types, want);
    assert_eq!(
        acks,
        want.len() - 2,
        "every message but begin and end is acked"
    );
    // Sequence numbers run on from `seq`; every message asks for an ack inside the batch.
    let mut at = 0;
    for (i, _) in msgs.iter().enumerate() {
        let len = u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let flags = u16::from_ne_bytes([b[at + 6], b[at + 7]]);
        let seq = u32::from_ne_bytes(b[at + 8..at + 12].try_into().unwrap());
        assert_eq!(seq, 7 + i as u32);
        let inner = i > 0 && i < msgs.len() - 1;
        assert_eq!(flags & NLM_F_ACK != 0, inner);
        at += align(len);
    }
    // The endpoint's address and port are in the rule in network order.
    let rule = msgs[msgs.len() - 4].1;
    let has = |needle: &[u8]| rule.windows(needle.len()).any(|w| w == needle);
    assert!(has(&[10, 1, 2, 3]));
    assert!(has(&3128u16.to_be_bytes()));
}

#[test]
fn endpoints_are_ipv4_addr_port_at_least_one_and_bounded() {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        parse_endpoints(&args(&["10.0.0.1:3128", "10.0.0.2:8418"])).expect("ok"),
        [ep([10, 0, 0, 1], 3128), ep([10, 0, 0, 2], 8418)]
    );
    assert!(matches!(parse_endpoints(&[]), Err(LockError::NoEndpoints)));
    for bad in ["10.0.0.1", "[::1]:80", "egress:3128", "10.0.0.1:99999", ""] {
        assert!(
            matches!(parse_endpoints(&args(&[bad])), Err(LockError::Endpoint(_))),
            "{bad}"
        );
    }
    let many: Vec<String> = (0..=MAX_ENDPOINTS)
        .map(|i| format!("10.0.0.{i}:1"))
        .collect();
    assert!(matches!(parse_endpoints(&many), Err(LockError::TooMany)));
}

fn sh(cmd: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("sh")
}

/// In a network namespace of its own (a thread's: `unshare` moves only the calling
/// thread, and what it spawns), with an interface and a default route that lead
/// nowhere: unlocked, a datagram out is sent; locked, it is refused, a TCP connect out is
/// refused at once rather than timing out, and `nft` reads the table back as written.
/// Needs root (CI and the e2e machines are); elsewhere it says so and passes.
#[test]
fn the_lock_holds_in_a_real_kernel_and_nft_reads_it_back() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    std::thread::spawn(|| {
        #[allow(deprecated)] // `unshare_unsafe`'s hazard is CLONE_FILES; NEWNET has none.
        rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNET).expect("unshare");
        let setup = sh(
            "ip link set lo up && ip link add d0 type veth peer name d1 && \
             ip addr add 10.9.0.2/24 dev d0 && ip link set d0 up && ip link set d1 up && \
             ip route add default via 10.9.0.1",
        );
        assert!(setup.status.success(), "{setup:?}");
        let allowed = ep([10, 9, 0, 1], 3128);
        assert!(
            matches!(prove(&[allowed]), Err(LockError::NotEnforced(_))),
            "unlocked, the probe leaves"
        );

        lock(&[allowed]).expect("lock");
        lock(&[allowed]).expect("a second lock replaces the first");
        prove(&[allowed]).expect("locked, the probes are refused");
        let t = std::time::Instant::now();
        let err = std::net::TcpStream::connect_timeout(
            &"10.9.0.1:80".parse().unwrap(),
            std::time::Duration::from_secs(3),
        )
        .expect_err("refused");
        assert_ne!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "at once");

        let listed = sh("nft list table inet bottle_netlock");
        if !listed.status.success() {
            eprintln!("nft not usable here: {listed:?}");
            return;
        }
        let text = String::from_utf8_lossy(&listed.stdout);
        let rules: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        for want in [
            "chain input {",
            "type filter hook input priority filter; policy drop;",
            "iifname \"lo\" accept",
            "ct state established,related accept",
            "type filter hook forward priority filter; policy drop;",
            "type filter hook output priority filter; policy drop;",
            "oifname \"lo\" accept",
            "ip daddr 10.9.0.1 tcp dport 3128 accept",
            "oifname \"bottle0\" accept",
            "reject with icmpx admin-prohibited",
        ] {
            assert!(rules.iter().any(|r| r == want), "{want:?} not in:\n{text}");
        }
        assert_eq!(
            rules.iter().filter(|r| r.ends_with("accept")).count(),
            5,
            "replaced, not appended:\n{text}"
        );
    })
    .join()
    .expect("the namespace thread");
}
