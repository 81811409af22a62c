//! Clients: dynamic registration (RFC 7591), client lookup (registered or a client ID
//! metadata document) and client authentication at the token and revocation endpoints.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::proxy::Inner;
use crate::proxy::crypto::{hash, random_token, same};
use crate::proxy::pages::error_page;
use crate::proxy::records::{self, ClientRecord};
use crate::store::{Namespace, StoreError};
use crate::token::unix_now;

use super::errors::{OAuthError, no_store_json, storage_page};
use super::{MAX_FORM_BYTES, Shared};

/// Why a client could not be looked up.
#[derive(Debug, thiserror::Error)]
pub(super) enum LookupError {
    /// The client is known by a document that is unacceptable: the client's fault.
    #[error("{0}")]
    Refused(String),
    /// The client's document could not be fetched now; a later attempt may succeed.
    #[error("the client metadata document cannot be fetched now: {0}")]
    DocumentUnavailable(String),
    /// The store failed; a later attempt may succeed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LookupError {
    /// The page a person sees at `/authorize`.
    pub(super) fn page(&self) -> Response {
        match self {
            LookupError::Refused(why) => error_page(StatusCode::BAD_REQUEST, "Client refused", why),
            LookupError::DocumentUnavailable(why) => error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                &format!(
                    "The client's metadata document cannot be fetched now ({why}); try again."
                ),
            ),
            LookupError::Store(e) => storage_page(e),
        }
    }
}

pub(super) async fn find_client(
    inner: &Inner,
    client_id: &str,
) -> Result<Option<ClientRecord>, LookupError> {
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
                    return Err(LookupError::Refused(
                        "this server accepts metadata-document clients only with token_endpoint_auth_method \"none\"".into(),
                    ));
                }
                for uri in &doc.redirect_uris {
                    if let Err(e) = inner.config.redirect_policy.check_registration(uri) {
                        return Err(LookupError::Refused(e.to_string()));
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
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "client metadata document cannot be fetched");
                Err(LookupError::DocumentUnavailable(e.message().to_owned()))
            }
            Err(e) => {
                tracing::info!(error = %e, "client metadata document refused");
                Err(LookupError::Refused(e.to_string()))
            }
        };
    }
    Ok(records::load(inner.store.as_ref(), Namespace::Clients, client_id).await?)
}

pub(super) async fn register(State(inner): State<Shared>, body: axum::body::Bytes) -> Response {
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
    policy: &crate::proxy::RedirectPolicy,
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
pub(super) async fn authenticate_client(
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
    // RFC 6749 §5.2 keeps invalid_client for failed authentication; clients drop their
    // registration on it, so a fault on our side must not answer with it.
    let client = match find_client(inner, &client_id).await {
        Ok(Some(c)) => c,
        Ok(None) | Err(LookupError::Refused(_)) => return Err(invalid(used_basic)),
        Err(LookupError::Store(e)) => return Err(OAuthError::store(e)),
        Err(e @ LookupError::DocumentUnavailable(_)) => {
            tracing::warn!(error = %e, "client cannot be authenticated now");
            return Err(OAuthError::unavailable(
                "the client's metadata document cannot be fetched now; try again",
            ));
        }
    };
    match (&client.secret_hash, secret) {
        (Some(expected), Some(given)) if same(expected, &hash(&given)) => Ok(client),
        (None, None) => Ok(client),
        (None, Some(s)) if s.is_empty() => Ok(client),
        _ => Err(invalid(used_basic)),
    }
}
