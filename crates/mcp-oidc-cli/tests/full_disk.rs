//! The OAuth proxy's SQLite store on a full disk: a clear 503, no corruption, no lost
//! registration, and recovery once space is free. The disk is a small tmpfs mounted for
//! the test (the test needs the privilege to mount, as the CI user has).

use std::path::{Path, PathBuf};
use std::process::Command;

use mcp_oidc_cli::config::Settings;
use serde_json::{Value, json};

mod common;

use common::serve_in_background;

struct TinyDisk {
    path: PathBuf,
}

impl TinyDisk {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mcp-oidc-full-disk-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs and needs the privilege to do so (run it as root)"
        );
        Self { path: dir }
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn fill(path: &Path) -> usize {
    // Write until the disk refuses: the filler file holds everything that was free.
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut written = 0;
    while f.write_all(&chunk).is_ok() && f.flush().is_ok() {
        written += chunk.len();
    }
    let _ = f.sync_all();
    written
}

async fn register(http: &reqwest::Client, base: &str, name: &str) -> (u16, Value) {
    let r = http
        .post(format!("{base}/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:7777/cb"], "token_endpoint_auth_method": "none", "client_name": name}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_full_disk_gives_a_clear_503_loses_no_registration_and_recovers() {
    let disk = TinyDisk::mount("2m");
    let idp = mcp_oidc_mock::MockProvider::new(mcp_oidc_mock::MockConfig::default())
        .unwrap()
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://localhost:{port}");
    let settings = Settings {
        issuer: Some(idp.issuer()),
        bind: Some(format!("127.0.0.1:{port}")),
        upstream_client_id: Some("proxy-client".into()),
        upstream_client_secret: Some("proxy-client-secret".into()),
        proxy_secret: Some("a-test-proxy-secret-that-is-long-enough-0123456789".into()),
        store: Some("sqlite".into()),
        state_dir: Some(disk.path.join("state")),
        register_rate_limit: Some(0),
        ..Settings::default()
    };
    let server = serve_in_background(settings, listener);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !http
        .get(format!("{base}/jwks"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (status, first) = register(&http, &base, "before the disk filled").await;
    assert_eq!(status, 201);
    let filler = disk.path.join("filler");
    assert!(fill(&filler) > 0);

    // Keep registering until the store cannot write: each refusal must be a clean 503.
    let mut refused = None;
    for i in 0..500 {
        let (status, body) =
            register(&http, &base, &format!("client {i} {}", "x".repeat(150))).await;
        match status {
            201 => continue,
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let body = refused.expect("the full disk was never noticed");
    assert_eq!(body["error"], "temporarily_unavailable");

    // Free the space: registration works again and nothing earlier was lost or corrupted.
    std::fs::remove_file(&filler).unwrap();
    let (status, _) = register(&http, &base, "after").await;
    assert_eq!(status, 201);
    let page = http
        .get(format!(
            "{base}/authorize?response_type=code&client_id={}&redirect_uri=http%3A%2F%2F127.0.0.1%3A7777%2Fcb&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
            first["client_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the first registration survived");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("before the disk filled")
    );
    server.abort();
    let _ = server.await;
    let db = disk.path.join("state/mcp-oidc.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
