//! The proxy's HTTP endpoints, one module per concern; this one mounts them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

use super::Inner;

mod authorize;
mod clients;
mod discovery;
mod errors;
mod tokens;

pub(crate) use clients::parse_registration;
pub(super) use tokens::upstream_access_token;
#[cfg(test)]
pub(super) use tokens::{renew_grant, revoke_grant};

use authorize::{authorize, callback, consent};
use clients::register;
use discovery::{jwks, metadata};
use tokens::{revoke, token};

const TRANSACTION_TTL: Duration = Duration::from_secs(600);
const CODE_TTL: Duration = Duration::from_secs(300);
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Longest `state` accepted at `/authorize`: clients send a random value of a few dozen
/// bytes, or at most a few hundred when they encode their own data in it.
const MAX_STATE_BYTES: usize = 2048;
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
