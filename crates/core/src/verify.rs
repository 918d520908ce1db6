//! `bottle verify`: the checks that show a running bottle keeps its promise (design
//! section 1), made from inside the agent, as the agent user, through the engine's exec
//! ([`Exec`]), and judged here from what the commands printed, what the engine says of
//! the agent container ([`HostFacts`]) and the sidecars' audit lines
//! ([`bottle_contract::audit::Decision`]).
//!
//! Each check is one small command ([`Probe::commands`]) that needs only bash, coreutils,
//! findutils, grep and getent (no curl, no python): the proxy is spoken to by hand over
//! bash's `/dev/tcp`, the direct packets go out through `/dev/tcp` and `/dev/udp`. What
//! goes into the agent is names only (hosts chosen here, ports, paths): never a secret.
//! Route tokens are looked for on the host side: the agent's process environments are
//! read back and searched in this process ([`Inputs::tokens`]).
//!
//! The names and ports of a run come from a `nonce` the caller draws, so a run's audit
//! lines are its own (and the firewall's repeat suppression, 10 s per destination, does
//! not hide a second run's). Pure but for [`observe`]; the binary reads the clock, the
//! environment and the logs (`crates/bottle/src/cli/verify.rs`).

use bottle_contract::audit::{Decision, Source};
use bottle_engine::{Exec, ExecOutput};
use bottle_model::manifest::PolicyNames;
use bottle_model::provider::WORKSPACE;
use bottle_model::{RuntimeChoice, Secret};
use serde::Serialize;

use crate::nodes::agent::AGENT_USER;

/// An outside address for the direct packets (TEST-NET-2, never routed anywhere).
pub const OUTSIDE_IP: &str = "198.51.100.7";

/// Seconds a proxy request may take (a name pipelock cannot resolve fails in a few).
const PROXY_SECS: u32 = 30;
/// Seconds a direct connect, datagram or DNS question may take: refusals are at once.
const QUICK_SECS: u32 = 5;
/// Files and process environments reported by name, at most.
const MAX_LISTED: usize = 10;

/// The checks, in the order they are reported: id and what holds when it passes.
pub const CHECKS: [(&str, &str); 9] = [
    ("allowed-host", "an allowed host passes the proxy's policy"),
    (
        "denied-host",
        "a host not allowed is refused by the proxy and audited",
    ),
    (
        "direct-tcp",
        "a direct TCP connect to an outside address is refused and audited",
    ),
    (
        "direct-udp",
        "a UDP datagram to an outside address is refused and audited",
    ),
    ("dns", "DNS for an outside name is refused and audited"),
    (
        "ca-key",
        "the CA key is nowhere the agent can read (mounts, files)",
    ),
    (
        "route-tokens",
        "route tokens are nowhere the agent can read (mounts, files, /proc/*/environ)",
    ),
    ("runtime", "the runtime is the one the manifest asked for"),
    (
        "statx",
        "the agent's basic tools work (ls and stat: statx with AT_NO_AUTOMOUNT)",
    ),
];

/// Audit reasons of a request that passed the allowlist and failed further on (no
/// address, an address the SSRF guard keeps out, no connection, the upstream's TLS or
/// HTTP): the host is allowed, the upstream is not reachable from here. (A resolver
/// that answers with a reserved address, as a sinkhole does, makes `ssrf`.)
const PAST_POLICY: [&str; 6] = [
    "resolve",
    "ssrf",
    "connect",
    "upstream-tls",
    "upstream",
    "http",
];

/// Words the run's host names are made of: labels no shape test takes for data.
const WORDS: [&str; 16] = [
    "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "juniper",
    "kelp", "lumen", "maple", "nectar", "opal", "prairie",
];

/// What one run sends: hosts, names and ports (names only: nothing secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// An allowed host and a path on it (a route's prefix), when the bottle allows any.
    pub allowed: Option<(String, String)>,
    /// A host no bottle allows (`.invalid`).
    pub denied_host: String,
    /// An outside name to look up.
    pub dns_name: String,
    /// The port of the direct TCP connect to [`OUTSIDE_IP`].
    pub tcp_port: u16,
    /// The port of the UDP datagrams to [`OUTSIDE_IP`].
    pub udp_port: u16,
    /// Nobody audits DNS or direct packets: the bottle uses the upstream pipelock image,
    /// or runs on Kubernetes (pipelock holds no gateway in a pod).
    pub foreign_pipelock: bool,
}

impl Probe {
    /// The run for a bottle of `policy` (`None`: no manifest, the allowlist is unknown).
    pub fn new(policy: Option<&PolicyNames>, nonce: u64) -> Probe {
        let word = |shift: u32| WORDS[((nonce >> shift) & 0xf) as usize];
        let tag = format!("{}-{}-{}", word(0), word(4), word(8));
        let port = 20000 + (nonce >> 12) % 20000;
        let port = u16::try_from(port).unwrap_or(20000);
        Probe {
            allowed: policy.and_then(allowed_target),
            denied_host: format!("verify-denied-{tag}.invalid"),
            dns_name: format!("verify-dns-{tag}.invalid"),
            tcp_port: port,
            udp_port: port + 1,
            foreign_pipelock: policy.is_some_and(|p| p.foreign_pipelock),
        }
    }

    /// The commands run inside the agent (name, argv): one per check made there, but
    /// one file scan (`files`) serves both secrets checks and the process environments
    /// (`environ`) are read for the tokens'. The runtime is the host's to judge.
    pub fn commands(&self) -> Vec<(&'static str, Vec<String>)> {
        let bash = |secs: u32, script: &str, args: &[&str]| -> Vec<String> {
            [
                "timeout",
                &secs.to_string(),
                "bash",
                "-c",
                script,
                "bottle-verify",
            ]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
        };
        let mut out = Vec::new();
        if let Some((host, path)) = &self.allowed {
            out.push((
                "allowed-host",
                bash(PROXY_SECS, PROXY_SCRIPT, &[host, path]),
            ));
        }
        out.push((
            "denied-host",
            bash(PROXY_SECS, PROXY_SCRIPT, &[&self.denied_host, "/"]),
        ));
        let (tcp, udp) = (self.tcp_port.to_string(), self.udp_port.to_string());
        out.push((
            "direct-tcp",
            bash(QUICK_SECS, TCP_SCRIPT, &[OUTSIDE_IP, &tcp]),
        ));
        out.push((
            "direct-udp",
            bash(QUICK_SECS, UDP_SCRIPT, &[OUTSIDE_IP, &udp]),
        ));
        out.push(("dns", bash(QUICK_SECS, DNS_SCRIPT, &[&self.dns_name])));
        out.push(("files", bash(120, FILES_SCRIPT, &[WORKSPACE])));
        out.push(("environ", bash(30, ENVIRON_SCRIPT, &[])));
        out.push(("statx", bash(QUICK_SECS, STATX_SCRIPT, &[])));
        out
    }

    /// Whether every audit line this run should cause is in `seen` (the caller reads
    /// the logs again until it is, or a deadline passes).
    pub fn audit_complete(&self, seen: &[Decision]) -> bool {
        self.denied_line(seen).is_some()
            && (self.foreign_pipelock
                || (self.dns_line(seen).is_some()
                    && self.direct_line(seen, "TCP", self.tcp_port).is_some()
                    && self.direct_line(seen, "UDP", self.udp_port).is_some()))
    }

    fn denied_line<'a>(&self, seen: &'a [Decision]) -> Option<&'a Decision> {
        seen.iter()
            .find(|d| d.is_denial() && d.host == self.denied_host)
    }

    fn dns_line<'a>(&self, seen: &'a [Decision]) -> Option<&'a Decision> {
        seen.iter()
            .find(|d| d.is_denial() && d.reason == "dns" && d.host == self.dns_name)
    }

    fn direct_line<'a>(
        &self,
        seen: &'a [Decision],
        proto: &str,
        port: u16,
    ) -> Option<&'a Decision> {
        let detail = format!("{proto} port {port}");
        seen.iter().find(|d| {
            d.is_denial()
                && d.source == Source::AgentNet
                && d.reason == "direct"
                && d.host == OUTSIDE_IP
                && d.detail.starts_with(&detail)
        })
    }
}

/// A host of the allowlist to ask for, and the path: an exact `allow` entry, else a
/// route's host (under its prefix), else a name under a wildcard entry.
fn allowed_target(p: &PolicyNames) -> Option<(String, String)> {
    if let Some(h) = p.allow.iter().find(|h| !h.starts_with("*.")) {
        return Some((h.clone(), "/".into()));
    }
    if let Some(r) = p.routes.first() {
        return Some((r.host.clone(), r.path_prefix.clone().unwrap_or("/".into())));
    }
    p.allow
        .iter()
        .find_map(|h| h.strip_prefix("*."))
        .map(|suffix| (format!("www.{suffix}"), "/".into()))
}

/// GET `http://$1$2` through the agent's `HTTP_PROXY`, by hand: the answer's first
/// bytes on stdout. It waits until the answer is there before reading it: under gVisor
/// a read of bash's `/dev/tcp` socket with nothing to read yet fails with EAGAIN.
const PROXY_SCRIPT: &str = r#"p=${HTTP_PROXY:-}
[ -n "$p" ] || { echo "the agent's environment has no HTTP_PROXY" >&2; exit 3; }
a=${p#*://}; a=${a%%/*}; h=${a%:*}; port=${a##*:}; [ "$port" = "$a" ] && port=80
exec 3<>"/dev/tcp/$h/$port" || exit 4
printf 'GET http://%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: bottle-verify\r\nConnection: close\r\n\r\n' "$1" "$2" "$1" >&3
n=0; until read -t 0 <&3; do n=$((n+1)); [ $n -ge 300 ] && break; sleep 0.1; done
head -c 2048 <&3"#;

/// Connect to `$1:$2` over TCP.
const TCP_SCRIPT: &str = r#"exec 3<>"/dev/tcp/$1/$2" && echo connected"#;

/// Two datagrams to `$1:$2`; the second fails once the refusal (ICMP) came back.
const UDP_SCRIPT: &str = r#"exec 3>"/dev/udp/$1/$2" || exit 4
printf bottle-verify >&3 || exit 5
sleep 0.5
if printf bottle-verify >&3; then echo "second datagram sent"; else echo "second datagram refused"; fi"#;

/// Look `$1` up as `ls` or curl would.
const DNS_SCRIPT: &str = r#"getent hosts "$1"; echo "getent exit $?""#;

/// Readable files holding a PEM private key (outside the workspace `$1`), then readable
/// `token-*` files anywhere, each list ended by a marker.
const FILES_SCRIPT: &str = r#"ws=$1
find /etc /home /root /tmp /var/tmp /run /mnt /srv /opt \( -path "$ws" -o -path /proc -o -path /sys \) -prune \
  -o -type f -readable -size -4M -print0 2>/dev/null \
  | xargs -0 -r grep -lIs -e '-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----' -- 2>/dev/null | head -n 10
echo @keys-end
find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -name 'token-[0-9]*' -readable -print 2>/dev/null | head -n 10
echo @tokens-end
grep -c . /proc/self/mountinfo >/dev/null 2>&1 && grep -E '/volumes/[^ ]*-(ca|egress-config|git-gate-config)/_data ' /proc/self/mountinfo | head -n 5
echo @mounts-end"#;

/// Every process environment the agent user can read, one variable a line, each
/// process ended by `@@`.
const ENVIRON_SCRIPT: &str = r#"n=0
for f in /proc/[0-9]*/environ; do
  if [ -r "$f" ] && tr '\0' '\n' < "$f" 2>/dev/null; then n=$((n+1)); echo; echo @@; fi
done
echo "@environs $n""#;

/// What `ls` and `stat` make of `/`.
const STATX_SCRIPT: &str = r#"ls -d / && stat -c '%n %F' /"#;

/// What the engine says of the agent container, read on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// The runtime the container runs under (`docker inspect`'s `HostConfig.Runtime`).
    pub runtime: Option<String>,
    /// The `bottle.runtime` label the executor set.
    pub runtime_label: Option<String>,
    /// The engine's runtimes and the verdict on its runsc: what `runtime: auto` picks
    /// is [`crate::runtime::resolve`]'s decision, the one `apply` made.
    pub runtimes: crate::runtime::RuntimeFacts,
    /// The named volumes mounted into the agent container.
    pub volumes: Vec<String>,
}

/// What a command in the agent gave: its output, or the engine's error.
pub type Observed = Vec<(&'static str, Result<ExecOutput, String>)>;

/// Run `probe`'s commands in the agent `container`, as the agent user, one at a time.
pub async fn observe<E: Exec>(engine: &E, container: &str, probe: &Probe) -> Observed {
    let mut out = Vec::new();
    for (id, cmd) in probe.commands() {
        let r = engine
            .exec(container, &cmd, Some(AGENT_USER), &[])
            .await
            .map_err(|e| bottle_contract::ErrorChain(&e).to_string());
        out.push((id, r));
    }
    out
}

/// A route token the host holds: for a host-side search of what the agent can read.
pub struct Token {
    /// The host variable (`from_env`).
    pub var: String,
    /// The route's host.
    pub host: String,
    /// The token: searched for on the host side, never sent into the agent.
    pub value: Secret,
}

/// Everything a judgement needs.
pub struct Inputs<'a> {
    /// The bottle's project.
    pub project: &'a str,
    /// The running bottle (agent) name.
    pub bottle: &'a str,
    /// What the run sent.
    pub probe: &'a Probe,
    /// What its commands printed ([`observe`]).
    pub observed: &'a Observed,
    /// What the engine says of the agent container.
    pub facts: &'a HostFacts,
    /// The bottle's audit decisions since just before the run.
    pub decisions: &'a [Decision],
    /// The manifest's `runtime:` (`None`: no manifest was read).
    pub asked: Option<RuntimeChoice>,
    /// Route tokens set in the host's environment.
    pub tokens: &'a [Token],
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It holds.
    Pass,
    /// It does not (the detail says what was found).
    Fail,
    /// Nothing to check (a bottle that allows no host).
    Skip,
}

impl Outcome {
    /// As the table shows it.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

/// One judged check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The check's id ([`CHECKS`]).
    pub check: &'static str,
    /// Its outcome.
    pub result: Outcome,
    /// What holds when it passes.
    pub what: &'static str,
    /// What was looked at and found (never a secret).
    pub detail: String,
}

/// Judge every check of [`CHECKS`], in order.
pub fn judge(i: &Inputs<'_>) -> Vec<Check> {
    CHECKS
        .iter()
        .map(|(id, what)| {
            let (result, detail) = match *id {
                "allowed-host" => allowed_host(i),
                "denied-host" => denied_host(i),
                "direct-tcp" => direct(i, "TCP", i.probe.tcp_port),
                "direct-udp" => direct(i, "UDP", i.probe.udp_port),
                "dns" => dns(i),
                "ca-key" => ca_key(i),
                "route-tokens" => route_tokens(i),
                "runtime" => runtime(i),
                _ => statx(i),
            };
            Check {
                check: id,
                result,
                what,
                // Printed on the operator's terminal.
                detail: bottle_contract::audit::cut(&detail),
            }
        })
        .collect()
}

/// Whether every check passed or was skipped.
pub fn all_hold(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.result != Outcome::Fail)
}

type Judged = (Outcome, String);

fn fail(detail: impl Into<String>) -> Judged {
    (Outcome::Fail, detail.into())
}

fn pass(detail: impl Into<String>) -> Judged {
    (Outcome::Pass, detail.into())
}

/// The output of check `id`, or why there is none.
fn output<'a>(i: &'a Inputs<'_>, id: &str) -> Result<&'a ExecOutput, String> {
    match i.observed.iter().find(|(c, _)| *c == id) {
        Some((_, Ok(out))) => Ok(out),
        Some((_, Err(e))) => Err(format!("could not run in the agent: {e}")),
        None => Err("not run".into()),
    }
}

/// The first line of `s`, cut to a readable length.
fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(160)
        .collect()
}

fn timed_out(out: &ExecOutput) -> bool {
    out.code == 124
}

/// What the proxy answered: status code and status line.
fn proxy_answer(out: &ExecOutput) -> Result<(u16, String), String> {
    let line = first_line(&out.stdout);
    let code = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    match code {
        Some(c) => Ok((c, line)),
        None if timed_out(out) => Err(format!("no answer from the proxy in {PROXY_SECS} s")),
        None => Err(format!(
            "no answer from the proxy (exit {}): {}",
            out.code,
            first_line(&format!("{}\n{}", out.stderr, out.stdout))
        )),
    }
}

fn allowed_host(i: &Inputs<'_>) -> Judged {
    let Some((host, path)) = &i.probe.allowed else {
        let why = if i.asked.is_none() {
            "no manifest was read (-p): the allowlist is unknown"
        } else {
            "the bottle allows no host (egress.allow and routes are empty)"
        };
        return (Outcome::Skip, why.into());
    };
    let out = match output(i, "allowed-host") {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let refusal = i
        .decisions
        .iter()
        .find(|d| d.is_denial() && &d.host == host && !PAST_POLICY.contains(&d.reason.as_str()));
    if let Some(d) = refusal {
        return fail(format!(
            "GET http://{host}{path}: {} refused it ({})",
            d.source, d.reason
        ));
    }
    match proxy_answer(out) {
        Ok((code, line)) => {
            let past = i
                .decisions
                .iter()
                .filter(|d| &d.host == host)
                .map(|d| format!("{} {} {}", d.source, d.verdict, d.reason))
                .collect::<Vec<_>>();
            let past = if past.is_empty() {
                String::new()
            } else {
                format!("; audited {}", past.join(", "))
            };
            let failed_on = i.decisions.iter().any(|d| d.is_denial() && &d.host == host);
            let note = if code >= 500 || failed_on {
                " (past the allowlist: the upstream is not reachable from here)"
            } else {
                ""
            };
            pass(format!("GET http://{host}{path}: {line}{note}{past}"))
        }
        Err(e) => fail(format!("GET http://{host}{path}: {e}")),
    }
}

fn denied_host(i: &Inputs<'_>) -> Judged {
    let host = &i.probe.denied_host;
    let out = match output(i, "denied-host") {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let (code, line) = match proxy_answer(out) {
        Ok(a) => a,
        Err(e) => return fail(format!("GET http://{host}/: {e}")),
    };
    if code != 403 {
        return fail(format!("GET http://{host}/: not refused: {line}"));
    }
    match i.probe.denied_line(i.decisions) {
        Some(d) => pass(format!(
            "GET http://{host}/: {line}; audited {} deny {}",
            d.source, d.reason
        )),
        None => fail(format!(
            "GET http://{host}/: {line}, but no deny line in the audit"
        )),
    }
}

fn direct(i: &Inputs<'_>, proto: &str, port: u16) -> Judged {
    let id = if proto == "TCP" {
        "direct-tcp"
    } else {
        "direct-udp"
    };
    let out = match output(i, id) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let to = format!("{proto} to {OUTSIDE_IP}:{port}");
    let said = first_line(&format!("{}\n{}", out.stdout, out.stderr));
    let in_agent = if proto == "TCP" {
        if out.stdout.contains("connected") {
            return fail(format!("{to}: connected"));
        }
        if timed_out(out) {
            return fail(format!(
                "{to}: no answer in {QUICK_SECS} s (not refused at once)"
            ));
        }
        // bash: `connect: Connection refused`
        said.rsplit(": ").next().unwrap_or("").to_string()
    } else {
        if timed_out(out) {
            return fail(format!("{to}: the datagrams took over {QUICK_SECS} s"));
        }
        said
    };
    if i.probe.foreign_pipelock {
        let ok = proto == "UDP" || !in_agent.is_empty();
        let r = if ok { Outcome::Pass } else { Outcome::Fail };
        return (
            r,
            format!(
                "{to}: {in_agent}; not audited (pipelock holds no gateway: pipelock.image, or a Kubernetes pod)"
            ),
        );
    }
    match i.probe.direct_line(i.decisions, proto, port) {
        Some(d) => pass(format!(
            "{to}: {in_agent}; audited {} deny {}",
            d.source, d.reason
        )),
        None => fail(format!("{to}: {in_agent}, but no deny line in the audit")),
    }
}

fn dns(i: &Inputs<'_>) -> Judged {
    let name = &i.probe.dns_name;
    let out = match output(i, "dns") {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    if timed_out(out) {
        return fail(format!("{name}: no answer in {QUICK_SECS} s (not refused)"));
    }
    let code = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("getent exit "))
        .and_then(|c| c.trim().parse::<i32>().ok());
    match code {
        Some(0) => return fail(format!("{name} resolved: {}", first_line(&out.stdout))),
        Some(_) => {}
        None => {
            return fail(format!(
                "getent did not run (exit {}): {}",
                out.code,
                first_line(&out.stderr)
            ));
        }
    }
    if i.probe.foreign_pipelock {
        return pass(format!(
            "{name}: not resolved; not audited (pipelock holds no gateway: pipelock.image, or a Kubernetes pod)"
        ));
    }
    match i.probe.dns_line(i.decisions) {
        Some(d) => pass(format!(
            "{name}: not resolved; audited {} deny dns",
            d.source
        )),
        None => fail(format!(
            "{name}: not resolved, but no deny line in the audit"
        )),
    }
}

/// The part of the file scan's output before `marker`, one path a line; `None` when the
/// marker is missing (the scan did not finish).
fn section<'a>(out: &'a str, after: Option<&str>, marker: &str) -> Option<Vec<&'a str>> {
    let start = match after {
        Some(a) => out.find(a)? + a.len(),
        None => 0,
    };
    let rest = out.get(start..)?;
    let end = rest.find(marker)?;
    Some(
        rest[..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(MAX_LISTED)
            .collect(),
    )
}

/// The forbidden volumes the agent mounts, by their node suffixes.
fn mounted(i: &Inputs<'_>, suffixes: &[&str]) -> Vec<String> {
    let names: Vec<String> = suffixes
        .iter()
        .map(|s| bottle_contract::labels::object_name(i.project, i.bottle, s))
        .collect();
    i.facts
        .volumes
        .iter()
        .filter(|v| names.contains(v))
        .cloned()
        .collect()
}

fn ca_key(i: &Inputs<'_>) -> Judged {
    let bad = mounted(i, &["ca"]);
    if !bad.is_empty() {
        return fail(format!("the agent mounts {}", bad.join(", ")));
    }
    let out = match output(i, "files") {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let Some(keys) = section(&out.stdout, None, "@keys-end") else {
        return fail(format!(
            "the file scan did not finish (exit {}): {}",
            out.code,
            first_line(&out.stderr)
        ));
    };
    if !keys.is_empty() {
        return fail(format!("readable PEM private key(s): {}", keys.join(", ")));
    }
    pass(format!(
        "mounts: {} volume(s), not the ca volume; no readable PEM private key under /etc \
         /home /root /tmp /var/tmp /run /mnt /srv /opt (the workspace copy is the \
         operator's own and not scanned)",
        i.facts.volumes.len()
    ))
}

fn route_tokens(i: &Inputs<'_>) -> Judged {
    let bad = mounted(i, &["egress-config", "git-gate-config"]);
    if !bad.is_empty() {
        return fail(format!("the agent mounts {}", bad.join(", ")));
    }
    let files = match output(i, "files") {
        Ok(out) => match (
            section(&out.stdout, Some("@keys-end"), "@tokens-end"),
            section(&out.stdout, Some("@tokens-end"), "@mounts-end"),
        ) {
            (Some(t), Some(m)) => (t, m),
            _ => return fail("the file scan did not finish"),
        },
        Err(e) => return fail(e),
    };
    if !files.0.is_empty() {
        return fail(format!("readable token file(s): {}", files.0.join(", ")));
    }
    if !files.1.is_empty() {
        return fail(format!(
            "/proc/self/mountinfo shows: {}",
            files.1.join("; ")
        ));
    }
    let out = match output(i, "environ") {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let Some(count) = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("@environs "))
        .and_then(|n| n.trim().parse::<usize>().ok())
    else {
        return fail(format!(
            "the environments could not be read (exit {}): {}",
            out.code,
            first_line(&out.stderr)
        ));
    };
    if out.stdout.contains("PRIVATE KEY-----") {
        return fail("a process environment holds a PEM private key");
    }
    // Tokens shorter than this could match by chance; none is that short in practice.
    let found: Vec<String> = i
        .tokens
        .iter()
        .filter(|t| t.value.expose().len() >= 8 && out.stdout.contains(t.value.expose()))
        .map(|t| format!("${} (route {})", t.var, t.host))
        .collect();
    if !found.is_empty() {
        return fail(format!(
            "a process environment holds the token of {}",
            found.join(", ")
        ));
    }
    let searched = if i.tokens.is_empty() {
        "no route token is set on this host to search for".to_string()
    } else {
        let vars: Vec<String> = i.tokens.iter().map(|t| format!("${}", t.var)).collect();
        format!("none holds the value of {}", vars.join(", "))
    };
    pass(format!(
        "mounts: not egress-config nor git-gate-config; no readable token-* file; \
         {count} process environment(s) read: no PEM key, {searched}"
    ))
}

fn runtime(i: &Inputs<'_>) -> Judged {
    let Some(actual) = i.facts.runtime.as_deref().filter(|r| !r.is_empty()) else {
        return fail("the engine reports no runtime for the agent container");
    };
    let gvisor = |r: &str| if r == "runsc" { " (gVisor)" } else { "" };
    if let Some(label) = &i.facts.runtime_label
        && label != actual
    {
        return fail(format!("runs {actual}, labelled {label}"));
    }
    let Some(asked) = i.asked else {
        return pass(format!(
            "runs {actual}{} (no manifest read)",
            gvisor(actual)
        ));
    };
    // What `apply` chose; its one error is `runsc` asked of an engine without it.
    let expected = crate::runtime::resolve(i.bottle, asked, &i.facts.runtimes)
        .map_or_else(|_| "runsc".to_string(), |r| r.label().to_string());
    let asked = asked.as_str();
    if actual == expected {
        pass(format!("asked {asked}, runs {actual}{}", gvisor(actual)))
    } else {
        fail(format!("asked {asked} (so {expected}), runs {actual}"))
    }
}

fn statx(i: &Inputs<'_>) -> Judged {
    let out = match output(i, "statx") {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    if out.code == 0 {
        pass(format!("ls -d / and stat /: {}", first_line(&out.stdout)))
    } else {
        fail(format!(
            "ls -d / or stat / failed (exit {}): {}",
            out.code,
            first_line(&format!("{}\n{}", out.stderr, out.stdout))
        ))
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
