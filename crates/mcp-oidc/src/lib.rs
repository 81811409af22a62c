#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod __fuzz;
pub mod error;
mod health;
mod keepalive;
pub mod limit;
pub mod mcp;
pub mod metrics;
pub mod proxy;
mod rebinding;
pub mod resource;
pub mod server;
pub mod store;
pub mod token;
pub mod types;

pub use error::{AuthError, ConfigError, InvalidToken, Unavailable, VerifyError};
pub use mcp::{Authenticated, ToolPolicies, current_token};
pub use server::{McpOidc, serve};
pub use token::{AccessToken, TokenVerifier};
