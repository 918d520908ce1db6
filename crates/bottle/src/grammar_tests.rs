//! The host grammar's table (`bottle_contract::host::table`) through every entry point
//! that takes a host from outside: the manifest's `egress.allow`, `egress.routes[].host`
//! and `egress.allow_cidrs`; an agent's proposal; egress's allowlist and the host a
//! request names there; pipelock's allowlist and the host a request names there. Each
//! must give the answer the table gives, so no host is refused by one and let through
//! by another.

use std::path::Path;

use bottle_contract::host::table::{CIDR_TABLE, CidrExpect, Expect, GRAMMAR_TABLE};
use bottle_contract::pipelock::Config as PipelockConfig;
use bottle_contract::supervise::normalize_host;
use bottle_sidecars::egress::route::{Decision, Policy as EgressPolicy};
use bottle_sidecars::pipelock::policy::{Policy as PipelockPolicy, Verdict, normalize};

use bottle_model::Manifest;
use bottle_model::manifest::parse;

/// A manifest whose one bottle has `egress.<section>` set to `value` (a YAML scalar,
/// quoted so YAML reads it as the exact string).
fn manifest(dir: &Path, section: &str, value: &str) -> Option<Manifest> {
    let quoted = serde_json::to_string(value).expect("json string");
    let egress = match section {
        "allow" => format!("{{allow: [{quoted}]}}"),
        "route" => format!("{{routes: [{{host: {quoted}}}]}}"),
        "allow_cidrs" => format!("{{allow_cidrs: [{quoted}]}}"),
        other => unreachable!("{other}"),
    };
    let text = format!(
        "project: grammar\nbottles:\n  dev:\n    image: {{dockerfile: Dockerfile.test}}\n    egress: {egress}\nagents:\n  a:\n    bottle: dev\n"
    );
    parse(&text, &dir.join("bottles.yaml"), &|_| None).ok()
}

fn dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile.test"), "FROM scratch\n").expect("write");
    dir
}

#[test]
fn every_entry_point_reads_hosts_by_the_one_grammar() {
    let dir = dir();
    let mut wrong = Vec::new();
    for (input, expect) in GRAMMAR_TABLE {
        let want_pattern = expect.pattern();
        let mut differ = |what: &str, got: Option<String>, want: Option<String>| {
            if got != want {
                wrong.push(format!("{what} {input:?}: got {got:?}, want {want:?}"));
            }
        };
        // The manifest: `egress.allow` takes patterns, a route's host one name.
        let allow = manifest(dir.path(), "allow", input)
            .map(|m| m.bottles["dev"].egress.allow.clone())
            .map(|a| a.join(","));
        differ("manifest egress.allow", allow, want_pattern.clone());
        let route = manifest(dir.path(), "route", input)
            .map(|m| m.bottles["dev"].egress.routes[0].host.clone());
        differ(
            "manifest egress.routes[].host",
            route,
            expect.name().map(str::to_owned),
        );
        // An agent's proposal.
        differ("proposal", normalize_host(input).ok(), want_pattern.clone());
        // egress: an allow entry, and a request naming the input.
        let egress = EgressPolicy::new(vec![], vec![input.to_string()], &[]);
        differ(
            "egress allow entry",
            egress.allow().entries.first().map(ToString::to_string),
            want_pattern.clone(),
        );
        if let Expect::Name(n) = expect {
            let allowing = EgressPolicy::new(vec![], vec![n.to_string()], &[]);
            let allowed = matches!(allowing.request(input, "/"), Decision::Allow);
            differ(
                "egress request",
                allowed.then(|| n.to_string()),
                Some(n.to_string()),
            );
        }
        // pipelock: an allow entry, and a request naming the input.
        let cfg = PipelockConfig {
            allow: vec![input.to_string()],
            ..Default::default()
        };
        let pipelock = PipelockPolicy::from_config(&cfg).ok();
        differ(
            "pipelock allow entry",
            pipelock.is_some().then(|| want_pattern.clone()).flatten(),
            want_pattern.clone(),
        );
        differ(
            "pipelock request host",
            normalize(input).ok().map(|h| h.to_string()),
            expect.host(),
        );
        if let (Some(p), Expect::Name(n)) = (&pipelock, expect) {
            let verdict = p.check(&normalize(n).expect("a name"));
            differ(
                "pipelock allows its entry",
                (verdict == Verdict::Allow).then(|| n.to_string()),
                Some(n.to_string()),
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn cidr_blocks_are_read_alike_by_the_manifest_and_pipelock() {
    let dir = dir();
    let mut wrong = Vec::new();
    for (input, expect) in CIDR_TABLE {
        let want = match expect {
            CidrExpect::Block(b) => Some(b.to_string()),
            CidrExpect::Refused(_) => None,
        };
        let manifest = manifest(dir.path(), "allow_cidrs", input)
            .map(|m| m.bottles["dev"].egress.allow_cidrs.join(","));
        let cfg = PipelockConfig {
            allow_cidrs: vec![input.to_string()],
            ..Default::default()
        };
        let pipelock = PipelockPolicy::from_config(&cfg).ok().map(|p| {
            p.list
                .cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
        // egress keeps the blocks it can parse (pipelock refused the rest at start).
        let egress = EgressPolicy::new(vec![], vec![], &[input.to_string()])
            .allow()
            .cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let egress = (!egress.is_empty()).then_some(egress);
        for (what, got) in [
            ("manifest", manifest),
            ("pipelock", pipelock),
            ("egress", egress),
        ] {
            if got != want {
                wrong.push(format!("{what} {input:?}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
