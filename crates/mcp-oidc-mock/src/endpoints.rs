//! HTTP handlers. Each returns `Result<Response, OAuthError>`; errors are
//! rendered by `OAuthError`'s `IntoResponse`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use url::Url;

use crate::error::{ErrorCode, OAuthError, no_store};
use crate::html;
use crate::keys::{b64url, sha256};
use crate::params::{Params, form_decode, valid_pkce_string, valid_scope_token};
use crate::provider::{Grant, Inner, audience_value, has_scope, scoped_claims};
use crate::state::{AuthMethod, Client, CodeRecord, now, random_token, token_key};

type Shared = State<Arc<Inner>>;
type Handled = Result<Response, OAuthError>;

const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];
const SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "offline_access",
];
/// OIDC Core §2: `sub` is at most 255 ASCII characters; also bounds memory.
const MAX_SUB_LEN: usize = 255;

fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError::json(ErrorCode::InvalidRequest, description)
}

fn json_ok(status: StatusCode, body: Value) -> Response {
    no_store((status, Json(body)).into_response())
}

// ---------------------------------------------------------------- discovery

pub(crate) async fn discovery(State(inner): Shared, headers: HeaderMap) -> Handled {
    let iss = inner.issuer(&headers)?;
    let alg = inner.signing_key().alg().as_str();
    Ok(Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "registration_endpoint": format!("{iss}/oauth2/clients"),
        "end_session_endpoint": format!("{iss}/oauth2/end_session"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GRANT_TYPES,
        "scopes_supported": SCOPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name",
                             "given_name", "family_name", "preferred_username", "nickname",
                             "picture", "email", "email_verified", "address", "phone_number"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "claims_parameter_supported": false,
    }))
    .into_response())
}

pub(crate) async fn jwks(State(inner): Shared) -> Response {
    let max_age = inner.config.jwks_max_age.as_secs();
    let mut response = Json(inner.jwks()).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

pub(crate) async fn rotate_key(State(inner): Shared) -> Response {
    let provider = crate::MockProvider { inner };
    Json(json!({ "kid": provider.rotate_key() })).into_response()
}

// ---------------------------------------------------------------- authorize

/// A syntactically valid absolute redirect URI without fragment.
fn parse_redirect_uri(raw: &str) -> Option<Url> {
    let url = Url::parse(raw).ok()?;
    let scheme_ok = !matches!(
        url.scheme(),
        "javascript" | "data" | "file" | "vbscript" | "blob"
    );
    (url.fragment().is_none() && scheme_ok && !url.cannot_be_a_base()).then_some(url)
}

fn valid_resource(raw: &str) -> bool {
    Url::parse(raw).is_ok_and(|u| u.fragment().is_none() && !u.cannot_be_a_base())
}

/// Space-separated, de-duplicated scope tokens in request order.
fn normalize_scope(raw: Option<&str>) -> Result<String, String> {
    let mut tokens: Vec<&str> = Vec::new();
    for token in raw.unwrap_or_default().split(' ').filter(|t| !t.is_empty()) {
        if !valid_scope_token(token) {
            return Err("scope contains invalid characters".into());
        }
        if !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    Ok(tokens.join(" "))
}

fn check_client_scope(client: Option<&Client>, scope: &str) -> Result<(), String> {
    if let Some(allowed) = client.and_then(|c| c.scope.as_ref())
        && let Some(bad) = scope
            .split(' ')
            .find(|s| !s.is_empty() && !allowed.iter().any(|a| a == s))
    {
        return Err(format!("scope {bad} is not allowed for this client"));
    }
    Ok(())
}

pub(crate) async fn authorize(
    State(inner): Shared,
    method: Method,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Handled {
    let issuer = inner.issuer(&headers)?;
    let page = |desc: String| OAuthError::page(ErrorCode::InvalidRequest, desc);
    let query = Params::parse(uri.query().unwrap_or_default().as_bytes()).map_err(page)?;

    // Until client and redirect URI are known to be good, errors are shown to
    // the user: redirecting to an unchecked URI would be an open redirect.
    let client_id = query
        .one("client_id")
        .map_err(page)?
        .ok_or_else(|| page("missing client_id".into()))?
        .to_owned();
    let client = inner.state().clients.get(&client_id).cloned();
    if client.is_none() && inner.config.require_registration {
        return Err(OAuthError::page(
            ErrorCode::InvalidClient,
            format!("unknown client {client_id}"),
        ));
    }
    let redirect_given = query.one("redirect_uri").map_err(page)?;
    let redirect_uri_given = redirect_given.is_some();
    let redirect_raw = match (redirect_given, &client) {
        (Some(uri), _) => uri.to_owned(),
        (None, Some(c)) if c.redirect_uris.len() == 1 => c.redirect_uris[0].clone(),
        (None, _) => return Err(page("missing redirect_uri".into())),
    };
    let redirect_uri =
        parse_redirect_uri(&redirect_raw).ok_or_else(|| page("invalid redirect_uri".into()))?;
    if let Some(c) = &client
        && !c.redirect_uris.iter().any(|r| r == &redirect_raw)
    {
        return Err(page(
            "redirect_uri is not registered for this client".into(),
        ));
    }
    let state_param = query.one("state").map_err(page)?.map(str::to_owned);
    let redirect = |code: ErrorCode, desc: String| {
        OAuthError::redirect(code, desc, &redirect_uri, state_param.as_deref(), &issuer)
    };
    let bad = |desc: String| redirect(ErrorCode::InvalidRequest, desc);

    match query.one("response_type").map_err(bad)? {
        None => return Err(bad("missing response_type".into())),
        Some("code") => {}
        Some(other) => {
            return Err(redirect(
                ErrorCode::UnsupportedResponseType,
                format!("response_type {other} is not supported"),
            ));
        }
    }
    if let Some(mode) = query.one("response_mode").map_err(bad)?
        && mode != "query"
    {
        return Err(bad(format!("response_mode {mode} is not supported")));
    }
    if client
        .as_ref()
        .is_some_and(|c| !c.grant_types.iter().any(|g| g == "authorization_code"))
    {
        return Err(redirect(
            ErrorCode::UnauthorizedClient,
            "client is not registered for the authorization_code grant".into(),
        ));
    }
    let scope = normalize_scope(query.one("scope").map_err(bad)?)
        .map_err(|d| redirect(ErrorCode::InvalidScope, d))?;
    // A registered client's `scope` is enforced only when registration is: MCP clients
    // register with their first scope and step up to more later without re-registering.
    if inner.config.require_registration {
        check_client_scope(client.as_ref(), &scope)
            .map_err(|d| redirect(ErrorCode::InvalidScope, d))?;
    }
    let resources: Vec<String> = query
        .all("resource")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(bad_resource) = resources.iter().find(|r| !valid_resource(r)) {
        return Err(redirect(
            ErrorCode::InvalidTarget,
            format!("resource {bad_resource} is not an absolute URI without fragment"),
        ));
    }
    let challenge = query.one("code_challenge").map_err(bad)?;
    match (challenge, query.one("code_challenge_method").map_err(bad)?) {
        (Some(c), Some("S256")) if valid_pkce_string(c) => {}
        (Some(_), Some("S256")) => return Err(bad("malformed code_challenge".into())),
        (Some(_), Some(m)) => {
            return Err(bad(format!(
                "code_challenge_method {m} is not supported; use S256"
            )));
        }
        (Some(_), None) => {
            return Err(bad(
                "code_challenge_method is required (only S256 is supported)".into(),
            ));
        }
        (None, Some(_)) => return Err(bad("code_challenge_method without code_challenge".into())),
        (None, None) if inner.config.require_pkce => {
            return Err(bad(
                "PKCE is required: send code_challenge with method S256".into(),
            ));
        }
        (None, None) => {}
    }
    let nonce = query.one("nonce").map_err(bad)?.map(str::to_owned);
    // Nonces belong to OpenID Connect, so only OIDC requests need one (as in
    // the reference mock).
    if inner.config.require_nonce && nonce.is_none() && has_scope(&scope, "openid") {
        return Err(bad("nonce is required".into()));
    }

    if method == Method::GET {
        let (known, recent) = {
            let state = inner.state();
            let known = state.predefined.clone();
            let recent: Vec<String> = state
                .recent
                .iter()
                .filter(|s| !known.contains(s))
                .cloned()
                .collect();
            (known, recent)
        };
        let action = match uri.query() {
            Some(q) => format!("{}?{q}", uri.path()),
            None => uri.path().to_owned(),
        };
        let body = html::authorize_form(&html::AuthorizeForm {
            action: &action,
            client_id: &client_id,
            redirect_uri: redirect_uri.as_str(),
            scope: &scope,
            known_users: &known,
            recent_subjects: &recent,
        });
        return Ok(html::secure(Html(body).into_response()));
    }

    let form = Params::parse(&body).map_err(page)?;
    if form.one("action").map_err(page)? == Some("deny") {
        return Err(redirect(
            ErrorCode::AccessDenied,
            "the user denied the request".into(),
        ));
    }
    let sub = form
        .one("sub")
        .map_err(page)?
        .ok_or_else(|| page("Missing 'sub' form parameter".into()))?
        .to_owned();
    if sub.len() > MAX_SUB_LEN {
        return Err(page(format!("sub must be at most {MAX_SUB_LEN} bytes")));
    }

    let code = random_token();
    let now = now();
    {
        let mut state = inner.state();
        state.maybe_prune(now);
        if !state.users.contains_key(&sub) {
            let mut claims = serde_json::Map::new();
            claims.insert("email".into(), Value::String(sub.clone()));
            state.users.insert(sub.clone(), claims);
        }
        state.record_subject(&sub, inner.config.max_recent_subjects);
        state.codes.insert(
            token_key(&code),
            CodeRecord {
                client_id: client_id.clone(),
                redirect_uri: redirect_raw,
                redirect_uri_given,
                sub: sub.clone(),
                scope,
                nonce,
                resources,
                code_challenge: challenge.map(str::to_owned),
                auth_time: now,
                expires_at: now.saturating_add(inner.config.code_max_age.as_secs()),
                grant_id: uuid::Uuid::new_v4().to_string(),
                used: false,
            },
        );
    }
    tracing::info!(%client_id, %sub, "issued authorization code");
    let mut location = redirect_uri.clone();
    {
        let mut pairs = location.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(state) = &state_param {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("iss", &issuer);
    }
    Ok(no_store(html::found(location.as_str())))
}

// ------------------------------------------------------- client authentication

/// A client that passed authentication at the token, introspection or
/// revocation endpoint.
struct AuthenticatedClient {
    id: String,
    registered: Option<Client>,
}

fn authenticate_client(
    inner: &Inner,
    headers: &HeaderMap,
    params: &Params,
) -> Result<AuthenticatedClient, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().unwrap_or_default();
            match value.split_once(' ') {
                Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => {
                    let decoded = STANDARD
                        .decode(creds.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|s| {
                            let (id, secret) = s.split_once(':')?;
                            Some((form_decode(id)?, form_decode(secret)?))
                        });
                    match decoded {
                        Some(pair) => Some(pair),
                        None => {
                            return Err(OAuthError::invalid_client(
                                "malformed HTTP Basic credentials",
                                true,
                            ));
                        }
                    }
                }
                _ => None,
            }
        }
        None => None,
    };
    let form_id = params.one("client_id").map_err(invalid_request)?;
    let form_secret = params.one("client_secret").map_err(invalid_request)?;
    let tried_basic = basic.is_some();
    let (id, secret) = match basic {
        Some((id, secret)) => {
            if form_secret.is_some() {
                return Err(invalid_request("use only one client authentication method"));
            }
            if form_id.is_some_and(|f| f != id) {
                return Err(invalid_request(
                    "client_id does not match the Basic credentials",
                ));
            }
            (id, Some(secret).filter(|s| !s.is_empty()))
        }
        None => match form_id {
            Some(id) => (id.to_owned(), form_secret.map(str::to_owned)),
            None => {
                return Err(OAuthError::invalid_client(
                    "client authentication required",
                    false,
                ));
            }
        },
    };
    if id.is_empty() {
        return Err(OAuthError::invalid_client(
            "client authentication required",
            tried_basic,
        ));
    }
    let registered = inner.state().clients.get(&id).cloned();
    match &registered {
        Some(client) => match (&client.secret, &secret) {
            (None, Some(_)) => {
                return Err(OAuthError::invalid_client(
                    "public client must not send a client secret",
                    tried_basic,
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(OAuthError::invalid_client(
                    "client secret required",
                    tried_basic,
                ));
            }
            (Some(expected), Some(given)) => {
                // Compare digests so the comparison time does not depend on length either.
                let ok = sha256(expected.as_bytes()).ct_eq(&sha256(given.as_bytes()));
                if !bool::from(ok) {
                    return Err(OAuthError::invalid_client(
                        "client authentication failed",
                        tried_basic,
                    ));
                }
            }
        },
        None if inner.config.require_registration => {
            return Err(OAuthError::invalid_client("unknown client", tried_basic));
        }
        None => {}
    }
    Ok(AuthenticatedClient { id, registered })
}

fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(invalid_request(
                "expected an application/x-www-form-urlencoded body",
            ));
        }
    }
    Params::parse(body).map_err(invalid_request)
}

// -------------------------------------------------------------------- token

pub(crate) async fn token(State(inner): Shared, headers: HeaderMap, body: Bytes) -> Handled {
    let params = form_params(&headers, &body)?;
    let grant_type = params
        .one("grant_type")
        .map_err(invalid_request)?
        .ok_or_else(|| invalid_request("missing grant_type"))?
        .to_owned();
    if !GRANT_TYPES.contains(&grant_type.as_str()) {
        return Err(OAuthError::json(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type {grant_type} is not supported"),
        ));
    }
    let issuer = inner.issuer(&headers)?;
    let client = authenticate_client(&inner, &headers, &params)?;
    if let Some(registered) = &client.registered
        && !registered.grant_types.contains(&grant_type)
    {
        return Err(OAuthError::json(
            ErrorCode::UnauthorizedClient,
            format!("client is not registered for the {grant_type} grant"),
        ));
    }
    let requested_resources: Vec<String> = params
        .all("resource")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(r) = requested_resources.iter().find(|r| !valid_resource(r)) {
        return Err(OAuthError::json(
            ErrorCode::InvalidTarget,
            format!("resource {r} is not an absolute URI without fragment"),
        ));
    }
    let grant = match grant_type.as_str() {
        "authorization_code" => code_grant(&inner, &params, &client, issuer, requested_resources)?,
        "refresh_token" => refresh_grant(&inner, &params, &client, issuer, requested_resources)?,
        _ => client_credentials_grant(&inner, &params, &client, issuer, requested_resources)?,
    };
    Ok(json_ok(StatusCode::OK, inner.issue(grant)?))
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::json(ErrorCode::InvalidGrant, description)
}

/// Narrows the resources of a grant to those asked for at the token endpoint
/// (RFC 8707 §2.2); asking for one not granted is `invalid_target`.
fn pick_resources(granted: &[String], requested: Vec<String>) -> Result<Vec<String>, OAuthError> {
    if requested.is_empty() {
        return Ok(granted.to_vec());
    }
    if let Some(r) = requested.iter().find(|r| !granted.contains(r)) {
        return Err(OAuthError::json(
            ErrorCode::InvalidTarget,
            format!("resource {r} was not part of the authorization"),
        ));
    }
    Ok(requested)
}

fn code_grant(
    inner: &Inner,
    params: &Params,
    client: &AuthenticatedClient,
    issuer: String,
    requested_resources: Vec<String>,
) -> Result<Grant, OAuthError> {
    let code = params
        .one("code")
        .map_err(invalid_request)?
        .ok_or_else(|| invalid_request("missing code"))?;
    let redirect_uri = params.one("redirect_uri").map_err(invalid_request)?;
    let verifier = params.one("code_verifier").map_err(invalid_request)?;
    let now = now();
    let record = {
        let mut state = inner.state();
        let key = token_key(code);
        let Some(record) = state.codes.get_mut(&key) else {
            return Err(invalid_grant("unknown or expired authorization code"));
        };
        if record.used {
            // RFC 6749 §4.1.2: a replayed code revokes what it produced.
            let grant_id = record.grant_id.clone();
            state.revoke_grant(&grant_id);
            tracing::warn!(client_id = %client.id, "authorization code reused; revoked its tokens");
            return Err(invalid_grant("authorization code already used"));
        }
        if record.expires_at <= now {
            return Err(invalid_grant("authorization code expired"));
        }
        if record.client_id != client.id {
            return Err(invalid_grant(
                "authorization code was issued to another client",
            ));
        }
        // Any failure below burns the code too, so it cannot be brute-forced.
        record.used = true;
        record.clone()
    };
    let redirect_ok = match redirect_uri {
        Some(uri) => uri == record.redirect_uri,
        None => !record.redirect_uri_given,
    };
    if !redirect_ok {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    match (&record.code_challenge, verifier) {
        (Some(challenge), Some(verifier)) => {
            let computed = b64url(&sha256(verifier.as_bytes()));
            let matches: bool = computed.as_bytes().ct_eq(challenge.as_bytes()).into();
            if !valid_pkce_string(verifier) || !matches {
                return Err(invalid_grant("PKCE verification failed"));
            }
        }
        (Some(_), None) => return Err(invalid_grant("missing code_verifier")),
        // RFC 9700 §2.1.1: a verifier without a challenge hints at a downgrade.
        (None, Some(_)) => {
            return Err(invalid_grant(
                "code_verifier sent but no code_challenge was given",
            ));
        }
        (None, None) => {}
    }
    let resources = pick_resources(&record.resources, requested_resources)?;
    Ok(Grant {
        aud: inner.audience(&resources, &client.id),
        issuer,
        sub: record.sub,
        client_id: client.id.clone(),
        scope: record.scope,
        resources: record.resources,
        auth_time: Some(record.auth_time),
        nonce: record.nonce,
        grant_id: record.grant_id,
    })
}

fn refresh_grant(
    inner: &Inner,
    params: &Params,
    client: &AuthenticatedClient,
    issuer: String,
    requested_resources: Vec<String>,
) -> Result<Grant, OAuthError> {
    let token = params
        .one("refresh_token")
        .map_err(invalid_request)?
        .ok_or_else(|| invalid_request("missing refresh_token"))?;
    let requested_scope =
        normalize_scope(params.one("scope").map_err(invalid_request)?).map_err(invalid_request)?;
    let record = {
        let mut state = inner.state();
        let key = token_key(token);
        match state.refresh_tokens.get(&key) {
            None => return Err(invalid_grant("invalid refresh token")),
            Some(r) if r.exp <= now() => return Err(invalid_grant("refresh token expired")),
            Some(r) if r.client_id != client.id => {
                return Err(invalid_grant("refresh token was issued to another client"));
            }
            Some(_) => {}
        }
        // Rotation: the presented token is spent whatever happens next.
        state
            .refresh_tokens
            .remove(&key)
            .ok_or_else(|| invalid_grant("invalid refresh token"))?
    };
    let scope = if requested_scope.is_empty() {
        record.scope.clone()
    } else {
        if let Some(extra) = requested_scope
            .split(' ')
            .find(|s| !has_scope(&record.scope, s))
        {
            return Err(OAuthError::json(
                ErrorCode::InvalidScope,
                format!("scope {extra} was not granted originally"),
            ));
        }
        requested_scope
    };
    let resources = pick_resources(&record.resources, requested_resources)?;
    let aud = if resources.is_empty() {
        record.aud.clone()
    } else {
        inner.audience(&resources, &client.id)
    };
    Ok(Grant {
        issuer,
        sub: record.sub,
        client_id: client.id.clone(),
        scope,
        aud,
        resources: record.resources,
        auth_time: Some(record.auth_time),
        nonce: None,
        grant_id: record.grant_id,
    })
}

fn client_credentials_grant(
    inner: &Inner,
    params: &Params,
    client: &AuthenticatedClient,
    issuer: String,
    resources: Vec<String>,
) -> Result<Grant, OAuthError> {
    if client
        .registered
        .as_ref()
        .is_some_and(|c| c.secret.is_none())
    {
        return Err(OAuthError::json(
            ErrorCode::UnauthorizedClient,
            "public clients cannot use the client_credentials grant",
        ));
    }
    let scope = normalize_scope(params.one("scope").map_err(invalid_request)?)
        .map_err(|d| OAuthError::json(ErrorCode::InvalidScope, d))?;
    if inner.config.require_registration {
        check_client_scope(client.registered.as_ref(), &scope)
            .map_err(|d| OAuthError::json(ErrorCode::InvalidScope, d))?;
    }
    Ok(Grant {
        aud: inner.audience(&resources, &client.id),
        issuer,
        sub: client.id.clone(),
        client_id: client.id.clone(),
        scope,
        resources,
        auth_time: None,
        nonce: None,
        grant_id: uuid::Uuid::new_v4().to_string(),
    })
}

// ------------------------------------------------- introspection & revocation

pub(crate) async fn introspect(State(inner): Shared, headers: HeaderMap, body: Bytes) -> Handled {
    let params = form_params(&headers, &body)?;
    authenticate_client(&inner, &headers, &params)?;
    let token = params
        .one("token")
        .map_err(invalid_request)?
        .ok_or_else(|| invalid_request("missing token"))?;
    let key = token_key(token);
    let now = now();
    let state = inner.state();
    let body = if let Some(t) = state.access_tokens.get(&key).filter(|t| t.exp > now) {
        let mut body = json!({
            "active": true, "token_type": "Bearer", "scope": t.scope, "client_id": t.client_id,
            "sub": t.sub, "aud": audience_value(&t.aud), "iss": t.issuer, "exp": t.exp,
            "iat": t.iat, "jti": t.jti,
        });
        if t.has_user
            && let Some(username) = state
                .users
                .get(&t.sub)
                .and_then(|c| c.get("preferred_username"))
        {
            body["username"] = username.clone();
        }
        body
    } else if let Some(t) = state.refresh_tokens.get(&key).filter(|t| t.exp > now) {
        json!({
            "active": true, "token_type": "refresh_token", "scope": t.scope,
            "client_id": t.client_id, "sub": t.sub, "aud": audience_value(&t.aud),
            "iss": t.issuer, "exp": t.exp, "iat": t.iat,
        })
    } else {
        json!({ "active": false })
    };
    Ok(json_ok(StatusCode::OK, body))
}

pub(crate) async fn revoke(State(inner): Shared, headers: HeaderMap, body: Bytes) -> Handled {
    let params = form_params(&headers, &body)?;
    let client = authenticate_client(&inner, &headers, &params)?;
    let token = params
        .one("token")
        .map_err(invalid_request)?
        .ok_or_else(|| invalid_request("missing token"))?;
    let key = token_key(token);
    let mut state = inner.state();
    // Tokens of other clients are left alone; the answer is the same 200
    // either way so it reveals nothing (RFC 7009 §2.2).
    if state
        .access_tokens
        .get(&key)
        .is_some_and(|t| t.client_id == client.id)
    {
        state.access_tokens.remove(&key);
    } else if let Some(grant_id) = state
        .refresh_tokens
        .get(&key)
        .filter(|t| t.client_id == client.id)
        .map(|t| t.grant_id.clone())
    {
        // RFC 7009 §2.1: revoking a refresh token also ends its access tokens.
        state.revoke_grant(&grant_id);
    }
    Ok(no_store(StatusCode::OK.into_response()))
}

// ----------------------------------------------------------------- userinfo

pub(crate) async fn userinfo(
    State(inner): Shared,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    let header_token = match headers.get(header::AUTHORIZATION) {
        Some(value) => match value.to_str().ok().and_then(|v| v.split_once(' ')) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(token.trim().to_owned())
            }
            _ => return Err(OAuthError::bearer("unsupported authorization scheme", true)),
        },
        None => None,
    };
    let form_token = if method == Method::POST && !body.is_empty() {
        Params::parse(&body)
            .ok()
            .and_then(|p| p.one("access_token").ok().flatten().map(str::to_owned))
    } else {
        None
    };
    let token = match (header_token, form_token) {
        (Some(_), Some(_)) => {
            return Err(invalid_request(
                "send the access token only once (RFC 6750 §2)",
            ));
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return Err(OAuthError::bearer("missing access token", false)),
    };
    let state = inner.state();
    let record = state
        .access_tokens
        .get(&token_key(&token))
        .filter(|t| t.exp > now())
        .ok_or_else(|| {
            OAuthError::bearer("the access token is invalid, expired or revoked", true)
        })?;
    let mut claims = if record.has_user {
        state
            .users
            .get(&record.sub)
            .map(|c| scoped_claims(c, &record.scope))
            .unwrap_or_default()
    } else {
        serde_json::Map::new()
    };
    claims.insert("sub".into(), json!(record.sub));
    Ok(json_ok(StatusCode::OK, Value::Object(claims)))
}

// -------------------------------------------------------------------- users

pub(crate) async fn put_user(
    State(inner): Shared,
    Path(sub): Path<String>,
    body: Bytes,
) -> Handled {
    if sub.is_empty() || sub.len() > MAX_SUB_LEN {
        return Err(invalid_request(format!(
            "sub must be 1 to {MAX_SUB_LEN} bytes"
        )));
    }
    let claims = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(claims)) => claims,
        Ok(_) => return Err(invalid_request("the body must be a JSON object of claims")),
        Err(e) => return Err(invalid_request(format!("invalid JSON body: {e}"))),
    };
    crate::MockProvider { inner }.put_user(&sub, claims);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn revoke_user_tokens(State(inner): Shared, Path(sub): Path<String>) -> Response {
    inner.state().revoke_user(&sub);
    tracing::info!(%sub, "revoked all tokens of user");
    StatusCode::NO_CONTENT.into_response()
}

// ------------------------------------------------------------- registration

fn string_list(value: Option<&Value>) -> Result<Option<Vec<String>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

pub(crate) async fn register_client(State(inner): Shared, body: Bytes) -> Handled {
    let metadata_err = |d: &str| OAuthError::json(ErrorCode::InvalidClientMetadata, d);
    let mut request = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(metadata_err("the body must be a JSON object")),
    };
    let redirect_err = |d: &str| OAuthError::json(ErrorCode::InvalidRedirectUri, d);
    let redirect_uris = string_list(request.get("redirect_uris"))
        .map_err(|_| redirect_err("redirect_uris must be an array of strings"))?
        .filter(|uris| !uris.is_empty())
        .ok_or_else(|| redirect_err("redirect_uris is required"))?;
    if let Some(bad) = redirect_uris
        .iter()
        .find(|u| parse_redirect_uri(u).is_none())
    {
        return Err(redirect_err(&format!("invalid redirect URI {bad}")));
    }
    let auth_method = match request.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => AuthMethod::ClientSecretBasic,
        Some(Value::String(m)) => AuthMethod::parse(m)
            .ok_or_else(|| metadata_err("unsupported token_endpoint_auth_method"))?,
        Some(_) => return Err(metadata_err("token_endpoint_auth_method must be a string")),
    };
    let grant_types = string_list(request.get("grant_types"))
        .map_err(|_| metadata_err("grant_types must be an array of strings"))?
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if let Some(bad) = grant_types
        .iter()
        .find(|g| !GRANT_TYPES.contains(&g.as_str()))
    {
        return Err(metadata_err(&format!("unsupported grant type {bad}")));
    }
    if auth_method == AuthMethod::None && grant_types.iter().any(|g| g == "client_credentials") {
        return Err(metadata_err("public clients cannot use client_credentials"));
    }
    let response_types = string_list(request.get("response_types"))
        .map_err(|_| metadata_err("response_types must be an array of strings"))?
        .unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(metadata_err("only the code response type is supported"));
    }
    let scope = match request.get("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = normalize_scope(Some(s)).map_err(|d| metadata_err(&d))?;
            Some(
                s.split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            )
        }
        Some(_) => return Err(metadata_err("scope must be a string")),
    };
    if request
        .get("client_name")
        .is_some_and(|n| !n.is_string() && !n.is_null())
    {
        return Err(metadata_err("client_name must be a string"));
    }

    let secret = (auth_method != AuthMethod::None).then(random_token);
    let client = Client {
        id: uuid::Uuid::new_v4().to_string(),
        secret: secret.clone(),
        redirect_uris: redirect_uris.clone(),
        auth_method,
        grant_types: grant_types.clone(),
        scope,
    };
    // Echo the client's metadata (RFC 7591 §3.2.1), with our values winning.
    for k in [
        "client_id",
        "client_secret",
        "client_id_issued_at",
        "client_secret_expires_at",
    ] {
        request.remove(k);
    }
    request.insert("client_id".into(), json!(client.id));
    request.insert("client_id_issued_at".into(), json!(now()));
    request.insert("redirect_uris".into(), json!(redirect_uris));
    request.insert(
        "token_endpoint_auth_method".into(),
        json!(auth_method.as_str()),
    );
    request.insert("grant_types".into(), json!(grant_types));
    request.insert("response_types".into(), json!(response_types));
    if let Some(secret) = secret {
        request.insert("client_secret".into(), json!(secret));
        request.insert("client_secret_expires_at".into(), json!(0));
    }
    tracing::info!(client_id = %client.id, method = auth_method.as_str(), "registered client");
    inner.state().clients.insert(client.id.clone(), client);
    Ok(json_ok(StatusCode::CREATED, Value::Object(request)))
}

// -------------------------------------------------------------- end session

pub(crate) async fn end_session(
    OriginalUri(uri): OriginalUri,
    method: Method,
    body: Bytes,
) -> Handled {
    let page = |d: String| OAuthError::page(ErrorCode::InvalidRequest, d);
    let params = if method == Method::POST {
        Params::parse(&body)
    } else {
        Params::parse(uri.query().unwrap_or_default().as_bytes())
    }
    .map_err(page)?;
    let Some(target) = params.one("post_logout_redirect_uri").map_err(page)? else {
        return Ok(html::secure(Html(html::signed_out_page()).into_response()));
    };
    let mut url = parse_redirect_uri(target)
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| page("invalid post_logout_redirect_uri".into()))?;
    if let Some(state) = params.one("state").map_err(page)? {
        url.query_pairs_mut().append_pair("state", state);
    }
    Ok(html::found(url.as_str()))
}
