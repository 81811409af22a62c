//! The bearer-token layer: where every request's token is checked.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use http::header::AUTHORIZATION;
use http::{Method, Request};
use serde::Deserialize;
use tower::{Layer, Service};

use super::challenge::error_response;
use super::refusal_log::RefusalLog;
use super::{ProtectedResource, SessionBindings};
use crate::error::{AuthError, VerifyError};
use crate::keepalive;
use crate::mcp::{Decision, ToolPolicies};
use crate::metrics::Metrics;
use crate::token::{AccessToken, TokenCache, TokenVerifier, is_base64url_or_dot};
use crate::types::{BearerToken, TokenFingerprint};

// A `HeaderName` rather than a `&str`: lookups by string parse the name on every call.
const SESSION_HEADER: http::HeaderName = http::HeaderName::from_static("mcp-session-id");

/// Settings of the [`BearerAuthLayer`] beyond the verifier and the resource.
#[derive(Clone, Debug)]
pub struct LayerSettings {
    /// The verified-token cache.
    pub cache: TokenCache,
    /// Per-tool rules, enforced on `tools/call` with HTTP 403 step-up challenges.
    pub tool_policies: ToolPolicies,
    /// Session bindings; `None` for stateless servers.
    pub sessions: Option<SessionBindings>,
    /// Largest request body accepted; a larger one gets 413 with a JSON error body.
    pub max_body_bytes: usize,
    /// How many refusals per second are logged in full (default 20). Beyond that they are
    /// counted and summed up in one line, so a flood of bad requests cannot flood the log
    /// or spend the server's time on formatting it.
    pub refusal_log_per_second: u64,
    /// Where to count the layer's decisions and token-cache lookups; `None` counts nothing.
    pub metrics: Option<Metrics>,
}

impl Default for LayerSettings {
    fn default() -> Self {
        Self {
            cache: TokenCache::default(),
            tool_policies: ToolPolicies::default(),
            sessions: Some(SessionBindings::default()),
            max_body_bytes: 4 * 1024 * 1024,
            refusal_log_per_second: 20,
            metrics: None,
        }
    }
}

struct Shared {
    verifier: Arc<dyn TokenVerifier>,
    resource: Arc<ProtectedResource>,
    settings: LayerSettings,
    refusals: RefusalLog,
}

/// A tower [`Layer`] that admits only requests with a valid bearer token for this resource.
///
/// On success the [`AccessToken`] is in the request's extensions (and so, for rmcp servers,
/// in `http::request::Parts` inside every handler's context). On failure the response is
/// the one [`challenge::error_response`](super::challenge::error_response) builds.
///
/// ```no_run
/// use std::sync::Arc;
/// use axum::{Router, routing::post};
/// use mcp_oidc::resource::{BearerAuthLayer, LayerSettings, ProtectedResource};
/// use mcp_oidc::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let resource = ProtectedResource::new("https://mcp.example.com", "/mcp")?;
/// let verifier = JwtVerifier::new(JwtConfig::new(
///     "https://idp.example.com",
///     KeySource::Discovery("https://idp.example.com".into()),
///     AudiencePolicy::OneOf(vec![resource.resource().into()]),
/// ))?;
/// let app: Router = Router::new()
///     .route("/mcp", post(|| async { "hello" }))
///     .layer(BearerAuthLayer::new(Arc::new(verifier), resource, LayerSettings::default()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BearerAuthLayer {
    shared: Arc<Shared>,
}

impl BearerAuthLayer {
    /// A layer checking tokens with `verifier` for `resource`.
    pub fn new(
        verifier: Arc<dyn TokenVerifier>,
        resource: ProtectedResource,
        settings: LayerSettings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier,
                resource: Arc::new(resource),
                refusals: RefusalLog::new(settings.refusal_log_per_second),
                settings,
            }),
        }
    }

    /// The protected resource this layer guards.
    pub fn resource(&self) -> &ProtectedResource {
        &self.shared.resource
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuthService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service produced by [`BearerAuthLayer`].
#[derive(Clone)]
pub struct BearerAuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for BearerAuthService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was driven to readiness serves this request (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let decision = authorize(&shared, request).await;
            if let Some(metrics) = &shared.settings.metrics {
                match &decision {
                    Ok(_) => metrics.passed(),
                    Err(refusal) => metrics.refused(&refusal.error),
                }
            }
            match decision {
                Ok((request, session_to_bind)) => {
                    let Some(sessions) = &shared.settings.sessions else {
                        return inner.call(request).await;
                    };
                    let deleting = request.method() == Method::DELETE;
                    // A cheap clone: the header's bytes are shared, not copied.
                    let session_sent = request.headers().get(SESSION_HEADER).cloned();
                    let response = inner.call(request).await?;
                    match (&session_sent, session_to_bind) {
                        (None, Some(principal)) => {
                            if let Some(id) = response
                                .headers()
                                .get(SESSION_HEADER)
                                .and_then(|v| v.to_str().ok())
                            {
                                sessions.bind(id, &principal).await;
                            }
                        }
                        (Some(id), _) if deleting && response.status().is_success() => {
                            if let Ok(id) = id.to_str() {
                                sessions.deleted(id).await;
                            }
                        }
                        _ => {}
                    }
                    Ok(response)
                }
                Err(Refusal { error, body_left }) => {
                    let mut response = error_response(&error, &shared.resource);
                    if body_left {
                        keepalive::close(&mut response);
                    }
                    Ok(response)
                }
            }
        })
    }
}

/// A request turned away, and whether part of its body is still unread on the connection.
struct Refusal {
    error: AuthError,
    /// The connection cannot carry another request after the answer: it says so
    /// (`Connection: close`) instead of leaving the client to find the connection closed
    /// under its next request.
    body_left: bool,
}

/// Checks one request. On success returns it (with the token in its extensions) and the
/// principal to bind a newly created session to.
async fn authorize(
    shared: &Shared,
    request: Request<Body>,
) -> Result<(Request<Body>, Option<String>), Refusal> {
    let (mut parts, body) = request.into_parts();
    if parts.method == Method::OPTIONS {
        return Ok((Request::from_parts(parts, body), None));
    }
    let (access, session_to_bind) = match authenticate(shared, &parts).await {
        Ok(admitted) => admitted,
        Err(error) => {
            let body_left = keepalive::drain(&parts, body).await;
            return Err(Refusal { error, body_left });
        }
    };
    let declared = keepalive::declared_length(&parts.headers).map_err(|_| Refusal {
        error: AuthError::InvalidRequest("the Content-Length header is not a number"),
        body_left: true,
    })?;
    let body = match admit_body(shared, &parts, declared, body, &access).await {
        Ok(body) => body,
        Err(error) => {
            // Only a body over the size limit (declared, or found reading it) is left
            // partly unread; the others were read whole to be checked.
            let body_left = matches!(error, AuthError::PayloadTooLarge { .. });
            return Err(Refusal { error, body_left });
        }
    };
    parts.extensions.insert(access);
    Ok((Request::from_parts(parts, body), session_to_bind))
}

/// Checks the request's token (and its session): the caller, and the principal to bind a
/// newly created session to.
async fn authenticate(
    shared: &Shared,
    parts: &http::request::Parts,
) -> Result<(AccessToken, Option<String>), AuthError> {
    if query_has_token(parts.uri.query()) {
        log_refusal(shared, &"access token in the query string", None);
        return Err(AuthError::InvalidRequest(
            "access tokens in the URL are not accepted; send them in the Authorization header",
        ));
    }
    let credentials = bearer_credentials(&parts.headers).inspect_err(|e| {
        if !matches!(e, AuthError::MissingToken) {
            log_refusal(shared, e, None);
        }
    })?;
    // The cache is asked before the token's characters are checked: only tokens that passed
    // that check (when they were first seen) are ever cached, so a hit skips a scan of about
    // a kilobyte on every request. The token is copied only when it must be verified.
    // Read before verifying: a key set that changes meanwhile leaves an entry that no later
    // lookup matches, rather than one that outlives a withdrawn key.
    let keys = shared.verifier.key_set_version();
    let access = match shared.settings.cache.get_recent(credentials, keys) {
        Some(hit) => {
            if let Some(metrics) = &shared.settings.metrics {
                metrics.cache_lookup(true);
            }
            hit
        }
        None => cached_or_verified(shared, credentials, keys).await?,
    };

    let resource = &shared.resource;
    if !access.scopes().contains_all(&resource.required_scopes) {
        let missing = access.scopes().missing(&resource.required_scopes);
        return Err(AuthError::InsufficientScope {
            scope: resource.required_scopes.union(access.scopes()),
            description: format!(
                "this server requires the scopes: {}",
                missing.to_space_separated()
            ),
        });
    }

    let mut session_to_bind = None;
    if let Some(sessions) = &shared.settings.sessions {
        let principal = access.principal_key();
        match parts.headers.get(SESSION_HEADER).map(|v| v.to_str()) {
            Some(Ok(id)) => {
                if !sessions.allows(id, principal).await {
                    if shared.refusals.take() {
                        tracing::info!(target: "mcp_oidc::auth", subject = %access.subject(), "session not bound to this caller; answering 404");
                    }
                    return Err(AuthError::SessionNotFound);
                }
            }
            Some(Err(_)) => return Err(AuthError::SessionNotFound),
            None => session_to_bind = Some(principal.to_owned()),
        }
    }
    Ok((access, session_to_bind))
}

/// Holds the body (of `declared` length, if the request says) to the size limit and, when a
/// tool rule may refuse the caller, reads it to check the tools it calls. Returns the body
/// to pass on.
async fn admit_body(
    shared: &Shared,
    parts: &http::request::Parts,
    declared: Option<u64>,
    body: Body,
    access: &AccessToken,
) -> Result<Body, AuthError> {
    let policies = &shared.settings.tool_policies;
    let limit = shared.settings.max_body_bytes;
    // A declared length over the limit is refused here, so that every oversized body gets
    // the same JSON 413 whichever path below it would take (rmcp's own is plain text).
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AuthError::PayloadTooLarge { limit });
    }
    // A caller allowed every ruled tool cannot be refused by a rule: its bodies are not
    // read here (the common case for a full-scope token saves a buffering and a scan).
    let must_check =
        parts.method == Method::POST && !policies.is_empty() && !policies.allow_all(access);
    // A body of undeclared length (chunked) is read here all the same, to hold it to the
    // limit before anything further in sees it.
    let body = if parts.method != Method::POST || (declared.is_some() && !must_check) {
        body
    } else {
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| AuthError::PayloadTooLarge { limit })?;
        if must_check && policies.may_concern(&bytes) {
            // A body naming a ruled tool that does not parse strictly (a member given twice,
            // say) could be read differently further in (rmcp keeps the last duplicate):
            // it is refused rather than let through unchecked.
            let tools = called_tools(&bytes).ok_or(AuthError::InvalidRequest(
                "the request body is not a JSON-RPC message whose tool calls can be checked (malformed, or a member given twice)",
            ))?;
            for tool in tools {
                check_tool(shared, &tool, access)?;
            }
        }
        Body::from(bytes)
    };
    Ok(body)
}

/// The token from the shared cache, or verified now (and the answer cached), when this
/// thread holds no recent copy of it.
async fn cached_or_verified(
    shared: &Shared,
    credentials: &[u8],
    keys: u64,
) -> Result<AccessToken, AuthError> {
    let cache = &shared.settings.cache;
    // The digest (a SHA-256 of a kilobyte) keys the cache; without one, it is computed only
    // to name a refused token in the log.
    let fingerprint = cache
        .is_enabled()
        .then(|| TokenFingerprint::of(credentials));
    let cached = fingerprint.as_ref().and_then(|f| cache.get(f, keys));
    if let Some(metrics) = &shared.settings.metrics {
        metrics.cache_lookup(cached.is_some());
    }
    match cached {
        Some(Ok(hit)) => return Ok(hit),
        Some(Err(reason)) => {
            log_refusal(shared, &reason, fingerprint.as_ref());
            return Err(AuthError::InvalidToken(reason));
        }
        None => {}
    }
    let token = checked_token(credentials).inspect_err(|e| log_refusal(shared, e, None))?;
    match shared.verifier.verify(&BearerToken::new(token)).await {
        Ok(access) => {
            // Keys that changed during the check leave it unknown which set verified the
            // token: not cached then, checked again next time.
            if let Some(fingerprint) = fingerprint
                && shared.verifier.key_set_version() == keys
            {
                cache.insert(fingerprint, access.clone(), keys);
            }
            Ok(access)
        }
        Err(VerifyError::Invalid(reason)) => {
            let fingerprint = fingerprint.unwrap_or_else(|| TokenFingerprint::of(credentials));
            log_refusal(shared, &reason, Some(&fingerprint));
            cache.insert_refusal(fingerprint, &reason, keys);
            Err(AuthError::InvalidToken(reason))
        }
        Err(VerifyError::Unavailable(u)) => {
            tracing::warn!(target: "mcp_oidc::auth", error = %u, "cannot verify tokens right now; answering 503");
            Err(AuthError::Unavailable(u))
        }
    }
}

fn check_tool(shared: &Shared, tool: &str, access: &AccessToken) -> Result<(), AuthError> {
    match shared.settings.tool_policies.decide(tool, access) {
        Decision::Allow => Ok(()),
        Decision::NeedScopes { scope, missing } => {
            if shared.refusals.take() {
                tracing::info!(target: "mcp_oidc::auth", tool, missing = %missing.to_space_separated(), subject = %access.subject(), "tool call needs more scope; answering 403");
            }
            Err(AuthError::InsufficientScope {
                scope,
                description: format!(
                    "the tool `{}` requires the scopes: {}",
                    tool.chars().take(64).collect::<String>(),
                    missing.to_space_separated()
                ),
            })
        }
        Decision::Forbidden(why) => {
            if shared.refusals.take() {
                tracing::info!(target: "mcp_oidc::auth", tool, subject = %access.subject(), "tool call refused by its claim rule; answering 403");
            }
            Err(AuthError::InsufficientScope {
                scope: access.scopes().clone(),
                description: format!(
                    "the tool `{}` is restricted: {why}",
                    tool.chars().take(64).collect::<String>()
                ),
            })
        }
    }
}

/// Logs a refusal within the layer's log budget, naming the token only by a short digest.
fn log_refusal(shared: &Shared, reason: &dyn std::fmt::Display, token: Option<&TokenFingerprint>) {
    if !shared.refusals.take() {
        return;
    }
    // As a string field so that the log quotes it.
    let reason = reason.to_string();
    match token {
        Some(t) => {
            tracing::info!(target: "mcp_oidc::auth", reason = reason.as_str(), token = %t.short(), "bearer token refused")
        }
        None => {
            tracing::info!(target: "mcp_oidc::auth", reason = reason.as_str(), "request refused")
        }
    }
}

fn query_has_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            name.eq_ignore_ascii_case("access_token")
        })
    })
}

/// Extracts the token from the `Authorization` header (RFC 6750 §2.1). The scheme is
/// case-insensitive and may be followed by several spaces; the token must be a `b64token`.
pub(crate) fn bearer_token(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    checked_token(bearer_credentials(headers)?)
}

/// The credentials after `Bearer` in the one `Authorization` header, their characters not
/// yet checked (see [`checked_token`]).
///
/// Works on the header's bytes: this runs on every request, and the b64token check proves
/// the token is ASCII, so the header is not checked for it first.
fn bearer_credentials(headers: &http::HeaderMap) -> Result<&[u8], AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let value = value.as_bytes().trim_ascii_start();
    let (scheme, rest) = match value.iter().position(blank) {
        Some(i) => value.split_at(i),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        if !value.is_ascii() {
            return Err(not_ascii());
        }
        // Credentials of another scheme are no bearer token: challenge for one.
        return Err(AuthError::MissingToken);
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(AuthError::InvalidRequest(
            "the Authorization header has an empty bearer token",
        ));
    }
    Ok(token)
}

/// `token` as a string if it is an RFC 6750 `b64token`, else the `invalid_request` to answer.
fn checked_token(token: &[u8]) -> Result<&str, AuthError> {
    match b64token(token) {
        Some(token) => Ok(token),
        None if !token.is_ascii() => Err(not_ascii()),
        None => Err(AuthError::InvalidRequest(
            "the bearer token contains characters not allowed in a token (RFC 6750 b64token)",
        )),
    }
}

fn not_ascii() -> AuthError {
    AuthError::InvalidRequest("the Authorization header is not valid ASCII")
}

/// `token` as a string if it is an RFC 6750 `b64token`.
fn b64token(token: &[u8]) -> Option<&str> {
    let end = token.iter().rposition(|b| *b != b'=')? + 1;
    // This runs over every request's token (about a kilobyte). Branch-free tests folded
    // over fixed-size chunks let the compiler check many bytes per instruction.
    let valid = token[..end]
        .chunks(32)
        .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & is_b64token_char(b)));
    if !valid {
        return None;
    }
    // Every byte is ASCII now, so this cannot fail; no `unsafe` needed for it.
    std::str::from_utf8(token).ok()
}

/// A character of RFC 6750's `b64token` before its trailing `=`s: base64url, the dot,
/// and `~`, `+`, `/` (branch-free, like the test it extends).
fn is_b64token_char(b: u8) -> bool {
    is_base64url_or_dot(b) | (b == b'~') | (b == b'+') | (b == b'/')
}

#[derive(Deserialize)]
struct PeekMessage<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<PeekParams<'a>>,
}

#[derive(Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// The tool names of the `tools/call` requests in a JSON-RPC body (one message or a batch),
/// or `None` if the body is not strictly JSON (serde refuses duplicate members).
fn called_tools(body: &[u8]) -> Option<Vec<String>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let messages: Vec<PeekMessage<'_>> = match first {
        Some(b'[') => serde_json::from_slice(body).ok()?,
        Some(b'{') => vec![serde_json::from_slice(body).ok()?],
        _ => return None,
    };
    Some(
        messages
            .into_iter()
            .filter(|m| m.method.as_deref() == Some("tools/call"))
            .filter_map(|m| m.params.and_then(|p| p.name).map(Cow::into_owned))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn scheme_is_case_insensitive_and_extra_spaces_are_tolerated() {
        assert_eq!(bearer_token(&headers(&["bearer abc"])).unwrap(), "abc");
        assert_eq!(
            bearer_token(&headers(&["BEARER   abc.def"])).unwrap(),
            "abc.def"
        );
    }

    #[test]
    fn malformed_authorization_headers_are_invalid_requests() {
        for bad in ["Bearer", "Bearer a b", "Bearer a\"b", "Bearer ==="] {
            assert!(
                matches!(
                    bearer_token(&headers(&[bad])),
                    Err(AuthError::InvalidRequest(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(AuthError::InvalidRequest(_))
        ));
    }

    #[test]
    fn other_schemes_and_no_header_get_a_plain_challenge() {
        assert_eq!(
            bearer_token(&headers(&[])).err(),
            Some(AuthError::MissingToken)
        );
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwYXNz"])).err(),
            Some(AuthError::MissingToken)
        );
    }

    #[test]
    fn tools_call_names_are_found_in_single_and_batch_bodies() {
        let one = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,2]}}}"#;
        assert_eq!(called_tools(one).unwrap(), vec!["x"]);
        let batch = br#"[{"method":"tools/list"},{"method":"tools/call","params":{"name":"y"}}]"#;
        assert_eq!(called_tools(batch).unwrap(), vec!["y"]);
        assert!(called_tools(b"garbage").is_none());
        let escaped = br#"{"method":"tools/call","params":{"name":"write\u005fnote"}}"#;
        assert_eq!(called_tools(escaped).unwrap(), vec!["write_note"]);
        // rmcp would take the last `name`; no reading of it is guessed here.
        let twice = br#"{"method":"tools/call","params":{"name":"safe","name":"write_note"}}"#;
        assert!(called_tools(twice).is_none());
        let method_twice =
            br#"{"method":"tools/list","method":"tools/call","params":{"name":"write_note"}}"#;
        assert!(called_tools(method_twice).is_none());
    }

    #[test]
    fn b64token_characters_are_exactly_the_rfc_6750_set() {
        for b in 0..=255u8 {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_char(b), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn access_token_query_parameter_is_detected() {
        assert!(query_has_token(Some("a=1&access_token=x")));
        assert!(query_has_token(Some("ACCESS_TOKEN=x")));
        assert!(!query_has_token(Some("token=x")));
        assert!(!query_has_token(None));
    }
}
