//! What the desired state takes from the host besides the manifest, read once per command:
//! the sidecar binary (the sidecar image is made from it), the host's trust
//! roots (each agent's trust store starts from them), and the host's IPv4 routes (the
//! networks' subnets keep clear of them, `bottle_core::subnets`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use bottle_core::images::{self, Context};
use bottle_core::subnets::Addressing;
use ipnet::Ipv4Net;

/// The kernel's IPv4 routing table (the main table).
const ROUTE_TABLE: &str = "/proc/net/route";

/// The most of [`ROUTE_TABLE`] read (some 32 000 routes); the rest is ignored.
const ROUTE_TABLE_MAX: u64 = 4 << 20;

/// Where Debian keeps the host's trust roots.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The binary the sidecars run: `BOTTLE_SIDECAR_BINARY`, else this very executable
/// (static or not: [`linkage`](super::linkage) takes what a dynamic one needs).
pub fn find_sidecar_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BOTTLE_SIDECAR_BINARY").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().context("finding this executable, for the sidecar image")
}

/// The sidecar image's build context, from the binary at `binary`.
pub fn sidecar_context(binary: &Path) -> anyhow::Result<Context> {
    let files = super::linkage::sidecar_files(binary)
        .with_context(|| format!("the sidecar image from {}", binary.display()))?;
    Ok(images::sidecar_context(&files)?)
}

/// The host's trust roots. A host without the bundle gives none (the agent then trusts
/// only its bottle's CA, and a warning says so); any other failure to read it is an
/// error, never silently an empty bundle.
pub fn trust_roots() -> anyhow::Result<Arc<[u8]>> {
    match std::fs::read(HOST_BUNDLE) {
        Ok(b) => Ok(b.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                path = HOST_BUNDLE,
                "no host trust roots: agents trust only their bottle's CA"
            );
            Ok(Arc::from(&[][..]))
        }
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("reading the host trust roots {HOST_BUNDLE}")))
        }
    }
}

/// Where new networks take their subnets from: `pool`, clear of the host's routes.
pub fn addressing(pool: Ipv4Net) -> Addressing {
    Addressing {
        pool,
        routes: routes(),
    }
}

/// The destinations of the host's IPv4 routes (main table), from [`ROUTE_TABLE`]. A
/// host without it, or where it cannot be read, gives none, with a warning: the engine's
/// own networks are still kept clear of.
pub fn routes() -> Vec<Ipv4Net> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(ROUTE_TABLE)
        .and_then(|f| f.take(ROUTE_TABLE_MAX).read_to_string(&mut text));
    match read {
        Ok(_) => parse_routes(&text),
        Err(e) => {
            tracing::warn!(path = ROUTE_TABLE, error = %e, "cannot read the host's routes: subnets are kept clear of the engine's networks only");
            Vec::new()
        }
    }
}

/// The destinations in the text of `/proc/net/route`: per line after the header, the
/// destination and the mask as the kernel's native-endian hex words. Lines that do not
/// read as such (a header, a line cut at the read bound) are skipped.
fn parse_routes(text: &str) -> Vec<Ipv4Net> {
    let word = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|w| std::net::Ipv4Addr::from(w.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (dest, mask) = (word(cols.get(1)?)?, word(cols.get(7)?)?);
            Ipv4Net::with_netmask(dest, mask).ok().map(|n| n.trunc())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_route_table_reads_as_destinations() {
        // This host's table (little-endian words), a line cut short, and a bad mask.
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            br-8bce\t0000A8C0\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            tun0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
            bad\t0000000A\t00000000\t0001\t0\t0\t0\t00FF00FF\t0\t0\t0\n\
            cut\t000011";
        let want: Vec<Ipv4Net> = [
            "0.0.0.0/0",
            "172.17.0.0/16",
            "192.168.0.0/20",
            "192.0.2.0/24",
            "10.0.0.0/8",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        if cfg!(target_endian = "little") {
            assert_eq!(parse_routes(text), want);
        }
    }

    #[test]
    fn this_hosts_routes_are_read() {
        // Every Linux host has at least a route for its loopback or a link; the default
        // route alone is possible, so only check that reading works and is bounded.
        let routes = routes();
        assert!(routes.len() < 100_000, "{}", routes.len());
    }
}
