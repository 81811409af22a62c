//! How the resource server fails: the provider's key endpoint down, slow, answering garbage
//! or an empty key set, or flapping. Valid tokens keep working from cached keys, no request
//! waits longer than the provider timeout, and the server recovers by itself.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use common::*;
use mcp_oidc::TokenVerifier;
use mcp_oidc::token::{AudiencePolicy, JwksSettings, JwtConfig, JwtVerifier, KeySource};
use serde_json::json;

const NORMAL: u8 = 0;
const DOWN: u8 = 1;
const SLOW: u8 = 2;
const GARBAGE: u8 = 3;
const EMPTY: u8 = 4;

/// A key endpoint whose behaviour the test switches at will.
struct FaultyJwks {
    url: String,
    mode: Arc<AtomicU8>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyJwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct St {
    mode: Arc<AtomicU8>,
    fetches: Arc<AtomicUsize>,
    keys: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

async fn jwks(State(s): State<St>) -> axum::response::Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    match s.mode.load(Ordering::SeqCst) {
        DOWN => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            axum::http::StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        GARBAGE => (
            [("content-type", "application/json")],
            "{\"keys\": [garbage",
        )
            .into_response(),
        EMPTY => axum::Json(json!({"keys": []})).into_response(),
        _ => axum::Json(json!({"keys": s.keys.lock().unwrap().clone()})).into_response(),
    }
}

impl FaultyJwks {
    async fn start(keys: Vec<serde_json::Value>, mode: u8) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/jwks",
            listener.local_addr().unwrap().port()
        );
        let st = St {
            mode: Arc::new(AtomicU8::new(mode)),
            fetches: Arc::new(AtomicUsize::new(0)),
            keys: Arc::new(std::sync::Mutex::new(keys)),
        };
        let (mode, fetches) = (st.mode.clone(), st.fetches.clone());
        let app = axum::Router::new().route("/jwks", get(jwks)).with_state(st);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            mode,
            fetches,
            task,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// A protected server trusting `issuer`'s RSA key, fetched from `jwks_url`.
async fn server(issuer: &TestIssuer, jwks_url: &str) -> Served {
    let (iss, jwks_url) = (issuer.url.clone(), jwks_url.to_owned());
    serve_probe(
        move |r| {
            let mut config = JwtConfig::new(
                iss.as_str(),
                KeySource::JwksUri(jwks_url),
                AudiencePolicy::OneOf(vec![r.resource().into()]),
            );
            config.jwks = JwksSettings {
                unknown_kid_cooldown: Duration::from_millis(100),
                http_timeout: Duration::from_millis(800),
                max_retry_backoff: Duration::from_millis(400),
                ..JwksSettings::default()
            };
            Arc::new(JwtVerifier::new(config).unwrap())
        },
        |s| s.token_cache(mcp_oidc::token::TokenCache::disabled()),
    )
    .await
}

/// Whether `initialize` with `auth` is answered `status` within five seconds.
async fn soon_answers(mcp_url: &str, auth: &str, status: u16) -> bool {
    eventually(Duration::from_secs(5), async || {
        post(mcp_url, Some(auth), INIT).await.status() == status
    })
    .await
}

/// A token with a key id nobody has: forces a (rate-limited) key refetch.
fn unknown_kid_token(issuer: &TestIssuer, aud: &str) -> String {
    jws(
        &json!({"alg": "RS256", "kid": format!("new-{}", now())}),
        &issuer.claims("x", aud),
        |i| issuer.rsa.sign(i),
    )
}

#[tokio::test]
async fn garbage_empty_or_failing_key_endpoints_never_evict_the_cached_keys() {
    let issuer = TestIssuer::start().await;
    let jwks = FaultyJwks::start(vec![issuer.rsa.jwk.clone()], NORMAL).await;
    let served = server(&issuer, &jwks.url).await;
    let valid = format!(
        "Bearer {}",
        issuer.rs256(&issuer.claims("alice", &served.mcp_url))
    );
    assert!(soon_answers(&served.mcp_url, &valid, 200).await);

    for (mode, name) in [
        (GARBAGE, "garbage"),
        (EMPTY, "empty key set"),
        (DOWN, "HTTP 500"),
    ] {
        jwks.set(mode);
        let before = jwks.fetches.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let probe = format!("Bearer {}", unknown_kid_token(&issuer, &served.mcp_url));
        assert_eq!(
            post(&served.mcp_url, Some(&probe), INIT).await.status(),
            401,
            "{name}"
        );
        assert!(
            jwks.fetches.load(Ordering::SeqCst) > before,
            "{name}: a refetch was attempted"
        );
        assert_eq!(
            post(&served.mcp_url, Some(&valid), INIT).await.status(),
            200,
            "{name}: cached keys still serve"
        );
    }
    jwks.set(NORMAL);
}

#[tokio::test]
async fn a_slow_key_endpoint_never_holds_a_request_past_the_provider_timeout() {
    let issuer = TestIssuer::start().await;
    let jwks = FaultyJwks::start(vec![issuer.rsa.jwk.clone()], SLOW).await;
    let served = server(&issuer, &jwks.url).await;
    let valid = format!(
        "Bearer {}",
        issuer.rs256(&issuer.claims("alice", &served.mcp_url))
    );
    for _ in 0..3 {
        let started = Instant::now();
        let r = post(&served.mcp_url, Some(&valid), INIT).await;
        let took = started.elapsed();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert!(
            took < Duration::from_secs(3),
            "waited {took:?} for a provider that hangs"
        );
    }
    // The provider comes back: the server recovers without a restart.
    jwks.set(NORMAL);
    assert!(
        eventually(Duration::from_secs(10), async || post(
            &served.mcp_url,
            Some(&valid),
            INIT
        )
        .await
        .status()
            == 200)
        .await,
        "no recovery"
    );
}

#[tokio::test]
async fn a_flapping_provider_does_not_interrupt_valid_tokens() {
    let issuer = TestIssuer::start().await;
    let jwks = FaultyJwks::start(vec![issuer.rsa.jwk.clone()], NORMAL).await;
    let served = server(&issuer, &jwks.url).await;
    let valid = format!(
        "Bearer {}",
        issuer.rs256(&issuer.claims("alice", &served.mcp_url))
    );
    assert!(soon_answers(&served.mcp_url, &valid, 200).await);
    let mut statuses = Vec::new();
    for i in 0..40 {
        jwks.set(if i % 2 == 0 { DOWN } else { NORMAL });
        if i % 5 == 0 {
            let probe = format!("Bearer {}", unknown_kid_token(&issuer, &served.mcp_url));
            let _ = post(&served.mcp_url, Some(&probe), INIT).await;
        }
        statuses.push(
            post(&served.mcp_url, Some(&valid), INIT)
                .await
                .status()
                .as_u16(),
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// A protected server like [`server`], accepting tokens for `aud`, whose verifier keeps
/// the provider's keys in `store` when given one.
async fn server_keeping_keys(
    issuer: &TestIssuer,
    jwks_url: &str,
    aud: &str,
    store: Option<Arc<dyn mcp_oidc::store::Store>>,
) -> Served {
    let (iss, jwks_url, aud) = (issuer.url.clone(), jwks_url.to_owned(), aud.to_owned());
    serve_probe(
        move |_| {
            let mut config = JwtConfig::new(
                iss.as_str(),
                KeySource::JwksUri(jwks_url),
                AudiencePolicy::OneOf(vec![aud.into()]),
            );
            config.jwks = JwksSettings {
                http_timeout: Duration::from_millis(800),
                max_retry_backoff: Duration::from_millis(400),
                ..JwksSettings::default()
            };
            let verifier = JwtVerifier::new(config).unwrap();
            if let Some(store) = store {
                verifier.keep_keys_in(store);
            }
            Arc::new(verifier)
        },
        |s| s.token_cache(mcp_oidc::token::TokenCache::disabled()),
    )
    .await
}

#[tokio::test]
async fn a_server_restarted_while_the_provider_is_down_verifies_with_the_keys_it_kept() {
    let issuer = TestIssuer::start().await;
    let jwks = FaultyJwks::start(vec![issuer.rsa.jwk.clone()], NORMAL).await;
    let store: Arc<dyn mcp_oidc::store::Store> = Arc::new(mcp_oidc::store::MemoryStore::new());
    let aud = "https://mcp.example.com/mcp";
    let valid = format!("Bearer {}", issuer.rs256(&issuer.claims("alice", aud)));

    let first = server_keeping_keys(&issuer, &jwks.url, aud, Some(store.clone())).await;
    assert!(soon_answers(&first.mcp_url, &valid, 200).await);
    drop(first);
    jwks.set(DOWN);

    // Restarted with the provider unreachable: the kept keys verify, a wrong token is still
    // refused, and a server that kept nothing can only answer 503.
    let second = server_keeping_keys(&issuer, &jwks.url, aud, Some(store.clone())).await;
    assert!(
        soon_answers(&second.mcp_url, &valid, 200).await,
        "the kept keys verify the token"
    );
    let forged = format!("Bearer {}", corrupt_signature(&valid["Bearer ".len()..]));
    assert_eq!(
        post(&second.mcp_url, Some(&forged), INIT).await.status(),
        401
    );
    let amnesic = server_keeping_keys(&issuer, &jwks.url, aud, None).await;
    assert_eq!(
        post(&amnesic.mcp_url, Some(&valid), INIT).await.status(),
        503
    );

    // Once the provider answers again, its current keys replace the kept ones.
    jwks.set(NORMAL);
    let before = jwks.fetches.load(Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), async || jwks
            .fetches
            .load(Ordering::SeqCst)
            > before)
        .await
    );
    assert_eq!(
        post(&second.mcp_url, Some(&valid), INIT).await.status(),
        200
    );
}

#[tokio::test]
async fn kept_keys_older_than_the_longest_refresh_interval_are_not_used() {
    let issuer = TestIssuer::start().await;
    let jwks = FaultyJwks::start(vec![issuer.rsa.jwk.clone()], NORMAL).await;
    let store: Arc<dyn mcp_oidc::store::Store> = Arc::new(mcp_oidc::store::MemoryStore::new());
    let aud = "https://mcp.example.com/mcp";
    let valid = format!("Bearer {}", issuer.rs256(&issuer.claims("alice", aud)));
    let verifier = |store: Arc<dyn mcp_oidc::store::Store>| {
        let mut config = JwtConfig::new(
            issuer.url.as_str(),
            KeySource::JwksUri(jwks.url.clone()),
            AudiencePolicy::OneOf(vec![aud.into()]),
        );
        config.jwks = JwksSettings {
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(1),
            http_timeout: Duration::from_millis(800),
            max_retry_backoff: Duration::from_millis(400),
            ..JwksSettings::default()
        };
        let v = JwtVerifier::new(config).unwrap();
        v.keep_keys_in(store);
        v
    };
    let token = mcp_oidc::types::BearerToken::new(&valid["Bearer ".len()..]);
    let first = verifier(store.clone());
    assert!(
        eventually(Duration::from_secs(5), async || first
            .verify(&token)
            .await
            .is_ok())
        .await
    );
    drop(first);
    jwks.set(DOWN);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = verifier(store);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        second.ready().is_err(),
        "keys fetched longer ago than max_refresh are not trusted"
    );
    assert!(matches!(
        second.verify(&token).await,
        Err(mcp_oidc::error::VerifyError::Unavailable(_))
    ));
}

/// A discovery document that names another issuer than the one it was found for, with the
/// key set of `keys_from` (a provider impersonated, or misconfigured).
async fn discovery_naming(
    published_issuer: &str,
    jwks_uri: String,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let doc = json!({"issuer": published_issuer, "jwks_uri": jwks_uri});
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        get(move || async move { axum::Json(doc) }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_not_used() {
    let keys = TestIssuer::start().await;
    let (url, task) =
        discovery_naming("https://elsewhere.example", format!("{}/jwks", keys.url)).await;
    let aud = "https://mcp.example.com/mcp";
    let mut claims = keys.claims("alice", aud);
    claims["iss"] = json!(url);
    let token = mcp_oidc::types::BearerToken::new(keys.rs256(&claims));
    let verifier = |issuer: &str| {
        let mut config = JwtConfig::new(
            issuer,
            KeySource::Discovery(issuer.to_owned()),
            AudiencePolicy::OneOf(vec![aud.into()]),
        );
        config.jwks = JwksSettings {
            max_retry_backoff: Duration::from_millis(200),
            ..JwksSettings::default()
        };
        JwtVerifier::new(config).unwrap()
    };

    let v = verifier(&url);
    let outcome = v.verify(&token).await;
    let Err(mcp_oidc::error::VerifyError::Unavailable(why)) = outcome else {
        panic!("keys from a document naming another issuer were used: {outcome:?}");
    };
    assert!(why.detail.contains("elsewhere.example"), "{}", why.detail);
    task.abort();

    // The same keys through the document of the right issuer verify its tokens.
    let v = verifier(&keys.url);
    let mut claims = keys.claims("alice", aud);
    claims["jti"] = json!("right");
    let right = mcp_oidc::types::BearerToken::new(keys.rs256(&claims));
    assert!(v.verify(&right).await.is_ok());
}

/// A userinfo endpoint answering `status` with `body` to every call.
async fn userinfo_answering(
    status: u16,
    body: serde_json::Value,
) -> (
    mcp_oidc::token::UserinfoVerifier,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = axum::Router::new().route(
        "/userinfo",
        get(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("retry-after", "7")],
                axum::Json(body),
            )
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let verifier = mcp_oidc::token::UserinfoVerifier::new(mcp_oidc::token::UserinfoConfig {
        issuer: "https://idp.example.com".into(),
        discovery_url: "https://idp.example.com".into(),
        endpoint: Some(format!("{url}/userinfo")),
        timeout: Duration::from_secs(2),
    });
    (verifier, task)
}

#[tokio::test]
async fn a_rate_limited_userinfo_endpoint_means_try_later_not_a_bad_token() {
    let token = mcp_oidc::types::BearerToken::new("opaque-token");
    let (verifier, _task) = userinfo_answering(429, json!({"error": "slow down"})).await;
    match verifier.verify(&token).await {
        Err(mcp_oidc::error::VerifyError::Unavailable(u)) => {
            assert_eq!(u.retry_after, Duration::from_secs(7))
        }
        other => panic!("429 from userinfo became {other:?}"),
    }
    let (verifier, _task) = userinfo_answering(401, json!({"error": "invalid_token"})).await;
    assert!(matches!(
        verifier.verify(&token).await,
        Err(mcp_oidc::error::VerifyError::Invalid(
            mcp_oidc::error::InvalidToken::Inactive
        ))
    ));
}

#[tokio::test]
async fn userinfo_naming_another_issuer_is_not_believed() {
    let token = mcp_oidc::types::BearerToken::new("opaque-token");
    let (verifier, _task) =
        userinfo_answering(200, json!({"sub": "alice", "iss": "https://other.example"})).await;
    assert!(matches!(
        verifier.verify(&token).await,
        Err(mcp_oidc::error::VerifyError::Invalid(
            mcp_oidc::error::InvalidToken::WrongIssuer
        ))
    ));
    let (verifier, _task) = userinfo_answering(200, json!({"sub": "alice"})).await;
    let access = verifier.verify(&token).await.unwrap();
    assert_eq!(access.subject(), "alice");
    assert_eq!(access.issuer().as_str(), "https://idp.example.com");
}

#[tokio::test]
async fn a_flood_of_unknown_opaque_tokens_keeps_at_most_the_call_limit_in_flight_at_the_provider() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (now, max) = (in_flight.clone(), peak.clone());
    let app = axum::Router::new().route(
        "/userinfo",
        get(move || {
            let (now, max) = (now.clone(), max.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                axum::Json(json!({"sub": "alice"}))
            }
        }),
    );
    let _server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let verifier = Arc::new(
        mcp_oidc::token::UserinfoVerifier::new(mcp_oidc::token::UserinfoConfig {
            issuer: "https://idp.example.com".into(),
            discovery_url: "https://idp.example.com".into(),
            endpoint: Some(format!("{url}/userinfo")),
            timeout: Duration::from_secs(10),
        })
        .max_concurrent_calls(4),
    );
    let checks = (0..24).map(|i| {
        let v = verifier.clone();
        tokio::spawn(async move {
            v.verify(&mcp_oidc::types::BearerToken::new(format!("token-{i}")))
                .await
        })
    });
    for check in futures::future::join_all(checks).await {
        assert!(
            check.unwrap().is_ok(),
            "waiting calls are served, not refused"
        );
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "four calls at once, never more"
    );

    // A provider too slow to free a slot within the call timeout: 503, not a pile-up.
    let hurried = mcp_oidc::token::UserinfoVerifier::new(mcp_oidc::token::UserinfoConfig {
        issuer: "https://idp.example.com".into(),
        discovery_url: "https://idp.example.com".into(),
        endpoint: Some(format!("{url}/userinfo")),
        timeout: Duration::from_millis(200),
    })
    .max_concurrent_calls(1);
    let hurried = Arc::new(hurried);
    let checks = (0..4).map(|i| {
        let v = hurried.clone();
        tokio::spawn(async move {
            v.verify(&mcp_oidc::types::BearerToken::new(format!("t-{i}")))
                .await
        })
    });
    let outcomes = futures::future::join_all(checks).await;
    assert!(
        outcomes.iter().any(|o| matches!(
            o.as_ref().unwrap(),
            Err(mcp_oidc::error::VerifyError::Unavailable(_))
        )),
        "the calls beyond the limit that cannot get a slot in time are answered 503"
    );
}
