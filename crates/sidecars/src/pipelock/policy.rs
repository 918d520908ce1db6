//! The allowlist: which destination hosts pipelock lets through, decided on the
//! normalized name before any DNS query or connection.
//!
//! Entries, CIDRs and the host a request names are all parsed by the one host grammar
//! (`bottle_contract::host`), the manifest's and the agent's proposals' too: names are
//! compared lowercased, without a trailing dot, in their IDNA ASCII form; an entry is an
//! exact name or `*.suffix`, which matches names below `suffix` (not `suffix` itself).
//! IP literals, in every notation, never match a name entry: they pass only when an
//! `allow_cidrs` entry holds them.

use std::net::IpAddr;

pub use bottle_contract::host::{Allowlist, Cidr, Host, HostError, HostName, HostPattern};

use super::config::{Config, ConfigError};

/// Parse a host as written in a request (`Example.COM.`, `[::1]`, `bücher.de`,
/// `0x7f.1`) by the one host grammar.
pub fn normalize(raw: &str) -> Result<Host, HostError> {
    Host::parse(raw)
}

/// The compiled allowlist.
pub struct Policy {
    /// What may be reached: the one rule egress decides by too.
    pub list: Allowlist,
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
            entries.push(HostPattern::parse(raw).map_err(ConfigError::Host)?);
        }
        let cidrs = cfg
            .allow_cidrs
            .iter()
            .map(|c| Cidr::parse(c).map_err(ConfigError::Host))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            list: Allowlist { entries, cidrs },
        })
    }

    /// Is `ip` inside an allowed CIDR?
    pub fn cidr_allows(&self, ip: IpAddr) -> bool {
        self.list.allows(&Host::Ip(ip))
    }

    /// The labels of an allowed `name` that the agent chose, to be judged for encoded
    /// data (`bottle_secretscan::hostname`): those below the longest wildcard entry that
    /// matches. None when an exact entry names it (the operator fixed every label, so
    /// nothing can vary) or no entry matches.
    pub fn chosen_labels<'a>(&self, name: &'a HostName) -> Option<&'a str> {
        if self
            .list
            .entries
            .iter()
            .any(|e| matches!(e, HostPattern::Exact(n) if n == name))
        {
            return None;
        }
        let base = self
            .list
            .entries
            .iter()
            .filter(|e| matches!(e, HostPattern::Below(_)) && e.matches(name))
            .map(|e| e.base().as_str().len())
            .max()?;
        // `name` is strictly below the base: it ends with `.base`.
        name.as_str()
            .get(..name.as_str().len().checked_sub(base + 1)?)
    }

    pub fn check(&self, host: &Host) -> Verdict {
        match host {
            _ if self.list.allows(host) => Verdict::Allow,
            Host::Ip(_) => Verdict::IpLiteral,
            Host::Name(_) => Verdict::NotAllowed,
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
    fn chosen_labels_are_below_the_longest_wildcard_and_exact_names_have_none() {
        let p = policy(&["*.example.com", "*.cdn.example.com", "exact.example.com"]);
        let chosen = |h: &str| {
            let n = HostName::parse(h).unwrap();
            p.chosen_labels(&n).map(str::to_string)
        };
        assert_eq!(chosen("a.b.example.com").as_deref(), Some("a.b"));
        assert_eq!(chosen("x.cdn.example.com").as_deref(), Some("x"));
        assert_eq!(chosen("exact.example.com"), None);
        assert_eq!(chosen("api.anthropic.com"), None, "a route is exact");
        assert_eq!(chosen("other.org"), None);
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
        for bad in ["", "a..b", "a_b.com", "a b.com", "a.123", &"a".repeat(300)] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
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
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
    }
}
