//! The provider object, its router and the token minting shared by all grants.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

use crate::config::{Claims, MockConfig};
use crate::endpoints;
use crate::error::{ErrorCode, MockError, OAuthError};
use crate::keys::{KeyRing, SigningKey, b64url, sha256};
use crate::state::{AccessRecord, RefreshRecord, State, now, random_token, token_key};

/// Claims released by each standard scope (OpenID Connect Core §5.4).
const SCOPE_CLAIMS: &[(&str, &[&str])] = &[
    (
        "profile",
        &[
            "name",
            "family_name",
            "given_name",
            "middle_name",
            "nickname",
            "preferred_username",
            "profile",
            "picture",
            "website",
            "gender",
            "birthdate",
            "zoneinfo",
            "locale",
            "updated_at",
        ],
    ),
    ("email", &["email", "email_verified"]),
    ("address", &["address"]),
    ("phone", &["phone_number", "phone_number_verified"]),
];

/// Claim names the provider sets itself; a user's claims can never override them.
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "auth_time",
    "nonce",
    "at_hash",
    "c_hash",
    "azp",
    "client_id",
    "scope",
    "acr",
    "amr",
    "sid",
    "cnf",
    "typ",
];

/// The user claims that a set of granted scopes releases.
///
/// Standard OIDC claims are released only with their scope (`profile`,
/// `email`, `address`, `phone`); any other (custom) claim of the user, such as
/// `roles` or `groups`, is always released, as the reference mock does.
pub(crate) fn scoped_claims(claims: &Claims, scope: &str) -> Claims {
    let granted: Vec<&str> = scope.split_whitespace().collect();
    claims
        .iter()
        .filter(|(name, _)| !RESERVED_CLAIMS.contains(&name.as_str()))
        .filter(|(name, _)| {
            match SCOPE_CLAIMS
                .iter()
                .find(|(_, names)| names.contains(&name.as_str()))
            {
                Some((scope, _)) => granted.contains(scope),
                None => true,
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(crate) fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split_whitespace().any(|s| s == wanted)
}

pub(crate) struct Inner {
    pub config: MockConfig,
    pub keys: RwLock<KeyRing>,
    pub state: Mutex<State>,
}

/// What one successful token request grants.
pub(crate) struct Grant {
    pub issuer: String,
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    pub aud: Vec<String>,
    pub resources: Vec<String>,
    /// `None` for client_credentials (no end user, no ID or refresh token).
    pub auth_time: Option<u64>,
    pub nonce: Option<String>,
    pub grant_id: String,
}

impl Inner {
    /// Locks the state. A poisoned lock only means another request panicked
    /// mid-update; the maps stay structurally valid, so keep serving.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn signing_key(&self) -> Arc<SigningKey> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current()
    }

    pub(crate) fn jwks(&self) -> Value {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).jwks()
    }

    /// The issuer URL as seen by the caller: `http://{Host}`, or from the
    /// `X-Forwarded-*` headers when configured to trust them.
    pub(crate) fn issuer(&self, headers: &HeaderMap) -> Result<String, OAuthError> {
        let header_str = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or_default().trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut scheme = "http".to_owned();
        let mut host = header_str(header::HOST.as_str());
        if self.config.trust_forwarded_headers {
            if let Some(proto) = header_str("x-forwarded-proto")
                && (proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("http"))
            {
                scheme = proto.to_ascii_lowercase();
            }
            if let Some(fwd_host) = header_str("x-forwarded-host") {
                host = Some(fwd_host);
            }
            if let (Some(port), Some(h)) = (header_str("x-forwarded-port"), host.as_mut()) {
                let has_port = h.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
                let default =
                    (scheme == "https" && port == "443") || (scheme == "http" && port == "80");
                if !has_port && !default && port.bytes().all(|b| b.is_ascii_digit()) {
                    h.push(':');
                    h.push_str(&port);
                }
            }
        }
        let host = host.unwrap_or_else(|| "localhost".to_owned());
        let valid = host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
        if !valid {
            return Err(OAuthError::json(
                ErrorCode::InvalidRequest,
                "invalid Host header",
            ));
        }
        Ok(format!("{scheme}://{host}"))
    }

    /// Mints access (and ID and refresh) tokens and records them.
    pub(crate) fn issue(&self, grant: Grant) -> Result<Value, OAuthError> {
        let iat = now();
        let max_age = self.config.token_max_age.as_secs();
        let exp = iat.saturating_add(max_age);
        let jti = uuid::Uuid::new_v4().to_string();
        let key = self.signing_key();
        let user_claims = match grant.auth_time {
            Some(_) => {
                let state = self.state();
                state
                    .users
                    .get(&grant.sub)
                    .map(|c| scoped_claims(c, &grant.scope))
                    .unwrap_or_default()
            }
            None => Claims::new(),
        };

        let access_token = if self.config.opaque_access_tokens {
            random_token()
        } else {
            let mut claims = user_claims.clone();
            claims.insert("iss".into(), json!(grant.issuer));
            claims.insert("sub".into(), json!(grant.sub));
            claims.insert("aud".into(), audience_value(&grant.aud));
            claims.insert("client_id".into(), json!(grant.client_id));
            claims.insert("scope".into(), json!(grant.scope));
            claims.insert("iat".into(), json!(iat));
            claims.insert("exp".into(), json!(exp));
            claims.insert("jti".into(), json!(jti));
            if let Some(auth_time) = grant.auth_time {
                claims.insert("auth_time".into(), json!(auth_time));
            }
            key.sign_jwt("at+jwt", &Value::Object(claims))
                .map_err(|_| signing_failed())?
        };

        let mut response = Map::new();
        let id_token = match grant.auth_time {
            Some(auth_time) if has_scope(&grant.scope, "openid") => {
                let mut claims = user_claims;
                claims.insert("iss".into(), json!(grant.issuer));
                claims.insert("sub".into(), json!(grant.sub));
                claims.insert("aud".into(), json!([grant.client_id]));
                claims.insert("iat".into(), json!(iat));
                claims.insert("exp".into(), json!(exp));
                claims.insert("auth_time".into(), json!(auth_time));
                if let Some(nonce) = &grant.nonce {
                    claims.insert("nonce".into(), json!(nonce));
                }
                // OIDC Core §3.1.3.6: left half of the hash of the ASCII token.
                let digest = sha256(access_token.as_bytes());
                claims.insert("at_hash".into(), json!(b64url(&digest[..16])));
                Some(
                    key.sign_jwt("JWT", &Value::Object(claims))
                        .map_err(|_| signing_failed())?,
                )
            }
            _ => None,
        };
        let refresh_token =
            (grant.auth_time.is_some() && self.config.issue_refresh_token).then(random_token);

        {
            let mut state = self.state();
            state.maybe_prune(iat);
            state.access_tokens.insert(
                token_key(&access_token),
                AccessRecord {
                    sub: grant.sub.clone(),
                    client_id: grant.client_id.clone(),
                    scope: grant.scope.clone(),
                    aud: grant.aud.clone(),
                    iat,
                    exp,
                    jti,
                    grant_id: grant.auth_time.map(|_| grant.grant_id.clone()),
                    issuer: grant.issuer.clone(),
                    has_user: grant.auth_time.is_some(),
                },
            );
            if let (Some(refresh), Some(auth_time)) = (&refresh_token, grant.auth_time) {
                state.refresh_tokens.insert(
                    token_key(refresh),
                    RefreshRecord {
                        sub: grant.sub.clone(),
                        client_id: grant.client_id.clone(),
                        scope: grant.scope.clone(),
                        aud: grant.aud.clone(),
                        resources: grant.resources.clone(),
                        iat,
                        exp: iat.saturating_add(self.config.refresh_token_max_age.as_secs()),
                        grant_id: grant.grant_id.clone(),
                        auth_time,
                        issuer: grant.issuer.clone(),
                    },
                );
            }
        }

        response.insert("access_token".into(), json!(access_token));
        response.insert("token_type".into(), json!("Bearer"));
        response.insert("expires_in".into(), json!(max_age));
        response.insert("scope".into(), json!(grant.scope));
        if let Some(id_token) = id_token {
            response.insert("id_token".into(), json!(id_token));
        }
        if let Some(refresh) = refresh_token {
            response.insert("refresh_token".into(), json!(refresh));
        }
        tracing::info!(client_id = %grant.client_id, sub = %grant.sub, scope = %grant.scope, "issued tokens");
        Ok(Value::Object(response))
    }

    /// `aud` for a token request: the RFC 8707 resources, else the configured
    /// default audience, else the client id.
    pub(crate) fn audience(&self, resources: &[String], client_id: &str) -> Vec<String> {
        if !resources.is_empty() {
            resources.to_vec()
        } else if let Some(aud) = &self.config.default_audience {
            vec![aud.clone()]
        } else {
            vec![client_id.to_owned()]
        }
    }
}

fn signing_failed() -> OAuthError {
    OAuthError::server_error("could not sign the token")
}

/// A single audience as a string, several as an array (RFC 7519 §4.1.3).
pub(crate) fn audience_value(aud: &[String]) -> Value {
    match aud {
        [one] => json!(one),
        many => json!(many),
    }
}

/// Browser-based MCP clients (e.g. inspectors) call discovery, registration
/// and the token endpoint from another origin, as the reference mock allows.
/// No credentials mode: tokens travel in headers or bodies, never cookies.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

/// A mock OpenID provider. Cheap to clone: all clones share one state.
#[derive(Clone)]
pub struct MockProvider {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl MockProvider {
    /// Creates a provider: generates (or loads, with a key file) the signing
    /// key and stores the predefined users.
    pub fn new(config: MockConfig) -> Result<Self, MockError> {
        let keys = KeyRing::new(
            config.signing_alg,
            config.key_file.clone(),
            config.key_grace_period,
        )?;
        let mut state = State::default();
        for (sub, claims) in &config.users {
            if !state.users.contains_key(sub) {
                state.predefined.push(sub.clone());
            }
            state.users.insert(sub.clone(), claims.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                keys: RwLock::new(keys),
                state: Mutex::new(state),
            }),
        })
    }

    /// The configuration the provider runs with.
    pub fn config(&self) -> &MockConfig {
        &self.inner.config
    }

    /// An axum router with every endpoint, to be served at the root of a host.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(endpoints::discovery),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(endpoints::discovery),
            )
            .route("/jwks", get(endpoints::jwks))
            .route(
                "/oauth2/authorize",
                get(endpoints::authorize).post(endpoints::authorize),
            )
            .route("/oauth2/token", post(endpoints::token))
            .route("/oauth2/introspect", post(endpoints::introspect))
            .route("/oauth2/revoke", post(endpoints::revoke))
            .route("/oauth2/clients", post(endpoints::register_client))
            .route(
                "/oauth2/end_session",
                get(endpoints::end_session).post(endpoints::end_session),
            )
            .route(
                "/userinfo",
                get(endpoints::userinfo).post(endpoints::userinfo),
            )
            .route("/users/{sub}", put(endpoints::put_user))
            .route(
                "/users/{sub}/revoke-tokens",
                post(endpoints::revoke_user_tokens),
            )
            .route("/keys/rotate", post(endpoints::rotate_key))
            .with_state(Arc::clone(&self.inner))
            .layer(cors())
    }

    /// Creates or replaces a user's claims (`sub` inside `claims` is ignored).
    pub fn put_user(&self, sub: &str, mut claims: Map<String, Value>) {
        claims.remove("sub");
        self.inner.state().users.insert(sub.to_owned(), claims);
    }

    /// Invalidates every access and refresh token and pending code of a user.
    pub fn revoke_user_tokens(&self, sub: &str) {
        self.inner.state().revoke_user(sub);
    }

    /// Makes a new signing key current and returns its `kid`. The previous
    /// public key stays in the JWKS for the configured grace period.
    ///
    /// Generating a key pair only fails if the system's crypto library is
    /// broken; the current key is then kept and its `kid` returned.
    pub fn rotate_key(&self) -> String {
        let alg = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .alg();
        match SigningKey::generate(alg) {
            Ok(key) => {
                let kid = self
                    .inner
                    .keys
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .rotate(key);
                tracing::info!(%kid, "rotated signing key");
                kid
            }
            Err(e) => {
                tracing::error!(error = %e, "key rotation failed; keeping the current key");
                self.inner.signing_key().kid().to_owned()
            }
        }
    }

    /// The `kid` of the key that signs new tokens.
    pub fn current_kid(&self) -> String {
        self.inner.signing_key().kid().to_owned()
    }

    /// The published JWKS (public keys only).
    pub fn jwks(&self) -> Value {
        self.inner.jwks()
    }

    /// Serves the provider on `listener` until `shutdown` completes.
    /// Accepted sockets get `TCP_NODELAY`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `addr` (e.g. `"127.0.0.1:0"`) and serves in a background task.
    pub async fn spawn(self, addr: &str) -> std::io::Result<RunningMock> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let provider = self.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                // Either an explicit signal or the sender being dropped.
                let _ = rx.await;
            };
            if let Err(e) = self.serve(listener, shutdown).await {
                tracing::error!(error = %e, "mock provider stopped with an error");
            }
        });
        Ok(RunningMock {
            addr,
            provider,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// A provider serving in the background; stops when shut down or dropped.
#[derive(Debug)]
pub struct RunningMock {
    /// The bound address.
    pub addr: SocketAddr,
    provider: MockProvider,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningMock {
    /// The issuer URL clients should use: `http://localhost:{port}`.
    ///
    /// `localhost` rather than the IP, because the issuer is derived from the
    /// `Host` header and most tooling talks to `localhost`.
    pub fn issuer(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    /// The running provider (to add users or rotate keys while it serves).
    pub fn provider(&self) -> &MockProvider {
        &self.provider
    }

    /// Signals the server to stop (in-flight requests finish).
    pub fn shutdown(mut self) {
        self.signal();
    }

    /// Signals the server to stop and waits until it has.
    pub async fn stop(mut self) {
        self.signal();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn signal(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        self.signal();
    }
}
