//! The console's page without a browser (the browser test is
//! `tests/console.rs`): agent text is escaped, and the guard's decisions (token, Host,
//! origin, headers) through the real router. The engine client is made but never
//! called by these requests.

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
    Arc::new(App {
        project: "p".into(),
        token: TOKEN.into(),
        token_digest: Sha256::digest(TOKEN.as_bytes()).into(),
        hosts: allowed_hosts("127.0.0.1:7878".parse().unwrap()),
        manifest: None,
        docker: Docker::connect().expect("a client (not connected until used)"),
        key: DigestKey::fixed(1),
        state,
        audit,
        history: Mutex::new(VecDeque::new()),
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
        b.body(Body::from("id=not-an-id")).unwrap()
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
    let html = page::state(&page::StateView {
        token: TOKEN,
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
}
