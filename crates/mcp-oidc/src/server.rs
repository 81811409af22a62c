//! Putting it together: an rmcp server behind the bearer layer, with its discovery
//! documents, on a tuned listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use http::StatusCode;
use rmcp::ServerHandler;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::mcp::{Authenticated, HibernatingSessions, SharedMcpService, ToolPolicies};
use crate::rebinding::HostOriginLayer;
use crate::resource::{
    BearerAuthLayer, LayerSettings, MetadataSource, ProtectedResource, SessionBindings,
    metadata_router,
};
use crate::token::{TokenCache, TokenVerifier};

/// How long a session may be idle before it hibernates, unless told otherwise
/// ([`McpOidc::session_hibernation`]).
pub const DEFAULT_SESSION_HIBERNATION: Duration = Duration::from_secs(300);

/// How often, by default, an instance asks the session store whether a session it holds
/// was deleted through another instance ([`McpOidc::session_store_recheck`]).
pub const DEFAULT_SESSION_STORE_RECHECK: Duration = crate::resource::DEFAULT_STORE_RECHECK;

/// Builds the router of a protected MCP server.
///
/// ```no_run
/// use mcp_oidc::McpOidc;
/// use mcp_oidc::resource::ProtectedResource;
/// use mcp_oidc::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource};
/// # #[derive(Clone)] struct MyServer;
/// # impl rmcp::ServerHandler for MyServer {}
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut resource = ProtectedResource::new("http://localhost:8000", "/mcp")?;
/// resource.authorization_servers = vec!["http://localhost:9400".into()];
/// let verifier = JwtVerifier::new(JwtConfig::new(
///     "http://localhost:9400",
///     KeySource::Discovery("http://localhost:9400".into()),
///     AudiencePolicy::OneOf(vec![resource.resource().into()]),
/// ))?;
/// let app = McpOidc::new(resource, verifier).router(|| MyServer);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// mcp_oidc::serve(listener, app, mcp_oidc::server::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
pub struct McpOidc {
    resource: ProtectedResource,
    verifier: Arc<dyn TokenVerifier>,
    cache: TokenCache,
    policies: ToolPolicies,
    as_metadata: MetadataSource,
    stateful: bool,
    json_response: bool,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    allow_loopback: bool,
    request_timeout: Duration,
    max_body_bytes: usize,
    refusal_log_per_second: u64,
    cancel: CancellationToken,
    session_hibernation: Option<Duration>,
    session_store: Option<Arc<dyn crate::store::Store>>,
    session_store_recheck: Duration,
    auth_enabled: bool,
    health_probes: bool,
    metrics: bool,
    extra_routes: Option<Router>,
    proxy: Option<crate::proxy::OAuthProxy>,
}

impl McpOidc {
    /// A server for `resource` accepting tokens that `verifier` accepts. Defaults: stateful
    /// sessions bound to their user, a 10,000-token cache, 30 s request timeout, 4 MiB body
    /// limit, `Host`/`Origin` limited to the resource's own origin (plus loopback when the
    /// resource itself is on loopback).
    pub fn new(resource: ProtectedResource, verifier: impl TokenVerifier) -> Self {
        Self::with_arc(resource, Arc::new(verifier))
    }

    /// Like [`McpOidc::new`] with a shared verifier.
    pub fn with_arc(resource: ProtectedResource, verifier: Arc<dyn TokenVerifier>) -> Self {
        let allow_loopback = resource.is_loopback();
        Self {
            resource,
            verifier,
            cache: TokenCache::default(),
            policies: ToolPolicies::default(),
            as_metadata: MetadataSource::None,
            stateful: true,
            json_response: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            allow_loopback,
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
            refusal_log_per_second: LayerSettings::default().refusal_log_per_second,
            cancel: CancellationToken::new(),
            session_hibernation: Some(DEFAULT_SESSION_HIBERNATION),
            session_store: None,
            session_store_recheck: DEFAULT_SESSION_STORE_RECHECK,
            auth_enabled: true,
            health_probes: false,
            metrics: false,
            extra_routes: None,
            proxy: None,
        }
    }

    /// Per-tool rules.
    pub fn tool_policies(mut self, policies: ToolPolicies) -> Self {
        self.policies = policies;
        self
    }

    /// The verified-token cache ([`TokenCache::disabled`] to verify every request).
    pub fn token_cache(mut self, cache: TokenCache) -> Self {
        self.cache = cache;
        self
    }

    /// How many refusals per second are logged in full (default 20); the rest are counted
    /// in a summary line. See [`LayerSettings::refusal_log_per_second`].
    pub fn refusal_log_per_second(mut self, lines: u64) -> Self {
        self.refusal_log_per_second = lines;
        self
    }

    /// Serve without sessions (each POST stands alone), answering with plain JSON when
    /// `json_response` is set.
    pub fn stateless(mut self, json_response: bool) -> Self {
        self.stateful = false;
        self.json_response = json_response;
        self
    }

    /// What to serve at the authorization-server metadata locations on this origin.
    pub fn authorization_server_metadata(mut self, source: MetadataSource) -> Self {
        self.as_metadata = source;
        self
    }

    /// More accepted `Host` values (e.g. the name behind a reverse proxy).
    pub fn allowed_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.allowed_hosts.extend(hosts);
        self
    }

    /// More accepted browser `Origin`s.
    pub fn allowed_origins(mut self, origins: impl IntoIterator<Item = String>) -> Self {
        self.allowed_origins.extend(origins);
        self
    }

    /// Also accept loopback `Host`/`Origin` values (development).
    pub fn allow_loopback(mut self, allow: bool) -> Self {
        self.allow_loopback = allow;
        self
    }

    /// Longest time a request may take before its response starts.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Largest request body.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How long a session may sit idle (no request, no message from its handler) before its
    /// memory is released: rmcp's worker for it, its channels and the handler instance stop,
    /// and only its owner and the client's `initialize` parameters are kept. Its next request
    /// brings it back transparently, under the same id and owner, with a new handler from the
    /// factory (rmcp replays `initialize` to it). Default: 5 minutes, the idle time after which
    /// rmcp alone would end the session for good.
    ///
    /// Idle means no message in either direction and no request still being answered: a
    /// tool call that runs longer than the period without sending anything keeps its
    /// session (rmcp's own keep-alive, which counts only messages, would cut it off).
    ///
    /// `None` turns hibernation off: an idle session then ends after rmcp's keep-alive
    /// (5 minutes) and its client must initialize a new one. Handlers that keep per-session
    /// state in themselves, or send server-initiated messages from background tasks long
    /// after the last request, see a fresh handler after hibernation; give them a longer
    /// period or `None`.
    pub fn session_hibernation(mut self, idle: Option<Duration>) -> Self {
        self.session_hibernation = idle;
        self
    }

    /// Also keeps every session (its owner and the client's `initialize` parameters) in
    /// `store`, so that sessions survive a restart and are resumed by any instance sharing
    /// the store, exactly as after hibernation. A stored session expires after 24 hours
    /// without a request. Without this they live in memory only. The same store can keep
    /// the provider's keys for restarts while it is down:
    /// [`TokenVerifier::keep_keys_in`].
    pub fn persist_sessions(mut self, store: Arc<dyn crate::store::Store>) -> Self {
        self.session_store = Some(store);
        self
    }

    /// With [`McpOidc::persist_sessions`]: how long a session this instance holds is used
    /// before the store is asked again whether it still exists. A session deleted through
    /// another instance sharing the store is refused here (404) from then on, so this is
    /// how late such a DELETE can take effect. Each session in use costs one store read per
    /// period. Default [`DEFAULT_SESSION_STORE_RECHECK`] (5 seconds).
    pub fn session_store_recheck(mut self, every: Duration) -> Self {
        self.session_store_recheck = every;
        self
    }

    /// Cancelled on shutdown: ends open sessions and streams.
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Also serves `GET /healthz` (200 whenever the process serves) and `GET /readyz` (200
    /// once tokens can be verified; 503 with `Retry-After` while the provider's keys have
    /// never been loaded). Off by default, so that they cannot collide with routes of the
    /// application's own.
    pub fn health_probes(mut self, on: bool) -> Self {
        self.health_probes = on;
        self
    }

    /// Serves Prometheus metrics at `GET /metrics` (OpenMetrics text, see
    /// [`crate::metrics`]): requests by the bearer layer's decision, token-cache hits and
    /// misses, readiness and the sessions held. Off by default; the counts say nothing
    /// about who calls, but keep the route off the public internet at the reverse proxy.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Turns authorization off entirely. For benchmarks and protocol tests only: every
    /// caller is served, anonymously.
    pub fn without_auth_for_testing(mut self) -> Self {
        self.auth_enabled = false;
        self
    }

    /// Serves the OAuth proxy's authorization-server endpoints on this server, accepts the
    /// tokens it issues, and names it in the resource metadata.
    pub fn with_oauth_proxy(mut self, proxy: &crate::proxy::OAuthProxy) -> Self {
        self.resource.authorization_servers = vec![proxy.issuer().to_owned()];
        self.verifier = Arc::new(proxy.verifier());
        self.as_metadata = MetadataSource::None;
        // Revocation (code replay, refresh reuse) must reach tokens already verified.
        self.cache = TokenCache::new(10_000, Duration::from_secs(30), Duration::from_secs(30));
        let routes = proxy.router();
        self.extra_routes = Some(match self.extra_routes.take() {
            Some(r) => r.merge(routes),
            None => routes,
        });
        // Tools reach the proxy (for the caller's upstream token) through the request parts.
        self.proxy = Some(proxy.clone());
        self
    }

    /// The protected resource.
    pub fn resource(&self) -> &ProtectedResource {
        &self.resource
    }

    /// The `Host` and `Origin` values this server answers to, in rmcp's notation, but for
    /// the `Host` of the base URL, which each user of the lists adds its own way.
    fn allowed_hosts_and_origins(&self) -> (Vec<String>, Vec<String>) {
        let mut hosts = self.allowed_hosts.clone();
        let mut origins = vec![self.resource.origin()];
        origins.extend(self.allowed_origins.iter().cloned());
        if self.allow_loopback {
            hosts.extend(["localhost", "127.0.0.1", "::1", "[::1]"].map(String::from));
            origins.extend(
                ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"].map(String::from),
            );
        }
        (hosts, origins)
    }

    fn transport_config(&self) -> StreamableHttpServerConfig {
        let config = if self.auth_enabled {
            // The Host/Origin layer ahead of the bearer layer applies these lists to every
            // request of the MCP route; rmcp would only repeat it (parsing every entry of
            // both lists on every request). It still refuses a malformed or missing Host.
            StreamableHttpServerConfig::default()
                .disable_allowed_hosts()
                .with_allowed_origins(Vec::<String>::new())
        } else {
            // Only with auth off (benchmarks), where rmcp checks: its notation matches the
            // base URL's host on any port.
            let (mut hosts, origins) = self.allowed_hosts_and_origins();
            hosts.push(self.resource.authority());
            if let Some(host) = self.resource.base_url().host_str() {
                hosts.push(host.to_owned());
            }
            StreamableHttpServerConfig::default()
                .with_allowed_hosts(hosts)
                .with_allowed_origins(origins)
        };
        config
            .with_legacy_session_mode(self.stateful)
            .with_json_response(self.json_response)
            .with_max_request_body_bytes(self.max_body_bytes)
            .with_cancellation_token(self.cancel.child_token())
    }

    /// The complete router: the MCP endpoint behind the bearer layer, and the discovery
    /// documents. `factory` makes the rmcp handler (once per session, or per request when
    /// stateless); it is wrapped in [`Authenticated`] with this server's tool rules.
    pub fn router<H, F>(mut self, factory: F) -> Router
    where
        H: ServerHandler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        // RFC 9728 clients look for the authorization server here; with none named they
        // cannot log in. The verifier's issuers are the servers whose tokens count.
        if self.auth_enabled && self.resource.authorization_servers.is_empty() {
            self.resource.authorization_servers = self
                .verifier
                .issuers()
                .iter()
                .map(|i| i.as_str().to_owned())
                .collect();
            if self.resource.authorization_servers.is_empty() {
                tracing::warn!(
                    "the protected-resource metadata names no authorization server: set \
                     ProtectedResource::authorization_servers, or MCP clients cannot find where to log in"
                );
            }
        }
        let config = self.transport_config();
        let (hosts, origins) = self.allowed_hosts_and_origins();
        let rebinding =
            HostOriginLayer::new(&hosts, &origins).answering_to(self.resource.base_url());
        let policies = self.policies.clone();
        let make = move || Ok(Authenticated::with_policies(factory(), policies.clone()));
        let mcp_path = self.resource.mcp_path().to_owned();
        // One table for both jobs: who owns each session (checked by the bearer layer) and
        // what it takes to resume it (read by rmcp), so both are forgotten together.
        let transport_store = self.session_hibernation.is_some() || self.session_store.is_some();
        let mut sessions = self.stateful.then(|| {
            let sessions = match &self.session_store {
                Some(store) => SessionBindings::default()
                    .with_store(store.clone())
                    .store_recheck(self.session_store_recheck),
                None => SessionBindings::default(),
            };
            if transport_store {
                sessions.serving_as_transport_store()
            } else {
                sessions
            }
        });
        let mcp = if let Some(bindings) = sessions.take() {
            let mut config = config;
            match self.session_hibernation {
                Some(idle) => {
                    let manager = HibernatingSessions::new(idle);
                    let bindings = bindings.closing_with(closer(manager.clone()));
                    sessions = Some(attach(bindings, &mut config, transport_store));
                    let service = StreamableHttpService::new(make, manager, config);
                    Router::new().nest_service(&mcp_path, SharedMcpService::new(service))
                }
                None => {
                    let manager = Arc::new(LocalSessionManager::default());
                    let bindings = bindings.closing_with(closer(manager.clone()));
                    sessions = Some(attach(bindings, &mut config, transport_store));
                    let service = StreamableHttpService::new(make, manager, config);
                    Router::new().nest_service(&mcp_path, SharedMcpService::new(service))
                }
            }
        } else {
            Router::new().nest_service(
                &mcp_path,
                SharedMcpService::new(StreamableHttpService::new(
                    make,
                    Arc::new(NeverSessionManager::default()),
                    config,
                )),
            )
        };
        let probes = self
            .health_probes
            .then(|| crate::health::router(self.auth_enabled.then(|| self.verifier.clone())));
        let metrics = self.metrics.then(crate::metrics::Metrics::new);
        let metrics_route = metrics.clone().map(|m| {
            let verifier = self.auth_enabled.then(|| self.verifier.clone());
            crate::metrics::router(m, verifier, sessions.clone())
        });
        let mcp = if self.auth_enabled {
            let settings = LayerSettings {
                metrics,
                cache: self.cache,
                tool_policies: self.policies,
                sessions,
                max_body_bytes: self.max_body_bytes,
                refusal_log_per_second: self.refusal_log_per_second,
            };
            let bearer = BearerAuthLayer::new(self.verifier, self.resource.clone(), settings);
            // The Host/Origin check goes first, so a foreign one is refused before a token
            // is even read. One composed layer: the route is wrapped (its future boxed) once.
            mcp.layer(tower::ServiceBuilder::new().layer(rebinding).layer(bearer))
        } else {
            // Without authentication, rmcp's own Host/Origin check already comes first.
            drop(rebinding);
            tracing::warn!("AUTHORIZATION IS OFF: every caller is served anonymously");
            // Tools that ask for the caller (`Extension<AccessToken>`, `current_token()`)
            // get an anonymous one, so the auth-off server runs the same tool code.
            match anonymous_caller() {
                Some(caller) => mcp.layer(axum::Extension(caller)),
                None => mcp,
            }
        };
        let mut app = mcp.merge(metadata_router(&self.resource, self.as_metadata));
        if let Some(extra) = self.extra_routes {
            app = app.merge(extra);
        }
        if let Some(route) = metrics_route {
            app = app.merge(route);
        }
        if let Some(probes) = probes {
            app = app.merge(probes);
        }
        if let Some(proxy) = self.proxy {
            app = app.layer(axum::Extension(proxy));
        }
        app.layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            self.request_timeout,
        ))
    }
}

/// Makes `bindings` rmcp's session store too, when it keeps what resuming needs.
fn attach(
    bindings: SessionBindings,
    config: &mut StreamableHttpServerConfig,
    transport_store: bool,
) -> SessionBindings {
    if transport_store {
        config.session_store = Some(Arc::new(bindings.clone()));
    }
    bindings
}

/// Ends a live session in `manager`: for [`SessionBindings`], when the store shows that
/// the session was deleted through another instance.
fn closer<M>(manager: Arc<M>) -> crate::resource::SessionCloser
where
    M: rmcp::transport::streamable_http_server::session::SessionManager,
{
    Arc::new(move |id| {
        let manager = manager.clone();
        Box::pin(async move {
            if let Err(e) = manager.close_session(&id).await {
                tracing::debug!(target: "mcp_oidc::sessions", error = %e, "could not end a session deleted elsewhere");
            }
        })
    })
}

/// The caller of every request when authorization is off: subject `anonymous`, no scopes,
/// no audience, an empty token.
fn anonymous_caller() -> Option<crate::token::AccessToken> {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".to_owned(), "anonymous".into());
    crate::token::AccessToken::from_claims(
        crate::types::BearerToken::new(""),
        crate::token::TokenSource::Static,
        &crate::types::IssuerUrl::from("urn:mcp-oidc:auth-disabled"),
        claims,
    )
}

/// Serves `router` on `listener` until `shutdown` completes, then drains open requests.
/// Accepted sockets get `TCP_NODELAY`: without it, small SSE replies wait ~40 ms for
/// Nagle's algorithm and the peer's delayed ACK.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|socket| {
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
