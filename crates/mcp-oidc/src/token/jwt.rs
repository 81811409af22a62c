//! Signed JWT access tokens (RFC 9068, and ID tokens where a deployment uses them as bearer
//! tokens), verified against the issuer's keys.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::access_token::{numeric_date, unix_now};
use super::jwks::{JwksSettings, KeySource, KeyStore, VerifyKey};
use super::{AccessToken, TokenSource, TokenVerifier, VerifyFuture};
use crate::error::{ConfigError, InvalidToken, VerifyError};
use crate::types::{Audience, BearerToken, IssuerUrl};

/// Longest token accepted. Real access tokens are well under this; the limit keeps hostile
/// tokens from costing more than a header parse.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Which `aud` values are accepted.
#[derive(Debug, Clone)]
pub enum AudiencePolicy {
    /// The token's `aud` must contain one of these (normally this server's resource URL).
    OneOf(Vec<Audience>),
    /// Any audience. Only for deployments whose issuer serves this resource alone: it gives
    /// up the protection against tokens issued for other services.
    AnyAudience,
}

/// Settings of a [`JwtVerifier`].
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The exact `iss` expected.
    pub issuer: IssuerUrl,
    /// Where the keys come from.
    pub keys: KeySource,
    /// The accepted audiences.
    pub audience: AudiencePolicy,
    /// Algorithms allowed. HMAC ones only take effect with [`KeySource::HmacSecret`].
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Accepted `typ` header values (compared case-insensitively); empty accepts any.
    pub accepted_types: Vec<String>,
    /// Refuse a JWT without `typ`. With `accepted_types` set to `at+jwt` and
    /// `application/at+jwt`, this is the strict profile of RFC 9068 §4. Off by default:
    /// several providers issue untyped access tokens.
    pub require_type: bool,
    /// Key fetching and caching.
    pub jwks: JwksSettings,
}

impl JwtConfig {
    /// A configuration with the defaults: asymmetric algorithms only, 60 s leeway, `typ`
    /// `JWT` or `at+jwt` (or none).
    pub fn new(issuer: impl Into<IssuerUrl>, keys: KeySource, audience: AudiencePolicy) -> Self {
        Self {
            issuer: issuer.into(),
            keys,
            audience,
            algorithms: default_algorithms(),
            leeway: Duration::from_secs(60),
            accepted_types: vec!["JWT".into(), "at+jwt".into(), "application/at+jwt".into()],
            require_type: false,
            jwks: JwksSettings::default(),
        }
    }
}

/// The asymmetric algorithms accepted by default.
pub fn default_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ]
}

/// Verifies signed JWTs from one issuer.
///
/// Keys are loaded in the background as soon as the verifier is created (inside a Tokio
/// runtime); until they load, verification answers [`crate::error::Unavailable`] so the
/// server responds 503 with `Retry-After` instead of refusing valid tokens.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: JwtConfig,
    keys: Arc<KeyStore>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl JwtVerifier {
    /// Creates the verifier and starts loading keys.
    pub fn new(config: JwtConfig) -> Result<Self, ConfigError> {
        if config.issuer.as_str().is_empty() {
            return Err(ConfigError::new(
                "issuer",
                "the expected issuer must not be empty",
            ));
        }
        if let AudiencePolicy::OneOf(list) = &config.audience
            && list.is_empty()
        {
            return Err(ConfigError::new(
                "audience",
                "no audience configured: set the audience (normally this server's resource URL), or explicitly allow any audience",
            ));
        }
        let hmac = matches!(config.keys, KeySource::HmacSecret(_));
        let algorithms: Vec<Algorithm> = config
            .algorithms
            .iter()
            .copied()
            .filter(|a| {
                let is_hmac = matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
                is_hmac == hmac
            })
            .collect();
        if algorithms.is_empty() {
            return Err(ConfigError::new(
                "algorithms",
                if hmac {
                    "an HMAC secret is configured but no HS256/HS384/HS512 algorithm is allowed"
                } else {
                    "no asymmetric signing algorithm is allowed (RS256, ES256, EdDSA, ...)"
                },
            ));
        }
        let keys = KeyStore::new(config.keys.clone(), config.jwks.clone(), algorithms);
        keys.spawn_refresher();
        Ok(Self {
            inner: Arc::new(Inner { config, keys }),
        })
    }

    /// The issuer this verifier accepts.
    pub fn issuer(&self) -> &IssuerUrl {
        &self.inner.config.issuer
    }

    /// How many times the JWKS has been fetched from the provider.
    pub fn jwks_fetch_count(&self) -> u64 {
        self.inner.keys.fetch_count()
    }

    /// Whether signing keys are loaded.
    pub fn keys_loaded(&self) -> bool {
        self.inner.keys.current().is_some()
    }

    async fn verify_jwt(&self, token: &BearerToken) -> Result<AccessToken, VerifyError> {
        let config = &self.inner.config;
        let parts = split_jws(token.secret())?;
        let header = decode_object(parts.header, "header")?;

        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(InvalidToken::Malformed("the header has no `alg`"))?;
        let alg: Algorithm = alg_name
            .parse()
            .map_err(|_| InvalidToken::AlgorithmNotAllowed(sanitize(alg_name)))?;
        if !config.algorithms.contains(&alg) {
            return Err(InvalidToken::AlgorithmNotAllowed(alg_name.to_owned()).into());
        }
        if header.contains_key("crit") {
            // We implement no JWS extensions, so any critical one must be refused (RFC 7515).
            return Err(InvalidToken::UnsupportedCritical.into());
        }
        if header.contains_key("enc") {
            return Err(InvalidToken::Encrypted.into());
        }
        if config.require_type && !header.contains_key("typ") {
            return Err(InvalidToken::WrongType.into());
        }
        if !config.accepted_types.is_empty()
            && let Some(typ) = header.get("typ")
        {
            let typ = typ.as_str().ok_or(InvalidToken::WrongType)?;
            if !config
                .accepted_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(typ))
            {
                return Err(InvalidToken::WrongType.into());
            }
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(InvalidToken::Malformed("`kid` is not a string").into()),
        };
        // `jku`, `x5u`, `jwk` and `x5c` are deliberately ignored: keys come only from the
        // issuer's configured key source, never from the token itself.

        if parts.signature.is_empty() {
            return Err(InvalidToken::BadSignature.into());
        }
        let keys = self.inner.keys.keys_for(kid, alg).await?;
        let signature = URL_SAFE_NO_PAD
            .decode(parts.signature)
            .map_err(|_| InvalidToken::BadSignature)?;
        let verifies = |keys: &[Arc<VerifyKey>]| {
            keys.iter()
                .any(|k| k.verify(alg, parts.signing_input.as_bytes(), &signature))
        };
        let mut verified = verifies(&keys);
        // A token without `kid` names no key to find missing, so a key the provider has
        // just rotated in shows only as a failed signature: look for new keys once (rate
        // limited like an unknown `kid`) before refusing.
        if !verified && kid.is_none() && self.inner.keys.refetch_rate_limited().await {
            verified = verifies(&self.inner.keys.keys_for(None, alg).await?);
        }
        if !verified {
            return Err(InvalidToken::BadSignature.into());
        }

        let claims = decode_object(parts.payload, "claims")?;
        self.check_claims(&claims)?;
        AccessToken::from_claims(token.clone(), TokenSource::Jwt, &config.issuer, claims)
            .ok_or_else(|| InvalidToken::MissingClaim("sub").into())
    }

    pub(crate) fn check_claims(&self, claims: &Map<String, Value>) -> Result<(), InvalidToken> {
        let config = &self.inner.config;
        let now = unix_now();
        let leeway = config.leeway.as_secs();

        match claims.get("iss") {
            Some(Value::String(iss)) if iss == config.issuer.as_str() => {}
            Some(Value::String(_)) => return Err(InvalidToken::WrongIssuer),
            _ => return Err(InvalidToken::MissingClaim("iss")),
        }
        if !matches!(claims.get("sub"), Some(Value::String(s)) if !s.is_empty()) {
            return Err(InvalidToken::MissingClaim("sub"));
        }
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(InvalidToken::MissingClaim("exp"))?;
        if exp.saturating_add(leeway) <= now {
            return Err(InvalidToken::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(InvalidToken::MissingClaim("nbf"))?;
            if nbf > now.saturating_add(leeway) {
                return Err(InvalidToken::NotYetValid);
            }
        }
        if let Some(iat) = claims.get("iat") {
            let iat = numeric_date(iat).ok_or(InvalidToken::MissingClaim("iat"))?;
            if iat > now.saturating_add(leeway) {
                return Err(InvalidToken::IssuedInFuture);
            }
        }
        match &config.audience {
            AudiencePolicy::AnyAudience => {}
            AudiencePolicy::OneOf(expected) => {
                let matches = |a: &str| expected.iter().any(|e| e.as_str() == a);
                let ok = match claims.get("aud") {
                    Some(Value::String(a)) => matches(a),
                    Some(Value::Array(items)) => {
                        items.iter().any(|v| v.as_str().is_some_and(matches))
                    }
                    None => return Err(InvalidToken::MissingClaim("aud")),
                    Some(_) => false,
                };
                if !ok {
                    return Err(InvalidToken::WrongAudience);
                }
            }
        }
        Ok(())
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a> {
        Box::pin(self.verify_jwt(token))
    }

    fn issuers(&self) -> Vec<IssuerUrl> {
        vec![self.inner.config.issuer.clone()]
    }

    fn ready(&self) -> Result<(), crate::error::Unavailable> {
        self.inner.keys.ready()
    }

    fn keep_keys_in(&self, store: Arc<dyn crate::store::Store>) {
        self.inner.keys.keep_in(store);
    }

    fn key_refreshes(&self) -> super::KeyRefreshes {
        self.inner.keys.refreshes()
    }

    fn key_set_version(&self) -> u64 {
        self.inner.keys.version()
    }
}

pub(crate) struct JwsParts<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) signing_input: &'a str,
}

/// A byte of the base64url alphabet, or the dot between a JWS's parts.
pub(crate) fn is_base64url_or_dot(b: u8) -> bool {
    // `| 0x20` folds exactly the upper-case letters onto the lower-case ones. Bitwise `|`
    // rather than `||`, so that the test has no branch and runs on many bytes at once.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'_')
        | (b == b'.')
}

/// Splits a compact JWS, refusing JWEs, oversized tokens and stray characters.
pub(crate) fn split_jws(token: &str) -> Result<JwsParts<'_>, InvalidToken> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(InvalidToken::Malformed("the token is too large"));
    }
    // This runs over every uncached token (about a kilobyte), twice when several issuers
    // are routed: one branch-free pass over fixed-size chunks, which the compiler turns
    // into vector instructions, counts the dots and checks the alphabet. The errors are
    // then judged in the order they are reported.
    let (mut dots, mut alphabet) = (0usize, true);
    let mut chunks = token.as_bytes().chunks_exact(32);
    for chunk in &mut chunks {
        let (mut chunk_dots, mut chunk_alphabet) = (0u8, true);
        for &b in chunk {
            chunk_dots += u8::from(b == b'.');
            chunk_alphabet &= is_base64url_or_dot(b);
        }
        dots += usize::from(chunk_dots);
        alphabet &= chunk_alphabet;
    }
    for &b in chunks.remainder() {
        dots += usize::from(b == b'.');
        alphabet &= is_base64url_or_dot(b);
    }
    let foreign = !alphabet;
    if dots == 4 {
        return Err(InvalidToken::Encrypted);
    }
    if dots != 2 {
        return Err(InvalidToken::Malformed("not a JWT"));
    }
    if foreign {
        return Err(InvalidToken::Malformed("the token is not base64url"));
    }
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or(InvalidToken::Malformed("not a JWT"))?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or(InvalidToken::Malformed("not a JWT"))?;
    if header.is_empty() || payload.is_empty() {
        return Err(InvalidToken::Malformed("not a JWT"));
    }
    Ok(JwsParts {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// Decodes one base64url JSON part, which must be an object without duplicate members: a
/// duplicate `aud` or `iss` could be read one way here and another way elsewhere.
pub(crate) fn decode_object(
    part: &str,
    what: &'static str,
) -> Result<Map<String, Value>, InvalidToken> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        InvalidToken::Malformed(if what == "header" {
            "the header is not base64url"
        } else {
            "the claims are not base64url"
        })
    })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let object = Deserializer::deserialize_map(&mut de, StrictObject).map_err(|_| {
        InvalidToken::Malformed(if what == "header" {
            "the header is not a JSON object (or repeats a member)"
        } else {
            "the claims are not a JSON object (or repeat a member)"
        })
    })?;
    de.end()
        .map_err(|_| InvalidToken::Malformed("trailing data after the JSON object"))?;
    Ok(object)
}

struct StrictObject;

impl<'de> Visitor<'de> for StrictObject {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object without duplicate members")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        while let Some((key, value)) = access.next_entry::<String, Value>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom("duplicate member"));
            }
            map.insert(key, value);
        }
        Ok(map)
    }
}

/// Keeps attacker-chosen text printable and short before it reaches an error message.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn duplicate_claims_are_refused() {
        let part = b64(r#"{"aud":"a","aud":"b"}"#);
        assert!(decode_object(&part, "claims").is_err());
        let part = b64(r#"{"aud":"a","nested":{"x":1}}"#);
        assert!(decode_object(&part, "claims").is_ok());
    }

    #[test]
    fn five_part_tokens_are_reported_as_encrypted() {
        assert_eq!(split_jws("a.b.c.d.e").err(), Some(InvalidToken::Encrypted));
        assert!(matches!(split_jws("a.b"), Err(InvalidToken::Malformed(_))));
        assert!(split_jws("a.b.").is_ok_and(|p| p.signature.is_empty()));
    }

    #[test]
    fn oversized_and_non_base64url_tokens_are_malformed() {
        let big = format!("{}.{}.{}", "a".repeat(MAX_TOKEN_BYTES), "b", "c");
        assert!(matches!(split_jws(&big), Err(InvalidToken::Malformed(_))));
        assert!(matches!(
            split_jws("a+b.c.d"),
            Err(InvalidToken::Malformed(_))
        ));
    }

    #[test]
    fn the_alphabet_test_accepts_exactly_base64url_and_the_dot() {
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            assert_eq!(is_base64url_or_dot(b), expected, "byte {b:#04x}");
        }
        // A stray byte is found wherever it sits, past the first chunk of 32 too.
        let token = format!("{}.{}.{}", "a".repeat(40), "b".repeat(40), "c".repeat(40));
        assert!(split_jws(&token).is_ok());
        for at in [0, 31, 32, 63, 64, 100, token.len() - 1] {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = b'=';
            let bad = String::from_utf8(bytes).expect("ASCII");
            assert!(
                matches!(split_jws(&bad), Err(InvalidToken::Malformed(_))),
                "stray byte at {at}"
            );
        }
    }
}
