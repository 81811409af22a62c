//! The canonical identity of the protected resource.

use url::Url;

use crate::error::ConfigError;
use crate::types::Scopes;

/// This MCP server as an OAuth protected resource (RFC 9728).
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    base: Url,
    resource: String,
    mcp_path: String,
    metadata_url: String,
    /// Authorization servers whose tokens this resource accepts (their issuer identifiers).
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in the metadata and in challenges.
    pub scopes_supported: Scopes,
    /// Scopes every request must carry (403 `insufficient_scope` otherwise).
    pub required_scopes: Scopes,
    /// A human-readable name for the metadata.
    pub resource_name: Option<String>,
    /// A documentation URL for the metadata.
    pub resource_documentation: Option<String>,
}

impl ProtectedResource {
    /// A resource served at `base_url` + `mcp_path`, e.g. `https://mcp.example.com` and
    /// `/mcp`. The canonical resource URL has a lowercase scheme and host, no fragment, no
    /// query and no trailing slash.
    pub fn new(base_url: &str, mcp_path: &str) -> Result<Self, ConfigError> {
        let mut base = Url::parse(base_url).map_err(|e| {
            ConfigError::new(
                "base_url",
                format!(
                    "`{base_url}` is not an absolute URL ({e}); use e.g. https://mcp.example.com"
                ),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "base_url",
                "the scheme must be https (or http for loopback development)",
            ));
        }
        if base.host_str().is_none() {
            return Err(ConfigError::new("base_url", "the URL needs a host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(ConfigError::new(
                "base_url",
                "the URL must not have a query or fragment",
            ));
        }
        let base_path = base.path().trim_end_matches('/').to_owned();
        base.set_path("");
        let mcp_path = format!("/{}", mcp_path.trim_matches('/'));
        if mcp_path == "/" {
            return Err(ConfigError::new(
                "mcp_path",
                "the MCP endpoint needs a path such as /mcp",
            ));
        }
        let origin = base.as_str().trim_end_matches('/').to_owned();
        let full_path = format!("{base_path}{mcp_path}");
        let resource = format!("{origin}{full_path}");
        let metadata_url = format!("{origin}/.well-known/oauth-protected-resource{full_path}");
        Ok(Self {
            base,
            resource,
            mcp_path,
            metadata_url,
            authorization_servers: Vec::new(),
            scopes_supported: Scopes::new(),
            required_scopes: Scopes::new(),
            resource_name: None,
            resource_documentation: None,
        })
    }

    /// The canonical resource URL: the audience tokens must carry.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The path the MCP endpoint is mounted at on this server (e.g. `/mcp`).
    pub fn mcp_path(&self) -> &str {
        &self.mcp_path
    }

    /// The URL of the path-form protected-resource metadata, as sent in challenges.
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The base URL (scheme, host, port).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The host and, when not the default, port of the base URL (for `Host` checks).
    pub fn authority(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => String::new(),
        }
    }

    /// The origin with its port always written, e.g. `https://mcp.example.com:443` (for
    /// `Origin` checks: in an allow-list, an entry without a port matches any port).
    pub fn origin(&self) -> String {
        match (self.base.host_str(), self.base.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", self.base.scheme()),
            _ => self.base.origin().ascii_serialization(),
        }
    }

    /// Whether the base URL is on a loopback host.
    pub fn is_loopback(&self) -> bool {
        matches!(
            self.base.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]")
        )
    }

    /// Scopes to name in a 401 challenge: those required, else those supported.
    pub fn challenge_scopes(&self) -> &Scopes {
        if self.required_scopes.is_empty() {
            &self.scopes_supported
        } else {
            &self.required_scopes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_resource_is_lowercase_without_trailing_slash() {
        let r = ProtectedResource::new("HTTP://LocalHost:8000/", "mcp/").unwrap();
        assert_eq!(r.resource(), "http://localhost:8000/mcp");
        assert_eq!(
            r.metadata_url(),
            "http://localhost:8000/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(r.authority(), "localhost:8000");
    }

    #[test]
    fn base_url_with_a_path_prefixes_the_endpoint() {
        let r = ProtectedResource::new("https://example.com/tenant", "/mcp").unwrap();
        assert_eq!(r.resource(), "https://example.com/tenant/mcp");
        assert_eq!(
            r.metadata_url(),
            "https://example.com/.well-known/oauth-protected-resource/tenant/mcp"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_key_named() {
        let e = ProtectedResource::new("localhost:8000", "/mcp").unwrap_err();
        assert!(e.key == "base_url", "{e}");
        assert!(ProtectedResource::new("ftp://x", "/mcp").is_err());
        assert!(ProtectedResource::new("https://x", "/").is_err());
    }
}
