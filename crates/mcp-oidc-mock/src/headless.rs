//! Getting tokens without a browser: runs the real authorization-code flow
//! with PKCE (S256) the way a script would, against this mock or the Python
//! `oidc-provider-mock` (both take `sub` in the POST to the authorization
//! endpoint).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use crate::keys::{b64url, sha256};
use crate::state::random_token;

/// What went wrong while getting a token.
#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    /// The HTTP request itself failed.
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        /// The URL requested (never carries credentials).
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// An endpoint answered with an unexpected status.
    #[error("{step}: unexpected status {status}: {body}")]
    Status {
        /// Which step of the flow.
        step: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The provider answered with an OAuth error.
    #[error("{step}: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    OAuth {
        /// Which step of the flow.
        step: &'static str,
        /// The OAuth error code.
        error: String,
        /// `error_description`, if sent.
        description: Option<String>,
    },
    /// A response did not look as the protocol requires.
    #[error("{step}: {reason}")]
    Protocol {
        /// Which step of the flow.
        step: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The issuer or redirect URI is not a valid URL.
    #[error("invalid URL {url}: {reason}")]
    Url {
        /// The offending URL.
        url: String,
        /// The parse error.
        reason: String,
    },
}

/// Parameters of a scripted authorization.
#[derive(Clone)]
pub struct TokenRequest {
    /// Issuer URL, e.g. `http://localhost:9400` (discovery is read from it).
    pub issuer: String,
    /// The subject to sign in as.
    pub user: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The client id.
    pub client_id: String,
    /// The client secret, sent with HTTP Basic auth; `None` for a public client.
    pub client_secret: Option<String>,
    /// Redirect URI; nothing needs to listen there (the redirect is not followed).
    pub redirect_uri: String,
    /// RFC 8707 resource indicator, which becomes the access token's `aud`.
    pub resource: Option<String>,
    /// OIDC nonce; checked against the ID token when both are present.
    pub nonce: Option<String>,
}

impl TokenRequest {
    /// A request with defaults: scope `openid profile email`, client
    /// `mcp-oidc-dev` (public), redirect URI `http://localhost:9401/callback`.
    pub fn new(issuer: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            user: user.into(),
            scope: "openid profile email".into(),
            client_id: "mcp-oidc-dev".into(),
            client_secret: None,
            redirect_uri: "http://localhost:9401/callback".into(),
            resource: None,
            nonce: None,
        }
    }
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("issuer", &self.issuer)
            .field("user", &self.user)
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("redirect_uri", &self.redirect_uri)
            .field("resource", &self.resource)
            .field("nonce", &self.nonce)
            .finish()
    }
}

/// A successful token response.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token (a JWT from this mock unless opaque tokens are on).
    pub access_token: String,
    /// The ID token, with the `openid` scope.
    #[serde(default)]
    pub id_token: Option<String>,
    /// The refresh token, if issued.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Access-token lifetime in seconds.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Granted scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// Always `Bearer` here.
    pub token_type: String,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |t: &Option<String>| t.as_ref().map(|_| "[redacted]");
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("id_token", &redact(&self.id_token))
            .field("refresh_token", &redact(&self.refresh_token))
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// The parts of OIDC discovery the flow needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// The issuer.
    pub issuer: String,
    /// Authorization endpoint URL.
    pub authorization_endpoint: String,
    /// Token endpoint URL.
    pub token_endpoint: String,
    /// JWKS URL.
    pub jwks_uri: String,
    /// Userinfo endpoint URL.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// A client suited to the flow: no redirects followed, bounded timeouts.
pub fn http_client() -> Result<reqwest::Client, HeadlessError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| HeadlessError::Http {
            url: String::new(),
            source,
        })
}

fn http_err(url: &str) -> impl FnOnce(reqwest::Error) -> HeadlessError + '_ {
    move |source| HeadlessError::Http {
        url: url.to_owned(),
        source,
    }
}

/// Reads `{issuer}/.well-known/openid-configuration`.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Discovery, HeadlessError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let response = http.get(&url).send().await.map_err(http_err(&url))?;
    let status = response.status();
    let body = response.text().await.map_err(http_err(&url))?;
    if status != StatusCode::OK {
        return Err(status_err("discovery", status, &body));
    }
    serde_json::from_str(&body).map_err(|e| HeadlessError::Protocol {
        step: "discovery",
        reason: format!("invalid discovery document: {e}"),
    })
}

fn status_err(step: &'static str, status: StatusCode, body: &str) -> HeadlessError {
    HeadlessError::Status {
        step,
        status: status.as_u16(),
        body: body.chars().take(300).collect(),
    }
}

/// Runs discovery, the authorization request (GET form, then POST `sub`),
/// and the code exchange with PKCE.
pub async fn fetch_token(
    http: &reqwest::Client,
    req: &TokenRequest,
) -> Result<TokenResponse, HeadlessError> {
    let discovery = discover(http, &req.issuer).await?;
    let state = random_token();
    let verifier = random_token();
    let challenge = b64url(&sha256(verifier.as_bytes()));

    let mut authorize =
        Url::parse(&discovery.authorization_endpoint).map_err(|e| HeadlessError::Url {
            url: discovery.authorization_endpoint.clone(),
            reason: e.to_string(),
        })?;
    {
        let mut q = authorize.query_pairs_mut();
        q.append_pair("client_id", &req.client_id)
            .append_pair("redirect_uri", &req.redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", &req.scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(nonce) = &req.nonce {
            q.append_pair("nonce", nonce);
        }
        if let Some(resource) = &req.resource {
            q.append_pair("resource", resource);
        }
    }
    let url = authorize.to_string();

    let form_page = http.get(&url).send().await.map_err(http_err(&url))?;
    let status = form_page.status();
    let body = form_page.text().await.map_err(http_err(&url))?;
    if status != StatusCode::OK || !body.contains("name=\"sub\"") {
        return Err(status_err("authorization form", status, &body));
    }

    let response = http
        .post(&url)
        .form(&[("sub", req.user.as_str())])
        .send()
        .await
        .map_err(http_err(&url))?;
    let status = response.status();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(location) = location.filter(|_| status.is_redirection()) else {
        let body = response.text().await.unwrap_or_default();
        return Err(status_err("authorization", status, &body));
    };
    let location = Url::parse(&location).map_err(|e| HeadlessError::Url {
        url: location.clone(),
        reason: e.to_string(),
    })?;
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        return Err(HeadlessError::OAuth {
            step: "authorization",
            error,
            description: param("error_description"),
        });
    }
    if param("state").as_deref() != Some(state.as_str()) {
        return Err(HeadlessError::Protocol {
            step: "authorization",
            reason: "state in the redirect does not match".into(),
        });
    }
    // RFC 9207: when present, `iss` must name the provider we started with.
    if let Some(iss) = param("iss")
        && iss != discovery.issuer
    {
        return Err(HeadlessError::Protocol {
            step: "authorization",
            reason: format!("iss {iss} does not match issuer {}", discovery.issuer),
        });
    }
    let code = param("code").ok_or_else(|| HeadlessError::Protocol {
        step: "authorization",
        reason: "no code in the redirect".into(),
    })?;

    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", req.redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(resource) = &req.resource {
        form.push(("resource", resource));
    }
    let tokens = token_request(
        http,
        "token exchange",
        &discovery.token_endpoint,
        &req.client_id,
        req.client_secret.as_deref(),
        form,
    )
    .await?;
    if let (Some(nonce), Some(id_token)) = (&req.nonce, &tokens.id_token) {
        let claims = unverified_claims(id_token).ok_or_else(|| HeadlessError::Protocol {
            step: "token exchange",
            reason: "the ID token is not a readable JWT".into(),
        })?;
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
            return Err(HeadlessError::Protocol {
                step: "token exchange",
                reason: "the ID token's nonce does not match".into(),
            });
        }
    }
    Ok(tokens)
}

/// Exchanges a refresh token at `token_endpoint`.
pub async fn refresh(
    http: &reqwest::Client,
    token_endpoint: &str,
    refresh_token: &str,
    client_id: &str,
    client_secret: Option<&str>,
) -> Result<TokenResponse, HeadlessError> {
    token_request(
        http,
        "refresh",
        token_endpoint,
        client_id,
        client_secret,
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// Client secrets go in HTTP Basic (the default method of registered
/// clients at both mocks); public clients send `client_id` in the form.
async fn token_request(
    http: &reqwest::Client,
    step: &'static str,
    endpoint: &str,
    client_id: &str,
    client_secret: Option<&str>,
    mut form: Vec<(&str, &str)>,
) -> Result<TokenResponse, HeadlessError> {
    let mut request = http.post(endpoint);
    match client_secret {
        Some(secret) => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(enc(client_id), Some(enc(secret)));
        }
        None => form.push(("client_id", client_id)),
    }
    let response = request
        .form(&form)
        .send()
        .await
        .map_err(http_err(endpoint))?;
    let status = response.status();
    let body = response.text().await.map_err(http_err(endpoint))?;
    if status != StatusCode::OK {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
            error_description: Option<String>,
        }
        return Err(match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => HeadlessError::OAuth {
                step,
                error: e.error,
                description: e.error_description,
            },
            Err(_) => status_err(step, status, &body),
        });
    }
    serde_json::from_str(&body).map_err(|e| HeadlessError::Protocol {
        step,
        reason: format!("invalid token response: {e}"),
    })
}

/// The payload of a JWT, without checking the signature (for display and
/// for the nonce check only).
pub fn unverified_claims(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}
