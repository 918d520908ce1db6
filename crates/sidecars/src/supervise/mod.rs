//! `bottle sidecar supervise`: the MCP server (rmcp, streamable HTTP, stateless) through
//! which the agent asks for more. Its tools only propose and read: nothing served here
//! can approve; approval is `bottle queue approve` on the host, through the engine.
//!
//! `store` keeps the proposals in the state volume; the config file (rendered by
//! `nodes::supervise`) is what the manifest allows, for `list-egress-routes`.

pub mod store;

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

use crate::reload::Swap;
use bottle_contract::supervise::{Ask, Verdict};
pub use bottle_contract::supervise::{CONFIG_FILE, CONFIG_MOUNT, Config, MCP_PATH, RouteView};
use store::{Entry, Store, StoreError};

/// Load the config, open the store, then serve MCP on `listen` until killed.
pub async fn run(listen: &str) -> anyhow::Result<()> {
    let path = std::env::var("BOTTLE_SUPERVISE_CONFIG")
        .unwrap_or_else(|_| format!("{CONFIG_MOUNT}/{CONFIG_FILE}"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading the supervise config {path}: {e}"))?;
    let cfg: Config = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("parsing the supervise config {path}: {e}"))?;
    let state = std::env::var("BOTTLE_SUPERVISE_STATE")
        .unwrap_or_else(|_| bottle_contract::supervise::STATE_MOUNT.to_string());
    let store = Arc::new(Store::open(&state)?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(listen, bottle = %cfg.bottle, pending = store.list()?.iter().filter(|e| e.decision.is_none()).count(), "supervise listening");
    let cfg = Arc::new(Swap::new(cfg));
    let live = Arc::clone(&cfg);
    crate::reload::Watcher::json("supervise configuration", path, move |cfg| {
        live.set(cfg);
        Ok(())
    })
    .spawn();
    crate::status::ready("serving MCP");
    serve(listener, cfg, store).await
}

/// Serve MCP at [`MCP_PATH`] and a health check at `/healthz` on `listener`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: Arc<Swap<Config>>,
    store: Arc<Store>,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let port = listener.local_addr()?.port();
    let hosts = [
        bottle_contract::node::NodeKind::Supervise
            .as_str()
            .to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let allowed: Vec<String> = hosts
        .iter()
        .flat_map(|h| [h.clone(), format!("{h}:{port}")])
        .collect();
    let mcp = StreamableHttpService::new(
        move || Ok(Supervise::new(cfg.get(), Arc::clone(&store))),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(allowed)
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_max_request_body_bytes(1 << 20),
    );
    loop {
        let (sock, _) = listener.accept().await?;
        let mcp = mcp.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut mcp = mcp.clone();
                    async move {
                        use http_body_util::BodyExt;
                        use tower_service::Service;
                        let path = req.uri().path();
                        if path == "/healthz" {
                            let body = http_body_util::Full::new(bytes::Bytes::from_static(
                                b"ok supervise\n",
                            ))
                            .map_err(|e| match e {})
                            .boxed_unsync();
                            return Ok::<_, std::convert::Infallible>(hyper::Response::new(body));
                        }
                        if path != MCP_PATH {
                            let mut r = hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(
                                    b"not found; MCP is at /mcp\n",
                                ))
                                .map_err(|e| match e {})
                                .boxed_unsync(),
                            );
                            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                            return Ok(r);
                        }
                        let resp = match mcp.call(req).await {
                            Ok(r) => r,
                            Err(e) => match e {},
                        };
                        Ok(resp.map(|b| b.boxed_unsync()))
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

/// The MCP handler: one per request (stateless), sharing the config and the store.
#[derive(Clone)]
pub struct Supervise {
    cfg: Arc<Config>,
    store: Arc<Store>,
    tool_router: ToolRouter<Supervise>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EgressBlockArgs {
    /// The host name to allow (`docs.example.com`, or `*.example.com`).
    pub host: String,
    /// Why the bottle needs it: the operator reads this.
    pub reason: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CapabilityBlockArgs {
    /// The complete new Dockerfile for this bottle's agent image.
    pub dockerfile: String,
    /// Why the bottle needs it: the operator reads this.
    pub reason: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ProposalStatusArgs {
    /// The id a proposal tool returned (`p` and 10 hex digits).
    pub id: String,
}

fn json_result(v: serde_json::Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(v.to_string())])
}

fn refused(msg: impl std::fmt::Display) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(msg.to_string())])
}

fn internal(e: StoreError) -> ErrorData {
    tracing::error!(error = %bottle_contract::ErrorChain(&e), "proposal store");
    ErrorData::internal_error("the proposal store failed; see the supervise log", None)
}

/// The status of a proposal as the agent sees it.
fn status_json(e: &Entry) -> serde_json::Value {
    let (status, reason) = match &e.decision {
        None => ("pending", None),
        Some(d) => (d.verdict.as_str(), d.reason.clone()),
    };
    serde_json::json!({
        "id": e.proposal.id,
        "kind": e.proposal.ask.kind(),
        "summary": e.proposal.ask.summary(),
        "status": status,
        "reason": reason,
    })
}

#[tool_router]
impl Supervise {
    pub fn new(cfg: Arc<Config>, store: Arc<Store>) -> Self {
        Supervise {
            cfg,
            store,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        name = "list-egress-routes",
        description = "List where this bottle may connect: the allowed hosts (manifest and approved proposals) and the credentialed routes. Everything else is blocked."
    )]
    async fn list_egress_routes(&self) -> Result<CallToolResult, ErrorData> {
        let granted: Vec<String> = self
            .store
            .list()
            .map_err(internal)?
            .into_iter()
            .filter(|e| {
                matches!(
                    e.decision.as_ref().map(|d| d.verdict),
                    Some(Verdict::Approved)
                )
            })
            .filter_map(|e| match e.proposal.ask {
                Ask::Host { host } => Some(host),
                Ask::Dockerfile { .. } => None,
            })
            .collect();
        Ok(json_result(serde_json::json!({
            "bottle": self.cfg.bottle,
            "allow": self.cfg.allow,
            "granted": granted,
            "routes": self.cfg.routes,
        })))
    }

    #[tool(
        name = "egress-block",
        description = "Ask the operator to allow a blocked host for this bottle. Returns a proposal id; poll proposal-status. Approval takes effect without restarting the agent."
    )]
    async fn egress_block(
        &self,
        Parameters(a): Parameters<EgressBlockArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.propose(Ask::Host { host: a.host }, &a.reason)
    }

    #[tool(
        name = "capability-block",
        description = "Propose a new Dockerfile for this bottle's agent image (for example to add a package), with a reason. On approval the image is rebuilt and the agent restarted; the workspace is kept. Returns a proposal id; poll proposal-status."
    )]
    async fn capability_block(
        &self,
        Parameters(a): Parameters<CapabilityBlockArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.propose(
            Ask::Dockerfile {
                dockerfile: a.dockerfile,
            },
            &a.reason,
        )
    }

    #[tool(
        name = "proposal-status",
        description = "The status of a proposal: pending, approved, denied (with the operator's reason) or revoked."
    )]
    async fn proposal_status(
        &self,
        Parameters(a): Parameters<ProposalStatusArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        match self.store.get(&a.id).map_err(internal)? {
            Some(e) if e.proposal.bottle == self.cfg.bottle => Ok(json_result(status_json(&e))),
            _ => Ok(refused(format!("no proposal {:?}", a.id))),
        }
    }
}

impl Supervise {
    fn propose(&self, ask: Ask, reason: &str) -> Result<CallToolResult, ErrorData> {
        match self.store.propose(&self.cfg.bottle, ask, reason) {
            Ok(p) => {
                tracing::info!(id = %p.id, kind = p.ask.kind(), summary = %p.ask.summary(), "proposal");
                Ok(json_result(serde_json::json!({
                    "id": p.id,
                    "status": "pending",
                    "next": "the operator decides with `bottle queue`; poll proposal-status",
                })))
            }
            Err(StoreError::Proposal(e)) => Ok(refused(e)),
            Err(e) => Err(internal(e)),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Supervise {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "This bottle's supervisor. Its network is default-deny: ask for a blocked host with egress-block, for a changed image with capability-block; an operator decides; poll proposal-status.",
        )
    }
}
