//! Prometheus metrics: what the bearer layer decided, how its token cache fared, how the
//! provider's keys load, and whether tokens can be verified at all, in the OpenMetrics text
//! format.
//!
//! [`McpOidc::metrics`](crate::McpOidc::metrics) serves them at `GET /metrics`; with
//! [`BearerAuthLayer`](crate::resource::BearerAuthLayer) alone, put a [`Metrics`] in
//! [`LayerSettings::metrics`](crate::resource::LayerSettings::metrics) and serve
//! [`Metrics::render`] where you like. Labels hold only fixed words: never a token, a
//! subject or a session id.

use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::AuthError;
use crate::resource::SessionBindings;
use crate::token::{KeyRefreshes, TokenVerifier};

type Labels = Vec<(&'static str, &'static str)>;

/// The outcomes of the bearer layer; `Inner::outcomes` holds their counters in this order.
const OUTCOMES: [&str; 8] = [
    "passed",
    "missing_token",
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "session_not_found",
    "payload_too_large",
    "unavailable",
];

/// Counters and gauges of one protected server. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// One counter per outcome, resolved once so that counting is a single atomic add.
    outcomes: [Counter; OUTCOMES.len()],
    cache_hits: Counter,
    cache_misses: Counter,
    ready: Gauge,
    sessions: Gauge,
    key_loads_ok: Counter,
    key_loads_failed: Counter,
    /// The verifier's counts at the last render: the counters advance by the difference.
    key_loads_seen: Mutex<KeyRefreshes>,
}

impl Metrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "mcp_oidc_requests",
            "Requests to the MCP endpoint, by the bearer layer's decision",
            requests.clone(),
        );
        let outcomes = OUTCOMES.map(|o| requests.get_or_create_owned(&vec![("outcome", o)]));
        let lookups = Family::<Labels, Counter>::default();
        registry.register(
            "mcp_oidc_token_cache_lookups",
            "Lookups of presented tokens in the verified-token cache (refusals included)",
            lookups.clone(),
        );
        let cache_hits = lookups.get_or_create_owned(&vec![("result", "hit")]);
        let cache_misses = lookups.get_or_create_owned(&vec![("result", "miss")]);
        let ready = Gauge::default();
        registry.register(
            "mcp_oidc_ready",
            "1 when tokens can be verified (the provider's keys are loaded), else 0",
            ready.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "mcp_oidc_sessions",
            "MCP sessions this instance holds (live or hibernated)",
            sessions.clone(),
        );
        let key_loads = Family::<Labels, Counter>::default();
        registry.register(
            "mcp_oidc_key_loads",
            "Loads of the provider's signing keys (JWKS), by result; failures while keys are \
             cached mean the provider is unreachable but tokens are still verified",
            key_loads.clone(),
        );
        let key_loads_ok = key_loads.get_or_create_owned(&vec![("result", "ok")]);
        let key_loads_failed = key_loads.get_or_create_owned(&vec![("result", "failed")]);
        Self {
            inner: Arc::new(Inner {
                registry,
                outcomes,
                cache_hits,
                cache_misses,
                ready,
                sessions,
                key_loads_ok,
                key_loads_failed,
                key_loads_seen: Mutex::new(KeyRefreshes::default()),
            }),
        }
    }

    /// Counts a request the layer let through.
    pub(crate) fn passed(&self) {
        self.count("passed");
    }

    /// Counts a refused request under its error.
    pub(crate) fn refused(&self, error: &AuthError) {
        self.count(match error {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::InsufficientScope { .. } => "insufficient_scope",
            AuthError::SessionNotFound => "session_not_found",
            AuthError::PayloadTooLarge { .. } => "payload_too_large",
            AuthError::Unavailable(_) => "unavailable",
        });
    }

    /// Counts one request under `outcome`, one of [`OUTCOMES`] (a scan of eight words).
    fn count(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.inner.outcomes[i].inc();
        }
    }

    /// Counts a lookup in the verified-token cache.
    pub(crate) fn cache_lookup(&self, hit: bool) {
        if hit {
            self.inner.cache_hits.inc();
        } else {
            self.inner.cache_misses.inc();
        }
    }

    /// The metrics in the OpenMetrics text format (content type
    /// [`Metrics::CONTENT_TYPE`]), with the gauges set to `ready` and `sessions` (the number
    /// of sessions held; `None` on a stateless server) and the key loads brought up to
    /// `key_loads` ([`TokenVerifier::key_refreshes`]).
    pub fn render(&self, ready: bool, sessions: Option<usize>, key_loads: KeyRefreshes) -> String {
        if let Ok(mut seen) = self.inner.key_loads_seen.lock() {
            self.inner
                .key_loads_ok
                .inc_by(key_loads.succeeded.saturating_sub(seen.succeeded));
            self.inner
                .key_loads_failed
                .inc_by(key_loads.failed.saturating_sub(seen.failed));
            *seen = KeyRefreshes {
                succeeded: key_loads.succeeded.max(seen.succeeded),
                failed: key_loads.failed.max(seen.failed),
            };
        }
        self.inner.ready.set(i64::from(ready));
        self.inner
            .sessions
            .set(sessions.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }

    /// The content type of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
}

/// `GET /metrics`. `verifier` is `None` when authorization is off (always ready then).
pub(crate) fn router(
    metrics: Metrics,
    verifier: Option<Arc<dyn TokenVerifier>>,
    sessions: Option<SessionBindings>,
) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let ready = verifier.as_deref().is_none_or(|v| v.ready().is_ok());
            let loads = verifier
                .as_deref()
                .map(|v| v.key_refreshes())
                .unwrap_or_default();
            let text = metrics.render(ready, sessions.as_ref().map(SessionBindings::len), loads);
            std::future::ready(
                (
                    [
                        (http::header::CONTENT_TYPE, Metrics::CONTENT_TYPE),
                        (http::header::CACHE_CONTROL, "no-store"),
                    ],
                    text,
                )
                    .into_response(),
            )
        }),
    )
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_counted_under_its_own_label() {
        let m = Metrics::new();
        m.passed();
        m.passed();
        m.refused(&AuthError::MissingToken);
        m.refused(&AuthError::PayloadTooLarge { limit: 1 });
        m.cache_lookup(true);
        m.cache_lookup(false);
        m.cache_lookup(false);
        let loads = |succeeded, failed| KeyRefreshes { succeeded, failed };
        m.render(true, Some(3), loads(1, 2));
        let text = m.render(true, Some(3), loads(2, 2));
        for line in [
            "mcp_oidc_requests_total{outcome=\"passed\"} 2",
            "mcp_oidc_requests_total{outcome=\"missing_token\"} 1",
            "mcp_oidc_requests_total{outcome=\"payload_too_large\"} 1",
            "mcp_oidc_requests_total{outcome=\"invalid_token\"} 0",
            "mcp_oidc_token_cache_lookups_total{result=\"hit\"} 1",
            "mcp_oidc_token_cache_lookups_total{result=\"miss\"} 2",
            "mcp_oidc_ready 1",
            "mcp_oidc_sessions 3",
            "mcp_oidc_key_loads_total{result=\"ok\"} 2",
            "mcp_oidc_key_loads_total{result=\"failed\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
