//! End-to-end flows over real HTTP on loopback.

mod common;

use common::*;
use mcp_oidc_mock::{MockConfig, MockProvider, SigningAlg, headless};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn discovery_documents_name_every_endpoint_under_the_request_host() {
    let m = start_default().await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let doc: Value = m
            .http
            .get(m.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], json!(m.issuer));
        assert_eq!(doc["token_endpoint"], json!(m.url("/oauth2/token")));
        assert_eq!(
            doc["authorization_endpoint"],
            json!(m.url("/oauth2/authorize"))
        );
        assert_eq!(doc["jwks_uri"], json!(m.url("/jwks")));
        assert_eq!(
            doc["introspection_endpoint"],
            json!(m.url("/oauth2/introspect"))
        );
        assert_eq!(doc["revocation_endpoint"], json!(m.url("/oauth2/revoke")));
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            doc["authorization_response_iss_parameter_supported"],
            json!(true)
        );
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
        assert!(
            doc["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("client_credentials"))
        );
    }
    // Talking to the IP gives an IP issuer, like the reference mock.
    let ip_url = format!("http://{}/.well-known/openid-configuration", m.running.addr);
    let doc: Value = m
        .http
        .get(ip_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], json!(format!("http://{}", m.running.addr)));
}

#[tokio::test]
async fn forwarded_headers_are_ignored_unless_trusted() {
    let plain = start_default().await;
    let trusting = start(MockConfig {
        trust_forwarded_headers: true,
        ..MockConfig::default()
    })
    .await;
    for (m, expected) in [
        (&plain, plain.issuer.clone()),
        (&trusting, "https://idp.example.com".to_owned()),
    ] {
        let doc: Value = m
            .http
            .get(m.url("/.well-known/openid-configuration"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "idp.example.com")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], json!(expected));
    }
}

#[tokio::test]
async fn jwks_publishes_public_keys_with_kid_alg_use_and_cache_control() {
    let m = start_default().await;
    let response = m.http.get(m.url("/jwks")).send().await.unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = response.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], json!(m.running.provider().current_kid()));
    assert!(key.get("d").is_none(), "private part must not be published");
}

#[tokio::test]
async fn authorize_get_shows_an_escaped_form_with_known_and_recent_users() {
    let m = start(MockConfig {
        users: vec![(
            "known<user>".into(),
            claims(json!({"email": "k@example.com"})),
        )],
        ..MockConfig::default()
    })
    .await;
    m.authorize_as(
        &[
            ("client_id", "c"),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
        ],
        "recent\"one",
    )
    .await;
    let params = [
        ("client_id", "<script>alert(1)</script>"),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid mcp:read"),
    ];
    let response = m.http.get(m.authorize_url(&params)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("name=\"sub\""));
    assert!(html.contains("name=\"action\" value=\"deny\""));
    assert!(!html.contains("<script>"), "client_id must be escaped");
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("value=\"known&lt;user&gt;\""));
    assert!(html.contains("value=\"recent&quot;one\""));
    // The form posts back with the query string kept.
    assert!(html.contains("action=\"/oauth2/authorize?client_id=%3Cscript%3E"));
}

#[tokio::test]
async fn full_flow_issues_verifiable_jwt_access_token_with_resource_audience_and_custom_scope() {
    let m = start_default().await;
    m.running.provider().put_user("alice", alice());
    let tokens = m
        .tokens_for(
            "alice",
            "openid profile email mcp:read",
            &[("resource", RESOURCE), ("nonce", "n-0S6")],
        )
        .await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "openid profile email mcp:read");
    assert!(tokens["refresh_token"].is_string());

    let access = tokens["access_token"].as_str().unwrap();
    let (header, claims) = m.verify(access, RESOURCE).await;
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(
        header.kid.as_deref(),
        Some(m.running.provider().current_kid().as_str())
    );
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["client_id"], "test-client");
    assert_eq!(claims["scope"], "openid profile email mcp:read");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice Doe");
    assert_eq!(
        claims["roles"],
        json!(["admin"]),
        "custom claims are always released"
    );
    assert!(
        claims.get("phone_number").is_none(),
        "phone needs the phone scope"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert!(claims["jti"].is_string() && claims["auth_time"].is_u64());

    let id_token = tokens["id_token"].as_str().unwrap();
    let (id_header, id_claims) = m.verify(id_token, "test-client").await;
    assert_eq!(id_header.typ.as_deref(), Some("JWT"));
    assert_eq!(id_claims["aud"], json!(["test-client"]));
    assert_eq!(id_claims["nonce"], "n-0S6");
    assert_eq!(id_claims["email"], "alice@example.com");
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(access.as_bytes());
    let at_hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
    assert_eq!(id_claims["at_hash"], json!(at_hash));

    let (status, info) = m.userinfo(access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        info,
        json!({"sub": "alice", "email": "alice@example.com", "email_verified": true,
                            "name": "Alice Doe", "given_name": "Alice",
                            "preferred_username": "alice", "roles": ["admin"]})
    );
}

#[tokio::test]
async fn access_token_audience_falls_back_to_default_audience_then_client_id() {
    let m = start_default().await;
    let tokens = m.tokens_for("bob", "openid", &[]).await;
    let (_, claims) = m
        .verify(tokens["access_token"].as_str().unwrap(), "test-client")
        .await;
    assert_eq!(claims["aud"], "test-client");

    let m = start(MockConfig {
        default_audience: Some("api://default".into()),
        ..MockConfig::default()
    })
    .await;
    let tokens = m.tokens_for("bob", "openid", &[]).await;
    let (_, claims) = m
        .verify(tokens["access_token"].as_str().unwrap(), "api://default")
        .await;
    assert_eq!(claims["aud"], "api://default");
}

#[tokio::test]
async fn unknown_subject_is_created_with_email_claim_and_userinfo_reflects_later_changes() {
    let m = start_default().await;
    let tokens = m
        .tokens_for("carol@example.com", "openid email profile", &[])
        .await;
    let access = tokens["access_token"].as_str().unwrap();
    let (_, info) = m.userinfo(access).await;
    assert_eq!(
        info,
        json!({"sub": "carol@example.com", "email": "carol@example.com"})
    );

    let response = m
        .http
        .put(m.url("/users/carol@example.com"))
        .json(&json!({"email": "c@example.com", "name": "Carol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, info) = m.userinfo(access).await;
    assert_eq!(
        info,
        json!({"sub": "carol@example.com", "email": "c@example.com", "name": "Carol"})
    );

    // POST with the token in the form body works too (RFC 6750 §2.2).
    let (status, info) = m.form_post("/userinfo", &[("access_token", access)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["sub"], "carol@example.com");
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_stops_working() {
    let m = start_default().await;
    let tokens = m
        .tokens_for("dave", "openid profile", &[("resource", RESOURCE)])
        .await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", first),
        ("client_id", "test-client"),
    ];
    let (status, refreshed) = m.token(&form).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let second = refreshed["refresh_token"].as_str().unwrap();
    assert_ne!(first, second);
    assert!(refreshed["id_token"].is_string());
    let (_, claims) = m
        .verify(refreshed["access_token"].as_str().unwrap(), RESOURCE)
        .await;
    assert_eq!(
        claims["aud"], RESOURCE,
        "refreshed token keeps the resource audience"
    );

    let (status, body) = m.token(&form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");

    // Narrowing scope is allowed, widening is not.
    let narrow = [
        ("grant_type", "refresh_token"),
        ("refresh_token", second),
        ("client_id", "test-client"),
        ("scope", "openid"),
    ];
    let (status, body) = m.token(&narrow).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "openid");
    let third = body["refresh_token"].as_str().unwrap();
    let wide = [
        ("grant_type", "refresh_token"),
        ("refresh_token", third),
        ("client_id", "test-client"),
        ("scope", "openid email"),
    ];
    let (status, body) = m.token(&wide).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
}

#[tokio::test]
async fn no_refresh_token_option_omits_it() {
    let m = start(MockConfig {
        issue_refresh_token: false,
        ..MockConfig::default()
    })
    .await;
    let tokens = m.tokens_for("erin", "openid", &[]).await;
    assert!(tokens.get("refresh_token").is_none());
    assert!(tokens["id_token"].is_string());
}

#[tokio::test]
async fn revoke_user_tokens_invalidates_userinfo_introspection_and_refresh() {
    let m = start_default().await;
    let tokens = m.tokens_for("frank", "openid", &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(m.introspect(access).await["active"], true);

    let response = m
        .http
        .post(m.url("/users/frank/revoke-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let response = m
        .http
        .get(m.url("/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(m.introspect(access).await, json!({"active": false}));
    assert_eq!(m.introspect(refresh).await, json!({"active": false}));
    let (status, body) = m
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "test-client"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The JWT itself still verifies by signature: only stateful checks see revocation.
    m.verify(access, "test-client").await;
}

#[tokio::test]
async fn introspection_describes_jwt_opaque_and_refresh_tokens() {
    let m = start_default().await;
    let tokens = m
        .tokens_for("gina", "openid mcp:read", &[("resource", RESOURCE)])
        .await;
    let info = m.introspect(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "Bearer");
    assert_eq!(info["scope"], "openid mcp:read");
    assert_eq!(info["client_id"], "test-client");
    assert_eq!(info["sub"], "gina");
    assert_eq!(info["aud"], RESOURCE);
    assert_eq!(info["iss"], json!(m.issuer));
    assert!(info["exp"].is_u64() && info["iat"].is_u64());
    let info = m
        .introspect(tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (info["active"].as_bool(), info["token_type"].as_str()),
        (Some(true), Some("refresh_token"))
    );
    assert_eq!(m.introspect("not-a-token").await, json!({"active": false}));

    let m = start(MockConfig {
        opaque_access_tokens: true,
        ..MockConfig::default()
    })
    .await;
    let tokens = m.tokens_for("gina", "openid", &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(access.matches('.').count(), 0, "opaque tokens are not JWTs");
    let info = m.introspect(access).await;
    assert_eq!(
        (info["active"].as_bool(), info["sub"].as_str()),
        (Some(true), Some("gina"))
    );
    let (status, _) = m.userinfo(access).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn revocation_endpoint_revokes_access_and_refresh_tokens_and_accepts_unknown_ones() {
    let m = start_default().await;
    let tokens = m.tokens_for("hank", "openid", &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let revoke = |token: &str| {
        let token = token.to_owned();
        let m = &m;
        async move {
            m.http
                .post(m.url("/oauth2/revoke"))
                .form(&[("token", token.as_str()), ("client_id", "test-client")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(revoke(access).await, StatusCode::OK);
    assert_eq!(m.introspect(access).await["active"], false);
    assert_eq!(m.introspect(refresh).await["active"], true);
    assert_eq!(revoke(refresh).await, StatusCode::OK);
    assert_eq!(m.introspect(refresh).await["active"], false);
    assert_eq!(revoke("never-issued").await, StatusCode::OK);
    let (status, body) = m
        .form_post("/oauth2/revoke", &[("client_id", "test-client")])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

#[tokio::test]
async fn client_credentials_grant_issues_a_jwt_for_the_client_without_id_or_refresh_token() {
    let m = start_default().await;
    let response = m
        .http
        .post(m.url("/oauth2/token"))
        .basic_auth("service-a", Some("s3cret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "mcp:admin"),
            ("resource", RESOURCE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert!(body.get("id_token").is_none() && body.get("refresh_token").is_none());
    let (_, claims) = m
        .verify(body["access_token"].as_str().unwrap(), RESOURCE)
        .await;
    assert_eq!(claims["sub"], "service-a");
    assert_eq!(claims["client_id"], "service-a");
    assert_eq!(claims["scope"], "mcp:admin");
}

#[tokio::test]
async fn registration_with_require_registration_checks_client_secret_and_redirect_uri() {
    let m = start(MockConfig {
        require_registration: true,
        ..MockConfig::default()
    })
    .await;
    let response = m
        .http
        .post(m.url("/oauth2/clients"))
        .json(&json!({"redirect_uris": [REDIRECT], "client_name": "Test", "scope": "openid email"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let client: Value = response.json().await.unwrap();
    let id = client["client_id"].as_str().unwrap();
    let secret = client["client_secret"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(client["client_name"], "Test");
    assert_eq!(client["redirect_uris"], json!([REDIRECT]));
    assert!(client["client_id_issued_at"].is_u64());

    let (code, verifier) = m.code_for("ivy", id, "openid email", &[]).await;
    let token = |secret: &'static str, code: String, verifier: String| {
        let m = &m;
        let id = id.to_owned();
        async move {
            let response = m
                .http
                .post(m.url("/oauth2/token"))
                .basic_auth(&id, Some(secret))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                ])
                .send()
                .await
                .unwrap();
            let status = response.status();
            let challenge = response.headers().get("www-authenticate").cloned();
            (status, challenge, response.json::<Value>().await.unwrap())
        }
    };
    let (status, challenge, body) = token("wrong", code.clone(), verifier.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert!(challenge.unwrap().to_str().unwrap().starts_with("Basic"));
    let secret: &'static str = Box::leak(secret.to_owned().into_boxed_str());
    let (status, _, body) = token(secret, code, verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Unknown clients, unregistered redirect URIs and scopes beyond the
    // registration are refused.
    let response = m
        .http
        .get(m.authorize_url(&[
            ("client_id", "nobody"),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    let response = m
        .http
        .get(m.authorize_url(&[
            ("client_id", id),
            ("redirect_uri", "http://evil.example/cb"),
            ("response_type", "code"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    let response = m
        .authorize_post(
            &[
                ("client_id", id),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("scope", "openid phone"),
            ],
            &[("sub", "ivy")],
        )
        .await;
    assert_eq!(redirect_params(&response)["error"], "invalid_scope");
    let (status, body) = m
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn registered_public_client_uses_no_secret_and_must_not_send_one() {
    let m = start(MockConfig {
        require_registration: true,
        require_pkce: true,
        ..MockConfig::default()
    })
    .await;
    let client: Value = m
        .http
        .post(m.url("/oauth2/clients"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(client.get("client_secret").is_none());
    let id = client["client_id"].as_str().unwrap();
    let (code, verifier) = m.code_for("jo", id, "openid", &[]).await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_id", id),
    ];
    let mut with_secret = base.to_vec();
    with_secret.push(("client_secret", "anything"));
    let (status, body) = m.token(&with_secret).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, body) = m.token(&base).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable_and_signs_new_ones_with_the_new_kid() {
    let m = start_default().await;
    let old_kid = m.running.provider().current_kid();
    let before = m.tokens_for("kim", "openid", &[]).await;

    let response: Value = m
        .http
        .post(m.url("/keys/rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_kid = response["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let jwks = m.jwks().await;
    assert!(jwks.find(&old_kid).is_some() && jwks.find(&new_kid).is_some());

    let (header, _) = m
        .verify(before["access_token"].as_str().unwrap(), "test-client")
        .await;
    assert_eq!(header.kid.as_deref(), Some(old_kid.as_str()));
    let after = m.tokens_for("kim", "openid", &[]).await;
    let (header, _) = m
        .verify(after["access_token"].as_str().unwrap(), "test-client")
        .await;
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));

    // The Rust method does the same.
    let third = m.running.provider().rotate_key();
    assert_eq!(m.jwks().await.keys.len(), 3);
    assert_eq!(m.running.provider().current_kid(), third);
}

#[tokio::test]
async fn rotated_out_keys_leave_the_jwks_after_the_grace_period() {
    let m = start(MockConfig {
        key_grace_period: std::time::Duration::ZERO,
        ..MockConfig::default()
    })
    .await;
    let old = m.running.provider().current_kid();
    m.running.provider().rotate_key();
    let jwks = m.jwks().await;
    assert_eq!(jwks.keys.len(), 1);
    assert!(jwks.find(&old).is_none());
}

#[tokio::test]
async fn key_file_persists_the_signing_key_across_provider_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys").join("mock.pem");
    let config = MockConfig {
        key_file: Some(path.clone()),
        signing_alg: SigningAlg::Rs256,
        ..MockConfig::default()
    };
    let m = start(config.clone()).await;
    let token = m.tokens_for("lee", "openid", &[]).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let kid = m.running.provider().current_kid();
    let first_issuer = m.issuer.clone();
    m.running.stop().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));

    let m = start(config.clone()).await;
    assert_eq!(m.running.provider().current_kid(), kid);
    let (header, _) = m
        .verify_issued_by(&token, "test-client", &first_issuer)
        .await;
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);

    // A rotation is written back, and the old key stays published after a restart.
    let new_kid = m.running.provider().rotate_key();
    m.running.stop().await;
    let m = start(config).await;
    assert_eq!(m.running.provider().current_kid(), new_kid);
    m.verify_issued_by(&token, "test-client", &first_issuer)
        .await;

    // A key file of another algorithm is refused rather than silently used.
    let err = MockProvider::new(MockConfig {
        key_file: Some(path),
        ..MockConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("RS256"), "{err}");
}

#[tokio::test]
async fn headless_fetch_token_and_refresh_work_against_the_mock() {
    let m = start_default().await;
    m.running.provider().put_user("alice", alice());
    let http = headless::http_client().unwrap();
    let mut request = headless::TokenRequest::new(m.issuer.clone(), "alice");
    request.resource = Some(RESOURCE.into());
    request.nonce = Some("abc".into());
    request.client_secret = Some("any secret: with % and +".into());
    request.scope = "openid email mcp:tools".into();
    let tokens = headless::fetch_token(&http, &request).await.unwrap();
    let debug = format!("{tokens:?}");
    assert!(
        !debug.contains(&tokens.access_token),
        "Debug must redact tokens"
    );
    assert!(debug.contains("[redacted]"));
    let (_, claims) = m.verify(&tokens.access_token, RESOURCE).await;
    assert_eq!(claims["scope"], "openid email mcp:tools");

    let refreshed = headless::refresh(
        &http,
        &m.url("/oauth2/token"),
        tokens.refresh_token.as_deref().unwrap(),
        &request.client_id,
        request.client_secret.as_deref(),
    )
    .await
    .unwrap();
    assert_ne!(refreshed.refresh_token, tokens.refresh_token);

    // A denied or failing authorization surfaces as a typed error.
    let mut bad = request.clone();
    bad.redirect_uri = "not a url".into();
    assert!(headless::fetch_token(&http, &bad).await.is_err());
}

#[tokio::test]
async fn end_session_redirects_with_state_or_shows_a_page() {
    let m = start_default().await;
    let response = m
        .http
        .get(m.url("/oauth2/end_session?post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A9401%2Fbye&state=xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()["location"],
        "http://localhost:9401/bye?state=xyz"
    );
    let response = m
        .http
        .post(m.url("/oauth2/end_session"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Signed out"));
}

#[tokio::test]
async fn deny_redirects_with_access_denied_state_and_iss() {
    let m = start_default().await;
    let response = m
        .authorize_post(
            &[
                ("client_id", "c"),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("state", "s1"),
            ],
            &[("action", "deny")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let params = redirect_params(&response);
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "s1");
    assert_eq!(params["iss"], m.issuer);
}

#[tokio::test]
async fn cors_preflight_is_answered_for_browser_clients() {
    let m = start_default().await;
    let response = m
        .http
        .request(reqwest::Method::OPTIONS, m.url("/oauth2/token"))
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn registered_client_may_omit_its_single_redirect_uri_in_both_requests() {
    let m = start(MockConfig {
        require_registration: true,
        ..MockConfig::default()
    })
    .await;
    let client: Value = m
        .http
        .post(m.url("/oauth2/clients"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = client["client_id"].as_str().unwrap();
    let response = m
        .authorize_post(
            &[("client_id", id), ("response_type", "code")],
            &[("sub", "pat")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(REDIRECT)
    );
    let code = redirect_params(&response)["code"].clone();
    let (status, body) = m
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", id),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_dynamically_registered_client_may_step_up_to_scopes_beyond_its_registration() {
    // MCP clients register with the scope of the first challenge and ask for more after a
    // 403 insufficient_scope, without registering again.
    let m = start_default().await;
    let client: Value = m
        .http
        .post(m.url("/oauth2/clients"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "scope": "openid profile email"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = client["client_id"].as_str().unwrap();
    let (code, verifier) = m
        .code_for("jo", id, "openid profile email mcp:write", &[])
        .await;
    let (status, body) = m
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
            ("client_id", id),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "openid profile email mcp:write");
}
