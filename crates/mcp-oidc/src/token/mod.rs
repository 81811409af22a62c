//! Token verification: turning a bearer token into an [`AccessToken`] — or refusing it.
//!
//! Every verifier implements [`TokenVerifier`]:
//! - [`JwtVerifier`]: signed JWTs, checked against the issuer's JWKS (found by OIDC
//!   discovery, an explicit `jwks_uri`, or static keys);
//! - [`IntrospectionVerifier`]: opaque tokens, RFC 7662 introspection;
//! - [`UserinfoVerifier`]: opaque tokens, checked by calling the OIDC userinfo endpoint;
//! - [`StaticTokenVerifier`]: fixed tokens for local development only;
//! - [`MultiVerifier`]: several issuers at once, JWTs routed by their `iss`.
//!
//! Verified tokens are cached by [`TokenCache`], keyed by the SHA-256 of the token.

mod access_token;
mod cache;
mod discovery;
mod http;
mod introspection;
mod jwks;
mod jwt;
mod multi;
mod static_tokens;
mod userinfo;

use std::future::Future;
use std::pin::Pin;

pub(crate) use access_token::unix_now;
// For the fuzz entry points in `crate::__fuzz`.
pub use access_token::{AccessToken, TokenSource};
pub use cache::TokenCache;
pub use discovery::{ProviderMetadata, discover};
pub(crate) use http::provider_client as provider_http_client;
pub(crate) use http::transport_message as transport_error;
pub use introspection::{IntrospectionConfig, IntrospectionVerifier};
pub use jwks::{JwksSettings, KeySource};
pub use jwt::{AudiencePolicy, JwtConfig, JwtVerifier};
pub(crate) use jwt::{decode_object, is_base64url_or_dot, split_jws};
pub use multi::MultiVerifier;
pub use static_tokens::StaticTokenVerifier;
pub use userinfo::{UserinfoConfig, UserinfoVerifier};

use crate::error::VerifyError;
use crate::types::BearerToken;

/// A boxed future returned by [`TokenVerifier::verify`].
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, VerifyError>> + Send + 'a>>;

/// Checks a bearer token and says who it belongs to.
///
/// Implementations must never log the token itself. Use [`BearerToken::fingerprint`] when a
/// log line has to identify one.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token`.
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a>;

    /// Whether this verifier can ever accept a token that is not a JWT. Used by
    /// [`MultiVerifier`] to route opaque tokens.
    fn accepts_opaque(&self) -> bool {
        false
    }

    /// The issuers whose tokens this verifier checks, for routing and for the
    /// protected-resource metadata.
    fn issuers(&self) -> Vec<crate::types::IssuerUrl> {
        Vec::new()
    }

    /// Whether this verifier can check tokens now, or why not (for a readiness probe:
    /// while the provider's keys have never been loaded, every token would get 503).
    fn ready(&self) -> Result<(), crate::error::Unavailable> {
        Ok(())
    }

    /// Keeps the provider's signing keys in `store` as they are fetched, so that a server
    /// restarted while its provider is unreachable verifies tokens with the keys kept by
    /// its previous run (for at most [`JwksSettings::max_refresh`] after they were fetched)
    /// instead of answering 503. Verifiers without fetched keys ignore it.
    fn keep_keys_in(&self, store: std::sync::Arc<dyn crate::store::Store>) {
        let _ = store;
    }

    /// How many times the provider's keys were loaded, and failed to load, so far (for
    /// metrics). Verifiers without fetched keys report zeros.
    fn key_refreshes(&self) -> KeyRefreshes {
        KeyRefreshes::default()
    }

    /// A number that changes whenever the keys this verifier trusts change (a key added,
    /// removed or replaced at the provider), or anything else that can change its answer
    /// for a token it has already answered (the OAuth proxy's verifier counts revoked
    /// grants here). A [`TokenCache`] entry made under another version is not used: a
    /// token signed by a key the provider has withdrawn is refused as soon as the new key
    /// set is loaded, and a refusal remembered under the old keys is checked again.
    /// Verifiers without fetched keys keep the default, 0.
    fn key_set_version(&self) -> u64 {
        0
    }
}

/// Counts of key set loads from the provider ([`TokenVerifier::key_refreshes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyRefreshes {
    /// Loads that brought a usable key set.
    pub succeeded: u64,
    /// Loads that failed (provider unreachable, bad answer, no usable key).
    pub failed: u64,
}

impl<T: TokenVerifier + ?Sized> TokenVerifier for std::sync::Arc<T> {
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a> {
        (**self).verify(token)
    }
    fn accepts_opaque(&self) -> bool {
        (**self).accepts_opaque()
    }
    fn issuers(&self) -> Vec<crate::types::IssuerUrl> {
        (**self).issuers()
    }
    fn ready(&self) -> Result<(), crate::error::Unavailable> {
        (**self).ready()
    }
    fn keep_keys_in(&self, store: std::sync::Arc<dyn crate::store::Store>) {
        (**self).keep_keys_in(store)
    }
    fn key_refreshes(&self) -> KeyRefreshes {
        (**self).key_refreshes()
    }
    fn key_set_version(&self) -> u64 {
        (**self).key_set_version()
    }
}

/// Whether a token has the compact JWS shape (three dot-separated parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}
