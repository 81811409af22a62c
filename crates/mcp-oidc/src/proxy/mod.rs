//! The OAuth proxy: this server as the authorization server MCP clients see, logging users
//! in at an upstream OIDC provider with one pre-registered client.

pub mod cimd;
pub mod redirect;
