//! Helpers shared by the end-to-end tests of the `mcp-oidc` binary and the proxy.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::PathBuf;

use base64::Engine as _;
use sha2::Digest as _;

/// A port that was free a moment ago, for servers that must know their URL before binding.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python `oidc-provider-mock` (the reference provider), installed by
/// `scripts/setup-python-peers` or named by `OIDC_PROVIDER_MOCK`.
pub fn python_mock_program() -> PathBuf {
    let path = std::env::var_os("OIDC_PROVIDER_MOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/peers/venv/bin/oidc-provider-mock")
        });
    assert!(
        path.exists(),
        "the Python oidc-provider-mock was not found at {}: run scripts/setup-python-peers",
        path.display()
    );
    path
}

/// A PKCE pair (RFC 7636, S256).
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

/// A fresh PKCE pair.
pub fn pkce() -> Pkce {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// The `name=value` part of a response's `Set-Cookie`, ready to send back as `Cookie`.
pub fn first_cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The value of the hidden form field `name` on the consent page.
pub fn form_field(html: &str, name: &str) -> String {
    let marker = format!("name={name} value=\"");
    let i = html.find(&marker).unwrap() + marker.len();
    html[i..].split('"').next().unwrap().to_owned()
}
