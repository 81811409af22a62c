//! Load driver of `bench/run` for what `oha` cannot do: MCP sessions with a strictly
//! unique JSON-RPC id per request, many live sessions, and OAuth-proxy token issuance.
//!
//! Subcommands (each prints one JSON object on stdout, or writes it to `--out`):
//!
//! - `mcp`: N connections, each exactly one HTTP/1.1 connection (and, with `--stateful`, its
//!   own session: `initialize` + `notifications/initialized`, then `Mcp-Session-Id` on
//!   every call). Every request is a `tools/call` with a process-wide unique id; a 200
//!   counts only if its answer carries that id and a result. Runs a warm-up, then a fixed
//!   measured window; latencies of the requests started in the window give p50/p99.
//! - `sessions`: initializes `--count` sessions, prints a `ready` line, waits for a line on
//!   stdin (the caller measures the server meanwhile), then checks that a sample of the
//!   sessions still answers and prints the result.
//! - `codes`: registers a public client at an OAuth proxy and walks the real sign-in
//!   (`/authorize` → consent → upstream login → `/auth/callback`) with the scripted
//!   browser `--count` times, writing one authorization code (with its PKCE verifier) per
//!   line.
//! - `exchange`: redeems such codes at `/token` (`authorization_code` + PKCE) over N
//!   connections as fast as it can; writes the refresh tokens it gets to `--refresh-out`.
//! - `refresh`: N refresh chains, one per connection, each grant using the refresh token
//!   of the previous answer, for a fixed time.
//! - `verify`: what one full token verification costs (signature and claims, the work of
//!   every request when the verified-token cache is off), with mcp-oidc's own verifier on
//!   one thread, without HTTP.
//!
//! ```text
//! cargo run --release -p mcp-oidc-bench --bin bench_load -- mcp \
//!     --url http://127.0.0.1:8000/mcp --token "$TOKEN" --stateful --connections 32 \
//!     --duration-secs 10 --warmup-secs 2
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use mcp_oidc::types::PkceCodeVerifier;
use mcp_oidc_cli::browser::{Browser, Person};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const PROTOCOL: &str = "2025-06-18";
const REDIRECT: &str = "http://127.0.0.1:7777/callback";

#[derive(Parser, Debug)]
#[command(about = "Load driver for bench/run")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// `tools/call` load, stateless or one session per connection.
    Mcp(McpArgs),
    /// Open many sessions and hold them while the caller measures the server.
    Sessions(SessionArgs),
    /// Pre-generate authorization codes through the real sign-in flow.
    Codes(CodeArgs),
    /// Redeem pre-generated codes at /token as fast as possible.
    Exchange(ExchangeArgs),
    /// Chained refresh-token rotations, one chain per connection.
    Refresh(RefreshArgs),
    /// Time full token verifications (no cache, no HTTP) with mcp-oidc's verifier.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The token's issuer (keys found by discovery, as `mcp-oidc serve` does).
    #[arg(long)]
    issuer: String,
    /// The audience the token carries (the resource URL it was issued for).
    #[arg(long)]
    audience: String,
    /// The token to verify, again and again.
    #[arg(long, env = "BENCH_TOKEN")]
    token: String,
    /// Verifications per batch; the median batch is reported. Process CPU time is counted
    /// in 10 ms ticks: a batch must take far longer than that.
    #[arg(long, default_value_t = 20000)]
    iterations: u32,
    /// Batches.
    #[arg(long, default_value_t = 5)]
    batches: u32,
}

#[derive(Args, Debug)]
struct Common {
    /// Connections (concurrent workers, one HTTP/1.1 connection each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Write the JSON result here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct McpArgs {
    #[command(flatten)]
    common: Common,
    /// The MCP endpoint.
    #[arg(long)]
    url: String,
    /// Bearer token sent on every request (none if absent).
    #[arg(long, env = "BENCH_TOKEN")]
    token: Option<String>,
    /// One session per connection (initialize first, then Mcp-Session-Id).
    #[arg(long)]
    stateful: bool,
    /// Tool to call.
    #[arg(long, default_value = "process_data")]
    tool: String,
    /// Also count a JSON-RPC error answer to the request's own id as answered (for a
    /// server whose tools refuse the call, e.g. one without authentication).
    #[arg(long)]
    accept_rpc_error: bool,
    /// Measured window, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Load before the measured window, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
}

#[derive(Args, Debug)]
struct SessionArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    url: String,
    #[arg(long, env = "BENCH_TOKEN")]
    token: Option<String>,
    /// Sessions to open.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Sessions checked with a `tools/call` after the hold.
    #[arg(long, default_value_t = 100)]
    check: usize,
}

#[derive(Args, Debug)]
struct CodeArgs {
    #[command(flatten)]
    common: Common,
    /// Base URL of the OAuth proxy (its issuer), e.g. http://localhost:8000.
    #[arg(long)]
    base: String,
    /// Codes to generate.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Subject typed into the upstream login form.
    #[arg(long, default_value = "benchuser")]
    user: String,
    /// Where to write the codes (JSON lines).
    #[arg(long)]
    codes_out: PathBuf,
}

#[derive(Args, Debug)]
struct ExchangeArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    base: String,
    /// The codes file written by `codes`.
    #[arg(long)]
    codes: PathBuf,
    /// Where to write the refresh tokens obtained (one per line, after the client id line).
    #[arg(long)]
    refresh_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RefreshArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    base: String,
    /// File written by `exchange --refresh-out`: the client id, then refresh tokens.
    #[arg(long)]
    seeds: PathBuf,
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    lat_us: Vec<u32>,
    codes: BTreeMap<u16, u64>,
    ok: u64,
    errors: u64,
    bad: u64,
    /// TCP connections opened, by every worker together (reconnects after errors too).
    opened: u64,
    first_problem: Option<String>,
}

impl Tally {
    fn problem(&mut self, what: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }

    fn merge(&mut self, o: Tally) {
        self.lat_us.extend(o.lat_us);
        for (k, v) in o.codes {
            *self.codes.entry(k).or_default() += v;
        }
        self.ok += o.ok;
        self.errors += o.errors;
        self.bad += o.bad;
        self.opened += o.opened;
        if self.first_problem.is_none() {
            self.first_problem = o.first_problem;
        }
    }

    fn report(mut self, mode: &str, connections: usize, secs: f64) -> Value {
        self.lat_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.lat_us.is_empty() {
                return 0.0;
            }
            let i = ((p / 100.0) * self.lat_us.len() as f64).ceil() as usize;
            f64::from(self.lat_us[i.clamp(1, self.lat_us.len()) - 1]) / 1000.0
        };
        let requests: u64 = self.codes.values().sum::<u64>() + self.errors;
        json!({
            "mode": mode,
            "connections": connections,
            "measured_s": secs,
            "requests": requests,
            "ok": self.ok,
            "rps": if secs > 0.0 { self.ok as f64 / secs } else { 0.0 },
            "status_codes": self.codes.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "errors": self.errors,
            "bad_answers": self.bad,
            "connections_opened": self.opened,
            "p50_ms": pct(50.0),
            "p90_ms": pct(90.0),
            "p99_ms": pct(99.0),
            "max_ms": pct(100.0),
            "first_problem": self.first_problem,
        })
    }
}

/// One HTTP/1.1 connection carrying one request at a time: what "N connections" means.
///
/// A pooled client cannot promise that. When a response's last chunk arrived before the
/// pool had seen the connection go idle, the next request opened a second connection and
/// the pool closed the surplus one: on SSE replies about one request in seven paid for a
/// new TCP connection, on the server's side too, and differently from run to run.
struct Conn {
    addr: String,
    authority: String,
    path: String,
    timeout: Duration,
    sender: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
    /// Connections opened, the first included.
    opened: u64,
}

/// Status, headers and body of an answer.
type Answer = (u16, hyper::HeaderMap, bytes::Bytes);

impl Conn {
    fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let u = url::Url::parse(url).with_context(|| format!("bad URL {url}"))?;
        let host = u.host_str().context("URL without a host")?;
        let port = u.port_or_known_default().context("URL without a port")?;
        if u.scheme() != "http" {
            bail!("only http:// URLs (loopback benchmarks): {url}");
        }
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        };
        Ok(Self {
            addr: format!("{host}:{port}"),
            authority,
            path,
            timeout,
            sender: None,
            opened: 0,
        })
    }

    /// Connects now (before a measured window), rather than on the first request.
    async fn open(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut c = Self::new(url, timeout)?;
        c.connect().await?;
        Ok(c)
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(conn);
        self.sender = Some(sender);
        self.opened += 1;
        Ok(())
    }

    /// POSTs `body`, waits for the whole answer. After a transport error the next call
    /// connects again.
    async fn post(
        &mut self,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> anyhow::Result<Answer> {
        let body = body.into();
        match tokio::time::timeout(self.timeout, self.exchange(headers, body)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                bail!("no answer within {:?}", self.timeout)
            }
        }
    }

    async fn exchange(
        &mut self,
        headers: &[(&str, &str)],
        body: bytes::Bytes,
    ) -> anyhow::Result<Answer> {
        use http_body_util::BodyExt as _;
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().context("not connected")?;
        sender.ready().await?;
        let mut b =
            hyper::Request::post(self.path.as_str()).header("host", self.authority.as_str());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = sender
            .send_request(b.body(http_body_util::Full::new(body))?)
            .await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((parts.status.as_u16(), parts.headers, bytes))
    }
}

fn emit(out: &Option<PathBuf>, v: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    match out {
        Some(p) => {
            std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))
        }
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn call_body(id: u64, tool: &str) -> String {
    let args = if tool == "process_data" {
        json!({"data": "hello"})
    } else {
        json!({})
    };
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
    .to_string()
}

/// POSTs one JSON-RPC message to the MCP endpoint. `auth` is the whole `Authorization`
/// value, made once per connection rather than per request.
async fn mcp_post(
    conn: &mut Conn,
    auth: Option<&str>,
    session: Option<&str>,
    body: String,
) -> anyhow::Result<Answer> {
    let mut headers = Vec::with_capacity(5);
    headers.push(("content-type", "application/json"));
    headers.push(("accept", "application/json, text/event-stream"));
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    if let Some(s) = session {
        headers.push(("mcp-session-id", s));
        headers.push(("mcp-protocol-version", PROTOCOL));
    }
    conn.post(&headers, body).await
}

fn bearer(token: Option<&str>) -> Option<String> {
    token.map(|t| format!("Bearer {t}"))
}

/// initialize + notifications/initialized; returns the session id.
async fn open_session(conn: &mut Conn, auth: Option<&str>) -> anyhow::Result<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "bench-load", "version": "1"}}});
    let (status, headers, body) = mcp_post(conn, auth, None, init.to_string()).await?;
    let sid = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(sid) = sid.filter(|_| status == 200) else {
        bail!(
            "initialize: HTTP {status}, no session id: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        );
    };
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = mcp_post(conn, auth, Some(&sid), note.to_string()).await?;
    if !(200..300).contains(&status) {
        bail!("notifications/initialized: HTTP {status}");
    }
    Ok(sid)
}

/// True if `text` (JSON or SSE) is the JSON-RPC result of request `id` (or, with
/// `accept_error`, its JSON-RPC error).
/// The id may be followed by another member or end the object (servers order members
/// differently), but must not be the prefix of a longer number.
fn answers(text: &str, id: u64, accept_error: bool) -> bool {
    let needle = format!("\"id\":{id}");
    text.match_indices(&needle)
        .any(|(at, _)| matches!(text.as_bytes().get(at + needle.len()), Some(b',' | b'}')))
        && ((text.contains("\"result\"") && !text.contains("\"isError\":true"))
            || (accept_error && text.contains("\"error\"")))
}

async fn run_mcp(a: McpArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(a.common.timeout_secs);
    let ids = Arc::new(AtomicU64::new(1));
    let n = a.common.connections;
    // Connect (and open sessions) before the clock starts.
    let mut setups = tokio::task::JoinSet::new();
    for i in 0..n {
        let (url, token, stateful) = (a.url.clone(), a.token.clone(), a.stateful);
        setups.spawn(async move {
            let mut conn = Conn::open(&url, timeout).await?;
            let auth = bearer(token.as_deref());
            let sid = if stateful {
                Some(open_session(&mut conn, auth.as_deref()).await?)
            } else {
                None
            };
            anyhow::Ok((i, conn, auth, sid))
        });
    }
    let mut workers = Vec::with_capacity(n);
    let mut setup_failures = 0u64;
    let mut setup_problem = None;
    while let Some(r) = setups.join_next().await {
        match r? {
            Ok(w) => workers.push(w),
            Err(e) => {
                setup_failures += 1;
                setup_problem.get_or_insert(format!("setup: {e:#}"));
            }
        }
    }
    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + Duration::from_secs_f64(a.warmup_secs);
    let deadline = window_start + Duration::from_secs_f64(a.duration_secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (_, mut conn, auth, sid) in workers {
        let (tool, ids) = (a.tool.clone(), ids.clone());
        let accept = a.accept_rpc_error;
        tasks.spawn(async move {
            let mut t = Tally::default();
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                let measured = t0 >= window_start;
                let id = ids.fetch_add(1, Relaxed);
                let outcome = mcp_post(
                    &mut conn,
                    auth.as_deref(),
                    sid.as_deref(),
                    call_body(id, &tool),
                )
                .await
                .map(|(status, _, body)| (status, String::from_utf8_lossy(&body).into_owned()));
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                if !measured {
                    if outcome.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
                match outcome {
                    Ok((status, text)) => {
                        *t.codes.entry(status).or_default() += 1;
                        t.lat_us.push(us);
                        if status == 200 && answers(&text, id, accept) {
                            t.ok += 1;
                        } else if status == 200 {
                            t.bad += 1;
                            t.problem(format!(
                                "id {id}: {}",
                                text.chars().take(200).collect::<String>()
                            ));
                        } else {
                            t.problem(format!(
                                "HTTP {status}: {}",
                                text.chars().take(200).collect::<String>()
                            ));
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.problem(format!("transport: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            t.opened = conn.opened;
            t
        });
    }
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        total.merge(t?);
    }
    let measured = deadline
        .saturating_duration_since(window_start)
        .as_secs_f64();
    total.errors += setup_failures;
    if let Some(p) = setup_problem {
        total.problem(p);
    }
    let mut v = total.report(
        if a.stateful {
            "mcp-stateful"
        } else {
            "mcp-stateless"
        },
        n,
        measured,
    );
    v["setup_failures"] = json!(setup_failures);
    v["tool"] = json!(a.tool);
    emit(&a.common.out, &v)
}

async fn run_sessions(a: SessionArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(a.common.timeout_secs);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.common.connections {
        let (url, auth, next, count) = (
            a.url.clone(),
            bearer(a.token.as_deref()),
            next.clone(),
            a.count,
        );
        tasks.spawn(async move {
            let mut got = Vec::new();
            let mut failed = 0u64;
            let mut problem = None;
            let mut conn = match Conn::new(&url, timeout) {
                Ok(c) => c,
                Err(e) => return (got, 1, Some(format!("{e:#}"))),
            };
            while next.fetch_add(1, Relaxed) < count {
                match open_session(&mut conn, auth.as_deref()).await {
                    Ok(s) => got.push(s),
                    Err(e) => {
                        failed += 1;
                        problem.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (got, failed, problem)
        });
    }
    let mut sessions = Vec::with_capacity(a.count);
    let mut failed = 0;
    let mut problem: Option<String> = None;
    while let Some(r) = tasks.join_next().await {
        let (g, f, p) = r?;
        sessions.extend(g);
        failed += f;
        if problem.is_none() {
            problem = p;
        }
    }
    let open_secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"phase": "ready", "opened": sessions.len(), "failed": failed,
               "open_s": open_secs, "first_problem": problem})
    );
    let mut line = String::new();
    let _ = tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    // Are the sessions still alive? Call a tool on an evenly spread sample.
    let mut conn = Conn::new(&a.url, timeout)?;
    let auth = bearer(a.token.as_deref());
    let step = (sessions.len() / a.check.max(1)).max(1);
    let mut alive = 0u64;
    let mut checked = 0u64;
    let mut check_problem = None;
    for (i, sid) in sessions.iter().step_by(step).take(a.check).enumerate() {
        checked += 1;
        let id = 1_000_000 + i as u64;
        let r = mcp_post(
            &mut conn,
            auth.as_deref(),
            Some(sid),
            call_body(id, "process_data"),
        )
        .await;
        match r {
            Ok((status, _, body)) => {
                let text = String::from_utf8_lossy(&body);
                if status == 200 && answers(&text, id, false) {
                    alive += 1;
                } else {
                    check_problem.get_or_insert(format!(
                        "HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    ));
                }
            }
            Err(e) => {
                check_problem.get_or_insert(format!("{e:#}"));
            }
        }
    }
    let v = json!({"phase": "done", "opened": sessions.len(), "failed": failed, "open_s": open_secs,
                   "checked": checked, "alive": alive, "first_problem": problem,
                   "check_problem": check_problem});
    emit(&a.common.out, &v)
}

fn pkce() -> (String, String) {
    let verifier = PkceCodeVerifier::new_random();
    let challenge = verifier.challenge_s256().into_inner();
    (verifier.secret().to_owned(), challenge)
}

async fn run_codes(a: CodeArgs) -> anyhow::Result<()> {
    let base = a.base.trim_end_matches('/').to_owned();
    let reg: Value = reqwest::Client::new()
        .post(format!("{base}/register"))
        .json(&json!({"client_name": "bench", "redirect_uris": [REDIRECT],
                      "token_endpoint_auth_method": "none"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let client_id = reg["client_id"]
        .as_str()
        .context("no client_id in the registration")?
        .to_owned();
    let resource = format!("{base}/mcp");
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.common.connections {
        let (base, client_id, resource, next, count, user) = (
            base.clone(),
            client_id.clone(),
            resource.clone(),
            next.clone(),
            a.count,
            a.user.clone(),
        );
        tasks.spawn(async move {
            let person = Person {
                user,
                approve: true,
                remember: false,
            };
            let mut out = Vec::new();
            let mut failed = 0u64;
            let mut problem = None;
            while next.fetch_add(1, Relaxed) < count {
                let mut browser = Browser::new();
                let (verifier, challenge) = pkce();
                let mut url = url::Url::parse(&format!("{base}/authorize")).expect("base URL");
                url.query_pairs_mut()
                    .append_pair("response_type", "code")
                    .append_pair("client_id", &client_id)
                    .append_pair("redirect_uri", REDIRECT)
                    .append_pair("state", "bench")
                    .append_pair("code_challenge", &challenge)
                    .append_pair("code_challenge_method", "S256")
                    .append_pair("scope", "openid profile email")
                    .append_pair("resource", &resource);
                match browser.sign_in(url.as_str(), REDIRECT, &person).await {
                    Ok(back) => match back.params.get("code") {
                        Some(code) => out.push(json!({"code": code, "verifier": verifier})),
                        None => {
                            failed += 1;
                            problem.get_or_insert(format!("no code in {}", back.url));
                        }
                    },
                    Err(e) => {
                        failed += 1;
                        problem.get_or_insert(e.to_string());
                    }
                }
            }
            (out, failed, problem)
        });
    }
    let mut lines = vec![
        json!({"client_id": client_id, "resource": resource, "redirect_uri": REDIRECT}).to_string(),
    ];
    let mut failed = 0;
    let mut problem: Option<String> = None;
    while let Some(r) = tasks.join_next().await {
        let (o, f, p) = r?;
        lines.extend(o.iter().map(Value::to_string));
        failed += f;
        if problem.is_none() {
            problem = p;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    std::fs::write(&a.codes_out, lines.join("\n") + "\n")?;
    let made = lines.len() - 1;
    emit(
        &a.common.out,
        &json!({"mode": "codes", "codes": made, "failed": failed, "secs": secs,
                "per_s": made as f64 / secs, "first_problem": problem}),
    )
}

async fn token_post(conn: &mut Conn, form: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let (status, _, body) = conn
        .post(
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/json"),
            ],
            body,
        )
        .await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn run_exchange(a: ExchangeArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.codes)?;
    let mut lines = text.lines();
    let head: Value = serde_json::from_str(lines.next().context("empty codes file")?)?;
    let codes: Vec<Value> = lines.map(serde_json::from_str).collect::<Result<_, _>>()?;
    let codes = Arc::new(codes);
    let client_id = head["client_id"].as_str().unwrap_or_default().to_owned();
    let resource = head["resource"].as_str().unwrap_or_default().to_owned();
    let redirect = head["redirect_uri"].as_str().unwrap_or(REDIRECT).to_owned();
    let url = format!("{}/token", a.base.trim_end_matches('/'));
    let timeout = Duration::from_secs(a.common.timeout_secs);
    let next = Arc::new(AtomicUsize::new(0));
    let n = a.common.connections;
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Conn::open(&url, timeout).await?);
    }
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in clients {
        let (codes, next, client_id, resource, redirect) = (
            codes.clone(),
            next.clone(),
            client_id.clone(),
            resource.clone(),
            redirect.clone(),
        );
        tasks.spawn(async move {
            let mut t = Tally::default();
            let mut refresh = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                let Some(c) = codes.get(i) else { break };
                let code = c["code"].as_str().unwrap_or_default();
                let verifier = c["verifier"].as_str().unwrap_or_default();
                let s = Instant::now();
                let r = token_post(
                    &mut conn,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", code),
                        ("redirect_uri", &redirect),
                        ("client_id", &client_id),
                        ("code_verifier", verifier),
                        ("resource", &resource),
                    ],
                )
                .await;
                let us = s.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                match r {
                    Ok((status, v)) => {
                        *t.codes.entry(status).or_default() += 1;
                        t.lat_us.push(us);
                        match (
                            status,
                            v["access_token"].as_str(),
                            v["refresh_token"].as_str(),
                        ) {
                            (200, Some(_), Some(rt)) => {
                                t.ok += 1;
                                refresh.push(rt.to_owned());
                            }
                            _ => {
                                if status == 200 {
                                    t.bad += 1;
                                }
                                t.problem(format!("HTTP {status}: {v}"));
                            }
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.problem(format!("transport: {e}"));
                    }
                }
            }
            t.opened = conn.opened;
            (t, refresh)
        });
    }
    let mut total = Tally::default();
    let mut refresh = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (t, rt) = r?;
        total.merge(t);
        refresh.extend(rt);
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Some(p) = &a.refresh_out {
        let mut text = client_id.clone() + "\n";
        text += &(refresh.join("\n") + "\n");
        std::fs::write(p, text)?;
    }
    let mut v = total.report("exchange", n, secs);
    v["codes"] = json!(codes.len());
    emit(&a.common.out, &v)
}

async fn run_refresh(a: RefreshArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.seeds)?;
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let client_id = lines.next().context("empty seeds file")?.to_owned();
    let seeds: Vec<String> = lines.map(str::to_owned).collect();
    let n = a.common.connections;
    if seeds.len() < n {
        bail!("{} refresh tokens for {n} chains", seeds.len());
    }
    let url = format!("{}/token", a.base.trim_end_matches('/'));
    let timeout = Duration::from_secs(a.common.timeout_secs);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Conn::open(&url, timeout).await?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + Duration::from_secs_f64(a.warmup_secs);
    let deadline = window_start + Duration::from_secs_f64(a.duration_secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (mut conn, seed) in clients.into_iter().zip(seeds) {
        let client_id = client_id.clone();
        tasks.spawn(async move {
            let mut t = Tally::default();
            let mut current = seed;
            let mut chain = 0u64;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let s = Instant::now();
                if s >= deadline {
                    break;
                }
                let measured = s >= window_start;
                let r = token_post(
                    &mut conn,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &current),
                        ("client_id", &client_id),
                    ],
                )
                .await;
                let us = s.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                let next = match &r {
                    Ok((200, v)) => v["refresh_token"].as_str().map(str::to_owned),
                    _ => None,
                };
                if measured {
                    match &r {
                        Ok((status, v)) => {
                            *t.codes.entry(*status).or_default() += 1;
                            t.lat_us.push(us);
                            if next.is_some() && v["access_token"].is_string() {
                                t.ok += 1;
                            } else {
                                if *status == 200 {
                                    t.bad += 1;
                                }
                                t.problem(format!("HTTP {status} after {chain} rotations: {v}"));
                            }
                        }
                        Err(e) => {
                            t.errors += 1;
                            t.problem(format!("transport: {e}"));
                        }
                    }
                }
                match next {
                    Some(rt) if rt != current => {
                        current = rt;
                        chain += 1;
                    }
                    _ => {
                        t.problem(format!("chain broken after {chain} rotations"));
                        break;
                    }
                }
            }
            t.opened = conn.opened;
            t
        });
    }
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        total.merge(t?);
    }
    let measured = deadline
        .saturating_duration_since(window_start)
        .as_secs_f64();
    emit(&a.common.out, &total.report("refresh", n, measured))
}

/// CPU time of this process so far (user + system), from /proc.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel reports USER_HZ ticks, 100 per second on Linux.
    Some(Duration::from_millis(ticks * 10))
}

async fn run_verify(a: VerifyArgs) -> anyhow::Result<()> {
    use mcp_oidc::TokenVerifier as _;
    use mcp_oidc::token::{AudiencePolicy, JwtConfig, JwtVerifier, KeySource};

    let verifier = JwtVerifier::new(JwtConfig::new(
        a.issuer.as_str(),
        KeySource::Discovery(a.issuer.clone()),
        AudiencePolicy::OneOf(vec![a.audience.as_str().into()]),
    ))?;
    let token = mcp_oidc::types::BearerToken::new(a.token.as_str());
    // The first verification fetches the keys; it is not timed.
    verifier
        .verify(&token)
        .await
        .map_err(|e| anyhow::anyhow!("the token does not verify: {e}"))?;
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..a.batches {
        let (started, cpu_before) = (Instant::now(), process_cpu());
        for _ in 0..a.iterations {
            verifier
                .verify(&token)
                .await
                .map_err(|e| anyhow::anyhow!("the token does not verify: {e}"))?;
        }
        wall.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(a.iterations));
        if let (Some(before), Some(after)) = (cpu_before, process_cpu()) {
            cpu.push((after - before).as_secs_f64() * 1e6 / f64::from(a.iterations));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    // The floor under a full verification: the RSA check alone, by the same library.
    let mut signature_cpu = Vec::new();
    match signature_check(&a).await {
        Ok(check) => {
            for _ in 0..a.batches {
                let cpu_before = process_cpu();
                for _ in 0..a.iterations {
                    anyhow::ensure!(check(), "the signature does not verify");
                }
                if let (Some(before), Some(after)) = (cpu_before, process_cpu()) {
                    signature_cpu
                        .push((after - before).as_secs_f64() * 1e6 / f64::from(a.iterations));
                }
            }
        }
        Err(e) => eprintln!("the signature check alone is not timed: {e}"),
    }
    emit(
        &None,
        &json!({
            "phase": "verify",
            "iterations": a.iterations,
            "batches": a.batches,
            "wall_us_per_verify": median(&mut wall),
            "cpu_us_per_verify": median(&mut cpu),
            "cpu_us_per_signature_check": median(&mut signature_cpu),
            "wall_us_batches": wall,
        }),
    )
}

/// A closure checking the RS256 signature of `a.token` with aws-lc-rs and nothing else
/// (the key parsed once, as mcp-oidc keeps it), the key found through the issuer's
/// discovery document.
async fn signature_check(a: &VerifyArgs) -> anyhow::Result<impl Fn() -> bool + use<>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s);
    let (signing_input, signature) = a
        .token
        .rsplit_once('.')
        .ok_or_else(|| anyhow::anyhow!("not a JWS"))?;
    let header: Value =
        serde_json::from_slice(&b64(signing_input.split('.').next().unwrap_or_default())?)?;
    anyhow::ensure!(header["alg"] == "RS256", "the token is not RS256");
    let kid = header["kid"].as_str();
    let key = mcp_oidc_bench::issuer_rsa_keys(&a.issuer)
        .await?
        .into_iter()
        .find(|k| k.kid.as_deref() == kid)
        .ok_or_else(|| anyhow::anyhow!("the token's key is not in the key set"))?;
    let (message, signature) = (signing_input.as_bytes().to_vec(), b64(signature)?);
    Ok(move || key.key.verify_sig(&message, &signature).is_ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Mcp(a) => run_mcp(a).await,
        Cmd::Sessions(a) => run_sessions(a).await,
        Cmd::Codes(a) => run_codes(a).await,
        Cmd::Exchange(a) => run_exchange(a).await,
        Cmd::Refresh(a) => run_refresh(a).await,
        Cmd::Verify(a) => run_verify(a).await,
    }
}
