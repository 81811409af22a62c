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
//! `GET /.well-known/oauth-protected-resource/mcp` answers a small static document only so
//! that the benchmark, which polls that URL to learn when a server is up, can wait on this
//! one the same way.
//!
//! ```text
//! cargo build --release -p mcp-oidc-bench --bin raw_rmcp
//! target/release/raw_rmcp --port 8010 [--stateful]
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use clap::Parser;
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

fn app(cli: &Cli) -> Router {
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
    let router = app(&cli);
    let listener = tokio::net::TcpListener::bind((cli.host, cli.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", cli.host, cli.port))?;
    let listener = listener.tap_io(|socket| {
        // Best effort, as in `mcp-oidc serve`: a socket without it still works.
        let _ = socket.set_nodelay(true);
    });
    eprintln!(
        "raw rmcp listening on http://{}:{}/mcp ({})",
        cli.host,
        cli.port,
        if cli.stateful {
            "stateful, SSE replies"
        } else {
            "stateless, JSON replies"
        }
    );
    axum::serve(listener, router).await?;
    Ok(())
}
