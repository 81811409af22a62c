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
//! # Differences from the Python `oidc-provider-mock` 0.4.8
//!
//! | | reference | here |
//! |---|---|---|
//! | access tokens | opaque | RFC 9068 JWTs (`typ: at+jwt`); `--opaque-access-tokens` for opaque |
//! | `aud` of access tokens | n/a | `resource` (RFC 8707), else `--default-audience`, else client id |
//! | custom scopes (`mcp:read`) | dropped | kept |
//! | PKCE | not checked | S256 checked (`plain` refused); `--require-pkce` makes it mandatory |
//! | refresh tokens | reusable, none returned on refresh | rotated: a new one each use, the old one spent |
//! | reused authorization code | `invalid_grant` | `invalid_grant`, and the tokens it produced are revoked |
//! | userinfo with a bad token | 400 `access_denied` | 401 + `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750) |
//! | authorization responses | no `iss` | RFC 9207 `iss` on every redirect, errors included |
//! | signing | RS256, new key every start | ES256 (or RS256), rotatable, optional key file |
//! | extra endpoints | none | `/.well-known/oauth-authorization-server`, introspection, revocation, `POST /keys/rotate` |
//! | grants | code, refresh | code, refresh, `client_credentials` |
//! | end session | confirmation form | redirect to `post_logout_redirect_uri` (with `state`) at once |
//! | `--user-claims-file` | YAML or JSON | JSON (a JSON file is valid YAML, so such files work with both) |
//! | bad bodies at `PUT /users` / registration | 400 text | 400 JSON `invalid_request` / RFC 7591 errors |
//!
//! With `--require-nonce`, as in the reference, only OpenID requests (scope
//! `openid`) need a nonce. A registered confidential client may use either
//! `client_secret_basic` or `client_secret_post`.
//!
//! State lives in memory. Revoking a user's tokens makes them inactive at
//! userinfo, introspection and the refresh grant, but a JWT access token keeps
//! verifying by signature until it expires: resource servers that must see
//! revocations have to introspect. Introspection knows only tokens issued
//! by the running process (also after a restart with a key file).

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
