//! Helpers shared by the integration tests: a provider on loopback, the
//! authorization steps, and JWT verification against the published JWKS.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Header, Validation};
use mcp_oidc::types::PkceCodeVerifier;
use mcp_oidc_mock::{MockConfig, MockProvider, RunningMock};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

pub const REDIRECT: &str = "http://localhost:9401/callback";
pub const RESOURCE: &str = "http://localhost:8000/mcp";

pub struct Mock {
    pub running: RunningMock,
    pub issuer: String,
    pub http: reqwest::Client,
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

pub async fn start(config: MockConfig) -> Mock {
    let provider = MockProvider::new(config).expect("provider");
    let running = provider.spawn("127.0.0.1:0").await.expect("spawn");
    let issuer = running.issuer();
    Mock {
        running,
        issuer,
        http: http(),
    }
}

pub async fn start_default() -> Mock {
    start(MockConfig::default()).await
}

pub fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("claims must be an object"),
    }
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = PkceCodeVerifier::new_random();
    let challenge = verifier.challenge_s256().into_inner();
    (verifier.secret().to_owned(), challenge)
}

impl Mock {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn authorize_url(&self, params: &[(&str, &str)]) -> String {
        let query = serde_urlencoded::to_string(params).expect("query");
        self.url(&format!("/oauth2/authorize?{query}"))
    }

    /// POSTs the authorization form and returns the raw response.
    pub async fn authorize_post(
        &self,
        params: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(self.authorize_url(params))
            .form(form)
            .send()
            .await
            .expect("authorize POST")
    }

    /// Authorizes `sub` and returns the redirect's query parameters.
    pub async fn authorize_as(
        &self,
        params: &[(&str, &str)],
        sub: &str,
    ) -> HashMap<String, String> {
        let response = self.authorize_post(params, &[("sub", sub)]).await;
        assert_eq!(
            response.status(),
            StatusCode::FOUND,
            "authorize should redirect"
        );
        redirect_params(&response)
    }

    /// Runs authorization with PKCE and returns (code, verifier).
    pub async fn code_for(
        &self,
        sub: &str,
        client_id: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> (String, String) {
        let (verifier, challenge) = pkce();
        let mut params = vec![
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", scope),
            ("state", "st4te"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        let redirect = self.authorize_as(&params, sub).await;
        assert_eq!(redirect.get("state").map(String::as_str), Some("st4te"));
        assert_eq!(redirect.get("iss"), Some(&self.issuer));
        (redirect["code"].clone(), verifier)
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/oauth2/token"))
            .form(form)
            .send()
            .await
            .expect("token POST");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Full flow for a public client: returns the token response.
    pub async fn tokens_for(&self, sub: &str, scope: &str, extra: &[(&str, &str)]) -> Value {
        let (code, verifier) = self.code_for(sub, "test-client", scope, extra).await;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", "test-client"),
            ("code_verifier", verifier.as_str()),
        ];
        form.extend(extra.iter().filter(|(k, _)| *k == "resource").copied());
        let (status, body) = self.token(&form).await;
        assert_eq!(status, StatusCode::OK, "token exchange failed: {body}");
        body
    }

    pub async fn form_post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn userinfo(&self, token: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url("/userinfo"))
            .bearer_auth(token)
            .send()
            .await
            .expect("userinfo");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn introspect(&self, token: &str) -> Value {
        let (status, body) = self
            .form_post(
                "/oauth2/introspect",
                &[("token", token), ("client_id", "rs")],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    pub async fn jwks(&self) -> JwkSet {
        self.http
            .get(self.url("/jwks"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json")
    }

    /// Verifies a JWT with the published JWKS, checking iss, exp and aud.
    pub async fn verify(&self, token: &str, audience: &str) -> (Header, Value) {
        self.verify_issued_by(token, audience, &self.issuer).await
    }

    /// Like `verify`, for a token issued under another issuer URL (an earlier
    /// instance on another port).
    pub async fn verify_issued_by(
        &self,
        token: &str,
        audience: &str,
        issuer: &str,
    ) -> (Header, Value) {
        let header = jsonwebtoken::decode_header(token).expect("JWT header");
        let jwks = self.jwks().await;
        let kid = header.kid.clone().expect("kid");
        let jwk = jwks.find(&kid).expect("kid published in JWKS");
        let key = DecodingKey::from_jwk(jwk).expect("decoding key");
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).expect("JWT verifies");
        (data.header, data.claims)
    }
}

pub fn redirect_params(response: &reqwest::Response) -> HashMap<String, String> {
    let location = response
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("ascii location");
    let url = url::Url::parse(location).expect("absolute Location");
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn alice() -> Map<String, Value> {
    claims(json!({
        "email": "alice@example.com",
        "email_verified": true,
        "name": "Alice Doe",
        "given_name": "Alice",
        "preferred_username": "alice",
        "phone_number": "+1 555 0100",
        "roles": ["admin"],
    }))
}
