//! The OAuth proxy end to end on loopback: the upstream is the built-in mock provider, the
//! MCP client is rmcp's, and a scripted browser answers the consent and login pages.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use mcp_oidc::store::testing::{Op, TestStore};
use mcp_oidc_cli::browser::{Browser, Person};
use mcp_oidc_cli::config::Settings;
use mcp_oidc_mock::{MockConfig, MockProvider, RunningMock};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

mod common;

use common::*;

struct Stack {
    idp_issuer: String,
    _idp: Option<RunningMock>,
    base: String,
    mcp: String,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

fn proxy_settings(issuer: &str, port: u16, state: Option<&Path>) -> Settings {
    Settings {
        issuer: Some(issuer.to_owned()),
        bind: Some(format!("127.0.0.1:{port}")),
        upstream_client_id: Some("proxy-client".into()),
        upstream_client_secret: Some("proxy-client-secret".into()),
        proxy_secret: Some("a-test-proxy-secret-that-is-long-enough-0123456789".into()),
        store: Some(if state.is_some() { "sqlite" } else { "memory" }.into()),
        state_dir: state.map(Path::to_path_buf),
        ..Settings::default()
    }
}

async fn serve(settings: Settings) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let bind = settings.bind.clone().unwrap();
    let listener = tokio::net::TcpListener::bind(&bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = serve_in_background(settings, listener);
    (format!("http://localhost:{port}"), task)
}

async fn stack() -> Stack {
    stack_with(|_| {}).await
}

/// [`stack`] with the proxy's configuration changed by `edit`.
async fn stack_with(edit: impl FnOnce(&mut Settings)) -> Stack {
    let idp = start_idp().await;
    let mut settings = proxy_settings(&idp.issuer(), free_port(), None);
    edit(&mut settings);
    let (base, server) = serve(settings).await;
    Stack {
        idp_issuer: idp.issuer(),
        _idp: Some(idp),
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    }
}

async fn register(base: &str, extra: Value) -> Value {
    let mut body = json!({
        "client_name": "Test Client",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = reqwest::Client::new()
        .post(format!("{base}/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "registration");
    r.json().await.unwrap()
}

fn person() -> Person {
    Person {
        user: "testuser".into(),
        approve: true,
        remember: false,
    }
}

/// An HTTP client that follows no redirects, to play a browser step by step.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A [`stack`], a client registered with it, and an HTTP client that follows no redirects
/// (to play a browser step by step).
async fn stack_with_client() -> (Stack, String, reqwest::Client) {
    let s = stack().await;
    let client = register(&s.base, json!({})).await;
    let id = client["client_id"].as_str().unwrap().to_owned();
    let http = no_redirects();
    (s, id, http)
}

/// Registers a client and walks the whole flow; returns (client_id, code, pkce).
async fn code_for(s: &Stack) -> (String, String, Pkce) {
    code_for_pkce(s, pkce()).await
}

/// Like [`code_for`], with the client's own PKCE pair.
async fn code_for_pkce(s: &Stack, p: Pkce) -> (String, String, Pkce) {
    let client = register(&s.base, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let code = sign_in(s, &client_id, &p).await;
    (client_id, code, p)
}

/// Walks a browser through the sign-in of the client `client_id`; returns the code.
async fn sign_in(s: &Stack, client_id: &str, p: &Pkce) -> String {
    let mut browser = Browser::new();
    let back = browser
        .sign_in(
            &authorize_url(&s.base, client_id, &p.challenge),
            REDIRECT,
            &person(),
        )
        .await
        .unwrap();
    assert_eq!(
        back.params.get("state").map(String::as_str),
        Some("client-state")
    );
    assert_eq!(back.params.get("iss"), Some(&s.base), "RFC 9207 iss");
    back.params["code"].clone()
}

async fn exchange(s: &Stack, client_id: &str, code: &str, p: &Pkce) -> (u16, Value) {
    token_request(
        &s.base,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", &p.verifier),
            ("resource", &s.mcp),
        ],
    )
    .await
}

async fn whoami(mcp: &str, token: &str) -> Result<Value, String> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(mcp.to_owned()).auth_header(token.to_owned()),
    );
    let client = ClientConfig::default()
        .serve(transport)
        .await
        .map_err(|e| e.to_string())?;
    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .map_err(|e| e.to_string())?;
    let _ = client.cancel().await;
    Ok(result.structured_content.unwrap_or(Value::Null))
}

#[tokio::test]
async fn full_flow_issues_our_token_with_the_upstream_users_claims_and_refresh_rotates() {
    let s = stack().await;
    // Discovery as a client walks it: PRM names us; our metadata advertises S256 and iss.
    let prm: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        s.base
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(prm["authorization_servers"], json!([s.base]));
    let meta: Value = reqwest::get(format!("{}/.well-known/oauth-authorization-server", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], s.base);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);

    let (client_id, code, p) = code_for(&s).await;
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let me = whoami(&s.mcp, access).await.unwrap();
    assert_eq!(me["sub"], "testuser");
    assert_eq!(me["email"], "testuser@example.com");
    assert_eq!(me["name"], "Test User");
    assert_eq!(me["iss"], s.base);
    assert_eq!(me["aud"], json!([s.mcp]));
    assert_eq!(me["client_id"], client_id);

    // A tool reads the user's upstream profile with the upstream token kept server-side.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(s.mcp.clone()).auth_header(access.to_owned()),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let result = client
        .call_tool(CallToolRequestParams::new("upstream_profile"))
        .await
        .unwrap();
    let upstream: Value = serde_json::from_str(&result.content[0].as_text().unwrap().text).unwrap();
    assert_eq!(upstream["sub"], "testuser");
    assert_eq!(upstream["email"], "testuser@example.com");
    let _ = client.cancel().await;
    assert!(
        !tokens.to_string().contains("upstream_access"),
        "the upstream token is never handed out"
    );

    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, fresh) = token_request(
        &s.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    assert_ne!(
        fresh["refresh_token"], tokens["refresh_token"],
        "refresh tokens rotate"
    );
    let me = whoami(&s.mcp, fresh["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(me["sub"], "testuser");
}

#[tokio::test]
async fn unregistered_redirect_uri_gets_an_error_page_and_is_never_followed() {
    let s = stack().await;
    let client = register(&s.base, json!({})).await;
    let p = pkce();
    let url = authorize_url(&s.base, client["client_id"].as_str().unwrap(), &p.challenge)
        .replace("7777%2Fcallback", "7777%2Fother");
    let url = url.replace("127.0.0.1%3A7777", "evil.example");
    let r = no_redirects().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    // Unknown clients likewise.
    let r = no_redirects()
        .get(authorize_url(&s.base, "no-such-client", &p.challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
}

async fn authorize_redirect(url: &str) -> HashMap<String, String> {
    let r = no_redirects().get(url).send().await.unwrap();
    assert_eq!(r.status(), 302, "{url}");
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn missing_or_plain_pkce_and_foreign_resource_are_refused_with_iss() {
    let s = stack().await;
    let client = register(&s.base, json!({})).await;
    let id = client["client_id"].as_str().unwrap();
    let p = pkce();
    let no_pkce =
        authorize_url(&s.base, id, &p.challenge).replace("code_challenge=", "x_challenge=");
    let q = authorize_redirect(&no_pkce).await;
    assert_eq!(q["error"], "invalid_request");
    assert_eq!(q["iss"], s.base);
    assert_eq!(q["state"], "client-state");
    let plain = authorize_url(&s.base, id, &p.challenge)
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    assert_eq!(authorize_redirect(&plain).await["error"], "invalid_request");
    let foreign = authorize_url(&s.base, id, &p.challenge).replace("%2Fmcp", "%2Fother");
    let q = authorize_redirect(&foreign).await;
    assert_eq!(q["error"], "invalid_target");
}

#[tokio::test]
async fn wrong_verifier_code_replay_and_foreign_client_get_invalid_grant() {
    let s = stack().await;
    // Wrong verifier.
    let (client_id, code, _) = code_for(&s).await;
    let wrong = pkce();
    let (status, body) = exchange(&s, &client_id, &code, &wrong).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // A verifier that hashes to the challenge but is shorter than RFC 7636 allows (42
    // characters): a client may not weaken PKCE by choosing a guessable verifier.
    let short = mcp_oidc::types::PkceCodeVerifier::new("s".repeat(42));
    let p = Pkce {
        verifier: short.secret().to_owned(),
        challenge: short.challenge_s256().as_str().to_owned(),
    };
    let (client_id, code, p) = code_for_pkce(&s, p).await;
    let (status, body) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // The same flow with a well-formed verifier of the least allowed length succeeds.
    let ok = mcp_oidc::types::PkceCodeVerifier::new("s".repeat(43));
    let p = Pkce {
        verifier: ok.secret().to_owned(),
        challenge: ok.challenge_s256().as_str().to_owned(),
    };
    let (client_id, code, p) = code_for_pkce(&s, p).await;
    assert_eq!(exchange(&s, &client_id, &code, &p).await.0, 200);

    // Replay: the second use fails and the tokens of the first are revoked.
    let (client_id, code, p) = code_for(&s).await;
    let (status, first) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200);
    let (status, body) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        mcp_status(&s.mcp, first["access_token"].as_str().unwrap()).await,
        401,
        "revoked after replay"
    );
    let (status, _) = token_request(
        &s.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 400);

    // A code used by another client.
    let (_, code, p) = code_for(&s).await;
    let other = register(&s.base, json!({})).await;
    let (status, body) = exchange(&s, other["client_id"].as_str().unwrap(), &code, &p).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn tampered_state_and_skipped_or_forged_consent_are_refused() {
    let (s, id, http) = stack_with_client().await;

    // A callback with a made-up state.
    let r = http
        .get(format!("{}/auth/callback?code=x&state=forged", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());

    // The consent page, then a POST without its cookie (cross-site) or with a wrong token.
    let p = pkce();
    let page = http
        .get(authorize_url(&s.base, &id, &p.challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let cookie = first_cookie(&page);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Test Client") && html.contains("127.0.0.1:7777"),
        "names the client and its redirect host"
    );
    let field = |name: &str| form_field(&html, name);
    let (txn, csrf) = (field("transaction"), field("csrf_token"));
    let r = http
        .post(format!("{}/consent", s.base))
        .form(&[
            ("transaction", txn.as_str()),
            ("csrf_token", csrf.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no cookie: refused");
    // The transaction was consumed by the refused attempt; start again for the wrong-token case.
    let page = http
        .get(authorize_url(&s.base, &id, &p.challenge))
        .send()
        .await
        .unwrap();
    let cookie2 = first_cookie(&page);
    let html2 = page.text().await.unwrap();
    let txn2 = form_field(&html2, "transaction");
    let r = http
        .post(format!("{}/consent", s.base))
        .header("cookie", &cookie2)
        .form(&[
            ("transaction", txn2.as_str()),
            ("csrf_token", "wrong"),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "wrong CSRF token: refused");
    // The right token, but the cookie of another authorization (the first page's).
    let page = http
        .get(authorize_url(&s.base, &id, &p.challenge))
        .send()
        .await
        .unwrap();
    let html3 = page.text().await.unwrap();
    let r = http
        .post(format!("{}/consent", s.base))
        .header("cookie", &cookie)
        .form(&[
            ("transaction", form_field(&html3, "transaction").as_str()),
            ("csrf_token", form_field(&html3, "csrf_token").as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another authorization's cookie: refused");
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_family_but_a_concurrent_duplicate_is_tolerated() {
    let grace = Duration::from_millis(500);
    let s = stack_tweaked(|c| c.refresh_grace = grace).await;
    let (client_id, code, p) = code_for(&s).await;
    let (_, tokens) = exchange(&s, &client_id, &code, &p).await;
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Two concurrent refreshes with the same token: both succeed, each with its own pair.
    let (a, b) = tokio::join!(refresh(&s, &client_id, &rt), refresh(&s, &client_id, &rt));
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
    assert_ne!(a.1["refresh_token"], b.1["refresh_token"]);
    // Within the window a late duplicate is still tolerated.
    let (status, c) = refresh(&s, &client_id, &rt).await;
    assert_eq!(status, 200, "{c}");

    // A reuse after the grace window revokes everything the token led to.
    tokio::time::sleep(grace * 2).await;
    let (status, body) = refresh(&s, &client_id, &rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    for issued in [&a.1, &b.1, &c] {
        let (status, body) =
            refresh(&s, &client_id, issued["refresh_token"].as_str().unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "the newest refresh tokens of the family are revoked too: {body}"
        );
        assert_eq!(
            mcp_status(&s.mcp, issued["access_token"].as_str().unwrap()).await,
            401
        );
    }
    assert_eq!(
        mcp_status(&s.mcp, tokens["access_token"].as_str().unwrap()).await,
        401
    );
}

#[tokio::test]
async fn with_refresh_grace_secs_0_a_second_use_even_at_once_revokes_the_sign_in() {
    let s = stack_with(|settings| settings.refresh_grace_secs = Some(0)).await;
    let (client_id, code, p) = code_for(&s).await;
    let (_, tokens) = exchange(&s, &client_id, &code, &p).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (status, fresh) = refresh(&s, &client_id, rt).await;
    assert_eq!(status, 200, "{fresh}");
    let (status, body) = refresh(&s, &client_id, rt).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (
            400,
            Some("the refresh token was already used; this sign-in is revoked")
        ),
        "{body}"
    );
    let (status, _) = refresh(&s, &client_id, fresh["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "the family is revoked");
}

#[tokio::test]
async fn the_upstream_providers_own_token_is_refused_at_the_mcp_endpoint() {
    let s = stack().await;
    let http = mcp_oidc_mock::headless::http_client().unwrap();
    let mut req = mcp_oidc_mock::headless::TokenRequest::new(s.idp_issuer.clone(), "testuser");
    req.resource = Some(s.mcp.clone());
    let upstream = mcp_oidc_mock::headless::fetch_token(&http, &req)
        .await
        .unwrap();
    assert_eq!(mcp_status(&s.mcp, &upstream.access_token).await, 401);
}

#[tokio::test]
async fn registrations_and_refresh_tokens_survive_a_restart_with_sqlite() {
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (base, server) = serve(proxy_settings(&idp.issuer(), port, Some(dir.path()))).await;
    let client = register(&base, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    server.abort();
    let _ = server.await;

    // Restarted between registration and login: the flow completes.
    let (base2, server2) = serve(proxy_settings(&idp.issuer(), port, Some(dir.path()))).await;
    assert_eq!(base, base2);
    let mut s = Stack {
        idp_issuer: idp.issuer(),
        _idp: None,
        base: base2.clone(),
        mcp: format!("{base2}/mcp"),
        server: Some(server2),
    };
    let p = pkce();
    let mut browser = Browser::new();
    let back = browser
        .sign_in(
            &authorize_url(&s.base, &client_id, &p.challenge),
            REDIRECT,
            &person(),
        )
        .await
        .unwrap();
    let (status, tokens) = exchange(&s, &client_id, &back.params["code"], &p).await;
    assert_eq!(status, 200, "{tokens}");
    let server = s.server.take().unwrap();
    server.abort();
    let _ = server.await;
    drop(s);

    // Restarted again: the refresh token and the access token still work.
    let (base3, server3) = serve(proxy_settings(&idp.issuer(), port, Some(dir.path()))).await;
    let s = Stack {
        idp_issuer: idp.issuer(),
        _idp: Some(idp),
        base: base3.clone(),
        mcp: format!("{base3}/mcp"),
        server: Some(server3),
    };
    let me = whoami(&s.mcp, tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(me["sub"], "testuser");
    let (status, _) = token_request(
        &s.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn registration_refuses_bad_metadata() {
    let s = stack().await;
    let http = reqwest::Client::new();
    for (body, error) in [
        (
            json!({"redirect_uris": ["javascript:alert(1)"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "client_name": "x".repeat(10_000)}),
            "invalid_client_metadata",
        ),
        (json!("not an object"), "invalid_client_metadata"),
    ] {
        let r = http
            .post(format!("{}/register", s.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], error, "{body}");
    }
}

#[tokio::test]
async fn a_metadata_document_client_id_on_a_loopback_address_is_refused() {
    // A document server on loopback that would happily answer: the SSRF guard must not ask it.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { axum::Json(json!({"client_id": format!("https://localhost:{port}/client.json"), "redirect_uris": [REDIRECT]})) }
        }),
    );
    let docs = tokio::spawn(async move { axum::serve(listener, app).await });

    let s = stack().await;
    let http = no_redirects();
    let p = pkce();
    for client_id in [
        format!("https://localhost:{port}/client.json"),
        format!("https://127.0.0.1:{port}/client.json"),
    ] {
        let r = http
            .get(authorize_url(&s.base, &client_id, &p.challenge))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{client_id}");
        assert!(r.headers().get("location").is_none());
        let page = r.text().await.unwrap();
        assert!(page.contains("Client refused"), "{page}");
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing fetched from loopback"
    );
    docs.abort();
}

#[tokio::test]
async fn a_client_named_by_its_metadata_document_signs_in_with_the_redirect_uris_it_lists() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client_id = format!(
        "http://127.0.0.1:{}/client.json",
        listener.local_addr().unwrap().port()
    );
    let document = json!({
        "client_id": client_id,
        "client_name": "Documented Client",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    });
    let app = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move { axum::Json(document) }
        }),
    );
    let docs = tokio::spawn(async move { axum::serve(listener, app).await });
    // Documents on loopback are for development only, and must be allowed explicitly.
    let s = stack_with(|settings| settings.allow_private_client_metadata = Some(true)).await;
    let http = no_redirects();
    let p = pkce();

    // A redirect URI the document does not list is refused on an error page.
    assert_unlisted_redirect_uri_is_refused(&s, &client_id).await;

    // The consent page names the client as verified by its document.
    let r = http
        .get(authorize_url(&s.base, &client_id, &p.challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Documented Client"), "{page}");
    assert!(page.contains("Its identity is verified"), "{page}");

    // The whole flow, with no registration at all.
    let code = sign_in(&s, &client_id, &p).await;
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let me = whoami(&s.mcp, tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(me["sub"], "testuser");
    docs.abort();
}

#[tokio::test]
async fn a_registration_flood_from_one_address_gets_429_with_retry_after() {
    let s = stack().await;
    let http = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..30 {
        let r = http
            .post(format!("{}/register", s.base))
            .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 201);
    }
    let r = limited.expect("the flood was never limited");
    assert!(retry_after_secs(&r) >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    // Other endpoints have their own budget.
    let meta = http
        .get(format!("{}/.well-known/oauth-authorization-server", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);
}

#[tokio::test]
async fn the_proxy_works_with_the_reference_provider_and_its_opaque_access_tokens() {
    let port = free_port();
    let _python = tokio::process::Command::new(python_mock_program())
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let issuer = format!("http://localhost:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "oidc-provider-mock did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .put(format!("{issuer}/users/testuser"))
        .json(&json!({"email": "testuser@example.com", "name": "Test User"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let (base, server) = serve(proxy_settings(&issuer, free_port(), None)).await;
    let s = Stack {
        idp_issuer: issuer,
        _idp: None,
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    };
    let (client_id, code, p) = code_for(&s).await;
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let me = whoami(&s.mcp, tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(me["sub"], "testuser");
    assert_eq!(me["email"], "testuser@example.com");
    assert_eq!(me["name"], "Test User");
    assert_eq!(me["iss"], s.base);
}

#[tokio::test]
async fn a_locked_database_gives_a_clear_503_and_loses_nothing() {
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let (base, server) = serve(proxy_settings(&idp.issuer(), free_port(), Some(dir.path()))).await;
    let s = Stack {
        idp_issuer: idp.issuer(),
        _idp: Some(idp),
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    };
    let first = register(&s.base, json!({})).await;

    // Another process holds an exclusive lock on the database from before the request goes
    // out until its answer is in: no timing assumption (fixed pauses lost that race on a
    // loaded machine, where the store's busy wait can outlast any guess).
    let db = dir.path().join("mcp-oidc.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        conn.execute_batch("COMMIT").unwrap();
    });
    tokio::task::spawn_blocking(move || locked_rx.recv().unwrap())
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/register", s.base))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    release_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || locker.join().unwrap())
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");

    // Once the lock is gone everything works, and the earlier registration is intact.
    let _second = register(&s.base, json!({})).await;
    let p = pkce();
    let mut browser = Browser::new();
    let back = browser
        .sign_in(
            &authorize_url(&s.base, first["client_id"].as_str().unwrap(), &p.challenge),
            REDIRECT,
            &person(),
        )
        .await
        .unwrap();
    let (status, _) = exchange(
        &s,
        first["client_id"].as_str().unwrap(),
        &back.params["code"],
        &p,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_callback_naming_another_issuer_is_a_mix_up_and_issues_nothing() {
    let (s, id, http) = stack_with_client().await;
    // Another server, and the provider's own name with a slash added: RFC 9207 compares
    // issuers as plain strings.
    let slash = format!("{}/", s.idp_issuer);
    let mut spent = Vec::new();
    for claimed in ["https://evil.example", slash.as_str()] {
        // Consent properly, in one browser...
        let (state, binding) = consent_in_one_browser(&s, &http, &id).await;
        // ...then the response comes back claiming to be from another authorization server.
        let r = http
            .get(callback_url(
                &s.base,
                &[
                    ("code", "attacker-code"),
                    ("state", &state),
                    ("iss", claimed),
                ],
            ))
            .header("cookie", &binding)
            .send()
            .await
            .unwrap();
        let q = back_to_client(&r);
        assert_eq!(q["error"], "access_denied");
        assert_eq!(q["iss"], s.base);
        assert!(!q.contains_key("code"), "no code is issued");
        spent.push((state, binding));
    }
    let (state, binding) = spent.remove(0);
    // The state is spent: replaying the callback is refused outright.
    let r = http
        .get(callback_url(&s.base, &[("code", "x"), ("state", &state)]))
        .header("cookie", &binding)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Opens `/authorize` for `client_id` and approves the consent page in one browser (no
/// redirects followed); returns the state sent to the upstream provider and the browser's
/// binding cookie.
async fn consent_in_one_browser(
    s: &Stack,
    http: &reqwest::Client,
    client_id: &str,
) -> (String, String) {
    let p = pkce();
    let page = http
        .get(authorize_url(&s.base, client_id, &p.challenge))
        .send()
        .await
        .unwrap();
    let cookie = first_cookie(&page);
    let html = page.text().await.unwrap();
    let field = |name: &str| form_field(&html, name);
    let r = http
        .post(format!("{}/consent", s.base))
        .header("cookie", &cookie)
        .form(&[
            ("transaction", field("transaction").as_str()),
            ("csrf_token", field("csrf_token").as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let binding = first_cookie(&r);
    let upstream = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = upstream
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    (state, binding)
}

#[tokio::test]
async fn a_callback_from_another_browser_or_without_the_providers_iss_issues_nothing() {
    let (s, id, http) = stack_with_client().await;

    // Login CSRF: a callback URL opened in a browser that did not give the consent (no
    // binding cookie, or another sign-in's) gets an error page, not a redirect.
    let (_, other_binding) = consent_in_one_browser(&s, &http, &id).await;
    for cookie in [None, Some(other_binding.as_str())] {
        let (state, _) = consent_in_one_browser(&s, &http, &id).await;
        let mut request = http.get(callback_url(
            &s.base,
            &[
                ("code", "some-code"),
                ("state", &state),
                ("iss", &s.idp_issuer),
            ],
        ));
        if let Some(c) = cookie {
            request = request.header("cookie", c);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 403, "{cookie:?}");
        assert!(r.headers().get("location").is_none());
        assert!(r.text().await.unwrap().contains("another browser"));
    }

    // RFC 9207: the provider says it names itself in its responses; one that does not is
    // refused, back to the client with its state.
    let (state, binding) = consent_in_one_browser(&s, &http, &id).await;
    let r = http
        .get(callback_url(
            &s.base,
            &[("code", "some-code"), ("state", &state)],
        ))
        .header("cookie", &binding)
        .send()
        .await
        .unwrap();
    let q = back_to_client(&r);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(
        q["error_description"],
        "the identity provider's response lacks its issuer"
    );
    assert_eq!(q["state"], "client-state");
    assert!(!q.contains_key("code"), "no code is issued");
}

/// The query of the redirect `r` makes to the client's redirect URI (asserting it is one).
fn back_to_client(r: &reqwest::Response) -> HashMap<String, String> {
    assert_eq!(r.status(), 302);
    let back = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(back.as_str().starts_with(REDIRECT), "{back}");
    back.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn callback_url(base: &str, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&format!("{base}/auth/callback")).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// A provider shaped like GitHub: plain OAuth 2.0, no discovery, no ID token, a numeric user
/// id and a `login`, and an authorize endpoint that (for a signed-in user) redirects back at once.
async fn fake_github() -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{Form, Query};
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = axum::Router::new()
        .route(
            "/login/oauth/authorize",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                let mut to = url::Url::parse(&q["redirect_uri"]).unwrap();
                to.query_pairs_mut().append_pair("code", "gh-code").append_pair("state", &q["state"]);
                axum::response::Redirect::to(to.as_str())
            }),
        )
        .route(
            "/login/oauth/access_token",
            post(|Form(f): Form<HashMap<String, String>>| async move {
                assert_eq!(f.get("code").map(String::as_str), Some("gh-code"));
                axum::Json(json!({"access_token": "gho_token", "token_type": "bearer", "scope": "read:user"}))
            }),
        )
        .route(
            "/user",
            get(|headers: axum::http::HeaderMap| async move {
                if headers.get("authorization").map(|v| v.to_str().unwrap()) != Some("Bearer gho_token") {
                    return Err(axum::http::StatusCode::UNAUTHORIZED);
                }
                Ok(axum::Json(json!({"id": 583231, "login": "octocat", "name": "The Octocat", "email": "octocat@github.example"})))
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

#[tokio::test]
async fn a_plain_oauth_provider_like_github_works_through_explicit_endpoints() {
    let (gh, _task) = fake_github().await;
    let port = free_port();
    let mut settings = proxy_settings("https://github.com", port, None);
    settings.upstream_preset = Some("github".into());
    // The preset's real GitHub endpoints, pointed at the loopback stand-in.
    settings.upstream_authorization_endpoint = Some(format!("{gh}/login/oauth/authorize"));
    settings.upstream_token_endpoint = Some(format!("{gh}/login/oauth/access_token"));
    settings.upstream_userinfo_endpoint = Some(format!("{gh}/user"));
    let (base, server) = serve(settings).await;
    let s = Stack {
        idp_issuer: gh,
        _idp: None,
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    };
    let (client_id, code, p) = code_for(&s).await;
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let claims =
        mcp_oidc_mock::headless::unverified_claims(tokens["access_token"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        claims["sub"], "583231",
        "GitHub's numeric id becomes the subject"
    );
    assert_eq!(claims["preferred_username"], "octocat");
    assert_eq!(claims["upstream_iss"], "https://github.com");
    let me = whoami(&s.mcp, tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(me["sub"], "583231");
    assert_eq!(me["name"], "The Octocat");
    assert_eq!(me["email"], "octocat@github.example");
}

#[tokio::test]
async fn remembered_consent_skips_the_page_for_the_same_user_and_client_only() {
    let s = stack_with(|settings| settings.remember_consent = Some(true)).await;
    let client = register(&s.base, json!({})).await;
    let id = client["client_id"].as_str().unwrap().to_owned();
    let consent_posts = |b: &Browser| b.visited.iter().filter(|u| u.ends_with("/consent")).count();

    let mut browser = Browser::new();
    let remember = Person {
        user: "testuser".into(),
        approve: true,
        remember: true,
    };
    let p = pkce();
    browser
        .sign_in(
            &authorize_url(&s.base, &id, &p.challenge),
            REDIRECT,
            &remember,
        )
        .await
        .unwrap();
    assert_eq!(consent_posts(&browser), 1);

    // Same browser, same client: straight to the provider.
    let p = pkce();
    let back = browser
        .sign_in(
            &authorize_url(&s.base, &id, &p.challenge),
            REDIRECT,
            &person(),
        )
        .await
        .unwrap();
    assert_eq!(consent_posts(&browser), 1, "no second consent");
    let (status, _) = exchange(&s, &id, &back.params["code"], &p).await;
    assert_eq!(status, 200);

    // Another client in the same browser still needs consent.
    let other = register(&s.base, json!({})).await;
    let p = pkce();
    browser
        .sign_in(
            &authorize_url(&s.base, other["client_id"].as_str().unwrap(), &p.challenge),
            REDIRECT,
            &person(),
        )
        .await
        .unwrap();
    assert_eq!(consent_posts(&browser), 2);

    // Wider scopes than remembered need consent again.
    let p = pkce();
    browser
        .sign_in(
            &authorize_url(&s.base, &id, &p.challenge).replace(
                "scope=openid+profile+email",
                "scope=openid+profile+email+mcp%3Awrite",
            ),
            REDIRECT,
            &person(),
        )
        .await
        .unwrap();
    assert_eq!(consent_posts(&browser), 3);
}

#[tokio::test]
async fn upstream_tokens_are_refreshed_before_tools_use_them() {
    // Upstream access tokens that live one second: by the time a tool needs one, the
    // proxy must have refreshed it with the upstream refresh token.
    let claims = json!({"email": "testuser@example.com", "name": "Test User"});
    let idp = MockProvider::new(MockConfig {
        users: vec![("testuser".into(), claims.as_object().unwrap().clone())],
        token_max_age: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .unwrap()
    .spawn("127.0.0.1:0")
    .await
    .unwrap();
    let (base, server) = serve(proxy_settings(&idp.issuer(), free_port(), None)).await;
    let s = Stack {
        idp_issuer: idp.issuer(),
        _idp: Some(idp),
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    };
    let (client_id, code, p) = code_for(&s).await;
    let (_, tokens) = exchange(&s, &client_id, &code, &p).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(s.mcp.clone())
            .auth_header(tokens["access_token"].as_str().unwrap().to_owned()),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let result = client
        .call_tool(CallToolRequestParams::new("upstream_profile"))
        .await
        .unwrap();
    let text = &result.content[0].as_text().unwrap().text;
    assert_ne!(result.is_error, Some(true), "{text}");
    let upstream: Value = serde_json::from_str(text).unwrap();
    assert_eq!(upstream["sub"], "testuser");
    let _ = client.cancel().await;
}

/// A form POST to `{base}/revoke`: the status and the JSON body (`Null` if there is none).
async fn revoke_request(base: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/revoke"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_client_cannot_revoke_another_clients_tokens() {
    let s = stack().await;
    let (client_id, code, p) = code_for(&s).await;
    let (_, tokens) = exchange(&s, &client_id, &code, &p).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let other = register(&s.base, json!({})).await;
    let other_id = other["client_id"].as_str().unwrap();
    for token in [refresh, access] {
        let (status, body) =
            revoke_request(&s.base, &[("token", token), ("client_id", other_id)]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("unauthorized_client")),
            "{body}"
        );
    }
    // Nothing was revoked: the owner's tokens still work.
    assert_eq!(mcp_status(&s.mcp, access).await, 200);
    let (status, fresh) = token_request(
        &s.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    // The owner may revoke them; a token nobody knows is still answered 200 (RFC 7009 §2.2).
    let refresh = fresh["refresh_token"].as_str().unwrap();
    let (status, _) =
        revoke_request(&s.base, &[("token", refresh), ("client_id", &client_id)]).await;
    assert_eq!(status, 200);
    let (status, _) = revoke_request(
        &s.base,
        &[("token", "no-such-token"), ("client_id", other_id)],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = token_request(
        &s.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 400, "revoked by its owner");
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_its_next_request_though_it_was_served_before() {
    let s = stack().await;
    // Revoking the access token itself, then the refresh token of another sign-in: each
    // ends its grant, and the access token already verified (and cached) stops working.
    for revoke in ["access_token", "refresh_token"] {
        let (client_id, code, p) = code_for(&s).await;
        let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
        assert_eq!(status, 200, "{tokens}");
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(mcp_status(&s.mcp, access).await, 200);
        assert_eq!(
            mcp_status(&s.mcp, access).await,
            200,
            "served from the cache"
        );
        let token = tokens[revoke].as_str().unwrap();
        let (status, _) =
            revoke_request(&s.base, &[("token", token), ("client_id", &client_id)]).await;
        assert_eq!(status, 200);
        assert_eq!(mcp_status(&s.mcp, access).await, 401, "{revoke} revoked");
    }
}

/// A POST of `form` to `{base}/{endpoint}` with HTTP Basic client credentials: the status,
/// the `WWW-Authenticate` header and the JSON body.
async fn post_with_basic(
    base: &str,
    endpoint: &str,
    (id, secret): (&str, &str),
    form: &[(&str, &str)],
) -> (u16, String, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/{endpoint}"))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        challenge,
        r.json().await.unwrap_or(Value::Null),
    )
}

/// The code exchange of `client_id` for `code`, with `extra` form fields.
fn exchange_form<'a>(
    s: &'a Stack,
    client_id: &'a str,
    code: &'a str,
    p: &'a Pkce,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id),
        ("code_verifier", p.verifier.as_str()),
        ("resource", s.mcp.as_str()),
    ];
    form.extend_from_slice(extra);
    form
}

/// Checks that `client_id` (whose secret is `secret`) is refused at `/token` and `/revoke`
/// without its secret or with a wrong one, and served with it, by form and by Basic.
async fn assert_secret_is_required(s: &Stack, client_id: &str, secret: &str) {
    let p = pkce();
    let code = sign_in(s, client_id, &p).await;
    for extra in [
        vec![],
        vec![("client_secret", "wrong")],
        vec![("client_secret", "")],
    ] {
        let (status, body) =
            token_request(&s.base, &exchange_form(s, client_id, &code, &p, &extra)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{extra:?}: {body}"
        );
    }
    let (status, challenge, body) = post_with_basic(
        &s.base,
        "token",
        (client_id, "wrong"),
        &exchange_form(s, client_id, &code, &p, &[]),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(challenge.starts_with("Basic"), "{challenge}");

    // The refusals did not spend the code.
    let (status, challenge, tokens) = post_with_basic(
        &s.base,
        "token",
        (client_id, secret),
        &exchange_form(s, client_id, &code, &p, &[]),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert!(challenge.is_empty());
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(mcp_status(&s.mcp, access).await, 200);

    // Revocation needs the secret too: without it nothing is revoked.
    for form in [
        vec![("token", refresh), ("client_id", client_id)],
        vec![
            ("token", refresh),
            ("client_id", client_id),
            ("client_secret", "wrong"),
        ],
    ] {
        let (status, body) = revoke_request(&s.base, &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    }
    assert_eq!(mcp_status(&s.mcp, access).await, 200, "nothing revoked");
    let (status, _) = revoke_request(
        &s.base,
        &[
            ("token", refresh),
            ("client_id", client_id),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        mcp_status(&s.mcp, access).await,
        401,
        "revoked with the secret"
    );
}

#[tokio::test]
async fn a_registered_confidential_client_must_present_its_secret_at_token_and_revoke() {
    let s = stack().await;
    let client = register(
        &s.base,
        json!({"token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_post");
    let secret = client["client_secret"].as_str().unwrap();
    assert!(
        secret.len() >= 32,
        "a secret of {} characters",
        secret.len()
    );
    assert_secret_is_required(&s, client["client_id"].as_str().unwrap(), secret).await;
}

#[tokio::test]
async fn a_client_preregistered_in_the_config_file_signs_in_and_must_present_its_secret() {
    let file: Settings = toml::from_str(
        r#"
        [[clients]]
        client_id = "ops-console"
        client_secret = "a-secret-of-the-ops-console-0123456789"
        redirect_uris = ["http://127.0.0.1:7777/callback"]
        name = "Ops console"
        "#,
    )
    .unwrap();
    let s = stack_with(|settings| settings.clients = file.clients).await;
    assert_secret_is_required(&s, "ops-console", "a-secret-of-the-ops-console-0123456789").await;

    // Its redirect URIs are the configured ones: another is refused on an error page.
    assert_unlisted_redirect_uri_is_refused(&s, "ops-console").await;
}

/// An authorization request of `client_id` naming a redirect URI it does not list gets an
/// error page, not a redirect.
async fn assert_unlisted_redirect_uri_is_refused(s: &Stack, client_id: &str) {
    let p = pkce();
    let url =
        authorize_url(&s.base, client_id, &p.challenge).replace("7777%2Fcallback", "7777%2Fother");
    let r = no_redirects().get(url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn an_overlong_state_is_refused_and_the_longest_allowed_is_accepted() {
    let s = stack().await;
    let client = register(&s.base, json!({})).await;
    let id = client["client_id"].as_str().unwrap();
    let p = pkce();
    let with_state = |state: &str| {
        authorize_url(&s.base, id, &p.challenge)
            .replace("state=client-state", &format!("state={state}"))
    };
    let q = authorize_redirect(&with_state(&"s".repeat(2049))).await;
    assert_eq!(q["error"], "invalid_request");
    assert_eq!(q["iss"], s.base);
    let page = no_redirects()
        .get(with_state(&"s".repeat(2048)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the consent page");
}

/// Like [`serve`], with the proxy's settings adjusted by `tweak`: lifetimes and windows
/// shorter than the configuration file allows, so that tests need not wait for them.
async fn serve_tweaked(
    settings: Settings,
    tweak: impl FnOnce(&mut mcp_oidc::proxy::ProxyConfig),
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let bind = settings.bind.clone().unwrap();
    let listener = tokio::net::TcpListener::bind(&bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut resolved = settings.resolve().unwrap();
    tweak(&mut resolved.proxy.as_mut().unwrap().config);
    let task = tokio::spawn(mcp_oidc_cli::run::serve_demo(
        resolved,
        listener,
        std::future::pending(),
    ));
    (format!("http://localhost:{port}"), task)
}

/// [`stack`] with the proxy's settings adjusted by `tweak`.
async fn stack_tweaked(tweak: impl FnOnce(&mut mcp_oidc::proxy::ProxyConfig)) -> Stack {
    let idp = start_idp().await;
    let (base, server) =
        serve_tweaked(proxy_settings(&idp.issuer(), free_port(), None), tweak).await;
    Stack {
        idp_issuer: idp.issuer(),
        _idp: Some(idp),
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    }
}

/// A refresh of `refresh_token` by `client_id` at the proxy.
async fn refresh(s: &Stack, client_id: &str, refresh_token: &str) -> (u16, Value) {
    token_request(
        &s.base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
    )
    .await
}

/// What stands between the proxy and the mock provider's token endpoint: it can be taken
/// down or slowed down, counts the refreshes it is sent, and can make refreshed upstream
/// tokens long-lived.
#[derive(Default)]
struct Relay {
    target: String,
    down: std::sync::atomic::AtomicBool,
    delay_ms: std::sync::atomic::AtomicU64,
    refreshes: std::sync::atomic::AtomicUsize,
    long_lived_refreshes: std::sync::atomic::AtomicBool,
}

impl Relay {
    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
    fn delay_refreshes(&self, by: Duration) {
        self.delay_ms
            .store(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
    fn refreshes(&self) -> usize {
        self.refreshes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn relay_token(
    axum::extract::State(relay): axum::extract::State<std::sync::Arc<Relay>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering::SeqCst;
    let is_refresh =
        url::form_urlencoded::parse(&body).any(|(k, v)| k == "grant_type" && v == "refresh_token");
    if is_refresh {
        relay.refreshes.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(relay.delay_ms.load(SeqCst))).await;
    }
    if relay.down.load(SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let mut request = reqwest::Client::new()
        .post(&relay.target)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_vec());
    if let Some(auth) = headers.get("authorization") {
        request = request.header("authorization", auth.to_str().unwrap());
    }
    let response = request.send().await.unwrap();
    let status = axum::http::StatusCode::from_u16(response.status().as_u16()).unwrap();
    let mut json: Value = response.json().await.unwrap();
    if is_refresh && relay.long_lived_refreshes.load(SeqCst) && status.is_success() {
        json["expires_in"] = json!(3600);
    }
    (status, axum::Json(json)).into_response()
}

/// The proxy in front of a mock provider whose access tokens live one second (so that
/// every refresh at the proxy refreshes upstream too), with its token endpoint behind a
/// [`Relay`].
async fn relayed_stack(
    tweak: impl FnOnce(&mut mcp_oidc::proxy::ProxyConfig),
) -> (Stack, std::sync::Arc<Relay>) {
    let claims = json!({"email": "testuser@example.com", "name": "Test User"});
    let idp = MockProvider::new(MockConfig {
        users: vec![("testuser".into(), claims.as_object().unwrap().clone())],
        token_max_age: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .unwrap()
    .spawn("127.0.0.1:0")
    .await
    .unwrap();
    let meta: Value = reqwest::get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let relay = std::sync::Arc::new(Relay {
        target: meta["token_endpoint"].as_str().unwrap().to_owned(),
        ..Relay::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = axum::Router::new()
        .route("/token", axum::routing::post(relay_token))
        .with_state(relay.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut settings = proxy_settings(&idp.issuer(), free_port(), None);
    let endpoint = |name: &str| Some(meta[name].as_str().unwrap().to_owned());
    settings.upstream_authorization_endpoint = endpoint("authorization_endpoint");
    settings.upstream_token_endpoint = Some(format!("{relay_url}/token"));
    settings.upstream_userinfo_endpoint = endpoint("userinfo_endpoint");
    let (base, server) = serve_tweaked(settings, tweak).await;
    let s = Stack {
        idp_issuer: idp.issuer(),
        _idp: Some(idp),
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    };
    (s, relay)
}

#[tokio::test]
async fn a_refresh_that_fails_on_a_transient_fault_can_be_retried_after_the_grace_window() {
    let grace = Duration::from_millis(200);
    let (s, relay) = relayed_stack(|c| c.refresh_grace = grace).await;
    let (client_id, code, p) = code_for(&s).await;
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();

    // The upstream token has lapsed and the provider is down: nothing can be issued.
    relay.set_down(true);
    let (status, body) = refresh(&s, &client_id, rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    // The client retries later, well after the window that tolerates duplicates.
    tokio::time::sleep(grace * 3).await;
    relay.set_down(false);
    let (status, fresh) = refresh(&s, &client_id, rt).await;
    assert_eq!(status, 200, "the same refresh token still works: {fresh}");
    assert_eq!(mcp_status(&s.mcp, access).await, 200, "nothing was revoked");
    assert_eq!(
        mcp_status(&s.mcp, fresh["access_token"].as_str().unwrap()).await,
        200
    );
}

#[tokio::test]
async fn a_wrong_resource_or_scope_is_refused_without_spending_the_code_or_refresh_token() {
    let grace = Duration::from_millis(200);
    let s = stack_tweaked(|c| c.refresh_grace = grace).await;
    let (client_id, code, p) = code_for(&s).await;
    let (status, body) = token_request(
        &s.base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", &p.verifier),
            ("resource", "https://elsewhere.example/mcp"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "the code was not spent: {tokens}");
    let rt = tokens["refresh_token"].as_str().unwrap();

    for (name, value, error) in [
        (
            "resource",
            "https://elsewhere.example/mcp",
            "invalid_target",
        ),
        ("scope", "openid admin", "invalid_scope"),
    ] {
        let (status, body) = token_request(
            &s.base,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", &client_id),
                (name, value),
            ],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{body}"
        );
    }
    tokio::time::sleep(grace * 3).await;
    let (status, fresh) = refresh(&s, &client_id, rt).await;
    assert_eq!(status, 200, "the refresh token was not spent: {fresh}");
    assert_eq!(
        mcp_status(&s.mcp, tokens["access_token"].as_str().unwrap()).await,
        200
    );
}

#[tokio::test]
async fn a_revocation_during_an_upstream_refresh_is_not_undone_by_it() {
    let (s, relay) = relayed_stack(|_| {}).await;
    let (client_id, code, p) = code_for(&s).await;
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();

    // The refresh waits on the provider while the user signs the client out.
    relay.delay_refreshes(Duration::from_millis(1500));
    let base = s.base.clone();
    let id = client_id.clone();
    let refreshing = tokio::spawn(async move {
        token_request(
            &base,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", &id),
            ],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(relay.refreshes(), 1, "the upstream refresh is under way");
    let r = reqwest::Client::new()
        .post(format!("{}/revoke", s.base))
        .form(&[("token", access.as_str()), ("client_id", &client_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (status, body) = refreshing.await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(mcp_status(&s.mcp, &access).await, 401, "still revoked");
}

#[tokio::test]
async fn concurrent_refreshes_of_one_sign_in_refresh_upstream_once() {
    let (s, relay) = relayed_stack(|_| {}).await;
    let (client_id, code, p) = code_for(&s).await;
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let rt = tokens["refresh_token"].as_str().unwrap();
    // The first refresh brings an upstream token that lasts: the second has no need of one.
    relay
        .long_lived_refreshes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    relay.delay_refreshes(Duration::from_millis(500));
    let (a, b) = tokio::join!(refresh(&s, &client_id, rt), refresh(&s, &client_id, rt));
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
    assert_eq!(
        relay.refreshes(),
        1,
        "one upstream refresh token is sent once"
    );
}

#[tokio::test]
async fn a_sign_in_in_use_outlives_the_refresh_token_lifetime() {
    let ttl = Duration::from_secs(3);
    let s = stack_tweaked(|c| c.refresh_token_ttl = ttl).await;
    let (client_id, code, p) = code_for(&s).await;
    let (status, mut tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    // Refreshed every third of the lifetime, for twice the lifetime.
    for i in 0..6 {
        tokio::time::sleep(ttl / 3).await;
        let (status, fresh) =
            refresh(&s, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(status, 200, "refresh {i}: {fresh}");
        tokens = fresh;
    }
    // Unused for longer than the lifetime, it ends.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let (status, _) = refresh(&s, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_store_failure_while_issuing_leaves_the_code_and_the_refresh_token_usable() {
    use mcp_oidc::store::Namespace;
    let grace = Duration::from_millis(200);
    let idp = start_idp().await;
    let port = free_port();
    let mut config = proxy_settings(&idp.issuer(), port, None)
        .resolve()
        .unwrap()
        .proxy
        .unwrap()
        .config;
    config.refresh_grace = grace;
    let store = std::sync::Arc::new(TestStore::default());
    let proxy = mcp_oidc::proxy::OAuthProxy::new(config, store.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(mcp_oidc::serve(
        listener,
        proxy.router(),
        std::future::pending(),
    ));
    let base = format!("http://localhost:{port}");
    let s = Stack {
        idp_issuer: idp.issuer(),
        _idp: Some(idp),
        mcp: format!("{base}/mcp"),
        base,
        server: Some(server),
    };
    let (client_id, code, p) = code_for(&s).await;

    // The new refresh token cannot be stored: nothing is issued, and the code is not spent.
    store.fail_next(Op::Put(Namespace::RefreshTokens), 1);
    let (status, body) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    let (status, tokens) = exchange(&s, &client_id, &code, &p).await;
    assert_eq!(status, 200, "the retry is not a replay: {tokens}");

    // Likewise for a refresh, retried after the grace window.
    let rt = tokens["refresh_token"].as_str().unwrap();
    store.fail_next(Op::Put(Namespace::RefreshTokens), 1);
    let (status, body) = refresh(&s, &client_id, rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    tokio::time::sleep(grace * 3).await;
    let (status, fresh) = refresh(&s, &client_id, rt).await;
    assert_eq!(status, 200, "the retry is not a reuse: {fresh}");
}

/// Verifies an ID token with the proxy's published keys; its header and claims.
async fn verified_id_token(
    base: &str,
    token: &str,
    client_id: &str,
) -> (jsonwebtoken::Header, Value) {
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{base}/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let key = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[client_id]);
    validation.set_issuer(&[base]);
    let data = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(key).unwrap(),
        &validation,
    )
    .unwrap();
    (header, data.claims)
}

#[tokio::test]
async fn openid_scope_brings_an_id_token_for_the_client_with_its_nonce() {
    let s = stack().await;
    let meta: Value = reqwest::get(format!("{}/.well-known/openid-configuration", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );

    let client = register(&s.base, json!({})).await;
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let p = pkce();
    let url = format!(
        "{}&nonce=n-0S6_WzA2Mj",
        authorize_url(&s.base, &client_id, &p.challenge)
    );
    let back = Browser::new()
        .sign_in(&url, REDIRECT, &person())
        .await
        .unwrap();
    let (status, body) = exchange(&s, &client_id, &back.params["code"], &p).await;
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().expect("an ID token for openid");
    let (header, claims) = verified_id_token(&s.base, id_token, &client_id).await;
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["azp"], client_id.as_str());
    assert_eq!(claims["sub"], "testuser");
    assert!(claims["auth_time"].as_u64().unwrap() <= claims["iat"].as_u64().unwrap());
    assert!(
        claims["email"].is_string(),
        "email released by the email scope: {claims}"
    );
    // An ID token is for the client, never a key to the MCP endpoint.
    assert!(whoami(&s.mcp, id_token).await.is_err());
    assert!(
        whoami(&s.mcp, body["access_token"].as_str().unwrap())
            .await
            .is_ok()
    );

    // A refresh brings a fresh ID token for the same sign-in, without the nonce.
    let (status, refreshed) =
        refresh(&s, &client_id, body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    let (_, again) =
        verified_id_token(&s.base, refreshed["id_token"].as_str().unwrap(), &client_id).await;
    assert_eq!(again["sub"], claims["sub"]);
    assert_eq!(again["auth_time"], claims["auth_time"]);
    assert!(again.get("nonce").is_none());

    // Without `openid`, no ID token.
    let p = pkce();
    let url = authorize_url(&s.base, &client_id, &p.challenge)
        .replace("scope=openid+profile+email", "scope=profile");
    let back = Browser::new()
        .sign_in(&url, REDIRECT, &person())
        .await
        .unwrap();
    let (status, body) = exchange(&s, &client_id, &back.params["code"], &p).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
}

#[tokio::test]
async fn an_authorization_request_repeating_a_parameter_gets_an_error_page_and_no_redirect() {
    let s = stack().await;
    let client = register(&s.base, json!({})).await;
    let id = client["client_id"].as_str().unwrap();
    let p = pkce();
    let no_redirects = no_redirects();
    let url = authorize_url(&s.base, id, &p.challenge);
    for extra in [
        "&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        "&client_id=someone-else",
        "&scope=openid",
    ] {
        let r = no_redirects
            .get(format!("{url}{extra}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{extra}");
        assert!(r.headers().get("location").is_none(), "{extra}");
        assert!(r.text().await.unwrap().contains("repeated"), "{extra}");
    }
    let r = no_redirects.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "the same request without the repetition");
}

#[tokio::test]
async fn two_sign_ins_at_once_in_one_browser_both_pass_the_consent_page() {
    let s = stack().await;
    let client = register(&s.base, json!({})).await;
    let id = client["client_id"].as_str().unwrap();
    let http = no_redirects();
    // The browser's cookie jar: a cookie replaces the one of the same name.
    let mut jar: HashMap<String, String> = HashMap::new();
    let mut pages = Vec::new();
    for _ in 0..2 {
        let p = pkce();
        let page = http
            .get(authorize_url(&s.base, id, &p.challenge))
            .send()
            .await
            .unwrap();
        let (name, value) = first_cookie(&page)
            .split_once('=')
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .unwrap();
        jar.insert(name, value);
        pages.push(page.text().await.unwrap());
    }
    let cookies = jar
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    // Both consent pages are still open: approving either must work.
    for html in &pages {
        let r = http
            .post(format!("{}/consent", s.base))
            .header("cookie", &cookies)
            .form(&[
                ("transaction", form_field(html, "transaction").as_str()),
                ("csrf_token", form_field(html, "csrf_token").as_str()),
                ("decision", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
        let location = r.headers()["location"].to_str().unwrap();
        assert!(location.starts_with(&s.idp_issuer), "{location}");
    }
}
