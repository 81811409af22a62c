//! The OAuth proxy: this server becomes the authorization server MCP clients see, and logs
//! users in at an upstream OIDC provider with one pre-registered confidential client.
//!
//! MCP clients register here (RFC 7591, or with a Client ID Metadata Document), are sent to
//! a consent page that names them, then to the upstream provider, which calls back to
//! `{base_url}/auth/callback`. The proxy keeps the upstream tokens (sealed, server-side) and
//! issues its own: short-lived ES256 JWT access tokens for this resource, and rotating
//! refresh tokens. Every record lives in a [`Store`].
//!
//! Endpoints (under the base URL's path): `/authorize`, `/consent`, `/auth/callback`,
//! `/token`, `/register`, `/revoke`, `/jwks`, and the RFC 8414 / OIDC discovery documents.

pub mod cimd;
pub(crate) mod crypto;
pub(crate) mod endpoints;
mod pages;
pub mod presets;
mod records;
pub mod redirect;
mod signing;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

pub use cimd::{CimdConfig, CimdFetcher};
pub use redirect::RedirectPolicy;
pub use upstream::{UpstreamAuthMethod, UpstreamConfig, UpstreamEndpoints};

use crate::error::{ConfigError, InvalidToken, VerifyError};
use crate::store::{Namespace, Store, StoreError};
use crate::token::{
    AccessToken, AudiencePolicy, JwtConfig, JwtVerifier, KeySource, TokenVerifier, VerifyFuture,
};
use crate::types::{BearerToken, ClientSecret, IssuerUrl};
use crypto::Secrets;
use records::{Grant, UpstreamTokens};
use signing::SigningKey;
use upstream::Upstream;

/// A client known from configuration rather than registration.
#[derive(Debug, Clone)]
pub struct PreRegisteredClient {
    /// Its id.
    pub client_id: String,
    /// Its secret; `None` for a public client.
    pub client_secret: Option<ClientSecret>,
    /// Its redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Its display name.
    pub name: Option<String>,
}

/// Settings of the [`OAuthProxy`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Our issuer: the server's public base URL (e.g. `https://mcp.example.com`).
    pub issuer: String,
    /// The canonical URL of the protected MCP endpoint: the only `resource` we issue for.
    pub resource: String,
    /// Scopes clients may obtain (requested scopes outside this list are not granted).
    pub scopes_supported: Vec<String>,
    /// Scopes granted when a client asks for none.
    pub default_scopes: Vec<String>,
    /// The upstream provider.
    pub upstream: UpstreamConfig,
    /// Clients known from configuration.
    pub clients: Vec<PreRegisteredClient>,
    /// Which redirect URIs clients may use.
    pub redirect_policy: RedirectPolicy,
    /// Client ID Metadata Documents (`None` turns them off).
    pub cimd: Option<CimdConfig>,
    /// Offer "remember this decision" on the consent page.
    pub remember_consent: bool,
    /// How long remembered consent lasts.
    pub consent_ttl: Duration,
    /// Lifetime of our access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh-token family without use: each refresh starts it anew.
    pub refresh_token_ttl: Duration,
    /// A refresh token presented twice within this window (two concurrent refreshes of one
    /// client) gets a fresh pair instead of revoking the family.
    pub refresh_grace: Duration,
    /// Per-address limit on `/register`.
    pub register_limit: crate::limit::RateLimit,
    /// Per-address limit on `/authorize` and `/consent`.
    pub authorize_limit: crate::limit::RateLimit,
    /// Per-address limit on `/token` and `/revoke`.
    pub token_limit: crate::limit::RateLimit,
    /// The master secret (at least 32 bytes): seals upstream tokens and the signing key,
    /// signs cookies. Every instance sharing a store needs the same one.
    pub secret: ClientSecret,
}

impl ProxyConfig {
    /// The defaults around the required parts.
    pub fn new(
        issuer: &str,
        resource: &str,
        upstream: UpstreamConfig,
        secret: ClientSecret,
    ) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            resource: resource.to_owned(),
            scopes_supported: vec!["openid".into(), "profile".into(), "email".into()],
            default_scopes: vec!["openid".into(), "profile".into(), "email".into()],
            upstream,
            clients: Vec::new(),
            redirect_policy: RedirectPolicy::default(),
            cimd: Some(CimdConfig::default()),
            remember_consent: false,
            consent_ttl: Duration::from_secs(30 * 24 * 3600),
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::from_secs(10),
            register_limit: crate::limit::RateLimit {
                per_minute: 20,
                burst: 10,
            },
            authorize_limit: crate::limit::RateLimit {
                per_minute: 120,
                burst: 30,
            },
            token_limit: crate::limit::RateLimit {
                per_minute: 600,
                burst: 100,
            },
            secret,
        }
    }
}

/// Everything that can go wrong setting the proxy up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often expired records are deleted from the store.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

async fn purge_expired(inner: &Inner) {
    match inner.store.purge_expired().await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(records = n, "expired records deleted"),
        Err(e) => tracing::warn!(error = %e, "cannot delete expired records; retrying later"),
    }
}

pub(crate) struct Inner {
    pub config: ProxyConfig,
    pub store: Arc<dyn Store>,
    pub secrets: Secrets,
    pub signing: SigningKey,
    pub upstream: Upstream,
    pub cimd: Option<CimdFetcher>,
    /// Path prefix of the issuer (`/tenant` for `https://host/tenant`), under which the
    /// endpoints are served.
    pub prefix: String,
    pub verifier: JwtVerifier,
    pub grant_locks: GrantLocks,
    /// Grants revoked by this process. Part of the verifier's key set version, so that
    /// each revocation empties the server's verified-token cache at once: an access token
    /// of the revoked grant already served is refused on its next request, here, not when
    /// its cache entry lapses.
    pub revocations: AtomicU64,
}

/// Locks per grant, within this process. Bounded: a grant unused for ten minutes, or one
/// beyond the capacity, loses its entry; should that happen while the lock is held, a
/// later caller merely does not wait for the earlier one.
pub(crate) struct GrantLocks {
    locks: moka::sync::Cache<String, Arc<GrantLock>>,
}

/// The locks of one grant.
#[derive(Default)]
pub(crate) struct GrantLock {
    /// Held across a refresh at the upstream provider: one at a time.
    pub upstream: tokio::sync::Mutex<()>,
    /// Held while the grant record is read, changed and written back.
    pub record: tokio::sync::Mutex<()>,
}

impl GrantLocks {
    fn new() -> Self {
        Self {
            locks: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// The locks of `grant_id`.
    pub(crate) fn of(&self, grant_id: &str) -> Arc<GrantLock> {
        self.locks.get_with_by_ref(grant_id, Arc::default)
    }
}

/// The OAuth proxy. Cheap to clone.
#[derive(Clone)]
pub struct OAuthProxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OAuthProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthProxy")
            .field("issuer", &self.inner.config.issuer)
            .finish_non_exhaustive()
    }
}

impl OAuthProxy {
    /// Builds the proxy, loading (or creating) its signing key from `store`. Expired
    /// records are deleted from `store` now and every [`PURGE_INTERVAL`] while the proxy
    /// lives.
    pub async fn new(config: ProxyConfig, store: Arc<dyn Store>) -> Result<Self, ProxyError> {
        Self::with_purge_interval(config, store, PURGE_INTERVAL).await
    }

    async fn with_purge_interval(
        config: ProxyConfig,
        store: Arc<dyn Store>,
        purge_every: Duration,
    ) -> Result<Self, ProxyError> {
        let issuer_url = url::Url::parse(&config.issuer).map_err(|e| {
            ConfigError::new(
                "base_url",
                format!("`{}` is not an absolute URL ({e})", config.issuer),
            )
        })?;
        let secrets = Secrets::new(config.secret.secret().as_bytes()).ok_or_else(|| {
            ConfigError::new(
                "proxy_secret",
                "must be at least 32 characters; generate one with `openssl rand -base64 48`",
            )
        })?;
        if config.upstream.client_id.is_empty() {
            return Err(ConfigError::new(
                "upstream_client_id",
                "the proxy needs the client id registered at the provider",
            )
            .into());
        }
        for c in &config.clients {
            for uri in &c.redirect_uris {
                config
                    .redirect_policy
                    .check_registration(uri)
                    .map_err(|e| {
                        ConfigError::new("clients", format!("client `{}`: {e}", c.client_id))
                    })?;
            }
        }
        let signing = SigningKey::load_or_create(store.as_ref(), &secrets).await?;
        let jwks = signing
            .jwk_set()
            .ok_or_else(|| StoreError::new("load signing key", "cannot build the key set"))?;
        let mut jwt = JwtConfig::new(
            config.issuer.as_str(),
            KeySource::Static(jwks),
            AudiencePolicy::OneOf(vec![config.resource.as_str().into()]),
        );
        jwt.accepted_types = vec!["at+jwt".into(), "application/at+jwt".into()];
        jwt.require_type = true;
        let verifier = JwtVerifier::new(jwt)?;
        let prefix = issuer_url.path().trim_end_matches('/').to_owned();
        let proxy = Self {
            inner: Arc::new(Inner {
                upstream: Upstream::new(config.upstream.clone()),
                cimd: config.cimd.clone().map(CimdFetcher::new),
                store,
                secrets,
                signing,
                prefix,
                verifier,
                grant_locks: GrantLocks::new(),
                revocations: AtomicU64::new(0),
                config,
            }),
        };
        proxy.spawn_purger(purge_every);
        Ok(proxy)
    }

    /// Starts deleting expired records now and then `every` so often: expired codes,
    /// transactions and refresh tokens are never read again, but without this they would
    /// stay in the store for ever, and unauthenticated requests create them. The task holds
    /// the proxy only weakly, so it ends once the proxy and its routes are dropped.
    fn spawn_purger(&self, every: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                purge_expired(&inner).await;
            }
        });
    }

    /// The issuer identifier (our base URL).
    pub fn issuer(&self) -> &str {
        &self.inner.config.issuer
    }

    /// The authorization-server routes, to merge into the server's router.
    pub fn router(&self) -> axum::Router {
        endpoints::router(self.inner.clone())
    }

    /// Verifies the access tokens this proxy issues: signature with our key, `iss`, `aud`,
    /// expiry, and that their grant has not been revoked (code replay, refresh-token reuse,
    /// revocation). Upstream tokens presented directly are refused: their issuer is not us.
    pub fn verifier(&self) -> ProxyTokenVerifier {
        ProxyTokenVerifier {
            inner: self.inner.clone(),
        }
    }

    /// The upstream provider's access token behind `token`, refreshed first if it is about
    /// to expire. For tools that call upstream APIs on the user's behalf; never hand it to
    /// the MCP client.
    pub async fn upstream_access_token(
        &self,
        token: &AccessToken,
    ) -> Result<BearerToken, VerifyError> {
        let grant_id = token
            .claim_str("sid")
            .ok_or(InvalidToken::MissingClaim("sid"))?;
        endpoints::upstream_access_token(&self.inner, grant_id)
            .await
            .map(BearerToken::new)
    }
}

impl OAuthProxy {
    /// The upstream provider's userinfo for the caller of `token`, fetched with the
    /// upstream access token (refreshed first if needed).
    pub async fn upstream_userinfo(
        &self,
        token: &AccessToken,
    ) -> Result<serde_json::Map<String, Value>, VerifyError> {
        let access = self.upstream_access_token(token).await?;
        self.inner
            .upstream
            .userinfo(access.secret())
            .await
            .map_err(|e| {
                VerifyError::Unavailable(crate::error::Unavailable {
                    retry_after: Duration::from_secs(5),
                    detail: e.to_string(),
                })
            })
    }
}

/// The verifier of the proxy's own access tokens. See [`OAuthProxy::verifier`].
#[derive(Clone)]
pub struct ProxyTokenVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProxyTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyTokenVerifier")
    }
}

impl ProxyTokenVerifier {
    async fn check(&self, token: &BearerToken) -> Result<AccessToken, VerifyError> {
        let access = self.inner.verifier.verify(token).await?;
        let grant_id = access
            .claim_str("sid")
            .ok_or(InvalidToken::MissingClaim("sid"))?;
        let grant: Option<Grant> =
            records::load(self.inner.store.as_ref(), Namespace::Grants, grant_id)
                .await
                .map_err(|e| {
                    VerifyError::Unavailable(crate::error::Unavailable {
                        retry_after: Duration::from_secs(2),
                        detail: e.to_string(),
                    })
                })?;
        match grant {
            Some(g) if !g.revoked => Ok(access),
            _ => Err(InvalidToken::Inactive.into()),
        }
    }
}

impl TokenVerifier for ProxyTokenVerifier {
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a> {
        Box::pin(self.check(token))
    }
    fn issuers(&self) -> Vec<IssuerUrl> {
        vec![IssuerUrl::new(self.inner.config.issuer.clone())]
    }
    fn key_set_version(&self) -> u64 {
        // Both only grow, so the sum moves whenever either does.
        let revocations = self.inner.revocations.load(Ordering::Acquire);
        self.inner
            .verifier
            .key_set_version()
            .wrapping_add(revocations)
    }
}

pub(crate) fn claims_from_upstream(
    claims: &serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    let mut kept = kept_claims(claims);
    // Plain OAuth providers name the handle `login` (GitHub).
    if !kept.contains_key("preferred_username")
        && let Some(login) = claims.get("login").filter(|v| v.is_string())
    {
        kept.insert("preferred_username".into(), login.clone());
    }
    kept
}

fn kept_claims(claims: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    const KEPT: [&str; 10] = [
        "email",
        "email_verified",
        "name",
        "given_name",
        "family_name",
        "preferred_username",
        "nickname",
        "picture",
        "locale",
        "groups",
    ];
    claims
        .iter()
        .filter(|(k, _)| KEPT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(crate) fn seal_upstream(
    secrets: &Secrets,
    grant_id: &str,
    tokens: &UpstreamTokens,
) -> Option<String> {
    let json = serde_json::to_vec(tokens).ok()?;
    Some(secrets.seal(grant_id, &json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Op, TestStore};
    use crate::token::unix_now;

    /// Inserts `n` records in `ns` that are expired by the time this returns.
    async fn put_expired(store: &TestStore, ns: Namespace, n: usize) {
        for i in 0..n {
            let key = format!("expired-{i}");
            store
                .inner()
                .put(ns, &key, b"{}", Some(Duration::from_millis(1)))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    /// Waits (10 s at most) until the purges have deleted `purged` records in all.
    async fn wait_until_purged(store: &TestStore, purged: u64, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.purged() != purged {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} purged",
                store.purged()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn config() -> ProxyConfig {
        config_upstream("http://127.0.0.1:9")
    }

    fn config_upstream(provider: &str) -> ProxyConfig {
        let upstream = UpstreamConfig {
            discovery_url: provider.into(),
            client_id: "proxy-client".into(),
            client_secret: ClientSecret::new("proxy-client-secret"),
            scopes: vec!["openid".into()],
            extra_authorize_params: Vec::new(),
            auth_method: UpstreamAuthMethod::default(),
            use_userinfo: false,
            timeout: Duration::from_secs(1),
            endpoints: None,
            subject_claim: None,
        };
        ProxyConfig::new(
            "http://127.0.0.1:9",
            "http://127.0.0.1:9/mcp",
            upstream,
            ClientSecret::new("a-test-proxy-secret-that-is-long-enough-0123456789"),
        )
    }

    fn grant(upstream_sealed: Option<String>) -> Grant {
        Grant {
            grant_id: "g1".into(),
            client_id: "c1".into(),
            subject: "alice".into(),
            scopes: vec!["openid".into()],
            resource: "http://127.0.0.1:9/mcp".into(),
            claims: serde_json::Map::new(),
            upstream_sealed,
            revoked: false,
            created_at: 0,
        }
    }

    fn upstream_tokens(access_token: &str, expires_at: u64) -> UpstreamTokens {
        UpstreamTokens {
            access_token: access_token.into(),
            refresh_token: Some(format!("{access_token}-refresh")),
            id_token: None,
            expires_at: Some(expires_at),
        }
    }

    #[tokio::test]
    async fn an_upstream_refresh_that_fails_uses_the_tokens_another_instance_just_stored() {
        // The "provider" takes the refresh call and holds it until the test drops it.
        let provider = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", provider.local_addr().unwrap());
        let store = Arc::new(TestStore::default());
        let proxy = OAuthProxy::with_purge_interval(
            config_upstream(&url),
            store.clone(),
            Duration::from_secs(600),
        )
        .await
        .unwrap();
        let secrets = &proxy.inner.secrets;
        let lapsing = seal_upstream(secrets, "g1", &upstream_tokens("ours", unix_now()));
        records::save(
            store.as_ref(),
            Namespace::Grants,
            "g1",
            &grant(lapsing),
            None,
        )
        .await
        .unwrap();

        let inner = proxy.inner.clone();
        let refreshing =
            tokio::spawn(async move { endpoints::upstream_access_token(&inner, "g1").await });
        let (call, _) = provider.accept().await.unwrap();
        // Meanwhile another instance sharing the store refreshed the same grant first...
        let theirs = seal_upstream(secrets, "g1", &upstream_tokens("theirs", unix_now() + 3600));
        records::save(
            store.as_ref(),
            Namespace::Grants,
            "g1",
            &grant(theirs),
            None,
        )
        .await
        .unwrap();
        // ...so the provider refuses (here: fails) this instance's call.
        drop(call);
        drop(provider);

        let token = refreshing
            .await
            .unwrap()
            .expect("the other instance's tokens");
        assert_eq!(token, "theirs");
    }

    #[tokio::test]
    async fn a_revocation_through_another_instance_between_a_read_and_a_write_is_not_lost() {
        let store = Arc::new(TestStore::default());
        let every = Duration::from_secs(600);
        let here = OAuthProxy::with_purge_interval(config(), store.clone(), every)
            .await
            .unwrap();
        let there = OAuthProxy::with_purge_interval(config(), store.clone(), every)
            .await
            .unwrap();
        records::save(store.as_ref(), Namespace::Grants, "g1", &grant(None), None)
            .await
            .unwrap();

        // This instance renews the grant, as every refresh does; its write is held back
        // after its read...
        let mut write = store.pause_next(Op::Replace(Namespace::Grants));
        let inner = here.inner.clone();
        let renewing = tokio::spawn(async move { endpoints::renew_grant(&inner, "g1").await });
        write.reached().await;
        // ...while the user signs out through the other instance, which has its own locks.
        endpoints::revoke_grant(&there.inner, "g1").await.unwrap();
        write.release();

        assert!(
            renewing.await.unwrap().is_err(),
            "the renewal sees the revocation"
        );
        let stored: Grant = records::load(store.as_ref(), Namespace::Grants, "g1")
            .await
            .unwrap()
            .unwrap();
        assert!(stored.revoked, "the revocation stands");
        assert_eq!(
            store.calls(Op::Replace(Namespace::Grants)),
            2,
            "the revocation's write, and the renewal's, which lost and was not retried"
        );
    }

    #[tokio::test]
    async fn expired_records_are_purged_at_start_then_periodically_until_the_proxy_is_dropped() {
        let every = Duration::from_millis(600);
        let store = Arc::new(TestStore::default());
        put_expired(&store, Namespace::Transactions, 3).await;
        store
            .inner()
            .put(Namespace::Clients, "kept", b"{}", None)
            .await
            .unwrap();
        let proxy = OAuthProxy::with_purge_interval(config(), store.clone(), every)
            .await
            .unwrap();
        // Polled rather than timed, so that a loaded machine only makes the test slower.
        wait_until_purged(&store, 3, "at start").await;

        put_expired(&store, Namespace::Codes, 2).await;
        wait_until_purged(&store, 5, "again an interval later").await;
        assert!(
            store
                .inner()
                .get(Namespace::Clients, "kept")
                .await
                .unwrap()
                .is_some()
        );

        drop(proxy);
        // A purge already under way may finish; none starts after it.
        tokio::time::sleep(every / 2).await;
        let purges = store.calls(Op::PurgeExpired);
        tokio::time::sleep(every * 3).await;
        assert_eq!(
            store.calls(Op::PurgeExpired),
            purges,
            "the task ended with the proxy"
        );
    }
}
