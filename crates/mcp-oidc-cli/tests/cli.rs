//! The `mcp-oidc` binary end to end: `dev`, `token`, `serve` and `check` as a user runs them,
//! against our mock provider and the Python reference `oidc-provider-mock`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mcp_oidc_cli::config::Settings;
use mcp_oidc_mock::headless::{self, TokenRequest};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-oidc");

async fn whoami(mcp_url: &str, token: &str) -> Value {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(mcp_url.to_owned())
            .auth_header(token.to_owned()),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    client.cancel().await.unwrap();
    let me = result
        .structured_content
        .expect("whoami returns structured output");

    // The answer is what `tools/list` announces, and clients that read only text get the
    // same JSON.
    let schema = tools
        .iter()
        .find(|t| t.name == "whoami")
        .and_then(|t| t.output_schema.clone())
        .expect("whoami announces an output schema");
    let announced: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let answered: Vec<&String> = me.as_object().unwrap().keys().collect();
    assert_eq!(announced, answered);
    for (field, value) in me.as_object().unwrap() {
        let kind = match value {
            Value::Null => "null",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Number(_) => "integer",
            _ => "other",
        };
        let allowed = &schema["properties"][field]["type"];
        assert!(
            allowed == kind || allowed.as_array().is_some_and(|a| a.contains(&json!(kind))),
            "{field}: {value} is not {allowed}"
        );
    }
    let text = result.content[0]
        .as_text()
        .expect("a text block")
        .text
        .clone();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), me);
    me
}

/// Reads the `dev` banner until both URLs are known.
/// Runs `mcp-oidc serve` with `env`, which must fail at startup; its stderr.
async fn serve_refuses_config(env: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn dev_urls(stdout: tokio::process::ChildStdout) -> (String, String) {
    let mut lines = BufReader::new(stdout).lines();
    let (mut mcp, mut idp) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while mcp.is_none() || idp.is_none() {
        assert!(Instant::now() < deadline, "no banner from mcp-oidc dev");
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("banner in time")
            .unwrap()
            .expect("dev exited before printing its banner");
        let url = line.split_whitespace().find(|w| w.starts_with("http://"));
        if line.trim_start().starts_with("MCP server") {
            mcp = url.map(str::to_owned);
        } else if line.trim_start().starts_with("OpenID provider") {
            idp = url.map(str::to_owned);
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (mcp.unwrap(), idp.unwrap())
}

#[tokio::test]
async fn dev_serves_a_token_from_the_token_command_and_stops_cleanly_on_sigterm() {
    let mut dev = tokio::process::Command::new(BIN)
        .args(["dev", "--port", "0", "--idp-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mcp_url, issuer) = dev_urls(dev.stdout.take().unwrap()).await;

    let out = tokio::process::Command::new(BIN)
        .args(["token", "--user", "testuser", "--server", &mcp_url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.matches('.').count(), 2, "a JWT access token");

    // In proxy mode (the default) the token is the server's own, naming the upstream user.
    let me = whoami(&mcp_url, &token).await;
    assert_eq!(me["sub"], "testuser");
    assert_eq!(me["email"], "testuser@example.com");
    assert_eq!(me["name"], "Test User");
    assert_eq!(me["iss"], mcp_url.trim_end_matches("/mcp"));
    assert_eq!(me["aud"], json!([mcp_url]));
    assert!(issuer.starts_with("http://localhost:"));

    // Unauthenticated requests are refused with the discovery challenge.
    let r = reqwest::Client::new()
        .post(&mcp_url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let pid = dev.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), dev.wait())
        .await
        .expect("dev stops within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "dev exited with {status}");
}

#[tokio::test]
async fn serve_verifies_the_reference_providers_opaque_tokens_with_userinfo() {
    // The seed's exact setup: oidc-provider-mock on a port, testuser created with PUT.
    let port = free_port();
    let _python = tokio::process::Command::new(python_mock_program())
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let issuer = format!("http://localhost:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
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

    let flow = headless::http_client().unwrap();
    let mut request = TokenRequest::new(&issuer, "testuser");
    request.client_secret = Some("any-secret".into());
    let token = headless::fetch_token(&flow, &request).await.unwrap();
    assert_eq!(
        token.access_token.matches('.').count(),
        0,
        "the reference issues opaque tokens"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mcp_port = listener.local_addr().unwrap().port();
    let settings = Settings {
        issuer: Some(issuer.clone()),
        token_validation: Some("userinfo".into()),
        bind: Some(format!("127.0.0.1:{mcp_port}")),
        ..Settings::default()
    };
    let server = serve_in_background(settings, listener);

    let me = whoami(
        &format!("http://localhost:{mcp_port}/mcp"),
        &token.access_token,
    )
    .await;
    assert_eq!(me["sub"], "testuser");
    assert_eq!(me["email"], "testuser@example.com");
    assert_eq!(me["name"], "Test User");
    assert_eq!(me["iss"], issuer);
    server.abort();
}

#[tokio::test]
async fn dev_direct_mode_accepts_the_providers_own_tokens() {
    let mut dev = tokio::process::Command::new(BIN)
        .args(["dev", "--direct", "--port", "0", "--idp-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mcp_url, issuer) = dev_urls(dev.stdout.take().unwrap()).await;
    let out = tokio::process::Command::new(BIN)
        .args(["token", "--user", "testuser", "--server", &mcp_url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let me = whoami(&mcp_url, &token).await;
    assert_eq!(me["sub"], "testuser");
    assert_eq!(me["iss"], issuer, "issued by the provider itself");
    assert_eq!(me["aud"], json!([mcp_url]));
}

#[tokio::test]
async fn a_wrong_config_fails_at_startup_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mcp-oidc.toml");
    std::fs::write(&file, "isuer = \"http://localhost:9400\"\n").unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("MCP_OIDC_ISSUER")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`isuer`"), "{err}");

    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env_remove("MCP_OIDC_ISSUER")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`issuer`") && err.contains("MCP_OIDC_ISSUER") && err.contains("--issuer"),
        "{err}"
    );

    // Environment variables are honoured: a bad value is reported under its key.
    let err = serve_refuses_config(&[
        ("MCP_OIDC_ISSUER", "http://localhost:9400"),
        ("MCP_OIDC_ALGORITHMS", "none"),
    ])
    .await;
    assert!(err.contains("`algorithms`"), "{err}");
}

#[tokio::test]
async fn check_reaches_the_provider_and_catches_an_issuer_mismatch() {
    let dev = mcp_oidc_cli::dev::start(&mcp_oidc_cli::dev::DevArgs {
        port: 0,
        idp_port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let ok = tokio::process::Command::new(BIN)
        .args(["check", "--issuer", &dev.issuer])
        .output()
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("all checks passed"));

    // The configured issuer differs from what the provider calls itself: every token
    // would be refused, and `check` says so before anyone tries.
    let wrong = format!("{}/realms/other", dev.issuer);
    let config_url = format!("{}/.well-known/openid-configuration", dev.issuer);
    let bad = tokio::process::Command::new(BIN)
        .args(["check", "--issuer", &wrong, "--config-url", &config_url])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("calls itself"));
    dev.stop().await.unwrap();
}

#[tokio::test]
async fn with_auth_disabled_the_demo_tools_serve_an_anonymous_caller() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let settings = Settings {
        insecure_disable_auth: Some(true),
        stateless: Some(true),
        json_response: Some(true),
        bind: Some(format!("127.0.0.1:{port}")),
        ..Settings::default()
    };
    let server = serve_in_background(settings, listener);
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"process_data","arguments":{"data":"x"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["result"]["content"][0]["text"], "Processing for user: anonymous",
        "{body}"
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "nothing to wait for without a provider"
    );
    server.abort();
}

#[tokio::test]
async fn readyz_and_the_ready_metric_wait_for_the_providers_keys_while_healthz_answers() {
    // The provider is not running yet when the server starts.
    let idp_port = free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let settings = Settings {
        issuer: Some(format!("http://localhost:{idp_port}")),
        bind: Some(format!("127.0.0.1:{port}")),
        metrics: Some(true),
        ..Settings::default()
    };
    let server = serve_in_background(settings, listener);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://127.0.0.1:{port}{path}")).send();
    let metric = async |name: &str| {
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };

    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(retry_after_secs(&r) >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(metric("mcp_oidc_ready").await, "0");
    // The first attempt to load the keys fails (and is counted) soon after start-up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric("mcp_oidc_key_loads_total{result=\"failed\"}").await == "0" {
        assert!(Instant::now() < deadline, "no failed key load counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let config = mcp_oidc_mock::MockConfig::default();
    let _idp = mcp_oidc_mock::MockProvider::new(config)
        .unwrap()
        .spawn(&format!("127.0.0.1:{idp_port}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get("/readyz").await.unwrap();
        if r.status() == 200 {
            assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 30 s after the provider came up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(metric("mcp_oidc_ready").await, "1");
    assert_eq!(metric("mcp_oidc_key_loads_total{result=\"ok\"}").await, "1");
    server.abort();
}

#[tokio::test]
async fn required_scopes_are_asked_for_in_the_401_and_a_token_without_them_gets_403() {
    let idp = start_idp().await;
    let (listener, at, mcp_url) = on_free_port().await;
    let base = at.base_url.clone().unwrap();
    let settings = Settings {
        issuer: Some(idp.issuer()),
        required_scopes: Some(vec!["mcp:use".into()]),
        ..at
    };
    let server = serve_in_background(settings, listener);
    let http = headless::http_client().unwrap();
    let token_with = async |scope: &str| {
        let mut request = TokenRequest::new(idp.issuer(), "testuser");
        request.scope = scope.to_owned();
        request.resource = Some(mcp_url.clone());
        headless::fetch_token(&http, &request)
            .await
            .unwrap()
            .access_token
    };
    let challenge =
        |r: &reqwest::Response| r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let metadata = format!("{base}/.well-known/oauth-protected-resource/mcp");

    // Wait until the provider's keys are loaded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/readyz"))
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let r = reqwest::Client::new()
        .post(&mcp_url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        format!("Bearer scope=\"mcp:use\", resource_metadata=\"{metadata}\"")
    );

    let r = initialize(&mcp_url, &token_with("openid email").await)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        challenge(&r),
        format!(
            "Bearer error=\"insufficient_scope\", error_description=\"this server requires the scopes: mcp:use\", scope=\"mcp:use openid email\", resource_metadata=\"{metadata}\""
        )
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");

    let token = token_with("openid email mcp:use").await;
    assert_eq!(whoami(&mcp_url, &token).await["sub"], "testuser");
    server.abort();
}

#[tokio::test]
async fn require_at_jwt_refuses_untyped_and_jwt_typed_tokens_and_only_applies_to_jwts() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const SECRET: &str = "a-shared-secret-of-the-test-issuer-0123456789";
    let issuer = "http://127.0.0.1:9/issuer";
    let (listener, at, mcp_url) = on_free_port().await;
    let settings = Settings {
        issuer: Some(issuer.into()),
        hmac_secret: Some(SECRET.into()),
        mirror_provider_metadata: Some(false),
        require_at_jwt: Some(true),
        ..at
    };
    let server = serve_in_background(settings, listener);
    let claims = json!({
        "iss": issuer, "sub": "alice", "aud": mcp_url,
        "iat": jsonwebtoken::get_current_timestamp(),
        "exp": jsonwebtoken::get_current_timestamp() + 600,
    });
    let token = |typ: Option<&str>| {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };

    for typ in [None, Some("JWT")] {
        let r = initialize(&mcp_url, &token(typ)).await.unwrap();
        assert_eq!(r.status(), 401, "{typ:?}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.starts_with(
                "Bearer error=\"invalid_token\", error_description=\"the token type is not accepted\""
            ),
            "{challenge}"
        );
    }
    assert_eq!(
        whoami(&mcp_url, &token(Some("at+jwt"))).await["sub"],
        "alice"
    );
    server.abort();

    // Opaque tokens have no type to require: the key is refused there, naming itself.
    let err = serve_refuses_config(&[
        ("MCP_OIDC_ISSUER", "http://127.0.0.1:9"),
        ("MCP_OIDC_TOKEN_VALIDATION", "userinfo"),
        ("MCP_OIDC_REQUIRE_AT_JWT", "true"),
    ])
    .await;
    assert!(
        err.contains("`require_at_jwt`") && err.contains("token_validation = userinfo"),
        "{err}"
    );
}

#[tokio::test]
async fn introspection_require_aud_refuses_an_answer_without_aud() {
    // An authorization server whose introspection answers leave `aud` out.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", upstream.local_addr().unwrap());
    let iss = issuer.clone();
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(move || {
            let iss = iss.clone();
            async move {
                axum::Json(json!({
                    "active": true, "sub": "alice", "iss": iss,
                    "exp": jsonwebtoken::get_current_timestamp() + 600,
                }))
            }
        }),
    );
    let provider = tokio::spawn(async move {
        let _ = axum::serve(upstream, app).await;
    });

    for require in [false, true] {
        let (listener, at, mcp_url) = on_free_port().await;
        let settings = Settings {
            issuer: Some(issuer.clone()),
            token_validation: Some("introspection".into()),
            introspection_endpoint: Some(format!("{issuer}/introspect")),
            client_id: Some("resource-server".into()),
            client_secret: Some("resource-server-secret".into()),
            mirror_provider_metadata: Some(false),
            introspection_require_aud: Some(require),
            ..at
        };
        let server = serve_in_background(settings, listener);
        let r = initialize(&mcp_url, "opaque-token").await.unwrap();
        if require {
            assert_eq!(r.status(), 401);
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                body["error_description"],
                "the token lacks a valid `aud` claim"
            );
        } else {
            assert_eq!(r.status(), 200);
        }
        server.abort();
    }
    provider.abort();

    // JWTs always need `aud`: the key is refused outside introspection, naming itself.
    let err = serve_refuses_config(&[
        ("MCP_OIDC_ISSUER", "http://127.0.0.1:9"),
        ("MCP_OIDC_INTROSPECTION_REQUIRE_AUD", "true"),
    ])
    .await;
    assert!(err.contains("`introspection_require_aud`"), "{err}");
}
