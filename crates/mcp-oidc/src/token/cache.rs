//! The verified-token cache: a hit costs a SHA-256 and a hash lookup instead of a signature
//! check or a round trip to the provider.

use std::time::{Duration, Instant};

use moka::Expiry;

use super::{AccessToken, TokenSource, unix_now};
use crate::types::TokenFingerprint;

/// Caches verified tokens by the SHA-256 of the token, never past the token's `exp`.
///
/// Bounded in entries, so a flood of distinct valid tokens cannot grow memory without
/// bound. Opaque-token results (introspection, userinfo) live only `opaque_ttl`, so a
/// revocation at the provider takes effect within that time.
#[derive(Clone)]
pub struct TokenCache {
    cache: Option<moka::sync::Cache<TokenFingerprint, AccessToken>>,
}

struct TokenExpiry {
    jwt_ttl: Duration,
    opaque_ttl: Duration,
}

impl Expiry<TokenFingerprint, AccessToken> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenFingerprint,
        value: &AccessToken,
        _created_at: Instant,
    ) -> Option<Duration> {
        let cap = match value.source() {
            TokenSource::Jwt | TokenSource::Static => self.jwt_ttl,
            _ => self.opaque_ttl,
        };
        Some(value.remaining_lifetime().map_or(cap, |left| left.min(cap)))
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens. JWTs stay at most `jwt_ttl`, opaque-token
    /// results at most `opaque_ttl`; neither past its `exp`. A capacity of 0 disables it.
    pub fn new(capacity: u64, jwt_ttl: Duration, opaque_ttl: Duration) -> Self {
        if capacity == 0 {
            return Self::disabled();
        }
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .expire_after(TokenExpiry {
                jwt_ttl,
                opaque_ttl,
            })
            .build();
        Self { cache: Some(cache) }
    }

    /// No caching: every request is verified in full.
    pub fn disabled() -> Self {
        Self { cache: None }
    }

    /// A cached, still-unexpired token.
    pub fn get(&self, key: &TokenFingerprint) -> Option<AccessToken> {
        let token = self.cache.as_ref()?.get(key)?;
        // Expiry is tracked at second granularity; re-check so no hit outlives `exp`.
        if token.is_expired_at(unix_now()) {
            return None;
        }
        Some(token)
    }

    /// Remembers a verified token.
    pub fn insert(&self, key: TokenFingerprint, token: AccessToken) {
        if let Some(cache) = &self.cache {
            cache.insert(key, token);
        }
    }

    /// Number of cached tokens (approximate).
    pub fn len(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(10_000, Duration::from_secs(3600), Duration::from_secs(60))
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("enabled", &self.cache.is_some())
            .finish()
    }
}
