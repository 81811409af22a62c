//! Probes for process supervisors and load balancers: `GET /healthz` (liveness) and
//! `GET /readyz` (readiness), turned on with [`McpOidc::health_probes`](crate::McpOidc::health_probes).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::{CACHE_CONTROL, RETRY_AFTER};
use serde_json::json;

use crate::token::TokenVerifier;

/// The probe routes. `verifier` is `None` when authorization is off (always ready then).
pub(crate) fn router(verifier: Option<Arc<dyn TokenVerifier>>) -> Router {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(verifier)
}

/// Answered whenever the process serves requests at all.
async fn alive() -> Response {
    ([(CACHE_CONTROL, "no-store")], Json(json!({"status": "ok"}))).into_response()
}

/// 200 once tokens can be checked; 503 with `Retry-After` while they cannot (the provider's
/// keys never loaded), when every MCP request would get 503 too.
async fn ready(State(verifier): State<Option<Arc<dyn TokenVerifier>>>) -> Response {
    match verifier.as_deref().map(|v| v.ready()).unwrap_or(Ok(())) {
        Ok(()) => (
            [(CACHE_CONTROL, "no-store")],
            Json(json!({"status": "ready"})),
        )
            .into_response(),
        Err(u) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (CACHE_CONTROL, "no-store".to_owned()),
                (RETRY_AFTER, u.retry_after.as_secs().max(1).to_string()),
            ],
            Json(json!({"status": "unavailable", "detail": u.detail})),
        )
            .into_response(),
    }
}
