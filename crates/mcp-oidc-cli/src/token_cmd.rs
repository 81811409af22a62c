//! `mcp-oidc token`: a token for scripts, obtained through the real authorization-code +
//! PKCE flow (no back door), as an MCP client would: resource metadata, authorization
//! server discovery, dynamic registration, sign-in (consent and login pages answered by a
//! scripted browser), code exchange.

use mcp_oidc::types::PkceCodeVerifier;
use serde_json::Value;

use crate::browser::{Browser, Person};

/// Options of `mcp-oidc token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The user to sign in as.
    #[arg(long, default_value = "testuser")]
    pub user: String,
    /// Scopes to request.
    #[arg(long, default_value = "openid profile email")]
    pub scope: String,
    /// The MCP server the token is for; its metadata names the authorization server.
    #[arg(
        long,
        env = "MCP_OIDC_TOKEN_SERVER",
        default_value = "http://localhost:8000/mcp"
    )]
    pub server: String,
    /// Use this authorization server instead of the one the server's metadata names.
    #[arg(long, env = "MCP_OIDC_TOKEN_ISSUER")]
    pub issuer: Option<String>,
    /// The RFC 8707 resource to ask for [default: the server URL].
    #[arg(long)]
    pub resource: Option<String>,
    /// An existing client id (otherwise the client registers itself, if the server allows).
    #[arg(long)]
    pub client_id: Option<String>,
    /// The client secret (confidential clients).
    #[arg(long, env = "MCP_OIDC_TOKEN_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// The redirect URI (nothing needs to listen there: the flow stops at it).
    #[arg(long, default_value = "http://127.0.0.1:8976/callback")]
    pub redirect_uri: String,
    /// What to print: access_token, id_token, refresh_token or json.
    #[arg(long, default_value = "access_token")]
    pub print: String,
}

/// The authorization server named by `server`'s protected-resource metadata.
async fn authorization_server(http: &reqwest::Client, server: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(server)?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    for candidate in [
        format!("{origin}/.well-known/oauth-protected-resource{path}"),
        format!("{origin}/.well-known/oauth-protected-resource"),
    ] {
        let response = http.get(&candidate).send().await?;
        if response.status().is_success() {
            let doc: Value = response.json().await?;
            if let Some(first) = doc["authorization_servers"].get(0).and_then(Value::as_str) {
                return Ok(first.to_owned());
            }
        }
    }
    anyhow::bail!(
        "{server} publishes no protected-resource metadata naming an authorization server; pass --issuer"
    )
}

/// Runs the flow; returns the token response.
pub async fn obtain(args: &TokenArgs) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(15))
        .build()?;
    let issuer = match &args.issuer {
        Some(i) => i.clone(),
        None => authorization_server(&http, &args.server).await?,
    };
    let meta = mcp_oidc::token::discover(&http, &issuer)
        .await
        .map_err(|e| anyhow::anyhow!("authorization server discovery failed: {e}"))?;
    let authorize = meta
        .authorization_endpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the authorization server has no authorization_endpoint"))?;
    let token_endpoint = meta
        .token_endpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the authorization server has no token_endpoint"))?;
    let resource = args.resource.clone().unwrap_or_else(|| args.server.clone());

    let client_id = match (
        &args.client_id,
        meta.document
            .get("registration_endpoint")
            .and_then(Value::as_str),
    ) {
        (Some(id), _) => id.clone(),
        (None, Some(endpoint)) => {
            let response = http
                .post(endpoint)
                .json(&serde_json::json!({
                    "client_name": "mcp-oidc token",
                    "redirect_uris": [args.redirect_uri],
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                }))
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                anyhow::bail!("client registration refused ({status}): {body}");
            }
            body["client_id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("registration answered no client_id"))?
                .to_owned()
        }
        (None, None) => "mcp-oidc-cli".to_owned(),
    };

    let verifier = PkceCodeVerifier::new_random();
    let state = uuid::Uuid::new_v4().simple().to_string();
    let mut url = url::Url::parse(&authorize)?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &args.redirect_uri)
        .append_pair("scope", &args.scope)
        .append_pair("state", &state)
        .append_pair("code_challenge", verifier.challenge_s256().as_str())
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", &resource);
    let mut browser = Browser::new();
    let person = Person {
        user: args.user.clone(),
        approve: true,
        remember: false,
    };
    let back = browser
        .sign_in(url.as_str(), &args.redirect_uri, &person)
        .await?;
    if let Some(error) = back.params.get("error") {
        anyhow::bail!(
            "the sign-in failed: {error}: {}",
            back.params
                .get("error_description")
                .map(String::as_str)
                .unwrap_or("")
        );
    }
    if back.params.get("state") != Some(&state) {
        anyhow::bail!("the authorization response's state does not match");
    }
    if let Some(iss) = back.params.get("iss")
        && iss.trim_end_matches('/') != meta.issuer.trim_end_matches('/')
    {
        anyhow::bail!(
            "the authorization response names issuer {iss}, not {}",
            meta.issuer
        );
    }
    let code = back
        .params
        .get("code")
        .ok_or_else(|| anyhow::anyhow!("the authorization response has no code"))?;
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.clone()),
        ("redirect_uri", args.redirect_uri.clone()),
        ("code_verifier", verifier.secret().to_owned()),
        ("resource", resource),
    ];
    let mut request = http.post(&token_endpoint);
    match &args.client_secret {
        Some(secret) => request = request.basic_auth(&client_id, Some(secret)),
        None => form.push(("client_id", client_id.clone())),
    }
    let response = request.form(&form).send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        anyhow::bail!("the token request was refused ({status}): {body}");
    }
    Ok(body)
}

/// Runs the flow and returns what to print.
pub async fn run(args: &TokenArgs) -> anyhow::Result<String> {
    let body = obtain(args).await?;
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("the token response has no {name}"))
    };
    match args.print.as_str() {
        "access_token" => field("access_token"),
        "id_token" => field("id_token"),
        "refresh_token" => field("refresh_token"),
        "json" => Ok(serde_json::to_string_pretty(&body)?),
        other => {
            anyhow::bail!("--print {other}: use access_token, id_token, refresh_token or json")
        }
    }
}
