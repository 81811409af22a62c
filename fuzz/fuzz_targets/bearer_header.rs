//! `Authorization` header parsing: any bytes a client can send as one or two header values.
//! Property: no panic; an extracted token is non-empty, uses only RFC 6750 `b64token`
//! characters and is the tail of the (trimmed) header value.
#![no_main]

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn is_b64token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
}

fuzz_target!(|data: &[u8]| {
    // A NUL byte splits the input into two header values, to reach the duplicate check.
    let mut headers = HeaderMap::new();
    for value in data.split(|b| *b == 0).take(2) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(AUTHORIZATION, v);
        }
    }
    if let Ok(token) = mcp_oidc::__fuzz::bearer_token(&headers) {
        assert!(!token.is_empty());
        assert!(token.chars().all(is_b64token_char), "{token:?}");
        assert!(!token.trim_end_matches('=').is_empty());
        let value = headers
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let value = String::from_utf8_lossy(value);
        assert!(value.trim_end_matches([' ', '\t']).ends_with(&token));
        assert_eq!(headers.get_all(AUTHORIZATION).iter().count(), 1);
    }
});
