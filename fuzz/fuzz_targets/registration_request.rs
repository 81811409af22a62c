//! RFC 7591 registration request bodies, as the proxy's `/register` validates them.
//! Property: no panic; an accepted request has 1–20 redirect URIs; a refusal is one of the
//! error codes RFC 7591 §3.2.2 names.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match mcp_oidc::__fuzz::registration_request(data) {
        Ok(count) => assert!((1..=20).contains(&count), "{count} redirect URIs accepted"),
        Err(code) => assert!(
            matches!(code, "invalid_redirect_uri" | "invalid_client_metadata"),
            "unexpected error code {code}"
        ),
    }
});
