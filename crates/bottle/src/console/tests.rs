//! The console's page without a browser (the browser test is
//! `tests/console.rs`): agent text is escaped, the guard's decisions (token, Host,
//! origin, headers) through the real router, a decision's project checked against the
//! projects served, the projects `-f`/`-p` name, and the audit rows' project. The
//! engine client is made but never called by these requests.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::Request as HttpRequest;
use tower::ServiceExt as _;

use super::*;
use crate::supervise::{Ask, Proposal};
use bottle_engine::{ContainerInfo, ContainerState};

const TOKEN: &str = "0123456789abcdef";

fn app() -> Arc<App> {
    let (_tx, state) = watch::channel("<p>state</p>".to_string());
    let (audit, _) = broadcast::channel(4);
    let named: Served = [("p".to_string(), None), ("q".to_string(), None)].into();
    Arc::new(App {
        served: RwLock::new(named.clone()),
        scope: Scope::Named(named),
        token: TOKEN.into(),
        token_digest: Sha256::digest(TOKEN.as_bytes()).into(),
        hosts: allowed_hosts("127.0.0.1:7878".parse().unwrap()),
        docker: Docker::connect().expect("a client (not connected until used)"),
        key: DigestKey::fixed(1),
        state,
        audit,
        history: Mutex::new(VecDeque::new()),
        probes: crate::cli::get::ProbeCache::new(Duration::from_secs(10)),
    })
}

async fn send(req: HttpRequest<Body>) -> Response {
    router(app()).oneshot(req).await.unwrap()
}

fn get_(uri: &str) -> HttpRequest<Body> {
    HttpRequest::get(uri)
        .header("host", "127.0.0.1:7878")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn the_page_needs_its_token_and_its_own_host() {
    let ok = send(get_(&format!("/?token={TOKEN}"))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let csp = ok.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(ok.headers()[header::REFERRER_POLICY], "same-origin");
    for uri in [
        "/".to_string(),
        "/?token=".to_string(),
        "/?token=0123456789abcdeX".to_string(),
        "/static/console.js".to_string(),
        "/events".to_string(),
    ] {
        let r = send(get_(&uri)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{uri}");
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
    let rebound = HttpRequest::get(format!("/?token={TOKEN}"))
        .header("host", "attacker.example:7878")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(rebound).await.status(),
        StatusCode::MISDIRECTED_REQUEST
    );
}

#[tokio::test]
async fn changes_are_posts_from_the_page_itself() {
    let post = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut b = HttpRequest::post(format!("/deny?token={TOKEN}"))
            .header("host", "127.0.0.1:7878")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        if let Some(s) = fetch_site {
            b = b.header("sec-fetch-site", s);
        }
        b.body(Body::from("project=p&id=not-an-id")).unwrap()
    };
    for (origin, site) in [
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (None, None),
        (None, Some("cross-site")),
    ] {
        assert_eq!(
            send(post(origin, site)).await.status(),
            StatusCode::FORBIDDEN,
            "{origin:?} {site:?}"
        );
    }
    // From the page: past the guard, refused by the queue (a bad id touches nothing).
    for (origin, site) in [
        (Some("http://127.0.0.1:7878"), None),
        (None, Some("same-origin")),
    ] {
        let r = send(post(origin, site)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{origin:?} {site:?}");
    }
    // A decision names a project served, in a form field of bounded length.
    for body in [
        "project=other&id=p0000000001".to_string(),
        "project=&id=p0000000001".to_string(),
        "id=p0000000001".to_string(),
        format!("project={}&id=p0000000001", "p".repeat(MAX_FIELD + 1)),
    ] {
        let req = HttpRequest::post(format!("/approve?token={TOKEN}"))
            .header("host", "127.0.0.1:7878")
            .header("origin", "http://127.0.0.1:7878")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.clone()))
            .unwrap();
        let r = send(req).await;
        let status = r.status();
        let text = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&text);
        assert!(status.is_client_error(), "{body}: {status}");
        if body.starts_with("project=other") || body.starts_with("project=&") {
            assert!(text.contains("is not one this console serves"), "{text}");
        }
    }
    // A GET cannot change anything.
    let r = send(get_(&format!("/deny?token={TOKEN}&id=p0000000001"))).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn agent_text_is_text() {
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let found = vec![queue::Found {
        proposal: Proposal {
            id: "p0000000001".into(),
            bottle: "dev".into(),
            ask: Ask::Dockerfile {
                dockerfile: format!("FROM x\nRUN echo '{evil}'\n"),
            },
            reason: evil.into(),
            created: 1,
        },
        decision: None,
        container: ContainerInfo {
            name: "bottle-p-dev-supervise".into(),
            id: "c".into(),
            image: "img".into(),
            labels: [(crate::labels::BOTTLE.to_string(), "dev".to_string())].into(),
            state: ContainerState::Running,
            networks: vec![],
            created: 0,
        },
    }];
    let current = BTreeMap::from([("dev".to_string(), "FROM x\n".to_string())]);
    let html = page::project(&page::StateView {
        token: TOKEN,
        project: "p",
        now: 100,
        bottles: &BTreeMap::new(),
        found: &found,
        grants: &Default::default(),
        current: &current,
    });
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    // The Dockerfile is a diff against the current one: one line added.
    assert!(html.contains(r#"<span class="ctx">  FROM x"#), "{html}");
    assert!(html.contains(r#"<span class="add">+ RUN echo"#), "{html}");
    assert!(html.contains(&format!("/approve?token={TOKEN}")));
    // The decision forms carry the project; the part is the project's.
    assert!(
        html.contains(r#"<input type="hidden" name="project" value="p">"#),
        "{html}"
    );
    assert!(html.contains(r#"data-project="p""#), "{html}");
}

#[test]
fn the_projects_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |file: &str, project: &str| {
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "project: {project}\nbottles:\n  dev: {{image: {{dockerfile: Dockerfile}}}}\nagents:\n  a: {{bottle: dev}}\n"
            ),
        )
        .unwrap();
        path
    };
    let (a, b, a2) = (
        manifest("a.yaml", "alpha"),
        manifest("b.yaml", "beta"),
        manifest("a2.yaml", "alpha"),
    );
    let missing = dir.path().join("bottles.yaml");
    // Neither -f nor -p, no ./bottles.yaml: every project on the engine.
    assert_eq!(scope(&[], &[], &missing).unwrap(), Scope::Engine);
    // ./bottles.yaml when there is one.
    assert_eq!(
        scope(&[], &[], &a).unwrap(),
        Scope::Named([("alpha".to_string(), Some(a.clone()))].into())
    );
    // Several -f and -p; a -p naming a manifest's project keeps the manifest.
    let both = scope(
        &[a.clone(), b.clone()],
        &["gamma".into(), "alpha".into()],
        &missing,
    )
    .unwrap();
    assert_eq!(
        both,
        Scope::Named(
            [
                ("alpha".to_string(), Some(a.clone())),
                ("beta".to_string(), Some(b.clone())),
                ("gamma".to_string(), None),
            ]
            .into()
        )
    );
    assert_eq!(both.describe(), "projects alpha, beta, gamma");
    // One project from two manifests, or an empty name: refused, saying why.
    let e = scope(&[a, a2], &[], &missing).unwrap_err().to_string();
    assert!(e.contains("both name project alpha"), "{e}");
    assert!(scope(&[], &[" ".into()], &missing).is_err());
    assert!(scope(&[dir.path().join("nope.yaml")], &[], &missing).is_err());
}

#[test]
fn an_audit_row_names_its_project() {
    let d: Decision = serde_json::from_value(serde_json::json!({
        "ts": 1.5, "bottle": "dev", "source": "egress", "verdict": "deny",
        "reason": "not-allowlisted", "host": "evil.example"
    }))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&audit_json("p", &d).unwrap()).unwrap();
    assert_eq!(v["project"], "p");
    assert_eq!(v["bottle"], "dev");
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["host"], "evil.example");
}

#[test]
fn the_current_dockerfiles_need_no_secret() {
    // A manifest whose `from_env` variable is unset (the console runs without secrets):
    // each agent's Dockerfile is still known.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM manifest\n").unwrap();
    let m = dir.path().join("bottles.yaml");
    std::fs::write(
        &m,
        "project: cd\nbottles:\n  dev:\n    image: {dockerfile: Dockerfile}\n    env:\n      \
         TOKEN: {from_env: BOTTLE_CONSOLE_TEST_UNSET_VAR}\nagents:\n  a: {bottle: dev}\n  \
         b: {bottle: dev}\n",
    )
    .unwrap();
    let none = crate::supervise::Grants::default();
    let got = current_dockerfiles(Some(&m), &none);
    assert_eq!(got.get("a").map(String::as_str), Some("FROM manifest\n"));
    assert_eq!(got.get("b").map(String::as_str), Some("FROM manifest\n"));
}
