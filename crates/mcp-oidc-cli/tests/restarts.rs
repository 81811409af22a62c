//! `kill -9` in the middle of an OAuth flow and of a burst of tool calls: after a restart,
//! every completed registration, refresh token and access token still works, and a flow
//! interrupted at the consent page can still be completed.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mcp_oidc_cli::browser::{Browser, Person};
use serde_json::{Value, json};

mod common;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-oidc");

async fn start_server(issuer: &str, port: u16, state: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--issuer",
            issuer,
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--base-url", &format!("http://localhost:{port}")])
        .args([
            "--upstream-client-id",
            "proxy-client",
            "--upstream-client-secret",
            "proxy-secret",
        ])
        .arg("--state-dir")
        .arg(state)
        .env(
            "MCP_OIDC_PROXY_SECRET",
            "a-test-proxy-secret-that-is-long-enough-0123456789",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = http
            .get(format!(
                "http://localhost:{port}/.well-known/oauth-authorization-server"
            ))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return child;
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill_9(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
}

async fn exchange(base: &str, client_id: &str, code: &str, verifier: &str) -> Value {
    let (status, body) = token_request(
        base,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn state_survives_kill_9_during_a_flow_and_during_a_burst_of_calls() {
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://localhost:{port}");
    let mut server = start_server(&idp.issuer(), port, dir.path()).await;

    // A completed registration and sign-in.
    let client: Value = reqwest::Client::new()
        .post(format!("{base}/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "survivor"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let Pkce {
        verifier,
        challenge,
    } = pkce();
    let person = Person {
        user: "testuser".into(),
        approve: true,
        remember: false,
    };
    let back = Browser::new()
        .sign_in(
            &authorize_url(&base, &client_id, &challenge),
            REDIRECT,
            &person,
        )
        .await
        .unwrap();
    let tokens = exchange(&base, &client_id, &back.params["code"], &verifier).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // A flow interrupted at the consent page: the browser holds the page and its cookie.
    let Pkce {
        verifier: verifier2,
        challenge: challenge2,
    } = pkce();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(authorize_url(&base, &client_id, &challenge2))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookie = first_cookie(&page);
    let html = page.text().await.unwrap();
    let field = |name: &str| form_field(&html, name);
    let (txn, csrf) = (field("transaction"), field("csrf_token"));

    // A burst of tool calls, killed in the middle.
    let burst: Vec<_> = (0..64)
        .map(|_| {
            let (b, t) = (base.clone(), access.clone());
            tokio::spawn(async move { mcp_status(&format!("{b}/mcp"), &t).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    kill_9(&server);
    let _ = server.wait().await;
    for b in burst {
        let status = b.await.unwrap();
        assert!(
            status == 200 || status == 0,
            "a call either completed or lost its connection: {status}"
        );
    }

    server = start_server(&idp.issuer(), port, dir.path()).await;
    // The access token and the refresh token still work.
    assert_eq!(mcp_status(&format!("{base}/mcp"), &access).await, 200);
    let r = reqwest::Client::new()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "refresh token survived kill -9");
    // The interrupted flow resumes where it stopped.
    let r = http
        .post(format!("{base}/consent"))
        .header("cookie", &cookie)
        .form(&[
            ("transaction", txn.as_str()),
            ("csrf_token", csrf.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "consent after restart");
    let upstream = r.headers()["location"].to_str().unwrap().to_owned();
    // The consent answer binds the rest of the flow to this browser with a new cookie.
    let binding = first_cookie(&r);
    let (name, value) = binding.split_once('=').unwrap();
    let mut browser = Browser::new();
    browser.add_cookie(&base, name, value);
    let back = browser.sign_in(&upstream, REDIRECT, &person).await.unwrap();
    let resumed = exchange(&base, &client_id, &back.params["code"], &verifier2).await;
    assert_eq!(
        mcp_status(
            &format!("{base}/mcp"),
            resumed["access_token"].as_str().unwrap()
        )
        .await,
        200
    );

    // And the registration itself is still known.
    let page = http
        .get(authorize_url(&base, &client_id, &challenge2))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("survivor"));
    kill_9(&server);
    let _ = server.wait().await;
}

/// `mcp-oidc serve` without the proxy, its sessions kept in SQLite under `state`.
async fn start_session_server(
    issuer: &str,
    port: u16,
    state: &std::path::Path,
) -> tokio::process::Child {
    start_session_instance(
        issuer,
        port,
        &format!("http://localhost:{port}"),
        state,
        &[],
    )
    .await
}

/// One instance of a server at `base`, listening on `port`, its sessions in SQLite under
/// `state` (which several instances may share).
async fn start_session_instance(
    issuer: &str,
    port: u16,
    base: &str,
    state: &std::path::Path,
    extra: &[&str],
) -> tokio::process::Child {
    let child = tokio::process::Command::new(BIN)
        .args(["serve", "--issuer", issuer])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--base-url", base])
        .args(["--store", "sqlite", "--state-dir"])
        .arg(state)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let prm = format!("http://localhost:{port}/.well-known/oauth-protected-resource/mcp");
    while !reqwest::get(&prm).await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// An access token of `user` for the resource `mcp`, through the provider's sign-in.
async fn token_for(idp: &mcp_oidc_mock::RunningMock, user: &str, mcp: &str) -> String {
    let http = mcp_oidc_mock::headless::http_client().unwrap();
    let mut req = mcp_oidc_mock::headless::TokenRequest::new(idp.issuer(), user);
    req.resource = Some(mcp.to_owned());
    mcp_oidc_mock::headless::fetch_token(&http, &req)
        .await
        .unwrap()
        .access_token
}

/// Opens a session (`initialize`, then `notifications/initialized`); its id.
async fn open_session(mcp: &str, token: &str) -> String {
    let r = initialize(mcp, token).await.unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await;
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(on_session(mcp, &session, token, initialized).await.0, 202);
    session
}

const WHOAMI: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;

/// A POST on an MCP session; the status and the body.
async fn on_session(mcp: &str, session: &str, token: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(mcp)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn an_mcp_session_survives_kill_9_and_still_belongs_to_its_owner_only() {
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mcp = format!("http://localhost:{port}/mcp");
    let alice = token_for(&idp, "alice", &mcp).await;
    let bob = token_for(&idp, "bob", &mcp).await;

    let server = start_session_server(&idp.issuer(), port, dir.path()).await;
    let session = open_session(&mcp, &alice).await;
    let whoami = WHOAMI;
    let (status, body) = on_session(&mcp, &session, &alice, whoami).await;
    assert_eq!(status, 200, "{body}");

    kill_9(&server);
    drop(server);
    let _server = start_session_server(&idp.issuer(), port, dir.path()).await;

    let (status, _) = on_session(&mcp, &session, &bob, whoami).await;
    assert_eq!(
        status, 404,
        "another user's token must not reach the restored session"
    );
    let (status, body) = on_session(&mcp, &session, &alice, whoami).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"\"sub\":\"alice\""#), "{body}");
    let (status, _) = on_session(&mcp, "not-a-session", &alice, whoami).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_session_deleted_through_one_instance_is_refused_by_another_sharing_the_store() {
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    // Two instances of one server (one base URL, one store), as behind a load balancer.
    let base = format!("http://localhost:{port_a}");
    let (mcp_a, mcp_b) = (
        format!("{base}/mcp"),
        format!("http://localhost:{port_b}/mcp"),
    );
    let alice = token_for(&idp, "alice", &mcp_a).await;
    let recheck = ["--session-store-recheck-secs", "1"];
    let _a = start_session_instance(&idp.issuer(), port_a, &base, dir.path(), &recheck).await;
    let _b = start_session_instance(&idp.issuer(), port_b, &base, dir.path(), &recheck).await;

    let session = open_session(&mcp_a, &alice).await;
    assert_eq!(on_session(&mcp_a, &session, &alice, WHOAMI).await.0, 200);
    // A stream for server-initiated messages, held open on the first instance.
    let mut stream = reqwest::Client::new()
        .get(&mcp_a)
        .bearer_auth(&alice)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let stream_ended = tokio::spawn(async move { while let Ok(Some(_)) = stream.chunk().await {} });
    let (status, body) = on_session(&mcp_b, &session, &alice, WHOAMI).await;
    assert_eq!(
        status, 200,
        "the other instance resumes it from the store: {body}"
    );

    let r = reqwest::Client::new()
        .delete(&mcp_b)
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(on_session(&mcp_b, &session, &alice, WHOAMI).await.0, 404);

    // The first instance still holds the session live; its next check of the store ends it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = on_session(&mcp_a, &session, &alice, WHOAMI).await;
    assert_eq!(status, 404, "deleted through the other instance: {body}");
    // ... and the session's live worker there ends, with its open stream.
    tokio::time::timeout(Duration::from_secs(5), stream_ended)
        .await
        .expect("the deleted session's stream on the first instance ends")
        .unwrap();
}

#[tokio::test]
async fn a_server_restarted_while_its_provider_is_down_still_verifies_tokens() {
    let idp = start_idp().await;
    let issuer = idp.issuer();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mcp = format!("http://localhost:{port}/mcp");
    let alice = token_for(&idp, "alice", &mcp).await;

    let server = start_session_server(&issuer, port, dir.path()).await;
    let session = open_session(&mcp, &alice).await;
    assert_eq!(on_session(&mcp, &session, &alice, WHOAMI).await.0, 200);
    kill_9(&server);
    drop(server);
    idp.shutdown();

    // The provider is gone; the keys the last run kept in the store still verify.
    let _server = start_session_server(&issuer, port, dir.path()).await;
    let (status, body) = on_session(&mcp, &session, &alice, WHOAMI).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"\"sub\":\"alice\""#), "{body}");
    let ready = reqwest::get(format!("http://localhost:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
