//! netlock's rule set (pure): from the sidecar endpoints to the chains of the
//! `inet bottle_netlock` table ([`ruleset`]), and from the chains to the one
//! nf_tables netlink batch that installs them ([`batch`]). Built by hand like
//! `sidecar::netlink`'s rtnetlink messages: the nf_tables crates are GPL-3.0
//! (rustables) or bind the C libnftnl (nftnl), and the handful of expressions needed
//! here (meta, cmp, payload, ct, bitwise, immediate, reject) are a few attributes each.
//!
//! The batch is one kernel transaction: `add table; delete table; add table` (so a
//! second run replaces, never duplicates), the three base chains with policy drop, then
//! their rules. Either all of it is in force or none of it.

use std::net::SocketAddrV4;

use crate::netlink::{self, attr};

/// The table netlock owns in the pod's network namespace.
pub const TABLE: &str = "bottle_netlock";

/// At most this many endpoints: a bottle has three sidecar Services (and, on a CNI that
/// translates at `connect()`, their pods): far below; a batch stays one datagram.
pub const MAX_ENDPOINTS: usize = 32;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const AF_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const IPPROTO_TCP: u8 = 6;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
const NFT_REJECT_ICMPX_ADMIN_PROHIBITED: u8 = 3;
const IFNAMSIZ: usize = 16;

/// What a rule matches; every match of a rule must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The packet leaves by the interface of this name (it need not exist yet).
    OifName(&'static str),
    /// The packet came in by the interface of this name.
    IifName(&'static str),
    /// IPv4 TCP to this address and port.
    TcpTo(SocketAddrV4),
    /// Part of, or related to, a connection already accepted.
    EstablishedOrRelated,
}

/// What a rule does with what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    /// Refused at once (ICMP administratively prohibited, v4 and v6 alike): a
    /// connect fails fast instead of timing out.
    Reject,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
}

/// A base chain of the table; its policy is always drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    hook: u32,
    pub rules: Vec<Rule>,
}

fn rule(matches: Vec<Match>, action: Action) -> Rule {
    Rule { matches, action }
}

/// The pod's whole filter: out only to loopback, to each endpoint's TCP port, and into
/// the interface `trap` (agent-net's TUN device, where every packet ends in a refusal:
/// section 1.2); in only on loopback and for connections already made; nothing
/// forwarded. IPv6 matches no accept but loopback's and the trap's. `endpoints` are
/// taken in order, duplicates once.
pub fn ruleset(endpoints: &[SocketAddrV4], trap: &'static str) -> Vec<Chain> {
    let mut output = vec![rule(vec![Match::OifName("lo")], Action::Accept)];
    let mut seen = Vec::new();
    for e in endpoints {
        if !seen.contains(e) {
            seen.push(*e);
            output.push(rule(vec![Match::TcpTo(*e)], Action::Accept));
        }
    }
    output.push(rule(vec![Match::OifName(trap)], Action::Accept));
    output.push(rule(vec![], Action::Reject));
    vec![
        Chain {
            name: "input",
            hook: NF_INET_LOCAL_IN,
            rules: vec![
                rule(vec![Match::IifName("lo")], Action::Accept),
                rule(vec![Match::EstablishedOrRelated], Action::Accept),
            ],
        },
        Chain {
            name: "forward",
            hook: NF_INET_FORWARD,
            rules: vec![],
        },
        Chain {
            name: "output",
            hook: NF_INET_LOCAL_OUT,
            rules: output,
        },
    ]
}

fn nested(out: &mut Vec<u8>, kind: u16, build: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    build(&mut inner);
    attr(out, kind | NLA_F_NESTED, &inner);
}

fn be32(out: &mut Vec<u8>, kind: u16, v: u32) {
    attr(out, kind, &v.to_be_bytes());
}

fn cstr(out: &mut Vec<u8>, kind: u16, s: &str) {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    attr(out, kind, &b);
}

/// One expression of a rule: `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA {..} }`.
fn expr(out: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    nested(out, 1, |e| {
        cstr(e, 1, name);
        nested(e, 2, data);
    });
}

fn meta(out: &mut Vec<u8>, key: u32) {
    expr(out, "meta", |d| {
        be32(d, 1, NFT_REG_1); // NFTA_META_DREG
        be32(d, 2, key); // NFTA_META_KEY
    });
}

fn cmp(out: &mut Vec<u8>, op: u32, value: &[u8]) {
    expr(out, "cmp", |d| {
        be32(d, 1, NFT_REG_1); // NFTA_CMP_SREG
        be32(d, 2, op); // NFTA_CMP_OP
        nested(d, 3, |v| attr(v, 1, value)); // NFTA_CMP_DATA { NFTA_DATA_VALUE }
    });
}

fn payload(out: &mut Vec<u8>, base: u32, offset: u32, len: u32) {
    expr(out, "payload", |d| {
        be32(d, 1, NFT_REG_1); // NFTA_PAYLOAD_DREG
        be32(d, 2, base);
        be32(d, 3, offset);
        be32(d, 4, len);
    });
}

fn ifname(name: &str) -> [u8; IFNAMSIZ] {
    let mut b = [0u8; IFNAMSIZ];
    let n = name.len().min(IFNAMSIZ - 1);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

fn encode_match(out: &mut Vec<u8>, m: Match) {
    match m {
        Match::OifName(n) => {
            meta(out, NFT_META_OIFNAME);
            cmp(out, NFT_CMP_EQ, &ifname(n));
        }
        Match::IifName(n) => {
            meta(out, NFT_META_IIFNAME);
            cmp(out, NFT_CMP_EQ, &ifname(n));
        }
        Match::TcpTo(a) => {
            meta(out, NFT_META_NFPROTO);
            cmp(out, NFT_CMP_EQ, &[NFPROTO_IPV4]);
            meta(out, NFT_META_L4PROTO);
            cmp(out, NFT_CMP_EQ, &[IPPROTO_TCP]);
            // The IPv4 header's destination address, the TCP header's destination port.
            payload(out, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
            cmp(out, NFT_CMP_EQ, &a.ip().octets());
            payload(out, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
            cmp(out, NFT_CMP_EQ, &a.port().to_be_bytes());
        }
        Match::EstablishedOrRelated => {
            expr(out, "ct", |d| {
                be32(d, 1, NFT_REG_1); // NFTA_CT_DREG
                be32(d, 2, NFT_CT_STATE); // NFTA_CT_KEY
            });
            let mask = CT_STATE_ESTABLISHED | CT_STATE_RELATED;
            expr(out, "bitwise", |d| {
                be32(d, 1, NFT_REG_1); // SREG
                be32(d, 2, NFT_REG_1); // DREG
                be32(d, 3, 4); // LEN
                nested(d, 4, |v| attr(v, 1, &mask.to_ne_bytes())); // MASK
                nested(d, 5, |v| attr(v, 1, &0u32.to_ne_bytes())); // XOR
            });
            cmp(out, NFT_CMP_NEQ, &0u32.to_ne_bytes());
        }
    }
}

fn encode_action(out: &mut Vec<u8>, a: Action) {
    match a {
        Action::Accept => expr(out, "immediate", |d| {
            be32(d, 1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
            // NFTA_IMMEDIATE_DATA { NFTA_DATA_VERDICT { NFTA_VERDICT_CODE } }
            nested(d, 2, |v| nested(v, 2, |c| be32(c, 1, NF_ACCEPT)));
        }),
        Action::Reject => expr(out, "reject", |d| {
            be32(d, 1, NFT_REJECT_ICMPX_UNREACH); // NFTA_REJECT_TYPE
            attr(d, 2, &[NFT_REJECT_ICMPX_ADMIN_PROHIBITED]); // NFTA_REJECT_ICMP_CODE
        }),
    }
}

/// One netlink message: header, `nfgenmsg` (family, version 0, resource id), attributes.
fn message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res: u16, body: &[u8]) {
    let mut m = vec![family, 0];
    m.extend_from_slice(&res.to_be_bytes());
    m.extend_from_slice(body);
    out.extend(netlink::request(kind, flags, seq, &m));
}

/// The batch that installs `chains` as table [`TABLE`], its messages numbered from
/// `seq`; and how many of them the kernel acknowledges (all but the batch's begin and
/// end), so the caller knows when the transaction is through.
pub fn batch(chains: &[Chain], seq: u32) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut n = seq;
    let mut acked = 0;
    let mut nft = |out: &mut Vec<u8>, cmd: u16, flags: u16, body: Vec<u8>| {
        n += 1;
        acked += 1;
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | cmd;
        message(out, kind, flags | NLM_F_ACK, n, NFPROTO_INET, 0, &body);
    };
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        0,
        seq,
        AF_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let table = |b: &mut Vec<u8>| cstr(b, 1, TABLE); // NFTA_TABLE_NAME
    for cmd in [NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWTABLE] {
        let mut body = Vec::new();
        table(&mut body);
        let flags = if cmd == NFT_MSG_NEWTABLE {
            NLM_F_CREATE
        } else {
            0
        };
        nft(&mut out, cmd, flags, body);
    }
    for c in chains {
        let mut body = Vec::new();
        cstr(&mut body, 1, TABLE); // NFTA_CHAIN_TABLE
        cstr(&mut body, 3, c.name); // NFTA_CHAIN_NAME
        nested(&mut body, 4, |h| {
            be32(h, 1, c.hook); // NFTA_HOOK_HOOKNUM
            be32(h, 2, 0); // NFTA_HOOK_PRIORITY: filter
        });
        be32(&mut body, 5, NF_DROP); // NFTA_CHAIN_POLICY
        cstr(&mut body, 7, "filter"); // NFTA_CHAIN_TYPE
        nft(&mut out, NFT_MSG_NEWCHAIN, NLM_F_CREATE, body);
    }
    for c in chains {
        for r in &c.rules {
            let mut body = Vec::new();
            cstr(&mut body, 1, TABLE); // NFTA_RULE_TABLE
            cstr(&mut body, 2, c.name); // NFTA_RULE_CHAIN
            nested(&mut body, 4, |e| {
                for m in &r.matches {
                    encode_match(e, *m);
                }
                encode_action(e, r.action);
            });
            nft(&mut out, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, body);
        }
    }
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        0,
        n + 1,
        AF_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    (out, acked)
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
