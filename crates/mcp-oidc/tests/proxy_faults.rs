//! The proxy's token endpoint on loopback while what it depends on fails: its store, or the
//! host of a client's metadata document. A fault on our side is a 503
//! `temporarily_unavailable` that the client retries, never an `invalid_client` that makes
//! it throw its registration away.

use std::sync::Arc;
use std::time::Duration;

use mcp_oidc::proxy::{OAuthProxy, ProxyConfig, UpstreamConfig};
use mcp_oidc::store::testing::TestStore;
use mcp_oidc::store::{MemoryStore, Store};
use mcp_oidc::types::ClientSecret;
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// Serves `app` on a free loopback port until the test ends; returns its base URL.
async fn spawn(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(mcp_oidc::serve(listener, app, std::future::pending()));
    base
}

/// The proxy alone (its upstream is never contacted here), on `store`.
async fn proxy_on(store: Arc<dyn Store>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let upstream = UpstreamConfig {
        discovery_url: "http://127.0.0.1:9".into(),
        client_id: "proxy-client".into(),
        client_secret: ClientSecret::new("proxy-client-secret"),
        scopes: vec!["openid".into()],
        extra_authorize_params: Vec::new(),
        auth_method: Default::default(),
        use_userinfo: false,
        timeout: Duration::from_secs(2),
        endpoints: None,
        subject_claim: None,
    };
    let mut config = ProxyConfig::new(
        &base,
        &format!("{base}/mcp"),
        upstream,
        ClientSecret::new("a-test-proxy-secret-that-is-long-enough-0123456789"),
    );
    if let Some(cimd) = config.cimd.as_mut() {
        cimd.allow_private_networks = true;
        cimd.timeout = Duration::from_secs(2);
    }
    let proxy = OAuthProxy::new(config, store).await.unwrap();
    tokio::spawn(mcp_oidc::serve(
        listener,
        proxy.router(),
        std::future::pending(),
    ));
    base
}

/// A refresh request by `client_id` with a token the proxy never issued.
async fn token_request(base: &str, client_id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "never-issued"),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap()
}

async fn assert_unavailable(r: reqwest::Response) {
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_failing_store_at_the_token_endpoint_is_503_not_invalid_client() {
    let store = Arc::new(TestStore::default());
    let base = proxy_on(store.clone()).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let client: Value = r.json().await.unwrap();
    let client_id = client["client_id"].as_str().unwrap();

    store.fail_all();
    assert_unavailable(token_request(&base, client_id).await).await;

    // Once the store is back, the same client authenticates: only the token is unknown.
    store.heal();
    assert_eq!(
        error_of(token_request(&base, client_id).await).await,
        (400, "invalid_grant".to_owned())
    );
    assert_eq!(
        error_of(token_request(&base, "no-such-client").await).await,
        (401, "invalid_client".to_owned())
    );
}

#[tokio::test]
async fn an_unreachable_metadata_document_is_503_and_a_missing_one_invalid_client() {
    let base = proxy_on(Arc::new(MemoryStore::new())).await;
    // A port nobody listens on: the document's host is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let unreachable = format!("http://127.0.0.1:{dead_port}/client.json");
    assert_unavailable(token_request(&base, &unreachable).await).await;

    // A host that answers, but has no such document: the client id is simply wrong.
    let docs =
        spawn(axum::Router::new().fallback(|| async { axum::http::StatusCode::NOT_FOUND })).await;
    assert_eq!(
        error_of(token_request(&base, &format!("{docs}/client.json")).await).await,
        (401, "invalid_client".to_owned())
    );
}
