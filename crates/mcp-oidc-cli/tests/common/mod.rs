//! Helpers shared by the end-to-end tests of the `mcp-oidc` binary and the proxy.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::PathBuf;

use mcp_oidc::types::PkceCodeVerifier;
use serde_json::Value;

/// The mock provider on a free port, with the user `testuser` (Test User).
pub async fn start_idp() -> mcp_oidc_mock::RunningMock {
    let claims = serde_json::json!({"email": "testuser@example.com", "name": "Test User"});
    let config = mcp_oidc_mock::MockConfig {
        users: vec![("testuser".into(), claims.as_object().unwrap().clone())],
        ..mcp_oidc_mock::MockConfig::default()
    };
    mcp_oidc_mock::MockProvider::new(config)
        .unwrap()
        .spawn("127.0.0.1:0")
        .await
        .unwrap()
}

/// A listener on a free loopback port, settings whose base URL and bind address are that
/// port (fill in the rest with `..at`), and the URL of the MCP endpoint there.
pub async fn on_free_port() -> (
    tokio::net::TcpListener,
    mcp_oidc_cli::config::Settings,
    String,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let at = mcp_oidc_cli::config::Settings {
        base_url: Some(format!("http://127.0.0.1:{port}")),
        bind: Some(format!("127.0.0.1:{port}")),
        ..mcp_oidc_cli::config::Settings::default()
    };
    (listener, at, format!("http://127.0.0.1:{port}/mcp"))
}

/// `mcp-oidc serve` with `settings` on `listener`, in the background until aborted.
pub fn serve_in_background(
    settings: mcp_oidc_cli::config::Settings,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(mcp_oidc_cli::run::serve_demo(
        settings.resolve().unwrap(),
        listener,
        std::future::pending(),
    ))
}

/// The `Retry-After` of `r`, in seconds.
pub fn retry_after_secs(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A port that was free a moment ago, for servers that must know their URL before binding.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python `oidc-provider-mock` (the reference provider), installed by
/// `scripts/setup-python-peers` or named by `OIDC_PROVIDER_MOCK`.
pub fn python_mock_program() -> PathBuf {
    let path = std::env::var_os("OIDC_PROVIDER_MOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/peers/venv/bin/oidc-provider-mock")
        });
    assert!(
        path.exists(),
        "the Python oidc-provider-mock was not found at {}: run scripts/setup-python-peers",
        path.display()
    );
    path
}

/// A PKCE pair (RFC 7636, S256).
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

/// A fresh PKCE pair.
pub fn pkce() -> Pkce {
    let verifier = PkceCodeVerifier::new_random();
    Pkce {
        challenge: verifier.challenge_s256().into_inner(),
        verifier: verifier.secret().to_owned(),
    }
}

/// The `name=value` part of a response's `Set-Cookie`, ready to send back as `Cookie`.
pub fn first_cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The value of the hidden form field `name` on the consent page.
pub fn form_field(html: &str, name: &str) -> String {
    let marker = format!("name={name} value=\"");
    let i = html.find(&marker).unwrap() + marker.len();
    html[i..].split('"').next().unwrap().to_owned()
}

/// The redirect URI the tests' OAuth clients register.
pub const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// `{base}/authorize` for a client using PKCE (S256), the usual OpenID scopes and the MCP
/// endpoint `{base}/mcp` as the resource.
pub fn authorize_url(base: &str, client_id: &str, challenge: &str) -> String {
    let mut url = url::Url::parse(&format!("{base}/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "client-state")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("scope", "openid profile email")
        .append_pair("resource", &format!("{base}/mcp"));
    url.to_string()
}

/// A form POST to `{base}/token`: the status and the JSON body (`Null` if there is none).
/// Every answer of a token endpoint must say `Cache-Control: no-store` (RFC 6749 §5.1).
pub async fn token_request(base: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The HTTP status of an MCP `initialize` sent to `mcp` with this bearer token, or 0 when
/// the server cannot be reached (the restart tests call servers that are being killed).
pub async fn mcp_status(mcp: &str, token: &str) -> u16 {
    initialize(mcp, token)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// An MCP `initialize` sent to `mcp` with this bearer token.
pub async fn initialize(mcp: &str, token: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(mcp)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
}
