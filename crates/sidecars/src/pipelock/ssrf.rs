//! The SSRF guard: resolve an allowed name once, refuse internal addresses, and hand
//! back the vetted address to connect to (no second resolution, so no DNS-rebinding
//! window).
//!
//! Resolution goes through [`Resolve`]; the sidecar uses hickory-resolver (its own DNS
//! client reading the container's `/etc/resolv.conf`, never libc's resolver, which a
//! static binary must not call), tests inject a map.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;

use super::policy::{Cidr, Policy};

/// A boxed future, for the object-safe resolver trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Name resolution failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve {host}: {message}")]
pub struct ResolveError {
    pub host: String,
    pub message: String,
}

/// Resolves a host name to its addresses.
pub trait Resolve: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>>;
}

/// The sidecar's resolver: `/etc/hosts` (read again whenever it changes: Docker
/// rewrites it on network changes while pipelock runs), then hickory with the system
/// configuration (Docker's embedded DNS).
pub struct HickoryResolve {
    dns: hickory_resolver::TokioResolver,
    hosts: HostsFile,
}

impl HickoryResolve {
    pub fn from_system() -> Result<HickoryResolve, ResolveError> {
        let mut b = hickory_resolver::Resolver::builder_tokio().map_err(|e| ResolveError {
            host: "/etc/resolv.conf".into(),
            message: e.to_string(),
        })?;
        // The hosts file is ours (below), read fresh, not a copy taken at start.
        b.options_mut().use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let dns = b.build().map_err(|e| ResolveError {
            host: "resolver".into(),
            message: e.to_string(),
        })?;
        Ok(HickoryResolve {
            dns,
            hosts: HostsFile::new("/etc/hosts"),
        })
    }
}

impl Resolve for HickoryResolve {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move {
            if let Some(ips) = self.hosts.lookup(host) {
                return Ok(ips);
            }
            // A trailing dot: the name is absolute, no search domains.
            let fqdn = format!("{host}.");
            let ips = self
                .dns
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| ResolveError {
                    host: host.to_string(),
                    message: e.to_string(),
                })?;
            Ok(ips.iter().collect())
        })
    }
}

type HostsMap = std::collections::HashMap<String, Vec<IpAddr>>;

/// A hosts file, parsed again when its modification time or size changes.
pub struct HostsFile {
    path: std::path::PathBuf,
    cache: std::sync::Mutex<(Option<(std::time::SystemTime, u64)>, HostsMap)>,
}

impl HostsFile {
    pub fn new(path: impl Into<std::path::PathBuf>) -> HostsFile {
        HostsFile {
            path: path.into(),
            cache: std::sync::Mutex::new((None, HostsMap::new())),
        }
    }

    /// The addresses the file gives `host` (lowercase, no trailing dot), if any.
    pub fn lookup(&self, host: &str) -> Option<Vec<IpAddr>> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != stamp {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            *cache = (stamp, parse_hosts(&text));
        }
        cache.1.get(host).cloned()
    }
}

/// `ADDRESS NAME [ALIAS...]` lines; `#` starts a comment.
pub fn parse_hosts(text: &str) -> HostsMap {
    let mut map = HostsMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in words {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let ips = map.entry(name).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    map
}

/// Address ranges that are never reached unless an `allow_cidrs` entry holds them.
const DENIED_V4: [(Cidr, &str); 14] = [
    (Cidr::v4(0, 0, 0, 0, 8), "this-network"),
    (Cidr::v4(10, 0, 0, 0, 8), "private"),
    (Cidr::v4(100, 64, 0, 0, 10), "carrier-grade-nat"),
    (Cidr::v4(127, 0, 0, 0, 8), "loopback"),
    (Cidr::v4(169, 254, 0, 0, 16), "link-local"),
    (Cidr::v4(172, 16, 0, 0, 12), "private"),
    (Cidr::v4(192, 0, 0, 0, 24), "ietf-protocol"),
    (Cidr::v4(192, 0, 2, 0, 24), "documentation"),
    (Cidr::v4(192, 168, 0, 0, 16), "private"),
    (Cidr::v4(198, 18, 0, 0, 15), "benchmarking"),
    (Cidr::v4(198, 51, 100, 0, 24), "documentation"),
    (Cidr::v4(203, 0, 113, 0, 24), "documentation"),
    (Cidr::v4(224, 0, 0, 0, 4), "multicast"),
    (Cidr::v4(240, 0, 0, 0, 4), "reserved"),
];

/// Why an address is internal, or None when it is a public address.
pub fn internal_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => DENIED_V4
            .iter()
            .find(|(c, _)| c.contains(IpAddr::V4(v4)))
            .map(|(_, why)| *why),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.to_ipv4_mapped().is_some() {
        Some("ipv4-mapped")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if seg[0] & 0xff00 == 0xff00 {
        Some("multicast")
    } else if seg[..6] == [0; 6] {
        Some("ipv4-compatible")
    } else if seg[0] == 0x64 && seg[1] == 0xff9b {
        Some("nat64")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("documentation")
    } else if seg[0] == 0x2002 || (seg[0] == 0x2001 && seg[1] == 0) {
        // 6to4 and Teredo embed IPv4 addresses that may be internal.
        Some("ipv4-tunnel")
    } else {
        None
    }
}

/// Why a host was not given an address to connect to.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SsrfError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("{host} resolves to {ip}, a {reason} address")]
    Internal {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
}

/// Resolve `host` and vet every address; the first one is the one to connect to.
/// Any internal address refuses the whole name (a name that mixes public and internal
/// answers is not trusted).
pub async fn vet(resolver: &dyn Resolve, policy: &Policy, host: &str) -> Result<IpAddr, SsrfError> {
    let ips = resolver.lookup(host).await?;
    let Some(&first) = ips.first() else {
        return Err(SsrfError::NoAddress {
            host: host.to_string(),
        });
    };
    for &ip in &ips {
        vet_ip(policy, host, ip)?;
    }
    Ok(first)
}

/// Vet one address (also used for IP literals the policy let through).
pub fn vet_ip(policy: &Policy, host: &str, ip: IpAddr) -> Result<(), SsrfError> {
    if policy.cidr_allows(ip) {
        return Ok(());
    }
    match internal_reason(ip) {
        Some(reason) => Err(SsrfError::Internal {
            host: host.to_string(),
            ip,
            reason,
        }),
        None => Ok(()),
    }
}

/// A resolver from a fixed map, for tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct MapResolve(pub std::collections::HashMap<String, Vec<IpAddr>>);

#[cfg(any(test, feature = "test-util"))]
impl MapResolve {
    pub fn with(mut self, host: &str, ips: &[&str]) -> Self {
        self.0.insert(
            host.to_string(),
            ips.iter().map(|s| s.parse().expect("test ip")).collect(),
        );
        self
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Resolve for MapResolve {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move {
            self.0.get(host).cloned().ok_or_else(|| ResolveError {
                host: host.to_string(),
                message: "NXDOMAIN".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1 localhost\n# 10.0.0.1 commented\n").unwrap();
        let h = HostsFile::new(&path);
        assert_eq!(
            h.lookup("localhost"),
            Some(vec!["127.0.0.1".parse().unwrap()])
        );
        assert_eq!(h.lookup("commented"), None);
        std::fs::write(
            &path,
            "127.0.0.1 localhost\n169.254.169.254 Meta.Test. meta2.test # x\n",
        )
        .unwrap();
        assert_eq!(
            h.lookup("meta.test"),
            Some(vec!["169.254.169.254".parse().unwrap()])
        );
        assert!(h.lookup("meta2.test").is_some());
    }
    use crate::pipelock::config::Config;

    fn policy(cidrs: &[&str]) -> Policy {
        Policy::from_config(&Config {
            allow_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn internal_ranges() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.20.0.5", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.100.1.1", "carrier-grade-nat"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "this-network"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "ipv4-mapped"),
            ("::ffff:8.8.8.8", "ipv4-mapped"),
            ("64:ff9b::a00:1", "nat64"),
            ("2002:a00:1::1", "ipv4-tunnel"),
        ] {
            assert_eq!(internal_reason(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(internal_reason(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn vet_resolves_once_and_refuses_internal_answers() {
        let r = MapResolve::default()
            .with("good.test", &["93.184.216.34"])
            .with("meta.test", &["169.254.169.254"])
            .with("mixed.test", &["93.184.216.34", "10.0.0.1"])
            .with("lan.test", &["10.0.0.7"])
            .with("empty.test", &[]);
        let p = policy(&[]);
        assert_eq!(
            vet(&r, &p, "good.test").await.unwrap(),
            "93.184.216.34".parse::<IpAddr>().unwrap()
        );
        for h in ["meta.test", "mixed.test", "lan.test"] {
            assert!(matches!(
                vet(&r, &p, h).await,
                Err(SsrfError::Internal { .. })
            ));
        }
        assert!(matches!(
            vet(&r, &p, "empty.test").await,
            Err(SsrfError::NoAddress { .. })
        ));
        assert!(matches!(
            vet(&r, &p, "nx.test").await,
            Err(SsrfError::Resolve(_))
        ));
        // An allowed CIDR lets an internal address through.
        let p = policy(&["10.0.0.0/24"]);
        assert!(vet(&r, &p, "lan.test").await.is_ok());
        assert!(vet(&r, &p, "meta.test").await.is_err());
    }
}
