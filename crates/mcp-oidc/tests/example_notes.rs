//! The library example `examples/notes.rs`, served on loopback and used through rmcp's
//! client with tokens the mock provider issued: what a newcomer copies must work.

#[path = "../examples/notes.rs"]
#[allow(dead_code)] // the example's `main` is not used here
mod notes;

use mcp_oidc_mock::headless::{self, TokenRequest};
use mcp_oidc_mock::{MockConfig, MockProvider};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Map, Value, json};

type Client = RunningService<rmcp::RoleClient, ClientConfig>;

async fn sign_in(issuer: &str, user: &str, scope: &str, mcp: &str) -> Client {
    let http = headless::http_client().unwrap();
    let mut req = TokenRequest::new(issuer, user);
    req.scope = scope.to_owned();
    req.resource = Some(mcp.to_owned());
    let token = headless::fetch_token(&http, &req).await.unwrap();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(mcp.to_owned())
            .auth_header(token.access_token),
    );
    ClientConfig::default().serve(transport).await.unwrap()
}

/// Calls `tool`; its text, or the error as text.
async fn call(client: &Client, tool: &str, args: Value) -> Result<String, String> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(args) = args {
        params = params.with_arguments(args);
    }
    let result = client.call_tool(params).await.map_err(|e| e.to_string())?;
    Ok(result.content[0].as_text().unwrap().text.clone())
}

async fn tools(client: &Client) -> Vec<String> {
    let listed = client.list_tools(None).await.unwrap();
    listed.tools.iter().map(|t| t.name.to_string()).collect()
}

#[tokio::test]
async fn the_notes_example_keeps_each_users_notes_apart_and_guards_clearing_with_a_scope() {
    let person = |name: &str| {
        let claims = json!({"email": format!("{name}@example.com"), "name": name});
        (
            name.to_owned(),
            claims.as_object().cloned().unwrap_or_else(Map::new),
        )
    };
    let idp = MockProvider::new(MockConfig {
        users: vec![person("alice"), person("bob")],
        ..MockConfig::default()
    })
    .unwrap()
    .spawn("127.0.0.1:0")
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = notes::app(&idp.issuer(), &base).unwrap();
    tokio::spawn(mcp_oidc::serve(listener, app, std::future::pending()));
    let mcp = format!("{base}/mcp");

    // Without a token: the challenge that starts a client's sign-in.
    let anonymous = reqwest::Client::new()
        .post(&mcp)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let alice = sign_in(&idp.issuer(), "alice", "openid profile email", &mcp).await;
    let admin = format!("openid profile email {}", notes::ADMIN_SCOPE);
    let bob = sign_in(&idp.issuer(), "bob", &admin, &mcp).await;

    let added = call(&alice, "add_note", json!({"text": "buy milk"})).await;
    assert_eq!(added.unwrap(), "alice now has 1 note(s)");
    assert_eq!(
        call(&alice, "my_notes", json!({})).await.unwrap(),
        "buy milk"
    );
    assert_eq!(
        call(&bob, "my_notes", json!({})).await.unwrap(),
        "",
        "not bob's"
    );

    // Clearing needs notes:admin: hidden from alice, refused to her, allowed to bob.
    assert!(!tools(&alice).await.contains(&"clear_all_notes".to_owned()));
    assert!(tools(&bob).await.contains(&"clear_all_notes".to_owned()));
    let refused = call(&alice, "clear_all_notes", json!({})).await;
    // rmcp's client reports the 403 `insufficient_scope` challenge as such.
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("Insufficient scope")),
        "{refused:?}"
    );
    assert_eq!(
        call(&alice, "my_notes", json!({})).await.unwrap(),
        "buy milk"
    );
    let cleared = call(&bob, "clear_all_notes", json!({})).await;
    assert_eq!(cleared.unwrap(), "deleted 1 note(s)");
    assert_eq!(call(&alice, "my_notes", json!({})).await.unwrap(), "");
}
