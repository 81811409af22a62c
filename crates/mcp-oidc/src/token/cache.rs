//! The verified-token cache: a hit costs a SHA-256 and a hash lookup instead of a signature
//! check or a round trip to the provider. Refusals that cannot turn into acceptances are
//! remembered too, so a client (or an attacker) repeating one bad token is answered without
//! another signature check.

use std::time::{Duration, Instant};

use moka::Expiry;

use super::{AccessToken, TokenSource, unix_now};
use crate::error::InvalidToken;
use crate::types::TokenFingerprint;

/// How long a final refusal is remembered. Short, because the reasons cached are final for
/// the token itself, but a key set or a configuration can change under it.
const REFUSAL_TTL: Duration = Duration::from_secs(30);

/// How long an unknown `kid` is remembered: a flood of one such token costs one key lookup
/// a second, and a key published meanwhile is found at most a second later than otherwise.
const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(1);

/// Caches verified tokens by the SHA-256 of the token, never past the token's `exp`.
///
/// Bounded in entries, so a flood of distinct tokens cannot grow memory without bound.
/// Opaque-token results (introspection, userinfo) live only `opaque_ttl`, so a revocation
/// at the provider takes effect within that time.
///
/// Refusals are cached for 30 seconds when they are final for that token (bad signature,
/// expired, wrong issuer or audience, malformed...). An unknown `kid` is remembered for one
/// second only: a key rotation can make it valid, but the key set is refetched at most once
/// per cooldown anyway, so within a second the answer could hardly change. Refusals that
/// time can undo (`nbf` or `iat` in the future) are never cached.
#[derive(Clone)]
pub struct TokenCache {
    cache: Option<moka::sync::Cache<TokenFingerprint, Entry>>,
}

#[derive(Clone)]
struct Entry {
    /// The verifier's [`key_set_version`](super::TokenVerifier::key_set_version) when the
    /// token was checked: under other keys, the answer may be different.
    keys: u64,
    outcome: Outcome,
}

#[derive(Clone)]
enum Outcome {
    Valid(AccessToken),
    Refused(InvalidToken),
}

struct TokenExpiry {
    jwt_ttl: Duration,
    opaque_ttl: Duration,
}

impl Expiry<TokenFingerprint, Entry> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenFingerprint,
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        let value = match &value.outcome {
            Outcome::Valid(value) => value,
            Outcome::Refused(reason) => return refusal_ttl(reason),
        };
        let cap = match value.source() {
            TokenSource::Jwt | TokenSource::Static => self.jwt_ttl,
            _ => self.opaque_ttl,
        };
        Some(value.remaining_lifetime().map_or(cap, |left| left.min(cap)))
    }
}

/// How long a refusal may be remembered; `None` for refusals that must be checked again.
fn refusal_ttl(reason: &InvalidToken) -> Option<Duration> {
    if is_final(reason) {
        Some(REFUSAL_TTL)
    } else if *reason == InvalidToken::UnknownKey {
        Some(UNKNOWN_KEY_TTL)
    } else {
        None
    }
}

/// Whether a refusal stays true for the same token whatever the clock or the key set do
/// next (within [`REFUSAL_TTL`]).
fn is_final(reason: &InvalidToken) -> bool {
    match reason {
        InvalidToken::Malformed(_)
        | InvalidToken::Encrypted
        | InvalidToken::UnsupportedCritical
        | InvalidToken::BadSignature
        | InvalidToken::Expired
        | InvalidToken::MissingClaim(_)
        | InvalidToken::WrongIssuer
        | InvalidToken::WrongAudience
        | InvalidToken::WrongType
        | InvalidToken::MissingRequiredScopes => true,
        // A new key (rotation) or the passing of time can make these tokens valid; an
        // opaque token's state and the allowed algorithms come from the provider, which
        // may change its mind.
        InvalidToken::UnknownKey
        | InvalidToken::NotYetValid
        | InvalidToken::IssuedInFuture
        | InvalidToken::AlgorithmNotAllowed(_)
        | InvalidToken::Inactive
        | InvalidToken::Unrecognized => false,
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

    /// A cached, still-unexpired token (`Ok`), or the cached reason it was refused (`Err`),
    /// if it was checked under the key set version `keys` (see
    /// [`TokenVerifier::key_set_version`](super::TokenVerifier::key_set_version)).
    pub fn get(
        &self,
        key: &TokenFingerprint,
        keys: u64,
    ) -> Option<Result<AccessToken, InvalidToken>> {
        let entry = self.cache.as_ref()?.get(key)?;
        if entry.keys != keys {
            // Checked under keys since changed: a withdrawn key must stop counting, a new
            // one may now verify a refused token. The next insert replaces the entry.
            return None;
        }
        match entry.outcome {
            // Expiry is tracked at second granularity; re-check so no hit outlives `exp`.
            Outcome::Valid(token) if token.is_expired_at(unix_now()) => None,
            Outcome::Valid(token) => Some(Ok(token)),
            Outcome::Refused(reason) => Some(Err(reason)),
        }
    }

    /// Remembers a token verified under the key set version `keys`.
    pub fn insert(&self, key: TokenFingerprint, token: AccessToken, keys: u64) {
        if let Some(cache) = &self.cache {
            cache.insert(
                key,
                Entry {
                    keys,
                    outcome: Outcome::Valid(token),
                },
            );
        }
    }

    /// Remembers why a token was refused under the key set version `keys`, for as long as
    /// that reason cannot change (30 s for final reasons, 1 s for an unknown key, not at
    /// all for time-dependent ones).
    pub fn insert_refusal(&self, key: TokenFingerprint, reason: &InvalidToken, keys: u64) {
        if let Some(cache) = &self.cache
            && refusal_ttl(reason).is_some()
        {
            cache.insert(
                key,
                Entry {
                    keys,
                    outcome: Outcome::Refused(reason.clone()),
                },
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BearerToken, IssuerUrl};

    fn token(sub: &str) -> AccessToken {
        let claims = serde_json::json!({"sub": sub, "exp": unix_now() + 600});
        let serde_json::Value::Object(claims) = claims else {
            unreachable!()
        };
        AccessToken::from_claims(
            BearerToken::new("t"),
            TokenSource::Jwt,
            &IssuerUrl::from("https://idp"),
            claims,
        )
        .unwrap()
    }

    #[test]
    fn an_entry_made_under_another_key_set_is_a_miss() {
        let cache = TokenCache::default();
        let key = TokenFingerprint::of("a");
        cache.insert(key, token("alice"), 3);
        assert!(matches!(cache.get(&key, 3), Some(Ok(t)) if t.subject() == "alice"));
        assert!(cache.get(&key, 4).is_none());

        let refused = TokenFingerprint::of("b");
        cache.insert_refusal(refused, &InvalidToken::BadSignature, 3);
        assert!(matches!(cache.get(&refused, 3), Some(Err(_))));
        assert!(cache.get(&refused, 4).is_none());
    }
}
