//! A flood of refusals against a real protected server: the log takes a bounded number of
//! lines per second and a summary of the rest. Alone in its test binary because it counts
//! every line of the log, and tracing may drop a line for a thread-local subscriber while
//! other tests install theirs in parallel.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mcp_oidc::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource};

#[tokio::test]
async fn a_refusal_flood_is_logged_within_the_budget_and_summed_up() {
    let log = CapturedLog::start();
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    // The default budget: 20 refusals logged in full per second.
    let served = serve_probe(
        |r| {
            Arc::new(
                JwtVerifier::new(JwtConfig::new(
                    url.as_str(),
                    KeySource::Discovery(url.clone()),
                    AudiencePolicy::OneOf(vec![r.resource().into()]),
                ))
                .unwrap(),
            )
        },
        |s| s,
    )
    .await;
    let bad = corrupt_signature(&issuer.rs256(&issuer.claims("alice", &served.mcp_url)));
    let header = format!("Bearer {bad}");
    let started = Instant::now();
    for _ in 0..300 {
        let r = post(&served.mcp_url, Some(&header), INIT).await;
        assert_eq!(r.status(), 401);
    }
    // The flood touches at most this many calendar seconds, each with its own budget.
    let windows = started.elapsed().as_secs() + 2;
    // The summary is written by the first refusal of a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(&served.mcp_url, Some(&header), INIT).await.status(),
        401
    );

    let text = log.text();
    let full = text
        .lines()
        .filter(|l| l.contains("bearer token refused"))
        .count();
    assert!(full >= 20, "the first refusals are logged in full: {full}");
    assert!(
        full as u64 <= 20 * windows + 1,
        "{full} refusal lines over at most {windows} seconds and one more"
    );
    let summed: u64 = text
        .lines()
        .filter(|l| l.contains("further refusals in one second were not logged"))
        .filter_map(|l| {
            l.split("suppressed=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        full as u64 + summed,
        301,
        "every refusal is either logged or counted ({full} logged, {summed} counted)"
    );
}
