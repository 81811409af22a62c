//! Reference server for `bench/run`: rmcp-server-kit 3.1.3 with its OAuth 2.1 resource-server
//! auth (JWT verified against the provider's JWKS), serving the two tools the benchmark
//! calls, with the answers of the demo server:
//!
//! - `process_data(data)` returns `Processing for user: <sub>`, the subject the kit
//!   verified;
//! - `whoami` returns the claims of the verified token under the keys of the FastMCP
//!   reference server (`sub`, `email`, `name`, `iss`, `aud`, `exp`, `iat`, `scope`,
//!   `client_id`; an absent claim is `null`).
//!
//! The kit's checks: RS256 (or another asymmetric algorithm) signature by a JWKS key whose
//! `kid` and `alg` match the token header (keys without `alg` are ignored), exact `iss`,
//! `aud` containing `--audience`, `exp`/`nbf`. The kit also refuses a token it cannot map to
//! a role; the benchmark's tokens carry no scope meant for this server, so the role comes
//! from the audience (`role_claim = "aud"`), which adds no condition to the ones above. No
//! RBAC policy, no rate limits: the kit's defaults otherwise.
//!
//! The kit serves `/mcp` with sessions only (rmcp's `LocalSessionManager`, SSE replies; it
//! has no stateless mode for requests of the protocol versions the benchmark speaks), so
//! `--stateful` is required. Without `--tuned` the server is started exactly as the kit
//! ships (`transport::serve`, which binds a plain listener: accepted sockets keep Nagle's
//! algorithm). With `--tuned` the listening socket gets `TCP_NODELAY` before it is handed to
//! `transport::serve_with_listener`; Linux copies the option to every accepted socket.
//!
//! `GET /.well-known/oauth-protected-resource/mcp` (the URL the benchmark polls to learn
//! that a server is up) answers the protected-resource metadata of `/mcp`; the kit itself
//! serves its document at `/.well-known/oauth-protected-resource` and liveness at
//! `/healthz`.
//!
//! ```text
//! cargo build --release --manifest-path bench/peers/rmcp-server-kit/Cargo.toml \
//!     --target-dir target/bench/kit-build
//! target/bench/kit-build/release/rmcp-server-kit-peer --port 8020 \
//!     --jwks-uri http://localhost:9400/jwks --issuer http://localhost:9400 \
//!     --audience http://localhost:8020/mcp --stateful [--tuned]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{Json, ServerHandler, schemars, tool, tool_handler, tool_router};
use rmcp_server_kit::auth::{AuthConfig, AuthIdentity};
use rmcp_server_kit::oauth::{OAuthConfig, OAuthSsrfAllowlist};
use rmcp_server_kit::secret::ExposeSecret as _;
use rmcp_server_kit::transport::{McpServerConfig, serve, serve_with_listener};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Command line (that of the FastMCP reference server, plus `--tuned`).
#[derive(Parser, Debug)]
#[command(about = "rmcp-server-kit reference server for bench/run")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// The provider's JWKS URL.
    #[arg(long)]
    jwks_uri: String,
    /// The expected `iss`.
    #[arg(long)]
    issuer: String,
    /// The expected audience: this server's resource URL (`http://localhost:PORT/mcp`).
    #[arg(long)]
    audience: String,
    /// Sessions and SSE replies: the only mode the kit has; required.
    #[arg(long)]
    stateful: bool,
    /// Listen with `TCP_NODELAY` (otherwise exactly as the kit ships).
    #[arg(long)]
    tuned: bool,
}

/// The claims `whoami` reports.
const WHOAMI_KEYS: [&str; 9] = [
    "sub",
    "email",
    "name",
    "iss",
    "aud",
    "exp",
    "iat",
    "scope",
    "client_id",
];

/// Arguments of `process_data`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ProcessData {
    /// Any text.
    data: String,
}

/// What `whoami` returns.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct WhoAmI {
    sub: Option<Value>,
    email: Option<Value>,
    name: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    iat: Option<Value>,
    scope: Option<Value>,
    client_id: Option<Value>,
}

impl WhoAmI {
    fn from_claims(mut c: Map<String, Value>) -> Self {
        let [sub, email, name, iss, aud, exp, iat, scope, client_id] =
            WHOAMI_KEYS.map(|k| c.remove(k));
        Self {
            sub,
            email,
            name,
            iss,
            aud,
            exp,
            iat,
            scope,
            client_id,
        }
    }
}

/// The identity the kit's auth middleware attached to the HTTP request of this call.
/// (rmcp hands tools the request parts; the kit's task-local `current_sub()` is not
/// visible in the session task that runs the tool.)
fn identity(parts: &http::request::Parts) -> Option<&AuthIdentity> {
    parts.extensions.get::<AuthIdentity>()
}

/// The claims of the token the kit verified: its payload, decoded (the signature and the
/// claims the kit checks were checked before the request reached the tool).
fn verified_claims(parts: &http::request::Parts) -> Map<String, Value> {
    identity(parts)
        .and_then(|id| id.raw_token.as_ref())
        .and_then(|token| {
            let payload = token.expose_secret().split('.').nth(1)?;
            let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
            serde_json::from_slice::<Map<String, Value>>(&bytes).ok()
        })
        .unwrap_or_default()
}

#[derive(Clone)]
struct KitPeer {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl KitPeer {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Who is calling: the verified claims of the access token")]
    async fn whoami(&self, Extension(parts): Extension<http::request::Parts>) -> Json<WhoAmI> {
        Json(WhoAmI::from_claims(verified_claims(&parts)))
    }

    #[tool(description = "Process some data on behalf of the calling user")]
    async fn process_data(
        &self,
        Parameters(args): Parameters<ProcessData>,
        Extension(parts): Extension<http::request::Parts>,
    ) -> String {
        let _ = args.data;
        let sub = identity(&parts)
            .and_then(|id| id.sub.as_deref())
            .unwrap_or("anonymous");
        format!("Processing for user: {sub}")
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for KitPeer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("rmcp-server-kit-peer", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// The kit's OAuth settings for the mock provider.
fn oauth_config(cli: &Cli) -> OAuthConfig {
    // The kit refuses JWKS fetches to loopback and private addresses unless the operator
    // allows them; the benchmark's provider runs on this machine, over plain HTTP.
    let mut allowlist = OAuthSsrfAllowlist::default();
    if let Some(url::Host::Domain(host)) = url::Url::parse(&cli.jwks_uri)
        .ok()
        .as_ref()
        .and_then(url::Url::host)
    {
        allowlist.hosts.push(host.to_owned());
    }
    allowlist.cidrs = vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
    OAuthConfig::builder(&cli.issuer, &cli.audience, &cli.jwks_uri)
        .role_claim("aud")
        .role_mapping(&cli.audience, "caller")
        .allow_http_oauth_urls(true)
        .ssrf_allowlist(allowlist)
        .build()
}

/// The protected-resource metadata of `/mcp`, at the URL the benchmark polls.
fn readiness_router(cli: &Cli) -> axum::Router {
    let metadata = serde_json::json!({
        "resource": cli.audience,
        "authorization_servers": [cli.issuer],
        "bearer_methods_supported": ["header"],
    });
    axum::Router::new().route(
        "/.well-known/oauth-protected-resource/mcp",
        axum::routing::get(move || {
            let body = metadata.clone();
            async move { axum::Json(body) }
        }),
    )
}

async fn run(cli: Cli) -> Result<(), String> {
    if !cli.stateful {
        return Err("rmcp-server-kit 3.1.3 serves /mcp with sessions only \
            (no stateless mode for this benchmark's requests): pass --stateful"
            .to_owned());
    }
    let addr = SocketAddr::new(cli.host, cli.port);
    let mut auth = AuthConfig::with_keys(Vec::new());
    auth.oauth = Some(oauth_config(&cli));
    let config = McpServerConfig::new(
        addr.to_string(),
        "rmcp-server-kit-peer",
        env!("CARGO_PKG_VERSION"),
    )
    .with_auth(auth)
    .with_public_url(format!("http://localhost:{}", cli.port))
    .with_extra_router(readiness_router(&cli))
    .validate()
    .map_err(|e| e.to_string())?;
    eprintln!(
        "rmcp-server-kit peer starting on http://{addr}/mcp (stateful, SSE replies, {})",
        if cli.tuned {
            "TCP_NODELAY"
        } else {
            "the kit's own listener"
        }
    );
    if cli.tuned {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_reuseaddr(true)
            .and_then(|()| socket.set_nodelay(true))
            .and_then(|()| socket.bind(addr))
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let listener = socket
            .listen(1024)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        serve_with_listener(listener, config, KitPeer::new, None, None)
            .await
            .map_err(|e| e.to_string())
    } else {
        serve(config, KitPeer::new).await.map_err(|e| e.to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr at `error` unless RUST_LOG says otherwise (at `warn` the kit logs
    // every rejected token).
    let _ = rmcp_server_kit::observability::init_tracing("error");
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
