//! `remote_control: true`, end to end without Anthropic: the agent image has a stand-in
//! `claude` that prints its arguments, so `bottle exec NAME` shows the command it
//! starts; the hosts Remote Control needs are in egress's routes as passthrough.

use crate::util::*;

const STUB_DOCKERFILE: &str = "FROM debian:bookworm-slim\nRUN printf '#!/bin/sh\\necho claude \"$@\"\\n' > /usr/local/bin/claude && chmod 755 /usr/local/bin/claude\nCMD [\"sleep\", \"infinity\"]\n";

#[test]
fn bottle_exec_starts_claude_code_with_remote_control() {
    let p = Project::new("rc");
    std::fs::write(p.path("Dockerfile"), STUB_DOCKERFILE).expect("Dockerfile");
    let m = p.manifest(
        r#"
bottles:
  dev: {image: {dockerfile: Dockerfile}, runtime: runc}
agents:
  rc: {bottle: dev, remote_control: true}
  plain: {bottle: dev}
"#,
    );
    let m = m.to_str().expect("utf-8");
    let applied = p.bottle(&["apply", "-f", m]).expect(0);
    assert!(
        applied
            .stderr
            .contains("warning: bottle rc: remote_control"),
        "{}",
        applied.stderr
    );
    assert!(!applied.stderr.contains("bottle plain: remote_control"));
    let session = |name: &str| p.bottle(&["exec", name, "-p", &p.name]).expect(0).stdout;
    assert_eq!(session("rc").trim(), "claude --remote-control");
    assert_eq!(session("plain").trim(), "claude");
    // Arguments after `--` replace the session command, as always.
    let own = p
        .bottle(&["exec", "rc", "-p", &p.name, "--", "claude", "-p", "hi"])
        .expect(0)
        .stdout;
    assert_eq!(own.trim(), "claude -p hi");

    // egress tunnels the Remote Control hosts for rc only.
    let config = |bottle: &str| {
        docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/c:ro", p.obj(bottle, "egress-config")),
            "debian:bookworm-slim",
            "cat",
            "/c/config.json",
        ])
    };
    let cfg: serde_json::Value = serde_json::from_str(&config("rc")).expect("config.json");
    let routes = cfg["routes"].as_array().expect("routes");
    for host in bottle_model::provider::REMOTE_CONTROL_HOSTS {
        assert!(
            routes
                .iter()
                .any(|r| r["host"] == *host && r["tls_passthrough"] == true && r["auth"].is_null()),
            "{host}: {cfg}"
        );
    }
    let plain: serde_json::Value = serde_json::from_str(&config("plain")).expect("config.json");
    assert_eq!(plain["routes"], serde_json::json!([]), "{plain}");
}
