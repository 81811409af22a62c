//! The protected MCP server end to end: real HTTP on loopback, a real JWKS-serving issuer,
//! the built-in mock OpenID provider, and rmcp's streamable HTTP client.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use mcp_oidc::token::{
    AudiencePolicy, IntrospectionConfig, IntrospectionVerifier, JwksSettings, JwtConfig,
    JwtVerifier, KeySource, MultiVerifier, TokenCache, TokenVerifier, UserinfoConfig,
    UserinfoVerifier,
};
use mcp_oidc_mock::headless::{self, TokenRequest};
use mcp_oidc_mock::{MockConfig, MockProvider};
use rmcp::model::CallToolRequestParams;
use serde_json::{Map, Value, json};

fn jwt_verifier(issuer: &str, audience: &str, jwks: JwksSettings) -> JwtVerifier {
    let mut config = JwtConfig::new(
        issuer,
        KeySource::Discovery(issuer.to_owned()),
        AudiencePolicy::OneOf(vec![audience.into()]),
    );
    config.jwks = jwks;
    JwtVerifier::new(config).unwrap()
}

fn fast_jwks() -> JwksSettings {
    JwksSettings {
        unknown_kid_cooldown: Duration::from_millis(200),
        max_retry_backoff: Duration::from_millis(500),
        ..JwksSettings::default()
    }
}

async fn issuer_and_server() -> (TestIssuer, Served) {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), JwksSettings::default())),
        |s| s,
    )
    .await;
    (issuer, served)
}

fn user(sub: &str, name: &str) -> (String, Map<String, Value>) {
    let claims = json!({"email": format!("{sub}@example.com"), "name": name});
    (sub.to_owned(), claims.as_object().unwrap().clone())
}

async fn mock_provider(config: MockConfig) -> mcp_oidc_mock::RunningMock {
    let config = MockConfig {
        users: vec![user("testuser", "Test User"), user("alice", "Alice")],
        ..config
    };
    MockProvider::new(config)
        .unwrap()
        .spawn("127.0.0.1:0")
        .await
        .unwrap()
}

async fn token_from(
    issuer: &str,
    user: &str,
    scope: &str,
    resource: &str,
) -> headless::TokenResponse {
    let http = headless::http_client().unwrap();
    let mut req = TokenRequest::new(issuer, user);
    req.scope = scope.to_owned();
    req.resource = Some(resource.to_owned());
    headless::fetch_token(&http, &req).await.unwrap()
}

fn payload(jwt: &str) -> Map<String, Value> {
    headless::unverified_claims(jwt).unwrap()
}

async fn json_body(r: reqwest::Response) -> Value {
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn valid_token_whoami_returns_exactly_the_token_claims() {
    let idp = mock_provider(MockConfig::default()).await;
    let iss = idp.issuer();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&iss, r.resource(), JwksSettings::default())),
        |s| s,
    )
    .await;
    let token = token_from(&iss, "testuser", "openid profile email", &served.mcp_url).await;
    let client = connect(&served.mcp_url, &token.access_token).await.unwrap();

    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let text = result.content[0].as_text().unwrap().text.clone();
    let seen: Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(seen, payload(&token.access_token));
    assert_eq!(seen["sub"], "testuser");
    assert_eq!(seen["email"], "testuser@example.com");
    assert_eq!(seen["name"], "Test User");
    assert_eq!(seen["aud"], json!(served.mcp_url));

    let result = client
        .call_tool(
            CallToolRequestParams::new("process_data")
                .with_arguments(json!({"data": "hello"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        result.content[0].as_text().unwrap().text,
        "Processing for user: testuser"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn every_bad_credential_gets_the_exact_refusal_and_reaches_no_tool() {
    let (issuer, served) = issuer_and_server().await;
    let aud = served.mcp_url.clone();
    let metadata = format!("{}/.well-known/oauth-protected-resource/mcp", served.base);
    let good = issuer.claims("alice", &aud);

    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    let mut future_nbf = good.clone();
    future_nbf["nbf"] = json!(now() + 3600);
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("http://evil.example");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("http://other.example/mcp");

    let valid = issuer.rs256(&good);
    let mut bad_sig = valid.clone();
    let last = bad_sig.pop().unwrap();
    bad_sig.push(if last == 'A' { 'B' } else { 'A' });
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64(good.to_string().as_bytes())
    );
    let hs256_with_public_key = jws(
        &json!({"alg": "HS256", "kid": issuer.rsa.kid}),
        &good,
        |i| hmac_sha("HS256", &issuer.rsa.public_material(), i),
    );
    let unknown_kid = jws(&json!({"alg": "RS256", "kid": "no-such-key"}), &good, |i| {
        issuer.rsa.sign(i)
    });

    let cases: Vec<(&str, Option<String>, u16, Option<&str>)> = vec![
        ("no header", None, 401, None),
        ("wrong scheme", Some("Basic dXNlcjpwYXNz".into()), 401, None),
        (
            "garbage",
            Some("Bearer garbage".into()),
            401,
            Some("the token is malformed: not a JWT"),
        ),
        (
            "bad signature",
            Some(format!("Bearer {bad_sig}")),
            401,
            Some("the token signature is invalid"),
        ),
        (
            "alg none",
            Some(format!("Bearer {alg_none}")),
            401,
            Some("the signing algorithm none is not allowed"),
        ),
        (
            "HS256 with the RSA public key",
            Some(format!("Bearer {hs256_with_public_key}")),
            401,
            Some("the signing algorithm HS256 is not allowed"),
        ),
        (
            "unknown kid",
            Some(format!("Bearer {unknown_kid}")),
            401,
            Some("the token was signed with an unknown key"),
        ),
        (
            "expired",
            Some(format!("Bearer {}", issuer.rs256(&expired))),
            401,
            Some("the token has expired"),
        ),
        (
            "nbf in the future",
            Some(format!("Bearer {}", issuer.rs256(&future_nbf))),
            401,
            Some("the token is not valid yet"),
        ),
        (
            "wrong iss",
            Some(format!("Bearer {}", issuer.rs256(&wrong_iss))),
            401,
            Some("the token was issued by an untrusted issuer"),
        ),
        (
            "wrong aud",
            Some(format!("Bearer {}", issuer.rs256(&wrong_aud))),
            401,
            Some("the token is not intended for this resource (audience mismatch)"),
        ),
    ];

    for (name, auth, status, description) in cases {
        let r = post(&served.mcp_url, auth.as_deref(), INIT).await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        let challenge = header(&r, "www-authenticate");
        let expected_challenge = match description {
            None => {
                format!("Bearer scope=\"openid profile email\", resource_metadata=\"{metadata}\"")
            }
            Some(d) => format!(
                "Bearer error=\"invalid_token\", error_description=\"{d}\", scope=\"openid profile email\", resource_metadata=\"{metadata}\""
            ),
        };
        assert_eq!(challenge, expected_challenge, "{name}");
        assert_eq!(header(&r, "content-type"), "application/json", "{name}");
        let body = json_body(r).await;
        match description {
            None => assert_eq!(body["error"], "unauthorized", "{name}"),
            Some(d) => {
                assert_eq!(body["error"], "invalid_token", "{name}");
                assert_eq!(body["error_description"], d, "{name}");
            }
        }
    }

    // A token in the query string is refused even when it is valid.
    let r = post(
        &format!("{}?access_token={valid}", served.mcp_url),
        None,
        INIT,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(header(&r, "www-authenticate").starts_with("Bearer error=\"invalid_request\""));
    assert_eq!(json_body(r).await["error"], "invalid_request");

    // Malformed Authorization headers are 400 invalid_request.
    let r = post(&served.mcp_url, Some("Bearer a b"), INIT).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json_body(r).await["error"], "invalid_request");

    assert_eq!(
        served.calls.load(Ordering::SeqCst),
        0,
        "no refused request may reach a tool"
    );

    // And the valid token works, with a lower-case scheme and extra spaces.
    let r = post(&served.mcp_url, Some(&format!("bearer   {valid}")), INIT).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn with_require_type_only_at_jwt_tokens_are_accepted_and_untyped_ones_get_401() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| {
            let mut config = JwtConfig::new(
                url.as_str(),
                KeySource::Discovery(url.clone()),
                AudiencePolicy::OneOf(vec![r.resource().into()]),
            );
            config.accepted_types = vec!["at+jwt".into(), "application/at+jwt".into()];
            config.require_type = true;
            Arc::new(JwtVerifier::new(config).unwrap())
        },
        |s| s,
    )
    .await;
    let metadata = format!("{}/.well-known/oauth-protected-resource/mcp", served.base);
    let good = issuer.claims("alice", &served.mcp_url);
    let kid = issuer.rsa.kid.clone();
    let typed = |typ: Option<&str>| {
        let mut header = json!({"alg": "RS256", "kid": kid});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        jws(&header, &good, |i| issuer.rsa.sign(i))
    };

    for (name, token) in [("untyped", typed(None)), ("typ JWT", typed(Some("JWT")))] {
        let r = post(&served.mcp_url, Some(&format!("Bearer {token}")), INIT).await;
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(
            header(&r, "www-authenticate"),
            format!(
                "Bearer error=\"invalid_token\", error_description=\"the token type is not accepted\", scope=\"openid profile email\", resource_metadata=\"{metadata}\""
            ),
            "{name}"
        );
        assert_eq!(json_body(r).await["error"], "invalid_token", "{name}");
    }
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);

    for typ in ["at+jwt", "application/at+jwt"] {
        let r = post(
            &served.mcp_url,
            Some(&format!("Bearer {}", typed(Some(typ)))),
            INIT,
        )
        .await;
        assert_eq!(r.status(), 200, "{typ}");
    }
}

/// The tools `token`'s caller sees in `tools/list`.
async fn tool_names(mcp_url: &str, token: &str) -> Vec<String> {
    let client = connect(mcp_url, token).await.unwrap();
    let names = client
        .list_tools(None)
        .await
        .unwrap()
        .tools
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    client.cancel().await.unwrap();
    names
}

/// A `write_note` call with `token` gets 403 `insufficient_scope` with exactly this
/// description and scope, and the tool does not run.
async fn write_note_is_refused(served: &Served, token: &str, description: &str, scope: &str) {
    let r = post(
        &served.mcp_url,
        Some(&format!("Bearer {token}")),
        &call("write_note", json!({})),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(
            "Bearer error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{scope}\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            served.base
        )
    );
    assert_eq!(json_body(r).await["error"], "insufficient_scope");
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
}

/// `write_note` is listed for `token`'s caller, and a call runs it.
async fn write_note_is_listed_and_runs(mcp_url: &str, token: &str) {
    let names = tool_names(mcp_url, token).await;
    assert!(names.contains(&"write_note".to_owned()), "{names:?}");
    let client = connect(mcp_url, token).await.unwrap();
    let result = client
        .call_tool(CallToolRequestParams::new("write_note"))
        .await
        .unwrap();
    assert_eq!(result.content[0].as_text().unwrap().text, "saved");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn missing_scope_gets_403_insufficient_scope_and_the_tool_is_hidden() {
    let (issuer, served) = issuer_and_server().await;
    let narrow = issuer.rs256(&issuer.claims("alice", &served.mcp_url));
    let mut wide_claims = issuer.claims("alice", &served.mcp_url);
    wide_claims["scope"] = json!("openid mcp:write");
    let wide = issuer.rs256(&wide_claims);

    let names = tool_names(&served.mcp_url, &narrow).await;
    assert!(names.contains(&"whoami".to_owned()));
    assert!(!names.contains(&"write_note".to_owned()), "{names:?}");
    write_note_is_refused(
        &served,
        &narrow,
        "the tool `write_note` requires the scopes: mcp:write",
        "mcp:write openid profile email",
    )
    .await;

    write_note_is_listed_and_runs(&served.mcp_url, &wide).await;
}

#[tokio::test]
async fn a_caller_failing_a_tools_claim_rule_gets_403_and_does_not_see_the_tool() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), JwksSettings::default())),
        |s| {
            s.tool_policies(mcp_oidc::mcp::ToolPolicies::new().require_claim(
                "write_note",
                "role is admin",
                |t| t.claim_str("role") == Some("admin"),
            ))
        },
    )
    .await;
    let with_role = |role: &str| {
        let mut claims = issuer.claims("alice", &served.mcp_url);
        claims["role"] = json!(role);
        issuer.rs256(&claims)
    };
    let (reader, admin) = (with_role("reader"), with_role("admin"));

    let names = tool_names(&served.mcp_url, &reader).await;
    assert!(names.contains(&"whoami".to_owned()), "{names:?}");
    assert!(!names.contains(&"write_note".to_owned()), "{names:?}");
    // No scope would help: the challenge names the scopes the caller already holds.
    write_note_is_refused(
        &served,
        &reader,
        "the tool `write_note` is restricted: role is admin",
        "openid profile email",
    )
    .await;

    write_note_is_listed_and_runs(&served.mcp_url, &admin).await;
}

#[tokio::test]
async fn another_users_token_on_a_session_is_refused_as_unknown_and_the_owner_still_works() {
    let (issuer, served) = issuer_and_server().await;
    let alice = bearer_for(&issuer, "alice", &served);
    let bob = bearer_for(&issuer, "bob", &served);

    let r = post(&served.mcp_url, Some(&alice), INIT).await;
    assert_eq!(r.status(), 200);
    let session = header(&r, "mcp-session-id");
    assert!(!session.is_empty());
    let _ = r.text().await;

    let send = |auth: String, body: String| {
        let url = served.mcp_url.clone();
        let session = session.clone();
        async move {
            reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-06-18")
                .header("authorization", auth)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = send(
        alice.clone(),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(),
    )
    .await;
    assert_eq!(r.status(), 202);

    let r = send(bob.clone(), call("whoami", json!({}))).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "Not Found: Session not found");
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
    // Nor may Bob open the session's event stream, or end the session.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = reqwest::Client::new()
            .request(method.clone(), &served.mcp_url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("authorization", &bob)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method}");
        assert_eq!(r.text().await.unwrap(), "Not Found: Session not found");
    }

    let r = send(alice.clone(), call("whoami", json!({}))).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains(r#"\"sub\":\"alice\""#), "{text}");
}

/// A raw MCP POST on a session.
async fn on_session(url: &str, session: &str, auth: &str, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", auth)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Initializes a session for `auth` (initialize + notifications/initialized); its id.
async fn open_session(url: &str, auth: &str) -> String {
    let r = post(url, Some(auth), INIT).await;
    assert_eq!(r.status(), 200);
    let session = header(&r, "mcp-session-id");
    let _ = r.text().await;
    let r = on_session(
        url,
        &session,
        auth,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(r.status(), 202);
    session
}

#[tokio::test]
async fn a_tool_call_naming_its_tool_twice_is_refused_rather_than_guessed() {
    let (issuer, served) = issuer_and_server().await;
    let narrow = format!(
        "Bearer {}",
        issuer.rs256(&issuer.claims("alice", &served.mcp_url))
    );
    let session = open_session(&served.mcp_url, &narrow).await;
    // Read strictly, the first `name` is harmless; rmcp keeps the last one.
    let body = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"whoami","name":"write_note","arguments":{}}}"#;
    let r = on_session(&served.mcp_url, &session, &narrow, body).await;
    assert_eq!(r.status(), 400);
    assert!(header(&r, "www-authenticate").contains("error=\"invalid_request\""));
    assert_eq!(json_body(r).await["error"], "invalid_request");
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
    // The session still serves well-formed calls.
    let r = on_session(
        &served.mcp_url,
        &session,
        &narrow,
        &call("whoami", json!({})),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_foreign_origin_or_host_gets_403_before_any_token_is_checked() {
    let (issuer, served) = issuer_and_server().await;
    let token = bearer_for(&issuer, "alice", &served);
    let client = reqwest::Client::new();
    let send = |auth: Option<&str>, host: Option<&str>, origin: Option<&str>| {
        let mut r = client
            .post(&served.mcp_url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(INIT);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(h) = host {
            r = r.header("host", h);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    // Without a token, a page on another origin is refused outright, not challenged.
    let r = send(None, None, Some("http://evil.example")).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("www-authenticate").is_none());
    // Its body is not read, and the answer says the connection ends with it.
    assert_eq!(header(&r, "connection"), "close");
    assert_eq!(json_body(r).await["error"], "forbidden");
    // With a valid token too.
    for (host, origin) in [
        (None, Some("http://evil.example")),
        (Some("evil.example"), None),
    ] {
        let r = send(Some(&token), host, origin).await.unwrap();
        assert_eq!(r.status(), 403, "{host:?} {origin:?}");
        assert_eq!(json_body(r).await["error"], "forbidden");
    }
    // The server's own origin passes, and so does no Origin at all (non-browser clients).
    let own = served.base.clone();
    let r = send(Some(&token), None, Some(&own)).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = send(Some(&token), None, None).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = send(None, None, Some(&own)).await.unwrap();
    assert_eq!(r.status(), 401);
}

/// A probe server whose sessions hibernate after `idle` (or never), and its issuer.
async fn server_hibernating_after(idle: Option<Duration>) -> (TestIssuer, Served) {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), JwksSettings::default())),
        |s| s.session_hibernation(idle),
    )
    .await;
    (issuer, served)
}

/// The `Authorization` value of an RS256 token for `sub` on `served`.
fn bearer_for(issuer: &TestIssuer, sub: &str, served: &Served) -> String {
    format!(
        "Bearer {}",
        issuer.rs256(&issuer.claims(sub, &served.mcp_url))
    )
}

/// `whoami` called on `session` with `auth`.
async fn whoami_on(served: &Served, session: &str, auth: &str) -> reqwest::Response {
    on_session(&served.mcp_url, session, auth, &call("whoami", json!({}))).await
}

#[tokio::test]
async fn an_idle_session_hibernates_and_its_next_request_resumes_it_under_the_same_id() {
    let (issuer, served) = server_hibernating_after(Some(Duration::from_millis(300))).await;
    let alice = bearer_for(&issuer, "alice", &served);
    let session = open_session(&served.mcp_url, &alice).await;
    let r = whoami_on(&served, &session, &alice).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(r#"\"sub\":\"alice\""#));
    assert_eq!(served.handlers.load(Ordering::SeqCst), 1);

    // Idle past the hibernation period: rmcp's worker for the session ends.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = whoami_on(&served, &session, &alice).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains(r#"\"sub\":\"alice\""#), "{text}");
    assert_eq!(
        served.handlers.load(Ordering::SeqCst),
        2,
        "the session was rebuilt with a new handler"
    );
    // Live again: the next request is served by the same handler.
    let r = whoami_on(&served, &session, &alice).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    assert_eq!(served.handlers.load(Ordering::SeqCst), 2);
    assert_eq!(served.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_hibernated_session_stays_bound_to_its_owner_and_a_deleted_one_is_not_resumed() {
    let (issuer, served) = server_hibernating_after(Some(Duration::from_millis(300))).await;
    let alice = bearer_for(&issuer, "alice", &served);
    let bob = bearer_for(&issuer, "bob", &served);
    let session = open_session(&served.mcp_url, &alice).await;
    tokio::time::sleep(Duration::from_millis(900)).await;

    let r = whoami_on(&served, &session, &bob).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        served.handlers.load(Ordering::SeqCst),
        1,
        "another user's request must not resume the session"
    );
    let r = whoami_on(&served, &session, &alice).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;

    let r = reqwest::Client::new()
        .delete(&served.mcp_url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = whoami_on(&served, &session, &alice).await;
    assert_eq!(r.status(), 404);
    assert_eq!(served.handlers.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_session_deleted_while_hibernated_is_not_resumed() {
    let (issuer, served) = server_hibernating_after(Some(Duration::from_millis(300))).await;
    let alice = bearer_for(&issuer, "alice", &served);
    let session = open_session(&served.mcp_url, &alice).await;
    tokio::time::sleep(Duration::from_millis(900)).await;

    let delete = |auth: &str| {
        reqwest::Client::new()
            .delete(&served.mcp_url)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("authorization", auth)
            .send()
    };
    let bob = bearer_for(&issuer, "bob", &served);
    assert_eq!(
        delete(&bob).await.unwrap().status(),
        404,
        "only its owner ends a session"
    );
    let r = delete(&alice).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = whoami_on(&served, &session, &alice).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        served.handlers.load(Ordering::SeqCst),
        1,
        "the deleted session was not rebuilt"
    );
}

#[tokio::test]
async fn rmcp_client_keeps_working_across_its_sessions_hibernation() {
    let (issuer, served) = server_hibernating_after(Some(Duration::from_millis(300))).await;
    let token = issuer.rs256(&issuer.claims("alice", &served.mcp_url));
    let client = connect(&served.mcp_url, &token).await.unwrap();
    for _ in 0..3 {
        let result = client
            .call_tool(CallToolRequestParams::new("whoami"))
            .await
            .unwrap();
        let text = &result.content[0].as_text().unwrap().text;
        assert!(text.contains(r#""sub":"alice""#), "{text}");
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    assert!(
        served.handlers.load(Ordering::SeqCst) >= 3,
        "each call after an idle period resumed the session"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_tool_call_longer_than_the_hibernation_period_is_answered_and_its_session_kept() {
    let (issuer, served) = server_hibernating_after(Some(Duration::from_millis(300))).await;
    let token = issuer.rs256(&issuer.claims("alice", &served.mcp_url));
    let client = connect(&served.mcp_url, &token).await.unwrap();
    let mut args = Map::new();
    args.insert("data".into(), "1500".into());
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.call_tool(CallToolRequestParams::new("slow").with_arguments(args)),
    )
    .await
    .expect("a silent tool call must not be cut off by hibernation")
    .unwrap();
    assert_eq!(result.content[0].as_text().unwrap().text, "slept 1500 ms");
    assert_eq!(
        served.handlers.load(Ordering::SeqCst),
        1,
        "the session was not hibernated while its request ran"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn without_hibernation_an_idle_session_keeps_its_handler() {
    let (issuer, served) = server_hibernating_after(None).await;
    let alice = bearer_for(&issuer, "alice", &served);
    let session = open_session(&served.mcp_url, &alice).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = whoami_on(&served, &session, &alice).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    assert_eq!(served.handlers.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn provider_down_at_startup_gets_503_with_retry_after_then_recovers_by_itself() {
    let issuer = TestIssuer::start_with(true).await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), fast_jwks())),
        |s| s,
    )
    .await;
    let token = bearer_for(&issuer, "alice", &served);

    let r = post(&served.mcp_url, Some(&token), INIT).await;
    assert_eq!(r.status(), 503);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!(retry >= 1);
    let body = json_body(r).await;
    assert_eq!(body["error"], "temporarily_unavailable");
    // The provider's address and answers stay in the log.
    let description = body["error_description"].as_str().unwrap();
    assert!(!description.contains("127.0.0.1"), "{description}");

    issuer.set_down(false);
    let recovered = eventually(Duration::from_secs(10), async || {
        post(&served.mcp_url, Some(&token), INIT).await.status() == 200
    })
    .await;
    assert!(recovered, "the server did not recover without a restart");
}

#[tokio::test]
async fn rotated_key_is_accepted_after_one_refetch() {
    let (issuer, served) = issuer_and_server().await;
    let first = bearer_for(&issuer, "alice", &served);
    assert_eq!(
        post(&served.mcp_url, Some(&first), INIT).await.status(),
        200
    );
    let before = issuer.jwks_fetches();

    let rotated = RsaKey::generate("rsa-2");
    issuer.publish(rotated.jwk.clone());
    let claims = issuer.claims("alice", &served.mcp_url);
    let token = jws(
        &json!({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-2"}),
        &claims,
        |i| rotated.sign(i),
    );
    let r = post(&served.mcp_url, Some(&format!("Bearer {token}")), INIT).await;
    assert_eq!(r.status(), 200);
    assert_eq!(issuer.jwks_fetches() - before, 1, "exactly one refetch");
    // The old key keeps working, for a token not seen before (not answered from the cache).
    let mut claims = issuer.claims("alice", &served.mcp_url);
    claims["jti"] = json!("another");
    let again = format!("Bearer {}", issuer.rs256(&claims));
    assert_eq!(
        post(&served.mcp_url, Some(&again), INIT).await.status(),
        200
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_is_withdrawn_from_the_key_set() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), fast_jwks())),
        |s| s,
    )
    .await;
    let old = bearer_for(&issuer, "alice", &served);
    assert_eq!(post(&served.mcp_url, Some(&old), INIT).await.status(), 200);

    // The provider replaces its key (rsa-1 compromised): a token signed by the new key
    // makes the server load the new set.
    let rotated = RsaKey::generate("rsa-2");
    issuer.publish(rotated.jwk.clone());
    issuer.retire("rsa-1");
    let claims = issuer.claims("alice", &served.mcp_url);
    let new = jws(
        &json!({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-2"}),
        &claims,
        |i| rotated.sign(i),
    );
    let r = post(&served.mcp_url, Some(&format!("Bearer {new}")), INIT).await;
    assert_eq!(r.status(), 200);

    // The old token was verified and cached before: it must not outlive its key.
    let r = post(&served.mcp_url, Some(&old), INIT).await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn a_token_without_kid_signed_by_a_newly_published_key_is_accepted_after_one_refetch() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    // A long cooldown: the first forced refetch is allowed, none after it in this test.
    let jwks = JwksSettings {
        unknown_kid_cooldown: Duration::from_secs(60),
        ..JwksSettings::default()
    };
    let served = serve_probe(|r| Arc::new(jwt_verifier(&url, r.resource(), jwks)), |s| s).await;
    let first = bearer_for(&issuer, "alice", &served);
    assert_eq!(
        post(&served.mcp_url, Some(&first), INIT).await.status(),
        200
    );
    let before = issuer.jwks_fetches();

    let rotated = RsaKey::generate("rsa-2");
    issuer.publish(rotated.jwk.clone());
    let claims = issuer.claims("alice", &served.mcp_url);
    let token = jws(&json!({"alg": "RS256", "typ": "at+jwt"}), &claims, |i| {
        rotated.sign(i)
    });
    let r = post(&served.mcp_url, Some(&format!("Bearer {token}")), INIT).await;
    assert_eq!(r.status(), 200);
    assert_eq!(issuer.jwks_fetches() - before, 1, "exactly one refetch");

    // A forged token without `kid` is still refused, and costs no fetch within the cooldown.
    let forged = jws(&json!({"alg": "RS256", "typ": "at+jwt"}), &claims, |_| {
        vec![7; 256]
    });
    let r = post(&served.mcp_url, Some(&format!("Bearer {forged}")), INIT).await;
    assert_eq!(r.status(), 401);
    assert_eq!(issuer.jwks_fetches() - before, 1);
}

#[tokio::test]
async fn a_thousand_bogus_kids_cause_at_most_a_handful_of_jwks_fetches() {
    let (issuer, served) = issuer_and_server().await;
    let good = bearer_for(&issuer, "alice", &served);
    assert_eq!(post(&served.mcp_url, Some(&good), INIT).await.status(), 200);
    let before = issuer.jwks_fetches();
    let claims = issuer.claims("mallory", &served.mcp_url);
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            jws(
                &json!({"alg": "RS256", "kid": format!("bogus-{i}-{}", rand_suffix(i))}),
                &claims,
                |_| vec![1, 2, 3],
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for chunk in tokens.chunks(50) {
        let futures = chunk.iter().map(|t| {
            client
                .post(&served.mcp_url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("authorization", format!("Bearer {t}"))
                .body(INIT)
                .send()
        });
        for r in futures::future::join_all(futures).await {
            statuses.push(r.unwrap().status().as_u16());
        }
    }
    assert!(statuses.iter().all(|s| *s == 401));
    let fetched = issuer.jwks_fetches() - before;
    assert!(fetched <= 2, "{fetched} JWKS fetches for 1000 bogus kids");
}

fn rand_suffix(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now()
}

#[tokio::test]
async fn protected_resource_metadata_has_the_rfc9728_fields_at_root_and_path() {
    let (issuer, served) = issuer_and_server().await;
    let client = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = client
            .get(format!("{}{path}", served.base))
            .header("origin", "http://some-browser-app.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "access-control-allow-origin"), "*", "{path}");
        let doc = json_body(r).await;
        let mut keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "authorization_servers",
                "bearer_methods_supported",
                "resource",
                "scopes_supported"
            ],
            "{path}"
        );
        assert_eq!(doc["resource"], served.mcp_url);
        assert_eq!(doc["authorization_servers"], json!([issuer.url]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(
            doc["scopes_supported"],
            json!(["openid", "profile", "email"])
        );
    }
}

#[tokio::test]
async fn stateless_json_mode_serves_a_bare_tools_call() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), JwksSettings::default())),
        |s| s.stateless(true).token_cache(TokenCache::disabled()),
    )
    .await;
    let token = format!(
        "Bearer {}",
        issuer.es256(&issuer.claims("carol", &served.mcp_url))
    );
    let r = post(
        &served.mcp_url,
        Some(&token),
        &call("process_data", json!({"data": "x"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("application/json"));
    assert!(header(&r, "mcp-session-id").is_empty());
    let body = json_body(r).await;
    assert_eq!(
        body["result"]["content"][0]["text"],
        "Processing for user: carol"
    );
}

/// Sends `body` in HTTP/1.1 chunks (no `Content-Length`) and returns the status and body.
async fn post_chunked(url: &str, authorization: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(url).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        url.path()
    );
    for chunk in body.as_bytes().chunks(1000) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(std::str::from_utf8(chunk).unwrap());
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    // The server may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test]
async fn an_oversized_body_gets_the_same_json_413_whether_or_not_a_tool_rule_reads_it() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), JwksSettings::default())),
        |s| s.stateless(true).max_body_bytes(2048),
    )
    .await;
    let narrow = format!(
        "Bearer {}",
        issuer.rs256(&issuer.claims("alice", &served.mcp_url))
    );
    let mut wide_claims = issuer.claims("alice", &served.mcp_url);
    wide_claims["scope"] = json!("openid mcp:write");
    let wide = format!("Bearer {}", issuer.rs256(&wide_claims));
    let big = call("process_data", json!({"data": "x".repeat(4096)}));
    let small = call("process_data", json!({"data": "x"}));

    // The narrow token's bodies are read for the tool rule; the wide token's are not.
    for auth in [&narrow, &wide] {
        let r = post(&served.mcp_url, Some(auth), &big).await;
        assert_eq!(r.status(), 413);
        assert!(header(&r, "content-type").starts_with("application/json"));
        let body = json_body(r).await;
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(
            body["error_description"],
            "the request body is larger than the 2048 bytes this server accepts"
        );

        let (status, answer) = post_chunked(&served.mcp_url, auth, &big).await;
        assert_eq!(status, 413, "{answer}");
        assert!(answer.contains("\"error\":\"invalid_request\""), "{answer}");

        let (status, answer) = post_chunked(&served.mcp_url, auth, &small).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("Processing for user: alice"), "{answer}");
    }
    assert_eq!(served.calls.load(Ordering::SeqCst), 2);

    // Without a valid token the size is never looked at: the caller learns only the 401.
    let r = post(&served.mcp_url, Some("Bearer nope"), &big).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn several_issuers_are_routed_by_iss_and_strangers_are_refused() {
    let a = TestIssuer::start().await;
    let b = TestIssuer::start().await;
    let stranger = TestIssuer::start().await;
    let (ua, ub) = (a.url.clone(), b.url.clone());
    let served = serve_probe(
        |r| {
            Arc::new(
                MultiVerifier::new()
                    .with(jwt_verifier(&ua, r.resource(), JwksSettings::default()))
                    .with(jwt_verifier(&ub, r.resource(), JwksSettings::default())),
            ) as Arc<dyn TokenVerifier>
        },
        |s| s,
    )
    .await;
    for (issuer, sub) in [(&a, "from-a"), (&b, "from-b")] {
        let t = format!(
            "Bearer {}",
            issuer.rs256(&issuer.claims(sub, &served.mcp_url))
        );
        let r = post(&served.mcp_url, Some(&t), INIT).await;
        assert_eq!(r.status(), 200, "{sub}");
    }
    let t = format!(
        "Bearer {}",
        stranger.rs256(&stranger.claims("x", &served.mcp_url))
    );
    let r = post(&served.mcp_url, Some(&t), INIT).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        json_body(r).await["error_description"],
        "the token was issued by an untrusted issuer"
    );
    assert_eq!(
        stranger.jwks_fetches(),
        0,
        "no key fetch for an untrusted issuer"
    );
}

/// An introspection verifier asking the mock `provider`, for tokens that must name
/// `issuer` and `audience`.
fn introspection_at(provider: &str, issuer: &str, audience: &str) -> IntrospectionVerifier {
    IntrospectionVerifier::new(introspection_config(provider, issuer, audience))
}

fn introspection_config(provider: &str, issuer: &str, audience: &str) -> IntrospectionConfig {
    IntrospectionConfig {
        issuer: issuer.into(),
        endpoint: format!("{provider}/oauth2/introspect"),
        client_id: "resource-server".into(),
        client_secret: mcp_oidc::types::ClientSecret::new("rs-secret"),
        audience: AudiencePolicy::OneOf(vec![audience.into()]),
        require_audience: false,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn opaque_tokens_are_verified_with_userinfo_and_with_introspection() {
    let idp = mock_provider(MockConfig {
        opaque_access_tokens: true,
        ..MockConfig::default()
    })
    .await;
    let iss = idp.issuer();
    for mode in ["userinfo", "introspection"] {
        let iss2 = iss.clone();
        let served = serve_probe(
            move |r| match mode {
                "userinfo" => Arc::new(UserinfoVerifier::new(UserinfoConfig {
                    issuer: iss2.as_str().into(),
                    discovery_url: iss2.clone(),
                    endpoint: None,
                    timeout: Duration::from_secs(5),
                })) as Arc<dyn TokenVerifier>,
                _ => Arc::new(introspection_at(&iss2, &iss2, r.resource())),
            },
            |s| s,
        )
        .await;
        let token = token_from(&iss, "alice", "openid profile email", &served.mcp_url).await;
        assert_eq!(
            token.access_token.matches('.').count(),
            0,
            "opaque token expected"
        );
        let client = connect(&served.mcp_url, &token.access_token).await.unwrap();
        let result = client
            .call_tool(CallToolRequestParams::new("whoami"))
            .await
            .unwrap();
        let seen: Map<String, Value> =
            serde_json::from_str(&result.content[0].as_text().unwrap().text).unwrap();
        assert_eq!(seen["sub"], "alice", "{mode}");
        if mode == "userinfo" {
            assert_eq!(seen["email"], "alice@example.com");
        } else {
            assert_eq!(seen["active"], true);
            assert_eq!(seen["client_id"], "mcp-oidc-dev");
        }
        client.cancel().await.unwrap();

        let r = post(&served.mcp_url, Some("Bearer not-a-real-token-xyz"), INIT).await;
        assert_eq!(r.status(), 401, "{mode}");
        assert_eq!(
            json_body(r).await["error_description"],
            "the token is not active",
            "{mode}"
        );
    }
}

#[tokio::test]
async fn with_require_audience_an_introspection_answer_without_aud_gets_401() {
    // An authorization server whose introspection answers leave `aud` out (RFC 7662 makes
    // it optional), as some do.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = format!("http://{}", listener.local_addr().unwrap());
    let iss = provider.clone();
    let app = axum::Router::new().route(
        "/oauth2/introspect",
        axum::routing::post(move || {
            let iss = iss.clone();
            async move {
                axum::Json(json!({
                    "active": true, "sub": "alice", "iss": iss, "scope": "openid",
                    "exp": now() + 600, "client_id": "some-client",
                }))
            }
        }),
    );
    let upstream = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    for require in [false, true] {
        let p = provider.clone();
        let served = serve_probe(
            move |r| {
                let mut verifier = introspection_config(&p, &p, r.resource());
                verifier.require_audience = require;
                Arc::new(IntrospectionVerifier::new(verifier))
            },
            |s| s,
        )
        .await;
        let r = post(
            &served.mcp_url,
            Some("Bearer opaque-token-without-aud"),
            INIT,
        )
        .await;
        if require {
            assert_eq!(r.status(), 401);
            assert!(
                header(&r, "www-authenticate").starts_with(
                    "Bearer error=\"invalid_token\", error_description=\"the token lacks a valid `aud` claim\""
                ),
                "{}",
                header(&r, "www-authenticate")
            );
            assert_eq!(served.calls.load(Ordering::SeqCst), 0);
        } else {
            assert_eq!(
                r.status(),
                200,
                "without the requirement the provider's word is taken"
            );
        }
    }
    upstream.abort();
}

#[tokio::test]
async fn introspection_refuses_a_token_for_another_resource_or_from_another_issuer() {
    let idp = mock_provider(MockConfig {
        opaque_access_tokens: true,
        ..MockConfig::default()
    })
    .await;
    let iss = idp.issuer();
    // The same provider, but this server expects the tokens to name `expected_issuer`.
    let serve_expecting = |expected_issuer: String| {
        let provider = iss.clone();
        serve_probe(
            move |r| Arc::new(introspection_at(&provider, &expected_issuer, r.resource())),
            |s| s,
        )
    };
    let served = serve_expecting(iss.clone()).await;
    let cases = [
        (
            "http://127.0.0.1:1/mcp",
            "the token is not intended for this resource (audience mismatch)",
        ),
        (served.mcp_url.as_str(), ""),
    ];
    for (resource, refusal) in cases {
        let token = token_from(&iss, "alice", "openid", resource).await;
        let r = post(
            &served.mcp_url,
            Some(&format!("Bearer {}", token.access_token)),
            INIT,
        )
        .await;
        if refusal.is_empty() {
            assert_eq!(r.status(), 200, "a token for this server");
        } else {
            assert_eq!(r.status(), 401);
            assert!(header(&r, "www-authenticate").contains("error=\"invalid_token\""));
            assert_eq!(json_body(r).await["error_description"], refusal);
        }
    }

    let elsewhere = serve_expecting("http://127.0.0.1:1".to_owned()).await;
    let token = token_from(&iss, "alice", "openid", &elsewhere.mcp_url).await;
    let r = post(
        &elsewhere.mcp_url,
        Some(&format!("Bearer {}", token.access_token)),
        INIT,
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        json_body(r).await["error_description"],
        "the token was issued by an untrusted issuer"
    );
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn sessionless_2026_07_28_requests_are_served_on_a_stateful_server() {
    let (issuer, served) = issuer_and_server().await;
    let token = bearer_for(&issuer, "dana", &served);
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": "process_data", "arguments": {"data": "x"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let r = reqwest::Client::new()
        .post(&served.mcp_url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "process_data")
        .header("authorization", &token)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "mcp-session-id").is_empty(),
        "no session in 2026-07-28"
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("Processing for user: dana"), "{text}");
    // Still authenticated: the same request without a token is refused.
    let r = post(&served.mcp_url, None, &body.to_string()).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn metrics_count_each_decision_of_the_bearer_layer_and_the_cache_lookups() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let served = serve_probe(
        |r| Arc::new(jwt_verifier(&url, r.resource(), JwksSettings::default())),
        |s| s.metrics(true),
    )
    .await;
    let valid = bearer_for(&issuer, "alice", &served);
    assert_eq!(
        post(&served.mcp_url, Some(&valid), INIT).await.status(),
        200
    );
    assert_eq!(post(&served.mcp_url, None, INIT).await.status(), 401);
    let garbage = post(&served.mcp_url, Some("Bearer not.a.jwt"), INIT).await;
    assert_eq!(garbage.status(), 401);
    assert_eq!(
        post(&served.mcp_url, Some(&valid), INIT).await.status(),
        200
    );

    let r = reqwest::get(format!("{}/metrics", served.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    for line in [
        "mcp_oidc_requests_total{outcome=\"passed\"} 2",
        "mcp_oidc_requests_total{outcome=\"missing_token\"} 1",
        "mcp_oidc_requests_total{outcome=\"invalid_token\"} 1",
        "mcp_oidc_requests_total{outcome=\"insufficient_scope\"} 0",
        "mcp_oidc_token_cache_lookups_total{result=\"hit\"} 1",
        "mcp_oidc_token_cache_lookups_total{result=\"miss\"} 2",
        "mcp_oidc_ready 1",
        "mcp_oidc_sessions 2",
        "mcp_oidc_key_loads_total{result=\"ok\"} 1",
        "mcp_oidc_key_loads_total{result=\"failed\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("alice"), "no subject in the metrics");
}

#[tokio::test]
async fn metrics_are_not_served_unless_turned_on() {
    let (_issuer, served) = server_hibernating_after(None).await;
    let r = reqwest::get(format!("{}/metrics", served.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_servers_own_origin_and_host_are_allowed_on_its_own_port_only() {
    let issuer = TestIssuer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Served behind a TLS-terminating proxy at the default port of https.
    let resource =
        mcp_oidc::resource::ProtectedResource::new("https://mcp.example.com", "/mcp").unwrap();
    let verifier = jwt_verifier(&issuer.url, resource.resource(), JwksSettings::default());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router =
        mcp_oidc::McpOidc::new(resource, verifier).router(move || Probe::new(calls.clone()));
    let task = tokio::spawn(async move {
        let _ = mcp_oidc::serve(listener, router, std::future::pending()).await;
    });
    let client = reqwest::Client::new();
    let status = async |host: &str, origin: Option<&str>| {
        let mut request = client
            .post(format!("http://{addr}/mcp"))
            .header("host", host)
            .header("content-type", "application/json")
            .body(INIT);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.unwrap().status().as_u16()
    };
    for (origin, expected) in [
        ("https://mcp.example.com", 401),
        ("https://mcp.example.com:443", 401),
        ("https://MCP.example.com", 401),
        ("https://mcp.example.com:8443", 403),
        ("http://mcp.example.com", 403),
        ("http://mcp.example.com:443", 403),
    ] {
        assert_eq!(
            status("mcp.example.com", Some(origin)).await,
            expected,
            "{origin}"
        );
    }
    for (host, expected) in [
        ("mcp.example.com", 401),
        ("mcp.example.com:443", 401),
        ("mcp.example.com:8443", 403),
        ("mcp.example.com:80", 403),
    ] {
        assert_eq!(status(host, None).await, expected, "{host}");
    }
    task.abort();
}

/// Reads one HTTP/1.1 answer (its head, and as much body as its `Content-Length` says)
/// from `stream`; `None` if the connection ends first.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return Some(text);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
}

fn unauthenticated_post(host: &str, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
}

#[tokio::test]
async fn a_refused_request_whose_body_follows_its_headers_leaves_the_connection_usable() {
    use tokio::io::AsyncWriteExt;
    let (_issuer, served) = issuer_and_server().await;
    let url = reqwest::Url::parse(&served.mcp_url).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let body = call("process_data", json!({"data": "x"}));
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();

    // The headers first, the body a moment later: how most clients write a request, and
    // the first request of every MCP client carries no token.
    let head = unauthenticated_post(&host, url.path(), &body);
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let first = read_answer(&mut stream).await.expect("an answer");
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );

    // The same connection carries the next request.
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    let second = read_answer(&mut stream)
        .await
        .expect("the connection was closed under the second request");
    assert!(second.starts_with("HTTP/1.1 401"), "{second}");
    assert_eq!(served.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refused_request_whose_large_body_is_not_read_is_answered_with_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_issuer, served) = issuer_and_server().await;
    let url = reqwest::Url::parse(&served.mcp_url).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    // A declared megabyte the server has no reason to read for a caller without a token.
    let body = "x".repeat(1 << 20);
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = unauthenticated_post(&host, url.path(), &body);
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // ... and the server does close it.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "the connection stayed open");
}
