//! A corpus of hostile tokens and `Authorization` headers thrown at a real protected server
//! on loopback (a JWKS-serving test issuer and the probe MCP server, with a `JwtVerifier`).
//!
//! Every case is named, carries its exact expected status, `WWW-Authenticate` and JSON
//! `error`, and the whole corpus also checks that nothing reached a tool, that the server
//! still serves a valid token afterwards, and that refusals are logged with a reason but
//! never with the token.
//!
//! Each test prints one `ATTACKS group=<name> tried=<n> refused=<n> accepted=<n>` line
//! (visible with `--nocapture`): `tried` counts the hostile requests, `refused` those that
//! were refused as expected, `accepted` hostile requests that got through (always 0 when the
//! test passes). Requests that are valid on purpose are counted apart as `valid=<n>`. Each
//! case also prints `ATTACK case=<name> status=<code> outcome=<refused|accepted-as-valid>`
//! once its answer has been checked.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use common::*;
use mcp_oidc::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

const SCOPES: &str = "openid profile email";

/// What a case must get back.
#[derive(Clone, Debug)]
enum Expect {
    /// 200: a valid token on purpose.
    Accepted,
    /// 401 with a bare challenge (no credentials of the Bearer scheme).
    Challenge,
    /// 401 `invalid_token` with this exact description.
    InvalidToken(String),
    /// 401 `invalid_token` whose description in the JSON body and in the header differ,
    /// because the header drops characters RFC 6750 does not allow there.
    InvalidTokenCleaned { body: String, header: String },
    /// 400 `invalid_request` with this exact description.
    InvalidRequest(&'static str),
}

/// One hostile (or deliberately valid) request.
struct Case {
    name: &'static str,
    /// Raw `Authorization` header values, sent in this order (several means several headers).
    authorization: Vec<Vec<u8>>,
    /// Extra query string on the MCP URL.
    query: Option<String>,
    expect: Expect,
}

fn case(name: &'static str, token: &str, expect: Expect) -> Case {
    Case {
        name,
        authorization: vec![format!("Bearer {token}").into_bytes()],
        query: None,
        expect,
    }
}

fn refused(description: &str) -> Expect {
    Expect::InvalidToken(description.to_owned())
}

/// Counts per group, printed as the machine-readable summary line.
#[derive(Default)]
struct Tally {
    tried: usize,
    refused: usize,
    accepted: usize,
    valid: usize,
}

impl Tally {
    fn print(&self, group: &str) {
        println!(
            "ATTACKS group={group} tried={} refused={} accepted={} valid={}",
            self.tried, self.refused, self.accepted, self.valid
        );
    }
}

impl CapturedLog {
    /// Asserts that every refusal reason in `reasons` was logged on a "bearer token refused"
    /// line, and that none of `secrets` (whole tokens and their signatures) appears anywhere.
    fn assert_refusals_logged_without_secrets(&self, reasons: &[String], secrets: &[String]) {
        let log = self.text();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("bearer token refused"))
            .collect();
        assert!(!refusals.is_empty(), "no refusal was logged:\n{log}");
        for line in &refusals {
            assert!(
                line.contains(" reason=\""),
                "refusal without a reason: {line}"
            );
            assert!(
                line.contains(" token="),
                "refusal without a fingerprint: {line}"
            );
        }
        for reason in reasons {
            let wanted = format!("reason={reason:?}");
            assert!(
                refusals.iter().any(|l| l.contains(&wanted)),
                "no refusal logged with {wanted}"
            );
        }
        for secret in secrets {
            // Short strings could occur by chance; every real secret here is long.
            if secret.len() >= 16 {
                assert!(
                    !log.contains(secret.as_str()),
                    "a token or signature leaked into the log"
                );
            }
        }
    }
}

/// Encodes a JWS from raw header and claims bytes (which need not be JSON, nor UTF-8).
fn jws_bytes(header: &[u8], claims: &[u8], sign: impl FnOnce(&str) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = sign(&input);
    format!("{input}.{}", b64(&sig))
}

fn signature_of(token: &str) -> String {
    token.rsplit('.').next().unwrap_or_default().to_owned()
}

fn verifier_for(issuer: &str, audience: &str) -> JwtVerifier {
    JwtVerifier::new(JwtConfig::new(
        issuer,
        KeySource::Discovery(issuer.to_owned()),
        AudiencePolicy::OneOf(vec![audience.into()]),
    ))
    .unwrap()
}

/// The issuer and a protected probe server trusting it for its own URL.
async fn setup() -> (TestIssuer, Served) {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(verifier_for(&url, r.resource())),
        |s| s.refusal_log_per_second(u64::MAX),
    )
    .await;
    (issuer, served)
}

fn metadata_url(served: &Served) -> String {
    format!("{}/.well-known/oauth-protected-resource/mcp", served.base)
}

async fn send(url: &str, authorization: &[Vec<u8>]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(INIT);
    for value in authorization {
        req = req.header("authorization", HeaderValue::from_bytes(value).unwrap());
    }
    req.send().await.unwrap()
}

/// Sends every case, asserts its exact answer, and counts.
async fn run_cases(served: &Served, cases: &[Case]) -> Tally {
    let metadata = metadata_url(served);
    let mut tally = Tally::default();
    for c in cases {
        let url = match &c.query {
            Some(q) => format!("{}?{q}", served.mcp_url),
            None => served.mcp_url.clone(),
        };
        let started = Instant::now();
        let r = send(&url, &c.authorization).await;
        let elapsed = started.elapsed();
        let status = r.status();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = r.text().await.unwrap();
        let name = c.name;
        assert!(
            elapsed < Duration::from_secs(2),
            "{name}: took {elapsed:?} to answer"
        );

        let hostile = !matches!(c.expect, Expect::Accepted);
        if hostile {
            tally.tried += 1;
            if status == StatusCode::OK {
                tally.accepted += 1;
            }
        } else {
            tally.valid += 1;
        }

        let (want_status, want_challenge, want_error, want_description) = match &c.expect {
            Expect::Accepted => (200, None, None, None),
            Expect::Challenge => (
                401,
                Some(format!(
                    "Bearer scope=\"{SCOPES}\", resource_metadata=\"{metadata}\""
                )),
                Some("unauthorized"),
                None,
            ),
            Expect::InvalidToken(d) => (
                401,
                Some(format!(
                    "Bearer error=\"invalid_token\", error_description=\"{d}\", scope=\"{SCOPES}\", resource_metadata=\"{metadata}\""
                )),
                Some("invalid_token"),
                Some(d.clone()),
            ),
            Expect::InvalidTokenCleaned { body, header } => (
                401,
                Some(format!(
                    "Bearer error=\"invalid_token\", error_description=\"{header}\", scope=\"{SCOPES}\", resource_metadata=\"{metadata}\""
                )),
                Some("invalid_token"),
                Some(body.clone()),
            ),
            Expect::InvalidRequest(d) => (
                400,
                Some(format!(
                    "Bearer error=\"invalid_request\", error_description=\"{d}\", resource_metadata=\"{metadata}\""
                )),
                Some("invalid_request"),
                Some((*d).to_owned()),
            ),
        };
        assert_eq!(status.as_u16(), want_status, "{name}: {body}");
        assert_eq!(challenge, want_challenge, "{name}");
        if let Some(error) = want_error {
            assert_eq!(content_type.as_deref(), Some("application/json"), "{name}");
            let json: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"], error, "{name}");
            match want_description {
                Some(d) => assert_eq!(json["error_description"], d.as_str(), "{name}"),
                None => assert!(json["error_description"].is_string(), "{name}"),
            }
        }
        if hostile {
            tally.refused += 1;
        }
        println!(
            "ATTACK case={name} status={} outcome={}",
            status.as_u16(),
            if hostile {
                "refused"
            } else {
                "accepted-as-valid"
            }
        );
    }
    tally
}

/// Reasons logged for the `invalid_token` cases.
fn reasons(cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|c| match &c.expect {
            Expect::InvalidToken(d) => Some(d.clone()),
            Expect::InvalidTokenCleaned { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect()
}

/// The tokens and signatures of every case, which the log must never contain.
fn secrets(cases: &[Case]) -> Vec<String> {
    let mut out = Vec::new();
    for c in cases {
        for value in &c.authorization {
            let text = String::from_utf8_lossy(value).into_owned();
            let token = text
                .split_once(' ')
                .map(|(_, t)| t.trim().to_owned())
                .unwrap_or(text);
            out.push(signature_of(&token));
            out.push(token);
        }
    }
    out
}

/// Proves the server is alive and tools still run: a valid token reaches `whoami`.
async fn assert_valid_token_still_served(issuer: &TestIssuer, served: &Served) {
    let token = issuer.rs256(&issuer.claims("after-the-storm", &served.mcp_url));
    let client = connect(&served.mcp_url, &token).await.unwrap();
    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let text = result.content[0].as_text().unwrap().text.clone();
    assert!(text.contains("after-the-storm"), "{text}");
    client.cancel().await.unwrap();
    assert_eq!(served.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hostile_tokens_are_refused_with_the_exact_challenge_and_reach_no_tool() {
    let log = CapturedLog::start();
    let (issuer, served) = setup().await;
    let aud = served.mcp_url.clone();
    let good = issuer.claims("alice", &aud);
    let rsa_kid = issuer.rsa.kid.clone();
    let ec_kid = issuer.ec.kid.clone();
    let rsa_sign = |i: &str| issuer.rsa.sign(i);
    let at_jwt = |kid: &str| json!({"alg": "RS256", "typ": "at+jwt", "kid": kid});
    let signed = |claims: &Value| issuer.rs256(claims);
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };

    let valid = issuer.rs256(&good);
    let header_part = valid.split('.').next().unwrap().to_owned();
    let payload_part = valid.split('.').nth(1).unwrap().to_owned();
    let signature = signature_of(&valid);
    let unsigned = |header: Value| {
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(good.to_string().as_bytes())
        )
    };
    let hmac = |alg: &str, key: Vec<u8>, kid: Option<&str>| {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        jws(&header, &good, |i| hmac_sha(alg, &key, i))
    };
    let rsa_pub = issuer.rsa.public_material();
    let ec_pub = issuer.ec.jwk.to_string().into_bytes();
    let rsa_modulus = issuer.rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();

    let mut bit_flipped = signature.clone().into_bytes();
    let mid = bit_flipped.len() / 2;
    bit_flipped[mid] = if bit_flipped[mid] == b'A' { b'B' } else { b'A' };
    let bit_flipped = String::from_utf8(bit_flipped).unwrap();
    let tampered_payload = b64(with("sub", json!("admin")).to_string().as_bytes());
    let other_signature = signature_of(&issuer.rs256(&issuer.claims("mallory", &aud)));

    let mut dup_claims = good.to_string();
    dup_claims.insert_str(1, "\"aud\":\"http://evil.example/mcp\",");
    let nested = {
        let inner = issuer.rs256(&good);
        jws_bytes(
            json!({"alg": "RS256", "typ": "JWT", "cty": "JWT", "kid": rsa_kid})
                .to_string()
                .as_bytes(),
            serde_json::to_string(&inner).unwrap().as_bytes(),
            rsa_sign,
        )
    };
    let mut big_claims = good.clone();
    big_claims["padding"] = json!("x".repeat(100 * 1024));
    let other_resource = format!("{}/other-mcp", served.base);
    let mut decoys: Vec<Value> = (0..20)
        .map(|i| json!(format!("https://decoy{i}.example/mcp")))
        .collect();
    decoys.push(json!(other_resource));

    let exp_later = (now() + 600).to_string();
    let non_utf8_claims = [
        b"{\"iss\":\"".as_slice(),
        issuer.url.as_bytes(),
        b"\",\"sub\":\"\xff\xfe\",\"aud\":\"",
        aud.as_bytes(),
        b"\",\"exp\":",
        exp_later.as_bytes(),
        b"}",
    ]
    .concat();

    let too_large = "the token is malformed: the token is too large";
    let header_not_object =
        "the token is malformed: the header is not a JSON object (or repeats a member)";
    let claims_not_object =
        "the token is malformed: the claims are not a JSON object (or repeat a member)";

    let cases = vec![
        // --- `alg` none and its spellings --------------------------------------------------
        case(
            "alg_none_is_refused",
            &unsigned(json!({"alg": "none", "typ": "JWT"})),
            refused("the signing algorithm none is not allowed"),
        ),
        case(
            "alg_capitalised_none_is_refused",
            &unsigned(json!({"alg": "None", "typ": "JWT"})),
            refused("the signing algorithm None is not allowed"),
        ),
        case(
            "alg_upper_case_none_is_refused",
            &unsigned(json!({"alg": "NONE", "typ": "JWT"})),
            refused("the signing algorithm NONE is not allowed"),
        ),
        case(
            "alg_none_with_the_original_signature_kept_is_refused",
            &format!(
                "{}.{payload_part}.{signature}",
                b64(json!({"alg": "none", "kid": rsa_kid})
                    .to_string()
                    .as_bytes())
            ),
            refused("the signing algorithm none is not allowed"),
        ),
        case(
            "alg_missing_is_refused",
            &jws(&json!({"typ": "JWT", "kid": rsa_kid}), &good, rsa_sign),
            refused("the token is malformed: the header has no `alg`"),
        ),
        case(
            "alg_not_a_string_is_refused",
            &jws(&json!({"alg": 256, "kid": rsa_kid}), &good, rsa_sign),
            refused("the token is malformed: the header has no `alg`"),
        ),
        case(
            "alg_in_lower_case_is_refused",
            &jws(&json!({"alg": "rs256", "kid": rsa_kid}), &good, rsa_sign),
            refused("the signing algorithm rs256 is not allowed"),
        ),
        Case {
            name: "alg_with_quotes_and_crlf_cannot_inject_into_the_challenge",
            authorization: vec![
                format!(
                    "Bearer {}",
                    jws(
                        &json!({"alg": "RS256\"\r\nX-Injected: 1", "kid": rsa_kid}),
                        &good,
                        rsa_sign
                    )
                )
                .into_bytes(),
            ],
            query: None,
            // The error text keeps printable characters only; the header then drops the quote.
            expect: Expect::InvalidTokenCleaned {
                body: "the signing algorithm RS256\"X-Injected:1 is not allowed".into(),
                header: "the signing algorithm RS256X-Injected:1 is not allowed".into(),
            },
        },
        // --- algorithm confusion: HMAC keyed with public key material ----------------------
        case(
            "hs256_signed_with_the_rsa_public_key_is_refused",
            &hmac("HS256", rsa_pub.clone(), Some(&rsa_kid)),
            refused("the signing algorithm HS256 is not allowed"),
        ),
        case(
            "hs384_signed_with_the_rsa_public_key_is_refused",
            &hmac("HS384", rsa_pub.clone(), Some(&rsa_kid)),
            refused("the signing algorithm HS384 is not allowed"),
        ),
        case(
            "hs512_signed_with_the_rsa_public_key_is_refused",
            &hmac("HS512", rsa_pub.clone(), None),
            refused("the signing algorithm HS512 is not allowed"),
        ),
        case(
            "hs256_signed_with_the_rsa_modulus_is_refused",
            &hmac("HS256", rsa_modulus, None),
            refused("the signing algorithm HS256 is not allowed"),
        ),
        case(
            "hs256_signed_with_the_ec_public_key_is_refused",
            &hmac("HS256", ec_pub.clone(), Some(&ec_kid)),
            refused("the signing algorithm HS256 is not allowed"),
        ),
        case(
            "hs384_signed_with_the_ec_public_key_is_refused",
            &hmac("HS384", ec_pub.clone(), Some(&ec_kid)),
            refused("the signing algorithm HS384 is not allowed"),
        ),
        case(
            "hs512_signed_with_the_ec_public_key_is_refused",
            &hmac("HS512", ec_pub, None),
            refused("the signing algorithm HS512 is not allowed"),
        ),
        case(
            "es256_header_naming_the_rsa_key_is_refused",
            &jws(&json!({"alg": "ES256", "kid": rsa_kid}), &good, |i| {
                issuer.ec.sign(i)
            }),
            refused("the signing algorithm ES256 is not allowed"),
        ),
        case(
            "rs256_header_naming_the_ec_key_is_refused",
            &jws(&json!({"alg": "RS256", "kid": ec_kid}), &good, rsa_sign),
            refused("the signing algorithm RS256 is not allowed"),
        ),
        case(
            // The issuer's JWK says `alg: RS256`: the key is bound to that one algorithm.
            "ps256_header_naming_an_rs256_only_key_is_refused",
            &jws(&json!({"alg": "PS256", "kid": rsa_kid}), &good, rsa_sign),
            refused("the signing algorithm PS256 is not allowed"),
        ),
        // --- signature damage ---------------------------------------------------------------
        case(
            "signature_stripped_is_refused",
            &format!("{header_part}.{payload_part}."),
            refused("the token signature is invalid"),
        ),
        case(
            "signature_and_its_dot_stripped_is_refused",
            &format!("{header_part}.{payload_part}"),
            refused("the token is malformed: not a JWT"),
        ),
        case(
            "signature_truncated_is_refused",
            &format!(
                "{header_part}.{payload_part}.{}",
                &signature[..signature.len() - 10]
            ),
            refused("the token signature is invalid"),
        ),
        case(
            "signature_truncated_to_an_invalid_base64_length_is_refused",
            &format!(
                "{header_part}.{payload_part}.{}",
                &signature[..signature.len() - 3]
            ),
            refused("the token signature is invalid"),
        ),
        case(
            "signature_bit_flipped_is_refused",
            &format!("{header_part}.{payload_part}.{bit_flipped}"),
            refused("the token signature is invalid"),
        ),
        case(
            "signature_of_another_token_is_refused",
            &format!("{header_part}.{payload_part}.{other_signature}"),
            refused("the token signature is invalid"),
        ),
        case(
            "payload_changed_after_signing_is_refused",
            &format!("{header_part}.{tampered_payload}.{signature}"),
            refused("the token signature is invalid"),
        ),
        // --- `kid` abuse --------------------------------------------------------------------
        case(
            "kid_unknown_is_refused",
            &jws(&at_jwt("no-such-key"), &good, rsa_sign),
            refused("the token was signed with an unknown key"),
        ),
        case(
            "kid_empty_is_refused",
            &jws(&at_jwt(""), &good, rsa_sign),
            refused("the token was signed with an unknown key"),
        ),
        case(
            "kid_path_traversal_is_refused",
            &jws(&at_jwt("../../etc/passwd"), &good, rsa_sign),
            refused("the token was signed with an unknown key"),
        ),
        case(
            "kid_sql_injection_is_refused",
            &jws(&at_jwt("x' UNION SELECT 'key' --"), &good, rsa_sign),
            refused("the token was signed with an unknown key"),
        ),
        case(
            "kid_of_ten_kilobytes_is_refused",
            &jws(&at_jwt(&"k".repeat(10 * 1024)), &good, rsa_sign),
            refused("the token was signed with an unknown key"),
        ),
        case(
            "kid_not_a_string_is_refused",
            &jws(&json!({"alg": "RS256", "kid": ["rsa-1"]}), &good, rsa_sign),
            refused("the token is malformed: `kid` is not a string"),
        ),
        // --- headers that ask for more than we implement ------------------------------------
        case(
            "crit_with_an_unknown_extension_is_refused",
            &jws(
                &json!({"alg": "RS256", "kid": rsa_kid, "crit": ["urn:example:unknown"], "urn:example:unknown": true}),
                &good,
                rsa_sign,
            ),
            refused("the token requires an unsupported critical header extension"),
        ),
        case(
            "crit_b64_false_is_refused",
            &jws(
                &json!({"alg": "RS256", "kid": rsa_kid, "b64": false, "crit": ["b64"]}),
                &good,
                rsa_sign,
            ),
            refused("the token requires an unsupported critical header extension"),
        ),
        case(
            "typ_of_another_token_kind_is_refused",
            &jws(
                &json!({"alg": "RS256", "kid": rsa_kid, "typ": "secevent+jwt"}),
                &good,
                rsa_sign,
            ),
            refused("the token type is not accepted"),
        ),
        case(
            "nested_jwt_with_cty_jwt_is_refused",
            &nested,
            refused(claims_not_object),
        ),
        case(
            "jwe_with_five_parts_is_refused",
            &format!(
                "{}.{}.{}.{}.{}",
                b64(json!({"alg": "RSA-OAEP", "enc": "A256GCM"})
                    .to_string()
                    .as_bytes()),
                b64(b"encrypted-key-bytes"),
                b64(b"initialization-v"),
                b64(b"ciphertext"),
                b64(b"authentication-tag")
            ),
            refused("encrypted tokens (JWE) are not accepted"),
        ),
        case(
            "enc_header_on_a_three_part_token_is_refused",
            &jws(
                &json!({"alg": "RS256", "kid": rsa_kid, "enc": "A256GCM"}),
                &good,
                rsa_sign,
            ),
            refused("encrypted tokens (JWE) are not accepted"),
        ),
        // --- issuer, audience, times ---------------------------------------------------------
        case(
            "iss_of_another_issuer_is_refused",
            &signed(&with("iss", json!("http://evil.example"))),
            refused("the token was issued by an untrusted issuer"),
        ),
        case(
            "iss_with_a_trailing_slash_is_refused",
            &signed(&with("iss", json!(format!("{}/", issuer.url)))),
            refused("the token was issued by an untrusted issuer"),
        ),
        case(
            "iss_missing_is_refused",
            &signed(&without("iss")),
            refused("the token lacks a valid `iss` claim"),
        ),
        case(
            "iss_as_an_array_is_refused",
            &signed(&with("iss", json!([issuer.url]))),
            refused("the token lacks a valid `iss` claim"),
        ),
        case(
            "aud_missing_is_refused",
            &signed(&without("aud")),
            refused("the token lacks a valid `aud` claim"),
        ),
        case(
            "aud_of_another_resource_on_the_same_issuer_is_refused",
            &signed(&with("aud", json!(other_resource))),
            refused("the token is not intended for this resource (audience mismatch)"),
        ),
        case(
            "aud_array_without_this_resource_is_refused",
            &signed(&with("aud", Value::Array(decoys.clone()))),
            refused("the token is not intended for this resource (audience mismatch)"),
        ),
        case(
            "aud_with_a_trailing_slash_is_refused",
            &signed(&with("aud", json!(format!("{aud}/")))),
            refused("the token is not intended for this resource (audience mismatch)"),
        ),
        case(
            "aud_as_an_object_is_refused",
            &signed(&with("aud", json!({"aud": aud}))),
            refused("the token is not intended for this resource (audience mismatch)"),
        ),
        case(
            "sub_missing_is_refused",
            &signed(&without("sub")),
            refused("the token lacks a valid `sub` claim"),
        ),
        case(
            "sub_empty_is_refused",
            &signed(&with("sub", json!(""))),
            refused("the token lacks a valid `sub` claim"),
        ),
        case(
            "exp_missing_is_refused",
            &signed(&without("exp")),
            refused("the token lacks a valid `exp` claim"),
        ),
        case(
            "exp_in_the_past_is_refused",
            &signed(&with("exp", json!(now() - 3600))),
            refused("the token has expired"),
        ),
        case(
            "exp_as_a_string_is_refused",
            &signed(&with("exp", json!((now() + 3600).to_string()))),
            refused("the token lacks a valid `exp` claim"),
        ),
        case(
            "exp_as_a_float_in_the_past_is_refused",
            &signed(&with("exp", json!(now() as f64 - 3600.5))),
            refused("the token has expired"),
        ),
        case(
            "exp_huge_1e20_is_refused",
            &signed(&with("exp", json!(1e20))),
            refused("the token lacks a valid `exp` claim"),
        ),
        case(
            "exp_negative_is_refused",
            &signed(&with("exp", json!(-1))),
            refused("the token lacks a valid `exp` claim"),
        ),
        case(
            "exp_null_is_refused",
            &signed(&with("exp", Value::Null)),
            refused("the token lacks a valid `exp` claim"),
        ),
        case(
            "nbf_in_the_future_is_refused",
            &signed(&with("nbf", json!(now() + 3600))),
            refused("the token is not valid yet"),
        ),
        case(
            "nbf_as_a_string_is_refused",
            &signed(&with("nbf", json!("0"))),
            refused("the token lacks a valid `nbf` claim"),
        ),
        case(
            "iat_far_in_the_future_is_refused",
            &signed(&with("iat", json!(now() + 10 * 365 * 24 * 3600))),
            refused("the token was issued in the future"),
        ),
        // --- encoding tricks ----------------------------------------------------------------
        case(
            "duplicate_claims_are_refused",
            &jws_bytes(
                at_jwt(&rsa_kid).to_string().as_bytes(),
                dup_claims.as_bytes(),
                rsa_sign,
            ),
            refused(claims_not_object),
        ),
        case(
            "duplicate_header_members_are_refused",
            &jws_bytes(
                format!(r#"{{"alg":"none","kid":"{rsa_kid}","alg":"RS256"}}"#).as_bytes(),
                good.to_string().as_bytes(),
                rsa_sign,
            ),
            refused(header_not_object),
        ),
        case(
            "non_utf8_bytes_in_the_header_are_refused",
            &jws_bytes(
                b"{\"alg\":\"RS256\",\"kid\":\"rsa-\xff\xfe\"}",
                good.to_string().as_bytes(),
                rsa_sign,
            ),
            refused(header_not_object),
        ),
        case(
            "non_utf8_bytes_in_the_claims_are_refused",
            &jws_bytes(
                at_jwt(&rsa_kid).to_string().as_bytes(),
                &non_utf8_claims,
                rsa_sign,
            ),
            refused(claims_not_object),
        ),
        case(
            "claims_as_a_json_array_are_refused",
            &jws_bytes(
                at_jwt(&rsa_kid).to_string().as_bytes(),
                json!([good]).to_string().as_bytes(),
                rsa_sign,
            ),
            refused(claims_not_object),
        ),
        case(
            "trailing_data_after_the_header_is_refused",
            &jws_bytes(
                format!(r#"{{"alg":"RS256","kid":"{rsa_kid}"}}{{}}"#).as_bytes(),
                good.to_string().as_bytes(),
                rsa_sign,
            ),
            refused("the token is malformed: trailing data after the JSON object"),
        ),
        case(
            "header_with_an_impossible_base64_length_is_refused",
            &format!("a.{payload_part}.{signature}"),
            refused("the token is malformed: the header is not base64url"),
        ),
        case(
            "standard_base64_alphabet_is_refused",
            &format!("{header_part}+/.{payload_part}.{signature}"),
            refused("the token is malformed: the token is not base64url"),
        ),
        case(
            "four_part_token_is_refused",
            &format!("{header_part}.{payload_part}.{signature}.{signature}"),
            refused("the token is malformed: not a JWT"),
        ),
        case(
            "token_of_100_kilobytes_is_refused",
            &signed(&big_claims),
            refused(too_large),
        ),
        case(
            "opaque_garbage_is_refused",
            "Zm9vYmFyYmF6cXV4cXV1eHh5eno",
            refused("the token is malformed: not a JWT"),
        ),
        // --- deliberately valid variants ----------------------------------------------------
        case(
            "exp_as_a_float_in_the_future_is_accepted",
            &signed(&with("exp", json!(now() as f64 + 3600.25))),
            Expect::Accepted,
        ),
        case(
            "aud_array_with_this_resource_among_others_is_accepted",
            &signed(&with("aud", {
                let mut list = decoys.clone();
                list.push(json!(aud));
                Value::Array(list)
            })),
            Expect::Accepted,
        ),
        case(
            "es256_token_from_the_issuer_is_accepted",
            &issuer.es256(&good),
            Expect::Accepted,
        ),
    ];

    let tally = run_cases(&served, &cases).await;
    assert_eq!(tally.accepted, 0);
    assert!(tally.tried >= 60, "only {} hostile tokens", tally.tried);
    assert_eq!(
        served.calls.load(Ordering::SeqCst),
        0,
        "a refused request reached a tool"
    );
    // Made-up key ids trigger at most one rate-limited refetch, not one per token.
    assert!(
        issuer.jwks_fetches() <= 3,
        "{} JWKS fetches",
        issuer.jwks_fetches()
    );
    // Each fetch names its cause, so that the scheduled ones can be told from those the
    // made-up key ids caused (bench/run counts the latter against its target).
    let text = log.text();
    let loaded: Vec<&str> = text.lines().filter(|l| l.contains("JWKS loaded")).collect();
    for cause in ["scheduled", "unknown_kid"] {
        assert!(
            loaded
                .iter()
                .any(|l| l.contains(&format!("cause=\"{cause}\""))
                    || l.contains(&format!("cause={cause}"))),
            "no JWKS fetch logged with cause {cause}: {loaded:?}"
        );
    }
    assert_valid_token_still_served(&issuer, &served).await;
    log.assert_refusals_logged_without_secrets(&reasons(&cases), &secrets(&cases));
    tally.print("tokens");
}

/// A loopback server playing the attacker: it serves a JWKS and a certificate, and counts
/// every request it gets.
struct Attacker {
    url: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Attacker {
    async fn start(jwk: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let keys = json!({"keys": [jwk.clone()]});
            async move { axum::Json(keys) }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, hits, task }
    }
}

#[tokio::test]
async fn keys_named_by_the_token_itself_are_never_fetched_nor_trusted() {
    let log = CapturedLog::start();
    let (issuer, served) = setup().await;
    let attacker_key = RsaKey::generate("attacker-1");
    let attacker = Attacker::start(attacker_key.jwk.clone()).await;
    let good = issuer.claims("alice", &served.mcp_url);

    // Let the verifier load the issuer's keys, then count from there.
    let valid = issuer.rs256(&good);
    assert_eq!(
        send(&served.mcp_url, &[format!("Bearer {valid}").into_bytes()])
            .await
            .status(),
        200
    );
    let fetches_before = issuer.jwks_fetches();

    let jku = format!("{}/.well-known/jwks.json", attacker.url);
    let x5u = format!("{}/cert.pem", attacker.url);
    let by_attacker = |header: Value| jws(&header, &good, |i| attacker_key.sign(i));
    let rsa_kid = issuer.rsa.kid.clone();
    let bad_signature = || refused("the token signature is invalid");
    let cases = vec![
        case(
            "jku_pointing_at_an_attacker_key_set_is_refused",
            &by_attacker(json!({"alg": "RS256", "typ": "at+jwt", "kid": rsa_kid, "jku": jku})),
            bad_signature(),
        ),
        case(
            "jku_without_kid_is_refused",
            &by_attacker(json!({"alg": "RS256", "typ": "at+jwt", "jku": jku})),
            bad_signature(),
        ),
        case(
            "x5u_pointing_at_an_attacker_certificate_is_refused",
            &by_attacker(json!({"alg": "RS256", "typ": "at+jwt", "kid": rsa_kid, "x5u": x5u})),
            bad_signature(),
        ),
        case(
            "embedded_jwk_of_the_attacker_is_refused",
            &by_attacker(
                json!({"alg": "RS256", "typ": "at+jwt", "kid": rsa_kid, "jwk": attacker_key.jwk}),
            ),
            bad_signature(),
        ),
        case(
            "embedded_jwk_without_kid_is_refused",
            &by_attacker(json!({"alg": "RS256", "typ": "at+jwt", "jwk": attacker_key.jwk})),
            bad_signature(),
        ),
        case(
            "embedded_x5c_chain_is_refused",
            &by_attacker(json!({"alg": "RS256", "typ": "at+jwt", "kid": rsa_kid,
                                "x5c": [b64(b"attacker certificate bytes")]})),
            bad_signature(),
        ),
        case(
            "jku_jwk_and_x5u_together_are_refused",
            &by_attacker(
                json!({"alg": "RS256", "typ": "at+jwt", "jku": jku, "x5u": x5u,
                                "jwk": attacker_key.jwk}),
            ),
            bad_signature(),
        ),
    ];
    let tally = run_cases(&served, &cases).await;
    assert_eq!(tally.accepted, 0);
    assert_eq!(
        attacker.hits.load(Ordering::SeqCst),
        0,
        "the server fetched a URL named by a token"
    );
    // A failed signature on a token without `kid` may mean a key rotated in, so those cases
    // may look at the issuer's own key set again: once per cooldown (10 s), whatever the
    // token names.
    assert!(
        issuer.jwks_fetches() - fetches_before <= 1,
        "token headers made the server refetch the issuer's keys {} times",
        issuer.jwks_fetches() - fetches_before
    );
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
    assert_valid_token_still_served(&issuer, &served).await;
    log.assert_refusals_logged_without_secrets(&reasons(&cases), &secrets(&cases));
    tally.print("foreign-keys");
}

#[tokio::test]
async fn hostile_authorization_headers_get_the_exact_answer() {
    let log = CapturedLog::start();
    let (issuer, served) = setup().await;
    let valid = issuer.rs256(&issuer.claims("alice", &served.mcp_url));
    let other = issuer.rs256(&issuer.claims("bob", &served.mcp_url));
    let header = |v: String| Case {
        name: "",
        authorization: vec![v.into_bytes()],
        query: None,
        expect: Expect::Challenge,
    };
    let named = |name: &'static str, mut c: Case, expect: Expect| {
        c.name = name;
        c.expect = expect;
        c
    };
    let cases = vec![
        Case {
            name: "no_authorization_header_gets_a_bare_challenge",
            authorization: vec![],
            query: None,
            expect: Expect::Challenge,
        },
        named(
            "basic_credentials_get_a_bare_challenge",
            header("Basic YWxpY2U6c2VjcmV0".into()),
            Expect::Challenge,
        ),
        named(
            "bearer_scheme_glued_to_the_token_gets_a_bare_challenge",
            header(format!("Bearer{valid}")),
            Expect::Challenge,
        ),
        named(
            "bearer_without_a_token_is_an_invalid_request",
            header("Bearer".into()),
            Expect::InvalidRequest("the Authorization header has an empty bearer token"),
        ),
        named(
            "bearer_followed_by_spaces_only_is_an_invalid_request",
            header("Bearer    ".into()),
            Expect::InvalidRequest("the Authorization header has an empty bearer token"),
        ),
        named(
            "two_tokens_in_one_header_are_an_invalid_request",
            header(format!("Bearer {valid} {other}")),
            Expect::InvalidRequest(
                "the bearer token contains characters not allowed in a token (RFC 6750 b64token)",
            ),
        ),
        named(
            "token_with_a_quote_is_an_invalid_request",
            header(format!("Bearer {valid}\"")),
            Expect::InvalidRequest(
                "the bearer token contains characters not allowed in a token (RFC 6750 b64token)",
            ),
        ),
        named(
            "token_with_a_comma_and_parameters_is_an_invalid_request",
            header(format!("Bearer {valid}, realm=\"x\"")),
            Expect::InvalidRequest(
                "the bearer token contains characters not allowed in a token (RFC 6750 b64token)",
            ),
        ),
        Case {
            name: "non_ascii_bytes_in_the_header_are_an_invalid_request",
            authorization: vec![b"Bearer \xff\xfe\xfd".to_vec()],
            query: None,
            expect: Expect::InvalidRequest("the Authorization header is not valid ASCII"),
        },
        Case {
            name: "two_authorization_headers_are_an_invalid_request",
            authorization: vec![
                format!("Bearer {valid}").into_bytes(),
                format!("Bearer {other}").into_bytes(),
            ],
            query: None,
            expect: Expect::InvalidRequest("more than one Authorization header"),
        },
        Case {
            name: "a_valid_token_in_the_query_string_is_an_invalid_request",
            authorization: vec![],
            query: Some(format!("access_token={valid}")),
            expect: Expect::InvalidRequest(
                "access tokens in the URL are not accepted; send them in the Authorization header",
            ),
        },
        Case {
            name: "query_token_beside_a_valid_header_is_an_invalid_request",
            authorization: vec![format!("Bearer {valid}").into_bytes()],
            query: Some(format!("ACCESS_TOKEN={other}")),
            expect: Expect::InvalidRequest(
                "access tokens in the URL are not accepted; send them in the Authorization header",
            ),
        },
        named(
            "lower_case_bearer_scheme_is_accepted",
            header(format!("bearer {valid}")),
            Expect::Accepted,
        ),
        named(
            "upper_case_bearer_scheme_is_accepted",
            header(format!("BEARER {valid}")),
            Expect::Accepted,
        ),
        named(
            "double_space_after_the_scheme_is_accepted",
            header(format!("Bearer  {valid}")),
            Expect::Accepted,
        ),
    ];
    let tally = run_cases(&served, &cases).await;
    assert_eq!(tally.accepted, 0);
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
    assert_valid_token_still_served(&issuer, &served).await;
    // Header-level refusals carry no token to fingerprint: they are logged as refused
    // requests, and the token must not appear either.
    let text = log.text();
    assert!(
        text.contains("request refused reason=\"more than one Authorization header\""),
        "{text}"
    );
    for secret in [&valid, &other, &signature_of(&valid), &signature_of(&other)] {
        assert!(
            !text.contains(secret.as_str()),
            "a token leaked into the log"
        );
    }
    tally.print("headers");
}

#[tokio::test]
async fn ten_thousand_audiences_are_refused_fast_and_a_long_valid_list_is_accepted_fast() {
    let log = CapturedLog::start();
    let (issuer, served) = setup().await;
    let aud = served.mcp_url.clone();
    let many = |n: usize, ours: bool| {
        let mut list: Vec<Value> = (0..n).map(|i| json!(format!("r{i}"))).collect();
        if ours {
            list.push(json!(aud));
        }
        let mut claims = issuer.claims("alice", &aud);
        claims["aud"] = Value::Array(list);
        issuer.rs256(&claims)
    };
    let too_large = "the token is malformed: the token is too large";
    let cases = vec![
        // Ten thousand entries cannot fit in the largest token accepted (16 KiB): the size
        // check refuses them before any decoding, whether or not ours is among them.
        case(
            "ten_thousand_audiences_without_ours_are_refused",
            &many(10_000, false),
            refused(too_large),
        ),
        case(
            "ten_thousand_audiences_with_ours_last_are_refused_by_size",
            &many(10_000, true),
            refused(too_large),
        ),
        case(
            "a_thousand_audiences_without_ours_are_refused",
            &many(1_000, false),
            refused("the token is not intended for this resource (audience mismatch)"),
        ),
        case(
            "a_thousand_audiences_with_ours_last_are_accepted",
            &many(1_000, true),
            Expect::Accepted,
        ),
    ];
    // `run_cases` bounds each answer at 2 s; the whole group must be much faster than that.
    let started = Instant::now();
    let tally = run_cases(&served, &cases).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tally.accepted, 0);
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
    assert_valid_token_still_served(&issuer, &served).await;
    log.assert_refusals_logged_without_secrets(&reasons(&cases), &secrets(&cases));
    tally.print("audience-lists");
}

#[tokio::test]
async fn a_token_for_another_resource_of_the_same_issuer_is_refused_there_and_accepted_at_home() {
    let log = CapturedLog::start();
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let first = serve_probe(
        |r| Arc::new(verifier_for(&url, r.resource())),
        |s| s.refusal_log_per_second(u64::MAX),
    )
    .await;
    let second = serve_probe(
        |r| Arc::new(verifier_for(&url, r.resource())),
        |s| s.refusal_log_per_second(u64::MAX),
    )
    .await;
    let for_second = issuer.rs256(&issuer.claims("alice", &second.mcp_url));

    let cases = vec![case(
        "token_for_a_sibling_resource_is_refused",
        &for_second,
        refused("the token is not intended for this resource (audience mismatch)"),
    )];
    let tally = run_cases(&first, &cases).await;
    let home = run_cases(
        &second,
        &[case(
            "token_at_its_own_resource_is_accepted",
            &for_second,
            Expect::Accepted,
        )],
    )
    .await;
    assert_eq!(home.valid, 1);
    assert_eq!(tally.accepted, 0);
    assert_eq!(first.calls.load(Ordering::SeqCst), 0);
    log.assert_refusals_logged_without_secrets(&reasons(&cases), &secrets(&cases));
    tally.print("cross-resource");
}

/// Counts the verifications that reach the real verifier behind it.
struct Counting {
    inner: JwtVerifier,
    calls: Arc<AtomicUsize>,
}

impl mcp_oidc::token::TokenVerifier for Counting {
    fn verify<'a>(
        &'a self,
        token: &'a mcp_oidc::types::BearerToken,
    ) -> mcp_oidc::token::VerifyFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.verify(token)
    }
}

#[tokio::test]
async fn a_repeated_bad_token_is_refused_from_the_cache_and_an_unknown_key_only_for_a_second() {
    // Every test of this binary installs its log capture before logging anything: tracing
    // caches a call site's interest when it is first hit, and a hit with no subscriber
    // around would silence that call site for the tests that do capture.
    let _log = CapturedLog::start();
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let served = serve_probe(
        move |r| {
            Arc::new(Counting {
                inner: verifier_for(&url, r.resource()),
                calls: counter,
            })
        },
        |s| s,
    )
    .await;
    let good = issuer.claims("alice", &served.mcp_url);
    let bad_signature = corrupt_signature(&issuer.rs256(&good));
    let mut expired_claims = good.clone();
    expired_claims["exp"] = json!(now() - 3600);
    let expired = issuer.rs256(&expired_claims);
    let unknown_kid = jws(
        &json!({"alg": "RS256", "typ": "at+jwt", "kid": "never-published"}),
        &good,
        |i| issuer.rsa.sign(i),
    );

    let cases = [
        (&bad_signature, "the token signature is invalid", 1),
        (&expired, "the token has expired", 1),
        // A new key may be published under this kid: remembered for a second only.
        (&unknown_kid, "the token was signed with an unknown key", 1),
    ];
    for (token, description, verifications) in cases {
        calls.store(0, Ordering::SeqCst);
        for _ in 0..3 {
            let r = send(&served.mcp_url, &[format!("Bearer {token}").into_bytes()]).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error_description"], description);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            verifications,
            "verifications for: {description}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = send(
        &served.mcp_url,
        &[format!("Bearer {unknown_kid}").into_bytes()],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "an unknown key is checked again after a second"
    );
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
    // The cached refusals did not poison anything: the valid token still works.
    let valid = issuer.rs256(&good);
    let r = send(&served.mcp_url, &[format!("Bearer {valid}").into_bytes()]).await;
    assert_eq!(r.status(), StatusCode::OK);
}
