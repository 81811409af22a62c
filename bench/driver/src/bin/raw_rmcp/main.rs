//! Reference server for `bench/run`: the same two tools as the demo server, served by plain
//! rmcp with no authorization and no extra layers. It is the ceiling `mcp-oidc serve` builds
//! on: whatever `mcp-oidc serve --insecure-disable-auth` costs beyond this server is ours.
//!
//! - `whoami` returns an object with the keys of the FastMCP reference server (`sub`,
//!   `email`, `name`, `iss`, `aud`, `exp`, `iat`, `scope`, `client_id`), all `null`: there
//!   is no caller.
//! - `process_data(data)` returns `Processing for user: anonymous`.
//!
//! The MCP endpoint is `/mcp` (rmcp's `StreamableHttpService`, whose default `Host` check
//! accepts loopback names only). By default it is stateless with JSON replies, as
//! `mcp-oidc serve --stateless --json-response`; with `--stateful` it keeps sessions
//! (`Mcp-Session-Id`, rmcp's `LocalSessionManager`) and answers with SSE. Accepted sockets
//! get `TCP_NODELAY`, as in `mcp-oidc serve`.
//!
//! With `--heap-profile`, `GET /heap` lists the live heap blocks by size (`heap.rs`), which
//! `bench/run` uses to break down the memory of a live session.
//!
//! With `--rs256-check-issuer URL`, every `/mcp` request must carry a bearer token whose
//! RS256 signature one of the issuer's keys accepts, or it gets a bare 401. That is the
//! signature check alone (aws-lc-rs, keys parsed once at start, found by discovery): no
//! header or claim is read and nothing is cached. `bench/run` measures it against this
//! server without the check, which puts a number on the floor under the no-cache scenario
//! (S3): what checking an RS256 signature on every request costs by itself, on this machine.
//!
//! `GET /.well-known/oauth-protected-resource/mcp` answers a small static document only so
//! that the benchmark, which polls that URL to learn when a server is up, can wait on this
//! one the same way.
//!
//! ```text
//! cargo build --release -p mcp-oidc-bench --bin raw_rmcp
//! target/release/raw_rmcp --port 8010 [--stateful] [--rs256-check-issuer http://localhost:9400]
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use clap::Parser;
use mcp_oidc_bench::{RsaKey, issuer_rsa_keys, rs256_signature_verifies};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{Json, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};

mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Plain rmcp reference server for bench/run (no authorization)")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// Sessions (`Mcp-Session-Id`) and SSE replies instead of stateless JSON replies.
    #[arg(long)]
    stateful: bool,
    /// Count live heap blocks by size and answer them at `GET /heap` (see `heap.rs`).
    #[arg(long)]
    heap_profile: bool,
    /// Check the RS256 signature of every `/mcp` request's bearer token against this
    /// issuer's keys, and nothing else (401 when it does not verify).
    #[arg(long, value_name = "URL")]
    rs256_check_issuer: Option<String>,
}

/// What `whoami` returns: the claim names of the FastMCP reference server, all absent.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
struct WhoAmI {
    sub: Option<String>,
    email: Option<String>,
    name: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    scope: Option<String>,
    client_id: Option<String>,
}

/// Arguments of `process_data`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ProcessData {
    /// Any text.
    data: String,
}

#[derive(Clone)]
struct RawServer {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl RawServer {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Who is calling: the verified claims of the access token")]
    async fn whoami(&self) -> Json<WhoAmI> {
        Json(WhoAmI::default())
    }

    #[tool(description = "Process some data on behalf of the calling user")]
    async fn process_data(&self, Parameters(args): Parameters<ProcessData>) -> String {
        let _ = args.data;
        "Processing for user: anonymous".to_owned()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for RawServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("raw-rmcp", env!("CARGO_PKG_VERSION")))
    }
}

/// Passes on requests whose bearer token's RS256 signature verifies; answers 401 otherwise.
async fn rs256_check(
    State(keys): State<Arc<Vec<RsaKey>>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(token) if rs256_signature_verifies(&keys, token) => next.run(request).await,
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

fn app(cli: &Cli, keys: Option<Vec<RsaKey>>) -> Router {
    let factory = || Ok(RawServer::new());
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(cli.stateful)
        .with_json_response(!cli.stateful);
    let mcp = if cli.stateful {
        Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config),
        )
    } else {
        Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(factory, Arc::new(NeverSessionManager::default()), config),
        )
    };
    let mcp = match keys {
        Some(keys) => mcp.layer(middleware::from_fn_with_state(Arc::new(keys), rs256_check)),
        None => mcp,
    };
    // Readiness probe of the benchmark only; this server has no authorization server.
    let metadata = serde_json::json!({
        "resource": format!("http://localhost:{}/mcp", cli.port),
        "authorization_servers": [],
    });
    let router = mcp.route(
        "/.well-known/oauth-protected-resource/mcp",
        get(move || {
            let body = metadata.clone();
            async move { axum::Json(body) }
        }),
    );
    if cli.heap_profile {
        router.route("/heap", get(|| async { axum::Json(heap::report()) }))
    } else {
        router
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.heap_profile {
        heap::start();
    }
    let keys = match &cli.rs256_check_issuer {
        Some(issuer) => Some(issuer_rsa_keys(issuer).await?),
        None => None,
    };
    let checking = keys.is_some();
    let router = app(&cli, keys);
    let listener = tokio::net::TcpListener::bind((cli.host, cli.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", cli.host, cli.port))?;
    let listener = listener.tap_io(|socket| {
        // Best effort, as in `mcp-oidc serve`: a socket without it still works.
        let _ = socket.set_nodelay(true);
    });
    eprintln!(
        "raw rmcp listening on http://{}:{}/mcp ({}{})",
        cli.host,
        cli.port,
        if cli.stateful {
            "stateful, SSE replies"
        } else {
            "stateless, JSON replies"
        },
        if checking {
            "; RS256 signature checked on every request"
        } else {
            ""
        }
    );
    axum::serve(listener, router).await?;
    Ok(())
}
