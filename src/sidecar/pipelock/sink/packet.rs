//! The packet side of the sink: IPv4 packets that arrive on net-internal for an address
//! outside the subnet were routed to pipelock as the gateway, i.e. an attempt to leave
//! without the proxy. pipelock never forwards them (`ip_forward=0`); this reads a copy
//! from an `AF_PACKET` socket (opened while still root, kept after the drop) and says
//! what the attempt was: a TCP SYN, a UDP datagram (a DNS question is read), an ICMP
//! echo. Everything else (other TCP segments, fragments, replies) is ignored.
//!
//! On a host whose Docker filters bridged traffic (`bridge-nf-call-iptables`, Docker's
//! default) such packets are dropped in the host's bridge by Docker's rule for
//! `--internal` networks and never arrive: the observer then sees nothing.

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::dns;

/// `ETH_P_IP`.
const ETH_P_IP: u16 = 0x0800;
/// Bytes of each packet kept: headers and a DNS question.
const SNAP: u32 = 600;
const PACKET_OUTGOING: u32 = 4;
/// Classic BPF ancillary loads (`SKF_AD_OFF + ...`).
const SKF_AD_OFF: u32 = 0xFFFF_F000;
const SKF_AD_PKTTYPE: u32 = 4;
const SKF_AD_IFINDEX: u32 = 8;

/// What an attempt used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// One attempt to leave without the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Destination port; 0 for ICMP.
    pub port: u16,
    /// The DNS question, for UDP to port 53 that carries one.
    pub name: Option<String>,
}

/// The subnet the observer watches, and the addresses that are pipelock's own.
#[derive(Clone, Copy, Debug)]
pub struct Subnet {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    pub fn contains(self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.net) & self.mask()
    }
}

/// The attempt `packet` (an IPv4 packet, from its header on) is, if it is one: sent
/// from inside `subnet` to an address outside it that is not multicast or broadcast.
pub fn classify(packet: &[u8], subnet: Subnet) -> Option<Attempt> {
    let ip = packet.get(..20)?;
    if ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0F) * 4;
    // Later fragments carry no transport header.
    let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1FFF;
    if ihl < 20 || frag_offset != 0 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    if !subnet.contains(src)
        || subnet.contains(dst)
        || dst.is_multicast()
        || dst.is_broadcast()
        || dst.is_unspecified()
    {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let end = total.clamp(ihl, packet.len().max(ihl));
    let l4 = packet.get(ihl..end.min(packet.len()))?;
    let attempt = |proto, port, name| {
        Some(Attempt {
            proto,
            src,
            dst,
            port,
            name,
        })
    };
    match ip[9] {
        // TCP: a SYN without ACK opens a connection; the rest is ignored.
        6 => {
            let h = l4.get(..14)?;
            let (syn, ack) = (h[13] & 0x02 != 0, h[13] & 0x10 != 0);
            (syn && !ack).then_some(())?;
            attempt(Proto::Tcp, u16::from_be_bytes([h[2], h[3]]), None)
        }
        17 => {
            let h = l4.get(..8)?;
            let port = u16::from_be_bytes([h[2], h[3]]);
            let name = (port == 53)
                .then(|| dns::parse_query(&l4[8..]).ok().map(|q| q.name))
                .flatten();
            attempt(Proto::Udp, port, name)
        }
        // ICMP echo request.
        1 => (l4.first() == Some(&8))
            .then_some(())
            .and_then(|()| attempt(Proto::Icmp, 0, None)),
        _ => None,
    }
}

/// The classic BPF program, as (code, jt, jf, k), that passes only what [`classify`]
/// may want: received (not sent) on interface `ifindex`, to an IPv4 address outside
/// `subnet` and below the multicast range. Keeps [`SNAP`] bytes.
pub fn program(ifindex: u32, subnet: Subnet) -> [(u16, u8, u8, u32); 10] {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const AND_K: u16 = 0x54;
    const RET_K: u16 = 0x06;
    // Jumps are relative to the next instruction; 9 is "drop".
    [
        (LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_IFINDEX),
        (JEQ_K, 0, 7, ifindex),
        (LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        (JEQ_K, 5, 0, PACKET_OUTGOING),
        // The destination address (network order, loaded as a number).
        (LD_W_ABS, 0, 0, 16),
        (JGE_K, 3, 0, 0xE000_0000),
        (AND_K, 0, 0, subnet.mask()),
        (JEQ_K, 1, 0, u32::from(subnet.net) & subnet.mask()),
        (RET_K, 0, 0, SNAP),
        (RET_K, 0, 0, 0),
    ]
}

/// An `AF_PACKET` socket for IPv4 on interface `ifindex`, filtered in the kernel.
/// Needs `CAP_NET_RAW`: open it before dropping privileges.
pub fn open(ifindex: u32, subnet: Subnet) -> std::io::Result<Socket> {
    let sock = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
    )?;
    let prog: Vec<SockFilter> = program(ifindex, subnet)
        .iter()
        .map(|&(code, jt, jf, k)| SockFilter::new(code, jt, jf, k))
        .collect();
    sock.attach_filter(&prog)?;
    Ok(sock)
}

/// Read packets from `sock` until it fails, handing each attempt to `seen`. Runs on a
/// thread of its own.
pub fn run(sock: Socket, subnet: Subnet, seen: Arc<dyn Fn(Attempt) + Send + Sync>) {
    let mut buf = vec![0u8; SNAP as usize];
    loop {
        match (&sock).read(&mut buf) {
            Ok(n) => {
                if let Some(a) = classify(&buf[..n], subnet) {
                    seen(a);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "pipelock's packet observer stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: Subnet = Subnet {
        net: Ipv4Addr::new(172, 19, 0, 0),
        prefix: 16,
    };
    const AGENT: [u8; 4] = [172, 19, 0, 3];

    fn ipv4(proto: u8, dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&AGENT);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(port: u16, flags: u8) -> Vec<u8> {
        let mut h = vec![0xC0, 0x01];
        h.extend_from_slice(&port.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
        h
    }

    fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0xC0, 0x02];
        h.extend_from_slice(&port.to_be_bytes());
        h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn a_syn_to_an_outside_address_is_an_attempt_other_segments_are_not() {
        let a = classify(&ipv4(6, [93, 184, 216, 34], &tcp(443, 0x02)), NET).expect("SYN");
        assert_eq!(
            a,
            Attempt {
                proto: Proto::Tcp,
                src: Ipv4Addr::from(AGENT),
                dst: Ipv4Addr::new(93, 184, 216, 34),
                port: 443,
                name: None,
            }
        );
        assert_eq!(classify(&ipv4(6, [1, 1, 1, 1], &tcp(443, 0x12)), NET), None);
        assert_eq!(classify(&ipv4(6, [1, 1, 1, 1], &tcp(443, 0x10)), NET), None);
    }

    #[test]
    fn a_dns_query_names_its_host() {
        let q = dns::tests::query(9, "example.com");
        let a = classify(&ipv4(17, [10, 255, 255, 53], &udp(53, &q)), NET).expect("udp");
        assert_eq!(a.proto, Proto::Udp);
        assert_eq!(a.port, 53);
        assert_eq!(a.name.as_deref(), Some("example.com"));
        let quic = classify(&ipv4(17, [8, 8, 8, 8], &udp(443, b"\xC0quic")), NET).expect("quic");
        assert_eq!((quic.port, quic.name), (443, None));
        let junk = classify(&ipv4(17, [8, 8, 8, 8], &udp(53, b"\x00")), NET).expect("junk");
        assert_eq!(junk.name, None);
    }

    #[test]
    fn echo_requests_count_and_inside_multicast_or_foreign_sources_do_not() {
        let ping = classify(&ipv4(1, [1, 1, 1, 1], &[8, 0, 0, 0]), NET).expect("ping");
        assert_eq!((ping.proto, ping.port), (Proto::Icmp, 0));
        assert_eq!(classify(&ipv4(1, [1, 1, 1, 1], &[0, 0, 0, 0]), NET), None);
        let syn = tcp(443, 0x02);
        assert_eq!(classify(&ipv4(6, [172, 19, 0, 2], &syn), NET), None);
        assert_eq!(
            classify(&ipv4(17, [224, 0, 0, 251], &udp(5353, b"")), NET),
            None
        );
        assert_eq!(
            classify(&ipv4(17, [255, 255, 255, 255], &udp(67, b"")), NET),
            None
        );
        let mut foreign = ipv4(6, [1, 1, 1, 1], &syn);
        foreign[12..16].copy_from_slice(&[10, 0, 0, 9]);
        assert_eq!(classify(&foreign, NET), None);
    }

    #[test]
    fn truncated_fragments_and_garbage_are_ignored_without_panic() {
        let p = ipv4(6, [1, 1, 1, 1], &tcp(443, 0x02));
        for cut in 0..p.len() {
            let _ = classify(&p[..cut], NET);
        }
        assert_eq!(classify(&p[..33], NET), None, "TCP header cut before flags");
        let mut frag = p.clone();
        frag[6..8].copy_from_slice(&[0x00, 0x10]);
        assert_eq!(classify(&frag, NET), None);
        let mut v6 = p.clone();
        v6[0] = 0x60;
        assert_eq!(classify(&v6, NET), None);
        let mut short_ihl = p.clone();
        short_ihl[0] = 0x44;
        assert_eq!(classify(&short_ihl, NET), None);
        let mut huge_ihl = p.clone();
        huge_ihl[0] = 0x4F;
        assert_eq!(classify(&huge_ihl, NET), None);
        let mut lying_len = p.clone();
        lying_len[2..4].copy_from_slice(&[0xFF, 0xFF]);
        assert!(classify(&lying_len, NET).is_some());
        lying_len[2..4].copy_from_slice(&[0, 4]);
        assert_eq!(classify(&lying_len, NET), None);
        for b in 0..=255u8 {
            let _ = classify(&[0x45, b, 0, 40, 0, 0, 0, 0, 64, b], NET);
        }
    }

    /// Runs the program on a packet whose ancillary data is `(ifindex, pkttype)`.
    fn run_bpf(prog: &[(u16, u8, u8, u32)], packet: &[u8], ifindex: u32, pkttype: u32) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                0x20 => {
                    a = match k {
                        k if k == SKF_AD_OFF + SKF_AD_IFINDEX => ifindex,
                        k if k == SKF_AD_OFF + SKF_AD_PKTTYPE => pkttype,
                        k => {
                            let k = k as usize;
                            u32::from_be_bytes(packet[k..k + 4].try_into().expect("4 bytes"))
                        }
                    }
                }
                0x15 => pc += usize::from(if a == k { jt } else { jf }),
                0x35 => pc += usize::from(if a >= k { jt } else { jf }),
                0x54 => a &= k,
                0x06 => return k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_kernel_filter_passes_what_classify_wants() {
        let prog = program(20, NET);
        let syn = ipv4(6, [1, 1, 1, 1], &tcp(443, 0x02));
        assert_eq!(run_bpf(&prog, &syn, 20, 0), SNAP);
        assert_eq!(run_bpf(&prog, &syn, 21, 0), 0, "another interface");
        assert_eq!(run_bpf(&prog, &syn, 20, PACKET_OUTGOING), 0, "sent by us");
        let inside = ipv4(6, [172, 19, 0, 2], &tcp(443, 0x02));
        assert_eq!(run_bpf(&prog, &inside, 20, 0), 0);
        let mcast = ipv4(17, [224, 0, 0, 251], &udp(5353, b""));
        assert_eq!(run_bpf(&prog, &mcast, 20, 0), 0);
        let bcast = ipv4(17, [255, 255, 255, 255], &udp(67, b""));
        assert_eq!(run_bpf(&prog, &bcast, 20, 0), 0);
    }
}
