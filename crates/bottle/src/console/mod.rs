//! `bottle console`: the operator's web page. Per project served, bottles with their
//! nodes' readiness, the supervise queue (approve, optionally for a time; deny with a
//! reason; revoke), the grants in force with the time left; and the audit stream of
//! them all, live over server-sent events. Served by axum on a loopback address only;
//! every asset is embedded.
//!
//! The projects are those named at start (`-f`, `-p`, or ./bottles.yaml), else every
//! project that has objects on the engine, read again at each refresh ([`Scope`]). A
//! decision names its project, which must be one served now; its id is looked up
//! within that project only.
//!
//! The page's own security (section 3.6 of docs/design.md):
//! - a random token, printed in the URL at start, is required on every request
//!   ([`guard`]), compared in constant time through SHA-256 digests;
//! - the `Host` header must name the listening address (no DNS rebinding);
//! - state changes are POST only, with the token and an `Origin` (or `Sec-Fetch-Site`)
//!   of the page itself;
//! - every response carries a strict Content-Security-Policy (scripts and styles from
//!   the page's own origin only, no inline script), `nosniff`, a referrer only to the
//!   page itself (the URL holds the token), no caching, no framing;
//! - agent-written text reaches the page only through maud's escaping (HTML) or the
//!   script's `textContent` (the audit rows): it is always text, never markup.
//!
//! Each request is logged at debug level (peer, method, path: never the query, which
//! holds the token), so a test can count what reached the console.
//!
//! The queue's state machine is `bottle_core::queue`, the same as `bottle queue`'s;
//! bottles and readiness come from `cli::get::bottles_in`, the audit lines from the
//! same readers as `bottle audit`. Each refresh lists the engine's objects once, for
//! all of them ([`tick`]).

mod page;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};

use crate::cli::{ConsoleArgs, audit, connect, digest_key, get as getcmd, load_names};
use crate::engine::{Engine as _, Snapshot};
use crate::hash::DigestKey;
use crate::labels;
use bottle_contract::audit::{Decision, MAX_LINE};
use bottle_contract::supervise::{now, parse_duration};
use bottle_core::queue;
use bottle_docker::Docker;

/// The embedded assets.
const JS: &str = include_str!("assets/console.js");
const CSS: &str = include_str!("assets/console.css");

/// The policy every response carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// How often the bottles and the queue are read again.
const REFRESH: Duration = Duration::from_secs(1);
/// How long a sidecar found ready is shown so without a new probe (one exec each): a
/// not-ready one is probed at every refresh, so a change to ready shows at once, a fall
/// from it within this.
const READY_TTL: Duration = Duration::from_secs(10);
/// Audit lines kept for a page that connects later.
const HISTORY: usize = 1000;
/// Bound on a form field (an operator's reason, a duration, an id).
const MAX_FIELD: usize = 2000;

/// Which projects the console serves.
#[derive(Debug, PartialEq)]
enum Scope {
    /// Named at start (`-f`, `-p`, or ./bottles.yaml): each with its manifest, if any.
    Named(Served),
    /// Every project that has objects on the engine, read again at each refresh.
    Engine,
}

/// The projects served, each with its manifest (if one was given).
type Served = BTreeMap<String, Option<PathBuf>>;

/// What the handlers share.
pub(crate) struct App {
    scope: Scope,
    /// The projects served now: the named ones, or the engine's as last read.
    served: RwLock<Served>,
    token: String,
    /// SHA-256 of the token: compared with the digest of what a request carries.
    token_digest: [u8; 32],
    /// The `Host` values the page answers to.
    hosts: BTreeSet<String>,
    docker: Docker,
    key: DigestKey,
    /// The rendered state (bottles, queue, grants), as it last changed.
    state: watch::Receiver<String>,
    /// Audit decisions as JSON, live.
    audit: broadcast::Sender<String>,
    /// The latest audit decisions as JSON, oldest first.
    history: Mutex<VecDeque<(f64, String)>>,
    /// Sidecars found ready lately, not probed again at every refresh.
    probes: getcmd::ProbeCache,
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<i32> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {}: the console serves on a loopback address only (127.0.0.1, ::1), \
             so that nothing on a bottle's network or the LAN can reach it",
            args.listen
        );
    }
    let scope = scope(&args.file, &args.project, Path::new("bottles.yaml"))?;
    let docker = connect().await?;
    let key = digest_key()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let token = hex::encode(rand::random::<[u8; 24]>());
    let (state_tx, state_rx) = watch::channel(String::new());
    let (audit_tx, _) = broadcast::channel(256);
    let served = match &scope {
        Scope::Named(named) => named.clone(),
        Scope::Engine => Served::new(),
    };
    let app = Arc::new(App {
        scope,
        served: RwLock::new(served),
        token_digest: Sha256::digest(token.as_bytes()).into(),
        token,
        hosts: allowed_hosts(addr),
        docker,
        key,
        state: state_rx,
        audit: audit_tx,
        history: Mutex::new(VecDeque::new()),
        probes: getcmd::ProbeCache::new(READY_TTL),
    });
    tokio::spawn(refresh(Arc::clone(&app), state_tx));
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    println!(
        "bottle console for {} at\n    http://{host}/?token={}\n(the token is required on every request; Ctrl-C stops it)",
        app.scope.describe(),
        app.token
    );
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(0)
}

/// The projects `-f` and `-p` name (a manifest's project once only); with neither,
/// those of `here` when it exists, else every project on the engine.
fn scope(files: &[PathBuf], projects: &[String], here: &Path) -> anyhow::Result<Scope> {
    let files = match (files.is_empty() && projects.is_empty(), here.exists()) {
        (true, false) => return Ok(Scope::Engine),
        (true, true) => vec![here.to_path_buf()],
        (false, _) => files.to_vec(),
    };
    let mut named = Served::new();
    for f in files {
        let project = load_names(&f)?.project;
        if let Some(Some(other)) = named.insert(project.clone(), Some(f.clone())) {
            anyhow::bail!(
                "{} and {} both name project {project}: give each project once",
                other.display(),
                f.display()
            );
        }
    }
    for p in projects {
        if p.trim().is_empty() {
            anyhow::bail!("-p needs a project name");
        }
        named.entry(p.clone()).or_insert(None);
    }
    Ok(Scope::Named(named))
}

impl Scope {
    /// What the console serves, for its banner and title.
    fn describe(&self) -> String {
        match self {
            Scope::Named(named) if named.len() == 1 => {
                format!("project {}", named.keys().next().map_or("", String::as_str))
            }
            Scope::Named(named) => {
                let names: Vec<&str> = named.keys().map(String::as_str).collect();
                format!("projects {}", names.join(", "))
            }
            Scope::Engine => "every project on the engine".into(),
        }
    }
}

/// The projects served now: the named ones, or those with objects in `snap`
/// (containers, networks, volumes), kept for the decisions' check.
fn served_now(app: &App, snap: &Snapshot) -> Served {
    if let Scope::Named(named) = &app.scope {
        return named.clone();
    }
    let containers = snap.containers.iter().map(|c| &c.labels);
    let networks = snap.networks.iter().map(|n| &n.labels);
    let volumes = snap.volumes.iter().map(|v| &v.labels);
    let found: Served = containers
        .chain(networks)
        .chain(volumes)
        .filter_map(labels::project)
        .map(|p| (p.to_string(), None))
        .collect();
    if let Ok(mut s) = app.served.write() {
        s.clone_from(&found);
    }
    found
}

/// Is `project` one this console serves now?
fn serves(app: &App, project: &str) -> bool {
    app.served
        .read()
        .map(|s| s.contains_key(project))
        .unwrap_or(false)
}

/// The routes, behind [`guard`].
fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/static/console.js", get(js))
        .route("/static/console.css", get(css))
        .route("/events", get(events))
        .route("/approve", post(approve))
        .route("/deny", post(deny))
        .route("/revoke", post(revoke))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(app)
}

/// `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`: the Host values of the page.
fn allowed_hosts(addr: SocketAddr) -> BTreeSet<String> {
    let port = addr.port();
    let mut h = BTreeSet::from([format!("localhost:{port}")]);
    match addr {
        SocketAddr::V4(a) => h.insert(a.to_string()),
        SocketAddr::V6(a) => h.insert(format!("[{}]:{port}", a.ip())),
    };
    h
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Every request: the right Host and token; a POST also from the page's own origin.
/// Every response: the security headers.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    tracing::debug!(
        peer = peer.as_deref().unwrap_or("-"),
        method = %req.method(),
        path = req.uri().path(),
        "request"
    );
    let mut resp = if !app.hosts.contains(host) {
        refuse(StatusCode::MISDIRECTED_REQUEST, "unknown Host")
    } else if !token_ok(&app, &req) {
        refuse(
            StatusCode::FORBIDDEN,
            "a valid token is required: open the URL `bottle console` printed",
        )
    } else if req.method() == Method::POST && !same_origin(req.headers(), host) {
        refuse(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: changes are made from the console's own page",
        )
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with the page's own
    // form posts. `same-origin` keeps the URL (and its token) from any other origin.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

/// Does the request carry the token (query `token=`)? Compared as SHA-256 digests, so
/// the comparison's time says nothing about the token.
fn token_ok(app: &App, req: &Request) -> bool {
    let Ok(Query(q)) = Query::<TokenQuery>::try_from_uri(req.uri()) else {
        return false;
    };
    let Some(t) = q.token.filter(|t| t.len() <= 128) else {
        return false;
    };
    let got: [u8; 32] = Sha256::digest(t.as_bytes()).into();
    got == app.token_digest
}

/// A POST from the page itself: its `Origin` is `http://<Host>`; a browser that sends
/// no Origin must say `Sec-Fetch-Site: same-origin`.
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => origin == format!("http://{host}"),
        None => headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("same-origin"),
    }
}

async fn index(State(app): State<Arc<App>>) -> Response {
    let state = app.state.borrow().clone();
    page::index(&app.scope.describe(), &app.token, &state).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// The live feed: `state` (the rendered bottles, queue and grants) whenever it changes,
/// and `audit` (one decision as JSON) for the history, then each new one.
async fn events(
    State(app): State<Arc<App>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut state = app.state.clone();
    let mut audit_rx = app.audit.subscribe();
    let history: Vec<String> = app
        .history
        .lock()
        .map(|h| h.iter().map(|(_, j)| j.clone()).collect())
        .unwrap_or_default();
    let stream = async_stream(move |tx| async move {
        let first = state.borrow_and_update().clone();
        if tx
            .send(Event::default().event("state").data(first))
            .await
            .is_err()
        {
            return;
        }
        for j in history {
            if tx
                .send(Event::default().event("audit").data(j))
                .await
                .is_err()
            {
                return;
            }
        }
        loop {
            let ev = tokio::select! {
                changed = state.changed() => match changed {
                    Ok(()) => Event::default().event("state").data(state.borrow_and_update().clone()),
                    Err(_) => return,
                },
                a = audit_rx.recv() => match a {
                    Ok(j) => Event::default().event("audit").data(j),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by `f` through a bounded channel (the client's pace bounds the buffer).
fn async_stream<F, Fut>(f: F) -> impl futures_util::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok)
}

#[derive(Deserialize)]
struct ActionForm {
    project: String,
    id: String,
    #[serde(default, rename = "for")]
    for_: String,
    #[serde(default)]
    reason: String,
}

async fn approve(State(app): State<Arc<App>>, Form(f): Form<ActionForm>) -> Response {
    act(&app, f, Action::Approve).await
}

async fn deny(State(app): State<Arc<App>>, Form(f): Form<ActionForm>) -> Response {
    act(&app, f, Action::Deny).await
}

async fn revoke(State(app): State<Arc<App>>, Form(f): Form<ActionForm>) -> Response {
    act(&app, f, Action::Revoke).await
}

#[derive(Clone, Copy)]
enum Action {
    Approve,
    Deny,
    Revoke,
}

/// Carry out one decision through the queue's state machine, then back to the page
/// (303, so a reload does not post again); a refusal is a page saying why.
async fn act(app: &App, f: ActionForm, action: Action) -> Response {
    match decide(app, f, action).await {
        Ok(()) => Redirect::to(&format!("/?token={}", app.token)).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            page::refusal(&app.token, &format!("{e:#}")),
        )
            .into_response(),
    }
}

async fn decide(app: &App, f: ActionForm, action: Action) -> anyhow::Result<()> {
    if [&f.project, &f.id, &f.for_, &f.reason]
        .iter()
        .any(|s| s.len() > MAX_FIELD)
    {
        anyhow::bail!("a field is longer than {MAX_FIELD} bytes");
    }
    let project = f.project.as_str();
    if !serves(app, project) {
        anyhow::bail!("project {project:?} is not one this console serves");
    }
    let found = queue::read(&app.docker, project).await?;
    let p = queue::find(&found, &f.id, project)?;
    let now = now();
    match action {
        Action::Approve => {
            let for_secs = match f.for_.trim() {
                "" => None,
                d => Some(parse_duration(d).map_err(|e| anyhow::anyhow!("duration {e}"))?),
            };
            let g = queue::approve(&app.docker, project, &app.key, p, now, for_secs).await?;
            tracing::info!(project, id = %g.id, bottle = %g.bottle, until = ?g.until, "approved from the console");
        }
        Action::Deny => {
            queue::deny(&app.docker, p, Some(f.reason), now).await?;
            tracing::info!(project, id = %p.proposal.id, "denied from the console");
        }
        Action::Revoke => {
            queue::revoke(&app.docker, project, p, now).await?;
            tracing::info!(project, id = %p.proposal.id, "revoked from the console");
        }
    }
    Ok(())
}

/// Every [`REFRESH`]: read the engine ([`tick`]) and publish the rendered state when
/// it changed.
async fn refresh(app: Arc<App>, tx: watch::Sender<String>) {
    let mut followed = BTreeSet::new();
    loop {
        let html = tick(&app, &mut followed)
            .await
            .unwrap_or_else(|e| page::error_fragment(None, &format!("{e:#}")));
        tx.send_if_modified(|old| {
            if *old == html {
                false
            } else {
                *old = html;
                true
            }
        });
        tokio::time::sleep(REFRESH).await;
    }
}

/// One reading of the engine: one listing of every project's objects serves the
/// projects served (with neither `-f` nor `-p`), each one's queue, bottles and grants,
/// and the audit lines to follow (each new sidecar container's, into `followed`). The
/// rendered state.
async fn tick(app: &Arc<App>, followed: &mut BTreeSet<String>) -> anyhow::Result<String> {
    let now = now();
    let filter = labels::managed_filter();
    // The containers, then the queues they hold, then the other objects: an approval's
    // grant volume is made before its verdict is written, so every approval read here
    // has its grant in the volumes listed after.
    let containers = app.docker.list_containers(&filter).await?;
    let with_queue: BTreeSet<&str> = containers
        .iter()
        .filter_map(|c| labels::project(&c.labels))
        .filter(|p| match &app.scope {
            Scope::Named(named) => named.contains_key(*p),
            Scope::Engine => true,
        })
        .collect();
    let queues: BTreeMap<String, _> =
        futures_util::future::join_all(with_queue.into_iter().map(|p| {
            let held: Vec<_> = containers
                .iter()
                .filter(|c| queue::holds_queue(c, p))
                .cloned()
                .collect();
            async move { (p.to_string(), queue::read_in(&app.docker, held).await) }
        }))
        .await
        .into_iter()
        .collect();
    let (networks, volumes, images) = futures_util::future::join3(
        app.docker.list_networks(&filter),
        app.docker.list_volumes(&filter),
        app.docker.list_images(&filter),
    )
    .await;
    let snap = Snapshot {
        networks: networks?,
        volumes: volumes?,
        containers,
        images: images?,
    };
    let served = served_now(app, &snap);
    follow_new(app, &snap, &served, followed);
    let parts = futures_util::future::join_all(served.iter().map(|(project, manifest)| {
        let (snap, queues) = (&snap, &queues);
        async move {
            let found = match queues.get(project) {
                Some(Ok(found)) => found.as_slice(),
                Some(Err(e)) => return page::error_fragment(Some(project), &format!("{e:#}")),
                None => &[],
            };
            let (bottles, grants) =
                getcmd::bottles_in(&app.docker, project, snap, now, Some(&app.probes)).await;
            // Only a proposed Dockerfile is shown against the current one.
            let asks_dockerfile = found
                .iter()
                .any(|f| matches!(f.proposal.ask, crate::supervise::Ask::Dockerfile { .. }));
            let current = if asks_dockerfile {
                current_dockerfiles(manifest.as_deref(), &grants)
            } else {
                BTreeMap::new()
            };
            page::project(&page::StateView {
                token: &app.token,
                project,
                now,
                bottles: &bottles,
                found,
                grants: &grants,
                current: &current,
            })
        }
    }))
    .await;
    Ok(page::state(
        &parts,
        "no bottle objects on the engine: run `bottle apply`",
    ))
}

/// Each bottle's Dockerfile now, to show a proposed one as a diff: the newest granted
/// one in force, else the manifest's (when the console was given one that loads).
fn current_dockerfiles(
    manifest: Option<&Path>,
    grants: &crate::supervise::Grants,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // Names only: the console needs no secret, so an unset `from_env` variable does not
    // hide the Dockerfiles.
    if let Some(m) = manifest.and_then(|p| load_names(p).ok()) {
        for (name, agent) in &m.agents {
            let Some(policy) = m.policies.get(&agent.bottle) else {
                continue;
            };
            let text = match &policy.image {
                crate::model::ImageSource::ProviderDefault => {
                    Some(agent.provider.dockerfile().to_string())
                }
                crate::model::ImageSource::Dockerfile { dockerfile, .. } => {
                    std::fs::read_to_string(dockerfile).ok()
                }
                crate::model::ImageSource::Granted { dockerfile, .. } => Some(dockerfile.clone()),
            };
            if let Some(t) = text {
                out.insert(name.clone(), t);
            }
        }
    }
    for b in grants.by_bottle.keys() {
        if let Some(g) = grants.dockerfile(b)
            && let crate::supervise::Ask::Dockerfile { dockerfile } = &g.ask
        {
            out.insert(b.clone(), dockerfile.clone());
        }
    }
    out
}

/// Follow the audit lines of each sidecar container of the projects served that is
/// new in `snap` (by id: a container made again under its name is followed again),
/// into the history and the live feed.
fn follow_new(app: &Arc<App>, snap: &Snapshot, served: &Served, followed: &mut BTreeSet<String>) {
    followed.retain(|id| snap.containers.iter().any(|c| c.id == *id));
    for c in &snap.containers {
        if let Some(s) = audit::source(c)
            && served.contains_key(&s.project)
            && followed.insert(c.id.clone())
        {
            tokio::spawn(follow_one(Arc::clone(app), s));
        }
    }
}

async fn follow_one(app: Arc<App>, s: audit::Source) {
    let mut lines = Box::pin(app.docker.log_lines(&s.container, true, 0, MAX_LINE));
    while let Some(Ok(line)) = lines.next().await {
        let Some(d) = audit::decision(&s, &line) else {
            continue;
        };
        let Some(json) = audit_json(&s.project, &d) else {
            continue;
        };
        if let Ok(mut h) = app.history.lock() {
            let at = h.partition_point(|(ts, _)| *ts <= d.ts);
            h.insert(at, (d.ts, json.clone()));
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        let _ = app.audit.send(json);
    }
}

/// A decision as the page gets it: its fields and its project.
fn audit_json(project: &str, d: &Decision) -> Option<String> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        project: &'a str,
        #[serde(flatten)]
        d: &'a Decision,
    }
    serde_json::to_string(&Row { project, d }).ok()
}

#[cfg(test)]
mod tests;
