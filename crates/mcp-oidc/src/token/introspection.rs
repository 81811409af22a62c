//! Opaque tokens checked by RFC 7662 token introspection.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::access_token::unix_now;
use super::http::{
    CallLimit, DEFAULT_CONCURRENT_CALLS, provider_client, read_limited, transport_message,
};
use super::jwt::AudiencePolicy;
use super::{AccessToken, TokenSource, TokenVerifier, VerifyFuture};
use crate::error::{InvalidToken, Unavailable, VerifyError};
use crate::types::{BearerToken, ClientId, ClientSecret, IssuerUrl};

/// Settings of an [`IntrospectionVerifier`].
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// The issuer whose tokens are introspected (used when the response has no `iss`).
    pub issuer: IssuerUrl,
    /// The introspection endpoint.
    pub endpoint: String,
    /// This resource server's client id at the authorization server.
    pub client_id: ClientId,
    /// Its secret (sent with HTTP Basic).
    pub client_secret: ClientSecret,
    /// Accepted audiences. When the response carries `aud`, it must match; many servers
    /// leave it out, and then the authorization server's word that the token is active is
    /// taken, unless `require_audience` is set.
    pub audience: AudiencePolicy,
    /// Refuse an active token whose introspection response has no `aud` (RFC 7662 makes it
    /// optional; without it, a token issued for another service of the same authorization
    /// server cannot be told apart).
    pub require_audience: bool,
    /// Timeout of each introspection call.
    pub timeout: Duration,
}

/// Verifies opaque tokens by asking the authorization server (RFC 7662).
#[derive(Clone, Debug)]
pub struct IntrospectionVerifier {
    config: Arc<IntrospectionConfig>,
    client: reqwest::Client,
    calls: CallLimit,
}

impl IntrospectionVerifier {
    /// A new verifier, making at most 64 introspection calls at once.
    pub fn new(config: IntrospectionConfig) -> Self {
        Self {
            client: provider_client(config.timeout),
            calls: CallLimit::new(DEFAULT_CONCURRENT_CALLS, config.timeout),
            config: Arc::new(config),
        }
    }

    /// At most `calls` introspection calls in flight at once (default 64); more wait up
    /// to the call timeout for a free slot, then get 503. Each token not in the cache costs
    /// a call, so this is what a flood of made-up tokens costs the authorization server.
    pub fn max_concurrent_calls(mut self, calls: usize) -> Self {
        self.calls = CallLimit::new(calls, self.config.timeout);
        self
    }

    async fn introspect(&self, token: &BearerToken) -> Result<AccessToken, VerifyError> {
        let c = &self.config;
        let _slot = self.calls.enter().await?;
        let unavailable = |detail: String| {
            VerifyError::Unavailable(Unavailable {
                retry_after: Duration::from_secs(5),
                detail,
            })
        };
        let response = self
            .client
            .post(&c.endpoint)
            .basic_auth(c.client_id.as_str(), Some(c.client_secret.secret()))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("token", token.secret()),
                ("token_type_hint", "access_token"),
            ])
            .send()
            .await
            .map_err(|e| unavailable(format!("introspection: {}", transport_message(&e))))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "introspection answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let body = read_limited(&c.endpoint, response)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let claims: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| unavailable("introspection answered invalid JSON".to_owned()))?;
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(InvalidToken::Inactive.into());
        }
        if let Some(exp) = claims
            .get("exp")
            .and_then(super::access_token::numeric_date)
            && exp <= unix_now()
        {
            return Err(InvalidToken::Expired.into());
        }
        if c.require_audience
            && matches!(c.audience, AudiencePolicy::OneOf(_))
            && !claims.contains_key("aud")
        {
            return Err(InvalidToken::MissingClaim("aud").into());
        }
        if let (AudiencePolicy::OneOf(expected), Some(aud)) = (&c.audience, claims.get("aud")) {
            let matches = |a: &str| expected.iter().any(|e| e.as_str() == a);
            let ok = match aud {
                Value::String(a) => matches(a),
                Value::Array(items) => items.iter().any(|v| v.as_str().is_some_and(matches)),
                _ => false,
            };
            if !ok {
                return Err(InvalidToken::WrongAudience.into());
            }
        }
        if let Some(Value::String(iss)) = claims.get("iss")
            && iss != c.issuer.as_str()
        {
            return Err(InvalidToken::WrongIssuer.into());
        }
        AccessToken::from_claims(token.clone(), TokenSource::Introspection, &c.issuer, claims)
            .ok_or_else(|| InvalidToken::MissingClaim("sub").into())
    }
}

impl TokenVerifier for IntrospectionVerifier {
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a> {
        Box::pin(self.introspect(token))
    }
    fn accepts_opaque(&self) -> bool {
        true
    }
    fn issuers(&self) -> Vec<IssuerUrl> {
        vec![self.config.issuer.clone()]
    }
}
