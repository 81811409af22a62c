//! The issuer's signing keys: fetched, cached, refreshed in the background, and refetched
//! at once — but rate-limited — when a token names a key we have not seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use serde_json::Value;

use super::discovery::discover;
use super::http::get_json;
use crate::error::{InvalidToken, Unavailable, VerifyError};
use crate::store::{Namespace, Store};
use crate::types::ClientSecret;

/// Where the verification keys come from.
#[derive(Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// OIDC discovery (falling back to RFC 8414) from the issuer or its configuration URL.
    Discovery(String),
    /// An explicit JWKS URL.
    JwksUri(String),
    /// Keys given up front; never refreshed.
    Static(JwkSet),
    /// A shared HMAC secret. Only ever used when configured explicitly: HMAC is never
    /// accepted with keys from a JWKS.
    HmacSecret(ClientSecret),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Discovery(u) => f.debug_tuple("Discovery").field(u).finish(),
            KeySource::JwksUri(u) => f.debug_tuple("JwksUri").field(u).finish(),
            KeySource::Static(set) => write!(f, "Static({} keys)", set.keys.len()),
            KeySource::HmacSecret(_) => f.write_str("HmacSecret([redacted])"),
        }
    }
}

/// Timing of key fetches.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// Shortest interval between background refreshes, whatever `Cache-Control` says.
    pub min_refresh: Duration,
    /// Longest interval between background refreshes, and the oldest a key set kept in a
    /// store ([`crate::TokenVerifier::keep_keys_in`]) may be to be used after a restart.
    pub max_refresh: Duration,
    /// Interval used when the JWKS response has no `Cache-Control: max-age`.
    pub default_refresh: Duration,
    /// At most one fetch triggered by an unknown `kid` per this interval, so a flood of
    /// tokens with made-up key ids cannot flood the provider.
    pub unknown_kid_cooldown: Duration,
    /// Timeout of each call to the provider.
    pub http_timeout: Duration,
    /// Longest wait between retries while the provider is unreachable.
    pub max_retry_backoff: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(24 * 3600),
            default_refresh: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(10),
            http_timeout: Duration::from_secs(5),
            max_retry_backoff: Duration::from_secs(30),
        }
    }
}

/// One key, parsed once for each algorithm it may verify.
///
/// jsonwebtoken rebuilds the public key from its JWK components on every verification;
/// under load that doubled the cost of an uncached request. The same aws-lc primitives,
/// with the key parsed once when the key set loads, verify at the cost of the signature
/// check alone.
pub(crate) struct VerifyKey {
    verifiers: Vec<(Algorithm, Verifier)>,
}

enum Verifier {
    Public(ParsedPublicKey),
    Hmac(Box<aws_lc_rs::hmac::Key>),
}

impl VerifyKey {
    pub(crate) fn supports(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Whether `signature` (raw bytes) is a valid `alg` signature of `message`.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .filter(|(a, _)| *a == alg)
            .any(|(_, v)| match v {
                Verifier::Public(key) => key.verify_sig(message, signature).is_ok(),
                Verifier::Hmac(key) => aws_lc_rs::hmac::verify(key, message, signature).is_ok(),
            })
    }
}

fn rsa_params(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn b64(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok()
}

/// Parses `jwk` for `alg`; `None` if the key does not fit the algorithm.
fn parse_for(jwk: &Jwk, alg: Algorithm) -> Option<ParsedPublicKey> {
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(p), _) => {
            let (n, e) = (b64(&p.n)?, b64(&p.e)?);
            RsaPublicKeyComponents {
                n: &n[..],
                e: &e[..],
            }
            .to_parsed_public_key(rsa_params(alg)?)
            .ok()
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256 | Algorithm::ES384) => {
            let (x, y) = (b64(&p.x)?, b64(&p.y)?);
            let (size, algorithm): (usize, &'static dyn sig::VerificationAlgorithm) = match alg {
                Algorithm::ES256 => (32, &sig::ECDSA_P256_SHA256_FIXED),
                _ => (48, &sig::ECDSA_P384_SHA384_FIXED),
            };
            if x.len() != size || y.len() != size {
                return None;
            }
            // SEC 1 uncompressed point: 0x04 || x || y.
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ParsedPublicKey::new(algorithm, point).ok()
        }
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            ParsedPublicKey::new(&sig::ED25519, b64(&p.x)?).ok()
        }
        _ => None,
    }
}

#[derive(Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    fn from_jwks(keys: &[Value], allowed: &[Algorithm]) -> Self {
        let mut set = KeySet::default();
        for raw in keys {
            // One odd key (an encryption key, an unknown curve) must not poison the rest.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if let Some(key) = usable_key(&jwk, allowed) {
                let key = Arc::new(key);
                if let Some(kid) = &jwk.common.key_id {
                    set.by_kid.insert(kid.clone(), key.clone());
                }
                set.all.push(key);
            }
        }
        set
    }

    fn from_secret(secret: &ClientSecret, allowed: &[Algorithm]) -> Self {
        let algorithms: Vec<Algorithm> = allowed
            .iter()
            .copied()
            .filter(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        let verifiers = algorithms
            .iter()
            .map(|a| {
                let algorithm = match a {
                    Algorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                    Algorithm::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => aws_lc_rs::hmac::HMAC_SHA256,
                };
                (
                    *a,
                    Verifier::Hmac(Box::new(aws_lc_rs::hmac::Key::new(
                        algorithm,
                        secret.secret().as_bytes(),
                    ))),
                )
            })
            .collect();
        let key = Arc::new(VerifyKey { verifiers });
        KeySet {
            by_kid: HashMap::new(),
            all: vec![key],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }
}

/// The algorithms a JWK may verify: its own `alg` if it has one, else those of its key type;
/// never HMAC, and only those in `allowed`.
fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => &[],
        },
        // Symmetric keys in a published key set would let anyone who reads it sign tokens.
        _ => &[],
    };
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        Some(alg) => {
            // `KeyAlgorithm` also names encryption algorithms; only signing ones parse.
            let alg: Algorithm = serde_json::to_value(alg).ok()?.as_str()?.parse().ok()?;
            if by_type.contains(&alg) {
                vec![alg]
            } else {
                Vec::new()
            }
        }
        None => by_type.to_vec(),
    }
    .into_iter()
    .filter(|a| allowed.contains(a))
    .collect();
    if algorithms.is_empty() {
        return None;
    }
    let verifiers: Vec<(Algorithm, Verifier)> = algorithms
        .into_iter()
        .filter_map(|a| parse_for(jwk, a).map(|k| (a, Verifier::Public(k))))
        .collect();
    if verifiers.is_empty() {
        return None;
    }
    Some(VerifyKey { verifiers })
}

#[derive(serde::Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

/// A key set as kept in a [`Store`] for the next start.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptKeys {
    jwks_uri: String,
    keys: Vec<Value>,
    /// When it was fetched (Unix seconds).
    fetched_at: u64,
}

struct FetchState {
    last_attempt: Option<Instant>,
    /// When a token with an unseen `kid` last forced a fetch. Tracked apart from the
    /// background refreshes, so a key rotated in right after a refresh is still picked up.
    last_forced: Option<Instant>,
    consecutive_failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<String>,
    jwks_uri: Option<String>,
    /// The last key set fetched, as received (kept in the store when one is attached).
    last_good: Option<Arc<KeptKeys>>,
}

/// The cached key set of one issuer.
pub(crate) struct KeyStore {
    source: KeySource,
    settings: JwksSettings,
    allowed: Vec<Algorithm>,
    client: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    state: Mutex<FetchState>,
    fetch_lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    /// Moves only when the content of the key set changes ([`KeyStore::version`]).
    version: AtomicU64,
    fetches: AtomicU64,
    /// Key set loads from the provider that succeeded and that failed.
    loads_ok: AtomicU64,
    loads_failed: AtomicU64,
    /// Where fetched key sets are kept for the next start ([`KeyStore::keep_in`]).
    kept: OnceLock<Arc<dyn Store>>,
    /// Whether the kept set was looked for (until then a request without keys waits for
    /// that rather than answering 503).
    kept_looked_up: AtomicBool,
}

/// Why the key set is fetched, logged with each fetch so that an operator (and the
/// benchmark) can tell the scheduled refreshes from those a token with an unknown `kid`
/// triggered.
#[derive(Clone, Copy)]
enum FetchCause {
    /// The background refresher: at startup, then per `Cache-Control`.
    Scheduled,
    /// A token named a key the set does not hold (at most once per cooldown).
    UnknownKid,
}

impl FetchCause {
    fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::UnknownKid => "unknown_kid",
        }
    }
}

impl KeyStore {
    pub(crate) fn new(
        source: KeySource,
        settings: JwksSettings,
        allowed: Vec<Algorithm>,
    ) -> Arc<Self> {
        let preloaded = match &source {
            KeySource::Static(set) => {
                let raw: Vec<Value> = set
                    .keys
                    .iter()
                    .filter_map(|k| serde_json::to_value(k).ok())
                    .collect();
                Some(Arc::new(KeySet::from_jwks(&raw, &allowed)))
            }
            KeySource::HmacSecret(secret) => Some(Arc::new(KeySet::from_secret(secret, &allowed))),
            _ => None,
        };
        let jwks_uri = match &source {
            KeySource::JwksUri(u) => Some(u.clone()),
            _ => None,
        };
        Arc::new(Self {
            client: super::http::provider_client(settings.http_timeout),
            source,
            settings,
            allowed,
            keys: RwLock::new(preloaded),
            state: Mutex::new(FetchState {
                last_attempt: None,
                last_forced: None,
                consecutive_failures: 0,
                next_attempt: None,
                last_error: None,
                jwks_uri,
                last_good: None,
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            version: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            loads_ok: AtomicU64::new(0),
            loads_failed: AtomicU64::new(0),
            kept: OnceLock::new(),
            kept_looked_up: AtomicBool::new(false),
        })
    }

    /// Keeps every key set fetched from now on in `store`, and, if none has been fetched
    /// yet, loads the one kept there by an earlier run: a server restarted while its
    /// provider is unreachable then goes on verifying tokens instead of answering 503. A
    /// kept set is used only until a fresh one is fetched, and only within `max_refresh`
    /// of its own fetch (the longest the keys are trusted without asking the provider).
    pub(crate) fn keep_in(self: &Arc<Self>, store: Arc<dyn Store>) {
        if !self.is_remote() || self.kept.set(store).is_err() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = Arc::clone(self);
        handle.spawn(async move { me.use_or_update_kept().await });
    }

    fn kept_key(&self) -> String {
        let source = match &self.source {
            KeySource::Discovery(url) | KeySource::JwksUri(url) => url.as_str(),
            _ => "",
        };
        format!("jwks {source}")
    }

    /// At attachment: loads the kept set while no fresh one is held, or keeps the one a
    /// fetch already brought.
    async fn use_or_update_kept(&self) {
        self.load_or_update_kept().await;
        self.kept_looked_up.store(true, Ordering::Release);
    }

    async fn load_or_update_kept(&self) {
        let Some(store) = self.kept.get() else { return };
        let fresh = self.state.lock().ok().and_then(|s| s.last_good.clone());
        if let Some(fresh) = fresh {
            self.keep(&fresh).await;
            return;
        }
        let bytes = match store.get(Namespace::Keys, &self.kept_key()).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kept JWKS");
                return;
            }
        };
        let Ok(kept) = serde_json::from_slice::<KeptKeys>(&bytes) else {
            return;
        };
        let age = super::unix_now().saturating_sub(kept.fetched_at);
        if Duration::from_secs(age) > self.settings.max_refresh {
            return;
        }
        let set = KeySet::from_jwks(&kept.keys, &self.allowed);
        if set.len() == 0 {
            return;
        }
        let Ok(mut keys) = self.keys.write() else {
            return;
        };
        // A fetch that succeeded meanwhile wins.
        if keys.is_some() {
            return;
        }
        *keys = Some(Arc::new(set));
        drop(keys);
        self.generation.fetch_add(1, Ordering::Release);
        // `kept.jwks_uri` is not reused: the next fetch discovers the provider afresh, as
        // after any start.
        tracing::info!(
            jwks_uri = %kept.jwks_uri,
            fetched_secs_ago = age,
            "using the provider's keys kept from an earlier fetch until it answers"
        );
    }

    async fn keep(&self, kept: &KeptKeys) {
        let Some(store) = self.kept.get() else { return };
        let result = match serde_json::to_vec(kept) {
            Ok(bytes) => {
                store
                    .put(
                        Namespace::Keys,
                        &self.kept_key(),
                        &bytes,
                        Some(self.settings.max_refresh),
                    )
                    .await
            }
            Err(e) => Err(crate::store::StoreError::new("encode JWKS", e.to_string())),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot keep the fetched JWKS for the next start");
        }
    }

    fn is_remote(&self) -> bool {
        matches!(self.source, KeySource::Discovery(_) | KeySource::JwksUri(_))
    }

    /// How many times the JWKS was requested from the provider.
    /// Changes whenever the key set's content does (see
    /// [`TokenVerifier::key_set_version`](super::TokenVerifier::key_set_version)); a refresh
    /// bringing the same keys leaves it alone, so cached verifications survive it.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many key set loads from the provider succeeded and failed so far.
    pub(crate) fn refreshes(&self) -> super::KeyRefreshes {
        super::KeyRefreshes {
            succeeded: self.loads_ok.load(Ordering::Relaxed),
            failed: self.loads_failed.load(Ordering::Relaxed),
        }
    }

    /// The keys currently held, if any were ever loaded.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().ok().and_then(|g| g.clone())
    }

    /// Starts the background refresher: fetches now, then per `Cache-Control`, retrying
    /// with exponential backoff while the provider is down. Ends when the store is dropped.
    pub(crate) fn spawn_refresher(self: &Arc<Self>) {
        if !self.is_remote() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // Without a runtime the keys are fetched on the first verification instead.
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        handle.spawn(async move {
            loop {
                let Some(store) = weak.upgrade() else { return };
                let wait = store.refresh().await;
                drop(store);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Fetches the key set once (single-flight). Returns how long to wait before the next
    /// background refresh.
    async fn refresh(&self) -> Duration {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_now(FetchCause::Scheduled).await
    }

    async fn fetch_now(&self, cause: FetchCause) -> Duration {
        let cause = cause.as_str();
        if let Ok(mut st) = self.state.lock() {
            st.last_attempt = Some(Instant::now());
        }
        match self.fetch_keys().await {
            Ok((set, max_age, raw)) => {
                self.loads_ok.fetch_add(1, Ordering::Relaxed);
                let wait = max_age
                    .unwrap_or(self.settings.default_refresh)
                    .clamp(self.settings.min_refresh, self.settings.max_refresh);
                tracing::debug!(keys = set.len(), refresh_in = ?wait, cause, "JWKS loaded");
                let same_as_before = self.state.lock().is_ok_and(|st| {
                    st.last_good
                        .as_ref()
                        .is_some_and(|old| old.keys == raw.keys)
                });
                let replaced = match self.keys.write() {
                    Ok(mut keys) => keys.replace(Arc::new(set)).is_some(),
                    Err(_) => false,
                };
                // Bumped after the swap: a check that used the old set read the version
                // before it (the bearer layer reads the version first), so its result is
                // never filed under the new one. The first set replaces nothing, and no
                // token was checked before it.
                if replaced && !same_as_before {
                    self.version.fetch_add(1, Ordering::Release);
                }
                self.generation.fetch_add(1, Ordering::Release);
                if let Ok(mut st) = self.state.lock() {
                    if st.consecutive_failures > 0 {
                        tracing::info!("identity provider reachable again; keys refreshed");
                    }
                    st.consecutive_failures = 0;
                    st.last_error = None;
                    st.next_attempt = Some(Instant::now() + wait);
                    st.last_good = Some(raw.clone());
                }
                self.keep(&raw).await;
                wait
            }
            Err(message) => {
                self.loads_failed.fetch_add(1, Ordering::Relaxed);
                let (wait, have_keys) = {
                    let have_keys = self.current().is_some();
                    let Ok(mut st) = self.state.lock() else {
                        return self.settings.max_retry_backoff;
                    };
                    st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                    let exp = st.consecutive_failures.saturating_sub(1).min(16);
                    let wait =
                        Duration::from_secs(1u64 << exp).min(self.settings.max_retry_backoff);
                    st.next_attempt = Some(Instant::now() + wait);
                    st.last_error = Some(message.clone());
                    (wait, have_keys)
                };
                if have_keys {
                    tracing::warn!(error = %message, retry_in = ?wait, cause, "JWKS refresh failed; still using the cached keys");
                } else {
                    tracing::warn!(error = %message, retry_in = ?wait, cause, "cannot load the identity provider's keys; protected routes answer 503 until they load");
                }
                wait
            }
        }
    }

    async fn fetch_keys(&self) -> Result<(KeySet, Option<Duration>, Arc<KeptKeys>), String> {
        let known_uri = self.state.lock().ok().and_then(|s| s.jwks_uri.clone());
        let uri = match (known_uri, &self.source) {
            (Some(uri), _) => uri,
            (None, KeySource::Discovery(config)) => {
                let meta = discover(&self.client, config).await?;
                let uri = meta
                    .jwks_uri
                    .ok_or_else(|| format!("{config}: provider metadata has no jwks_uri"))?;
                if let Ok(mut st) = self.state.lock() {
                    st.jwks_uri = Some(uri.clone());
                }
                uri
            }
            (None, _) => return Err("no JWKS location".to_owned()),
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (raw, max_age) = get_json::<RawJwks>(&self.client, &uri)
            .await
            .map_err(|e| e.to_string())?;
        let set = KeySet::from_jwks(&raw.keys, &self.allowed);
        if set.len() == 0 {
            // An empty or unusable set would lock everyone out; keep the keys we had.
            return Err(format!("{uri}: no usable signing keys in the key set"));
        }
        let raw = Arc::new(KeptKeys {
            jwks_uri: uri,
            keys: raw.keys,
            fetched_at: super::unix_now(),
        });
        Ok((set, max_age, raw))
    }

    /// Whether keys were ever loaded (after that, an unreachable provider is served with
    /// the keys held), or why not.
    pub(crate) fn ready(&self) -> Result<(), Unavailable> {
        match self.current() {
            Some(_) => Ok(()),
            None => Err(self.unavailable()),
        }
    }

    fn unavailable(&self) -> Unavailable {
        let st = self.state.lock().ok();
        let retry_after = st
            .as_ref()
            .and_then(|s| s.next_attempt)
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        let detail = st
            .and_then(|s| s.last_error.clone())
            .unwrap_or_else(|| "signing keys not loaded yet".to_owned());
        Unavailable {
            retry_after,
            detail,
        }
    }

    /// Refetches the keys if the cooldown allows, waiting for a fetch already under way.
    /// Returns whether the key set may have changed.
    pub(crate) async fn refetch_rate_limited(&self) -> bool {
        if !self.is_remote() {
            return false;
        }
        let seen = self.generation.load(Ordering::Acquire);
        let _guard = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        let allowed = self
            .state
            .lock()
            .ok()
            .map(|mut st| {
                let allowed = st
                    .last_forced
                    .is_none_or(|t| t.elapsed() >= self.settings.unknown_kid_cooldown);
                if allowed {
                    st.last_forced = Some(Instant::now());
                }
                allowed
            })
            .unwrap_or(false);
        if !allowed {
            return false;
        }
        self.fetch_now(FetchCause::UnknownKid).await;
        self.generation.load(Ordering::Acquire) != seen
    }

    /// The keys that may verify a token with this `kid` and `alg`.
    pub(crate) async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<VerifyKey>>, VerifyError> {
        let mut set = match self.current() {
            Some(set) => set,
            None => {
                // Right after start-up the keys kept by the last run may still be loading.
                if self.kept.get().is_some() && !self.kept_looked_up.load(Ordering::Acquire) {
                    self.use_or_update_kept().await;
                }
                match self.current() {
                    Some(set) => set,
                    None => {
                        self.refetch_rate_limited().await;
                        self.current().ok_or_else(|| self.unavailable())?
                    }
                }
            }
        };
        let mut refetched = false;
        loop {
            let found: Vec<Arc<VerifyKey>> = match kid {
                Some(kid) => set.by_kid.get(kid).cloned().into_iter().collect(),
                None => set.all.clone(),
            };
            let found: Vec<Arc<VerifyKey>> =
                found.into_iter().filter(|k| k.supports(alg)).collect();
            if !found.is_empty() {
                return Ok(found);
            }
            let kid_known = kid.is_some_and(|k| set.by_kid.contains_key(k));
            if kid_known {
                // The key exists but may not be used with this algorithm.
                return Err(InvalidToken::AlgorithmNotAllowed(format!("{alg:?}")).into());
            }
            if refetched || !self.refetch_rate_limited().await {
                return Err(InvalidToken::UnknownKey.into());
            }
            refetched = true;
            set = self.current().ok_or_else(|| self.unavailable())?;
        }
    }
}
