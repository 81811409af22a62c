//! The upstream OpenID provider, as seen by the proxy's one confidential client.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use crate::token::{
    AudiencePolicy, JwtConfig, JwtVerifier, KeySource, ProviderMetadata, TokenVerifier, discover,
};
use crate::types::{BearerToken, ClientSecret};

/// How the proxy's client authenticates at the upstream token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamAuthMethod {
    /// HTTP Basic (RFC 6749 §2.3.1), the default.
    #[default]
    ClientSecretBasic,
    /// Credentials in the form body.
    ClientSecretPost,
}

/// The upstream provider and the client registered there for the proxy.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// The issuer, or its configuration URL.
    pub discovery_url: String,
    /// The client id registered at the provider, with redirect URI `{base_url}/auth/callback`.
    pub client_id: String,
    /// Its secret.
    pub client_secret: ClientSecret,
    /// Scopes requested upstream.
    pub scopes: Vec<String>,
    /// Extra authorization-request parameters some providers need (Auth0 `audience`,
    /// Google `access_type=offline`, …).
    pub extra_authorize_params: Vec<(String, String)>,
    /// Token endpoint client authentication.
    pub auth_method: UpstreamAuthMethod,
    /// Also call userinfo for claims (providers whose ID token is thin, or that issue none).
    pub use_userinfo: bool,
    /// Timeout of calls to the provider.
    pub timeout: Duration,
    /// Endpoints of a provider without OIDC discovery (GitHub); `None` discovers them.
    pub endpoints: Option<UpstreamEndpoints>,
    /// The userinfo member that identifies the user when there is no `sub` (GitHub: `id`).
    pub subject_claim: Option<String>,
}

/// The endpoints of a plain OAuth 2.0 provider, which publishes no discovery document.
#[derive(Debug, Clone)]
pub struct UpstreamEndpoints {
    /// A name for the provider, used as its issuer (e.g. `https://github.com`).
    pub issuer: String,
    /// The authorization endpoint.
    pub authorization_endpoint: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// Where the user's profile is read with the access token.
    pub userinfo_endpoint: String,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("discovery_url", &self.discovery_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// An upstream token response.
#[derive(Clone, Deserialize)]
pub(crate) struct UpstreamTokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A failed call to the upstream provider.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the identity provider cannot be reached: {0}")]
    Unavailable(String),
    #[error("the identity provider refused: {0}")]
    Refused(String),
    #[error("the identity provider's answer is invalid: {0}")]
    Invalid(String),
}

pub(crate) struct Upstream {
    pub config: UpstreamConfig,
    client: reqwest::Client,
    metadata: OnceCell<ProviderMetadata>,
    id_tokens: OnceCell<JwtVerifier>,
}

impl Upstream {
    pub(crate) fn new(config: UpstreamConfig) -> Self {
        Self {
            client: crate::token::provider_http_client(config.timeout),
            config,
            metadata: OnceCell::new(),
            id_tokens: OnceCell::new(),
        }
    }

    pub(crate) async fn metadata(&self) -> Result<&ProviderMetadata, UpstreamError> {
        self.metadata
            .get_or_try_init(|| async {
                if let Some(e) = &self.config.endpoints {
                    return Ok(ProviderMetadata {
                        issuer: e.issuer.clone(),
                        jwks_uri: None,
                        userinfo_endpoint: Some(e.userinfo_endpoint.clone()),
                        introspection_endpoint: None,
                        authorization_endpoint: Some(e.authorization_endpoint.clone()),
                        token_endpoint: Some(e.token_endpoint.clone()),
                        document: serde_json::Map::new(),
                    });
                }
                discover(&self.client, &self.config.discovery_url)
                    .await
                    .map_err(UpstreamError::Unavailable)
            })
            .await
    }

    /// The provider's authorization endpoint, where the consent page's approval leads.
    pub(crate) async fn authorization_endpoint(&self) -> Option<String> {
        self.metadata().await.ok()?.authorization_endpoint.clone()
    }

    pub(crate) async fn issuer(&self) -> Result<String, UpstreamError> {
        Ok(self.metadata().await?.issuer.clone())
    }

    /// Whether the provider puts `iss` on its authorization responses (RFC 9207).
    pub(crate) async fn sends_iss(&self) -> bool {
        self.metadata().await.is_ok_and(|m| {
            m.document
                .get("authorization_response_iss_parameter_supported")
                == Some(&Value::Bool(true))
        })
    }

    pub(crate) async fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        challenge: &str,
        nonce: &str,
    ) -> Result<String, UpstreamError> {
        let meta = self.metadata().await?;
        let endpoint = meta
            .authorization_endpoint
            .as_deref()
            .ok_or_else(|| UpstreamError::Invalid("no authorization_endpoint".into()))?;
        let mut url =
            url::Url::parse(endpoint).map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("nonce", nonce);
            for (k, v) in &self.config.extra_authorize_params {
                q.append_pair(k, v);
            }
        }
        Ok(url.into())
    }

    async fn token_request(
        &self,
        form: &[(&str, &str)],
    ) -> Result<UpstreamTokenResponse, UpstreamError> {
        let meta = self.metadata().await?;
        let endpoint = meta
            .token_endpoint
            .as_deref()
            .ok_or_else(|| UpstreamError::Invalid("no token_endpoint".into()))?;
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut request = self
            .client
            .post(endpoint)
            .header(reqwest::header::ACCEPT, "application/json");
        match self.config.auth_method {
            UpstreamAuthMethod::ClientSecretBasic => {
                request = request.basic_auth(
                    form_urlencode(&self.config.client_id),
                    Some(form_urlencode(self.config.client_secret.secret())),
                );
            }
            UpstreamAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", self.config.client_secret.secret()));
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(crate::token::transport_error(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unavailable(crate::token::transport_error(&e)))?;
        if !status.is_success() {
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
            return if status.is_server_error() {
                Err(UpstreamError::Unavailable(error))
            } else {
                Err(UpstreamError::Refused(error))
            };
        }
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Invalid(e.to_string()))
    }

    pub(crate) async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<UpstreamTokenResponse, UpstreamError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    pub(crate) async fn refresh(
        &self,
        refresh_token: &str,
    ) -> Result<UpstreamTokenResponse, UpstreamError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Verifies an upstream ID token (signature, issuer, audience = our client id, expiry)
    /// and its nonce; returns its claims.
    pub(crate) async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let issuer = self.issuer().await?;
        let verifier = self
            .id_tokens
            .get_or_try_init(|| async {
                let mut config = JwtConfig::new(
                    issuer.as_str(),
                    KeySource::Discovery(self.config.discovery_url.clone()),
                    AudiencePolicy::OneOf(vec![self.config.client_id.as_str().into()]),
                );
                config.accepted_types = Vec::new();
                JwtVerifier::new(config).map_err(|e| UpstreamError::Invalid(e.to_string()))
            })
            .await?;
        let token = verifier
            .verify(&BearerToken::new(id_token))
            .await
            .map_err(|e| match e {
                crate::VerifyError::Invalid(e) => UpstreamError::Invalid(format!("ID token: {e}")),
                crate::VerifyError::Unavailable(e) => UpstreamError::Unavailable(e.to_string()),
            })?;
        let claims = token.claims().clone();
        if let Some(expected) = nonce
            && claims.get("nonce").and_then(Value::as_str) != Some(expected)
        {
            return Err(UpstreamError::Invalid("ID token nonce mismatch".into()));
        }
        Ok(claims)
    }

    pub(crate) async fn userinfo(
        &self,
        access_token: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let meta = self.metadata().await?;
        let endpoint = meta
            .userinfo_endpoint
            .as_deref()
            .ok_or_else(|| UpstreamError::Invalid("no userinfo_endpoint".into()))?;
        let response = self
            .client
            .get(endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(crate::token::transport_error(&e)))?;
        if !response.status().is_success() {
            return Err(UpstreamError::Refused(format!(
                "userinfo HTTP {}",
                response.status().as_u16()
            )));
        }
        response
            .json::<Map<String, Value>>()
            .await
            .map_err(|e| UpstreamError::Invalid(e.to_string()))
    }
}

/// RFC 6749 §2.3.1: client credentials are form-urlencoded before Basic encoding.
fn form_urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
