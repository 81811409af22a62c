//! The MCP endpoint as a service that is cheap to clone.

use std::convert::Infallible;
use std::fmt::Display;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::BoxBody;
use rmcp::ServerHandler;
use rmcp::transport::streamable_http_server::{SessionManager, StreamableHttpService};
use tower::Service;

/// rmcp's [`StreamableHttpService`] shared behind an `Arc`.
///
/// axum clones a route's service for every request, a tower middleware clones its inner
/// service again, and rmcp's service clones itself once more inside `call`. Each of those
/// clones copies the transport configuration: the host and origin allow-lists (a dozen
/// strings) and a cancellation token whose clone and drop take a lock. Sharing one instance
/// turns each of them into a reference-count increment; on a small `tools/call` that is a
/// few percent of the server's CPU.
///
/// ```
/// use std::sync::Arc;
/// use axum::Router;
/// use mcp_oidc::mcp::SharedMcpService;
/// use rmcp::transport::streamable_http_server::{
///     StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
/// };
///
/// #[derive(Clone)]
/// struct Hello;
/// impl rmcp::ServerHandler for Hello {}
///
/// let mcp = StreamableHttpService::new(
///     || Ok(Hello),
///     Arc::new(NeverSessionManager::default()),
///     StreamableHttpServerConfig::default(),
/// );
/// let app: Router = Router::new().nest_service("/mcp", SharedMcpService::new(mcp));
/// ```
pub struct SharedMcpService<S, M>(Arc<StreamableHttpService<S, M>>);

impl<S, M> SharedMcpService<S, M> {
    /// Shares `service`.
    pub fn new(service: StreamableHttpService<S, M>) -> Self {
        Self(Arc::new(service))
    }
}

impl<S, M> Clone for SharedMcpService<S, M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<B, S, M> Service<Request<B>> for SharedMcpService<S, M>
where
    B: Body + Send + 'static,
    B::Error: Display,
    B::Data: Send + 'static,
    S: ServerHandler + Send + 'static,
    M: SessionManager,
{
    type Response = Response<BoxBody<Bytes, Infallible>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // rmcp's service has no back-pressure of its own either.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move { Ok(service.handle(request).await) })
    }
}
