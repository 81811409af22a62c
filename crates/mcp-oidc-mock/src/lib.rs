//! A mock OpenID Connect provider for developing and testing MCP servers.
//!
//! Drop-in compatible with the HTTP API and flags of the Python
//! `oidc-provider-mock`, and stricter where that one is lax: PKCE (S256) is
//! enforced, RFC 8707 `resource` becomes the access token's `aud`, access
//! tokens are RFC 9068 JWTs, refresh tokens rotate, and there are
//! introspection (RFC 7662) and revocation (RFC 7009) endpoints.
//!
//! ```no_run
//! use mcp_oidc_mock::{MockConfig, MockProvider, headless};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = MockProvider::new(MockConfig::default())?;
//! let mut claims = serde_json::Map::new();
//! claims.insert("email".into(), "alice@example.com".into());
//! provider.put_user("alice", claims);
//! let running = provider.spawn("127.0.0.1:0").await?;
//!
//! let http = headless::http_client()?;
//! let mut request = headless::TokenRequest::new(running.issuer(), "alice");
//! request.resource = Some("http://localhost:8000/mcp".into());
//! let tokens = headless::fetch_token(&http, &request).await?;
//! println!("access token expires in {:?}s", tokens.expires_in);
//! running.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! Claims: standard OIDC claims are released only with their scope (`profile`,
//! `email`, `address`, `phone`); every other (custom) claim of a user is
//! always released, in ID tokens, JWT access tokens and userinfo alike.
//!
//! State lives in memory. Revoking a user's tokens makes them inactive at
//! userinfo, introspection and the refresh grant, but a JWT access token keeps
//! verifying by signature until it expires: resource servers that must see
//! revocations have to introspect.

#![warn(missing_docs)]

mod config;
mod endpoints;
mod error;
pub mod headless;
mod html;
mod keys;
mod params;
mod provider;
mod state;

pub use config::{Claims, MockArgs, MockConfig, SigningAlg};
pub use error::MockError;
pub use provider::{MockProvider, RunningMock};
