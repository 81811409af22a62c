//! The `WWW-Authenticate` challenge built from hostile error codes, descriptions and scope
//! strings. Properties: always a valid `HeaderValue`; quotes balanced (two per parameter,
//! none escaped or stray); every parameter is `name="value"`.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use mcp_oidc::resource::ProtectedResource;
use mcp_oidc::resource::challenge::www_authenticate;
use mcp_oidc::types::Scopes;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{1}');
    let error = parts.next().unwrap_or_default();
    let description = parts.next();
    let scope = parts.next().unwrap_or(error);
    let Ok(resource) = ProtectedResource::new("https://mcp.example.com", "/mcp") else {
        return;
    };
    let scopes = Scopes::from_space_separated(scope);
    let challenge = www_authenticate(Some(error), description, Some(&scopes), &resource);

    assert!(HeaderValue::from_str(&challenge).is_ok(), "{challenge:?}");
    let rest = challenge.strip_prefix("Bearer ").expect("Bearer scheme");
    assert!(!challenge.contains('\\'), "{challenge:?}");
    // Walk the parameters: name="value" separated by ", ".
    let mut params = 0;
    let mut cursor = rest;
    loop {
        let (name, after) = cursor.split_once("=\"").expect("name=\"");
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{challenge:?}"
        );
        let (_, after) = after.split_once('"').expect("closing quote");
        params += 1;
        if after.is_empty() {
            break;
        }
        cursor = after.strip_prefix(", ").expect("parameter separator");
    }
    assert_eq!(challenge.matches('"').count(), 2 * params, "{challenge:?}");
    assert!(challenge.ends_with(
        "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
    ));
});
