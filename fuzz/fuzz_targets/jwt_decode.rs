//! Compact JWS splitting, strict JSON object decoding of header and claims, and the claim
//! checks of the JWT verifier (issuer, subject, times, audience), signature aside.
//! Properties: no panic; a decoded object re-encodes and decodes to itself; claims that pass
//! the checks name the expected issuer and audience.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oidc::__fuzz::{AUDIENCE, ISSUER, JsonObject, check_claims, decode_jws, decode_object};
use serde_json::Value;

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Re-encoding a decoded object gives the same members back. Floats are compared loosely:
/// serde_json's default float parsing is not bit-exact on a second round trip, and no
/// decision here depends on the last bit of a float.
fn roundtrip(object: &JsonObject) {
    let encoded = b64url(Value::Object(object.clone()).to_string().as_bytes());
    let again = decode_object(&encoded).expect("a decoded object re-decodes");
    assert_eq!(again.len(), object.len());
    for (key, value) in object {
        let other = again.get(key).expect("same members");
        match (value, other) {
            (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                assert!((a - b).abs() <= a.abs().max(b.abs()) * 1e-12, "{a} {b}");
            }
            (Value::Number(_), _) => assert_eq!(value, other),
            _ => assert_eq!(
                strip_floats(value.clone()),
                strip_floats(other.clone()),
                "{key}"
            ),
        }
    }
}

/// Replaces every float inside a value, for the comparison above.
fn strip_floats(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => Value::Null,
        Value::Array(items) => Value::Array(items.into_iter().map(strip_floats).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, strip_floats(v))).collect())
        }
        other => other,
    }
}

fn checked(claims: &JsonObject) {
    if check_claims(claims).is_ok() {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == AUDIENCE,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(AUDIENCE)),
            _ => false,
        };
        assert!(aud_ok, "claims accepted for another audience: {claims:?}");
        assert!(claims.contains_key("exp"));
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw input as a token.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok((header, claims)) = decode_jws(text)
    {
        roundtrip(&header);
        roundtrip(&claims);
        checked(&claims);
    }
    // Raw input as the JSON of a claims set, so the claim checks see structured input
    // without the fuzzer having to learn base64 first.
    let token = format!("{}.{}.", b64url(b"{\"alg\":\"RS256\"}"), b64url(data));
    if let Ok((_, claims)) = decode_jws(&token) {
        roundtrip(&claims);
        checked(&claims);
    }
});
