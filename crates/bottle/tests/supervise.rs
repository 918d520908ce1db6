//! Issue 8 acceptance: supervise end to end. The agent image has the official Python MCP
//! SDK (`mcp`, wheels fetched by `scripts/setup.sh`); from inside the agent it lists the
//! tools, asks for a blocked host and for a Dockerfile with one more Debian package, and
//! reads a denial's reason. The operator decides with `bottle queue`; `bottle apply`
//! converges: the host opens without recreating the agent, the new image keeps the
//! workspace, and pending proposals survive a restart of the sidecar.

use std::path::Path;

use crate::util::*;

pub(crate) const URL: &str = "http://supervise:8765/mcp";
/// A plain-HTTP upstream on net-egress (the sidecar image's health server).
pub(crate) const DOCS: &str = "docs.example.test";

fn dockerfile(extra: &str) -> String {
    format!(
        "FROM debian:bookworm-slim\n\
         RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip curl{extra} && rm -rf /var/lib/apt/lists/*\n\
         COPY wheels /wheels\n\
         RUN pip3 install --no-index --find-links /wheels --break-system-packages mcp && rm -rf /wheels\n\
         COPY mcp_call.py /usr/local/bin/mcp_call.py\n\
         CMD [\"sleep\", \"infinity\"]\n"
    )
}

/// The wheels of `mcp` for the agent's Python, downloaded by `scripts/setup.sh`.
fn copy_wheels(to: &Path) {
    let from = crate::util::repo_root().join("target/wheels");
    let entries = std::fs::read_dir(&from).unwrap_or_else(|e| {
        panic!(
            "no MCP SDK wheels at {} ({e}): run the tests with scripts/test.sh",
            from.display()
        )
    });
    std::fs::create_dir(to).expect("wheels dir");
    for e in entries {
        let e = e.expect("wheel");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy wheel");
    }
}

/// The agent image's build context in `p`: the MCP SDK's wheels, the client script and
/// the Dockerfile.
pub(crate) fn agent_build_context(p: &Project) {
    copy_wheels(&p.path("wheels"));
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_call.py"),
        p.path("mcp_call.py"),
    )
    .expect("client script");
    std::fs::write(p.path("Dockerfile"), dockerfile("")).expect("Dockerfile");
}

pub(crate) fn exec(container: &str, script: &str) -> (bool, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Call a supervise tool from inside the agent; the tool's text result.
pub(crate) fn call(agent: &str, tool: &str, args: &str) -> String {
    let (ok, out) = exec(
        agent,
        &format!("python3 /usr/local/bin/mcp_call.py {URL} call {tool} '{args}'"),
    );
    assert!(ok, "{tool}: {out}");
    out
}

pub(crate) fn proposal_id(out: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json result");
    v["id"].as_str().expect("id").to_string()
}

fn status(agent: &str, id: &str) -> serde_json::Value {
    let out = call(agent, "proposal-status", &format!("{{\"id\":\"{id}\"}}"));
    serde_json::from_str(out.trim()).expect("json status")
}

/// What a failed fetch needs to be understood: the upstream's own log (what reached it),
/// the chain's logs and the addresses on the egress network.
fn diagnose(p: &Project, upstream: &str) -> String {
    let logs = |c: &str| {
        let o = std::process::Command::new("docker")
            .args(["logs", "--tail", "30", c])
            .output()
            .expect("docker logs");
        format!(
            "--- {c}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let net = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{range .Containers}}{{.Name}} {{.IPv4Address}}\n{{end}}",
            &p.obj("a", "net-egress"),
        ])
        .output()
        .expect("docker network inspect");
    format!(
        "{}\n{}\n{}\n--- net-egress\n{}",
        logs(upstream),
        logs(&p.obj("a", "pipelock")),
        logs(&p.obj("a", "egress")),
        String::from_utf8_lossy(&net.stdout)
    )
}

#[test]
fn the_agent_proposes_and_the_operator_decides() {
    let p = Project::new("sup");
    agent_build_context(&p);
    std::fs::create_dir(p.path("ws")).expect("workspace");
    std::fs::write(p.path("ws/README"), "hello\n").expect("workspace file");
    let m = p.manifest(
        r#"
bottles:
  dev:
    image: {dockerfile: Dockerfile}
    runtime: runc
    supervise: true
    egress:
      allow: [pypi.org]
      # The fake upstream sits on a Docker network: a private address pipelock refuses
      # unless allowed.
      allow_cidrs: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]
agents:
  a: {bottle: dev, workspace: ws}
"#,
    );
    let m = m.to_str().expect("utf-8");
    p.bottle(&["apply", "-f", m]).expect(0);
    p.bottle(&["verify", "a", "-f", m]).expect(0);
    let agent = p.obj("a", "agent");

    // A plain-HTTP upstream, reachable from pipelock by name.
    let _upstream = start_upstream(&p, "a", &[DOCS], None);
    let fetch = || exec(&agent, &format!("curl -sS -m 5 http://{DOCS}/"));
    let (_, blocked) = fetch();
    assert!(
        !blocked.contains("ok health"),
        "reachable before: {blocked}"
    );

    // The official SDK sees exactly the four tools: none of them approves.
    let (ok, tools) = exec(
        &agent,
        &format!("python3 /usr/local/bin/mcp_call.py {URL} list"),
    );
    assert!(ok, "list tools: {tools}");
    let mut names: Vec<&str> = tools.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "capability-block",
            "egress-block",
            "list-egress-routes",
            "proposal-status"
        ]
    );

    // Ask for the host; the operator sees it and approves.
    let host_id = proposal_id(&call(
        &agent,
        "egress-block",
        &format!("{{\"host\":\"{DOCS}\",\"reason\":\"read the docs\"}}"),
    ));
    let listed = p.bottle(&["queue", "list", "-f", m]).expect(0).stdout;
    assert!(
        listed.contains(&host_id)
            && listed.contains(DOCS)
            && listed.contains("read the docs")
            && listed.contains(" a "),
        "queue list: {listed}"
    );
    let agent_id = inspect(&agent, "{{.Id}}");
    p.bottle(&["queue", "approve", &host_id, "-f", m]).expect(0);
    let diff = p.bottle(&["diff", "-f", m]);
    assert!(
        diff.stdout.contains("grants") && diff.stdout.contains(&host_id),
        "diff shows the grant layer: {}",
        diff.stdout
    );
    p.bottle(&["apply", "-f", m]).expect(0);
    // In force when apply returns: no retry.
    assert!(
        fetch().1.contains("ok health"),
        "the approved host is not reachable: {}",
        fetch().1
    );
    assert_eq!(
        inspect(&agent, "{{.Id}}"),
        agent_id,
        "the agent was recreated"
    );
    assert_eq!(status(&agent, &host_id)["status"], "approved");
    let routes = call(&agent, "list-egress-routes", "{}");
    assert!(routes.contains(DOCS), "routes: {routes}");
    // A second apply changes nothing: the grant is part of the desired state.
    let again = p.bottle(&["apply", "-f", m]).expect(0);
    assert!(again.stderr.contains("in sync"), "{}", again.stderr);

    // A denial reaches the agent with its reason.
    let deny_id = proposal_id(&call(
        &agent,
        "egress-block",
        "{\"host\":\"exfil.example.test\",\"reason\":\"upload results\"}",
    ));
    p.bottle(&[
        "queue",
        "deny",
        &deny_id,
        "--reason",
        "not for this bottle",
        "-f",
        m,
    ])
    .expect(0);
    let st = status(&agent, &deny_id);
    assert_eq!(st["status"], "denied");
    assert_eq!(st["reason"], "not for this bottle");

    // A pending proposal survives a restart of the sidecar.
    let cap_id = proposal_id(&call(
        &agent,
        "capability-block",
        &serde_json::json!({"dockerfile": dockerfile(" jq"), "reason": "need jq"}).to_string(),
    ));
    docker(&["rm", "-f", &p.obj("a", "supervise")]);
    p.bottle(&["apply", "-f", m]).expect(0);
    assert!(
        exec(&agent, "curl -s -m 2 http://supervise:8765/healthz")
            .1
            .contains("ok supervise"),
        "supervise was not serving when apply returned"
    );
    assert_eq!(status(&agent, &cap_id)["status"], "pending");
    let listed = p.bottle(&["queue", "list", "-f", m]).expect(0).stdout;
    assert!(
        listed.contains(&cap_id) && !listed.contains(&host_id),
        "{listed}"
    );

    // The Dockerfile: the agent writes a file, the image is rebuilt, the file stays.
    exec(&agent, "echo kept > /home/node/workspace/note.txt");
    let (has_jq, _) = exec(&agent, "command -v jq");
    assert!(!has_jq, "jq before the approval");
    p.bottle(&["queue", "approve", &cap_id, "-f", m]).expect(0);
    p.bottle(&["apply", "-f", m]).expect(0);
    assert_ne!(inspect(&agent, "{{.Id}}"), agent_id, "the image changed");
    let (ok, out) = exec(&agent, "jq --version && cat /home/node/workspace/note.txt");
    assert!(ok && out.contains("jq-") && out.contains("kept"), "{out}");
    // The host grant still holds in the new agent.
    assert!(
        fetch().1.contains("ok health"),
        "the granted host is not reachable from the new agent: {}\n{}",
        fetch().1,
        diagnose(&p, &_upstream.0),
    );

    // Revoking closes the host again.
    p.bottle(&["queue", "revoke", &host_id, "-f", m]).expect(0);
    p.bottle(&["apply", "-f", m]).expect(0);
    assert!(
        !fetch().1.contains("ok health"),
        "revoked host still reachable"
    );
}
