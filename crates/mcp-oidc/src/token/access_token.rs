//! [`AccessToken`]: who is calling, as established by a [`TokenVerifier`](super::TokenVerifier).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::types::{Audience, BearerToken, ClientId, IssuerUrl, Scopes, Subject};

/// How a token was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// A signed JWT checked against the issuer's keys.
    Jwt,
    /// An opaque token checked by RFC 7662 introspection.
    Introspection,
    /// An opaque token checked by calling the OIDC userinfo endpoint.
    Userinfo,
    /// A fixed development token from configuration.
    Static,
}

/// A verified access token: the caller's identity and grants, plus every claim.
///
/// Cheap to clone (one `Arc`). The raw token is kept in a [`BearerToken`] whose `Debug` is
/// redacted, so printing an `AccessToken` never leaks the credential.
#[derive(Clone)]
pub struct AccessToken(Arc<Inner>);

struct Inner {
    token: BearerToken,
    source: TokenSource,
    issuer: IssuerUrl,
    subject: Subject,
    audiences: Vec<Audience>,
    client_id: Option<ClientId>,
    scopes: Scopes,
    expires_at: Option<u64>,
    issued_at: Option<u64>,
    claims: Map<String, Value>,
    /// Issuer and subject, computed once: stateful servers compare it on every request.
    principal: Box<str>,
}

impl AccessToken {
    /// Builds an access token from a verified claim set (a JWT payload, an introspection
    /// response or a userinfo document).
    ///
    /// Standard fields are read from the claims: `sub`; `iss` (falling back to
    /// `default_issuer`); `aud` (string or array); `client_id`, then `azp`; scopes from the
    /// `scope` string or the `scp` array (string or array); `exp`; `iat`.
    pub fn from_claims(
        token: BearerToken,
        source: TokenSource,
        default_issuer: &IssuerUrl,
        claims: Map<String, Value>,
    ) -> Option<Self> {
        let subject = Subject::new(claims.get("sub")?.as_str()?);
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .map(IssuerUrl::from)
            .unwrap_or_else(|| default_issuer.clone());
        let audiences = match claims.get("aud") {
            Some(Value::String(s)) => vec![Audience::new(s.as_str())],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(Audience::from)
                .collect(),
            _ => Vec::new(),
        };
        let client_id = ["client_id", "azp"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str))
            .map(ClientId::from);
        let scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) => Scopes::from_space_separated(s),
            (_, Some(Value::Array(items))) => items.iter().filter_map(Value::as_str).collect(),
            (_, Some(Value::String(s))) => Scopes::from_space_separated(s),
            _ => Scopes::new(),
        };
        let expires_at = claims.get("exp").and_then(numeric_date);
        let issued_at = claims.get("iat").and_then(numeric_date);
        let principal = format!("{issuer}\u{0}{subject}").into_boxed_str();
        Some(Self(Arc::new(Inner {
            principal,
            token,
            source,
            issuer,
            subject,
            audiences,
            client_id,
            scopes,
            expires_at,
            issued_at,
            claims,
        })))
    }

    /// The raw token. Use it only to call an API that expects this very token.
    pub fn token(&self) -> &BearerToken {
        &self.0.token
    }
    /// How the token was verified.
    pub fn source(&self) -> TokenSource {
        self.0.source
    }
    /// The `iss` claim.
    pub fn issuer(&self) -> &IssuerUrl {
        &self.0.issuer
    }
    /// The `sub` claim.
    pub fn subject(&self) -> &Subject {
        &self.0.subject
    }
    /// The `aud` claim, as a list.
    pub fn audiences(&self) -> &[Audience] {
        &self.0.audiences
    }
    /// The client the token was issued to (`client_id`, else `azp`).
    pub fn client_id(&self) -> Option<&ClientId> {
        self.0.client_id.as_ref()
    }
    /// The granted scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.0.scopes
    }
    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.contains(scope)
    }
    /// `exp`, in seconds since the Unix epoch.
    pub fn expires_at(&self) -> Option<u64> {
        self.0.expires_at
    }
    /// `iat`, in seconds since the Unix epoch.
    pub fn issued_at(&self) -> Option<u64> {
        self.0.issued_at
    }
    /// Every claim of the token, standard or not.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.0.claims
    }
    /// One claim.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.0.claims.get(name)
    }
    /// One claim, when it is a string.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.0.claims.get(name).and_then(Value::as_str)
    }
    /// The `email` claim.
    pub fn email(&self) -> Option<&str> {
        self.claim_str("email")
    }
    /// The `name` claim.
    pub fn name(&self) -> Option<&str> {
        self.claim_str("name")
    }

    /// Whether the token has expired at `now` (seconds since the epoch).
    pub fn is_expired_at(&self, now: u64) -> bool {
        self.0.expires_at.is_some_and(|exp| exp <= now)
    }

    /// How long the token stays valid from now, if it expires.
    pub fn remaining_lifetime(&self) -> Option<Duration> {
        let exp = self.0.expires_at?;
        Some(Duration::from_secs(exp.saturating_sub(unix_now())))
    }

    /// A stable key for the principal: issuer and subject. Sessions are bound to it.
    pub fn principal_key(&self) -> &str {
        &self.0.principal
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.0.token)
            .field("source", &self.0.source)
            .field("issuer", &self.0.issuer)
            .field("subject", &self.0.subject)
            .field("audiences", &self.0.audiences)
            .field("client_id", &self.0.client_id)
            .field("scopes", &self.0.scopes)
            .field("expires_at", &self.0.expires_at)
            .finish_non_exhaustive()
    }
}

/// Reads an RFC 7519 NumericDate. Only integers and finite non-negative floats are dates;
/// strings are not, whatever they contain.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.0e15)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn scopes_come_from_scope_string_or_scp_array() {
        let iss = IssuerUrl::from("https://idp");
        let t = AccessToken::from_claims(
            BearerToken::new("t"),
            TokenSource::Jwt,
            &iss,
            claims(json!({"sub": "a", "scope": "openid mcp:read"})),
        )
        .unwrap();
        assert!(t.has_scope("mcp:read"));
        let t = AccessToken::from_claims(
            BearerToken::new("t"),
            TokenSource::Jwt,
            &iss,
            claims(json!({"sub": "a", "scp": ["x", "y"], "azp": "cli"})),
        )
        .unwrap();
        assert!(t.has_scope("y"));
        assert_eq!(t.client_id().unwrap().as_str(), "cli");
        assert_eq!(t.issuer().as_str(), "https://idp");
    }

    #[test]
    fn debug_output_redacts_the_raw_token() {
        let t = AccessToken::from_claims(
            BearerToken::new("eyJ-secret"),
            TokenSource::Jwt,
            &IssuerUrl::from("i"),
            claims(json!({"sub": "a"})),
        )
        .unwrap();
        assert!(!format!("{t:?}").contains("eyJ-secret"));
    }

    #[test]
    fn string_exp_is_not_a_date() {
        assert_eq!(numeric_date(&json!("9999999999")), None);
        assert_eq!(numeric_date(&json!(12.5)), Some(12));
        assert_eq!(numeric_date(&json!(-1)), None);
    }
}
