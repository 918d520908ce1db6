//! `bottle verify`'s checks: what a run sends, how it runs in the agent (the fake
//! engine's scripted exec), and how each output is judged.

use super::*;
use bottle_contract::audit::Verdict;
use bottle_engine::fake::FakeEngine;
use bottle_model::manifest::RouteNames;

const AGENT: &str = "bottle-p-dev-agent";
const TOKEN: &str = "sk-verify-real-token-7c1d";

fn policy(allow: &[&str], routes: &[(&str, Option<&str>)]) -> PolicyNames {
    PolicyNames {
        runtime: RuntimeChoice::Runc,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        routes: routes
            .iter()
            .map(|(h, prefix)| RouteNames {
                host: h.to_string(),
                path_prefix: prefix.map(str::to_string),
                token_var: Some("TOKEN".into()),
            })
            .collect(),
        foreign_pipelock: false,
        image: bottle_model::ImageSource::ProviderDefault,
    }
}

fn probe() -> Probe {
    Probe::new(Some(&policy(&["open.example.test"], &[])), 0x1234_5678)
}

fn ok(stdout: &str) -> Result<ExecOutput, String> {
    Ok(ExecOutput {
        code: 0,
        stdout: stdout.into(),
        stderr: String::new(),
    })
}

fn exit(code: i64, stdout: &str, stderr: &str) -> Result<ExecOutput, String> {
    Ok(ExecOutput {
        code,
        stdout: stdout.into(),
        stderr: stderr.into(),
    })
}

/// What a bottle that keeps its promise prints.
fn good() -> Observed {
    vec![
        (
            "allowed-host",
            ok("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 40\r\n\r\npipelock: no address\n"),
        ),
        (
            "denied-host",
            ok("HTTP/1.1 403 Forbidden\r\n\r\negress: not allowed\n"),
        ),
        (
            "direct-tcp",
            exit(
                1,
                "",
                "bottle-verify: connect: Connection refused\nbottle-verify: line 1: /dev/tcp/198.51.100.7/1: Connection refused\n",
            ),
        ),
        ("direct-udp", ok("second datagram refused\n")),
        ("dns", ok("getent exit 2\n")),
        ("files", ok("@keys-end\n@tokens-end\n@mounts-end\n")),
        (
            "environ",
            ok("HOME=/home/node\nHTTP_PROXY=http://egress:3128\n\n@@\n@environs 2\n"),
        ),
        ("statx", ok("/\n/ directory\n")),
    ]
}

fn line(source: Source, reason: &str, host: &str, detail: &str) -> Decision {
    Decision {
        ts: 1.0,
        bottle: "dev".into(),
        source,
        verdict: Verdict::Deny,
        reason: reason.into(),
        host: host.into(),
        detail: detail.into(),
    }
}

/// The audit lines a run of `p` causes.
fn audited(p: &Probe) -> Vec<Decision> {
    vec![
        line(
            Source::Egress,
            "not-routed",
            &p.denied_host,
            "GET / status 403",
        ),
        line(Source::Pipelock, "dns", &p.dns_name, "DNS port 53"),
        line(
            Source::AgentNet,
            "direct",
            OUTSIDE_IP,
            &format!("TCP port {} TCP connect", p.tcp_port),
        ),
        line(
            Source::AgentNet,
            "direct",
            OUTSIDE_IP,
            &format!("UDP port {} UDP datagram", p.udp_port),
        ),
        line(Source::Pipelock, "resolve", "open.example.test", "GET"),
    ]
}

fn facts() -> HostFacts {
    HostFacts {
        runtime: Some("runc".into()),
        runtime_label: Some("runc".into()),
        runtimes: crate::runtime::RuntimeFacts::unprobed(vec!["runc".into()]),
        volumes: vec![
            "bottle-p-dev-ca-cert".into(),
            "bottle-p-dev-home".into(),
            "bottle-p-dev-workspace".into(),
        ],
    }
}

fn tokens() -> Vec<Token> {
    vec![Token {
        var: "TOKEN".into(),
        host: "api.example.test".into(),
        value: Secret::new(TOKEN),
    }]
}

fn judged(p: &Probe, observed: &Observed, facts: &HostFacts, seen: &[Decision]) -> Vec<Check> {
    judge(&Inputs {
        project: "p",
        bottle: "dev",
        probe: p,
        observed,
        facts,
        decisions: seen,
        asked: Some(RuntimeChoice::Runc),
        tokens: &tokens(),
    })
}

fn result(checks: &[Check], id: &str) -> (Outcome, String) {
    let c = checks.iter().find(|c| c.check == id).expect("check");
    (c.result, c.detail.clone())
}

fn replace(mut o: Observed, id: &str, with: Result<ExecOutput, String>) -> Observed {
    for (c, r) in &mut o {
        if *c == id {
            *r = with.clone();
        }
    }
    o
}

#[test]
fn a_bottle_that_keeps_its_promise_passes_every_check() {
    let p = probe();
    let checks = judged(&p, &good(), &facts(), &audited(&p));
    for c in &checks {
        assert_eq!(c.result, Outcome::Pass, "{c:?}");
    }
    assert!(all_hold(&checks));
    assert_eq!(checks.len(), CHECKS.len());
    let (_, d) = result(&checks, "direct-tcp");
    assert!(
        d.contains("Connection refused") && d.contains("audited agent-net deny direct"),
        "{d}"
    );
    let (_, d) = result(&checks, "route-tokens");
    assert!(
        d.contains("2 process environment(s)") && d.contains("$TOKEN"),
        "{d}"
    );
    assert!(!format!("{checks:?}").contains(TOKEN));
    let (_, d) = result(&checks, "allowed-host");
    assert!(d.contains("502") && d.contains("past the allowlist"), "{d}");
}

#[test]
fn the_run_sends_names_only_and_runs_as_the_agent_user() {
    let p = probe();
    let all: Vec<String> = p.commands().into_iter().flat_map(|(_, c)| c).collect();
    assert!(!all.join(" ").contains(TOKEN));
    assert!(all.contains(&"open.example.test".to_string()));
    // Names the audit writers keep as they are (no label looks like data), valid hosts.
    for name in [&p.denied_host, &p.dns_name] {
        assert_eq!(&bottle_secretscan::redact::name(name), name);
        assert!(
            bottle_contract::host::HostName::parse(name).is_ok(),
            "{name}"
        );
    }
    // Another nonce, other names and ports; the same nonce, the same run.
    let q = Probe::new(None, 0x8765_4321);
    assert_ne!(
        (q.dns_name.clone(), q.tcp_port),
        (p.dns_name.clone(), p.tcp_port)
    );
    assert_eq!(probe(), p);
    assert!(q.allowed.is_none());
}

#[tokio::test]
async fn observe_runs_each_command_in_the_agent_as_its_user() {
    let engine = FakeEngine::default();
    engine.add_container(AGENT, "img", Default::default());
    let p = probe();
    let outputs: Vec<ExecOutput> = good().into_iter().map(|(_, r)| r.expect("ok")).collect();
    engine.script_exec(AGENT, outputs.clone());
    let seen = observe(&engine, AGENT, &p).await;
    let ids: Vec<&str> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        [
            "allowed-host",
            "denied-host",
            "direct-tcp",
            "direct-udp",
            "dns",
            "files",
            "environ",
            "statx"
        ]
    );
    let got: Vec<ExecOutput> = seen.into_iter().map(|(_, r)| r.expect("ran")).collect();
    assert_eq!(got, outputs);
    let calls = engine.calls();
    assert_eq!(calls.len(), 8, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.contains(&format!("{AGENT} as 1000:1000: timeout"))),
        "{calls:?}"
    );

    // A stopped agent: every check says it could not run.
    engine.stop(AGENT);
    let seen = observe(&engine, AGENT, &p).await;
    let checks = judged(&p, &seen, &facts(), &[]);
    let (r, d) = result(&checks, "statx");
    assert_eq!(r, Outcome::Fail);
    assert!(d.contains("could not run in the agent"), "{d}");
}

#[test]
fn a_readable_private_key_or_a_token_fails_its_check_by_name() {
    let p = probe();
    let key = replace(
        good(),
        "files",
        ok("/tmp/stolen.pem\n@keys-end\n/home/node/token-0\n@tokens-end\n@mounts-end\n"),
    );
    let checks = judged(&p, &key, &facts(), &audited(&p));
    let (r, d) = result(&checks, "ca-key");
    assert_eq!(
        (r, d.as_str()),
        (
            Outcome::Fail,
            "readable PEM private key(s): /tmp/stolen.pem"
        )
    );
    let (r, d) = result(&checks, "route-tokens");
    assert_eq!(
        (r, d.as_str()),
        (Outcome::Fail, "readable token file(s): /home/node/token-0")
    );
    assert!(!all_hold(&checks));

    // The token's value in a process environment: named by its variable, never shown.
    let env = replace(
        good(),
        "environ",
        ok(&format!("X={TOKEN}\n@@\n@environs 1\n")),
    );
    let checks = judged(&p, &env, &facts(), &audited(&p));
    let (r, d) = result(&checks, "route-tokens");
    assert_eq!(r, Outcome::Fail);
    assert!(
        d.contains("$TOKEN (route api.example.test)") && !d.contains(TOKEN),
        "{d}"
    );

    // A scan that did not finish is not a pass.
    let cut = replace(good(), "files", exit(124, "/etc/x\n", ""));
    let (r, _) = result(&judged(&p, &cut, &facts(), &audited(&p)), "ca-key");
    assert_eq!(r, Outcome::Fail);

    // Mounted volumes, seen on the host side.
    let mut f = facts();
    f.volumes.push("bottle-p-dev-ca".into());
    f.volumes.push("bottle-p-dev-egress-config".into());
    let checks = judged(&p, &good(), &f, &audited(&p));
    assert_eq!(
        result(&checks, "ca-key").1,
        "the agent mounts bottle-p-dev-ca"
    );
    assert_eq!(
        result(&checks, "route-tokens").1,
        "the agent mounts bottle-p-dev-egress-config"
    );
}

#[test]
fn what_leaves_or_goes_unaudited_fails() {
    let p = probe();
    // No audit lines at all.
    let checks = judged(&p, &good(), &facts(), &[]);
    for id in ["denied-host", "direct-tcp", "direct-udp", "dns"] {
        let (r, d) = result(&checks, id);
        assert_eq!(r, Outcome::Fail, "{id}");
        assert!(d.contains("no deny line in the audit"), "{id}: {d}");
    }
    assert!(!p.audit_complete(&[]));
    assert!(p.audit_complete(&audited(&p)));
    // Lines of another run (other names, other ports) do not count.
    let other = Probe::new(None, 99);
    assert!(!p.audit_complete(&audited(&other)));

    let seen = audited(&p);
    let leaky = replace(good(), "direct-tcp", ok("connected\n"));
    let leaky = replace(leaky, "dns", ok("93.184.216.34 x.invalid\ngetent exit 0\n"));
    let leaky = replace(leaky, "denied-host", ok("HTTP/1.1 200 OK\r\n\r\n"));
    let checks = judged(&p, &leaky, &facts(), &seen);
    assert_eq!(
        result(&checks, "direct-tcp").1,
        format!("TCP to {OUTSIDE_IP}:{}: connected", p.tcp_port)
    );
    assert!(result(&checks, "dns").1.contains("resolved"));
    assert!(
        result(&checks, "denied-host")
            .1
            .contains("not refused: HTTP/1.1 200 OK")
    );

    let slow = replace(good(), "dns", exit(124, "", ""));
    let (r, d) = result(&judged(&p, &slow, &facts(), &seen), "dns");
    assert_eq!(r, Outcome::Fail);
    assert!(d.contains("no answer in 5 s"), "{d}");
}

#[test]
fn the_allowed_host_fails_only_on_a_policy_refusal() {
    let p = probe();
    let mut seen = audited(&p);
    seen.push(line(
        Source::Pipelock,
        "not-allowlisted",
        "open.example.test",
        "GET",
    ));
    let refused = replace(good(), "allowed-host", ok("HTTP/1.1 403 Forbidden\r\n\r\n"));
    let (r, d) = result(&judged(&p, &refused, &facts(), &seen), "allowed-host");
    assert_eq!(r, Outcome::Fail);
    assert!(d.contains("pipelock refused it (not-allowlisted)"), "{d}");

    // A name that resolves to a reserved address here (a sinkhole): past the allowlist.
    let mut seen = audited(&p);
    seen.push(line(Source::Pipelock, "ssrf", "open.example.test", "GET"));
    let (r, d) = result(&judged(&p, &refused, &facts(), &seen), "allowed-host");
    assert_eq!(r, Outcome::Pass, "{d}");
    assert!(
        d.contains("not reachable from here") && d.contains("pipelock deny ssrf"),
        "{d}"
    );

    // A bottle that allows nothing: skipped, not failed.
    let none = Probe::new(Some(&policy(&[], &[])), 1);
    let checks = judged(&none, &good(), &facts(), &audited(&none));
    assert_eq!(result(&checks, "allowed-host").0, Outcome::Skip);
    assert!(all_hold(&checks));

    // The host chosen: an exact entry, else a route (under its prefix), else a name
    // under a wildcard.
    let pick = |allow: &[&str], routes: &[(&str, Option<&str>)]| {
        Probe::new(Some(&policy(allow, routes)), 1).allowed
    };
    let pair = |h: &str, path: &str| Some((h.to_string(), path.to_string()));
    assert_eq!(pick(&["*.example.org", "a.test"], &[]), pair("a.test", "/"));
    assert_eq!(
        pick(&["*.example.org"], &[("api.test", Some("/v1"))]),
        pair("api.test", "/v1")
    );
    assert_eq!(pick(&["*.example.org"], &[]), pair("www.example.org", "/"));
}

#[test]
fn runtime_and_statx() {
    let p = probe();
    let seen = audited(&p);
    let judge_with = |asked: Option<RuntimeChoice>, f: &HostFacts, o: &Observed| {
        judge(&Inputs {
            project: "p",
            bottle: "dev",
            probe: &p,
            observed: o,
            facts: f,
            decisions: &seen,
            asked,
            tokens: &[],
        })
    };
    let mut gvisor = facts();
    gvisor.runtimes = crate::runtime::RuntimeFacts::unprobed(vec!["runc".into(), "runsc".into()]);
    gvisor.runtime = Some("runsc".into());
    gvisor.runtime_label = Some("runsc".into());
    let auto = judge_with(Some(RuntimeChoice::Auto), &gvisor, &good());
    assert_eq!(
        result(&auto, "runtime"),
        (Outcome::Pass, "asked auto, runs runsc (gVisor)".into())
    );
    // auto on an engine with runsc, running runc: not what auto picks.
    let runc = judge_with(
        Some(RuntimeChoice::Auto),
        &HostFacts {
            runtimes: gvisor.runtimes.clone(),
            ..facts()
        },
        &good(),
    );
    assert_eq!(result(&runc, "runtime").0, Outcome::Fail);
    let asked = judge_with(Some(RuntimeChoice::Runsc), &facts(), &good());
    assert_eq!(
        result(&asked, "runtime").1,
        "asked runsc (so runsc), runs runc"
    );
    let unknown = judge_with(None, &facts(), &good());
    assert_eq!(
        result(&unknown, "runtime"),
        (Outcome::Pass, "runs runc (no manifest read)".into())
    );

    // Under this machine's old gVisor, statx fails with EINVAL: the error is shown.
    let einval = replace(
        good(),
        "statx",
        exit(2, "", "ls: cannot access '/': Invalid argument\n"),
    );
    let (r, d) = result(
        &judge_with(Some(RuntimeChoice::Runsc), &gvisor, &einval),
        "statx",
    );
    assert_eq!(r, Outcome::Fail);
    assert_eq!(
        d,
        "ls -d / or stat / failed (exit 2): ls: cannot access '/': Invalid argument"
    );
}

#[test]
fn a_foreign_pipelock_audits_no_dns_or_direct_packets() {
    let mut pol = policy(&["open.example.test"], &[]);
    pol.foreign_pipelock = true;
    let p = Probe::new(Some(&pol), 5);
    let only_denied = vec![line(Source::Egress, "not-routed", &p.denied_host, "")];
    assert!(p.audit_complete(&only_denied));
    let checks = judged(&p, &good(), &facts(), &only_denied);
    assert!(all_hold(&checks), "{checks:#?}");
    assert!(result(&checks, "dns").1.contains("not audited"));
}
