//! Issue 4 acceptance: the egress proxy end to end. A fake upstream (the sidecar image's
//! hidden `fake-upstream` mode, with a test-CA certificate) answers as `api.example.test`
//! on the bottle's net-egress; the agent (an image with curl, python3-requests and node
//! from Debian) calls it with only the environment the bottle sets, through egress and
//! then pipelock. The upstream sees the real token (and the agent's cookie), never the
//! agent's own credentials; the token is nowhere in the agent nor in Docker's view of the
//! bottle; a passthrough route shows the upstream's own certificate; two bottles have
//! different CAs and neither agent holds a CA key.

use crate::util::*;

const TOKEN: &str = "sk-e2e-real-token-5f0c2a";
pub(crate) const CLIENT_IMAGE: &str = "bottle-test-egress-client:1";
const CLIENT_DOCKERFILE: &str = "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates python3-requests nodejs && rm -rf /var/lib/apt/lists/*\n";

const NODE_SCRIPT: &str = r#"
const http = require('http'), tls = require('tls');
const p = new URL(process.env.HTTPS_PROXY);
const r = http.request({host: p.hostname, port: p.port, method: 'CONNECT', path: 'api.example.test:443'});
r.on('connect', (res, sock) => {
  if (res.statusCode !== 200) { console.log('CONNECT ' + res.statusCode); process.exit(1); }
  const t = tls.connect({socket: sock, servername: 'api.example.test'}, () => {
    t.write('GET /node HTTP/1.1\r\nHost: api.example.test\r\nAuthorization: Bearer agent-fake\r\nConnection: close\r\n\r\n');
  });
  let d = ''; t.on('data', c => d += c); t.on('end', () => console.log(d));
  t.on('error', e => { console.log('ERR ' + e); process.exit(1); });
});
r.end();
"#;

const PY_SCRIPT: &str = "import requests; r = requests.get('https://api.example.test/py', headers={'Authorization': 'Bearer agent-fake'}); print(r.status_code); print(r.text)";

pub(crate) fn ensure_client_image() {
    ensure_image(CLIENT_IMAGE, CLIENT_DOCKERFILE);
}

/// `docker exec AGENT sh -c SCRIPT`: stdout and stderr.
pub(crate) fn exec(agent: &str, script: &str) -> (String, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", agent, "sh", "-c", script])
        .output()
        .expect("docker exec");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `issuer:` line of `curl -v`'s certificate report.
fn issuer(curl_verbose: &str) -> &str {
    curl_verbose
        .lines()
        .find(|l| l.trim_start_matches(['*', ' ']).starts_with("issuer:"))
        .unwrap_or_else(|| panic!("no issuer in curl -v output:\n{curl_verbose}"))
}

#[test]
fn credentials_are_injected_and_never_reach_the_agent() {
    ensure_client_image();
    let p = Project::new("egress");
    let certs = upstream_certs(&p, &["api.example.test", "pass.example.test"]);
    std::fs::write(
        p.path("Dockerfile"),
        format!("FROM {CLIENT_IMAGE}\nCMD [\"sleep\", \"infinity\"]\n"),
    )
    .expect("Dockerfile");
    let m = p.manifest(
        r#"
bottles:
  dev:
    image: {dockerfile: Dockerfile}
    # gVisor is not what this test is about (node's statx fails under this machine's runsc).
    runtime: runc
    egress:
      allow: [open.example.test]
      # The fake upstream sits on a Docker network: a private address pipelock refuses
      # unless allowed.
      allow_cidrs: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]
      upstream_ca: upstream-ca.pem
      routes:
        - host: api.example.test
          auth: {scheme: bearer, token: {from_env: EGRESS_E2E_TOKEN}}
          roles: [anthropic-base-url]
        - host: pass.example.test
          tls_passthrough: true
agents:
  a: {bottle: dev}
  # A second bottle: its own CA.
  b: {bottle: dev}
"#,
    );
    let m = m.to_str().expect("utf-8");
    let env = [("EGRESS_E2E_TOKEN", TOKEN)];
    let applied = p.bottle_env(&["apply", "-f", m], &env).expect(0);
    p.bottle_env(&["verify", "-f", m], &env).expect(0);
    assert!(!applied.stdout.contains(TOKEN) && !applied.stderr.contains(TOKEN));

    let egress = p.obj("a", "egress");
    let upstream = start_upstream(
        &p,
        "a",
        &["api.example.test", "pass.example.test"],
        Some(&certs),
    );

    // Bottle b reaches the same upstream on its own net-egress.
    docker(&[
        "network",
        "connect",
        "--alias",
        "api.example.test",
        &p.obj("b", "net-egress"),
        &upstream.0,
    ]);

    // The agent itself, with only the environment the bottle gave it.
    let agent = p.obj("a", "agent");
    let client = |script: &str| -> String {
        let (out, err) = exec(&agent, script);
        format!("{out}{err}")
    };
    // The upstream may take a moment to listen. The agent sends its own credentials and
    // a cookie; `-v` reports the certificate it was shown (on stderr, with the request
    // headers curl sent).
    let curl = "curl -sS -v -H 'Authorization: Bearer agent-fake' \
        -H 'Proxy-Authorization: Basic agent-proxy' -H 'Cookie: session=agent-cookie' \
        https://api.example.test/curl";
    let (mut out, mut verbose) = (String::new(), String::new());
    for _ in 0..20 {
        (out, verbose) = exec(&agent, curl);
        if out.contains("/curl") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let seen: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("curl: {e}: {out}\n{verbose}"));
    let headers = &seen["headers"];
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"), "{out}");
    assert!(headers.get("proxy-authorization").is_none(), "{out}");
    assert!(
        !out.contains("agent-fake") && !out.contains("agent-proxy"),
        "{out}"
    );
    assert_eq!(headers["cookie"], "session=agent-cookie", "{out}");
    // Intercepted: the leaf is the bottle's own.
    let issuer_a = issuer(&verbose).to_string();
    assert!(
        issuer_a.contains("/a CA"),
        "intercepted by bottle a's CA: {issuer_a}"
    );

    // A passthrough route: the upstream's own certificate (which the agent does not
    // trust, hence -k here only), and the agent's request untouched, with no token.
    let (out, verbose) = exec(
        &agent,
        "curl -sS -v -k -H 'Authorization: Bearer agent-own' https://pass.example.test/pass",
    );
    let shown = issuer(&verbose);
    assert!(shown.contains("test upstream CA"), "passthrough: {shown}");
    assert!(
        out.contains("/pass") && out.contains("Bearer agent-own") && !out.contains(TOKEN),
        "passthrough: {out}"
    );
    let (_, verbose) = exec(&agent, "curl -sS https://pass.example.test/pass; true");
    assert!(
        verbose.contains("certificate"),
        "the agent does not trust the upstream's CA: {verbose}"
    );

    // Bottle b: the same route, intercepted with a different CA.
    let agent_b = p.obj("b", "agent");
    let (out, verbose) = exec(&agent_b, "curl -sS -v https://api.example.test/b");
    assert!(out.contains(&format!("Bearer {TOKEN}")), "bottle b: {out}");
    let issuer_b = issuer(&verbose);
    assert!(
        issuer_b.contains("/b CA"),
        "intercepted by bottle b's CA: {issuer_b}"
    );
    let ca_of = |agent: &str| {
        let (ca, _) = exec(agent, "cat /etc/bottle/ca/ca.crt");
        assert!(ca.contains("BEGIN CERTIFICATE"), "{agent}: {ca}");
        let (bundle, _) = exec(agent, "cat \"$SSL_CERT_FILE\"");
        (ca, bundle)
    };
    let (ca_a, bundle_a) = ca_of(&agent);
    let (ca_b, bundle_b) = ca_of(&agent_b);
    assert_ne!(ca_a, ca_b, "two bottles, two CAs");
    assert!(bundle_a.contains(&ca_a) && !bundle_a.contains(&ca_b));
    assert!(bundle_b.contains(&ca_b) && !bundle_b.contains(&ca_a));

    let py = client(&format!("python3 -c \"{PY_SCRIPT}\""));
    assert!(
        py.starts_with("200") && py.contains(&format!("Bearer {TOKEN}")),
        "requests: {py}"
    );

    let node = client(&format!("node -e '{}'", NODE_SCRIPT.replace('\'', "\"")));
    assert!(
        node.contains("200 OK") && node.contains(&format!("Bearer {TOKEN}")),
        "node: {node}"
    );

    let denied =
        client("curl -sS -o /dev/stderr -w '%{http_code}' https://evil.example.test/ ; true");
    // curl hides the CONNECT answer's body; the in-process tests check it names the host.
    assert!(
        denied.contains("403"),
        "unknown hosts are refused: {denied}"
    );

    // The token is nowhere the agent or an observer of Docker can see it.
    for c in p.objects("container") {
        let all = docker(&["inspect", &c]);
        assert!(!all.contains(TOKEN), "docker inspect {c} shows the token");
    }
    // Nor is either CA key: a line of each key (read from the sidecars' CA volume) is
    // searched for in both agents' files, besides the key file's own path.
    let key_line = |b: &str| {
        let key = docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/ca:ro", p.obj(b, "ca")),
            "debian:bookworm-slim",
            "cat",
            "/ca/ca.key",
        ]);
        assert!(
            key.contains("PRIVATE KEY"),
            "{b}: the CA volume holds the key"
        );
        key.lines().nth(1).expect("a PEM body line").to_string()
    };
    let keys = [key_line("a"), key_line("b")];
    for a in [&agent, &agent_b] {
        let agent_view = docker(&[
            "exec",
            a,
            "sh",
            "-c",
            &format!(
                "env; cat /proc/*/environ 2>/dev/null; test -e /etc/bottle/ca/ca.key && echo KEYFILE; \
                 grep -rlsF -e sk-e2e -e '{}' -e '{}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; true",
                keys[0], keys[1]
            ),
        ]);
        assert!(!agent_view.contains(TOKEN), "{a} sees the token");
        assert!(
            !agent_view.contains("KEYFILE")
                && !keys.iter().any(|k| agent_view.contains(k.as_str())),
            "{a} holds a CA key: {agent_view}"
        );
        // grep -l names the files holding a match: there must be none.
        assert!(
            !agent_view.lines().any(|l| l.starts_with('/')),
            "{a}: {agent_view}"
        );
    }
    let logs = std::process::Command::new("docker")
        .args(["logs", &egress])
        .output()
        .expect("logs");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(!logs.contains(TOKEN), "egress logs show the token");
    assert!(
        logs.contains("\"route\":\"api.example.test\""),
        "audit lines: {logs}"
    );
    assert!(
        logs.contains("\"host\":\"evil.example.test\""),
        "denials are logged: {logs}"
    );
    let diff = p.bottle_env(&["diff", "-f", m, "-o", "json"], &env);
    assert!(!diff.stdout.contains(TOKEN) && !diff.stderr.contains(TOKEN));
    // A changed token recreates the config volume and the egress container.
    let changed = p.bottle_env(&["diff", "-f", m], &[("EGRESS_E2E_TOKEN", "sk-e2e-other")]);
    assert_eq!(changed.code, 1, "{}", changed.stderr);
    assert!(!changed.stdout.contains("sk-e2e") && !changed.stderr.contains("sk-e2e"));
}
