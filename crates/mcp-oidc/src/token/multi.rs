//! Several issuers at once: JWTs routed by their `iss`, opaque tokens tried in order.

use std::sync::Arc;

use serde_json::Value;

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
    pub fn with(mut self, verifier: impl TokenVerifier) -> Self {
        self.verifiers.push(Arc::new(verifier));
        self
    }

    /// Adds a shared verifier.
    pub fn with_arc(mut self, verifier: Arc<dyn TokenVerifier>) -> Self {
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
            let claims = decode_object(parts.payload, "claims")?;
            let iss = match claims.get("iss") {
                Some(Value::String(s)) => s.as_str(),
                _ => return Err(InvalidToken::MissingClaim("iss").into()),
            };
            if let Some(v) = self
                .verifiers
                .iter()
                .find(|v| v.issuers().iter().any(|i| i.as_str() == iss))
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
}
