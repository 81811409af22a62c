//! The crate's typed errors.
//!
//! Every way a request can fail authorization is a variant of [`AuthError`]; the HTTP
//! response for each (status, `WWW-Authenticate`, JSON body) is built in one place,
//! [`crate::resource::challenge`].

use std::time::Duration;

use crate::types::Scopes;

/// Why a presented token was refused. The text is safe to show to the client: it names the
/// failed check, never the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// Not a JWT and no opaque-token verifier is configured, or unparseable.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// An encrypted JWT (JWE); only signed tokens are accepted.
    #[error("encrypted tokens (JWE) are not accepted")]
    Encrypted,
    /// The `alg` is not allowed for this issuer's keys.
    #[error("the signing algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// The header lists a critical extension we do not implement (RFC 7515 §4.1.11).
    #[error("the token requires an unsupported critical header extension")]
    UnsupportedCritical,
    /// No key of the issuer has this `kid`, even after refreshing the key set.
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// A required claim is absent or has the wrong type.
    #[error("the token lacks a valid `{0}` claim")]
    MissingClaim(&'static str),
    /// `iss` is not the expected issuer.
    #[error("the token was issued by an untrusted issuer")]
    WrongIssuer,
    /// `aud` does not name this resource.
    #[error("the token is not intended for this resource (audience mismatch)")]
    WrongAudience,
    /// `typ` is not one this server accepts, or missing where one is required.
    #[error("the token type is not accepted")]
    WrongType,
    /// The authorization server says the token is not active (revoked, expired, unknown).
    #[error("the token is not active")]
    Inactive,
    /// The token lacks scopes every request to this server needs.
    #[error("the token lacks the scopes this server requires")]
    MissingRequiredScopes,
    /// The token is not known to any configured verifier.
    #[error("the token is not recognized")]
    Unrecognized,
}

/// Why verification could not be completed: the fault is ours or the provider's, not the
/// caller's, so the answer is 503 and the client should retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the authorization server is unavailable: {detail}")]
pub struct Unavailable {
    /// When to try again.
    pub retry_after: Duration,
    /// What failed, for the log and the response.
    pub detail: String,
}

/// The outcome of a failed [`TokenVerifier::verify`](crate::token::TokenVerifier::verify).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not acceptable.
    #[error(transparent)]
    Invalid(#[from] InvalidToken),
    /// The token could not be checked right now.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Everything that can stop a request at the resource server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials at all: 401 with a bare challenge (RFC 6750 §3.1).
    #[error("this resource requires an access token (Authorization: Bearer <token>)")]
    MissingToken,
    /// The `Authorization` header or the request is malformed: 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The token was refused: 401 `invalid_token`.
    #[error(transparent)]
    InvalidToken(#[from] InvalidToken),
    /// The token is valid but lacks scope: 403 `insufficient_scope`.
    #[error("{description}")]
    InsufficientScope {
        /// Scopes to ask for: those needed plus those already granted.
        scope: Scopes,
        /// What needed them.
        description: String,
    },
    /// The token could not be checked: 503 with `Retry-After`.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The session does not exist for this caller: 404, as if unknown.
    #[error("session not found")]
    SessionNotFound,
    /// The request body is larger than allowed: 413.
    #[error("the request body is larger than the {limit} bytes this server accepts")]
    PayloadTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
}

impl From<VerifyError> for AuthError {
    fn from(value: VerifyError) -> Self {
        match value {
            VerifyError::Invalid(e) => AuthError::InvalidToken(e),
            VerifyError::Unavailable(e) => AuthError::Unavailable(e),
        }
    }
}

/// A configuration mistake found at start-up. The message names the setting and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{key}`: {message}")]
pub struct ConfigError {
    /// The setting at fault.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A new configuration error.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
