//! Which upstream a request may reach, and with what credential: host (and optional path
//! prefix) matching over `egress.routes`, then `egress.allow` and `egress.allow_cidrs`
//! (pipelock's [`Allowlist`], the same rule); everything else is denied.
//!
//! This is the egress proxy's own, simple check. The full firewall (SSRF guard, DLP) is
//! pipelock's.

use std::fmt;

use bottle_contract::host::{Allowlist, Cidr, Host, HostPattern, path_prefix_matches};
use http::{HeaderName, HeaderValue};

/// A header to inject. The value is marked sensitive and never printed.
#[derive(Clone)]
pub struct Inject {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl fmt::Debug for Inject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Inject({}: <redacted>)", self.name)
    }
}

/// A credentialed or passthrough upstream.
#[derive(Clone, Debug)]
pub struct Route {
    /// The host name, as the host grammar writes it (see `bottle_contract::host`).
    pub host: String,
    pub path_prefix: Option<String>,
    pub passthrough: bool,
    pub inject: Option<Inject>,
}

impl Route {
    /// How the route appears in the audit log: `host` or `host/prefix`.
    pub fn label(&self) -> String {
        match &self.path_prefix {
            Some(p) => format!("{}{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// What to do with a CONNECT to a host.
#[derive(Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// Terminate TLS, then decide per request.
    Intercept,
    /// Copy bytes both ways, untouched.
    Passthrough,
    Deny,
}

/// What to do with one request.
#[derive(Debug)]
pub enum Decision<'a> {
    Route(&'a Route),
    Allow,
    Deny,
}

/// Routes and the allow list of one bottle.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    routes: Vec<Route>,
    allow: Allowlist,
}

/// `raw` as the host grammar writes it, or None when it is no host at all (which no
/// route or entry can match: refused).
fn normal(raw: &str) -> Option<(String, Host)> {
    let host = Host::parse(raw).ok()?;
    Some((host.to_string(), host))
}

impl Policy {
    /// `allow` (names) and `cidrs` (blocks) are parsed here by the host grammar; an entry
    /// it refuses matches nothing (the manifest and pipelock refuse such an entry before
    /// it gets here).
    pub fn new(routes: Vec<Route>, allow: Vec<String>, cidrs: &[String]) -> Policy {
        let allow = Allowlist {
            entries: allow
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .collect(),
            cidrs: cidrs.iter().filter_map(|c| Cidr::parse(c).ok()).collect(),
        };
        Policy { routes, allow }
    }

    /// The allow list as parsed (entries the grammar refused are not in it).
    pub fn allow(&self) -> &Allowlist {
        &self.allow
    }

    /// The same routes with another allow list (a reload).
    pub fn with_allow(&self, allow: Vec<String>, cidrs: &[String]) -> Policy {
        Policy::new(self.routes.clone(), allow, cidrs)
    }

    /// The decision for a CONNECT to `host`.
    pub fn tunnel(&self, host: &str) -> Tunnel {
        let Some((host, parsed)) = normal(host) else {
            return Tunnel::Deny;
        };
        let mut routed = false;
        for r in self.routes.iter().filter(|r| r.host == host) {
            if r.passthrough {
                return Tunnel::Passthrough;
            }
            routed = true;
        }
        if routed || self.allowed(&parsed) {
            Tunnel::Intercept
        } else {
            Tunnel::Deny
        }
    }

    /// The decision for a request to `host` with `path`: the route with the longest
    /// matching prefix, else the allow list.
    pub fn request(&self, host: &str, path: &str) -> Decision<'_> {
        let Some((host, parsed)) = normal(host) else {
            return Decision::Deny;
        };
        let best = self
            .routes
            .iter()
            .filter(|r| r.host == host && !r.passthrough)
            .filter(|r| {
                r.path_prefix
                    .as_deref()
                    .is_none_or(|p| path_prefix_matches(p, path))
            })
            .max_by_key(|r| r.path_prefix.as_deref().map_or(0, str::len));
        match best {
            Some(r) => Decision::Route(r),
            None if self.allowed(&parsed) => Decision::Allow,
            None => Decision::Deny,
        }
    }

    fn allowed(&self, host: &Host) -> bool {
        self.allow.allows(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, prefix: Option<&str>, passthrough: bool) -> Route {
        Route {
            host: host.into(),
            path_prefix: prefix.map(str::to_string),
            passthrough,
            inject: None,
        }
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = Policy::new(vec![], vec!["*.example.org".into(), "pypi.org".into()], &[]);
        for (host, allowed) in [
            ("a.example.org", true),
            ("a.b.example.org", true),
            ("example.org", false),
            ("badexample.org", false),
            ("pypi.org", true),
            ("PyPI.org.", true),
            ("x.pypi.org", false),
        ] {
            assert_eq!(
                matches!(p.request(host, "/"), Decision::Allow),
                allowed,
                "{host}"
            );
        }
    }

    #[test]
    fn an_address_passes_when_a_block_holds_it_as_pipelock_decides() {
        let p = Policy::new(
            vec![],
            vec!["*.example.org".into()],
            &["10.244.0.0/24".into()],
        );
        for (host, allowed) in [
            ("10.244.0.54", true),
            ("0x0af40036", true), // 10.244.0.54 in hex: the grammar parses every notation
            ("10.244.1.1", false),
            ("a.example.org", true),
            ("10.244.0.54.example.org", true),
        ] {
            assert_eq!(
                matches!(p.request(host, "/"), Decision::Allow),
                allowed,
                "{host}"
            );
            assert_eq!(p.tunnel(host) == Tunnel::Intercept, allowed, "{host}");
        }
    }

    #[test]
    fn longest_prefix_wins_and_unmatched_paths_are_denied() {
        let p = Policy::new(
            vec![
                route("api.x", Some("/v1"), false),
                route("api.x", Some("/v1/admin"), false),
                route("pass.x", None, true),
            ],
            vec!["*.allowed.x".into()],
            &[],
        );
        match p.request("API.X", "/v1/admin/users") {
            Decision::Route(r) => assert_eq!(r.label(), "api.x/v1/admin"),
            d => panic!("{d:?}"),
        }
        match p.request("api.x", "/v1") {
            Decision::Route(r) => assert_eq!(r.label(), "api.x/v1"),
            d => panic!("{d:?}"),
        }
        assert!(matches!(p.request("api.x", "/v10"), Decision::Deny));
        assert!(matches!(p.request("a.allowed.x", "/"), Decision::Allow));
        assert!(matches!(p.request("other.x", "/"), Decision::Deny));
        assert_eq!(p.tunnel("api.x"), Tunnel::Intercept);
        assert_eq!(p.tunnel("pass.x"), Tunnel::Passthrough);
        assert_eq!(p.tunnel("b.allowed.x"), Tunnel::Intercept);
        assert_eq!(p.tunnel("evil.x"), Tunnel::Deny);
    }
}
