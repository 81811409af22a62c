//! Discovery: the authorization-server metadata (RFC 8414, and the OpenID form) and the
//! proxy's signing keys.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::CACHE_CONTROL;
use serde_json::json;

use super::Shared;

pub(super) async fn metadata(State(inner): State<Shared>) -> Response {
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
        // `openid` granted brings an ID token (OpenID Connect Discovery §3 requires this).
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "sub", "aud", "azp", "iat", "exp", "auth_time", "nonce",
            "email", "email_verified", "name", "given_name", "family_name", "preferred_username",
            "nickname", "picture"],
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

pub(super) async fn jwks(State(inner): State<Shared>) -> Response {
    let mut response = axum::Json(inner.signing.jwks()).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
