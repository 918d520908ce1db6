//! `bottle sidecar netlock ADDR:PORT...`: the first init container of a bottle's agent
//! pod on Kubernetes (docs/design.md section 9.3). It locks the pod's network
//! namespace so that nothing in the pod reaches anything but the listed sidecar
//! endpoints (IPv4 TCP) and nothing connects in, then exits; the agent's containers
//! start only after it exited 0, and the lock outlives it (it is the namespace's).
//!
//! The lock is an nf_tables table (`inet bottle_netlock`, [`nft::ruleset`]) written in
//! one netlink transaction ([`nft::batch`]) on a `NETLINK_NETFILTER` socket: it needs
//! `NET_ADMIN` in the pod's namespace and nothing else. Chains have policy drop, so what
//! the rules do not accept is gone; the output chain refuses the rest at once (ICMP
//! administratively prohibited) so a connect fails instead of hanging. Packets to
//! agent-net's TUN device ([`crate::agent_net::TUN_NAME`]) are accepted: they end in its
//! trap, which refuses and audits them (section 1.2).
//!
//! After the transaction, [`prove`] checks the lock holds where packets really go:
//! datagrams to 198.51.100.1 (TEST-NET-2, routed nowhere) and to each endpoint's address
//! (UDP, which the lock never accepts) must be refused by the local stack.
//! A runtime whose netlink accepted the table but whose packets do not pass it (a
//! user-space network stack that only stores rules) fails here, and with it the pod.
//!
//! Under gVisor nothing in the pod can write the table: the node's chained CNI plugin
//! ([`cni`]) writes it before the pod's containers exist, and `netlock --verify`
//! ([`verify`]) runs in the pod in netlock's place, proving the lock is in force (and
//! failing the pod if it is not) without writing anything.

pub mod cni;
pub mod nft;

use std::io::Read as _;
use std::net::{SocketAddrV4, UdpSocket};

use crate::netlink::{self, NetlinkError};

const NETLINK_NETFILTER: i32 = 12;
const NLMSG_ERROR: u16 = 2;

/// The address [`prove`] sends to: TEST-NET-2 (RFC 5737), never routed anywhere
/// (not TEST-NET-1: this project's own machines sit on 192.0.2.0/24).
pub const PROBE: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(198, 51, 100, 1), 9);

/// The pod must not start: its namespace is not locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("netlock: no endpoint given (ADDR:PORT...)")]
    NoEndpoints,
    #[error("netlock: more than {max} endpoints", max = nft::MAX_ENDPOINTS)]
    TooMany,
    #[error("netlock: {0:?} is not an IPv4 ADDR:PORT")]
    Endpoint(String),
    #[error("netlock: the nf_tables transaction failed")]
    Netlink(#[from] NetlinkError),
    #[error(
        "netlock: the table was accepted but a datagram to {0} was sent: this runtime's network stack does not apply it"
    )]
    NotEnforced(SocketAddrV4),
    #[error(
        "netlock --verify: a datagram to {0} was sent: the pod's network is not locked (does its node chain the netlock CNI plugin?)"
    )]
    NotLocked(SocketAddrV4),
    #[error("netlock: checking the lock with a datagram to {0}")]
    Probe(SocketAddrV4, #[source] std::io::Error),
}

/// The endpoints from the command line: IPv4 `ADDR:PORT` each, at least one, at most
/// [`nft::MAX_ENDPOINTS`].
pub fn parse_endpoints(args: &[String]) -> Result<Vec<SocketAddrV4>, LockError> {
    if args.is_empty() {
        return Err(LockError::NoEndpoints);
    }
    if args.len() > nft::MAX_ENDPOINTS {
        return Err(LockError::TooMany);
    }
    args.iter()
        .map(|a| a.parse().map_err(|_| LockError::Endpoint(a.clone())))
        .collect()
}

/// Lock the namespace to `endpoints`, then [`prove`] it.
pub fn lock(endpoints: &[SocketAddrV4]) -> Result<(), LockError> {
    let chains = nft::ruleset(endpoints, crate::agent_net::TUN_NAME);
    let (batch, acks) = nft::batch(&chains, 1);
    transact(&batch, acks)?;
    prove(endpoints)?;
    tracing::info!(
        ?endpoints,
        table = nft::TABLE,
        "netlock: the pod's network is locked"
    );
    Ok(())
}

/// The lock someone else wrote (the node's [`cni`] plugin) is in force for `endpoints`:
/// [`prove`] alone, which needs no capability.
pub fn verify(endpoints: &[SocketAddrV4]) -> Result<(), LockError> {
    prove(endpoints).map_err(|e| match e {
        LockError::NotEnforced(to) => LockError::NotLocked(to),
        e => e,
    })?;
    tracing::info!(
        ?endpoints,
        "netlock: the pod's network is locked (verified)"
    );
    Ok(())
}

/// Send one batch and wait for the kernel's `acks` acknowledgements, or its first error.
fn transact(batch: &[u8], acks: usize) -> Result<(), NetlinkError> {
    let sock = netlink::socket(NETLINK_NETFILTER)?;
    sock.send(batch)?;
    let mut buf = vec![0u8; 32 << 10];
    let mut seen = 0;
    // Bounded: one answer per message of the batch.
    for _ in 0..acks {
        let n = (&sock).read(&mut buf)?;
        for (t, payload) in netlink::messages(&buf[..n])? {
            if t != NLMSG_ERROR {
                continue;
            }
            match netlink::errno(payload)? {
                0 => seen += 1,
                e => return Err(NetlinkError::Kernel(e)),
            }
        }
        if seen >= acks {
            return Ok(());
        }
    }
    Err(NetlinkError::Malformed)
}

/// The lock holds on the path packets take: a datagram to [`PROBE`] and one to each
/// endpoint's address (whose UDP is never accepted) are refused by the local stack
/// (EPERM from the output chain, or no route at all), never sent. Unlocked, the
/// endpoints' datagrams would reach only the sidecars.
pub fn prove(endpoints: &[SocketAddrV4]) -> Result<(), LockError> {
    use std::io::ErrorKind;
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| LockError::Probe(PROBE, e))?;
    let targets =
        std::iter::once(PROBE).chain(endpoints.iter().map(|e| SocketAddrV4::new(*e.ip(), 9)));
    for to in targets {
        match sock.send_to(b"netlock", to) {
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::NetworkUnreachable
                ) => {}
            Err(e) => return Err(LockError::Probe(to, e)),
            Ok(_) => return Err(LockError::NotEnforced(to)),
        }
    }
    Ok(())
}
