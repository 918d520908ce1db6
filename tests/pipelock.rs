//! Issue 5 end to end: a bottle's pipelock refuses what its manifest does not allow,
//! answers 403 with the reason, and logs every decision, never a secret.

use std::process::Command;

use crate::util::{Project, docker, docker_try};

/// A Debian image with curl, built once per machine (apt works at build time).
const CURL_IMAGE: &str = "bottle-test-curl:1";

fn curl_image() {
    if docker_try(&["image", "inspect", "--format", "{{.Id}}", CURL_IMAGE])
        .trim()
        .is_empty()
    {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\n",
        )
        .expect("write Dockerfile");
        docker(&[
            "build",
            "-q",
            "-t",
            CURL_IMAGE,
            dir.path().to_str().expect("utf-8"),
        ]);
    }
}

/// Run curl on the bottle's internal network through pipelock; returns its stdout.
fn curl(net: &str, args: &[&str]) -> String {
    let mut a = vec![
        "run",
        "--rm",
        "--network",
        net,
        CURL_IMAGE,
        "curl",
        "-s",
        "-m",
        "30",
        "-x",
        "http://pipelock:8888",
    ];
    a.extend_from_slice(args);
    docker_try(&a)
}

#[test]
fn pipelock_denies_unlisted_hosts_internal_addresses_and_secrets() {
    curl_image();
    let p = Project::new("plk");
    let m = p.manifest(
        "bottles:\n  dev:\n    image: {dockerfile: Dockerfile}\n    egress:\n      allow: [allowed.invalid]\nagents:\n  x: {bottle: dev}\n",
    );
    p.bottle(&["apply", "-f", m.to_str().expect("utf-8")])
        .expect(0);
    let net = p.obj("x", "net-internal");
    let code = ["-o", "/dev/null", "-w", "%{http_code}"];

    // An unlisted host, plain HTTP and CONNECT.
    let mut args = code.to_vec();
    args.push("http://forbidden.example.net/");
    assert_eq!(curl(&net, &args), "403");
    let body = curl(&net, &["http://forbidden.example.net/"]);
    assert!(
        body.contains("forbidden.example.net is not on this bottle's egress allowlist"),
        "{body}"
    );
    assert!(body.contains("egress-block"), "{body}");
    let connect = curl(
        &net,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            "https://forbidden.example.net/",
        ],
    );
    assert_eq!(connect, "403");
    // IP literals: the metadata address and a private one.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
    ] {
        let mut args = code.to_vec();
        args.push(url);
        assert_eq!(curl(&net, &args), "403", "{url}");
    }
    // A secret in a header to an allowed host: refused before any DNS or connection.
    let secret = format!("ghp_{}", "Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3");
    let header = format!("X-Token: {secret}");
    let mut args = code.to_vec();
    args.extend_from_slice(&["-H", &header, "http://allowed.invalid/"]);
    assert_eq!(curl(&net, &args), "403");
    // The allowed host is not refused by policy (it does not resolve: 502).
    let mut args = code.to_vec();
    args.push("http://allowed.invalid/");
    assert_eq!(curl(&net, &args), "502");

    let out = Command::new("docker")
        .args(["logs", &p.obj("x", "pipelock")])
        .output()
        .expect("docker logs");
    let logs =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let audit: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["component"] == "pipelock.audit")
        .collect();
    let has = |reason: &str, host: &str| {
        audit
            .iter()
            .any(|e| e["decision"] == "deny" && e["reason"] == reason && e["host"] == host)
    };
    assert!(has("not-allowlisted", "forbidden.example.net"), "{logs}");
    assert!(has("ip-literal", "169.254.169.254"), "{logs}");
    assert!(has("ip-literal", "10.0.0.1"), "{logs}");
    assert!(
        audit
            .iter()
            .any(|e| e["reason"] == "dlp" && e["rule"] == "github-pat"),
        "{logs}"
    );
    assert!(has("resolve", "allowed.invalid"), "{logs}");
    assert!(!logs.contains(&secret[4..]), "a secret reached the log");
}
