//! Test fixtures: a small JWT issuer whose keys and behaviour the tests control, a probe MCP
//! server that records whether any request reached a tool, and helpers to run both on
//! loopback and talk to them with real HTTP clients.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_oidc::McpOidc;
use mcp_oidc::resource::ProtectedResource;
use mcp_oidc::token::TokenVerifier;
use mcp_oidc::{AccessToken, ToolPolicies, current_token};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::{ErrorData as McpError, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::{Value, json};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One RSA signing key with its public JWK.
pub struct RsaKey {
    pub kid: String,
    pair: RsaKeyPair,
    pub jwk: Value,
}

impl RsaKey {
    pub fn generate(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        let n = b64(public.modulus().big_endian_without_leading_zero());
        let e = b64(public.exponent().big_endian_without_leading_zero());
        let jwk = json!({"kty": "RSA", "n": n, "e": e, "kid": kid, "use": "sig", "alg": "RS256"});
        Self {
            kid: kid.to_owned(),
            pair,
            jwk,
        }
    }

    pub fn sign(&self, signing_input: &str) -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut sig)
            .unwrap();
        sig
    }

    /// The bytes an attacker would use as an HMAC key in an algorithm-confusion attack.
    pub fn public_material(&self) -> Vec<u8> {
        self.jwk.to_string().into_bytes()
    }
}

/// An EC P-256 key.
pub struct EcKey {
    pub kid: String,
    pair: EcdsaKeyPair,
    pub jwk: Value,
}

impl EcKey {
    pub fn generate(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                         "kid": kid, "use": "sig", "alg": "ES256"});
        Self {
            kid: kid.to_owned(),
            pair,
            jwk,
        }
    }

    pub fn sign(&self, signing_input: &str) -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&rng, signing_input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

/// Encodes a JWS from raw header and claims, signed by `sign`.
pub fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&str) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(&input);
    format!("{input}.{}", b64(&sig))
}

pub fn hmac_sha(alg: &str, key: &[u8], input: &str) -> Vec<u8> {
    let algorithm = match alg {
        "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
        "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
        _ => aws_lc_rs::hmac::HMAC_SHA512,
    };
    let key = aws_lc_rs::hmac::Key::new(algorithm, key);
    aws_lc_rs::hmac::sign(&key, input.as_bytes())
        .as_ref()
        .to_vec()
}

struct IssuerState {
    issuer: String,
    keys: std::sync::Mutex<Vec<Value>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    cache_control: String,
}

/// A JWT issuer on loopback: discovery + JWKS, with a switch to make it fail.
pub struct TestIssuer {
    pub url: String,
    pub rsa: RsaKey,
    pub ec: EcKey,
    state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestIssuer {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// `down`: start answering 503 on every endpoint.
    pub async fn start_with(down: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let rsa = RsaKey::generate("rsa-1");
        let ec = EcKey::generate("ec-1");
        let state = Arc::new(IssuerState {
            issuer: url.clone(),
            keys: std::sync::Mutex::new(vec![rsa.jwk.clone(), ec.jwk.clone()]),
            down: AtomicBool::new(down),
            jwks_fetches: AtomicUsize::new(0),
            cache_control: "max-age=300".into(),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            rsa,
            ec,
            state,
            task,
        }
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Publishes another key alongside the current ones.
    pub fn publish(&self, jwk: Value) {
        self.state.keys.lock().unwrap().push(jwk);
    }

    /// Withdraws the key `kid` from the key set (as after a key compromise).
    pub fn retire(&self, kid: &str) {
        self.state
            .keys
            .lock()
            .unwrap()
            .retain(|k| k["kid"].as_str() != Some(kid));
    }

    /// Standard claims for `sub`, audience `aud`, valid for an hour.
    pub fn claims(&self, sub: &str, aud: &str) -> Value {
        json!({
            "iss": self.url, "sub": sub, "aud": aud,
            "iat": now(), "exp": now() + 3600,
            "email": format!("{sub}@example.com"), "name": format!("User {sub}"),
            "scope": "openid profile email", "client_id": "test-client", "jti": format!("{}", now()),
        })
    }

    pub fn rs256(&self, claims: &Value) -> String {
        jws(
            &json!({"alg": "RS256", "typ": "at+jwt", "kid": self.rsa.kid}),
            claims,
            |i| self.rsa.sign(i),
        )
    }

    pub fn es256(&self, claims: &Value) -> String {
        jws(
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": self.ec.kid}),
            claims,
            |i| self.ec.sign(i),
        )
    }
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> impl IntoResponse {
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({
        "issuer": s.issuer,
        "jwks_uri": format!("{}/jwks", s.issuer),
        "authorization_endpoint": format!("{}/authorize", s.issuer),
        "token_endpoint": format!("{}/token", s.issuer),
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> impl IntoResponse {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = s.keys.lock().unwrap().clone();
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", s.cache_control.parse().unwrap());
    (headers, axum::Json(json!({ "keys": keys }))).into_response()
}

/// Arguments of `process_data`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct DataArgs {
    pub data: String,
}

/// An MCP server whose tools report the caller and count how often they ran.
#[derive(Clone)]
pub struct Probe {
    pub calls: Arc<AtomicUsize>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Probe {
    pub fn new(calls: Arc<AtomicUsize>) -> Self {
        Self {
            calls,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "The caller's claims")]
    async fn whoami(&self, Extension(token): Extension<AccessToken>) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        serde_json::to_string(token.claims()).unwrap()
    }

    #[tool(description = "Process data for the caller")]
    async fn process_data(
        &self,
        Parameters(args): Parameters<DataArgs>,
    ) -> Result<String, McpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = args.data;
        let token = current_token().ok_or_else(|| McpError::invalid_request("no caller", None))?;
        Ok(format!("Processing for user: {}", token.subject()))
    }

    #[tool(description = "Answers after `data` milliseconds, sending nothing meanwhile")]
    async fn slow(&self, Parameters(args): Parameters<DataArgs>) -> String {
        let ms = args.data.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.calls.fetch_add(1, Ordering::SeqCst);
        format!("slept {ms} ms")
    }

    #[tool(description = "Needs mcp:write")]
    async fn write_note(&self) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        "saved".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Probe {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

pub fn probe_policies() -> ToolPolicies {
    ToolPolicies::new().require_scopes("write_note", ["mcp:write"])
}

/// A protected probe server on loopback.
pub struct Served {
    pub base: String,
    pub mcp_url: String,
    pub calls: Arc<AtomicUsize>,
    /// How many handlers the factory has made (one per session, and one more for each
    /// session resumed after hibernation).
    pub handlers: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds a port, then builds the server with `configure` (given the resource for that
/// port) and serves it.
pub async fn serve_probe(
    verifier: impl FnOnce(&ProtectedResource) -> Arc<dyn TokenVerifier>,
    configure: impl FnOnce(McpOidc) -> McpOidc,
) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let mut resource = ProtectedResource::new(&base, "/mcp").unwrap();
    resource.scopes_supported = ["openid", "profile", "email"].into_iter().collect();
    // `authorization_servers` left empty: the server names the verifier's issuers itself.
    let v = verifier(&resource);
    let calls = Arc::new(AtomicUsize::new(0));
    let probe_calls = calls.clone();
    let handlers = Arc::new(AtomicUsize::new(0));
    let made = handlers.clone();
    let router = configure(McpOidc::with_arc(resource, v).tool_policies(probe_policies())).router(
        move || {
            made.fetch_add(1, Ordering::SeqCst);
            Probe::new(probe_calls.clone())
        },
    );
    let task = tokio::spawn(async move {
        let _ = mcp_oidc::serve(listener, router, std::future::pending()).await;
    });
    Served {
        mcp_url: format!("{base}/mcp"),
        base,
        calls,
        handlers,
        task,
    }
}

pub const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

pub fn call(tool: &str, args: Value) -> String {
    json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name": tool, "arguments": args}})
        .to_string()
}

/// A raw MCP POST with an optional Authorization header value.
pub async fn post(url: &str, authorization: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

/// Connects rmcp's streamable HTTP client with a bearer token.
pub async fn connect(
    url: &str,
    token: &str,
) -> Result<rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig>, anyhow::Error>
{
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned()),
    );
    Ok(rmcp::model::ClientConfig::default()
        .serve(transport)
        .await?)
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log lines written while a test runs. The subscriber is installed as the thread's
/// default; `#[tokio::test]` runs on a current-thread runtime, so the server, the verifier's
/// key refresher and the client all log into it.
pub struct CapturedLog {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    pub fn start() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        // Everything the library and rmcp say at any level, and the HTTP stack's info and up:
        // a token must not leak through a debug line either.
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,mcp_oidc=trace,rmcp=trace",
            ))
            .with_ansi(false)
            .with_writer(move || BufferWriter(sink.clone()))
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        let bytes = self.buffer.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The token with one character of its signature changed (well inside it: the last
/// character also carries padding bits).
pub fn corrupt_signature(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}
