//! `bottle sidecar agent-net`: the container that holds the agent's network
//! namespace, and makes every way out of it other than the sidecars fail at once and
//! be audited.
//!
//! The agent joins this container's network namespace (`nodes::agent_net`), so what
//! its network looks like is decided here, by bottle's code, before the agent exists.
//! Docker gives an `--internal` network's containers `default via <gateway>`, and then
//! drops in the host's bridge whatever is sent that way (its isolation rule for
//! internal networks): a direct connect to an address outside the bottle would time
//! out and nobody would see it. At start, as root with `NET_ADMIN` and before any
//! other thread exists, [`prepare`] opens a TUN device ([`TUN_NAME`]) and points the
//! default route into it (rtnetlink, `sidecar::netlink`); the subnet's own route is
//! untouched, so the sidecars and Docker's DNS are reached as before. Then it drops to
//! the sidecar user for good (`sidecar::privs`): the device stays open, nothing else
//! is kept.
//!
//! [`Trap::run`] reads what the namespace routes into the device: every packet there
//! is an attempt to leave without the proxy ([`packet::classify`]). Each gets the
//! answer that makes it fail at once ([`packet::reply`]: a TCP reset, an ICMP
//! "administratively prohibited"), and a copy goes to pipelock's report port on the
//! gateway address (`pipelock::sink::REPORT_PORT`), where it becomes a `deny`/`direct`
//! audit line. Nothing is ever forwarded: there is nowhere to forward to.
//!
//! With `--no-trap` (a gVisor agent pod on Kubernetes, docs/design.md 9.5) it sets up
//! nothing and only holds the pod: gVisor has no TUN device with host networking, and
//! the node's chained CNI plugin has already locked the namespace to the sidecars, so
//! every other way out is refused there, at once but unaudited ([`NO_TRAP`]).

pub mod packet;

use std::net::UdpSocket;

use tun::AbstractDevice as _;

use crate::netlink::{self, IfAddr, NetlinkError};
use crate::pipelock::sink::REPORT_PORT;
use crate::privs::{self, PrivError};

/// agent-net's status with `--no-trap`.
pub const NO_TRAP: &str =
    "no trap: the node's lock refuses every way out but the sidecars (unaudited)";

/// The TUN device the agent's default route leads into.
pub const TUN_NAME: &str = "bottle0";

/// agent-net must not start: the agent would be left with Docker's route.
#[derive(Debug, thiserror::Error)]
pub enum TrapError {
    #[error("agent-net must start as root (it sets up the agent's network)")]
    NotRoot,
    #[error(transparent)]
    Privs(#[from] PrivError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("agent-net expects one network, net-internal; it has addresses {0:?}")]
    Interfaces(Vec<IfAddr>),
    #[error("opening the TUN device {TUN_NAME}")]
    Tun(#[from] tun::Error),
    #[error("the report socket towards pipelock: {0}")]
    Report(std::io::Error),
}

/// The namespace, set up: the TUN device, the subnet, the socket reports go out by.
pub struct Trap {
    tun: tun::Device,
    subnet: packet::Subnet,
    report: UdpSocket,
}

impl std::fmt::Debug for Trap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trap")
            .field("subnet", &self.subnet)
            .finish_non_exhaustive()
    }
}

/// With `--no-trap`: set up nothing, and drop root if it has it (the pod's shape gives
/// agent-net the trap's capabilities whichever way it runs).
pub fn hold() -> Result<(), TrapError> {
    if privs::is_root() {
        privs::single_threaded()?;
        privs::drop_to_sidecar_user()?;
    }
    Ok(())
}

/// Set up the namespace and drop root (see the module doc). Must run before any other
/// thread exists.
pub fn prepare() -> Result<Trap, TrapError> {
    if !privs::is_root() {
        return Err(TrapError::NotRoot);
    }
    privs::single_threaded()?;
    let mut route = netlink::Route::open()?;
    let addrs = route.addrs()?;
    let outside: Vec<IfAddr> = addrs
        .iter()
        .copied()
        .filter(|a| !a.addr.is_loopback())
        .collect();
    let [inside] = outside[..] else {
        return Err(TrapError::Interfaces(addrs));
    };
    let gateway = netlink::gateway_of(inside).ok_or(TrapError::Interfaces(addrs))?;
    let mut config = tun::Configuration::default();
    config.tun_name(TUN_NAME).up();
    let tun = tun::create(&config)?;
    let index = tun.tun_index()?;
    route.set_default_route(index as u32)?;
    let report = UdpSocket::bind((inside.addr, 0))
        .and_then(|s| s.connect((gateway.addr, REPORT_PORT)).map(|()| s))
        .map_err(TrapError::Report)?;
    privs::drop_to_sidecar_user()?;
    let subnet = packet::Subnet::of(inside);
    tracing::info!(device = TUN_NAME, %gateway.addr, "agent-net: the default route leads into the trap");
    Ok(Trap {
        tun,
        subnet,
        report,
    })
}

impl Trap {
    /// Answer and report every attempt until the device fails. Blocks: run it on a
    /// thread of its own.
    pub fn run(self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match self.tun.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let p = &buf[..n];
            let Some(attempt) = packet::classify(p, self.subnet) else {
                continue;
            };
            if let Some(answer) = packet::reply(p, &attempt) {
                let _ = self.tun.send(&answer);
            }
            // pipelock may be restarting: the attempt has failed all the same.
            let _ = self.report.send(&p[..n.min(packet::SNAP)]);
            tracing::debug!(to = %attempt.dst, port = attempt.port, "agent-net: attempt refused");
        }
    }
}
