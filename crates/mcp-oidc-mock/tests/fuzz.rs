//! Thousands of random forms to the token and authorization endpoints must
//! never produce a server error.

mod common;

use common::*;
use rand::{RngExt as _, SeedableRng as _};
use reqwest::StatusCode;

const KEYS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "client_id",
    "client_secret",
    "code_verifier",
    "refresh_token",
    "scope",
    "resource",
    "response_type",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "sub",
    "action",
    "response_mode",
    "token",
    "access_token",
];

/// `huge` bounds the long values: URLs cannot exceed 64 KiB, bodies can.
fn random_value(rng: &mut impl rand::Rng, huge: usize) -> String {
    match rng.random_range(0..10) {
        0 => String::new(),
        1 => "x".repeat(rng.random_range(1000..huge)),
        2 => "ünïcødé ✓ 🦀 \u{202e} \u{0}".to_owned(),
        3 => [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "code",
            "S256",
            "plain",
            "deny",
        ][rng.random_range(0..7)]
        .to_owned(),
        4 => REDIRECT.to_owned(),
        5 => "%ZZ%%&=+;\"'<>".to_owned(),
        6 => "http://localhost:8000/mcp#frag".to_owned(),
        _ => (0..rng.random_range(1..60))
            .map(|_| rng.random_range(' '..='~'))
            .collect(),
    }
}

fn random_form(rng: &mut impl rand::Rng, huge: usize) -> Vec<(String, String)> {
    (0..rng.random_range(0..9))
        .map(|_| {
            let key = if rng.random_range(0..12) == 0 {
                random_value(rng, huge)
            } else {
                KEYS[rng.random_range(0..KEYS.len())].to_owned()
            };
            (key, random_value(rng, huge))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_forms_never_cause_server_errors() {
    let m = start(mcp_oidc_mock::MockConfig::default()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d6f636b);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..3000 {
        let form = random_form(&mut rng, 200_000);
        let query = random_form(&mut rng, 4_000);
        let request = match i % 3 {
            0 => m.http.post(m.url("/oauth2/token")),
            1 => m.http.post(
                m.authorize_url(
                    &query
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect::<Vec<_>>(),
                ),
            ),
            _ => m.http.get(
                m.authorize_url(
                    &query
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect::<Vec<_>>(),
                ),
            ),
        };
        let mut request = request.form(&form);
        if rng.random_range(0..5) == 0 {
            request = request.basic_auth(
                random_value(&mut rng, 2_000),
                Some(random_value(&mut rng, 2_000)),
            );
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        if status.is_server_error() {
            let short = |f: &[(String, String)]| -> Vec<(String, String)> {
                f.iter()
                    .map(|(k, v)| (k.chars().take(80).collect(), v.chars().take(80).collect()))
                    .collect()
            };
            panic!(
                "{status} for form {:?} query {:?}",
                short(&form),
                short(&query)
            );
        }
        *statuses.entry(status.as_u16()).or_default() += 1;
    }
    // The mix must reach past input validation sometimes, or the test proves little.
    assert!(statuses.contains_key(&StatusCode::BAD_REQUEST.as_u16()));
    assert!(
        statuses.contains_key(&StatusCode::FOUND.as_u16()),
        "{statuses:?}"
    );
    assert!(
        statuses.contains_key(&StatusCode::OK.as_u16())
            || statuses.contains_key(&StatusCode::UNAUTHORIZED.as_u16())
    );
}
