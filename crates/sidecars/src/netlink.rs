//! Just enough rtnetlink for the two sidecars that set up a network namespace:
//! pipelock takes net-internal's gateway address (dump the IPv4 routes and addresses,
//! pick the interface, add one address) and agent-net points the default route at its
//! TUN device (replace one route). Messages are built and read by hand (pure
//! functions, tested below); the socket is plain `socket2`, no `unsafe`. netlock's
//! nf_tables batches (`sidecar::netlock::nft`) share the framing ([`messages`],
//! [`errno`], `align`).

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_ROUTE: i32 = 0;
const AF_INET: u8 = 2;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;

const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RT_TABLE_MAIN: u32 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const EEXIST: i32 = 17;

const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;
const IFADDRMSG: usize = 8;

/// A netlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink")]
    Io(#[from] std::io::Error),
    #[error("netlink: the kernel answered errno {0}")]
    Kernel(i32),
    #[error("netlink: malformed answer")]
    Malformed,
}

/// One IPv4 address on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// A request: header and body, padded.
pub(crate) fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + body.len();
    let mut m = Vec::with_capacity(align(len));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m.resize(align(len), 0);
    m
}

/// Append one attribute: length, type, data, padding.
pub(crate) fn attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(align(out.len()), 0);
}

pub(crate) fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Dump every IPv4 route.
pub fn get_routes(seq: u32) -> Vec<u8> {
    let mut body = [0u8; RTMSG];
    body[0] = AF_INET;
    request(RTM_GETROUTE, NLM_F_DUMP, seq, &body)
}

/// Dump every IPv4 address.
pub fn get_addrs(seq: u32) -> Vec<u8> {
    let mut body = [0u8; IFADDRMSG];
    body[0] = AF_INET;
    request(RTM_GETADDR, NLM_F_DUMP, seq, &body)
}

/// Add `a` (a second address is fine) to its interface.
pub fn new_addr(seq: u32, a: IfAddr) -> Vec<u8> {
    let mut body = vec![AF_INET, a.prefix, 0, 0];
    body.extend_from_slice(&a.index.to_ne_bytes());
    for kind in [IFA_LOCAL, IFA_ADDRESS] {
        attr(&mut body, kind, &a.addr.octets());
    }
    request(
        RTM_NEWADDR,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        &body,
    )
}

/// Make the main table's IPv4 default route go out of interface `oif`, with no
/// gateway (a point-to-point device), in place of whatever it was.
pub fn replace_default_route(seq: u32, oif: u32) -> Vec<u8> {
    let mut body = vec![
        AF_INET,
        0,
        0,
        0,
        RT_TABLE_MAIN as u8,
        RTPROT_BOOT,
        RT_SCOPE_LINK,
        RTN_UNICAST,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes());
    for (kind, value) in [(RTA_TABLE, RT_TABLE_MAIN), (RTA_OIF, oif)] {
        attr(&mut body, kind, &value.to_ne_bytes());
    }
    request(
        RTM_NEWROUTE,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        &body,
    )
}

/// The error number of an `NLMSG_ERROR` payload, positive (0: an acknowledgement).
pub(crate) fn errno(payload: &[u8]) -> Result<i32, NetlinkError> {
    payload
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| i32::from_ne_bytes(b).wrapping_neg())
        .ok_or(NetlinkError::Malformed)
}

/// The messages in one datagram: (type, payload).
pub fn messages(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, NetlinkError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR || len > buf.len() {
            return Err(NetlinkError::Malformed);
        }
        out.push((u16::from_ne_bytes([buf[4], buf[5]]), &buf[NLMSG_HDR..len]));
        buf = buf.get(align(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// The attributes after a fixed header of `fixed` bytes: (type, data).
fn attrs(payload: &[u8], fixed: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut buf = payload.get(fixed..).unwrap_or_default();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((u16::from_ne_bytes([buf[2], buf[3]]) & 0x3FFF, &buf[4..len]));
        buf = buf.get(align(len)..).unwrap_or_default();
    }
    out
}

fn u32_of(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// The output interface of a default route of the main table, from one
/// `RTM_NEWROUTE` payload.
pub fn default_route_oif(payload: &[u8]) -> Option<u32> {
    let fixed = payload.get(..RTMSG)?;
    if fixed[0] != AF_INET || fixed[1] != 0 {
        return None;
    }
    let mut table = u32::from(fixed[4]);
    let mut oif = None;
    for (kind, data) in attrs(payload, RTMSG) {
        match kind {
            RTA_TABLE => table = u32_of(data)?,
            RTA_OIF => oif = u32_of(data),
            _ => {}
        }
    }
    (table == RT_TABLE_MAIN).then_some(oif).flatten()
}

/// The address of one `RTM_NEWADDR` payload.
pub fn if_addr(payload: &[u8]) -> Option<IfAddr> {
    let fixed = payload.get(..IFADDRMSG)?;
    if fixed[0] != AF_INET {
        return None;
    }
    let index = u32_of(&fixed[4..8])?;
    let mut local = None;
    let mut address = None;
    for (kind, data) in attrs(payload, IFADDRMSG) {
        let ip = data
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from);
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            _ => {}
        }
    }
    Some(IfAddr {
        index,
        addr: local.or(address)?,
        prefix: fixed[1],
    })
}

/// The interface of net-internal and its address: of the interfaces with a global IPv4
/// address, the one the default route does not leave by. Docker puts a dual-homed
/// container's default route on the network that is not `--internal`, always, so
/// with exactly two such interfaces the answer is certain; anything else is `None`.
pub fn internal_interface(default_oifs: &[u32], addrs: &[IfAddr]) -> Option<IfAddr> {
    let [oif] = default_oifs else { return None };
    let global: Vec<&IfAddr> = addrs
        .iter()
        .filter(|a| !a.addr.is_loopback() && !a.addr.is_link_local())
        .collect();
    let mut interfaces: Vec<u32> = global.iter().map(|a| a.index).collect();
    interfaces.sort_unstable();
    interfaces.dedup();
    if interfaces.len() != 2 || !interfaces.contains(oif) {
        return None;
    }
    let mut inside = global.into_iter().filter(|a| a.index != *oif);
    match (inside.next(), inside.next()) {
        (Some(a), None) => Some(*a),
        _ => None,
    }
}

/// The gateway Docker's IPAM gives the subnet of `a`: its first address. `None` for
/// subnets too small to have one, or when it is `a` itself.
pub fn gateway_of(a: IfAddr) -> Option<IfAddr> {
    if a.prefix == 0 || a.prefix > 30 {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(a.prefix));
    let gw = Ipv4Addr::from((u32::from(a.addr) & mask) + 1);
    (gw != a.addr).then_some(IfAddr { addr: gw, ..a })
}

/// A netlink socket of `protocol` whose reads give up after 2 s.
pub(crate) fn socket(protocol: i32) -> Result<Socket, NetlinkError> {
    let sock = Socket::new(
        Domain::from(AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(protocol)),
    )?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(sock)
}

/// A NETLINK_ROUTE socket.
pub struct Route {
    sock: Socket,
    seq: u32,
}

impl Route {
    pub fn open() -> Result<Route, NetlinkError> {
        Ok(Route {
            sock: socket(NETLINK_ROUTE)?,
            seq: 0,
        })
    }

    /// Sends `req` (built with the next sequence number) and collects the payloads of
    /// the answer's messages of type `kind` until the dump is done or the kernel acks.
    fn exchange(
        &mut self,
        build: impl FnOnce(u32) -> Vec<u8>,
        kind: u16,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.seq += 1;
        self.sock.send(&build(self.seq))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 << 10];
        // Bounded: a dump of a container's few routes is a handful of datagrams.
        for _ in 0..256 {
            let n = (&self.sock).read(&mut buf)?;
            for (t, payload) in messages(&buf[..n])? {
                match t {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        return match errno(payload)? {
                            0 => Ok(out),
                            e => Err(NetlinkError::Kernel(e)),
                        };
                    }
                    t if t == kind => out.push(payload.to_vec()),
                    _ => {}
                }
            }
        }
        Err(NetlinkError::Malformed)
    }

    /// Output interfaces of the main table's IPv4 default routes.
    pub fn default_oifs(&mut self) -> Result<Vec<u32>, NetlinkError> {
        let routes = self.exchange(get_routes, RTM_NEWROUTE)?;
        Ok(routes.iter().filter_map(|p| default_route_oif(p)).collect())
    }

    /// Every IPv4 address.
    pub fn addrs(&mut self) -> Result<Vec<IfAddr>, NetlinkError> {
        let addrs = self.exchange(get_addrs, RTM_NEWADDR)?;
        Ok(addrs.iter().filter_map(|p| if_addr(p)).collect())
    }

    /// Sends the default route out of `oif` (see [`replace_default_route`]).
    pub fn set_default_route(&mut self, oif: u32) -> Result<(), NetlinkError> {
        self.exchange(|seq| replace_default_route(seq, oif), RTM_NEWROUTE)
            .map(drop)
    }

    /// Adds `a`; already there is fine.
    pub fn add_addr(&mut self, a: IfAddr) -> Result<(), NetlinkError> {
        match self.exchange(|seq| new_addr(seq, a), RTM_NEWADDR) {
            Err(NetlinkError::Kernel(EEXIST)) => Ok(()),
            r => r.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        super::attr(&mut a, kind, data);
        a
    }

    fn route(dst_len: u8, table: u32, oif: u32) -> Vec<u8> {
        let mut p = vec![AF_INET, dst_len, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        p.extend(attr(RTA_TABLE, &table.to_ne_bytes()));
        p.extend(attr(RTA_OIF, &oif.to_ne_bytes()));
        p
    }

    fn addr(index: u32, ip: [u8; 4], prefix: u8) -> Vec<u8> {
        let mut p = vec![AF_INET, prefix, 0, 0];
        p.extend_from_slice(&index.to_ne_bytes());
        p.extend(attr(IFA_ADDRESS, &ip));
        p.extend(attr(IFA_LOCAL, &ip));
        p
    }

    #[test]
    fn requests_are_well_formed_and_read_back() {
        let a = IfAddr {
            index: 7,
            addr: Ipv4Addr::new(172, 19, 0, 1),
            prefix: 16,
        };
        let m = new_addr(3, a);
        assert_eq!(m.len() % 4, 0);
        let msgs = messages(&m).expect("messages");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, RTM_NEWADDR);
        assert_eq!(if_addr(msgs[0].1), Some(a));
        let flags = u16::from_ne_bytes([m[6], m[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        let both = [get_routes(1), get_addrs(2)].concat();
        let types: Vec<u16> = messages(&both)
            .expect("messages")
            .iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(types, [RTM_GETROUTE, RTM_GETADDR]);
    }

    #[test]
    fn the_default_route_request_reads_back_as_a_default_route_out_of_its_device() {
        let m = replace_default_route(4, 9);
        assert_eq!(m.len() % 4, 0);
        let msgs = messages(&m).expect("messages");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, RTM_NEWROUTE);
        assert_eq!(default_route_oif(msgs[0].1), Some(9));
        let flags = u16::from_ne_bytes([m[6], m[7]]);
        assert_eq!(
            flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
    }

    #[test]
    fn only_main_table_default_routes_count() {
        assert_eq!(default_route_oif(&route(0, RT_TABLE_MAIN, 5)), Some(5));
        assert_eq!(default_route_oif(&route(16, RT_TABLE_MAIN, 5)), None);
        assert_eq!(default_route_oif(&route(0, 255, 5)), None);
        assert_eq!(default_route_oif(&[AF_INET, 0]), None);
    }

    #[test]
    fn the_internal_interface_is_the_one_without_the_default_route() {
        let addrs: Vec<IfAddr> = [
            addr(1, [127, 0, 0, 1], 8),
            addr(20, [172, 19, 0, 2], 16),
            addr(22, [172, 20, 0, 2], 16),
        ]
        .iter()
        .filter_map(|p| if_addr(p))
        .collect();
        let inside = internal_interface(&[22], &addrs).expect("internal");
        assert_eq!(inside.index, 20);
        assert_eq!(
            gateway_of(inside).map(|g| g.addr),
            Some(Ipv4Addr::new(172, 19, 0, 1))
        );
        // Not certain: no default route, two, or a third interface.
        assert_eq!(internal_interface(&[], &addrs), None);
        assert_eq!(internal_interface(&[20, 22], &addrs), None);
        let mut three = addrs.clone();
        three.push(IfAddr {
            index: 30,
            addr: Ipv4Addr::new(10, 0, 0, 2),
            prefix: 24,
        });
        assert_eq!(internal_interface(&[22], &three), None);
        assert_eq!(internal_interface(&[99], &addrs), None);
    }

    #[test]
    fn the_gateway_is_the_first_address_of_the_subnet() {
        let a = |ip: [u8; 4], prefix| IfAddr {
            index: 1,
            addr: Ipv4Addr::from(ip),
            prefix,
        };
        assert_eq!(
            gateway_of(a([10, 1, 2, 77], 24)).map(|g| g.addr),
            Some(Ipv4Addr::new(10, 1, 2, 1))
        );
        assert_eq!(gateway_of(a([10, 1, 2, 1], 24)), None);
        assert_eq!(gateway_of(a([10, 1, 2, 1], 31)), None);
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let mut m = get_routes(1);
        m[0] = 200;
        assert!(messages(&m).is_err());
        m[0] = 3;
        assert!(messages(&m).is_err());
        assert!(messages(&[1, 2, 3]).expect("short tail").is_empty());
        assert_eq!(if_addr(&[AF_INET, 16, 0, 0, 1, 0, 0, 0, 255, 255]), None);
        assert_eq!(default_route_oif(&[]), None);
    }
}
