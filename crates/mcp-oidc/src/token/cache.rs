//! The verified-token cache: a hit costs a SHA-256 and a hash lookup instead of a signature
//! check or a round trip to the provider. Refusals that cannot turn into acceptances are
//! remembered too, so a client (or an attacker) repeating one bad token is answered without
//! another signature check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;

use super::{AccessToken, TokenSource, unix_now};
use crate::error::InvalidToken;
use crate::types::TokenFingerprint;

/// Identities of caches, for the per-thread copies; 0 is never given out.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

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
    /// Names this cache (and its clones) in the per-thread copies of recent hits.
    id: u64,
    jwt_ttl: Duration,
    opaque_ttl: Duration,
}

#[derive(Clone)]
struct Entry {
    /// The verifier's [`key_set_version`](super::TokenVerifier::key_set_version) when the
    /// token was checked: under other keys, the answer may be different.
    keys: u64,
    outcome: Outcome,
    /// When the entry lapses (set at insertion; a valid token's is also kept in the
    /// per-thread copies, which must not outlive it).
    until: Instant,
}

#[derive(Clone)]
enum Outcome {
    Valid(AccessToken),
    Refused(InvalidToken),
}

struct TokenExpiry;

impl Expiry<TokenFingerprint, Entry> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenFingerprint,
        value: &Entry,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(created_at))
    }
}

/// Per-thread copies of the last few valid tokens a thread was served from the cache.
///
/// The shared cache is touched by every worker thread on every request: with one busy
/// token (one heavy client), those threads keep taking each other's cache lines (the
/// entry's counters, the cache's read log). A hit here reads memory this thread owns. An
/// entry answers only under the same key set version and before the shared entry lapses,
/// so it never says more than the shared cache would.
///
/// Entries are found by the presented token itself, compared in constant time, so a hit
/// also skips the SHA-256 of the token (a kilobyte to hash on every request) that the
/// shared cache needs.
mod front {
    use std::cell::RefCell;
    use std::time::Instant;

    use crate::token::AccessToken;
    use crate::types::TokenFingerprint;

    /// Entries per thread: a thread serves few distinct callers at a time, and a miss
    /// only costs the shared lookup it would have made anyway.
    const SLOTS: usize = 8;

    struct Slot {
        cache: u64,
        key: TokenFingerprint,
        keys: u64,
        until: Instant,
        token: AccessToken,
    }

    thread_local! {
        static SLOTS_OF_THIS_THREAD: RefCell<(Vec<Slot>, usize)> =
            const { RefCell::new((Vec::new(), 0)) };
    }

    /// The copy of `presented`, if this thread holds one still valid under `keys`.
    pub(super) fn get(
        cache: u64,
        presented: &[u8],
        keys: u64,
        now: Instant,
    ) -> Option<AccessToken> {
        SLOTS_OF_THIS_THREAD.with_borrow(|(slots, _)| {
            slots
                .iter()
                .filter(|s| s.cache == cache && s.keys == keys && now < s.until)
                .find(|s| same_token(s.token.token().secret().as_bytes(), presented))
                .map(|s| s.token.clone())
        })
    }

    /// Compares in constant time: an early exit would tell a caller, by timing, how much
    /// of a guess matches another caller's token. Lengths are not secret.
    fn same_token(held: &[u8], presented: &[u8]) -> bool {
        held.len() == presented.len()
            && aws_lc_rs::constant_time::verify_slices_are_equal(held, presented).is_ok()
    }

    pub(super) fn put(
        cache: u64,
        key: TokenFingerprint,
        keys: u64,
        until: Instant,
        token: AccessToken,
    ) {
        SLOTS_OF_THIS_THREAD.with_borrow_mut(|(slots, next)| {
            let slot = Slot {
                cache,
                key,
                keys,
                until,
                token,
            };
            if let Some(i) = slots
                .iter()
                .position(|s| s.cache == cache && s.key == slot.key)
            {
                slots[i] = slot;
            } else if slots.len() < SLOTS {
                slots.push(slot);
            } else {
                // Oldest first: the slots are filled and replaced in turn.
                slots[*next] = slot;
                *next = (*next + 1) % SLOTS;
            }
        });
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
            .expire_after(TokenExpiry)
            .build();
        Self {
            cache: Some(cache),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            jwt_ttl,
            opaque_ttl,
        }
    }

    /// No caching: every request is verified in full.
    pub fn disabled() -> Self {
        Self {
            cache: None,
            id: 0,
            jwt_ttl: Duration::ZERO,
            opaque_ttl: Duration::ZERO,
        }
    }

    /// The token `presented`, if this thread was recently served it from this cache and
    /// it is still valid under the key set version `keys`: the fast path for a caller
    /// repeating its token, which needs neither the token's digest nor the shared cache.
    /// On `None`, ask [`TokenCache::get`].
    pub fn get_recent(&self, presented: &[u8], keys: u64) -> Option<AccessToken> {
        self.cache.as_ref()?;
        let token = front::get(self.id, presented, keys, Instant::now())?;
        // Expiry is tracked at second granularity; re-check so no hit outlives `exp`.
        (!token.is_expired_at(unix_now())).then_some(token)
    }

    /// A cached, still-unexpired token (`Ok`), or the cached reason it was refused (`Err`),
    /// if it was checked under the key set version `keys` (see
    /// [`TokenVerifier::key_set_version`](super::TokenVerifier::key_set_version)).
    pub fn get(
        &self,
        key: &TokenFingerprint,
        keys: u64,
    ) -> Option<Result<AccessToken, InvalidToken>> {
        let cache = self.cache.as_ref()?;
        let entry = cache.get(key)?;
        if entry.keys != keys {
            // Checked under keys since changed: a withdrawn key must stop counting, a new
            // one may now verify a refused token. The next insert replaces the entry.
            return None;
        }
        match entry.outcome {
            Outcome::Valid(token) if token.is_expired_at(unix_now()) => None,
            Outcome::Valid(token) => {
                front::put(self.id, *key, keys, entry.until, token.clone());
                Some(Ok(token))
            }
            Outcome::Refused(reason) => Some(Err(reason)),
        }
    }

    /// Remembers a token verified under the key set version `keys`.
    pub fn insert(&self, key: TokenFingerprint, token: AccessToken, keys: u64) {
        if let Some(cache) = &self.cache {
            let cap = match token.source() {
                TokenSource::Jwt | TokenSource::Static => self.jwt_ttl,
                _ => self.opaque_ttl,
            };
            let ttl = token.remaining_lifetime().map_or(cap, |left| left.min(cap));
            cache.insert(
                key,
                Entry {
                    keys,
                    outcome: Outcome::Valid(token),
                    until: Instant::now() + ttl,
                },
            );
        }
    }

    /// Remembers why a token was refused under the key set version `keys`, for as long as
    /// that reason cannot change (30 s for final reasons, 1 s for an unknown key, not at
    /// all for time-dependent ones).
    pub fn insert_refusal(&self, key: TokenFingerprint, reason: &InvalidToken, keys: u64) {
        if let Some(cache) = &self.cache
            && let Some(ttl) = refusal_ttl(reason)
        {
            cache.insert(
                key,
                Entry {
                    keys,
                    outcome: Outcome::Refused(reason.clone()),
                    until: Instant::now() + ttl,
                },
            );
        }
    }

    /// Whether tokens are cached at all (a capacity of 0 disables the cache).
    pub fn is_enabled(&self) -> bool {
        self.cache.is_some()
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
    fn a_repeated_hit_stays_within_the_key_set_and_the_lifetime_of_the_shared_entry() {
        let cache = TokenCache::new(10, Duration::from_millis(300), Duration::from_secs(60));
        let key = TokenFingerprint::of("t");
        cache.insert(key, token("alice"), 7);
        assert!(
            cache.get_recent(b"t", 7).is_none(),
            "not yet served on this thread"
        );
        assert!(matches!(cache.get(&key, 7), Some(Ok(t)) if t.subject() == "alice"));
        for _ in 0..3 {
            assert!(matches!(cache.get_recent(b"t", 7), Some(t) if t.subject() == "alice"));
        }
        assert!(
            cache.get_recent(b"u", 7).is_none(),
            "another token of the same length"
        );
        assert!(cache.get_recent(b"tt", 7).is_none(), "another token");
        assert!(cache.get_recent(b"t", 8).is_none(), "another key set");
        // Another cache never answers from this one's entries.
        assert!(TokenCache::default().get_recent(b"t", 7).is_none());
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            cache.get_recent(b"t", 7).is_none(),
            "lapsed with the shared entry"
        );
        assert!(cache.get(&key, 7).is_none());
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
