//! Error types: construction errors ([`MockError`]) and the OAuth protocol
//! errors every endpoint answers with ([`OAuthError`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use url::Url;

use crate::html;

/// Errors raised while building or starting a [`crate::MockProvider`].
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A user given by `--user-claims` / `--user-claims-file` is malformed.
    #[error("invalid user claims: {0}")]
    UserClaims(String),
    /// The key file could not be read, parsed or written.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The key file path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Generating or loading a signing key failed.
    #[error("signing key: {0}")]
    Key(String),
    /// Reading a file named on the command line failed.
    #[error("{path}: {source}")]
    File {
        /// The file path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An invalid option value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Binding or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The standard OAuth 2.0 / OIDC error codes this provider emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorCode {
    #[error("invalid_request")]
    InvalidRequest,
    #[error("invalid_client")]
    InvalidClient,
    #[error("invalid_grant")]
    InvalidGrant,
    #[error("unauthorized_client")]
    UnauthorizedClient,
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("unsupported_response_type")]
    UnsupportedResponseType,
    #[error("invalid_scope")]
    InvalidScope,
    #[error("invalid_target")]
    InvalidTarget,
    #[error("access_denied")]
    AccessDenied,
    #[error("invalid_token")]
    InvalidToken,
    #[error("invalid_redirect_uri")]
    InvalidRedirectUri,
    #[error("invalid_client_metadata")]
    InvalidClientMetadata,
    #[error("server_error")]
    ServerError,
}

/// How an [`OAuthError`] reaches the client; which one applies depends on the
/// endpoint and on whether the redirect URI could be trusted.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// RFC 6749 §5.2 JSON body.
    Json {
        status: StatusCode,
        /// `WWW-Authenticate` value, e.g. `Basic` after failed basic auth.
        challenge: Option<&'static str>,
    },
    /// An HTML page for the user: used when the redirect URI is not trusted,
    /// since redirecting to it would make us an open redirector.
    Page,
    /// RFC 6749 §4.1.2.1 redirect back to the client, with RFC 9207 `iss`.
    Redirect(Box<RedirectTarget>),
    /// RFC 6750 §3 bearer-token error (401 + `WWW-Authenticate: Bearer`).
    Bearer { with_error: bool },
}

/// Where an authorization error is sent back to.
#[derive(Debug, Clone)]
pub(crate) struct RedirectTarget {
    redirect_uri: Url,
    state: Option<String>,
    issuer: String,
}

/// An OAuth protocol error; its [`IntoResponse`] impl is the single place
/// where errors become HTTP responses.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub(crate) code: ErrorCode,
    pub(crate) description: String,
    pub(crate) delivery: Delivery,
}

impl OAuthError {
    /// A JSON error with status 400.
    pub(crate) fn json(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            delivery: Delivery::Json {
                status: StatusCode::BAD_REQUEST,
                challenge: None,
            },
        }
    }

    /// `invalid_client`: 401, with a `Basic` challenge when basic auth was tried
    /// (RFC 6749 §5.2).
    pub(crate) fn invalid_client(description: impl Into<String>, tried_basic: bool) -> Self {
        Self {
            code: ErrorCode::InvalidClient,
            description: description.into(),
            delivery: Delivery::Json {
                status: StatusCode::UNAUTHORIZED,
                challenge: tried_basic.then_some("Basic realm=\"mcp-oidc-mock\""),
            },
        }
    }

    pub(crate) fn page(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            delivery: Delivery::Page,
        }
    }

    pub(crate) fn redirect(
        code: ErrorCode,
        description: impl Into<String>,
        redirect_uri: &Url,
        state: Option<&str>,
        issuer: &str,
    ) -> Self {
        Self {
            code,
            description: description.into(),
            delivery: Delivery::Redirect(Box::new(RedirectTarget {
                redirect_uri: redirect_uri.clone(),
                state: state.map(str::to_owned),
                issuer: issuer.to_owned(),
            })),
        }
    }

    /// A bearer-token failure at a protected endpoint. Without a token at all,
    /// RFC 6750 §3.1 says to send the challenge without an error code.
    pub(crate) fn bearer(description: impl Into<String>, token_present: bool) -> Self {
        Self {
            code: ErrorCode::InvalidToken,
            description: description.into(),
            delivery: Delivery::Bearer {
                with_error: token_present,
            },
        }
    }

    /// A failure of ours (e.g. the crypto library), never of the input.
    pub(crate) fn server_error(description: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::ServerError,
            description: description.into(),
            delivery: Delivery::Json {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                challenge: None,
            },
        }
    }

    fn json_body(&self) -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({
            "error": self.code.to_string(),
            "error_description": self.description,
        }))
    }
}

/// Headers RFC 6749 §5.1 requires on token responses; also used on errors so
/// nothing sensitive is ever cached.
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        tracing::info!(error = %self.code, description = %self.description, "request rejected");
        match &self.delivery {
            Delivery::Json { status, challenge } => {
                let mut response = (*status, self.json_body()).into_response();
                if let Some(challenge) = challenge {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(challenge),
                    );
                }
                no_store(response)
            }
            Delivery::Page => {
                let body = html::error_page(&self.code.to_string(), &self.description);
                html::secure((StatusCode::BAD_REQUEST, Html(body)).into_response())
            }
            Delivery::Redirect(target) => {
                let RedirectTarget {
                    redirect_uri,
                    state,
                    issuer,
                } = target.as_ref();
                let mut url = redirect_uri.clone();
                {
                    let mut pairs = url.query_pairs_mut();
                    pairs.append_pair("error", &self.code.to_string());
                    pairs.append_pair("error_description", &self.description);
                    if let Some(state) = state {
                        pairs.append_pair("state", state);
                    }
                    pairs.append_pair("iss", issuer);
                }
                no_store(html::found(url.as_str()))
            }
            Delivery::Bearer { with_error } => {
                let challenge = if *with_error {
                    format!(
                        "Bearer error=\"invalid_token\", error_description=\"{}\"",
                        self.description.replace(['"', '\\'], "'")
                    )
                } else {
                    "Bearer".to_owned()
                };
                let mut response = (StatusCode::UNAUTHORIZED, self.json_body()).into_response();
                // Descriptions are ASCII literals of ours; fall back to a bare
                // challenge should that ever change.
                let value = HeaderValue::from_str(&challenge)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
                no_store(response)
            }
        }
    }
}
