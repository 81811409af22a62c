//! `mcp-oidc dev`: the mock provider and the protected demo server in one process.

use std::future::Future;

use mcp_oidc_mock::{MockConfig, MockProvider};
use serde_json::{Map, Value, json};

use crate::config::Settings;

/// Options of `mcp-oidc dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Port of the protected MCP server.
    #[arg(long, env = "MCP_OIDC_DEV_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Port of the mock OpenID provider.
    #[arg(long, env = "MCP_OIDC_DEV_IDP_PORT", default_value_t = 9400)]
    pub idp_port: u16,
    /// Interface both listen on.
    #[arg(long, env = "MCP_OIDC_DEV_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Users to create, as SUB or SUB:EMAIL:NAME (repeatable)
    /// [default: testuser:testuser@example.com:Test User].
    #[arg(long = "user", env = "MCP_OIDC_DEV_USERS", value_delimiter = ',')]
    pub users: Vec<String>,
    /// Serve without sessions.
    #[arg(long)]
    pub stateless: bool,
    /// Resource-server mode: clients log in at the provider directly, instead of through
    /// this server's OAuth proxy.
    #[arg(long)]
    pub direct: bool,
}

impl Default for DevArgs {
    fn default() -> Self {
        Self {
            port: 8000,
            idp_port: 9400,
            host: "127.0.0.1".into(),
            users: Vec::new(),
            stateless: false,
            direct: false,
        }
    }
}

/// The client the dev proxy uses at the mock provider (which accepts any client unless
/// started with `--require-registration`).
const DEV_PROXY_CLIENT: &str = "mcp-oidc-dev-proxy";
const DEV_PROXY_SECRET: &str = "dev-proxy-secret";

/// A user of the dev provider.
fn parse_user(spec: &str) -> (String, Map<String, Value>) {
    let mut parts = spec.splitn(3, ':');
    let sub = parts.next().unwrap_or_default().to_owned();
    let email = parts
        .next()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{sub}@example.com"));
    let name = parts
        .next()
        .map(str::to_owned)
        .unwrap_or_else(|| sub.clone());
    let claims = match json!({ "email": email, "name": name }) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    (sub, claims)
}

/// The running dev system.
pub struct Dev {
    /// The mock provider (add users, rotate keys while it runs).
    pub idp: MockProvider,
    /// URL of the MCP endpoint.
    pub mcp_url: String,
    /// The issuer.
    pub issuer: String,
    /// The users created.
    pub users: Vec<(String, Map<String, Value>)>,
    /// Whether the OAuth proxy is on.
    pub proxy: bool,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    idp_task: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Dev {
    /// Stops both servers and waits for them.
    pub async fn stop(self) -> std::io::Result<()> {
        for tx in self.stop {
            let _ = tx.send(());
        }
        let server = self.server.await.unwrap_or(Ok(()));
        let idp = self.idp_task.await.unwrap_or(Ok(()));
        server.and(idp)
    }
}

/// Starts the provider and the protected server. Ports of 0 pick free ones.
pub async fn start(args: &DevArgs) -> anyhow::Result<Dev> {
    let idp_listener = tokio::net::TcpListener::bind((args.host.as_str(), args.idp_port)).await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{} for the mock provider: {e} (is another server using it? pass --idp-port)", args.host, args.idp_port))?;
    let mcp_listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{} for the MCP server: {e} (is another server using it? pass --port)", args.host, args.port))?;
    let idp_port = idp_listener.local_addr()?.port();
    let mcp_port = mcp_listener.local_addr()?.port();
    let issuer = format!("http://localhost:{idp_port}");
    let base_url = format!("http://localhost:{mcp_port}");
    let mcp_url = format!("{base_url}/mcp");

    let specs = if args.users.is_empty() {
        vec!["testuser:testuser@example.com:Test User".to_owned()]
    } else {
        args.users.clone()
    };
    let users: Vec<_> = specs.iter().map(|s| parse_user(s)).collect();
    let config = MockConfig {
        users: users.clone(),
        // Clients that send no RFC 8707 `resource` still get tokens for the dev server.
        default_audience: Some(mcp_url.clone()),
        ..MockConfig::default()
    };
    let provider = MockProvider::new(config)?;
    let (idp_tx, idp_rx) = tokio::sync::oneshot::channel::<()>();
    let idp_task = tokio::spawn(provider.clone().serve(idp_listener, async move {
        let _ = idp_rx.await;
    }));

    let proxy = !args.direct;
    let settings = Settings {
        upstream_client_id: proxy.then(|| DEV_PROXY_CLIENT.to_owned()),
        upstream_client_secret: proxy.then(|| DEV_PROXY_SECRET.to_owned()),
        store: Some("memory".into()),
        proxy_secret: Some(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )),
        allow_private_client_metadata: Some(true),
        base_url: Some(base_url),
        bind: Some(format!("{}:{mcp_port}", args.host)),
        issuer: Some(issuer.clone()),
        stateless: Some(args.stateless),
        json_response: Some(args.stateless),
        ..Settings::default()
    };
    let resolved = settings.resolve()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::run::serve_demo(resolved, mcp_listener, async move {
        let _ = rx.await;
    }));
    Ok(Dev {
        idp: provider,
        mcp_url,
        issuer,
        users,
        proxy,
        server,
        idp_task,
        stop: vec![tx, idp_tx],
    })
}

/// The banner printed by `mcp-oidc dev`.
pub fn banner(dev: &Dev) -> String {
    let user = dev
        .users
        .first()
        .map(|(s, _)| s.as_str())
        .unwrap_or("testuser");
    let who: Vec<String> = dev
        .users
        .iter()
        .map(|(sub, c)| {
            format!(
                "{sub} <{}>",
                c.get("email").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    let mcp = &dev.mcp_url;
    let server_flag = if mcp == "http://localhost:8000/mcp" {
        String::new()
    } else {
        format!(" --server {mcp}")
    };
    let mode = if dev.proxy {
        format!(
            "  Authorization       {origin} (OAuth proxy: MCP clients register and log in here;\n                      the provider is upstream)",
            origin = mcp.trim_end_matches("/mcp")
        )
    } else {
        format!(
            "  Authorization       {} (resource-server mode: clients log in at the provider)",
            dev.issuer
        )
    };
    format!(
        r#"
mcp-oidc dev: a mock OpenID provider and a protected MCP server

  MCP server          {mcp}
  OpenID provider     {issuer}   users: {who}
{mode}
  Resource metadata   {prm}

Get a token (runs the real authorization-code + PKCE flow{consent}):
  TOKEN=$(mcp-oidc token --user {user}{server_flag})

Call a tool:
  curl -s {mcp} -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' \
    -d '{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"curl","version":"1"}}}}}}'

Claude Code (logs in through the browser):
  claude mcp add --transport http mcp-oidc-dev {mcp}
  ... or with the token:  claude mcp add --transport http mcp-oidc-dev {mcp} --header "Authorization: Bearer $TOKEN"
MCP Inspector:
  npx @modelcontextprotocol/inspector --cli {mcp} --transport http \
    --header "Authorization: Bearer $TOKEN" --method tools/call --tool-name whoami
Python SDK (mcp):
  streamablehttp_client("{mcp}", headers={{"Authorization": f"Bearer {{token}}"}})

Press Ctrl-C to stop.
"#,
        issuer = dev.issuer,
        who = who.join(", "),
        consent = if dev.proxy { ", consent included" } else { "" },
        prm = mcp.replacen("/mcp", "/.well-known/oauth-protected-resource/mcp", 1),
    )
}

/// Runs until `shutdown`.
pub async fn run(args: DevArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let dev = start(&args).await?;
    println!("{}", banner(&dev));
    shutdown.await;
    eprintln!("stopping...");
    dev.stop().await?;
    Ok(())
}
