//! The `mcp-oidc` command: a protected MCP server (`serve`), a mock OpenID provider
//! (`mock-idp`), both together for development (`dev`), a token for scripts (`token`), and
//! a configuration check (`check`).

pub mod browser;
pub mod config;
pub mod demo;
pub mod dev;
pub mod run;
pub mod token_cmd;
