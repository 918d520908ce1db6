//! Issue 17 (point 3): `bottle verify` checks a running bottle from inside its agent, as
//! the agent user, and reports a table (or JSON): exit 0 when every check holds, 1 when
//! one fails (here: a PEM private key the agent can read), 2 when the bottle is not
//! running or does not exist. It reads only the manifest's names: an unset `from_env`
//! variable is not an error for it.

use crate::util::*;

const TOKEN: &str = "sk-verify-e2e-token-9d3e1f";

const CHECKS: [&str; 9] = [
    "allowed-host",
    "denied-host",
    "direct-tcp",
    "direct-udp",
    "dns",
    "ca-key",
    "route-tokens",
    "runtime",
    "statx",
];

#[test]
fn verify_checks_a_running_bottle_from_inside() {
    let p = Project::new("vfy");
    let m = p.manifest(
        r#"
bottles:
  dev:
    image: {dockerfile: Dockerfile}
    runtime: runc
    env:
      GREETING: {from_env: VERIFY_E2E_GREETING}
    egress:
      allow: [open.example.test]
      routes:
        - host: api.example.test
          auth: {scheme: bearer, token: {from_env: VERIFY_E2E_TOKEN}}
agents:
  a: {bottle: dev}
"#,
    );
    let m = m.to_str().expect("utf-8");
    let env = [
        ("VERIFY_E2E_TOKEN", TOKEN),
        ("VERIFY_E2E_GREETING", "hello"),
    ];
    p.bottle_env(&["apply", "-f", m], &env).expect(0);

    // With the token on the host (searched for on this side), without the greeting.
    let run = p
        .bottle_env(&["verify", "a", "-f", m], &[("VERIFY_E2E_TOKEN", TOKEN)])
        .expect(0);
    assert!(
        run.stdout.contains("a: every check holds"),
        "{}",
        run.stdout
    );
    for id in CHECKS {
        let row = run
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row {id}:\n{}", run.stdout));
        assert!(row.contains(" ok "), "{row}");
    }
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));
    assert!(
        run.stdout
            .contains("none holds the value of $VERIFY_E2E_TOKEN"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("GET http://open.example.test/"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("asked runc, runs runc"),
        "{}",
        run.stdout
    );
    // The run is in the audit: the refused host, the DNS question, the direct packets.
    let audit = p
        .bottle(&["audit", "a", "-p", &p.name, "--denied"])
        .expect(0);
    for what in ["verify-denied-", "verify-dns-", "198.51.100.7"] {
        assert!(audit.stdout.contains(what), "{what}:\n{}", audit.stdout);
    }

    // Every bottle of the manifest, as JSON.
    let json = p.bottle(&["verify", "-f", m, "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["project"], p.name.as_str());
    let b = &v["bottles"][0];
    assert_eq!(
        (b["bottle"].as_str(), b["ok"].as_bool()),
        (Some("a"), Some(true))
    );
    assert_eq!(b["checks"].as_array().map(Vec::len), Some(CHECKS.len()));
    assert_eq!(b["checks"][0]["result"], "pass");

    // By project only: no manifest, so no allowlist to try.
    let by_project = p.bottle(&["verify", "a", "-p", &p.name]).expect(0);
    assert!(
        by_project.stdout.contains("allowed-host  skip"),
        "{}",
        by_project.stdout
    );

    // A private key the agent can read: the CA-key check fails, naming the file.
    let agent = p.obj("a", "agent");
    docker(&[
        "exec",
        "-u",
        "1000",
        &agent,
        "sh",
        "-c",
        "printf -- '-----BEGIN PRIVATE KEY-----\\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA\\n-----END PRIVATE KEY-----\\n' > /tmp/leaked.pem",
    ]);
    let leaked = p.bottle(&["verify", "a", "-f", m]).expect(1);
    let row = leaked
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("ca-key "))
        .unwrap_or_else(|| panic!("{}", leaked.stdout));
    assert!(
        row.contains("FAIL") && row.contains("/tmp/leaked.pem"),
        "{row}"
    );
    assert!(
        leaked.stdout.contains("a: 1 check(s) FAIL"),
        "{}",
        leaked.stdout
    );

    // Not running, or not there: said so, exit 2.
    docker(&["stop", "-t", "1", &agent]);
    let stopped = p.bottle(&["verify", "a", "-f", m]).expect(2);
    assert!(
        stopped.stderr.contains("bottle a is not running"),
        "{}",
        stopped.stderr
    );
    let absent = p.bottle(&["verify", "nosuch", "-p", &p.name]).expect(2);
    assert!(
        absent.stderr.contains("no bottle named nosuch"),
        "{}",
        absent.stderr
    );
}
