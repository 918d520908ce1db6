//! The audit stream: the one line format the sidecars write their decisions in, and the
//! one record (`Decision`) `bottle audit` reads them back into.
//!
//! Every sidecar writes a decision as one JSON line on its stderr (its `docker logs`):
//! the [`Line`] envelope (`ts`, seconds since the epoch, and `component`, one of the
//! `*_COMPONENT` names here) around the sidecar's own event, flattened. The writers
//! scrub their events before they wrap them; nothing here sees a secret, and a parsed
//! [`Decision`] keeps only source, verdict, reason, host and a short detail.
//!
//! [`parse`] reads one log line of a node into a [`Decision`] (or nothing: a line that
//! is not an audit line, or not a decision); [`merge`] orders several nodes' decisions
//! into one stream. Both are pure and bounded: a line over [`MAX_LINE`] bytes is
//! skipped, and every field kept is cut to [`MAX_FIELD`] characters.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The `component` of pipelock's audit lines (agent-net's reports included: pipelock's
/// gateway sink audits them).
pub const PIPELOCK_COMPONENT: &str = "pipelock.audit";
/// The `component` of egress's audit lines.
pub const EGRESS_COMPONENT: &str = "egress.audit";
/// The `component` of git-gate's audit lines (one per push: forwarded or refused).
pub const GIT_GATE_COMPONENT: &str = "git-gate.audit";

/// Lines longer than this are not parsed.
pub const MAX_LINE: usize = 64 << 10;
/// Longest host, reason or detail kept in a [`Decision`], in characters.
pub const MAX_FIELD: usize = 512;

/// The envelope of an audit line: when, who, and the writer's event flattened beside.
#[derive(Debug, Serialize)]
pub struct Line<'a, T: Serialize> {
    /// Seconds since the Unix epoch.
    pub ts: f64,
    /// Which writer (`*_COMPONENT`).
    pub component: &'static str,
    /// The writer's event (scrubbed by the writer).
    #[serde(flatten)]
    pub event: &'a T,
}

impl<'a, T: Serialize> Line<'a, T> {
    /// `event` by `component`, stamped now.
    pub fn now(component: &'static str, event: &'a T) -> Line<'a, T> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Line {
            ts,
            component,
            event,
        }
    }

    /// The JSON text of the line, without a newline.
    pub fn to_json(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }
}

/// The node a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The credential-injecting proxy.
    Egress,
    /// The firewall proxy (its DNS sink included).
    Pipelock,
    /// The agent's trap for packets sent past the proxy (audited by pipelock's sink).
    AgentNet,
    /// The push gate.
    GitGate,
    /// The proposal queue.
    Supervise,
}

impl Source {
    /// The node's name, as in `bottle logs --node`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Egress => "egress",
            Source::Pipelock => "pipelock",
            Source::AgentNet => "agent-net",
            Source::GitGate => "git-gate",
            Source::Supervise => "supervise",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
    /// Let through with a warning (e.g. a response with prompt injection under `warn`).
    Warn,
    /// Allowed by policy, failed further on (the upstream did not answer).
    Error,
    /// Asked of the operator (a supervise proposal), not decided yet.
    Ask,
}

impl Verdict {
    /// The verdict's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Warn => "warn",
            Verdict::Error => "error",
            Verdict::Ask => "ask",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision of one node, as `bottle audit` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Seconds since the Unix epoch: the line's own, else the engine's log time stamp.
    pub ts: f64,
    /// The bottle (agent) name; filled by the reader, who knows whose logs it read.
    pub bottle: String,
    /// The node that decided.
    pub source: Source,
    /// What it decided.
    pub verdict: Verdict,
    /// Short machine-readable reason (`not-allowlisted`, `dlp`, `direct`, `secret`...).
    pub reason: String,
    /// The host asked for (scrubbed by the writer), or empty.
    pub host: String,
    /// A short human-readable detail (method, port, rule, path), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Decision {
    /// A refusal.
    pub fn is_denial(&self) -> bool {
        self.verdict == Verdict::Deny
    }
}

/// Read one log line of `node` (`egress`, `pipelock`, `git-gate`, `supervise`) into a
/// decision. `log_ts` is the engine's time stamp of the line, used when the line carries
/// none. Anything else (plain log lines, `close` records, other nodes) is `None`.
pub fn parse(node: &str, line: &str, log_ts: Option<f64>) -> Option<Decision> {
    let line = line.trim();
    if line.len() > MAX_LINE || !line.starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let o = v.as_object()?;
    let str_of = |k: &str| o.get(k).and_then(|x| x.as_str()).unwrap_or("");
    let ts = o
        .get("ts")
        .and_then(|x| x.as_f64())
        .or(log_ts)
        .unwrap_or(0.0);
    let component = str_of("component");
    match (node, component) {
        ("pipelock", PIPELOCK_COMPONENT) => pipelock(o, ts),
        // Lines written before egress stamped its own carry no component.
        ("egress", EGRESS_COMPONENT | "") if o.contains_key("route") => egress(o, ts),
        ("git-gate", GIT_GATE_COMPONENT) => git_gate(o, ts),
        ("supervise", "") => supervise(o, log_ts.unwrap_or(0.0)),
        _ => None,
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

fn text(o: &Object, k: &str) -> String {
    cut(o.get(k).and_then(|x| x.as_str()).unwrap_or(""))
}

fn number(o: &Object, k: &str) -> Option<u64> {
    o.get(k).and_then(serde_json::Value::as_u64)
}

/// `s` cut to [`MAX_FIELD`] characters, control characters replaced (the text is shown
/// on a terminal): for any text a sidecar or an agent wrote that reaches the operator.
pub fn cut(s: &str) -> String {
    s.chars()
        .take(MAX_FIELD)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn words(parts: &[String]) -> String {
    let kept: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .collect();
    cut(&kept.join(" "))
}

fn pipelock(o: &Object, ts: f64) -> Option<Decision> {
    let verdict = match o.get("decision")?.as_str()? {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny,
        "warn" => Verdict::Warn,
        // `close` ends a tunnel or request already decided.
        _ => return None,
    };
    let method = text(o, "method");
    // agent-net reports the packets sent past the proxy; pipelock's sink audits them
    // with the protocol as method. DNS questions asked of the sink are pipelock's own.
    let source = match method.as_str() {
        "TCP" | "UDP" | "ICMP" => Source::AgentNet,
        _ => Source::Pipelock,
    };
    let port = number(o, "port").filter(|p| *p != 0);
    let rule = text(o, "rule");
    let part = text(o, "part");
    let detail = words(&[
        method,
        port.map(|p| format!("port {p}")).unwrap_or_default(),
        if rule.is_empty() {
            String::new()
        } else {
            format!("rule {rule}")
        },
        part,
        text(o, "detail"),
    ]);
    Some(Decision {
        ts,
        bottle: String::new(),
        source,
        verdict,
        reason: text(o, "reason"),
        host: text(o, "host"),
        detail,
    })
}

fn egress(o: &Object, ts: f64) -> Option<Decision> {
    let route = text(o, "route");
    let status = number(o, "status").unwrap_or(0);
    let error = text(o, "error");
    let (verdict, reason) = if route == "deny" {
        (Verdict::Deny, "not-routed".to_owned())
    } else if !error.is_empty() && status >= 500 {
        (Verdict::Error, "upstream".to_owned())
    } else if !error.is_empty() && status == 403 {
        (Verdict::Deny, "refused".to_owned())
    } else {
        (Verdict::Allow, format!("route {route}"))
    };
    let detail = words(&[
        text(o, "method"),
        text(o, "path"),
        if status == 0 {
            String::new()
        } else {
            format!("status {status}")
        },
        error,
    ]);
    Some(Decision {
        ts,
        bottle: String::new(),
        source: Source::Egress,
        verdict,
        reason: cut(&reason),
        host: text(o, "host"),
        detail,
    })
}

/// What git-gate writes for each push it checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushEvent {
    /// `allow` (forwarded) or `deny`.
    pub decision: Cow<'static, str>,
    /// `forwarded`, `secret`, `force`, `forward-failed`, `config`...
    pub reason: Cow<'static, str>,
    /// The remote's name in the manifest.
    pub remote: String,
    /// The upstream's host (never its path's credentials: upstreams are SSH URLs).
    pub host: String,
    /// Refs pushed, how many.
    pub refs: usize,
    /// A short detail without secrets (the rule ids of findings, never their text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl PushEvent {
    /// The host of an SSH upstream (`ssh://user@host[:port]/path` or `user@host:path`).
    pub fn host_of(upstream: &str) -> String {
        let rest = upstream.strip_prefix("ssh://").unwrap_or(upstream);
        let rest = rest.split('/').next().unwrap_or("");
        let rest = rest.rsplit('@').next().unwrap_or("");
        cut(rest.split(':').next().unwrap_or(""))
    }
}

fn git_gate(o: &Object, ts: f64) -> Option<Decision> {
    let verdict = match o.get("decision")?.as_str()? {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny,
        _ => return None,
    };
    let refs = number(o, "refs").unwrap_or(0);
    let detail = words(&[
        format!("remote {}", text(o, "remote")),
        format!("{refs} ref(s)"),
        text(o, "detail"),
    ]);
    Some(Decision {
        ts,
        bottle: String::new(),
        source: Source::GitGate,
        verdict,
        reason: text(o, "reason"),
        host: text(o, "host"),
        detail,
    })
}

/// supervise logs through `tracing` as JSON: a `proposal` line is an ask of the operator.
fn supervise(o: &Object, ts: f64) -> Option<Decision> {
    let fields = o.get("fields")?.as_object()?;
    if fields.get("message").and_then(|m| m.as_str()) != Some("proposal") {
        return None;
    }
    let kind = text(fields, "kind");
    let summary = text(fields, "summary");
    let host = if kind.starts_with("egress") {
        summary.clone()
    } else {
        String::new()
    };
    Some(Decision {
        ts,
        bottle: String::new(),
        source: Source::Supervise,
        verdict: Verdict::Ask,
        reason: kind,
        host,
        detail: words(&[format!("proposal {}", text(fields, "id")), summary]),
    })
}

/// The decisions of several streams as one, ordered by time (stable: equal times keep
/// their streams' order, and each stream's own order).
pub fn merge(streams: Vec<Vec<Decision>>) -> Vec<Decision> {
    let mut all: Vec<Decision> = streams.into_iter().flatten().collect();
    all.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    all
}

/// A Docker log time stamp (RFC 3339 with nanoseconds, `2024-05-01T10:00:00.123456789Z`)
/// as seconds since the epoch.
pub fn docker_ts(stamp: &str) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(stamp, &Rfc3339).ok()?;
    Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9)
}

/// Split a Docker log line written with time stamps into the stamp's time and the text.
pub fn split_docker_line(line: &str) -> (Option<f64>, &str) {
    match line.split_once(' ') {
        Some((stamp, rest)) => match docker_ts(stamp) {
            Some(ts) => (Some(ts), rest),
            None => (None, line),
        },
        None => (docker_ts(line), ""),
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn format_ts(ts: f64) -> String {
    let nanos = (ts * 1e9) as i128;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("{ts:.3}"),
    }
}

impl fmt::Display for Decision {
    /// One line: time, bottle, source, verdict, reason, host, detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {:<9} {:<5} {} {}",
            format_ts(self.ts),
            if self.bottle.is_empty() {
                "-"
            } else {
                &self.bottle
            },
            self.source.as_str(),
            self.verdict.as_str(),
            if self.reason.is_empty() {
                "-"
            } else {
                &self.reason
            },
            if self.host.is_empty() {
                "-"
            } else {
                &self.host
            },
        )?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pl(json: &str) -> Option<Decision> {
        parse("pipelock", json, Some(1.0))
    }

    #[test]
    fn pipelock_lines() {
        let d = pl(r#"{"ts":10.5,"component":"pipelock.audit","decision":"deny","reason":"not-allowlisted","method":"CONNECT","host":"evil.example","port":443}"#).expect("decision");
        assert_eq!(
            (
                d.ts,
                d.source,
                d.verdict,
                d.reason.as_str(),
                d.host.as_str()
            ),
            (
                10.5,
                Source::Pipelock,
                Verdict::Deny,
                "not-allowlisted",
                "evil.example"
            )
        );
        assert_eq!(d.detail, "CONNECT port 443");
        let dlp = pl(r#"{"ts":11,"component":"pipelock.audit","decision":"deny","reason":"dlp","method":"POST","host":"a.example","port":443,"rule":"github-pat","part":"body","hash":"abc"}"#).expect("dlp");
        assert_eq!(dlp.detail, "POST port 443 rule github-pat body");
        let allow = pl(r#"{"ts":1,"component":"pipelock.audit","decision":"allow","reason":"allowlist","method":"GET","host":"pypi.org","port":443}"#).expect("allow");
        assert_eq!(allow.verdict, Verdict::Allow);
        let warn = pl(r#"{"ts":1,"component":"pipelock.audit","decision":"warn","reason":"injection","method":"GET","host":"x.org","port":443}"#).expect("warn");
        assert_eq!(warn.verdict, Verdict::Warn);
        // agent-net's reports, audited by pipelock's sink.
        let direct = pl(r#"{"ts":2,"component":"pipelock.audit","decision":"deny","reason":"direct","method":"TCP","host":"1.1.1.1","port":80,"detail":"TCP connect ..."}"#).expect("direct");
        assert_eq!(direct.source, Source::AgentNet);
        let dns = pl(r#"{"ts":2,"component":"pipelock.audit","decision":"deny","reason":"dns","method":"DNS","host":"x.org","port":53}"#).expect("dns");
        assert_eq!(dns.source, Source::Pipelock);
        // Not decisions.
        assert_eq!(
            pl(
                r#"{"ts":3,"component":"pipelock.audit","decision":"close","reason":"done","method":"CONNECT","host":"a","port":443}"#
            ),
            None
        );
        assert_eq!(pl("pipelock listening on 0.0.0.0:8080"), None);
        assert_eq!(
            pl(r#"{"timestamp":"x","level":"INFO","fields":{"message":"listening"}}"#),
            None
        );
        assert_eq!(
            pl(r#"{"ts":3,"component":"egress.audit","route":"deny"}"#),
            None
        );
        assert_eq!(pl("{not json"), None);
        assert_eq!(pl(""), None);
    }

    #[test]
    fn egress_lines() {
        let eg = |s: &str| parse("egress", s, Some(7.25));
        let deny = eg(r#"{"bottle":"b","host":"evil.example","method":"GET","path":"/","route":"deny","status":403,"bytes":0,"bytes_up":0,"duration_ms":0,"error":"no route and not in egress.allow"}"#).expect("deny");
        assert_eq!(
            (deny.ts, deny.source, deny.verdict, deny.reason.as_str()),
            (7.25, Source::Egress, Verdict::Deny, "not-routed")
        );
        assert_eq!(
            deny.detail,
            "GET / status 403 no route and not in egress.allow"
        );
        let ok = eg(r#"{"ts":9.0,"component":"egress.audit","bottle":"b","host":"api.anthropic.com","method":"POST","path":"/v1/messages","route":"api.anthropic.com","status":200,"bytes":5,"bytes_up":3,"duration_ms":4}"#).expect("allow");
        assert_eq!((ok.ts, ok.verdict), (9.0, Verdict::Allow));
        assert_eq!(ok.reason, "route api.anthropic.com");
        let bad = eg(r#"{"ts":9.0,"component":"egress.audit","host":"h","method":"GET","path":"/","route":"allow","status":502,"error":"connect refused"}"#).expect("error");
        assert_eq!(bad.verdict, Verdict::Error);
        assert_eq!(eg(r#"{"host":"h"}"#), None);
        assert_eq!(eg("egress listening"), None);
    }

    #[test]
    fn git_gate_and_supervise_lines() {
        let event = PushEvent {
            decision: "deny".into(),
            reason: "secret".into(),
            remote: "origin".into(),
            host: PushEvent::host_of("ssh://git@github.com:22/acme/app.git"),
            refs: 1,
            detail: "rules github-pat".into(),
        };
        let line = Line {
            ts: 5.0,
            component: GIT_GATE_COMPONENT,
            event: &event,
        }
        .to_json()
        .expect("json");
        let d = parse("git-gate", &line, None).expect("push");
        assert_eq!(
            (d.source, d.verdict, d.reason.as_str(), d.host.as_str()),
            (Source::GitGate, Verdict::Deny, "secret", "github.com")
        );
        assert_eq!(d.detail, "remote origin 1 ref(s) rules github-pat");
        assert_eq!(
            PushEvent::host_of("git@gitlab.com:acme/app.git"),
            "gitlab.com"
        );
        assert_eq!(
            parse("git-gate", r#"{"fields":{"message":"request"}}"#, None),
            None
        );

        let sup = parse(
            "supervise",
            r#"{"timestamp":"2024-01-01T00:00:00Z","level":"INFO","fields":{"message":"proposal","id":"p1","kind":"egress-allow","summary":"pypi.org"},"target":"x"}"#,
            Some(3.0),
        )
        .expect("proposal");
        assert_eq!(
            (sup.ts, sup.source, sup.verdict, sup.host.as_str()),
            (3.0, Source::Supervise, Verdict::Ask, "pypi.org")
        );
        assert_eq!(
            parse(
                "supervise",
                r#"{"fields":{"message":"supervise listening"}}"#,
                Some(1.0)
            ),
            None
        );
    }

    #[test]
    fn fields_are_bounded_and_safe_for_a_terminal() {
        let host = "a".repeat(5000);
        let line = format!(
            r#"{{"ts":1,"component":"pipelock.audit","decision":"deny","reason":"x\u001b[2J","host":"{host}","method":"GET","port":1}}"#
        );
        let d = pl(&line).expect("decision");
        assert_eq!(d.host.chars().count(), MAX_FIELD);
        assert!(!d.reason.contains('\u{1b}'), "{:?}", d.reason);
        let huge = format!(
            r#"{{"ts":1,"component":"pipelock.audit","decision":"deny","reason":"x","host":"{}"}}"#,
            "a".repeat(MAX_LINE)
        );
        assert_eq!(pl(&huge), None);
    }

    #[test]
    fn docker_time_stamps() {
        let (ts, rest) = split_docker_line("2024-05-01T10:00:00.500000000Z {\"a\":1}");
        assert_eq!(ts, Some(1_714_557_600.5));
        assert_eq!(rest, "{\"a\":1}");
        assert_eq!(split_docker_line("no stamp here"), (None, "no stamp here"));
        assert_eq!(format_ts(1_714_557_600.5), "2024-05-01T10:00:00.500Z");
    }

    #[test]
    fn merge_orders_by_time_and_keeps_ties_stable() {
        let d = |ts: f64, source: Source, reason: &str| Decision {
            ts,
            bottle: "b".into(),
            source,
            verdict: Verdict::Deny,
            reason: reason.into(),
            host: String::new(),
            detail: String::new(),
        };
        let merged = merge(vec![
            vec![d(1.0, Source::Egress, "e1"), d(3.0, Source::Egress, "e3")],
            vec![
                d(2.0, Source::Pipelock, "p2"),
                d(3.0, Source::Pipelock, "p3"),
            ],
            vec![],
            vec![d(0.5, Source::GitGate, "g0")],
        ]);
        let order: Vec<&str> = merged.iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(order, ["g0", "e1", "p2", "e3", "p3"]);
        let line = merged[0].to_string();
        assert_eq!(line, "1970-01-01T00:00:00.500Z b git-gate  deny  g0 -");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn parse_never_panics(node in "(pipelock|egress|git-gate|supervise)", line in "\\PC{0,300}") {
                let _ = parse(&node, &line, Some(1.0));
                let _ = split_docker_line(&line);
            }

            #[test]
            fn parse_never_panics_on_jsonish(line in "[{}\\[\\]\":,a-z0-9 .-]{0,200}") {
                for node in ["pipelock", "egress", "git-gate", "supervise"] {
                    let _ = parse(node, &line, None);
                }
            }
        }
    }
}
