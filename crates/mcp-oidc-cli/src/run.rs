//! Building and running the protected demo server from resolved settings.

use std::future::Future;

use mcp_oidc::McpOidc;
use tokio_util::sync::CancellationToken;

use crate::config::Resolved;
use crate::demo::DemoServer;

/// The router of the protected demo server.
pub fn demo_router(resolved: Resolved, cancel: CancellationToken) -> axum::Router {
    let mut server = McpOidc::with_arc(resolved.resource, resolved.verifier)
        .token_cache(resolved.cache)
        .tool_policies(DemoServer::policies())
        .authorization_server_metadata(resolved.as_metadata)
        .allowed_hosts(resolved.allowed_hosts)
        .allowed_origins(resolved.allowed_origins)
        .request_timeout(resolved.request_timeout)
        .max_body_bytes(resolved.max_body_bytes)
        .cancellation_token(cancel);
    if resolved.stateless {
        server = server.stateless(resolved.json_response);
    }
    if resolved.auth_disabled {
        server = server.without_auth_for_testing();
    }
    server.router(DemoServer::new)
}

/// Serves the demo server on `listener` until `shutdown`.
pub async fn serve_demo(
    resolved: Resolved,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let router = demo_router(resolved, cancel.clone());
    let result = mcp_oidc::serve(listener, router, shutdown).await;
    cancel.cancel();
    result
}
