//! Codex on the host's ChatGPT login (`host_login: true`), end to end: a fake upstream
//! (the test servers' TLS echo, certified by a test CA) answers as `chatgpt.com` on the
//! bottle's net-egress. The agent calls it the way Codex does, with the bearer and the
//! account id of the `auth.json` bottle gave it; the upstream sees the host's real
//! access token, which is nowhere in the agent (files, environment) nor in Docker's view
//! of the bottle. Paths of the backend other than Codex's, and OpenAI's token endpoint
//! (where the agent would refresh), are refused. A token the host's Codex refreshed
//! reaches egress at the next apply, without remaking the agent (nor its image: the
//! login is never part of a build context).

use crate::egress::{CLIENT_IMAGE, ensure_client_image, exec};
use crate::util::*;

const ACCESS: &str = "eyJhbGciOiJSUzI1NiJ9.e2e-real-chatgpt-access.c2ln";
const REFRESHED: &str = "eyJhbGciOiJSUzI1NiJ9.e2e-refreshed-chatgpt-access.c2ln";
const REFRESH: &str = "rt_e2e-real-chatgpt-refresh";
const ACCOUNT: &str = "acct-e2e-1234";

/// What Codex sends to its backend, from the agent's own `auth.json`: the bearer and
/// the account id (read with python3, as Codex's file is JSON).
const CODEX_CALL: &str = r#"t=$(python3 -c 'import json,os; d=json.load(open(os.path.expanduser("~/.codex/auth.json")))["tokens"]; print(d["access_token"]+" "+d["account_id"])') && set -- $t && curl -sS -H "Authorization: Bearer $1" -H "ChatGPT-Account-Id: $2" -d '{"model":"gpt-5-codex"}' https://chatgpt.com/backend-api/codex/responses"#;

fn write_login(dir: &std::path::Path, access: &str) {
    let text =
        bottle_model::codex_login::host_auth_json(access, REFRESH, ACCOUNT, "dev@example.test");
    std::fs::write(dir.join("auth.json"), text).expect("auth.json");
}

#[test]
fn codex_uses_the_hosts_chatgpt_login_without_holding_it() {
    ensure_client_image();
    let p = Project::new("codex");
    let certs = upstream_certs(&p, &["chatgpt.com", "auth.openai.com"]);
    std::fs::write(
        p.path("Dockerfile"),
        format!("FROM {CLIENT_IMAGE}\nCMD [\"sleep\", \"infinity\"]\n"),
    )
    .expect("Dockerfile");
    // Inside the agent's build context on purpose: the login must be left out of it
    // (else its refresh would also remake the image, and the agent with it).
    let codex_home = p.path("codex-home");
    std::fs::create_dir(&codex_home).expect("codex home");
    write_login(&codex_home, ACCESS);
    let m = p.manifest(
        r#"
bottles:
  dev:
    image: {dockerfile: Dockerfile}
    runtime: runc
    egress:
      # The fake upstream sits on a Docker network: a private address.
      allow_cidrs: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]
      upstream_ca: upstream-ca.pem
agents:
  cx: {bottle: dev, provider: codex, host_login: true}
"#,
    );
    let m = m.to_str().expect("utf-8");
    let home = codex_home.to_str().expect("utf-8");
    let env = [("CODEX_HOME", home)];
    let diff = p.bottle_env(&["diff", "-f", m], &env);
    let applied = p.bottle_env(&["apply", "-f", m], &env).expect(0);
    for out in [&diff.stdout, &diff.stderr, &applied.stdout, &applied.stderr] {
        assert!(!out.contains(ACCESS) && !out.contains(REFRESH), "{out}");
    }
    let upstream = start_upstream(&p, "cx", &["chatgpt.com", "auth.openai.com"], Some(&certs));
    let agent = p.obj("cx", "agent");

    // The agent's login is a stand-in: the account, no real token.
    let (file, _) = exec(
        &agent,
        "cat ~/.codex/auth.json; stat -c '%a %u' ~/.codex/auth.json",
    );
    assert!(
        file.contains(ACCOUNT) && file.contains("bottle-placeholder"),
        "{file}"
    );
    assert!(file.trim_end().ends_with("600 1000"), "{file}");

    // Codex's call: the upstream sees the host's token and the account id.
    let call = |want: &str| {
        let mut out = String::new();
        for _ in 0..20 {
            let (o, e) = exec(&agent, CODEX_CALL);
            out = format!("{o}{e}");
            if o.contains("/backend-api/codex/responses") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let seen: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(
            seen["headers"]["authorization"],
            format!("Bearer {want}"),
            "{out}"
        );
        assert_eq!(seen["headers"]["chatgpt-account-id"], ACCOUNT, "{out}");
        assert!(!out.contains("bottle-placeholder"), "{out}");
    };
    call(ACCESS);

    // The token opens Codex's path only; the agent's own refresh goes nowhere.
    let status = |url: &str| {
        let (o, _) = exec(
            &agent,
            &format!(
                "curl -sS -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer bottle-placeholder' {url}; true"
            ),
        );
        o
    };
    assert!(
        status("https://chatgpt.com/backend-api/conversations").contains("403"),
        "other backend paths are refused"
    );
    let refresh = exec(
        &agent,
        "curl -sS -o /dev/null -w '%{http_code}' -d '{}' https://auth.openai.com/oauth/token; true",
    );
    assert!(
        !refresh.0.contains("200"),
        "the agent cannot refresh: {refresh:?}"
    );

    // The real tokens are nowhere the agent or an observer of Docker can see them.
    let view = docker(&[
        "exec",
        &agent,
        "sh",
        "-c",
        &format!(
            "env; cat /proc/*/environ 2>/dev/null; \
             grep -rlsF -e '{ACCESS}' -e '{REFRESH}' -e e2e-real / --exclude-dir=proc --exclude-dir=sys; true"
        ),
    ]);
    assert!(!view.contains(ACCESS) && !view.contains(REFRESH), "{view}");
    assert!(
        !view.lines().any(|l| l.starts_with('/')),
        "files hold a token: {view}"
    );
    for c in p.objects("container") {
        let all = docker(&["inspect", &c]);
        assert!(
            !all.contains(ACCESS) && !all.contains(REFRESH),
            "docker inspect {c}"
        );
    }

    // The host's Codex refreshed its token: the next apply gives egress the new one and
    // leaves the agent (and its session) alone.
    let id = |name: &str| inspect(name, "{{.Id}}");
    let (agent_id, egress_id) = (id(&agent), id(&p.obj("cx", "egress")));
    write_login(&codex_home, REFRESHED);
    let applied = p.bottle_env(&["apply", "-f", m], &env).expect(0);
    assert!(!applied.stderr.contains(REFRESHED), "{}", applied.stderr);
    assert_eq!(
        id(&agent),
        agent_id,
        "the agent is kept: {}",
        applied.stderr
    );
    assert_ne!(
        id(&p.obj("cx", "egress")),
        egress_id,
        "egress has the new token"
    );
    call(REFRESHED);

    // The upstream sits on the bottle's net-egress: it goes first.
    drop(upstream);
    p.bottle_env(&["delete", "-f", m], &env).expect(0);
}
