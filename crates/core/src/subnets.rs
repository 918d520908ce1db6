//! Addresses for the bottles' networks (docs/design.md section 2, "Addresses"): each
//! network gets a /28 of its own from bottle's pool, chosen by the executor when it
//! creates the network. The subnet is not part of the desired spec (nor of its hash), as
//! the CA is not: the plan does not depend on what happened to be free.
//!
//! [`next_free`] is the pure part: the first /28 of the pool that overlaps nothing in
//! use. [`Allocator::create`] lists every network the engine has (every project's and
//! everyone else's; once per execution), adds the host's routes (read by the binary,
//! `crates/bottle/src/edge/host.rs`, and carried in [`Addressing`]) and what this run
//! has already claimed, and creates the network on the block it picked, with the
//! `bottle.subnet` label. The engine is the record: the subnet is in the network's IPAM
//! config, so it survives a crash, and Docker refuses a second network on an
//! overlapping subnet, so two applies racing for one block cannot both have it: the
//! loser sees [`EngineError::SubnetTaken`], lists again and takes the next free one (at
//! most [`MAX_ATTEMPTS`] times). A listing that leaves no block free is also made again
//! before the pool is called full.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use ipnet::{IpNet, Ipv4Net};

use bottle_contract::labels;
use bottle_engine::{Engine, EngineError, NetworkInfo, NetworkSpec};

/// The size of each network's subnet. net-internal holds up to five containers
/// (pipelock, egress, git-gate, supervise, agent-net); Docker reserves the network, the
/// broadcast and the gateway address: 8 of a /28's 16, leaving room for recreations. A
/// /29 (5 usable) would be full with no room to spare.
pub const BLOCK_PREFIX: u8 = 28;

/// The pool used when none is given: 10.213.0.0/16, 4096 /28s (2048 bottles). Outside
/// Docker's default pools (172.17-31.0.0/16, 192.168.0.0/16), the usual LAN ranges
/// (192.168.x, 10.0-10.10.x), and well-known tools' defaults in 10/8 (section 2).
pub const DEFAULT_POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 213, 0, 0), 16);

/// How the operator chooses another pool; named by every error about the pool.
pub const POOL_OPTION: &str = "--subnet-pool (or BOTTLE_SUBNET_POOL)";

/// How many blocks one network creation tries when the engine says each was taken (by
/// a concurrent apply) before it gives up.
pub const MAX_ATTEMPTS: usize = 16;

/// Routes shorter than this are catch-alls (the default route, a full-tunnel VPN's
/// `0.0.0.0/1` and `128.0.0.0/1`), not destinations a network could shadow: ignored.
pub const MIN_ROUTE_PREFIX: u8 = 8;

/// Where networks get their subnets from, and what to keep clear of besides the
/// engine's own networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addressing {
    /// The pool the /28s come from.
    pub pool: Ipv4Net,
    /// The host's IPv4 routes (destinations; catch-alls are ignored): a subnet
    /// overlapping one would shadow it.
    pub routes: Vec<Ipv4Net>,
}

impl Default for Addressing {
    fn default() -> Self {
        Addressing {
            pool: DEFAULT_POOL,
            routes: Vec::new(),
        }
    }
}

/// Why a pool was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Not an IPv4 block in `a.b.c.d/len` form.
    #[error("{text:?}: expected an IPv4 block such as {DEFAULT_POOL}")]
    Syntax {
        /// What was given.
        text: String,
    },
    /// The address has bits set past the prefix.
    #[error("{text}: host bits set (the block is {block})")]
    HostBits {
        /// What was given.
        text: String,
        /// The block it lies in.
        block: Ipv4Net,
    },
    /// The pool cannot hold one network.
    #[error("{pool}: smaller than one /{BLOCK_PREFIX}")]
    TooSmall {
        /// The pool.
        pool: Ipv4Net,
    },
    /// The pool overlaps addresses no bridge network may use.
    #[error("{pool}: overlaps {reserved} ({what})")]
    Reserved {
        /// The pool.
        pool: Ipv4Net,
        /// The reserved block.
        reserved: Ipv4Net,
        /// What the reserved block is.
        what: &'static str,
    },
}

/// Blocks a pool may not touch.
const RESERVED: [(Ipv4Net, &str); 4] = [
    (
        Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
        "this network",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
        "loopback",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
        "link-local",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 3),
        "multicast and reserved",
    ),
];

/// Read a pool: an IPv4 block `a.b.c.d/len` with no host bits, at least a /28, clear of
/// loopback, link-local, multicast and `0.0.0.0/8`.
pub fn parse_pool(text: &str) -> Result<Ipv4Net, PoolError> {
    let net: Ipv4Net = text.parse().map_err(|_| PoolError::Syntax {
        text: text.to_string(),
    })?;
    if net != net.trunc() {
        return Err(PoolError::HostBits {
            text: text.to_string(),
            block: net.trunc(),
        });
    }
    if net.prefix_len() > BLOCK_PREFIX {
        return Err(PoolError::TooSmall { pool: net });
    }
    if let Some(&(reserved, what)) = RESERVED.iter().find(|(r, _)| overlaps(net, *r)) {
        return Err(PoolError::Reserved {
            pool: net,
            reserved,
            what,
        });
    }
    Ok(net)
}

/// Do the two blocks share an address?
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first /28 of `pool` that overlaps no block of `used`, or `None` when there is
/// none. Skips past each overlapping block at once, so a nearly full large pool costs
/// no more than the number of blocks in use.
pub fn next_free(pool: Ipv4Net, used: &[Ipv4Net]) -> Option<Ipv4Net> {
    let size = 1u64 << (32 - BLOCK_PREFIX);
    let last = u64::from(u32::from(pool.broadcast()));
    let mut at = u64::from(u32::from(pool.network()));
    while at + size - 1 <= last {
        let addr = Ipv4Addr::from(u32::try_from(at).ok()?);
        let block = Ipv4Net::new(addr, BLOCK_PREFIX).ok()?;
        let Some(end) = used
            .iter()
            .filter(|u| overlaps(block, **u))
            .map(|u| u64::from(u32::from(u.broadcast())))
            .max()
        else {
            return Some(block);
        };
        // The next block boundary past everything that overlapped.
        at = (end.max(at + size - 1) + 1).div_ceil(size) * size;
    }
    None
}

/// The IPv4 subnets of `networks`.
pub fn ipv4_subnets(networks: &[NetworkInfo]) -> impl Iterator<Item = Ipv4Net> + '_ {
    networks
        .iter()
        .flat_map(|n| &n.subnets)
        .filter_map(|s| match s {
            IpNet::V4(v4) => Some(*v4),
            IpNet::V6(_) => None,
        })
}

/// Picks and records subnets for the networks one execution creates.
#[derive(Debug)]
pub struct Allocator<'a> {
    addressing: &'a Addressing,
    known: Mutex<Known>,
}

/// What an execution knows to be in use.
#[derive(Debug, Default)]
struct Known {
    /// The engine's IPv4 subnets as last listed; `None` until the first creation, and
    /// again after the engine refused a pick from them (they are stale).
    listed: Option<Vec<Ipv4Net>>,
    /// Blocks this execution picked, so concurrent creations do not pick one twice.
    claimed: Vec<Ipv4Net>,
}

impl<'a> Allocator<'a> {
    /// An allocator with nothing claimed yet, for one execution.
    pub fn new(addressing: &'a Addressing) -> Self {
        Allocator {
            addressing,
            known: Mutex::new(Known::default()),
        }
    }

    /// Create the network `spec` on a free /28 of the pool (`spec.subnet`, when set, is
    /// used as it is). The engine's networks are listed once per execution: again only
    /// when the engine refuses a block picked from that listing, or the listing leaves no
    /// block free. Fails with the pool named when no block is free.
    pub async fn create<E: Engine>(
        &self,
        engine: &E,
        spec: &NetworkSpec,
    ) -> Result<(), EngineError> {
        if spec.subnet.is_some() {
            return engine.create_network(spec).await;
        }
        let pool = self.addressing.pool;
        for _ in 0..MAX_ATTEMPTS {
            let block = match self.pick(None) {
                Some(b) => b,
                None => {
                    let listed = engine.list_networks(&[]).await?;
                    self.pick(Some(ipv4_subnets(&listed).collect()))
                        .ok_or_else(|| EngineError::Api {
                            op: "create network",
                            name: spec.name.clone(),
                            message: format!(
                                "the subnet pool {pool} has no free /{BLOCK_PREFIX} left (each overlaps a network of the engine or a route of the host); give a larger or another pool with {POOL_OPTION}"
                            ),
                        })?
                }
            };
            let mut spec = spec.clone();
            spec.subnet = Some(block);
            spec.labels.insert(labels::SUBNET.into(), block.to_string());
            match engine.create_network(&spec).await {
                Err(EngineError::SubnetTaken { .. }) => {
                    tracing::debug!(network = %spec.name, %block, "subnet taken meanwhile; trying the next");
                    self.lock().listed = None;
                }
                done => return done,
            }
        }
        Err(EngineError::Api {
            op: "create network",
            name: spec.name.clone(),
            message: format!(
                "the engine refused {MAX_ATTEMPTS} free-looking /{BLOCK_PREFIX}s of the subnet pool {pool} in a row as taken (by concurrent applies?); run apply again"
            ),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first free block given the engine's subnets (`fresh`, just listed, else as
    /// last listed), the host's routes and the blocks claimed, claimed for this
    /// execution; `None` when there is no listing yet or it leaves no block free.
    fn pick(&self, fresh: Option<Vec<Ipv4Net>>) -> Option<Ipv4Net> {
        let mut known = self.lock();
        if fresh.is_some() {
            known.listed = fresh;
        }
        let routes = self
            .addressing
            .routes
            .iter()
            .filter(|r| r.prefix_len() >= MIN_ROUTE_PREFIX);
        let used: Vec<Ipv4Net> = known
            .listed
            .as_ref()?
            .iter()
            .chain(routes)
            .chain(&known.claimed)
            .copied()
            .collect();
        let block = next_free(self.addressing.pool, &used)?;
        known.claimed.push(block);
        Some(block)
    }
}

#[cfg(test)]
#[path = "subnets_tests.rs"]
mod tests;
