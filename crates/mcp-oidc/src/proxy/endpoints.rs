//! The proxy's HTTP endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, RawForm, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, COOKIE, LOCATION, PRAGMA, SET_COOKIE, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tower_http::cors::{Any, CorsLayer};

use super::crypto::{hash, pkce_challenge, random_token, same};
use super::pages::{ConsentView, consent_page, error_page};
use super::records::{
    self, ClientRecord, CodeRecord, Grant, RefreshRecord, Transaction, UpstreamTokens, UsedRefresh,
};
use super::upstream::UpstreamError;
use super::{Inner, claims_from_upstream, seal_upstream};
use crate::error::{InvalidToken, Unavailable, VerifyError};
use crate::store::{Namespace, StoreError, now_ms};
use crate::token::{TokenVerifier, unix_now};

const TRANSACTION_TTL: Duration = Duration::from_secs(600);
const CODE_TTL: Duration = Duration::from_secs(300);
const MAX_FORM_BYTES: usize = 16 * 1024;
const CONSENT_COOKIE: &str = "mcp_oidc_consent";
const REMEMBER_COOKIE: &str = "mcp_oidc_remember";

type Shared = Arc<Inner>;

pub(super) fn router(inner: Shared) -> Router {
    let p = inner.prefix.clone();
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([http::Method::GET, http::Method::POST, http::Method::OPTIONS])
        .allow_headers(Any);
    // Public, browser-callable endpoints (discovery, registration, token, revocation) get
    // CORS; the pages a person sees (authorize, consent, callback) do not need it.
    use crate::limit::RateLimitLayer;
    let c = &inner.config;
    let api = Router::new()
        .route(
            &format!("/.well-known/oauth-authorization-server{p}"),
            get(metadata),
        )
        .route(
            &format!("/.well-known/openid-configuration{p}"),
            get(metadata),
        )
        .route(&format!("{p}/jwks"), get(jwks))
        .route(
            &format!("{p}/register"),
            post(register).layer(RateLimitLayer::new(c.register_limit)),
        )
        .route(
            &format!("{p}/token"),
            post(token).layer(RateLimitLayer::new(c.token_limit)),
        )
        .route(
            &format!("{p}/revoke"),
            post(revoke).layer(RateLimitLayer::new(c.token_limit)),
        )
        .layer(cors);
    let api = if p.is_empty() {
        api
    } else {
        api.route(
            &format!("{p}/.well-known/openid-configuration"),
            get(metadata),
        )
    };
    let pages = RateLimitLayer::new(c.authorize_limit);
    Router::new()
        .route(
            &format!("{p}/authorize"),
            get(authorize).layer(pages.clone()),
        )
        .route(&format!("{p}/consent"), post(consent).layer(pages))
        .route(&format!("{p}/auth/callback"), get(callback))
        .merge(api)
        .with_state(inner)
}

// ---------------------------------------------------------------------------------------
// Errors

/// An RFC 6749 §5.2 error from the token, registration or revocation endpoint.
pub(crate) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    basic_challenge: bool,
}

impl OAuthError {
    /// The RFC 6749 / RFC 7591 error code.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }
    fn bad(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }
    fn grant(description: impl Into<String>) -> Self {
        Self::bad("invalid_grant", description)
    }
    fn store(e: StoreError) -> Self {
        tracing::error!(error = %e, "proxy storage failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "storage is unavailable; try again",
        )
    }
    fn upstream(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unavailable(d) => {
                tracing::warn!(error = %d, "upstream provider unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the identity provider is unavailable; try again",
                )
            }
            other => {
                tracing::info!(error = %other, "upstream provider refused a refresh");
                Self::grant("the identity provider no longer accepts this sign-in; sign in again")
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "error_description": self.description});
        let mut response = (self.status, axum::Json(body)).into_response();
        let h = response.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        if self.basic_challenge {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mcp-oidc\""),
            );
        }
        response
    }
}

/// The page shown when the store fails during a person's sign-in.
fn storage_page(e: &StoreError) -> Response {
    tracing::error!(error = %e, "proxy storage failure");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "Storage is unavailable; try again.",
    )
}

/// Redirects to the client with an authorization error (RFC 6749 §4.1.2.1), `iss` included
/// (RFC 9207). Only used once the redirect URI is known to be the client's.
fn redirect_error(
    inner: &Inner,
    redirect_uri: &str,
    state: Option<&str>,
    code: &str,
    description: &str,
) -> Response {
    let mut params = vec![("error", code), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", &inner.config.issuer));
    redirect_with(redirect_uri, &params)
}

fn redirect_with(base: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(base) {
        Ok(u) => u,
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid redirect",
                "the redirect URI is not a URL",
            );
        }
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    redirect(url.as_str())
}

fn redirect(location: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn no_store_json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(OAuthError::bad("invalid_request", "request body too large"));
    }
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            // RFC 6749 §3.1: parameters must not be included more than once.
            return Err(OAuthError::bad(
                "invalid_request",
                "a parameter is repeated",
            ));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Discovery

async fn metadata(State(inner): State<Shared>) -> Response {
    let i = &inner.config.issuer;
    let mut doc = json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "registration_endpoint": format!("{i}/register"),
        "revocation_endpoint": format!("{i}/revoke"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": inner.config.scopes_supported,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": inner.cimd.is_some(),
        "subject_types_supported": ["public"],
    });
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("protected_resources".into(), json!([inner.config.resource]));
    }
    let mut response = axum::Json(doc).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

async fn jwks(State(inner): State<Shared>) -> Response {
    let mut response = axum::Json(inner.signing.jwks()).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

// ---------------------------------------------------------------------------------------
// Clients

async fn find_client(inner: &Inner, client_id: &str) -> Result<Option<ClientRecord>, Response> {
    if let Some(c) = inner
        .config
        .clients
        .iter()
        .find(|c| c.client_id == client_id)
    {
        return Ok(Some(ClientRecord {
            client_id: c.client_id.clone(),
            secret_hash: c.client_secret.as_ref().map(|s| hash(s.secret())),
            redirect_uris: c.redirect_uris.clone(),
            client_name: c.name.clone(),
            client_uri: None,
            token_endpoint_auth_method: if c.client_secret.is_some() {
                "client_secret_basic"
            } else {
                "none"
            }
            .into(),
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scope: None,
            issued_at: 0,
            kind: "preregistered".into(),
        }));
    }
    if client_id.starts_with("https://") || client_id.starts_with("http://") {
        let Some(fetcher) = &inner.cimd else {
            return Ok(None);
        };
        return match fetcher.fetch(client_id).await {
            Ok(doc) => {
                if doc
                    .token_endpoint_auth_method
                    .as_deref()
                    .is_some_and(|m| m != "none")
                {
                    // Clients identified by a document must be public here: this server
                    // implements no private_key_jwt client authentication yet.
                    return Err(error_page(
                        StatusCode::BAD_REQUEST,
                        "Client refused",
                        "this server accepts metadata-document clients only with token_endpoint_auth_method \"none\"",
                    ));
                }
                for uri in &doc.redirect_uris {
                    if let Err(e) = inner.config.redirect_policy.check_registration(uri) {
                        return Err(error_page(
                            StatusCode::BAD_REQUEST,
                            "Client refused",
                            &e.to_string(),
                        ));
                    }
                }
                Ok(Some(ClientRecord {
                    client_id: doc.client_id.clone(),
                    secret_hash: None,
                    redirect_uris: doc.redirect_uris.clone(),
                    client_name: doc.client_name.clone(),
                    client_uri: None,
                    token_endpoint_auth_method: "none".into(),
                    grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                    scope: None,
                    issued_at: 0,
                    kind: "metadata-document".into(),
                }))
            }
            Err(e) => {
                tracing::info!(error = %e, "client metadata document refused");
                Err(error_page(
                    StatusCode::BAD_REQUEST,
                    "Client refused",
                    &e.to_string(),
                ))
            }
        };
    }
    records::load(inner.store.as_ref(), Namespace::Clients, client_id)
        .await
        .map_err(|e| storage_page(&e))
}

async fn register(State(inner): State<Shared>, body: axum::body::Bytes) -> Response {
    match register_client(&inner, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A validated RFC 7591 registration request.
pub(crate) struct Registration {
    redirect_uris: Vec<String>,
    method: String,
    grant_types: Vec<String>,
    client_name: Option<String>,
    client_uri: Option<String>,
    scope: Option<String>,
}

impl Registration {
    /// How many redirect URIs were accepted.
    pub(crate) fn redirect_uri_count(&self) -> usize {
        self.redirect_uris.len()
    }
}

/// Validates a registration request body. No side effects, so it can be fuzzed alone.
pub(crate) fn parse_registration(
    policy: &super::RedirectPolicy,
    body: &[u8],
) -> Result<Registration, OAuthError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(OAuthError::bad(
            "invalid_client_metadata",
            "the registration request is too large",
        ));
    }
    let meta: Map<String, Value> = serde_json::from_slice(body).map_err(|_| {
        OAuthError::bad("invalid_client_metadata", "the body must be a JSON object")
    })?;
    let text = |k: &str, max: usize| -> Result<Option<String>, OAuthError> {
        match meta.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s))
                if s.chars().count() <= max && !s.chars().any(char::is_control) =>
            {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(OAuthError::bad(
                "invalid_client_metadata",
                format!("`{k}` must be a string of at most {max} characters"),
            )),
        }
    };
    let redirect_uris: Vec<String> = match meta.get("redirect_uris") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 20 => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                OAuthError::bad("invalid_redirect_uri", "`redirect_uris` must be strings")
            })?,
        _ => {
            return Err(OAuthError::bad(
                "invalid_redirect_uri",
                "`redirect_uris` must be a non-empty array (at most 20)",
            ));
        }
    };
    for uri in &redirect_uris {
        policy
            .check_registration(uri)
            .map_err(|e| OAuthError::bad("invalid_redirect_uri", e.to_string()))?;
    }
    let method =
        text("token_endpoint_auth_method", 64)?.unwrap_or_else(|| "client_secret_basic".into());
    if !matches!(
        method.as_str(),
        "none" | "client_secret_basic" | "client_secret_post"
    ) {
        return Err(OAuthError::bad(
            "invalid_client_metadata",
            "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
        ));
    }
    let grant_types: Vec<String> = match meta.get("grant_types") {
        None | Some(Value::Null) => vec!["authorization_code".into(), "refresh_token".into()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(_) => {
            return Err(OAuthError::bad(
                "invalid_client_metadata",
                "`grant_types` must be an array",
            ));
        }
    };
    if grant_types
        .iter()
        .any(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(OAuthError::bad(
            "invalid_client_metadata",
            "only the authorization_code and refresh_token grants are supported",
        ));
    }
    if let Some(Value::Array(rt)) = meta.get("response_types")
        && rt.iter().any(|r| r.as_str() != Some("code"))
    {
        return Err(OAuthError::bad(
            "invalid_client_metadata",
            "only the `code` response type is supported",
        ));
    }
    let client_name = text("client_name", 200)?;
    let client_uri = text("client_uri", 2048)?;
    let scope = text("scope", 1024)?;
    Ok(Registration {
        redirect_uris,
        method,
        grant_types,
        client_name,
        client_uri,
        scope,
    })
}

async fn register_client(inner: &Inner, body: &[u8]) -> Result<Response, OAuthError> {
    let Registration {
        redirect_uris,
        method,
        grant_types,
        client_name,
        client_uri,
        scope,
    } = parse_registration(&inner.config.redirect_policy, body)?;
    let client_id = random_token(18);
    let secret = (method != "none").then(|| random_token(32));
    let record = ClientRecord {
        client_id: client_id.clone(),
        secret_hash: secret.as_deref().map(hash),
        redirect_uris: redirect_uris.clone(),
        client_name: client_name.clone(),
        client_uri: client_uri.clone(),
        token_endpoint_auth_method: method.clone(),
        grant_types: grant_types.clone(),
        scope: scope.clone(),
        issued_at: unix_now(),
        kind: "dcr".into(),
    };
    records::save(
        inner.store.as_ref(),
        Namespace::Clients,
        &client_id,
        &record,
        None,
    )
    .await
    .map_err(OAuthError::store)?;
    tracing::info!(client_id = %client_id, name = ?client_name, auth = %method, "client registered");
    let mut out = json!({
        "client_id": client_id,
        "client_id_issued_at": record.issued_at,
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": method,
        "grant_types": grant_types,
        "response_types": ["code"],
    });
    if let Some(obj) = out.as_object_mut() {
        if let Some(s) = secret {
            obj.insert("client_secret".into(), json!(s));
            obj.insert("client_secret_expires_at".into(), json!(0));
        }
        for (k, v) in [
            ("client_name", client_name),
            ("client_uri", client_uri),
            ("scope", scope),
        ] {
            if let Some(v) = v {
                obj.insert(k.into(), json!(v));
            }
        }
    }
    Ok(no_store_json(StatusCode::CREATED, &out))
}

/// Authenticates the client at the token and revocation endpoints.
async fn authenticate_client(
    inner: &Inner,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<ClientRecord, OAuthError> {
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .map(|b| {
            let decoded = STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            decoded.and_then(|d| {
                d.split_once(':').map(|(id, secret)| {
                    let dec = |s: &str| {
                        url::form_urlencoded::parse(format!("x={s}").as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default()
                    };
                    (dec(id), dec(secret))
                })
            })
        });
    let invalid = |basic: bool| {
        let mut e = OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        e.basic_challenge = basic;
        e
    };
    let (client_id, secret, used_basic) = match basic {
        Some(Some((id, secret))) => {
            if form.get("client_id").is_some_and(|f| f != &id) {
                return Err(OAuthError::bad(
                    "invalid_request",
                    "client_id differs from the authenticated client",
                ));
            }
            (id, Some(secret), true)
        }
        Some(None) => return Err(invalid(true)),
        None => {
            let id = form
                .get("client_id")
                .cloned()
                .ok_or_else(|| OAuthError::bad("invalid_request", "client_id is required"))?;
            (id, form.get("client_secret").cloned(), false)
        }
    };
    let client = match find_client(inner, &client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(invalid(used_basic)),
        Err(_) => return Err(invalid(used_basic)),
    };
    match (&client.secret_hash, secret) {
        (Some(expected), Some(given)) if same(expected, &hash(&given)) => Ok(client),
        (None, None) => Ok(client),
        (None, Some(s)) if s.is_empty() => Ok(client),
        _ => Err(invalid(used_basic)),
    }
}

// ---------------------------------------------------------------------------------------
// Authorization: /authorize → consent → upstream → /auth/callback → client

fn normalise_resource(r: &str) -> Option<String> {
    let url = url::Url::parse(r).ok()?;
    if url.fragment().is_some() {
        return None;
    }
    Some(url.as_str().trim_end_matches('/').to_owned())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure(inner: &Inner) -> bool {
    inner.config.issuer.starts_with("https://")
}

fn cookie_name(inner: &Inner, base: &str) -> String {
    // `__Host-` cookies must be Secure, so they exist only on https deployments.
    if secure(inner) {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

fn set_cookie(inner: &Inner, response: &mut Response, base: &str, value: &str, max_age: Duration) {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        cookie_name(inner, base),
        max_age.as_secs()
    );
    if secure(inner) {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        response.headers_mut().append(SET_COOKIE, v);
    }
}

async fn authorize(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "client_id is missing.",
        );
    };
    let client = match find_client(&inner, client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Unknown client",
                "This client is not registered with this server.",
            );
        }
        Err(page) => return page,
    };
    let (redirect_uri, given) = match get("redirect_uri") {
        Some(r) if super::RedirectPolicy::matches(&client.redirect_uris, r) => (r.to_owned(), true),
        Some(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid redirect URI",
                "The redirect URI is not registered for this client; it will not be followed.",
            );
        }
        None if client.redirect_uris.len() == 1 => (client.redirect_uris[0].clone(), false),
        None => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "redirect_uri is missing.",
            );
        }
    };
    let state = get("state");
    let fail = |code: &str, d: &str| redirect_error(&inner, &redirect_uri, state, code, d);
    if get("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = get("code_challenge") else {
        return fail(
            "invalid_request",
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        );
    };
    if get("code_challenge_method") != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail("invalid_request", "code_challenge is not an S256 challenge");
    }
    let resource = match get("resource") {
        None => inner.config.resource.clone(),
        Some(r) => match normalise_resource(r) {
            Some(r) if r == inner.config.resource => r,
            _ => {
                return fail(
                    "invalid_target",
                    "this server issues tokens only for its own resource",
                );
            }
        },
    };
    let requested: Vec<String> = get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let scopes: Vec<String> = if requested.is_empty() {
        inner.config.default_scopes.clone()
    } else {
        let mut s: Vec<String> = requested
            .into_iter()
            .filter(|x| inner.config.scopes_supported.contains(x))
            .collect();
        s.dedup();
        s
    };
    if scopes.is_empty() {
        return fail("invalid_scope", "none of the requested scopes is available");
    }
    let tx = Transaction {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_given: given,
        state: state.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        scopes: scopes.clone(),
        resource: resource.clone(),
        csrf: random_token(24),
        upstream_verifier: None,
        upstream_nonce: None,
        browser_binding: None,
        remember: false,
    };
    let txn_id = random_token(24);

    // A decision the person asked us to remember for this client skips the page.
    if inner.config.remember_consent
        && let Some(sub) = cookie(&headers, &cookie_name(&inner, REMEMBER_COOKIE))
            .and_then(|c| inner.secrets.verify_cookie(c))
    {
        let key = format!("{sub}\u{0}{}", client.client_id);
        if let Ok(Some(granted)) =
            records::load::<Vec<String>>(inner.store.as_ref(), Namespace::Consents, &key).await
            && scopes.iter().all(|s| granted.contains(s))
        {
            return start_upstream(&inner, tx).await;
        }
    }

    if let Err(e) = records::save(
        inner.store.as_ref(),
        Namespace::Transactions,
        &txn_id,
        &tx,
        Some(TRANSACTION_TTL),
    )
    .await
    {
        return storage_page(&e);
    }
    let host = url::Url::parse(&redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| redirect_uri.clone());
    let mut page = consent_page(&ConsentView {
        client_name: client.client_name.as_deref().unwrap_or("An unnamed client"),
        client_id: &client.client_id,
        redirect_host: &host,
        verified_by_document: client.kind == "metadata-document",
        scopes: &scopes,
        resource: &resource,
        transaction: &txn_id,
        csrf: &tx.csrf,
        action: &format!("{}/consent", inner.prefix),
        offer_remember: inner.config.remember_consent,
    });
    // Double submit: the form's token must match this cookie and the transaction.
    set_cookie(
        &inner,
        &mut page,
        CONSENT_COOKIE,
        &inner.secrets.sign_cookie(&tx.csrf),
        TRANSACTION_TTL,
    );
    page
}

async fn consent(
    State(inner): State<Shared>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let Ok(form) = parse_form(&body) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The consent form is malformed.",
        );
    };
    let (Some(txn_id), Some(csrf)) = (form.get("transaction"), form.get("csrf_token")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The consent form is incomplete.",
        );
    };
    let cookie_ok = cookie(&headers, &cookie_name(&inner, CONSENT_COOKIE))
        .and_then(|c| inner.secrets.verify_cookie(c))
        .is_some_and(|v| same(v, csrf));
    let tx: Option<Transaction> =
        match records::take(inner.store.as_ref(), Namespace::Transactions, txn_id).await {
            Ok(t) => t,
            Err(e) => {
                return storage_page(&e);
            }
        };
    let Some(mut tx) = tx else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Expired",
            "This sign-in has expired or was already used. Start again from your MCP client.",
        );
    };
    if !cookie_ok || !same(&tx.csrf, csrf) {
        tracing::warn!(client_id = %tx.client_id, "consent refused: CSRF token mismatch");
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "The consent could not be verified (CSRF check failed). Start again from your MCP client.",
        );
    }
    if form.get("decision").map(String::as_str) != Some("approve") {
        tracing::info!(client_id = %tx.client_id, "consent denied");
        return redirect_error(
            &inner,
            &tx.redirect_uri,
            tx.state.as_deref(),
            "access_denied",
            "the user denied the request",
        );
    }
    tx.remember = inner.config.remember_consent && form.contains_key("remember");
    start_upstream(&inner, tx).await
}

/// Sends the browser to the upstream provider, with our own PKCE pair and a state that is
/// single-use, expires in 10 minutes, and is bound to this browser by a signed cookie.
async fn start_upstream(inner: &Inner, mut tx: Transaction) -> Response {
    let verifier = random_token(48);
    let nonce = random_token(24);
    let upstream_state = random_token(32);
    let binding = random_token(24);
    tx.upstream_verifier = Some(verifier.clone());
    tx.upstream_nonce = Some(nonce.clone());
    tx.browser_binding = Some(binding.clone());
    if let Err(e) = records::save(
        inner.store.as_ref(),
        Namespace::Transactions,
        &hash(&upstream_state),
        &tx,
        Some(TRANSACTION_TTL),
    )
    .await
    {
        return storage_page(&e);
    }
    let callback = format!("{}/auth/callback", inner.config.issuer);
    match inner
        .upstream
        .authorize_url(
            &callback,
            &upstream_state,
            &pkce_challenge(&verifier),
            &nonce,
        )
        .await
    {
        Ok(url) => {
            let mut response = redirect(&url);
            set_cookie(
                inner,
                &mut response,
                CONSENT_COOKIE,
                &inner.secrets.sign_cookie(&binding),
                TRANSACTION_TTL,
            );
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the upstream sign-in");
            redirect_error(
                inner,
                &tx.redirect_uri,
                tx.state.as_deref(),
                "temporarily_unavailable",
                "the identity provider is unavailable",
            )
        }
    }
}

async fn callback(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(state) = q.get("state") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid callback",
            "The identity provider's answer has no state.",
        );
    };
    let tx: Option<Transaction> =
        match records::take(inner.store.as_ref(), Namespace::Transactions, &hash(state)).await {
            Ok(t) => t,
            Err(e) => {
                return storage_page(&e);
            }
        };
    let Some(tx) = tx.filter(|t| t.upstream_verifier.is_some()) else {
        tracing::warn!("callback with an unknown, expired or reused state");
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid callback",
            "This sign-in is unknown, expired or was already completed. Start again from your MCP client.",
        );
    };
    let bound = cookie(&headers, &cookie_name(&inner, CONSENT_COOKIE))
        .and_then(|c| inner.secrets.verify_cookie(c))
        .zip(tx.browser_binding.as_deref())
        .is_some_and(|(a, b)| same(a, b));
    if !bound {
        tracing::warn!(client_id = %tx.client_id, "callback from a browser that did not give consent");
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This sign-in was started in another browser. Start again from your MCP client.",
        );
    }
    let client_state = tx.state.as_deref();
    // RFC 9207: a response carrying another issuer's name is a mix-up attack.
    if let Some(iss) = q.get("iss") {
        match inner.upstream.issuer().await {
            Ok(expected) if iss.trim_end_matches('/') == expected.trim_end_matches('/') => {}
            _ => {
                tracing::warn!(client_id = %tx.client_id, "callback iss does not name the upstream provider (mix-up)");
                return redirect_error(
                    &inner,
                    &tx.redirect_uri,
                    client_state,
                    "access_denied",
                    "the identity provider's response failed the issuer check",
                );
            }
        }
    } else if inner.upstream.sends_iss().await {
        return redirect_error(
            &inner,
            &tx.redirect_uri,
            client_state,
            "access_denied",
            "the identity provider's response lacks its issuer",
        );
    }
    if let Some(err) = q.get("error") {
        let code = match err.as_str() {
            "access_denied"
            | "temporarily_unavailable"
            | "server_error"
            | "login_required"
            | "consent_required"
            | "interaction_required" => err.as_str(),
            _ => "access_denied",
        };
        return redirect_error(
            &inner,
            &tx.redirect_uri,
            client_state,
            code,
            "the sign-in at the identity provider did not complete",
        );
    }
    let Some(code) = q.get("code") else {
        return redirect_error(
            &inner,
            &tx.redirect_uri,
            client_state,
            "server_error",
            "the identity provider returned no code",
        );
    };
    let callback_uri = format!("{}/auth/callback", inner.config.issuer);
    let verifier = tx.upstream_verifier.clone().unwrap_or_default();
    let tokens = match inner
        .upstream
        .exchange_code(code, &callback_uri, &verifier)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "upstream code exchange failed");
            return redirect_error(
                &inner,
                &tx.redirect_uri,
                client_state,
                "server_error",
                "the identity provider did not complete the sign-in",
            );
        }
    };
    let mut claims = Map::new();
    if let Some(id_token) = &tokens.id_token {
        match inner
            .upstream
            .verify_id_token(id_token, tx.upstream_nonce.as_deref())
            .await
        {
            Ok(c) => claims = c,
            Err(e) => {
                tracing::warn!(error = %e, "upstream ID token refused");
                return redirect_error(
                    &inner,
                    &tx.redirect_uri,
                    client_state,
                    "server_error",
                    "the identity provider's ID token is invalid",
                );
            }
        }
    }
    if tokens.id_token.is_none() || inner.upstream.config.use_userinfo {
        match inner.upstream.userinfo(&tokens.access_token).await {
            Ok(info) => {
                if let (Some(a), Some(b)) = (claims.get("sub"), info.get("sub"))
                    && a != b
                {
                    return redirect_error(
                        &inner,
                        &tx.redirect_uri,
                        client_state,
                        "server_error",
                        "the identity provider's answers disagree",
                    );
                }
                for (k, v) in info {
                    claims.entry(k).or_insert(v);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream userinfo failed");
                return redirect_error(
                    &inner,
                    &tx.redirect_uri,
                    client_state,
                    "server_error",
                    "the identity provider did not say who signed in",
                );
            }
        }
    }
    if !claims.contains_key("sub")
        && let Some(id) = inner
            .upstream
            .config
            .subject_claim
            .as_deref()
            .and_then(|k| claims.get(k))
    {
        // A plain OAuth provider's user id (a number at GitHub) becomes the subject.
        let sub = match id {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(sub) = sub {
            claims.insert("sub".into(), Value::String(sub));
        }
    }
    let Some(subject) = claims.get("sub").and_then(Value::as_str).map(str::to_owned) else {
        return redirect_error(
            &inner,
            &tx.redirect_uri,
            client_state,
            "server_error",
            "the identity provider did not say who signed in",
        );
    };
    let grant_id = random_token(18);
    let upstream = UpstreamTokens {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        id_token: tokens.id_token,
        expires_at: tokens.expires_in.map(|e| unix_now() + e),
    };
    let mut kept = claims_from_upstream(&claims);
    if let Ok(iss) = inner.upstream.issuer().await {
        kept.insert("upstream_iss".into(), json!(iss));
    }
    let grant = Grant {
        grant_id: grant_id.clone(),
        client_id: tx.client_id.clone(),
        subject: subject.clone(),
        scopes: tx.scopes.clone(),
        resource: tx.resource.clone(),
        claims: kept,
        upstream_sealed: seal_upstream(&inner.secrets, &grant_id, &upstream),
        revoked: false,
        created_at: unix_now(),
    };
    let our_code = random_token(32);
    let code_record = CodeRecord {
        grant_id: grant_id.clone(),
        client_id: tx.client_id.clone(),
        redirect_uri: tx.redirect_uri.clone(),
        redirect_uri_given: tx.redirect_uri_given,
        code_challenge: tx.code_challenge.clone(),
        resource: tx.resource.clone(),
        scopes: tx.scopes.clone(),
    };
    let store = inner.store.as_ref();
    let saved = async {
        records::save(
            store,
            Namespace::Grants,
            &grant_id,
            &grant,
            Some(inner.config.refresh_token_ttl),
        )
        .await?;
        records::save(
            store,
            Namespace::Codes,
            &hash(&our_code),
            &code_record,
            Some(CODE_TTL),
        )
        .await?;
        if tx.remember {
            let key = format!("{subject}\u{0}{}", tx.client_id);
            records::save(
                store,
                Namespace::Consents,
                &key,
                &tx.scopes,
                Some(inner.config.consent_ttl),
            )
            .await?;
        }
        Ok::<(), StoreError>(())
    };
    if let Err(e) = saved.await {
        tracing::error!(error = %e, "proxy storage failure");
        return redirect_error(
            &inner,
            &tx.redirect_uri,
            client_state,
            "temporarily_unavailable",
            "storage is unavailable",
        );
    }
    tracing::info!(client_id = %tx.client_id, subject = %subject, "authorization granted");
    let mut params = vec![("code", our_code.as_str())];
    if let Some(s) = client_state {
        params.push(("state", s));
    }
    params.push(("iss", inner.config.issuer.as_str()));
    let mut response = redirect_with(&tx.redirect_uri, &params);
    if tx.remember {
        set_cookie(
            &inner,
            &mut response,
            REMEMBER_COOKIE,
            &inner.secrets.sign_cookie(&subject),
            inner.config.consent_ttl,
        );
    }
    response
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: String,
    iat: u64,
    exp: u64,
    jti: String,
    sid: &'a str,
    #[serde(flatten)]
    upstream: &'a Map<String, Value>,
}

async fn issue_tokens(
    inner: &Inner,
    grant: &Grant,
    scopes: &[String],
) -> Result<Response, OAuthError> {
    let now = unix_now();
    let ttl = inner.config.access_token_ttl.as_secs();
    let claims = AccessClaims {
        iss: &inner.config.issuer,
        sub: &grant.subject,
        aud: &grant.resource,
        client_id: &grant.client_id,
        scope: scopes.join(" "),
        iat: now,
        exp: now + ttl,
        jti: random_token(16),
        sid: &grant.grant_id,
        upstream: &grant.claims,
    };
    let access_token = inner.signing.sign(&claims).ok_or_else(|| {
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot sign the token",
        )
    })?;
    let refresh_token = random_token(32);
    let record = RefreshRecord {
        grant_id: grant.grant_id.clone(),
        client_id: grant.client_id.clone(),
        scopes: scopes.to_vec(),
    };
    records::save(
        inner.store.as_ref(),
        Namespace::RefreshTokens,
        &hash(&refresh_token),
        &record,
        Some(inner.config.refresh_token_ttl),
    )
    .await
    .map_err(OAuthError::store)?;
    Ok(no_store_json(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh_token,
            "scope": scopes.join(" "),
        }),
    ))
}

async fn token(
    State(inner): State<Shared>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let result = async {
        let form = parse_form(&body)?;
        let client = authenticate_client(&inner, &headers, &form).await?;
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => code_grant(&inner, &client, &form).await,
            Some("refresh_token") => refresh_grant(&inner, &client, &form).await,
            Some(_) => Err(OAuthError::bad(
                "unsupported_grant_type",
                "only authorization_code and refresh_token are supported",
            )),
            None => Err(OAuthError::bad("invalid_request", "grant_type is required")),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn revoke_grant(inner: &Inner, grant_id: &str) -> Result<(), StoreError> {
    let store = inner.store.as_ref();
    if let Some(mut grant) = records::load::<Grant>(store, Namespace::Grants, grant_id).await? {
        grant.revoked = true;
        grant.upstream_sealed = None;
        records::save(
            store,
            Namespace::Grants,
            grant_id,
            &grant,
            Some(inner.config.refresh_token_ttl),
        )
        .await?;
    }
    Ok(())
}

/// A code presented wrongly is burnt, and so is its grant: it may be in an attacker's hands.
async fn refuse(inner: &Inner, grant_id: &str, why: &str) -> Result<Response, OAuthError> {
    let _ = revoke_grant(inner, grant_id).await;
    Err(OAuthError::grant(why.to_owned()))
}

async fn code_grant(
    inner: &Inner,
    client: &ClientRecord,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::bad("invalid_request", "code is required"))?;
    let key = hash(code);
    let store = inner.store.as_ref();
    let record: Option<CodeRecord> = records::take(store, Namespace::Codes, &key)
        .await
        .map_err(OAuthError::store)?;
    let Some(record) = record else {
        // A code seen before: replay. Revoke what its first use issued (RFC 6749 §4.1.2).
        if let Some(grant_id) = records::load::<String>(store, Namespace::UsedCodes, &key)
            .await
            .map_err(OAuthError::store)?
        {
            tracing::warn!(client_id = %client.client_id, "authorization code replayed; revoking its grant");
            revoke_grant(inner, &grant_id)
                .await
                .map_err(OAuthError::store)?;
        }
        return Err(OAuthError::grant(
            "the code is invalid, expired or already used",
        ));
    };
    records::save(
        store,
        Namespace::UsedCodes,
        &key,
        &record.grant_id,
        Some(Duration::from_secs(24 * 3600)),
    )
    .await
    .map_err(OAuthError::store)?;
    if record.client_id != client.client_id {
        return refuse(
            inner,
            &record.grant_id,
            "the code was issued to another client",
        )
        .await;
    }
    match form.get("redirect_uri") {
        Some(r) if r != &record.redirect_uri => {
            return refuse(
                inner,
                &record.grant_id,
                "redirect_uri does not match the authorization request",
            )
            .await;
        }
        None if record.redirect_uri_given => {
            return refuse(inner, &record.grant_id, "redirect_uri is required").await;
        }
        _ => {}
    }
    let Some(verifier) = form.get("code_verifier") else {
        return refuse(inner, &record.grant_id, "code_verifier is required (PKCE)").await;
    };
    let verifier_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !verifier_ok || !same(&pkce_challenge(verifier), &record.code_challenge) {
        return refuse(
            inner,
            &record.grant_id,
            "the PKCE code_verifier does not match",
        )
        .await;
    }
    if let Some(r) = form.get("resource")
        && normalise_resource(r).as_deref() != Some(record.resource.as_str())
    {
        let _ = revoke_grant(inner, &record.grant_id).await;
        return Err(OAuthError::bad(
            "invalid_target",
            "the resource does not match the authorization request",
        ));
    }
    let grant: Grant = records::load(store, Namespace::Grants, &record.grant_id)
        .await
        .map_err(OAuthError::store)?
        .filter(|g: &Grant| !g.revoked)
        .ok_or_else(|| OAuthError::grant("the authorization was revoked"))?;
    tracing::info!(client_id = %client.client_id, subject = %grant.subject, "tokens issued");
    issue_tokens(inner, &grant, &record.scopes).await
}

async fn refresh_grant(
    inner: &Inner,
    client: &ClientRecord,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::bad("invalid_request", "refresh_token is required"))?;
    let key = hash(token);
    let store = inner.store.as_ref();
    let (grant_id, record_client, scopes) = match records::take::<RefreshRecord>(
        store,
        Namespace::RefreshTokens,
        &key,
    )
    .await
    .map_err(OAuthError::store)?
    {
        Some(r) => {
            let used = UsedRefresh {
                grant_id: r.grant_id.clone(),
                client_id: r.client_id.clone(),
                scopes: r.scopes.clone(),
                used_at_ms: now_ms(),
            };
            records::save(
                store,
                Namespace::UsedRefreshTokens,
                &key,
                &used,
                Some(inner.config.refresh_token_ttl),
            )
            .await
            .map_err(OAuthError::store)?;
            (r.grant_id, r.client_id, r.scopes)
        }
        None => {
            let Some(used) =
                records::load::<UsedRefresh>(store, Namespace::UsedRefreshTokens, &key)
                    .await
                    .map_err(OAuthError::store)?
            else {
                return Err(OAuthError::grant("the refresh token is invalid or expired"));
            };
            let age = Duration::from_millis(now_ms().saturating_sub(used.used_at_ms));
            if age > inner.config.refresh_grace || used.client_id != client.client_id {
                tracing::warn!(client_id = %client.client_id, "refresh token reused; revoking the whole family");
                revoke_grant(inner, &used.grant_id)
                    .await
                    .map_err(OAuthError::store)?;
                return Err(OAuthError::grant(
                    "the refresh token was already used; this sign-in is revoked",
                ));
            }
            // Two concurrent refreshes by one client (two tabs, a retry): the late one
            // gets a pair of its own rather than logging the user out.
            (used.grant_id, used.client_id, used.scopes)
        }
    };
    if record_client != client.client_id {
        revoke_grant(inner, &grant_id)
            .await
            .map_err(OAuthError::store)?;
        return Err(OAuthError::grant(
            "the refresh token was issued to another client",
        ));
    }
    let grant: Grant = records::load(store, Namespace::Grants, &grant_id)
        .await
        .map_err(OAuthError::store)?
        .filter(|g: &Grant| !g.revoked)
        .ok_or_else(|| OAuthError::grant("this sign-in was revoked"))?;
    if let Some(r) = form.get("resource")
        && normalise_resource(r).as_deref() != Some(grant.resource.as_str())
    {
        return Err(OAuthError::bad(
            "invalid_target",
            "the resource does not match the grant",
        ));
    }
    let scopes = match form.get("scope") {
        Some(s) => {
            let asked: Vec<String> = s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect();
            if asked.iter().any(|a| !scopes.contains(a)) {
                return Err(OAuthError::bad(
                    "invalid_scope",
                    "a refresh cannot widen the granted scopes",
                ));
            }
            asked
        }
        None => scopes,
    };
    // Keep the upstream sign-in alive: refresh it now if it is about to lapse.
    refresh_upstream_if_needed(inner, &grant_id).await?;
    issue_tokens(inner, &grant, &scopes).await
}

async fn refresh_upstream_if_needed(
    inner: &Inner,
    grant_id: &str,
) -> Result<Option<UpstreamTokens>, OAuthError> {
    let store = inner.store.as_ref();
    let Some(mut grant) = records::load::<Grant>(store, Namespace::Grants, grant_id)
        .await
        .map_err(OAuthError::store)?
    else {
        return Ok(None);
    };
    let Some(sealed) = &grant.upstream_sealed else {
        return Ok(None);
    };
    let Ok(plain) = inner.secrets.open(grant_id, sealed) else {
        return Err(OAuthError::grant(
            "the upstream sign-in cannot be read; sign in again",
        ));
    };
    let Ok(mut tokens) = serde_json::from_slice::<UpstreamTokens>(&plain) else {
        return Err(OAuthError::grant(
            "the upstream sign-in cannot be read; sign in again",
        ));
    };
    let expiring = tokens.expires_at.is_some_and(|e| e <= unix_now() + 60);
    if expiring && let Some(rt) = tokens.refresh_token.clone() {
        let fresh = inner
            .upstream
            .refresh(&rt)
            .await
            .map_err(OAuthError::upstream)?;
        tokens = UpstreamTokens {
            access_token: fresh.access_token,
            refresh_token: fresh.refresh_token.or(Some(rt)),
            id_token: fresh.id_token.or(tokens.id_token),
            expires_at: fresh.expires_in.map(|e| unix_now() + e),
        };
        grant.upstream_sealed = seal_upstream(&inner.secrets, grant_id, &tokens);
        records::save(
            store,
            Namespace::Grants,
            grant_id,
            &grant,
            Some(inner.config.refresh_token_ttl),
        )
        .await
        .map_err(OAuthError::store)?;
        tracing::debug!(grant = %grant_id, "upstream tokens refreshed");
    }
    Ok(Some(tokens))
}

pub(super) async fn upstream_access_token(
    inner: &Inner,
    grant_id: &str,
) -> Result<String, VerifyError> {
    match refresh_upstream_if_needed(inner, grant_id).await {
        Ok(Some(t)) => Ok(t.access_token),
        Ok(None) => Err(InvalidToken::Inactive.into()),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            Err(VerifyError::Unavailable(Unavailable {
                retry_after: Duration::from_secs(5),
                detail: e.description,
            }))
        }
        Err(_) => Err(InvalidToken::Inactive.into()),
    }
}

async fn revoke(
    State(inner): State<Shared>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let result = async {
        let form = parse_form(&body)?;
        let client = authenticate_client(&inner, &headers, &form).await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::bad("invalid_request", "token is required"))?;
        let store = inner.store.as_ref();
        // A refresh token revokes its whole grant; so does one of our access tokens.
        if let Some(r) =
            records::load::<RefreshRecord>(store, Namespace::RefreshTokens, &hash(token))
                .await
                .map_err(OAuthError::store)?
            && r.client_id == client.client_id
        {
            store
                .delete(Namespace::RefreshTokens, &hash(token))
                .await
                .map_err(OAuthError::store)?;
            revoke_grant(&inner, &r.grant_id)
                .await
                .map_err(OAuthError::store)?;
        } else if let Ok(access) = inner
            .verifier
            .verify(&crate::types::BearerToken::new(token.as_str()))
            .await
            && access
                .client_id()
                .is_some_and(|c| c.as_str() == client.client_id)
            && let Some(sid) = access.claim_str("sid")
        {
            revoke_grant(&inner, sid).await.map_err(OAuthError::store)?;
        }
        // RFC 7009 §2.2: unknown tokens get 200 too.
        Ok::<Response, OAuthError>(no_store_json(StatusCode::OK, &json!({})))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
