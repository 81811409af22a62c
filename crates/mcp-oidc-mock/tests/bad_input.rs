//! Bad input to every endpoint gets the right OAuth error and status.

mod common;

use common::*;
use mcp_oidc_mock::MockConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn authz<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("client_id", "test-client"),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("state", "s"),
    ];
    params.extend_from_slice(extra);
    params
}

async fn redirect_error(m: &Mock, params: &[(&str, &str)]) -> String {
    let response = m.authorize_post(params, &[("sub", "u")]).await;
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "expected an error redirect"
    );
    let p = redirect_params(&response);
    assert_eq!(p.get("state").map(String::as_str), Some("s"));
    assert_eq!(
        p.get("iss"),
        Some(&m.issuer),
        "RFC 9207 iss on error responses too"
    );
    assert!(!p.contains_key("code"));
    p["error"].clone()
}

#[tokio::test]
async fn authorize_errors_redirect_with_the_right_code_once_the_redirect_uri_is_trusted() {
    let m = start(MockConfig {
        require_nonce: true,
        ..MockConfig::default()
    })
    .await;
    let (_, challenge) = pkce();
    let ch = challenge.as_str();
    assert_eq!(
        redirect_error(
            &m,
            &[
                ("client_id", "c"),
                ("redirect_uri", REDIRECT),
                ("state", "s")
            ]
        )
        .await,
        "invalid_request"
    );
    assert_eq!(
        redirect_error(
            &m,
            &[
                ("client_id", "c"),
                ("redirect_uri", REDIRECT),
                ("response_type", "token"),
                ("state", "s")
            ]
        )
        .await,
        "unsupported_response_type"
    );
    assert_eq!(
        redirect_error(
            &m,
            &authz(&[("code_challenge", ch), ("code_challenge_method", "plain")])
        )
        .await,
        "invalid_request"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("code_challenge", ch)])).await,
        "invalid_request"
    );
    assert_eq!(
        redirect_error(
            &m,
            &authz(&[
                ("code_challenge", "short"),
                ("code_challenge_method", "S256")
            ])
        )
        .await,
        "invalid_request"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("code_challenge_method", "S256")])).await,
        "invalid_request"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("scope", "openid")])).await,
        "invalid_request",
        "nonce required"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("scope", "bad\"scope")])).await,
        "invalid_scope"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("resource", "not-absolute")])).await,
        "invalid_target"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("resource", "http://x/#frag")])).await,
        "invalid_target"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("response_mode", "fragment")])).await,
        "invalid_request"
    );
    assert_eq!(
        redirect_error(&m, &authz(&[("scope", "a"), ("scope", "b")])).await,
        "invalid_request"
    );
}

#[tokio::test]
async fn require_pkce_rejects_authorization_without_a_challenge() {
    let m = start(MockConfig {
        require_pkce: true,
        ..MockConfig::default()
    })
    .await;
    assert_eq!(redirect_error(&m, &authz(&[])).await, "invalid_request");
}

#[tokio::test]
async fn untrusted_redirect_uris_get_an_error_page_never_a_redirect() {
    let m = start_default().await;
    for params in [
        vec![("redirect_uri", REDIRECT), ("response_type", "code")],
        vec![("client_id", "c"), ("response_type", "code")],
        vec![
            ("client_id", "c"),
            ("redirect_uri", "relative/path"),
            ("response_type", "code"),
        ],
        vec![
            ("client_id", "c"),
            ("redirect_uri", "javascript:alert(1)"),
            ("response_type", "code"),
        ],
        vec![
            ("client_id", "c"),
            ("redirect_uri", "http://x/cb#frag"),
            ("response_type", "code"),
        ],
        vec![
            ("client_id", "c"),
            ("client_id", "d"),
            ("redirect_uri", REDIRECT),
        ],
    ] {
        for response in [
            m.http.get(m.authorize_url(&params)).send().await.unwrap(),
            m.authorize_post(&params, &[("sub", "u")]).await,
        ] {
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{params:?}");
            assert!(response.headers().get("location").is_none());
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
        }
    }
    // A missing subject is shown on the page, like the reference mock.
    let response = m.authorize_post(&authz(&[]), &[("sub", "")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = m
        .authorize_post(&authz(&[]), &[("sub", &"x".repeat(300))])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

async fn exchange(
    m: &Mock,
    code: &str,
    verifier: Option<&str>,
    redirect: &str,
    client: &str,
) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", client),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    m.token(&form).await
}

#[tokio::test]
async fn wrong_or_missing_pkce_verifier_gets_invalid_grant() {
    let m = start_default().await;
    let (code, _) = m.code_for("u", "test-client", "openid", &[]).await;
    let (wrong, _) = pkce();
    let (status, body) = exchange(&m, &code, Some(&wrong), REDIRECT, "test-client").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let (code, _) = m.code_for("u", "test-client", "openid", &[]).await;
    let (status, body) = exchange(&m, &code, None, REDIRECT, "test-client").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // A verifier for a code issued without a challenge is a downgrade attempt.
    let redirect = m.authorize_as(&authz(&[]), "u").await;
    let (status, body) =
        exchange(&m, &redirect["code"], Some(&wrong), REDIRECT, "test-client").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn reused_code_gets_invalid_grant_and_revokes_tokens() {
    let m = start_default().await;
    let (code, verifier) = m.code_for("u", "test-client", "openid", &[]).await;
    let (status, tokens) = exchange(&m, &code, Some(&verifier), REDIRECT, "test-client").await;
    assert_eq!(status, StatusCode::OK);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(m.introspect(access).await["active"], true);
    let (status, body) = exchange(&m, &code, Some(&verifier), REDIRECT, "test-client").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(m.introspect(access).await["active"], false);
    assert_eq!(
        m.introspect(tokens["refresh_token"].as_str().unwrap())
            .await["active"],
        false
    );
}

#[tokio::test]
async fn code_is_bound_to_redirect_uri_and_client() {
    let m = start_default().await;
    let (code, verifier) = m.code_for("u", "test-client", "openid", &[]).await;
    let (status, body) = exchange(
        &m,
        &code,
        Some(&verifier),
        "http://localhost:9401/other",
        "test-client",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let (code, verifier) = m.code_for("u", "test-client", "openid", &[]).await;
    let (status, body) = exchange(&m, &code, Some(&verifier), REDIRECT, "other-client").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let (status, body) = exchange(&m, "made-up-code", None, REDIRECT, "test-client").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // A resource not part of the authorization is refused.
    let (code, verifier) = m
        .code_for("u", "test-client", "openid", &[("resource", RESOURCE)])
        .await;
    let (status, body) = m
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "test-client"),
            ("code_verifier", &verifier),
            ("resource", "http://other/"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
}

#[tokio::test]
async fn token_endpoint_rejects_malformed_requests_with_rfc6749_errors() {
    let m = start_default().await;
    type Case = (Vec<(&'static str, &'static str)>, StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        (vec![], StatusCode::BAD_REQUEST, "invalid_request"),
        (
            vec![("grant_type", "password"), ("client_id", "c")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            vec![("grant_type", "authorization_code")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![("grant_type", "authorization_code"), ("client_id", "c")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![("grant_type", "refresh_token"), ("client_id", "c")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "c"),
                ("refresh_token", "nope"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("grant_type", "refresh_token"),
                ("client_id", "c"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "c"),
                ("scope", "a\\b"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "c"),
                ("resource", "rel"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_target",
        ),
    ];
    for (form, status, error) in cases {
        let response = m
            .http
            .post(m.url("/oauth2/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{form:?}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{form:?}");
    }
    // Garbage bodies and wrong content types.
    for (content_type, body) in [
        (
            "application/json",
            b"{\"grant_type\":\"client_credentials\"}".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            vec![0xff, 0xfe, b'=', 0x80],
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=%ZZ%&&==".to_vec(),
        ),
    ] {
        let response = m
            .http
            .post(m.url("/oauth2/token"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"] == "invalid_request" || body["error"] == "unsupported_grant_type",
            "{body}"
        );
    }
    // Malformed Basic credentials.
    let response = m
        .http
        .post(m.url("/oauth2/token"))
        .header("authorization", "Basic !!!")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    // Two authentication methods at once.
    let response = m
        .http
        .post(m.url("/oauth2/token"))
        .basic_auth("c", Some("s"))
        .form(&[("grant_type", "client_credentials"), ("client_secret", "s")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn userinfo_rejects_missing_and_bad_tokens_with_bearer_challenges() {
    let m = start_default().await;
    let response = m.http.get(m.url("/userinfo")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (status, body) = m.userinfo("garbage").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let response = m
        .http
        .get(m.url("/userinfo"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn put_user_rejects_non_object_and_garbage_json() {
    let m = start_default().await;
    for body in ["[1,2]", "\"x\"", "{not json", "", "null"] {
        let response = m
            .http
            .put(m.url("/users/zed"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
}

#[tokio::test]
async fn registration_rejects_bad_metadata() {
    let m = start_default().await;
    let cases = [
        (json!({}), "invalid_redirect_uri"),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": "http://x/cb"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["not a uri"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["http://x/cb#f"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["password"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (json!([1]), "invalid_client_metadata"),
    ];
    for (body, error) in cases {
        let response = m
            .http
            .post(m.url("/oauth2/clients"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            error,
            "{body}"
        );
    }
    let response = m
        .http
        .post(m.url("/oauth2/clients"))
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn introspection_and_revocation_require_client_authentication() {
    let m = start(MockConfig {
        require_registration: true,
        ..MockConfig::default()
    })
    .await;
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let (status, body) = m.form_post(path, &[("token", "t")]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client"))
        );
        let (status, body) = m
            .form_post(path, &[("token", "t"), ("client_id", "unknown")])
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client"))
        );
    }
    let (status, body) = m
        .form_post("/oauth2/introspect", &[("client_id", "x")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn end_session_rejects_unsafe_redirect_targets() {
    let m = start_default().await;
    let response = m
        .http
        .get(m.url("/oauth2/end_session?post_logout_redirect_uri=javascript%3Aalert(1)"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn bad_host_header_is_rejected_not_reflected() {
    let m = start_default().await;
    let response = m
        .http
        .get(m.url("/.well-known/openid-configuration"))
        .header("host", "evil\"host")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
