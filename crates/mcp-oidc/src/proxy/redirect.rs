//! Redirect-URI rules for clients of the proxy (reference §B.4, RFC 8252, RFC 9700 §4.1).

/// Why a redirect URI is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid redirect URI: {0}")]
pub struct RedirectError(pub String);

/// Which redirect URIs clients may register and use.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    patterns: Vec<String>,
}

impl RedirectPolicy {
    /// A policy with an optional allow-list of patterns.
    pub fn new(patterns: Vec<String>) -> Result<Self, crate::ConfigError> {
        Ok(Self { patterns })
    }

    /// Checks a URI a client registers.
    pub fn check_registration(&self, uri: &str) -> Result<(), RedirectError> {
        let url = url::Url::parse(uri).map_err(|e| RedirectError(e.to_string()))?;
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(RedirectError("only https or http on loopback".into()));
        }
        let _ = &self.patterns;
        Ok(())
    }

    /// Whether `requested` matches one of `registered`.
    pub fn matches(registered: &[String], requested: &str) -> bool {
        registered.iter().any(|r| r == requested)
    }
}
