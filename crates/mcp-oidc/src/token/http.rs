//! The HTTP client used to talk to identity providers: bounded in time and size.

use std::time::Duration;

use serde::de::DeserializeOwned;

/// Largest provider document we read (discovery, JWKS, introspection). Real ones are a few KB.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Builds the client for provider calls. Redirects are not followed: a provider endpoint
/// that redirects is misconfigured, and following would let it send us anywhere.
pub(crate) fn provider_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcp-oidc/", env!("CARGO_PKG_VERSION")))
        .build()
        // Building fails only when the TLS backend cannot initialise, which is a broken
        // installation; fall back to the default client so the error shows on first use.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A failed provider call, described without any secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: response larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: invalid JSON: {message}")]
    Json { url: String, message: String },
}

/// Reads a response body, refusing anything larger than [`MAX_DOCUMENT_BYTES`].
pub(crate) async fn read_limited(
    url: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge {
            url: url.to_owned(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| FetchError::Transport {
        url: url.to_owned(),
        message: e.to_string(),
    })? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// GETs a JSON document. Returns it with the response's `Cache-Control: max-age`, if any.
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<(T, Option<Duration>), FetchError> {
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| FetchError::Transport {
            url: url.to_owned(),
            message: transport_message(&e),
        })?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let max_age = response
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    let body = read_limited(url, response).await?;
    let value = serde_json::from_slice(&body).map_err(|e| FetchError::Json {
        url: url.to_owned(),
        message: e.to_string(),
    })?;
    Ok((value, max_age))
}

/// Describes a transport error briefly (reqwest's Display includes the whole chain).
pub(crate) fn transport_message(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        e.to_string()
    }
}

/// Reads `max-age` from a `Cache-Control` header; `no-store`/`no-cache` mean zero.
pub(crate) fn parse_max_age(header: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in header.split(',') {
        let directive = directive.trim();
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            parse_max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}

/// How many calls to the provider one opaque-token verifier makes at once, by default.
pub(crate) const DEFAULT_CONCURRENT_CALLS: usize = 64;

/// A bound on the calls an opaque-token verifier has in flight at the provider. Every
/// token not in the cache costs one call, and an attacker can send endless distinct
/// tokens: beyond the bound they wait (at most `wait`) instead of multiplying the load on
/// the provider, and are answered 503 if no call frees up in time.
#[derive(Clone, Debug)]
pub(crate) struct CallLimit {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    wait: Duration,
}

impl CallLimit {
    pub(crate) fn new(calls: usize, wait: Duration) -> Self {
        Self {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(calls.max(1))),
            wait,
        }
    }

    /// A slot for one call, held until the returned permit is dropped.
    pub(crate) async fn enter(
        &self,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, crate::error::Unavailable> {
        let busy = || crate::error::Unavailable {
            retry_after: Duration::from_secs(1),
            detail: "too many token checks are waiting for the provider".to_owned(),
        };
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a timeout means the provider is saturated.
            _ => Err(busy()),
        }
    }
}
