//! The allowlist: which destination hosts pipelock lets through, decided on the
//! normalized name before any DNS query or connection.
//!
//! Names are compared lowercased, without a trailing dot, in their IDNA ASCII form.
//! An entry is an exact name or `*.suffix`, which matches names below `suffix` (not
//! `suffix` itself). IP literals never match a name entry: they pass only when an
//! `allow_cidrs` entry holds them.

use std::net::IpAddr;

use super::config::{Config, ConfigError};

/// Why a host name is refused before it is even compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host name")]
    Empty,
    #[error("host name is not valid IDNA: {0}")]
    Idna(String),
    #[error("host name has a character outside [a-z0-9.-]")]
    BadChar,
    #[error("host name has an empty label")]
    EmptyLabel,
    #[error("host name is too long")]
    TooLong,
}

/// A destination host, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Normalize a host as written in a request (`Example.COM.`, `[::1]`, `bücher.de`).
pub fn normalize(raw: &str) -> Result<Host, HostError> {
    let s = raw.strip_suffix('.').unwrap_or(raw);
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let ascii = if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(s).map_err(|e| HostError::Idna(e.to_string()))?
    };
    if ascii.len() > 253 {
        return Err(HostError::TooLong);
    }
    if !ascii
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(HostError::BadChar);
    }
    if ascii.split('.').any(str::is_empty) {
        return Err(HostError::EmptyLabel);
    }
    Ok(Host::Name(ascii))
}

/// A CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() { max } else { p.parse().ok()? };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(x)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(x) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(x)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(x) & mask
            }
            _ => false,
        }
    }
}

enum Entry {
    Exact(String),
    /// `*.suffix`, stored as `.suffix`.
    Below(String),
}

/// The compiled allowlist.
pub struct Policy {
    entries: Vec<Entry>,
    pub cidrs: Vec<Cidr>,
}

/// The verdict on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Not on the allowlist.
    NotAllowed,
    /// An IP literal outside every allowed CIDR.
    IpLiteral,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Result<Policy, ConfigError> {
        let mut entries = Vec::new();
        for raw in cfg.allow.iter().chain(&cfg.routes) {
            let (wild, name) = match raw.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, raw.as_str()),
            };
            match normalize(name).map_err(|e| ConfigError::Host(raw.clone(), e))? {
                Host::Name(n) if wild => entries.push(Entry::Below(format!(".{n}"))),
                Host::Name(n) => entries.push(Entry::Exact(n)),
                Host::Ip(_) => return Err(ConfigError::Cidr(raw.clone())),
            }
        }
        let cidrs = cfg
            .allow_cidrs
            .iter()
            .map(|c| Cidr::parse(c).ok_or_else(|| ConfigError::Cidr(c.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Policy { entries, cidrs })
    }

    /// Is `ip` inside an allowed CIDR?
    pub fn cidr_allows(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(ip))
    }

    pub fn check(&self, host: &Host) -> Verdict {
        match host {
            Host::Ip(ip) if self.cidr_allows(*ip) => Verdict::Allow,
            Host::Ip(_) => Verdict::IpLiteral,
            Host::Name(n) => {
                let ok = self.entries.iter().any(|e| match e {
                    Entry::Exact(x) => x == n,
                    Entry::Below(suffix) => n.ends_with(suffix.as_str()),
                });
                if ok {
                    Verdict::Allow
                } else {
                    Verdict::NotAllowed
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> Policy {
        Policy::from_config(&Config {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            routes: vec!["api.anthropic.com".into()],
            allow_cidrs: vec!["203.0.113.0/24".into()],
            ..Default::default()
        })
        .unwrap()
    }

    fn check(p: &Policy, h: &str) -> Verdict {
        p.check(&normalize(h).unwrap())
    }

    #[test]
    fn exact_and_wildcard_with_normalization() {
        let p = policy(&["pypi.org", "*.pythonhosted.org", "bücher.de"]);
        assert_eq!(check(&p, "pypi.org"), Verdict::Allow);
        assert_eq!(check(&p, "PyPI.ORG."), Verdict::Allow);
        assert_eq!(check(&p, "files.pythonhosted.org"), Verdict::Allow);
        assert_eq!(check(&p, "a.b.pythonhosted.org"), Verdict::Allow);
        assert_eq!(check(&p, "pythonhosted.org"), Verdict::NotAllowed);
        assert_eq!(check(&p, "evilpythonhosted.org"), Verdict::NotAllowed);
        assert_eq!(check(&p, "pypi.org.evil.com"), Verdict::NotAllowed);
        assert_eq!(check(&p, "xn--bcher-kva.de"), Verdict::Allow);
        assert_eq!(check(&p, "BÜCHER.de"), Verdict::Allow);
        assert_eq!(check(&p, "api.anthropic.com"), Verdict::Allow);
        assert_eq!(check(&p, "example.com"), Verdict::NotAllowed);
    }

    #[test]
    fn ip_literals_need_a_cidr() {
        let p = policy(&["pypi.org"]);
        assert_eq!(check(&p, "127.0.0.1"), Verdict::IpLiteral);
        assert_eq!(check(&p, "[::1]"), Verdict::IpLiteral);
        assert_eq!(check(&p, "203.0.113.9"), Verdict::Allow);
        assert_eq!(check(&p, "203.0.114.9"), Verdict::IpLiteral);
    }

    #[test]
    fn malformed_names_are_refused() {
        assert_eq!(normalize(""), Err(HostError::Empty));
        assert_eq!(normalize("a..b"), Err(HostError::EmptyLabel));
        assert_eq!(normalize("a_b.com"), Err(HostError::BadChar));
        assert_eq!(normalize("a b.com"), Err(HostError::BadChar));
        assert!(normalize(&"a".repeat(300)).is_err());
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("fc00::/7")
                .unwrap()
                .contains("fd00::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope/8").is_none());
    }
}
