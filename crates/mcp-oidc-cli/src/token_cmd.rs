//! `mcp-oidc token`: a token for scripts, obtained through the real authorization-code +
//! PKCE flow (no back door).

use mcp_oidc_mock::headless::{self, TokenRequest};

/// Options of `mcp-oidc token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The user to sign in as.
    #[arg(long, default_value = "testuser")]
    pub user: String,
    /// Scopes to request.
    #[arg(long, default_value = "openid profile email")]
    pub scope: String,
    /// The provider (issuer URL).
    #[arg(
        long,
        env = "MCP_OIDC_TOKEN_ISSUER",
        default_value = "http://localhost:9400"
    )]
    pub issuer: String,
    /// The resource (RFC 8707) the token is for: the MCP server's URL.
    #[arg(
        long,
        env = "MCP_OIDC_TOKEN_RESOURCE",
        default_value = "http://localhost:8000/mcp"
    )]
    pub resource: String,
    /// The OAuth client id.
    #[arg(long, default_value = "mcp-oidc-cli")]
    pub client_id: String,
    /// The client secret (confidential clients).
    #[arg(long, env = "MCP_OIDC_TOKEN_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// The redirect URI registered for the client (nothing needs to listen there).
    #[arg(long, default_value = "http://localhost:9401/callback")]
    pub redirect_uri: String,
    /// What to print: access_token, id_token, refresh_token or json.
    #[arg(long, default_value = "access_token")]
    pub print: String,
}

/// Runs the flow and returns what to print.
pub async fn run(args: &TokenArgs) -> anyhow::Result<String> {
    let http = headless::http_client()?;
    let request = TokenRequest {
        issuer: args.issuer.clone(),
        user: args.user.clone(),
        scope: args.scope.clone(),
        client_id: args.client_id.clone(),
        client_secret: args.client_secret.clone(),
        redirect_uri: args.redirect_uri.clone(),
        resource: Some(args.resource.clone()).filter(|r| !r.is_empty()),
        nonce: None,
    };
    let response = headless::fetch_token(&http, &request).await?;
    Ok(match args.print.as_str() {
        "access_token" => response.access_token,
        "id_token" => response
            .id_token
            .ok_or_else(|| anyhow::anyhow!("no id_token was issued (request the openid scope)"))?,
        "refresh_token" => response
            .refresh_token
            .ok_or_else(|| anyhow::anyhow!("no refresh_token was issued"))?,
        "json" => serde_json::to_string_pretty(&serde_json::json!({
            "access_token": response.access_token,
            "id_token": response.id_token,
            "refresh_token": response.refresh_token,
            "expires_in": response.expires_in,
            "scope": response.scope,
            "token_type": response.token_type,
        }))?,
        other => {
            anyhow::bail!("--print {other}: use access_token, id_token, refresh_token or json")
        }
    })
}
