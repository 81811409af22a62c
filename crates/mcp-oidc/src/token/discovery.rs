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
/// full URL of its configuration document.
pub async fn discover(
    client: &reqwest::Client,
    issuer_or_config_url: &str,
) -> Result<ProviderMetadata, String> {
    let mut last_error = String::from("no discovery URL");
    for url in candidate_urls(issuer_or_config_url) {
        match get_json::<Map<String, Value>>(client, &url).await {
            Ok((document, _)) => {
                let mut meta: ProviderMetadata =
                    serde_json::from_value(Value::Object(document.clone()))
                        .map_err(|e| format!("{url}: not a provider metadata document: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
