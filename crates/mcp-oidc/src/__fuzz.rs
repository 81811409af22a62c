//! Entry points for the fuzz targets under `fuzz/`: thin wrappers around internal parsers.
//! Not part of the public API; no stability promise.

use std::sync::OnceLock;

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Map, Value};

use crate::error::{AuthError, InvalidToken};
use crate::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource};

/// The issuer [`check_claims`] expects.
pub const ISSUER: &str = "https://idp.example.com";
/// The audience [`check_claims`] expects.
pub const AUDIENCE: &str = "https://mcp.example.com/mcp";

/// A decoded JOSE header or claims set.
pub type JsonObject = Map<String, Value>;

/// The bearer token of an `Authorization` header map, as the resource server reads it.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<String, AuthError> {
    crate::resource::bearer_token(headers).map(str::to_owned)
}

/// Splits a compact JWS and strictly decodes its header and claims.
pub fn decode_jws(token: &str) -> Result<(JsonObject, JsonObject), InvalidToken> {
    let parts = crate::token::split_jws(token)?;
    let header = crate::token::decode_object(parts.header, "header")?;
    let claims = crate::token::decode_object(parts.payload, "claims")?;
    Ok((header, claims))
}

/// Strictly decodes one base64url JSON object.
pub fn decode_object(part: &str) -> Result<JsonObject, InvalidToken> {
    crate::token::decode_object(part, "claims")
}

/// The claim checks of a [`JwtVerifier`] (issuer [`ISSUER`], audience [`AUDIENCE`]),
/// without the signature.
pub fn check_claims(claims: &JsonObject) -> Result<(), InvalidToken> {
    static VERIFIER: OnceLock<Option<JwtVerifier>> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| {
        JwtVerifier::new(JwtConfig::new(
            ISSUER,
            KeySource::Static(JwkSet { keys: Vec::new() }),
            AudiencePolicy::OneOf(vec![AUDIENCE.into()]),
        ))
        .ok()
    });
    match verifier {
        Some(v) => v.check_claims(claims),
        None => Err(InvalidToken::Unrecognized),
    }
}

/// Validates an RFC 7591 registration request body as the proxy's `/register` does (with
/// the default redirect-URI policy). `Ok` with the accepted redirect URIs, or the OAuth
/// error code.
pub fn registration_request(body: &[u8]) -> Result<usize, &'static str> {
    crate::proxy::endpoints::parse_registration(&crate::proxy::RedirectPolicy::default(), body)
        .map(|r| r.redirect_uri_count())
        .map_err(|e| e.code())
}
