//! Client ID Metadata Documents fetched over real HTTP from a server on loopback: the happy
//! path (with `allow_private_networks`, the only way to reach loopback), the SSRF guard, and
//! every refusal the fetcher makes on the wire.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcp_oidc::proxy::cimd::{CimdConfig, CimdFetcher};

/// How long `/slow/...` takes to answer: far beyond any time limit used here.
const SLOW: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Docs {
    /// `http://127.0.0.1:PORT`
    base: Arc<Mutex<String>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Docs {
    fn hits(&self, name: &str) -> usize {
        self.hits
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().expect("lock").values().sum()
    }
}

fn document(client_id: &str) -> serde_json::Value {
    serde_json::json!({
        "client_id": client_id,
        "client_name": "Test Client",
        "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    })
}

fn json(body: impl Into<Body>, extra: &[(header::HeaderName, &str)]) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    for (name, value) in extra {
        if let Ok(value) = header::HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}

/// One handler for every document; what it serves depends on the name. Documents name the
/// URL they were requested at (by the `Host` header), as a real client's document would.
async fn serve(State(docs): State<Docs>, Path(name): Path<String>, h: HeaderMap) -> Response {
    *docs
        .hits
        .lock()
        .expect("lock")
        .entry(name.clone())
        .or_default() += 1;
    let base = match h.get(header::HOST).and_then(|v| v.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => docs.base.lock().expect("lock").clone(),
    };
    let own_id = format!("{base}/docs/{name}");
    let body = |id: &str| document(id).to_string();
    match name.as_str() {
        "client.json" => json(body(&own_id), &[]),
        "cached.json" => json(body(&own_id), &[(header::CACHE_CONTROL, "max-age=600")]),
        "no-store.json" => json(body(&own_id), &[(header::CACHE_CONTROL, "no-store")]),
        "redirect.json" => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("{base}/docs/client.json"))],
        )
            .into_response(),
        "slow.json" => {
            tokio::time::sleep(SLOW).await;
            json(body(&own_id), &[])
        }
        "streamed-big.json" => {
            // Chunked, no Content-Length: the limit must hold while reading.
            let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
            json(Body::from_stream(futures::stream::iter(chunks)), &[])
        }
        "declared-big.json" => {
            // A Content-Length over the limit is refused before the body is read.
            json(vec![b' '; 100 * 1024], &[])
        }
        "mismatch.json" => json(body("https://other.example.com/client.json"), &[]),
        "bad-redirects.json" => {
            let mut doc = document(&own_id);
            doc["redirect_uris"] = serde_json::json!(["javascript:alert(document.cookie)"]);
            json(doc.to_string(), &[])
        }
        "secret.json" => {
            let mut doc = document(&own_id);
            doc["token_endpoint_auth_method"] = "client_secret_basic".into();
            json(doc.to_string(), &[])
        }
        "html.json" => ([(header::CONTENT_TYPE, "text/html")], body(&own_id)).into_response(),
        "not-json.json" => json("{\"client_id\": ", &[]),
        "missing.json" => (StatusCode::NOT_FOUND, "no such client").into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start() -> (Docs, SocketAddr) {
    let docs = Docs {
        base: Arc::new(Mutex::new(String::new())),
        hits: Arc::new(Mutex::new(HashMap::new())),
    };
    let app = Router::new()
        .route("/docs/{name}", get(serve))
        .with_state(docs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    *docs.base.lock().expect("lock") = format!("http://{addr}");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (docs, addr)
}

fn dev_config() -> CimdConfig {
    CimdConfig {
        allow_private_networks: true,
        ..CimdConfig::default()
    }
}

fn message(result: Result<mcp_oidc::proxy::cimd::ClientMetadataDocument, impl ToString>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(d) => panic!("the document should be refused: {d:?}"),
    }
}

#[tokio::test]
async fn document_is_fetched_and_validated_when_private_networks_are_allowed() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/client.json");
    let doc = fetcher.fetch(&id).await.expect("document");
    assert_eq!(doc.client_id, id);
    assert_eq!(doc.client_name.as_deref(), Some("Test Client"));
    assert_eq!(doc.redirect_uris.len(), 2);
    assert_eq!(doc.token_endpoint_auth_method.as_deref(), Some("none"));
    assert_eq!(docs.hits("client.json"), 1);
}

#[tokio::test]
async fn a_host_name_is_connected_to_at_its_vetted_addresses() {
    // `localhost` is resolved by the fetcher, and the connection is pinned to the result.
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://localhost:{}/docs/client.json", addr.port());
    let doc = fetcher.fetch(&id).await.expect("document");
    assert_eq!(doc.client_id, id);
    assert_eq!(docs.hits("client.json"), 1);
}

#[tokio::test]
async fn loopback_ip_is_refused_with_the_guard_on() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(CimdConfig::default());
    let https = format!("https://127.0.0.1:{}/docs/client.json", addr.port());
    assert!(message(fetcher.fetch(&https).await).contains("non-public address"));
    let http = format!("http://{addr}/docs/client.json");
    assert!(message(fetcher.fetch(&http).await).contains("https"));
    assert_eq!(docs.total_hits(), 0, "nothing may reach the server");
}

#[tokio::test]
async fn host_name_resolving_to_loopback_is_refused_with_the_guard_on() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(CimdConfig::default());
    assert!(
        message(fetcher.fetch("https://localhost/docs/client.json").await)
            .contains("non-public address")
    );
    let with_port = format!("https://localhost:{}/docs/client.json", addr.port());
    assert!(message(fetcher.fetch(&with_port).await).contains("non-public address"));
    assert_eq!(docs.total_hits(), 0, "nothing may reach the server");
}

#[tokio::test]
async fn private_link_local_and_mapped_addresses_are_refused_without_connecting() {
    let fetcher = CimdFetcher::new(CimdConfig {
        // Should anything try to connect, it would fail fast rather than hang.
        timeout: Duration::from_secs(2),
        ..CimdConfig::default()
    });
    for id in [
        "https://10.0.0.1/client.json",
        "https://192.168.1.1/client.json",
        "https://172.16.0.1/client.json",
        "https://100.64.0.1/client.json",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0/client.json",
        "https://[::1]/client.json",
        "https://[fd00::1]/client.json",
        "https://[fe80::1]/client.json",
        "https://[::ffff:7f00:1]/client.json",
        "https://[64:ff9b::a00:1]/client.json",
    ] {
        let started = Instant::now();
        let why = message(fetcher.fetch(id).await);
        assert!(why.contains("non-public address"), "{id}: {why}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{id} must not be contacted"
        );
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/redirect.json");
    let why = message(fetcher.fetch(&id).await);
    assert!(why.contains("redirect (HTTP 302)"), "{why}");
    assert_eq!(
        docs.hits("client.json"),
        0,
        "the redirect target is never fetched"
    );
}

#[tokio::test]
async fn slow_server_times_out_within_the_limit() {
    let (_docs, addr) = start().await;
    let timeout = Duration::from_millis(400);
    let fetcher = CimdFetcher::new(CimdConfig {
        timeout,
        ..dev_config()
    });
    let id = format!("http://{addr}/docs/slow.json");
    let started = Instant::now();
    let why = message(fetcher.fetch(&id).await);
    let elapsed = started.elapsed();
    assert!(why.contains("not fetched within 400 ms"), "{why}");
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test]
async fn streamed_document_over_the_size_limit_is_refused() {
    let (_docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/streamed-big.json");
    assert!(message(fetcher.fetch(&id).await).contains("larger than 5120 bytes"));
}

#[tokio::test]
async fn declared_content_length_over_the_limit_is_refused() {
    let (_docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/declared-big.json");
    assert!(message(fetcher.fetch(&id).await).contains("larger than 5120 bytes"));
}

#[tokio::test]
async fn document_naming_another_client_id_is_refused() {
    let (_docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/mismatch.json");
    assert!(message(fetcher.fetch(&id).await).contains("does not equal the URL"));
}

#[tokio::test]
async fn document_with_a_dangerous_redirect_uri_is_refused() {
    let (_docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/bad-redirects.json");
    let why = message(fetcher.fetch(&id).await);
    assert!(
        why.contains("redirect_uris[0]") && why.contains("javascript"),
        "{why}"
    );
}

#[tokio::test]
async fn document_asking_for_a_client_secret_is_refused() {
    let (_docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/secret.json");
    assert!(message(fetcher.fetch(&id).await).contains("token_endpoint_auth_method"));
}

#[tokio::test]
async fn non_json_content_type_and_bad_json_are_refused() {
    let (_docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let html = format!("http://{addr}/docs/html.json");
    assert!(message(fetcher.fetch(&html).await).contains("not served as JSON"));
    let broken = format!("http://{addr}/docs/not-json.json");
    assert!(message(fetcher.fetch(&broken).await).contains("not valid JSON"));
    let missing = format!("http://{addr}/docs/missing.json");
    assert!(message(fetcher.fetch(&missing).await).contains("HTTP 404"));
}

#[tokio::test]
async fn successful_fetch_is_cached() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/cached.json");
    let first = fetcher.fetch(&id).await.expect("document");
    let second = fetcher.clone().fetch(&id).await.expect("document");
    assert_eq!(first, second);
    assert_eq!(
        docs.hits("cached.json"),
        1,
        "the second fetch comes from the cache"
    );
}

#[tokio::test]
async fn concurrent_fetches_of_one_client_share_one_request() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/client.json");
    let all = futures::future::join_all((0..8).map(|_| fetcher.fetch(&id))).await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(docs.hits("client.json"), 1);
}

#[tokio::test]
async fn no_store_document_is_fetched_every_time() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/no-store.json");
    fetcher.fetch(&id).await.expect("document");
    fetcher.fetch(&id).await.expect("document");
    assert_eq!(docs.hits("no-store.json"), 2);
}

#[tokio::test]
async fn failed_fetch_is_cached_briefly() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    let id = format!("http://{addr}/docs/missing.json");
    let first = message(fetcher.fetch(&id).await);
    let second = message(fetcher.fetch(&id).await);
    assert_eq!(first, second);
    assert_eq!(
        docs.hits("missing.json"),
        1,
        "a failure is not retried at once"
    );
}

#[tokio::test]
async fn invalid_client_id_is_refused_without_any_request() {
    let (docs, addr) = start().await;
    let fetcher = CimdFetcher::new(dev_config());
    for id in [
        format!("http://{addr}/docs/client.json#frag"),
        format!("http://user@{addr}/docs/client.json"),
        format!("http://{addr}/docs/../docs/client.json"),
        format!("http://{addr}/"),
        format!("ftp://{addr}/docs/client.json"),
    ] {
        assert!(message(fetcher.fetch(&id).await).contains("client_id is not an acceptable URL"));
    }
    assert_eq!(docs.total_hits(), 0);
}
