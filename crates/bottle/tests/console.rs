//! Issue 20 acceptance: the operator's console in a real browser. Headless Chromium
//! (Debian's `chromium` and `chromium-driver`, installed by `scripts/setup.sh`) is
//! driven over WebDriver (`fantoccini`) against the real `bottle console`, while a real
//! agent makes MCP proposals (the helpers of `supervise.rs`) and `bottle apply --watch`
//! converges. The page refuses a request without its token and loads with it; the
//! agent's request appears in the queue with its `<script>` reason shown as text; the
//! audit stream shows the refusal; clicking approve (for 30 s) lets the request
//! through and the stream shows the pass; at the grant's end the host is refused again
//! within seconds (measured) and the grant shows as expired. Screenshots are kept under
//! `target/console-screenshots/`.
//!
//! And "nothing on a bottle's networks can reach it": with the console on 127.0.0.1
//! (serving every project on the engine, as with neither `-f` nor `-p`: the bottle's,
//! applied after it started, shows on the page), an agent whose bottle allows every
//! private range and `localhost` tries every way in: directly at the host's addresses
//! (its networks' gateways, docker0's, `host.docker.internal`, loopback), and through
//! egress and pipelock (a proxied GET and a CONNECT tunnel to each). The console logs every request it gets (debug level): only the test's own
//! requests from the host show there. A control shows the paths are real: a listener
//! on all the host's addresses is reached through pipelock at the net-egress gateway.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::supervise::{DOCS, agent_build_context, call, exec, proposal_id};
use crate::util::*;
use crate::watch::Watcher;

/// A child process killed (by its own id) on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bottle console ARGS --listen 127.0.0.1:0` in `dir`, its stderr (debug logs) into
/// `log` when given, and the URL it printed.
fn start_console(dir: &Path, args: &[&str], log: Option<&Path>) -> (Kid, String) {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("console log")),
        None => Stdio::inherit(),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bottle"));
    if log.is_some() {
        cmd.env("RUST_LOG", "bottle=debug");
    }
    let mut c = cmd
        .arg("console")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("BOTTLE_SIDECAR_BINARY", sidecar_binary())
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("bottle-test-state"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn bottle console");
    let out = c.stdout.take().expect("stdout");
    let mut url = None;
    for line in BufReader::new(out).lines().take(5) {
        let line = line.expect("console output");
        if let Some(u) = line.trim().strip_prefix("http://") {
            url = Some(format!("http://{u}"));
            break;
        }
    }
    let url = url.expect("the console prints its URL");
    (Kid(c), url)
}

/// Debian's chromedriver on a free loopback port.
fn start_chromedriver() -> (Kid, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let c = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/setup.sh installs it)");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Kid(c), format!("http://127.0.0.1:{port}"))
}

async fn browser(driver: &str) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1700"],
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a WebDriver session with headless Chromium")
}

fn shots_dir() -> PathBuf {
    let d = repo_root().join("target/console-screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

async fn shot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(shots_dir().join(name), png).expect("write screenshot");
}

/// The text of the first element `css` selects (`None`: none does), read in the page in
/// one step: the console re-renders its live part as the state changes, and an element
/// found before a re-render is stale when its text is asked for after it.
async fn text_of(b: &Client, css: &str) -> Option<String> {
    let selector = serde_json::to_string(css).expect("a selector as a JS string");
    let js =
        format!("const e = document.querySelector({selector}); return e ? e.innerText : null;");
    eval(b, &js).await.as_str().map(str::to_owned)
}

/// The page's text.
async fn body(b: &Client) -> String {
    text_of(b, "body").await.expect("a body")
}

/// Evaluate `js` (a function body returning a value) in the page.
async fn eval(b: &Client, js: &str) -> serde_json::Value {
    b.execute(js, vec![]).await.expect("script")
}

/// Poll `cond` every 250 ms until it holds, up to `limit`.
async fn until_true<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("not within {limit:?}: {what}");
}

/// How many audit rows the page shows for `verdict` and `host`.
async fn audit_rows(b: &Client, verdict: &str, host: &str) -> u64 {
    eval(
        b,
        &format!(
            "return [...document.querySelectorAll('#audit-rows tr')].filter(r => \
             r.dataset.verdict === '{verdict}' && r.children[6].textContent === '{host}').length;"
        ),
    )
    .await
    .as_u64()
    .unwrap_or(0)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_decides_in_a_real_browser() {
    let p = Project::new("con");
    agent_build_context(&p);
    let m = p.manifest(
        r#"
bottles:
  dev:
    image: {dockerfile: Dockerfile}
    runtime: runc
    supervise: true
    egress:
      allow: [pypi.org]
      allow_cidrs: [172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]
agents:
  a: {bottle: dev}
"#,
    );
    let m = m.to_str().expect("utf-8");
    p.bottle(&["apply", "-f", m]).expect(0);
    let watcher = Watcher::start(&p, Path::new(m), &["--resync", "3600"], &[]);
    let agent = p.obj("a", "agent");
    let _upstream = start_upstream(&p, "a", &[DOCS], None);
    let fetch = || exec(&agent, &format!("curl -sS -m 5 http://{DOCS}/"));
    let passes = || fetch().1.contains("ok health");
    assert!(!passes(), "reachable before any grant");

    let (_console, url) = start_console(p.dir.path(), &["-f", m], None);
    let base = url.split('?').next().expect("base").to_string();
    let (_driver, driver_url) = start_chromedriver();
    let b = browser(&driver_url).await;

    // Without the token, or with a wrong one: refused. With it: the page.
    for bad in [base.clone(), format!("{base}?token=wrong")] {
        b.goto(&bad).await.expect("goto");
        assert!(
            body(&b).await.contains("a valid token is required"),
            "{bad}"
        );
    }
    b.goto(&url).await.expect("goto");
    assert!(b.title().await.unwrap().starts_with("bottle console"));
    until_true(
        Duration::from_secs(20),
        "the live feed connects",
        || async {
            eval(&b, "return document.getElementById('live').textContent;").await == "live"
        },
    )
    .await;

    // The agent asks, with markup in its reason; the page shows it as text.
    let evil = "<script>window.pwned=1</script><b>bold</b> read the docs";
    let id = proposal_id(&call(
        &agent,
        "egress-block",
        &format!("{{\"host\":\"{DOCS}\",\"reason\":\"{evil}\"}}"),
    ));
    let row = format!("tr.proposal[data-id='{id}']");
    until_true(Duration::from_secs(30), "the proposal appears", || async {
        b.find(Locator::Css(&row)).await.is_ok()
    })
    .await;
    let reason = text_of(&b, &format!("{row} p.reason"))
        .await
        .expect("reason");
    assert_eq!(reason, evil, "shown as the agent wrote it, as text");
    let injected = eval(
        &b,
        "return [document.querySelectorAll('#state script, #state b').length, typeof window.pwned];",
    )
    .await;
    assert_eq!(
        injected,
        serde_json::json!([0, "undefined"]),
        "no markup ran"
    );

    // The refusal is in the audit stream.
    until_true(
        Duration::from_secs(30),
        "a deny row for the host",
        || async { audit_rows(&b, "deny", DOCS).await > 0 },
    )
    .await;
    // The row names its project; the project filter keeps it.
    let of_project = eval(
        &b,
        &format!(
            "const s = document.getElementById('f-project'); s.value = '{}'; \
             s.dispatchEvent(new Event('change')); \
             const shown = [...document.querySelectorAll('#audit-rows tr')].filter(r => !r.hidden); \
             s.value = ''; s.dispatchEvent(new Event('change')); \
             return [shown.length > 0, shown.every(r => r.children[1].textContent === '{}')];",
            p.name, p.name
        ),
    )
    .await;
    assert_eq!(of_project, serde_json::json!([true, true]));
    shot(&b, "1-pending.png").await;

    // Approve for 30 s, by clicking (the live part may be swapped under us: retry).
    let mut clicked = false;
    for _ in 0..5 {
        let form = format!("{row} form.approve");
        let Ok(input) = b
            .find(Locator::Css(&format!("{form} input[name=for]")))
            .await
        else {
            break;
        };
        let typed = async {
            input.clear().await?;
            input.send_keys("30s").await?;
            b.find(Locator::Css(&format!("{form} button")))
                .await?
                .click()
                .await
        };
        if typed.await.is_ok() {
            clicked = true;
            break;
        }
    }
    assert!(clicked, "clicked approve");
    let after = body(&b).await;
    assert!(
        !after.contains("refused"),
        "the approval was refused: {after}"
    );
    until_true(
        Duration::from_secs(30),
        "the proposal shows approved",
        || async {
            b.find(Locator::Css(&format!("{row}[data-status='approved']")))
                .await
                .is_ok()
        },
    )
    .await;

    // The watch converges: the request goes through, and the stream shows it.
    let t = Instant::now();
    while !passes() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not let through after approval; watch log:\n{}",
            watcher.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    until_true(
        Duration::from_secs(30),
        "an allow row for the host",
        || async { audit_rows(&b, "allow", DOCS).await > 0 },
    )
    .await;
    // The verdict filter hides the passes.
    let hidden = eval(
        &b,
        "const s = document.getElementById('f-verdict'); s.value = 'deny'; \
         s.dispatchEvent(new Event('change')); \
         return [...document.querySelectorAll('#audit-rows tr')] \
           .filter(r => !r.hidden && r.dataset.verdict !== 'deny').length;",
    )
    .await;
    assert_eq!(hidden, serde_json::json!(0));
    eval(
        &b,
        "const s = document.getElementById('f-verdict'); s.value = ''; \
         s.dispatchEvent(new Event('change')); return 0;",
    )
    .await;
    shot(&b, "2-approved.png").await;

    // The grant ends: the host is refused again within seconds of its end.
    let listed = p
        .bottle(&["queue", "list", "--all", "-o", "json", "-f", m])
        .expect(0)
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&listed).expect("queue json");
    let until = v
        .as_array()
        .and_then(|a| a.iter().find(|e| e["id"] == id.as_str()))
        .and_then(|e| e["until"].as_u64())
        .expect("a time-boxed grant records its end");
    let t = Instant::now();
    // A refusal is egress's or pipelock's 403; anything else (a passing 200, or a
    // transient upstream error) is not one.
    let code = || {
        let (_, out) = exec(
            &agent,
            &format!("curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://{DOCS}/"),
        );
        out
    };
    loop {
        let out = code();
        if out.trim() == "403" {
            assert!(
                unix_now() >= until as f64,
                "refused before the grant's end ({until}): {out}\nwatch log:\n{}",
                watcher.log()
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "still let through");
        std::thread::sleep(Duration::from_millis(200));
    }
    let late = unix_now() - until as f64;
    eprintln!("the host was refused again {late:.2} s after the grant's end");
    assert!(late < 3.0, "refused {late:.2} s after the end");
    until_true(
        Duration::from_secs(10),
        "the grant shows as expired",
        || async {
            b.find(Locator::Css(&format!("{row}[data-status='expired']")))
                .await
                .is_ok()
                && b.find(Locator::Css("tr.grant.expired")).await.is_ok()
        },
    )
    .await;
    shot(&b, "3-expired.png").await;
    b.close().await.expect("close the browser");
}

/// The attacker, in the agent (bash and coreutils only): `try LABEL HOST PORT REQUEST`
/// opens a TCP connection with bash's `/dev/tcp`, sends REQUEST (printf `%b` escapes)
/// and prints what comes back (up to 4 KiB, a few seconds), after a `@@ LABEL` line.
const ATTACKER: &str = r#"try() {
  printf '@@ %s\n' "$1"
  timeout 8 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || { echo "no connection"; exit 0; }
    printf "%b" "$3" >&3 || { echo "write failed"; exit 0; }
    n=0; until read -t 0 <&3; do n=$((n+1)); [ $n -ge 50 ] && break; sleep 0.1; done
    head -c 4096 <&3' _ "$2" "$3" "$4" 2>&1
  echo
}
"#;

/// Run `script` with bash in container `c`: its stdout.
fn bash_in(c: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", c, "bash", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One GET of `/` to `target` as a proxy sees it (absolute URL) or as a server does.
fn get_req(url_host: &str, port: u16, absolute: bool) -> String {
    let path = if absolute {
        format!("http://{url_host}:{port}/")
    } else {
        "/".into()
    };
    format!("GET {path} HTTP/1.1\\r\\nHost: {url_host}:{port}\\r\\nConnection: close\\r\\n\\r\\n")
}

/// What the console's log says it received: one line per request.
fn requests_logged(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("request") && l.contains("path="))
        .map(str::to_string)
        .collect()
}

/// A GET from the host (loopback) with the right Host: the response, whole.
fn host_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A listener on every address of the host (what the console refuses to be): it
/// answers `decoy` and counts the connections it gets.
fn start_decoy() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::Ordering;
    let l = std::net::TcpListener::bind("0.0.0.0:0").expect("a decoy listener");
    let port = l.local_addr().expect("its port").port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&hits);
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let _ = s.read(&mut [0u8; 4096]);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\ndecoy",
            );
        }
    });
    (port, hits)
}

/// The IPv4 gateway of network `name`.
fn gateway(name: &str) -> String {
    inspect(name, "{{range .IPAM.Config}}{{.Gateway}} {{end}}")
        .split_whitespace()
        .find(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or_default()
        .to_string()
}

/// The address of container `c` on network `net`.
fn address_on(c: &str, net: &str) -> String {
    inspect(
        c,
        &format!(
            "{{{{with index .NetworkSettings.Networks \"{net}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
        ),
    )
}

#[test]
fn nothing_on_a_bottles_networks_reaches_the_console() {
    let p = Project::new("conr");
    let m = p.manifest(
        r#"
bottles:
  dev:
    image: {dockerfile: Dockerfile}
    runtime: runc
    egress:
      allow: [localhost, host.docker.internal]
      allow_cidrs: [127.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 10.0.0.0/8]
agents:
  a: {bottle: dev}
"#,
    );
    // Neither -f nor -p, and no bottles.yaml where it runs: every project on the engine,
    // this one included once it is applied.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let log = elsewhere.path().join("console.log");
    let (_console, url) = start_console(elsewhere.path(), &[], Some(&log));
    let port: u16 = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the URL's port");
    let query = url.split('?').nth(1).expect("the token");
    p.bottle(&["apply", "-f", m.to_str().expect("utf-8")])
        .expect(0);
    let agent = p.obj("a", "agent");

    // The host reaches it: the page lists this project (found on the engine after the
    // console started); without the token, 403. The requests are in the log.
    let section = format!("data-project=\"{}\"", p.name);
    let t = Instant::now();
    loop {
        let page = host_get(port, &format!("/?{query}"));
        if page.contains(&section) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the page does not show project {}:\n{page}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(host_get(port, "/").contains("a valid token is required"));
    std::thread::sleep(Duration::from_millis(300));
    let before = requests_logged(&log).len();
    assert!(before >= 2, "the console logs its requests: {before}");

    // The host's addresses on the bottle's networks, and the proxies.
    let nets = p.objects("network");
    let net = |kind: &str| {
        nets.iter()
            .find(|n| n.ends_with(kind))
            .unwrap_or_else(|| panic!("no {kind} in {nets:?}"))
            .clone()
    };
    let (internal, egress_net) = (net("net-internal"), net("net-egress"));
    let docker0 = gateway("bridge");
    let mut hosts = vec![
        gateway(&internal),
        gateway(&egress_net),
        docker0.clone(),
        "172.17.0.1".to_string(),
        "host.docker.internal".to_string(),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
    ];
    hosts.retain(|h| !h.is_empty());
    hosts.dedup();
    let proxies = [
        ("egress".to_string(), 3128u16),
        (address_on(&p.obj("a", "egress"), &internal), 3128),
        ("pipelock".to_string(), 8888),
        (address_on(&p.obj("a", "pipelock"), &internal), 8888),
    ];
    let (_, env) = exec(&agent, "echo \"$HTTP_PROXY $HTTPS_PROXY\"");
    assert!(
        env.contains("http://egress:3128"),
        "the agent's proxy: {env}"
    );

    // The control: through pipelock (its address: the agent's resolver may not know
    // the name) to the net-egress gateway, a listener on all addresses is reached.
    let (decoy_port, decoy_hits) = start_decoy();
    let pipelock_ip = &proxies[3].0;
    let control = format!(
        "{ATTACKER}try control '{pipelock_ip}' 8888 '{}'\n",
        get_req(&gateway(&egress_net), decoy_port, true)
    );
    let answer = bash_in(&agent, &control);
    assert!(
        answer.contains("decoy") && decoy_hits.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the control did not reach the host's listener on all addresses:\n{answer}"
    );

    let mut script = String::from(ATTACKER);
    let mut attempts = 0;
    for h in &hosts {
        script += &format!(
            "try 'direct {h}' '{h}' {port} '{}'\n",
            get_req("127.0.0.1", port, false)
        );
        attempts += 1;
    }
    for (proxy, pport) in &proxies {
        for h in &hosts {
            script += &format!(
                "try 'via {proxy}:{pport} GET {h}' '{proxy}' {pport} '{}'\n",
                get_req(h, port, true)
            );
            let connect = format!(
                "CONNECT {h}:{port} HTTP/1.1\\r\\nHost: {h}:{port}\\r\\n\\r\\n{}",
                get_req("127.0.0.1", port, false)
            );
            script +=
                &format!("try 'via {proxy}:{pport} CONNECT {h}' '{proxy}' {pport} '{connect}'\n");
            attempts += 2;
        }
    }
    let out = bash_in(&agent, &script);
    let results: Vec<(&str, &str)> = out
        .split("@@ ")
        .skip(1)
        .map(|r| r.split_once('\n').unwrap_or((r, "")))
        .collect();
    assert_eq!(results.len(), attempts, "every attempt ran:\n{out}");
    for (label, answer) in &results {
        let first = answer.lines().next().unwrap_or("").trim();
        eprintln!("{label:60} {first}");
        for sign in [
            "a valid token is required",
            "unknown Host",
            "bottle console",
            "frame-ancestors 'none'",
        ] {
            assert!(
                !answer.contains(sign),
                "{label} reached the console:\n{answer}"
            );
        }
    }
    // The proxies answered (a refusal): the attempts did reach them.
    assert!(
        results
            .iter()
            .filter(|(l, _)| l.starts_with("via egress:"))
            .all(|(_, a)| a.starts_with("HTTP/1.")),
        "egress did not answer every attempt:\n{out}"
    );

    std::thread::sleep(Duration::from_secs(1));
    let after = requests_logged(&log);
    assert_eq!(
        after.len(),
        before,
        "requests reached the console from the bottle:\n{}",
        after[before..].join("\n")
    );
}
