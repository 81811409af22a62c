//! mcp-oidc
