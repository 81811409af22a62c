//! Turning an [`AuthError`] into the HTTP response the specifications call for: status,
//! `WWW-Authenticate` (RFC 6750 §3, RFC 9728 §5.1) and a JSON body for humans.

use axum::body::Body;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use super::ProtectedResource;
use crate::error::AuthError;
use crate::types::Scopes;

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// The response for `error`.
pub fn error_response(error: &AuthError, resource: &ProtectedResource) -> Response {
    let description = match error {
        // What failed (internal URLs, the provider's answers) is for the log, not for
        // whoever sent the request.
        AuthError::Unavailable(_) => {
            "tokens cannot be checked right now (the authorization server is unreachable); try again later".to_owned()
        }
        _ => error.to_string(),
    };
    let (status, code, challenge) = match error {
        AuthError::MissingToken => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some(www_authenticate(
                None,
                None,
                Some(resource.challenge_scopes()),
                resource,
            )),
        ),
        AuthError::InvalidRequest(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(www_authenticate(
                Some("invalid_request"),
                Some(&description),
                None,
                resource,
            )),
        ),
        AuthError::InvalidToken(_) => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            Some(www_authenticate(
                Some("invalid_token"),
                Some(&description),
                Some(resource.challenge_scopes()),
                resource,
            )),
        ),
        AuthError::InsufficientScope { scope, .. } => (
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            Some(www_authenticate(
                Some("insufficient_scope"),
                Some(&description),
                Some(scope),
                resource,
            )),
        ),
        AuthError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            None,
        ),
        AuthError::SessionNotFound => {
            // The same answer rmcp gives for a session it does not know, so that a session
            // of another user is indistinguishable from one that does not exist.
            let mut response = Response::new(Body::from("Not Found: Session not found"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
        AuthError::PayloadTooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", None)
        }
    };
    let body = serde_json::to_string(&ErrorBody {
        error: code,
        error_description: &description,
    })
    // Two strings always serialize; the default is unreachable.
    .unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(challenge) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(WWW_AUTHENTICATE, challenge);
    }
    if let AuthError::Unavailable(u) = error {
        let secs = u.retry_after.as_secs().max(1);
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Builds a `Bearer` challenge. Every value is reduced to the characters RFC 6750 allows in
/// it, so hostile scope strings or descriptions can neither break out of the quoted string
/// nor inject header content.
pub fn www_authenticate(
    error: Option<&str>,
    description: Option<&str>,
    scope: Option<&Scopes>,
    resource: &ProtectedResource,
) -> String {
    // Written into one buffer: refusals are the hot path of a flood of bad tokens.
    let mut out = String::with_capacity(256);
    out.push_str("Bearer ");
    if let Some(error) = error {
        out.push_str("error=\"");
        push_clean(&mut out, error, is_error_char);
        out.push_str("\", ");
    }
    if let Some(description) = description {
        out.push_str("error_description=\"");
        push_clean(&mut out, description, is_error_char);
        out.push_str("\", ");
    }
    if let Some(scope) = scope.filter(|s| !s.is_empty()) {
        let start = out.len();
        out.push_str("scope=\"");
        let opened = out.len();
        for token in scope.iter() {
            let before = out.len();
            if before > opened {
                out.push(' ');
            }
            let cleaned = out.len();
            push_clean(&mut out, token.as_str(), is_scope_char);
            if out.len() == cleaned {
                // Nothing of this scope survived the cleaning: drop its separator too.
                out.truncate(before);
            }
        }
        if out.len() == opened {
            out.truncate(start);
        } else {
            out.push_str("\", ");
        }
    }
    out.push_str("resource_metadata=\"");
    push_clean(&mut out, resource.metadata_url(), is_error_char);
    out.push('"');
    out
}

/// RFC 6750 §3: `error` and `error_description` use %x20-21 / %x23-5B / %x5D-7E.
fn is_error_char(c: char) -> bool {
    matches!(c, '\x20'..='\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

/// RFC 6749 §3.3: a scope token uses %x21 / %x23-5B / %x5D-7E.
fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

/// Appends the first 512 allowed characters of `s`.
fn push_clean(out: &mut String, s: &str, allowed: fn(char) -> bool) {
    out.extend(s.chars().filter(|c| allowed(*c)).take(512));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> ProtectedResource {
        ProtectedResource::new("http://localhost:8000", "/mcp").unwrap()
    }

    #[test]
    fn hostile_scopes_cannot_break_the_quoted_string() {
        let scopes = Scopes::from_space_separated("a\"b c\\d e\r\nX-Injected:1 ok");
        let h = www_authenticate(
            Some("insufficient_scope"),
            Some("x\"y"),
            Some(&scopes),
            &resource(),
        );
        assert!(HeaderValue::from_str(&h).is_ok());
        assert_eq!(h.matches('"').count(), 8, "{h}");
        assert!(h.contains("scope=\"ab cd eX-Injected:1 ok\""), "{h}");
    }

    #[test]
    fn missing_token_challenge_has_no_error_parameter() {
        let h = www_authenticate(
            None,
            None,
            Some(&Scopes::from_space_separated("mcp:read")),
            &resource(),
        );
        assert_eq!(
            h,
            "Bearer scope=\"mcp:read\", resource_metadata=\"http://localhost:8000/.well-known/oauth-protected-resource/mcp\""
        );
    }
}
