//! A notes server built with the library: every note belongs to the user whose token wrote
//! it, and clearing everyone's notes takes the `notes:admin` scope.
//!
//! Run it against the development provider, then get a token and call it:
//!
//! ```text
//! cargo run -p mcp-oidc-cli -- mock-idp                  # the provider, http://localhost:9400
//! cargo run -p mcp-oidc --example notes                  # this server, http://localhost:8000/mcp
//! cargo run -q -p mcp-oidc-cli -- token --user alice \
//!     --scope "openid profile email notes:admin"          # prints an access token for it
//! ```
//!
//! Settings come from the environment: `NOTES_ISSUER` (default `http://localhost:9400`),
//! `NOTES_BASE_URL` (the server's public URL, default `http://localhost:8000`) and
//! `NOTES_BIND` (default `127.0.0.1:8000`). `crates/mcp-oidc/tests/example_notes.rs` runs this
//! file's server with real clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mcp_oidc::resource::ProtectedResource;
use mcp_oidc::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource};
use mcp_oidc::{AccessToken, McpOidc, ToolPolicies};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};

/// The scope `clear_all_notes` needs.
pub const ADMIN_SCOPE: &str = "notes:admin";

/// Notes by author (the token's subject), shared by every session.
type Notebook = Arc<Mutex<HashMap<String, Vec<String>>>>;

#[derive(Clone)]
struct Notes {
    book: Notebook,
    tool_router: Arc<ToolRouter<Self>>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NewNote {
    /// What to write down.
    text: String,
}

#[tool_router]
impl Notes {
    #[tool(description = "Write a note as the calling user")]
    async fn add_note(
        &self,
        Extension(caller): Extension<AccessToken>,
        Parameters(note): Parameters<NewNote>,
    ) -> String {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mine = book.entry(caller.subject().to_string()).or_default();
        mine.push(note.text);
        format!("{} now has {} note(s)", caller.subject(), mine.len())
    }

    #[tool(description = "The calling user's notes, one per line")]
    async fn my_notes(&self) -> String {
        // The caller is also at hand without a parameter, anywhere inside a request.
        let Some(caller) = mcp_oidc::current_token() else {
            return String::new();
        };
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.get(caller.subject().as_str())
            .map(|notes| notes.join("\n"))
            .unwrap_or_default()
    }

    #[tool(description = "Delete every user's notes (needs the notes:admin scope)")]
    async fn clear_all_notes(&self) -> String {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let n: usize = book.values().map(Vec::len).sum();
        book.clear();
        format!("deleted {n} note(s)")
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Notes {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// The whole server: MCP at `{base_url}/mcp`, its metadata, and the token check in front.
pub fn app(issuer: &str, base_url: &str) -> Result<axum::Router, Box<dyn std::error::Error>> {
    let mut resource = ProtectedResource::new(base_url, "/mcp")?;
    resource.authorization_servers = vec![issuer.into()];
    resource.scopes_supported = ["openid", "profile", "email", ADMIN_SCOPE]
        .into_iter()
        .collect();

    // Tokens must come from `issuer`, signed with a key of its JWKS (found by discovery),
    // and name this server's MCP URL as their audience.
    let verifier = JwtVerifier::new(JwtConfig::new(
        issuer,
        KeySource::Discovery(issuer.into()),
        AudiencePolicy::OneOf(vec![resource.resource().into()]),
    ))?;

    // The router (with every tool's schema) is built once; sessions share it and the notes.
    let book = Notebook::default();
    let tool_router = Arc::new(Notes::tool_router());
    Ok(McpOidc::new(resource, verifier)
        .tool_policies(ToolPolicies::new().require_scopes("clear_all_notes", [ADMIN_SCOPE]))
        .router(move || Notes {
            book: book.clone(),
            tool_router: tool_router.clone(),
        }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setting = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
    let issuer = setting("NOTES_ISSUER", "http://localhost:9400");
    let base_url = setting("NOTES_BASE_URL", "http://localhost:8000");
    let bind = setting("NOTES_BIND", "127.0.0.1:8000");

    let app = app(&issuer, &base_url)?;
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("notes: MCP at {base_url}/mcp, tokens from {issuer}");
    mcp_oidc::serve(listener, app, mcp_oidc::server::shutdown_signal()).await?;
    Ok(())
}
