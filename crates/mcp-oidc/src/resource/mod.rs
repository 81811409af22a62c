//! The MCP server as an OAuth protected resource.
//!
//! - [`ProtectedResource`]: what this resource is (its canonical URL, its authorization
//!   servers, its scopes) — the content of RFC 9728 metadata and of every challenge.
//! - [`BearerAuthLayer`]: the tower layer that checks the bearer token of every request,
//!   enforces per-tool scopes, binds sessions to users, and answers 400/401/403/503 with
//!   the right `WWW-Authenticate` header.
//! - [`metadata_router`]: the `/.well-known/...` discovery documents.
//! - [`challenge`]: the one place where an [`AuthError`](crate::error::AuthError) becomes an
//!   HTTP response.

pub mod challenge;
mod layer;
mod metadata;
mod refusal_log;
mod resource_url;
mod session;
mod session_table;

// For the fuzz entry points in `crate::__fuzz`.
pub(crate) use layer::bearer_token;
pub use layer::{BearerAuthLayer, BearerAuthService, LayerSettings};
pub use metadata::{MetadataSource, ProtectedResourceMetadata, metadata_router};
pub use resource_url::ProtectedResource;
pub use session::SessionBindings;
pub(crate) use session::{Closer as SessionCloser, DEFAULT_STORE_RECHECK};
