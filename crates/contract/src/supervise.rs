//! The supervise queue's records, shared by the sidecar that writes proposals and the
//! operator's `bottle queue` that decides them; and grants, the approved proposals the
//! reconciler merges into the desired state.
//!
//! Where each lives (on either backend):
//! - a proposal is `proposals/<id>.json` in the bottle's supervise state volume, written
//!   only by the supervise sidecar (the agent's MCP calls);
//! - a decision is `decisions/<id>.json` in the same volume, written only by `bottle
//!   queue` through the engine (Docker's archive API; on Kubernetes an exec of
//!   `bottle sidecar write-file`, see [`crate::volume_files`]), so nothing on
//!   net-internal can write it;
//! - a grant is a label-only volume of the bottle (see [`crate::labels::GRANT_ID`]), so
//!   the reconciler sees every grant in the one volume list it already makes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Labels, labels};

/// Where the state volume is mounted in the supervise container.
pub const STATE_MOUNT: &str = "/state";
/// Subdirectories of the state volume.
pub const PROPOSALS_DIR: &str = "proposals";
/// Subdirectory of the state volume holding the operator's decisions.
pub const DECISIONS_DIR: &str = "decisions";

/// Bounds on what an agent may propose: a reason, a Dockerfile, a host name.
pub const MAX_REASON: usize = 2000;
/// Bound on a proposed Dockerfile, bytes.
pub const MAX_DOCKERFILE: usize = 64 * 1024;
/// Bound on a proposed host name, bytes.
pub const MAX_HOST: usize = 253;
/// Proposals a bottle may have pending at once.
pub const MAX_PENDING: usize = 64;

/// Port it listens on, on net-internal.
pub const PORT: u16 = 8765;

/// Where the config volume is mounted, and the file in it.
pub const CONFIG_MOUNT: &str = "/etc/bottle/supervise";
/// The config file in the config volume.
pub const CONFIG_FILE: &str = "supervise.json";
/// The MCP endpoint's path.
pub const MCP_PATH: &str = "/mcp";

/// What the manifest allows the bottle, as the agent may see it (no credentials).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The running bottle's name.
    pub bottle: String,
    /// The allowed hosts, manifest and granted.
    pub allow: Vec<String>,
    /// The routes, without credentials.
    pub routes: Vec<RouteView>,
}

/// A route without its credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteView {
    /// The route's host.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The route's path prefix.
    pub path_prefix: Option<String>,
    /// egress injects a credential on this route.
    pub credentialed: bool,
    /// CONNECT to this host is tunnelled untouched.
    pub tls_passthrough: bool,
}

/// What an agent asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Ask {
    /// A host for the bottle's allowlist.
    Host {
        /// The host name or `*.suffix` pattern.
        host: String,
    },
    /// A new Dockerfile for the bottle's agent image.
    Dockerfile {
        /// The Dockerfile's text.
        dockerfile: String,
    },
}

impl Ask {
    /// `host` or `dockerfile`.
    pub fn kind(&self) -> &'static str {
        match self {
            Ask::Host { .. } => "host",
            Ask::Dockerfile { .. } => "dockerfile",
        }
    }

    /// One line for listings: the host, or the Dockerfile's size and first line.
    pub fn summary(&self) -> String {
        match self {
            Ask::Host { host } => host.clone(),
            Ask::Dockerfile { dockerfile } => format!(
                "Dockerfile, {} lines ({} bytes)",
                dockerfile.lines().count(),
                dockerfile.len()
            ),
        }
    }
}

/// A proposal as the sidecar stored it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposal id: `p` and 10 hex digits.
    pub id: String,
    /// The running bottle that asked.
    pub bottle: String,
    #[serde(flatten)]
    /// What is asked for.
    pub ask: Ask,
    /// Why, in the agent's words (bounded; printed with control characters replaced).
    pub reason: String,
    /// Unix seconds.
    pub created: u64,
}

/// The operator's verdict on a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The operator approved it: a grant exists.
    Approved,
    /// The operator refused it.
    Denied,
    /// An approval the operator took back.
    Revoked,
}

impl Verdict {
    /// `approved`, `denied` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Denied => "denied",
            Verdict::Revoked => "revoked",
        }
    }
}

/// A decision as `bottle queue` stored it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The proposal decided.
    pub id: String,
    /// The decision.
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The operator's reason, when given.
    pub reason: Option<String>,
    /// Unix seconds.
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// For a time-boxed approval: when the grant ends, unix seconds.
    pub until: Option<u64>,
}

/// Why an agent's proposal was refused before it was stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposalError {
    #[error("the reason is empty: say why the bottle needs this")]
    /// The reason is empty.
    NoReason,
    #[error("the reason is longer than {MAX_REASON} bytes")]
    /// The reason is longer than [`MAX_REASON`].
    LongReason,
    #[error("the Dockerfile is empty")]
    /// The Dockerfile is empty.
    EmptyDockerfile,
    #[error("the Dockerfile is longer than {MAX_DOCKERFILE} bytes")]
    /// The Dockerfile is longer than [`MAX_DOCKERFILE`].
    LongDockerfile,
    /// The host is not a host name or `*.suffix` pattern (the error quotes it).
    #[error(transparent)]
    BadHost(crate::host::HostError),
    #[error("{MAX_PENDING} proposals are already pending; wait for the operator")]
    /// Too many proposals are pending.
    TooMany,
}

/// Check and normalise what an agent proposes.
pub fn check(ask: Ask, reason: &str) -> Result<(Ask, String), ProposalError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ProposalError::NoReason);
    }
    if reason.len() > MAX_REASON {
        return Err(ProposalError::LongReason);
    }
    let ask = match ask {
        Ask::Host { host } => Ask::Host {
            host: normalize_host(&host)?,
        },
        Ask::Dockerfile { dockerfile } => {
            if dockerfile.trim().is_empty() {
                return Err(ProposalError::EmptyDockerfile);
            }
            if dockerfile.len() > MAX_DOCKERFILE {
                return Err(ProposalError::LongDockerfile);
            }
            Ask::Dockerfile { dockerfile }
        }
    };
    Ok((ask, reason.to_string()))
}

/// A host name or `*.suffix` pattern by the one host grammar ([`crate::host`]): what an
/// agent may propose is exactly what the manifest's `egress.allow` accepts.
pub fn normalize_host(host: &str) -> Result<String, ProposalError> {
    crate::host::HostPattern::parse(host)
        .map(|p| p.to_string())
        .map_err(ProposalError::BadHost)
}

/// Is `id` shaped like one of ours (so it is safe as a file and volume name)?
pub fn valid_id(id: &str) -> bool {
    id.len() == 11 && id.starts_with('p') && id[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Unix seconds now: the time stamp proposals, decisions and grants carry.
pub fn now() -> u64 {
    unix_now().as_secs()
}

/// The time since the epoch now, to the nanosecond (a watch schedules a grant's expiry
/// with it; [`now`] is its whole seconds).
pub fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The longest time box a grant may have (a year), so `at + for` cannot overflow and a
/// typo does not grant for ever.
pub const MAX_GRANT_SECS: u64 = crate::duration::MAX.as_secs();

/// `--for` and the console's duration: [`crate::duration::parse`]'s grammar (`90s`,
/// `10m`, `2h`, `1d`, `1h30m`), in whole seconds, from 1 s up to [`MAX_GRANT_SECS`].
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let d = crate::duration::parse(s)?;
    if d.is_zero() || d.subsec_millis() != 0 {
        return Err(format!("{s:?}: a grant lasts whole seconds, at least one"));
    }
    Ok(d.as_secs())
}

/// Time left, for people: `1h59m`, `4m10s`, `35s`; `expired` at or past the end.
pub fn time_left(until: u64, now: u64) -> String {
    let Some(left) = until.checked_sub(now).filter(|&l| l > 0) else {
        return "expired".into();
    };
    let (d, h, m, s) = (left / 86_400, left / 3600 % 24, left / 60 % 60, left % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// An approved proposal as the reconciler sees it: read from a grant volume's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The proposal id.
    pub id: String,
    /// The running bottle it was granted to.
    pub bottle: String,
    /// What was granted.
    pub ask: Ask,
    /// Unix seconds of the approval: the newest Dockerfile grant wins.
    pub at: u64,
    /// Unix seconds when a time-boxed grant ends (`None`: until revoked). From then on
    /// it is expired: no longer merged into the desired state, still shown (and its
    /// volume kept) until revoked.
    pub until: Option<u64>,
}

impl Grant {
    /// Has it expired at `now` (unix seconds)?
    pub fn expired(&self, now: u64) -> bool {
        self.until.is_some_and(|u| u <= now)
    }

    /// `until revoked`, the time left (`1h59m`) or `expired`.
    pub fn left(&self, now: u64) -> String {
        match self.until {
            None => "until revoked".into(),
            Some(u) => time_left(u, now),
        }
    }

    /// The labels a grant volume carries besides the object labels.
    pub fn labels(&self) -> Labels {
        let mut l = Labels::new();
        l.insert(labels::GRANT_ID.into(), self.id.clone());
        l.insert(labels::GRANT_AT.into(), self.at.to_string());
        if let Some(u) = self.until {
            l.insert(labels::GRANT_UNTIL.into(), u.to_string());
        }
        match &self.ask {
            Ask::Host { host } => l.insert(labels::GRANT_HOST.into(), host.clone()),
            Ask::Dockerfile { dockerfile } => {
                l.insert(labels::GRANT_DOCKERFILE.into(), dockerfile.clone())
            }
        };
        l
    }

    /// Read a grant from a volume's labels; `None` when it is not one (or is malformed,
    /// which the reconciler then garbage-collects like any unwanted object).
    pub fn from_labels(l: &Labels) -> Option<Grant> {
        let id = l.get(labels::GRANT_ID)?;
        if !valid_id(id) {
            return None;
        }
        let ask = match (l.get(labels::GRANT_HOST), l.get(labels::GRANT_DOCKERFILE)) {
            (Some(h), None) => Ask::Host {
                host: normalize_host(h).ok()?,
            },
            (None, Some(d)) if d.len() <= MAX_DOCKERFILE => Ask::Dockerfile {
                dockerfile: d.clone(),
            },
            _ => return None,
        };
        let at: u64 = l.get(labels::GRANT_AT)?.parse().ok()?;
        // A time box must end after the approval, within the longest one allowed.
        let until = match l.get(labels::GRANT_UNTIL) {
            None => None,
            Some(u) => {
                let u: u64 = u.parse().ok()?;
                if u <= at || u - at > MAX_GRANT_SECS {
                    return None;
                }
                Some(u)
            }
        };
        Some(Grant {
            id: id.clone(),
            bottle: l.get(labels::BOTTLE)?.clone(),
            ask,
            at,
            until,
        })
    }
}

/// The grants of a project, by bottle, as of one instant: those in force, and the
/// time-boxed ones that have expired (kept apart: shown, their volumes kept, never
/// merged into the desired state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// The grants in force of each running bottle.
    pub by_bottle: BTreeMap<String, Vec<Grant>>,
    /// The expired grants of each running bottle.
    pub expired: BTreeMap<String, Vec<Grant>>,
}

impl Grants {
    /// Collect the grants among a project's volumes as of `now` (unix seconds).
    pub fn from_volumes<'a>(volumes: impl IntoIterator<Item = &'a Labels>, now: u64) -> Grants {
        let mut g = Grants::default();
        for l in volumes {
            if let Some(grant) = Grant::from_labels(l) {
                let map = if grant.expired(now) {
                    &mut g.expired
                } else {
                    &mut g.by_bottle
                };
                map.entry(grant.bottle.clone()).or_default().push(grant);
            }
        }
        for v in g.by_bottle.values_mut().chain(g.expired.values_mut()) {
            v.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        }
        g
    }

    /// No grants at all, in force or expired?
    pub fn is_empty(&self) -> bool {
        self.by_bottle.is_empty() && self.expired.is_empty()
    }

    /// The grants in force of `bottle` (none when it has none).
    pub fn of(&self, bottle: &str) -> &[Grant] {
        self.by_bottle.get(bottle).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every grant of `bottle`, in force then expired: the grant volumes to keep.
    pub fn all_of(&self, bottle: &str) -> impl Iterator<Item = &Grant> {
        self.of(bottle)
            .iter()
            .chain(self.expired.get(bottle).into_iter().flatten())
    }

    /// Every grant, each with whether it has expired, by bottle.
    pub fn listed(&self) -> Vec<(&Grant, bool)> {
        let mut v: Vec<(&Grant, bool)> = self
            .by_bottle
            .values()
            .flatten()
            .map(|g| (g, false))
            .chain(self.expired.values().flatten().map(|g| (g, true)))
            .collect();
        v.sort_by(|a, b| (&a.0.bottle, a.0.at, &a.0.id).cmp(&(&b.0.bottle, b.0.at, &b.0.id)));
        v
    }

    /// The earliest end among the time-boxed grants in force: when the next reconcile
    /// must drop one.
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_bottle
            .values()
            .flatten()
            .filter_map(|g| g.until)
            .min()
    }

    /// Hosts granted to `bottle`.
    pub fn hosts(&self, bottle: &str) -> Vec<String> {
        self.of(bottle)
            .iter()
            .filter_map(|g| match &g.ask {
                Ask::Host { host } => Some(host.clone()),
                Ask::Dockerfile { .. } => None,
            })
            .collect()
    }

    /// The newest Dockerfile granted to `bottle`.
    pub fn dockerfile(&self, bottle: &str) -> Option<&Grant> {
        self.of(bottle)
            .iter()
            .rfind(|g| matches!(g.ask, Ask::Dockerfile { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised_and_checked() {
        assert_eq!(normalize_host("Example.COM.").unwrap(), "example.com");
        assert_eq!(normalize_host("*.pypi.org").unwrap(), "*.pypi.org");
        for bad in [
            "",
            "10.0.0.1",
            "a.123",
            "*.com",
            "a..b",
            "-a.b",
            "a.b:443",
            "a b.c",
            "*.",
            "ex*mple.com",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn proposals_need_a_reason_and_bounded_content() {
        let host = || Ask::Host {
            host: "a.example".into(),
        };
        assert_eq!(check(host(), "  "), Err(ProposalError::NoReason));
        assert_eq!(
            check(host(), &"x".repeat(MAX_REASON + 1)),
            Err(ProposalError::LongReason)
        );
        let big = Ask::Dockerfile {
            dockerfile: "x".repeat(MAX_DOCKERFILE + 1),
        };
        assert_eq!(check(big, "r"), Err(ProposalError::LongDockerfile));
        assert!(check(host(), "need docs").is_ok());
    }

    #[test]
    fn grants_round_trip_through_labels() {
        let g = Grant {
            id: "p0123456789".into(),
            bottle: "dev".into(),
            ask: Ask::Dockerfile {
                dockerfile: "FROM x\nRUN y\n".into(),
            },
            at: 7,
            until: None,
        };
        let mut l = labels::object_labels("p", "dev", "supervise", "h", "");
        l.extend(g.labels());
        assert_eq!(Grant::from_labels(&l), Some(g.clone()));
        let host = Grant {
            id: "p0123456789".into(),
            ask: Ask::Host {
                host: "a.example".into(),
            },
            at: 9,
            until: None,
            ..g.clone()
        };
        let mut l2 = labels::object_labels("p", "dev", "supervise", "h", "");
        l2.extend(host.labels());
        let grants = Grants::from_volumes([&l2, &l], 0);
        assert_eq!(grants.hosts("dev"), vec!["a.example".to_string()]);
        assert_eq!(grants.dockerfile("dev"), Some(&g));
        assert!(grants.of("other").is_empty());
        // A forged label with a bad id or host is no grant.
        l2.insert(labels::GRANT_HOST.into(), "10.0.0.1".into());
        assert!(Grant::from_labels(&l2).is_none());
    }

    #[test]
    fn a_time_boxed_grant_expires_and_is_kept_apart() {
        let g = Grant {
            id: "p0123456789".into(),
            bottle: "dev".into(),
            ask: Ask::Host {
                host: "a.example".into(),
            },
            at: 100,
            until: Some(200),
        };
        let mut l = labels::object_labels("p", "dev", "supervise", "h", "");
        l.extend(g.labels());
        assert_eq!(l.get(labels::GRANT_UNTIL).map(String::as_str), Some("200"));
        assert_eq!(Grant::from_labels(&l), Some(g.clone()));
        let before = Grants::from_volumes([&l], 199);
        assert_eq!(before.hosts("dev"), vec!["a.example".to_string()]);
        assert_eq!(before.next_expiry(), Some(200));
        assert_eq!(g.left(199), "1s");
        let after = Grants::from_volumes([&l], 200);
        assert!(after.hosts("dev").is_empty() && !after.is_empty());
        assert_eq!(after.all_of("dev").count(), 1);
        assert_eq!(after.listed(), vec![(&g, true)]);
        assert_eq!(after.next_expiry(), None);
        assert_eq!(g.left(200), "expired");
        // An end not after the approval, too far, or not a number: no grant.
        for bad in [
            "100",
            "50",
            "x",
            "",
            &(100 + MAX_GRANT_SECS + 1).to_string(),
        ] {
            l.insert(labels::GRANT_UNTIL.into(), bad.to_string());
            assert!(Grant::from_labels(&l).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn durations_and_time_left() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        for bad in [
            "",
            "0s",
            "2",
            "h",
            "2x",
            "-1h",
            "1.5h",
            "400d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(time_left(7200, 1), "1h59m");
        assert_eq!(time_left(300, 50), "4m10s");
        assert_eq!(time_left(10, 0), "10s");
        assert_eq!(time_left(200_000, 0), "2d7h");
        assert_eq!(time_left(5, 9), "expired");
    }

    #[test]
    fn records_serialise_with_a_kind_tag() {
        let p = Proposal {
            id: "p0000000001".into(),
            bottle: "dev".into(),
            ask: Ask::Host {
                host: "a.example".into(),
            },
            reason: "docs".into(),
            created: 1,
        };
        let j = serde_json::to_string(&p).unwrap();
        assert!(j.contains("\"kind\":\"host\""), "{j}");
        assert_eq!(serde_json::from_str::<Proposal>(&j).unwrap(), p);
        assert!(valid_id(&p.id) && !valid_id("p../../etc") && valid_id("p00000000ff"));
    }
}
