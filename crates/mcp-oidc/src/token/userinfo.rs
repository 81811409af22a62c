//! Opaque tokens checked by calling the provider's OIDC userinfo endpoint.
//!
//! This is how a resource server validates tokens "with the OIDC server" when the provider
//! issues opaque access tokens and offers no introspection (the Python
//! `oidc-provider-mock`, for one). Userinfo says who the token belongs to but not for
//! which audience it was issued, so prefer JWTs or introspection where the provider has them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::discovery::discover;
use super::http::{
    CallLimit, DEFAULT_CONCURRENT_CALLS, provider_client, read_limited, transport_message,
};
use super::{AccessToken, TokenSource, TokenVerifier, VerifyFuture};
use crate::error::{InvalidToken, Unavailable, VerifyError};
use crate::types::{BearerToken, IssuerUrl};

/// Settings of a [`UserinfoVerifier`].
#[derive(Debug, Clone)]
pub struct UserinfoConfig {
    /// The issuer; its claims are attributed to it.
    pub issuer: IssuerUrl,
    /// The issuer or its configuration URL, used to discover the endpoint when
    /// `endpoint` is not given.
    pub discovery_url: String,
    /// The userinfo endpoint, if known.
    pub endpoint: Option<String>,
    /// Timeout of each call.
    pub timeout: Duration,
}

/// Verifies opaque tokens by presenting them to the userinfo endpoint.
#[derive(Clone, Debug)]
pub struct UserinfoVerifier {
    config: Arc<UserinfoConfig>,
    endpoint: Arc<OnceCell<String>>,
    client: reqwest::Client,
    calls: CallLimit,
}

impl UserinfoVerifier {
    /// A new verifier, making at most 64 userinfo calls at once.
    pub fn new(config: UserinfoConfig) -> Self {
        let endpoint = Arc::new(OnceCell::new());
        if let Some(e) = &config.endpoint {
            let _ = endpoint.set(e.clone());
        }
        Self {
            client: provider_client(config.timeout),
            calls: CallLimit::new(DEFAULT_CONCURRENT_CALLS, config.timeout),
            config: Arc::new(config),
            endpoint,
        }
    }

    /// At most `calls` userinfo calls in flight at once (default 64); more wait up to the
    /// call timeout for a free slot, then get 503. Each token not in the cache costs a
    /// call, so this is what a flood of made-up tokens costs the provider.
    pub fn max_concurrent_calls(mut self, calls: usize) -> Self {
        self.calls = CallLimit::new(calls, self.config.timeout);
        self
    }

    async fn endpoint(&self) -> Result<&str, VerifyError> {
        self.endpoint
            .get_or_try_init(|| async {
                let meta = discover(&self.client, &self.config.discovery_url).await?;
                meta.userinfo_endpoint
                    .ok_or_else(|| "provider metadata has no userinfo_endpoint".to_owned())
            })
            .await
            .map(String::as_str)
            .map_err(|detail| {
                VerifyError::Unavailable(Unavailable {
                    retry_after: Duration::from_secs(5),
                    detail,
                })
            })
    }

    async fn check(&self, token: &BearerToken) -> Result<AccessToken, VerifyError> {
        let endpoint = self.endpoint().await?;
        let _slot = self.calls.enter().await?;
        let unavailable = |detail: String| {
            VerifyError::Unavailable(Unavailable {
                retry_after: Duration::from_secs(5),
                detail,
            })
        };
        let response = self
            .client
            .get(endpoint)
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(format!("userinfo: {}", transport_message(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            // The provider's trouble, not the token's: a client told its token is invalid
            // would throw a good one away.
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(5), |s| {
                    Duration::from_secs(s.clamp(1, 300))
                });
            return Err(VerifyError::Unavailable(Unavailable {
                retry_after,
                detail: format!("userinfo answered HTTP {}", status.as_u16()),
            }));
        }
        if status.is_client_error() {
            // 401 per RFC 6750; some providers (oidc-provider-mock) answer 400.
            return Err(InvalidToken::Inactive.into());
        }
        if !status.is_success() {
            return Err(unavailable(format!(
                "userinfo answered HTTP {}",
                status.as_u16()
            )));
        }
        let body = read_limited(endpoint, response)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let claims: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| unavailable("userinfo answered invalid JSON".to_owned()))?;
        let mut claims = claims;
        // Userinfo seldom names an issuer; one that names another than the provider asked
        // is not believed (the caller's identity is issuer and subject together).
        match claims.get("iss") {
            None => {
                let iss = Value::String(self.config.issuer.as_str().to_owned());
                claims.insert("iss".into(), iss);
            }
            Some(Value::String(iss)) if iss == self.config.issuer.as_str() => {}
            Some(_) => return Err(InvalidToken::WrongIssuer.into()),
        }
        AccessToken::from_claims(
            token.clone(),
            TokenSource::Userinfo,
            &self.config.issuer,
            claims,
        )
        .ok_or_else(|| InvalidToken::MissingClaim("sub").into())
    }
}

impl TokenVerifier for UserinfoVerifier {
    fn verify<'a>(&'a self, token: &'a BearerToken) -> VerifyFuture<'a> {
        Box::pin(self.check(token))
    }
    fn accepts_opaque(&self) -> bool {
        true
    }
    fn issuers(&self) -> Vec<IssuerUrl> {
        vec![self.config.issuer.clone()]
    }
}
