//! Discovery documents served by the MCP server: RFC 9728 protected-resource metadata and,
//! for clients that look for it on the MCP server's origin, the authorization server's
//! metadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::{CACHE_CONTROL, RETRY_AFTER};
use http::{HeaderValue, Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};
use tower_http::cors::{Any, CorsLayer};

use super::ProtectedResource;
use crate::token::discover;

/// The RFC 9728 document.
#[derive(Debug, Clone, Serialize)]
pub struct ProtectedResourceMetadata {
    /// The canonical URL of the MCP endpoint.
    pub resource: String,
    /// Issuers of the authorization servers that issue tokens for it.
    pub authorization_servers: Vec<String>,
    /// Scopes a client may request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// Always `["header"]`: tokens in query strings or bodies are refused.
    pub bearer_methods_supported: Vec<String>,
    /// A human-readable name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Where to read about this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_documentation: Option<String>,
}

impl ProtectedResourceMetadata {
    /// The metadata of `resource`.
    pub fn for_resource(resource: &ProtectedResource) -> Self {
        Self {
            resource: resource.resource().to_owned(),
            authorization_servers: resource.authorization_servers.clone(),
            scopes_supported: resource
                .scopes_supported
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            bearer_methods_supported: vec!["header".to_owned()],
            resource_name: resource.resource_name.clone(),
            resource_documentation: resource.resource_documentation.clone(),
        }
    }
}

/// What to serve at `/.well-known/oauth-authorization-server` and
/// `/.well-known/openid-configuration` on the MCP server's own origin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MetadataSource {
    /// Nothing (404): clients follow `authorization_servers` from the resource metadata.
    None,
    /// The upstream provider's own document, fetched by discovery and cached.
    Upstream(String),
}

/// A fetched document and when it was fetched.
type CachedDocument = Option<(Instant, Arc<Map<String, Value>>)>;

struct MirrorState {
    source: MetadataSource,
    client: reqwest::Client,
    cached: tokio::sync::Mutex<CachedDocument>,
}

const MIRROR_TTL: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct AppState {
    prm: Arc<String>,
    mirror: Arc<MirrorState>,
}

/// Routes for the discovery documents, with CORS open to any origin (they are public and
/// browser-based clients must be able to read them).
pub fn metadata_router(resource: &ProtectedResource, as_metadata: MetadataSource) -> Router {
    let prm = serde_json::to_string(&ProtectedResourceMetadata::for_resource(resource))
        .unwrap_or_else(|_| "{}".to_owned());
    let state = AppState {
        prm: Arc::new(prm),
        mirror: Arc::new(MirrorState {
            source: as_metadata,
            client: crate::token::provider_http_client(Duration::from_secs(5)),
            cached: tokio::sync::Mutex::new(None),
        }),
    };
    let base_path = resource.base_url().path().trim_end_matches('/');
    let full_path = format!("{base_path}{}", resource.mcp_path());
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers(Any);
    let mirror = matches!(state.mirror.source, MetadataSource::Upstream(_));
    let router = Router::new()
        .route("/.well-known/oauth-protected-resource", get(prm_handler))
        .route(
            &format!("/.well-known/oauth-protected-resource{full_path}"),
            get(prm_handler),
        );
    // Without a mirror the routes stay free for an authorization server on this origin
    // (the OAuth proxy serves its own metadata there).
    let router = if mirror {
        router
            .route(
                "/.well-known/oauth-authorization-server",
                get(mirror_handler),
            )
            .route("/.well-known/openid-configuration", get(mirror_handler))
    } else {
        router
    };
    router.layer(cors).with_state(state)
}

async fn prm_handler(State(state): State<AppState>) -> Response {
    let mut response = (
        [(http::header::CONTENT_TYPE, "application/json")],
        state.prm.as_str().to_owned(),
    )
        .into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

async fn mirror_handler(State(state): State<AppState>) -> Response {
    let MetadataSource::Upstream(url) = &state.mirror.source else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut cached = state.mirror.cached.lock().await;
    if let Some((at, doc)) = cached.as_ref()
        && at.elapsed() < MIRROR_TTL
    {
        return axum::Json(doc.as_ref().clone()).into_response();
    }
    match discover(&state.mirror.client, url).await {
        Ok(meta) => {
            let doc = Arc::new(meta.document);
            *cached = Some((Instant::now(), doc.clone()));
            axum::Json(doc.as_ref().clone()).into_response()
        }
        Err(e) => {
            if let Some((_, doc)) = cached.as_ref() {
                tracing::warn!(error = %e, "authorization server metadata refresh failed; serving the cached copy");
                return axum::Json(doc.as_ref().clone()).into_response();
            }
            tracing::warn!(error = %e, "cannot fetch the authorization server metadata");
            let body = serde_json::json!({
                "error": "temporarily_unavailable",
                "error_description": "the authorization server's metadata cannot be fetched right now",
            });
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}
