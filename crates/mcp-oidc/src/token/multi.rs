//! Several issuers at once: JWTs routed by their `iss`, opaque tokens tried in order.

use std::sync::Arc;

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::jwt::{decode_object, split_jws};
use super::{TokenVerifier, VerifyFuture, looks_like_jwt};
use crate::error::{InvalidToken, VerifyError};
use crate::types::{BearerToken, IssuerUrl};

/// Combines verifiers. A JWT goes to the verifier of the issuer named in its (not yet
/// verified) `iss`, which then verifies everything, `iss` included; a token of an issuer
/// nobody trusts is refused without any key fetch. An opaque token is offered to each
/// verifier that accepts opaque tokens, in order, until one accepts it.
#[derive(Clone, Default)]
pub struct MultiVerifier {
    verifiers: Vec<Arc<dyn TokenVerifier>>,
    /// Each verifier's issuers, gathered as it is added: routing runs for every uncached
    /// token, and asking the verifiers would copy their issuer URLs each time.
    routes: Vec<(IssuerUrl, usize)>,
}

impl std::fmt::Debug for MultiVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiVerifier")
            .field("issuers", &self.issuers())
            .finish()
    }
}

impl MultiVerifier {
    /// An empty set; add verifiers with [`MultiVerifier::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a verifier.
    pub fn with(self, verifier: impl TokenVerifier) -> Self {
        self.with_arc(Arc::new(verifier))
    }

    /// Adds a shared verifier.
    pub fn with_arc(mut self, verifier: Arc<dyn TokenVerifier>) -> Self {
        let index = self.verifiers.len();
        self.routes
            .extend(verifier.issuers().into_iter().map(|iss| (iss, index)));
        self.verifiers.push(verifier);
        self
    }

    /// Number of verifiers.
    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    async fn route(&self, token: &BearerToken) -> Result<super::AccessToken, VerifyError> {
        if looks_like_jwt(token.secret()) {
            let parts = split_jws(token.secret())?;
            let payload = URL_SAFE_NO_PAD
                .decode(parts.payload)
                .map_err(|_| InvalidToken::Malformed("the claims are not base64url"))?;
            // Only `iss` is read here, to pick the verifier; that verifier then decodes the
            // claims strictly (duplicates refused) after the signature check and compares
            // `iss` again, so a token cannot be routed one way and verified another.
            let iss = match serde_json::from_slice::<IssuerPeek<'_>>(&payload) {
                Ok(IssuerPeek { iss: Some(iss) }) => iss,
                Ok(_) => return Err(InvalidToken::MissingClaim("iss").into()),
                Err(_) => {
                    // Not an object, a repeated member, or an `iss` that is not a string:
                    // the strict decoder names which.
                    decode_object(parts.payload, "claims")?;
                    return Err(InvalidToken::MissingClaim("iss").into());
                }
            };
            let iss = iss.as_ref();
            if let Some(v) = self
                .routes
                .iter()
                .find(|(i, _)| i.as_str() == iss)
                .and_then(|(_, index)| self.verifiers.get(*index))
            {
                return v.verify(token).await;
            }
            if !self.verifiers.iter().any(|v| v.accepts_opaque()) {
                return Err(InvalidToken::WrongIssuer.into());
            }
        }
        let mut last: VerifyError = InvalidToken::Unrecognized.into();
        for v in self.verifiers.iter().filter(|v| v.accepts_opaque()) {
            match v.verify(token).await {
                Ok(t) => return Ok(t),
                Err(e @ VerifyError::Unavailable(_)) => last = e,
                Err(e) => {
                    if !matches!(last, VerifyError::Unavailable(_)) {
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }
}

/// The `iss` of a JWT payload, read without building the whole claim map.
#[derive(Deserialize)]
struct IssuerPeek<'a> {
    #[serde(borrow, default)]
    iss: Option<Cow<'a, str>>,
}

impl TokenVerifier for MultiVerifier {
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a> {
        Box::pin(self.route(token))
    }
    fn accepts_opaque(&self) -> bool {
        self.verifiers.iter().any(|v| v.accepts_opaque())
    }
    fn issuers(&self) -> Vec<IssuerUrl> {
        self.verifiers.iter().flat_map(|v| v.issuers()).collect()
    }

    fn ready(&self) -> Result<(), crate::error::Unavailable> {
        self.verifiers.iter().try_for_each(|v| v.ready())
    }

    fn keep_keys_in(&self, store: std::sync::Arc<dyn crate::store::Store>) {
        for v in &self.verifiers {
            v.keep_keys_in(store.clone());
        }
    }

    fn key_set_version(&self) -> u64 {
        // Each part only grows, so the sum moves whenever one of them does.
        self.verifiers
            .iter()
            .fold(0u64, |sum, v| sum.wrapping_add(v.key_set_version()))
    }

    fn key_refreshes(&self) -> super::KeyRefreshes {
        self.verifiers.iter().map(|v| v.key_refreshes()).fold(
            super::KeyRefreshes::default(),
            |a, b| super::KeyRefreshes {
                succeeded: a.succeeded + b.succeeded,
                failed: a.failed + b.failed,
            },
        )
    }
}
