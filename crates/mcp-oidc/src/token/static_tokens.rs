//! Fixed tokens for local development. Never use them in production: anyone who reads the
//! configuration can call the server.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{AccessToken, TokenSource, TokenVerifier, VerifyFuture};
use crate::error::InvalidToken;
use crate::types::{BearerToken, IssuerUrl, TokenFingerprint};

/// Accepts a fixed set of tokens, each mapped to its claims.
#[derive(Clone)]
pub struct StaticTokenVerifier {
    // Keyed by digest so lookups reveal nothing about the tokens through timing.
    tokens: Arc<HashMap<TokenFingerprint, Map<String, Value>>>,
    issuer: IssuerUrl,
}

impl std::fmt::Debug for StaticTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticTokenVerifier({} tokens)", self.tokens.len())
    }
}

impl StaticTokenVerifier {
    /// Tokens and their claims. Claims without `iss` are attributed to `issuer`.
    /// Logs a warning, since static tokens are for development only.
    pub fn new(
        issuer: impl Into<IssuerUrl>,
        tokens: impl IntoIterator<Item = (String, Map<String, Value>)>,
    ) -> Self {
        let tokens: HashMap<_, _> = tokens
            .into_iter()
            .map(|(t, c)| (BearerToken::new(t).fingerprint(), c))
            .collect();
        tracing::warn!(
            count = tokens.len(),
            "STATIC DEVELOPMENT TOKENS ARE ENABLED: anyone holding one is authenticated. Never use this in production."
        );
        Self {
            tokens: Arc::new(tokens),
            issuer: issuer.into(),
        }
    }
}

impl TokenVerifier for StaticTokenVerifier {
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a> {
        Box::pin(async move {
            let claims = self
                .tokens
                .get(&token.fingerprint())
                .cloned()
                .ok_or(InvalidToken::Unrecognized)?;
            AccessToken::from_claims(token.clone(), TokenSource::Static, &self.issuer, claims)
                .ok_or_else(|| InvalidToken::MissingClaim("sub").into())
        })
    }
    fn accepts_opaque(&self) -> bool {
        true
    }
    fn issuers(&self) -> Vec<IssuerUrl> {
        vec![self.issuer.clone()]
    }
}
