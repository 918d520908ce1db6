//! Issue 4 acceptance: the egress proxy end to end. A fake upstream (the sidecar image's
//! hidden `fake-upstream` mode, with a test-CA certificate) answers as `api.example.test`
//! on the bottle's net-egress; the agent (an image with curl, python3-requests and node
//! from Debian) calls it with only the environment the bottle sets, through egress and
//! then pipelock. The upstream sees the real token; the token is nowhere in the agent
//! nor in Docker's view of the bottle.

use crate::util::*;

const TOKEN: &str = "sk-e2e-real-token-5f0c2a";
const CLIENT_IMAGE: &str = "bottle-test-egress-client:1";
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

fn ensure_client_image() {
    if docker_try(&["image", "inspect", CLIENT_IMAGE])
        .trim()
        .is_empty()
    {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("Dockerfile"), CLIENT_DOCKERFILE).expect("write");
        docker(&[
            "build",
            "-q",
            "-t",
            CLIENT_IMAGE,
            dir.path().to_str().expect("utf-8"),
        ]);
    }
}

/// Removes the fake upstream container on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_try(&["rm", "-f", &self.0]);
    }
}

#[test]
fn credentials_are_injected_and_never_reach_the_agent() {
    ensure_client_image();
    let p = Project::new("egress");
    let pki = bottle::sidecar::egress::testkit::TestPki::new(&["api.example.test"]);
    std::fs::write(p.path("upstream-ca.pem"), &pki.ca_pem).expect("ca");
    let certs = p.path("certs");
    std::fs::create_dir(&certs).expect("certs dir");
    std::fs::write(certs.join("leaf.pem"), &pki.leaf_pem).expect("leaf");
    std::fs::write(certs.join("leaf.key"), &pki.leaf_key_pem).expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["leaf.pem", "leaf.key"] {
            std::fs::set_permissions(certs.join(f), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
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
agents:
  a: {bottle: dev}
"#,
    );
    let m = m.to_str().expect("utf-8");
    let env = [("EGRESS_E2E_TOKEN", TOKEN)];
    let applied = p.bottle_env(&["apply", "-f", m], &env).expect(0);
    assert!(!applied.stdout.contains(TOKEN) && !applied.stderr.contains(TOKEN));

    let egress = p.obj("a", "egress");
    let image = inspect(&egress, "{{.Config.Image}}");
    let upstream = Container(format!("{}-fake-upstream", p.obj("a", "t")));
    docker(&[
        "run",
        "-d",
        "--name",
        &upstream.0,
        "--user",
        "0:0",
        "--network",
        &p.obj("a", "net-egress"),
        "--network-alias",
        "api.example.test",
        "-v",
        &format!("{}:/certs:ro", certs.display()),
        "-e",
        "BOTTLE_FAKE_CERT=/certs/leaf.pem",
        "-e",
        "BOTTLE_FAKE_KEY=/certs/leaf.key",
        "-e",
        "BOTTLE_LISTEN=0.0.0.0:443",
        &image,
        "sidecar",
        "fake-upstream",
    ]);

    // The agent itself, with only the environment the bottle gave it.
    let agent = p.obj("a", "agent");
    let client = |script: &str| -> String {
        let out = std::process::Command::new("docker")
            .args(["exec", &agent, "sh", "-c", script])
            .output()
            .expect("docker exec");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // The upstream may take a moment to listen.
    let mut out = String::new();
    for _ in 0..20 {
        out =
            client("curl -sS -H 'Authorization: Bearer agent-fake' https://api.example.test/curl");
        if out.contains("/curl") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(out.contains(&format!("Bearer {TOKEN}")), "curl: {out}");
    assert!(!out.contains("agent-fake"), "curl: {out}");

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
    let agent_view = docker(&[
        "exec",
        &p.obj("a", "agent"),
        "sh",
        "-c",
        "env; cat /proc/*/environ 2>/dev/null; grep -rs sk-e2e / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; true",
    ]);
    assert!(!agent_view.contains(TOKEN), "the agent sees the token");
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
