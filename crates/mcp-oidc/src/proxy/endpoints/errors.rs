//! Errors of the token, registration and revocation endpoints (RFC 6749 §5.2), and the
//! response helpers every endpoint shares.

use std::collections::HashMap;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, LOCATION, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::proxy::Inner;
use crate::proxy::pages::error_page;
use crate::proxy::upstream::UpstreamError;
use crate::store::StoreError;

use super::MAX_FORM_BYTES;

/// How long a client is asked to wait after a transient failure.
const RETRY_AFTER_SECS: u64 = 5;

/// An RFC 6749 §5.2 error from the token, registration or revocation endpoint.
pub(crate) struct OAuthError {
    pub(super) status: StatusCode,
    code: &'static str,
    pub(super) description: String,
    /// Answer with `WWW-Authenticate: Basic` (a failed client authentication).
    pub(super) basic_challenge: bool,
    /// Answer with `Retry-After` (a transient failure the client should retry).
    retry_after: Option<u64>,
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        Self::store(e)
    }
}

impl OAuthError {
    /// The RFC 6749 / RFC 7591 error code.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }
    pub(super) fn bad(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }
    pub(super) fn grant(description: impl Into<String>) -> Self {
        Self::bad("invalid_grant", description)
    }
    /// A transient failure: 503 `temporarily_unavailable` with `Retry-After`, so that the
    /// client retries rather than treating its credentials as bad.
    pub(super) fn unavailable(description: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        );
        e.retry_after = Some(RETRY_AFTER_SECS);
        e
    }
    pub(super) fn store(e: StoreError) -> Self {
        tracing::error!(error = %e, "proxy storage failure");
        Self::unavailable("storage is unavailable; try again")
    }
    /// Whether a retry of the same request may succeed.
    pub(super) fn is_transient(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }
    pub(super) fn upstream(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unavailable(d) => {
                tracing::warn!(error = %d, "upstream provider unavailable");
                Self::unavailable("the identity provider is unavailable; try again")
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
        if let Some(secs) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
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
pub(super) fn storage_page(e: &StoreError) -> Response {
    tracing::error!(error = %e, "proxy storage failure");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "Storage is unavailable; try again.",
    )
}

/// Redirects to the client with an authorization error (RFC 6749 §4.1.2.1), `iss` included
/// (RFC 9207). Only used once the redirect URI is known to be the client's.
pub(super) fn redirect_error(
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

pub(super) fn redirect_with(base: &str, params: &[(&str, &str)]) -> Response {
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

pub(super) fn redirect(location: &str) -> Response {
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

pub(super) fn no_store_json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub(super) fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
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
