//! Finding a provider's endpoints: OIDC discovery, falling back to RFC 8414.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::http::{FetchError, get_json};

/// The parts of a provider's metadata this crate uses, plus the whole document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderMetadata {
    /// The provider's issuer identifier.
    pub issuer: String,
    /// Where its signing keys are published.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The OIDC userinfo endpoint.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// The RFC 7662 introspection endpoint.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// The authorization endpoint.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// The token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The whole document as served.
    #[serde(skip)]
    pub document: Map<String, Value>,
}

/// Where to look for the metadata of `issuer_or_config_url`.
///
/// A URL that already names a `/.well-known/` document is used as is. Otherwise the OIDC
/// location (`{issuer}/.well-known/openid-configuration`) comes first, then the RFC 8414
/// path-inserted form (`{origin}/.well-known/oauth-authorization-server{path}`).
pub(crate) fn candidate_urls(issuer_or_config_url: &str) -> Vec<String> {
    if issuer_or_config_url.contains("/.well-known/") {
        return vec![issuer_or_config_url.to_owned()];
    }
    let issuer = issuer_or_config_url.trim_end_matches('/');
    let mut out = vec![format!("{issuer}/.well-known/openid-configuration")];
    if let Ok(url) = url::Url::parse(issuer) {
        let path = url.path().trim_end_matches('/');
        let origin = url.origin().ascii_serialization();
        out.push(format!(
            "{origin}/.well-known/oauth-authorization-server{path}"
        ));
        if !path.is_empty() {
            out.push(format!("{origin}/.well-known/openid-configuration{path}"));
        }
    }
    out
}

/// Fetches a provider's metadata by discovery.
///
/// `issuer_or_config_url` is either the issuer (`https://idp.example.com/realms/x`) or the
/// full URL of its configuration document. Found from an issuer, the document must name
/// that same issuer (RFC 8414 §3.3, OpenID Connect Discovery §4.3): one that names another
/// is not used, so its keys and endpoints never stand in for the configured provider's.
pub async fn discover(
    client: &reqwest::Client,
    issuer_or_config_url: &str,
) -> Result<ProviderMetadata, String> {
    let mut last_error = String::from("no discovery URL");
    let expected_issuer =
        (!issuer_or_config_url.contains("/.well-known/")).then_some(issuer_or_config_url);
    for url in candidate_urls(issuer_or_config_url) {
        match get_json::<Map<String, Value>>(client, &url).await {
            Ok((document, _)) => {
                let mut meta: ProviderMetadata =
                    serde_json::from_value(Value::Object(document.clone()))
                        .map_err(|e| format!("{url}: not a provider metadata document: {e}"))?;
                if let Some(expected) = expected_issuer
                    && !same_issuer(&meta.issuer, expected)
                {
                    return Err(format!(
                        "{url}: the document names the issuer {:?}, not {expected:?} (RFC 8414 \
                         §3.3); configure the issuer exactly as the provider publishes it",
                        meta.issuer.chars().take(200).collect::<String>()
                    ));
                }
                meta.document = document;
                return Ok(meta);
            }
            Err(FetchError::Status { status: 404, .. }) => {
                last_error = format!("{url}: HTTP 404");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last_error)
}

/// Whether a document's `issuer` is the one configured. Identical, except that a trailing
/// slash typed in the configuration (or left out of it) does not count: discovery drops it
/// to build the document's URL, so the provider has the final say on it.
fn same_issuer(published: &str, configured: &str) -> bool {
    published == configured || published.trim_end_matches('/') == configured.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_must_name_the_configured_issuer_up_to_a_trailing_slash() {
        assert!(same_issuer(
            "https://idp.example.com",
            "https://idp.example.com"
        ));
        assert!(same_issuer("https://t.auth0.com/", "https://t.auth0.com"));
        assert!(!same_issuer(
            "https://evil.example.com",
            "https://idp.example.com"
        ));
        assert!(!same_issuer(
            "https://idp.example.com/realms/a",
            "https://idp.example.com"
        ));
        assert!(!same_issuer(
            "HTTPS://idp.example.com",
            "https://idp.example.com"
        ));
    }

    #[test]
    fn discovery_tries_oidc_then_rfc8414_path_inserted_forms() {
        assert_eq!(
            candidate_urls("https://as.example/tenant/"),
            vec![
                "https://as.example/tenant/.well-known/openid-configuration",
                "https://as.example/.well-known/oauth-authorization-server/tenant",
                "https://as.example/.well-known/openid-configuration/tenant",
            ]
        );
        assert_eq!(
            candidate_urls("http://localhost:9400/.well-known/openid-configuration"),
            vec!["http://localhost:9400/.well-known/openid-configuration"]
        );
    }
}
