//! Building and running the protected demo server from resolved settings.

use std::future::Future;

use std::sync::Arc;

use mcp_oidc::McpOidc;
use mcp_oidc::proxy::OAuthProxy;
use mcp_oidc::store::{MemoryStore, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

use crate::config::{Resolved, StoreChoice};
use crate::demo::{DemoServer, WRITE_SCOPE};

/// The router of the protected demo server (with the OAuth proxy when configured).
pub async fn demo_router(
    resolved: Resolved,
    cancel: CancellationToken,
) -> anyhow::Result<axum::Router> {
    let proxy = match &resolved.proxy {
        Some(plan) => {
            let store: Arc<dyn Store> = match &plan.store {
                StoreChoice::Memory => Arc::new(MemoryStore::new()),
                StoreChoice::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            };
            let mut config = plan.config.clone();
            // Scopes the demo's tools require must be grantable, or step-up could never succeed.
            if !config.scopes_supported.iter().any(|s| s == WRITE_SCOPE) {
                config.scopes_supported.push(WRITE_SCOPE.to_owned());
            }
            Some(OAuthProxy::new(config, store).await?)
        }
        None => None,
    };
    let mut server = McpOidc::with_arc(resolved.resource, resolved.verifier)
        .token_cache(resolved.cache)
        .tool_policies(DemoServer::policies())
        .authorization_server_metadata(resolved.as_metadata)
        .allowed_hosts(resolved.allowed_hosts)
        .allowed_origins(resolved.allowed_origins)
        .request_timeout(resolved.request_timeout)
        .max_body_bytes(resolved.max_body_bytes)
        .session_hibernation(resolved.session_hibernation)
        .cancellation_token(cancel);
    if resolved.stateless {
        server = server.stateless(resolved.json_response);
    }
    if resolved.auth_disabled {
        server = server.without_auth_for_testing();
    }
    if let Some(proxy) = &proxy {
        server = server.with_oauth_proxy(proxy);
    }
    Ok(server.router(DemoServer::new))
}

/// Serves the demo server on `listener` until `shutdown`.
pub async fn serve_demo(
    resolved: Resolved,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let router = demo_router(resolved, cancel.clone())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let result = mcp_oidc::serve(listener, router, shutdown).await;
    cancel.cancel();
    result
}
