//! The packets of an attempt to leave the bottle without the proxy: what one is
//! ([`classify`]), and the answer that makes it fail at once ([`reply`]).
//!
//! The agent's network namespace routes every address outside net-internal into
//! agent-net's TUN device (see [`super`]): whatever arrives there is an attempt. An
//! IPv4 packet from inside the subnet to an address outside it (not multicast or
//! broadcast) is one: a TCP SYN, a UDP datagram (a DNS question is read), an ICMP
//! echo. Everything else (other TCP segments, fragments, replies) is ignored. The
//! same [`classify`] reads the copies agent-net reports to pipelock, which audits
//! them (`pipelock::sink`).

use std::net::Ipv4Addr;

use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};

use crate::pipelock::sink::dns;

/// Bytes of an attempt reported to pipelock: headers and a DNS question.
pub const SNAP: usize = 600;

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

/// net-internal's subnet: the addresses inside the bottle.
#[derive(Clone, Copy, Debug)]
pub struct Subnet {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// The subnet of an interface's address.
    pub fn of(a: crate::netlink::IfAddr) -> Subnet {
        let s = Subnet {
            net: a.addr,
            prefix: a.prefix,
        };
        Subnet {
            net: Ipv4Addr::from(u32::from(a.addr) & s.mask()),
            ..s
        }
    }

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

/// The packet that makes `packet`, an attempt, fail at once, sent back as if from its
/// destination: a TCP reset for a SYN (the connect is refused), an ICMP "communication
/// administratively prohibited" for a UDP datagram or an echo request carrying the
/// start of the original (RFC 792), so the sender's socket learns of it.
pub fn reply(packet: &[u8], attempt: &Attempt) -> Option<Vec<u8>> {
    // `classify` has read the header: the transport header follows it.
    let ihl = usize::from(packet.first()? & 0x0F) * 4;
    let (src, dst) = (attempt.dst.octets(), attempt.src.octets());
    let mut out = Vec::with_capacity(96);
    match attempt.proto {
        Proto::Tcp => {
            let h = packet.get(ihl..ihl + 8)?;
            let port = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
            let seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            PacketBuilder::ipv4(src, dst, 64)
                .tcp(port(2), port(0), 0, 0)
                .rst()
                .ack(seq.wrapping_add(1))
                .write(&mut out, &[])
                .ok()?;
        }
        Proto::Udp | Proto::Icmp => {
            // The original IP header and the first 8 bytes of what it carried.
            let quoted = packet.get(..(ihl + 8).min(packet.len()))?;
            PacketBuilder::ipv4(src, dst, 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FilterProhibited,
                ))
                .write(&mut out, quoted)
                .ok()?;
        }
    }
    Some(out)
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

    #[test]
    fn a_syn_is_answered_with_a_reset_from_its_destination() {
        let syn = ipv4(6, [93, 184, 216, 34], &tcp(443, 0x02));
        let a = classify(&syn, NET).expect("SYN");
        let answer = reply(&syn, &a).expect("reply");
        let p = etherparse::SlicedPacket::from_ip(&answer).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4: {p:?}");
        };
        assert_eq!(ip.header().source(), [93, 184, 216, 34]);
        assert_eq!(ip.header().destination(), AGENT);
        let Some(etherparse::TransportSlice::Tcp(t)) = &p.transport else {
            panic!("not TCP: {p:?}");
        };
        assert!(t.rst() && t.ack() && !t.syn());
        assert_eq!((t.source_port(), t.destination_port()), (443, 0xC001));
        assert_eq!(
            t.acknowledgment_number(),
            2,
            "the SYN's sequence number + 1"
        );
        let src = ip.header().source();
        let dst = ip.header().destination();
        assert_eq!(
            t.calc_checksum_ipv4(src, dst).expect("checksum"),
            t.checksum()
        );
    }

    #[test]
    fn a_datagram_or_a_ping_is_answered_administratively_prohibited_quoting_it() {
        for sent in [
            ipv4(
                17,
                [8, 8, 8, 8],
                &udp(53, &dns::tests::query(1, "example.com")),
            ),
            ipv4(1, [1, 1, 1, 1], &[8, 0, 0, 0, 0, 1, 0, 1]),
        ] {
            let a = classify(&sent, NET).expect("attempt");
            let answer = reply(&sent, &a).expect("reply");
            let (ip, rest) = etherparse::Ipv4Header::from_slice(&answer).expect("ip");
            assert_eq!(ip.source, a.dst.octets());
            assert_eq!(ip.destination, AGENT);
            let (icmp, quoted) = etherparse::Icmpv4Header::from_slice(rest).expect("icmp");
            assert_eq!(
                icmp.icmp_type,
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FilterProhibited)
            );
            assert_eq!(
                quoted,
                &sent[..28],
                "the header and 8 bytes of the original"
            );
            assert_eq!(
                icmp.icmp_type.calc_checksum(quoted),
                icmp.checksum,
                "checksum"
            );
        }
    }

    #[test]
    fn replies_to_cut_packets_are_none_not_panics() {
        let syn = ipv4(6, [1, 1, 1, 1], &tcp(443, 0x02));
        let a = classify(&syn, NET).expect("SYN");
        for cut in 0..syn.len() {
            let _ = reply(&syn[..cut], &a);
        }
        assert_eq!(reply(&syn[..24], &a), None);
    }
}
