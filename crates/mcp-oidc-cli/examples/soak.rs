//! Load generator of `scripts/soak`: many authenticated MCP clients and a crowd of
//! attackers with bogus tokens against one running `mcp-oidc serve`, for a fixed time.
//!
//! 1. Creates `--clients` users on the mock provider (`PUT /users/user-0001` ...) and
//!    gets one access token per user with the real authorization-code + PKCE flow
//!    (`mcp_oidc_mock::headless`), a few at a time.
//! 2. Runs every client as its own task with its own HTTP connection pool, looping
//!    `tools/call process_data` with a unique JSON-RPC id and checking that the answer
//!    carries that id and names the client's own user. Attackers loop the same call
//!    with bogus tokens (garbage, bad signature, unknown `kid`, expired, wrong
//!    audience, `alg: none`) and expect 401 with a `Bearer` challenge.
//! 3. After a warm-up, samples the resident memory (VmRSS), threads and open file
//!    descriptors of the server and of the provider every `--sample-secs` seconds, at
//!    the middle and at the end of the measured window.
//! 4. Prints a summary, writes it as JSON to `--out`, and exits with status 1 if any
//!    legitimate call failed, any attacker got something else than 401, or the
//!    server's memory broke the bound (`--rss-max-growth-mb`, `--rss-max-ratio`).
//!
//! Every task stops starting requests at the deadline; requests in flight then finish
//! or time out (`--request-timeout-secs`).
//!
//! ```text
//! cargo run --release -p mcp-oidc-cli --example soak -- \
//!     --issuer http://localhost:9400 --mcp-url http://localhost:8000/mcp \
//!     --server-pid PID --duration-secs 60 --clients 100 --attackers 20 --out results.json
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use mcp_oidc_mock::headless::{TokenRequest, fetch_token, http_client, unverified_claims};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::time::sleep_until;

#[derive(Parser, Debug)]
#[command(about = "Load and soak generator for a protected MCP server")]
struct Args {
    /// Issuer URL of the mock provider.
    #[arg(long)]
    issuer: String,
    /// The protected MCP endpoint (also the tokens' audience).
    #[arg(long)]
    mcp_url: String,
    /// Process id of the server, for memory samples.
    #[arg(long)]
    server_pid: u32,
    /// Process id of the provider, for memory samples.
    #[arg(long)]
    mock_pid: Option<u32>,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// Load before the measured window starts, in seconds.
    #[arg(long, default_value_t = 15)]
    warmup_secs: u64,
    /// Concurrent authenticated clients (one user and one token each).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Concurrent attackers sending bogus tokens.
    #[arg(long, default_value_t = 200)]
    attackers: usize,
    /// Tokens fetched at once during setup.
    #[arg(long, default_value_t = 16)]
    token_concurrency: usize,
    /// Worker threads of this generator's runtime (keep low: it shares the cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Interval of the memory time series, in seconds.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Timeout of one request, in seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
    /// Bound: end RSS may exceed start RSS by at most this many MiB.
    #[arg(long, default_value_t = 64)]
    rss_max_growth_mb: u64,
    /// Bound: end RSS may be at most this multiple of start RSS.
    #[arg(long, default_value_t = 2.0)]
    rss_max_ratio: f64,
    /// Where to write the JSON results.
    #[arg(long)]
    out: PathBuf,
    /// Free text naming the server mode, copied into the results.
    #[arg(long, default_value = "")]
    server_mode: String,
    /// `rustc --version` of the build, copied into the results.
    #[arg(long, default_value = "")]
    rustc: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.clients > 9999 {
        bail!("--clients must be 1 to 9999");
    }
    if args.duration_secs == 0 || args.sample_secs == 0 || args.token_concurrency == 0 {
        bail!("--duration-secs, --sample-secs and --token-concurrency must be positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let passed = runtime.block_on(run(args))?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

fn user_name(i: usize) -> String {
    format!("user-{:04}", i + 1)
}

// ------------------------------------------------------------------ setup

/// Creates the users and gets their tokens, `concurrency` at a time.
async fn setup_users(args: &Args) -> anyhow::Result<Vec<String>> {
    let http = http_client()?;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.token_concurrency.min(args.clients) {
        let (http, next, issuer, mcp_url, n) = (
            http.clone(),
            next.clone(),
            args.issuer.clone(),
            args.mcp_url.clone(),
            args.clients,
        );
        workers.spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed) as usize;
                if i >= n {
                    return Ok::<_, anyhow::Error>(got);
                }
                let user = user_name(i);
                create_user(&http, &issuer, &user).await?;
                let mut req = TokenRequest::new(issuer.clone(), user.clone());
                req.resource = Some(mcp_url.clone());
                let token = fetch_token(&http, &req)
                    .await
                    .with_context(|| format!("token of {user}"))?;
                got.push((i, token.access_token));
            }
        });
    }
    let mut tokens = vec![String::new(); args.clients];
    while let Some(done) = workers.join_next().await {
        for (i, token) in done?? {
            tokens[i] = token;
        }
    }
    Ok(tokens)
}

async fn create_user(http: &reqwest::Client, issuer: &str, user: &str) -> anyhow::Result<()> {
    let url = format!("{}/users/{user}", issuer.trim_end_matches('/'));
    let claims = json!({ "email": format!("{user}@example.com"), "name": format!("Soak {user}") });
    let status = http
        .put(&url)
        .json(&claims)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?
        .status();
    if !status.is_success() {
        bail!("PUT {url}: status {status}");
    }
    Ok(())
}

/// What the attackers forge their tokens from: one real token of the right audience
/// (its parts get tampered with) and a few real, validly signed tokens for another
/// audience.
struct AttackMaterial {
    header_b64: String,
    payload: serde_json::Map<String, Value>,
    payload_b64: String,
    signature_b64: String,
    wrong_audience: Vec<String>,
}

async fn attack_material(args: &Args) -> anyhow::Result<AttackMaterial> {
    let http = http_client()?;
    let issuer = &args.issuer;
    create_user(&http, issuer, "intruder").await?;
    let mut req = TokenRequest::new(issuer.clone(), "intruder");
    req.resource = Some(args.mcp_url.clone());
    let real = fetch_token(&http, &req).await?.access_token;
    let parts: Vec<&str> = real.split('.').collect();
    if parts.len() != 3 {
        bail!("the provider's access token is not a JWT");
    }
    let payload = unverified_claims(&real).context("unreadable access token")?;

    // A sibling resource on the same origin: a real token, but not for this server.
    let other = format!("{}-other", args.mcp_url.trim_end_matches('/'));
    let mut wrong_audience = Vec::new();
    for k in 0..8 {
        let user = format!("intruder-{k}");
        create_user(&http, issuer, &user).await?;
        let mut req = TokenRequest::new(issuer.clone(), user);
        req.resource = Some(other.clone());
        wrong_audience.push(fetch_token(&http, &req).await?.access_token);
    }
    Ok(AttackMaterial {
        header_b64: parts[0].to_owned(),
        payload,
        payload_b64: parts[1].to_owned(),
        signature_b64: parts[2].to_owned(),
        wrong_audience,
    })
}

fn load_client(args: &Args) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(args.request_timeout_secs))
        .build()
}

// ------------------------------------------------------------------ counters

#[derive(Default)]
struct Counters {
    legit_ok: AtomicU64,
    legit_err: AtomicU64,
    attack: AtomicU64,
    attack_other: AtomicU64,
    attack_by_kind: [AtomicU64; KINDS.len()],
    attack_other_by_kind: [AtomicU64; KINDS.len()],
    /// The first few failures, for the report.
    examples: Mutex<Vec<String>>,
}

impl Counters {
    fn note(&self, what: String) {
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 20 {
            examples.push(what);
        }
    }
}

/// A fixed point of the run: when every task should start and when they stop.
#[derive(Clone, Copy)]
struct Clock {
    measure_start: Instant,
    deadline: Instant,
}

fn request_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"process_data","arguments":{{"data":"soak {id}"}}}}}}"#
    )
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

// ------------------------------------------------------------------ legitimate clients

async fn legit_client(
    i: usize,
    http: reqwest::Client,
    url: Arc<str>,
    token: String,
    clock: Clock,
    counters: Arc<Counters>,
) -> Vec<u32> {
    let auth = HeaderValue::try_from(format!("Bearer {token}")).expect("token is ASCII");
    let expected = format!("Processing for user: {}", user_name(i));
    let mut latencies = Vec::new();
    let mut seq: u64 = 0;
    let base = (i as u64 + 1) * 10_000_000_000;
    while Instant::now() < clock.deadline {
        seq += 1;
        let id = base + seq;
        let started = Instant::now();
        let result = http
            .post(&*url)
            .header(AUTHORIZATION, auth.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(request_body(id))
            .send()
            .await;
        let verdict = match result {
            Ok(response) => check_answer(response, id, &expected).await,
            Err(e) => Err(format!("transport: {e}")),
        };
        match verdict {
            Ok(()) => {
                counters.legit_ok.fetch_add(1, Relaxed);
                if started >= clock.measure_start {
                    latencies.push(micros(started.elapsed()));
                }
            }
            Err(e) => {
                counters.legit_err.fetch_add(1, Relaxed);
                counters.note(format!("{}: id {id}: {e}", user_name(i)));
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    latencies
}

async fn check_answer(response: reqwest::Response, id: u64, expected: &str) -> Result<(), String> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading body: {e}"))?;
    let excerpt = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if status != reqwest::StatusCode::OK {
        return Err(format!("status {status}: {}", excerpt()));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e})"))?;
    if v["id"].as_u64() != Some(id) {
        return Err(format!("answer to another id: {}", excerpt()));
    }
    if v["result"]["isError"] != Value::Bool(false)
        || v["result"]["content"][0]["text"].as_str() != Some(expected)
    {
        return Err(format!("wrong answer: {}", excerpt()));
    }
    Ok(())
}

// ------------------------------------------------------------------ attackers

const KINDS: [&str; 6] = [
    "garbage",
    "bad_signature",
    "unknown_kid",
    "expired",
    "wrong_audience",
    "alg_none",
];

/// A small xorshift generator: bogus tokens need variety, not cryptographic quality.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A bogus token of the given kind; every call gives a different token (except the
/// wrong-audience ones, which are real tokens and so a fixed few).
fn forge(kind: usize, m: &AttackMaterial, noise: &mut Noise, tag: &str) -> String {
    match KINDS[kind] {
        "garbage" => match noise.next() % 3 {
            0 => format!("garbage-{tag}"),
            1 => format!(
                "{}.{}.{}",
                b64(&noise.bytes(24)),
                b64(&noise.bytes(60)),
                b64(&noise.bytes(64))
            ),
            _ => format!("{}{}", &m.header_b64, b64(tag.as_bytes())),
        },
        "bad_signature" => format!(
            "{}.{}.{}",
            m.header_b64,
            m.payload_b64,
            b64(&noise.bytes(64))
        ),
        "unknown_kid" => {
            let header = json!({"alg": "ES256", "kid": format!("soak-{tag}"), "typ": "at+jwt"});
            format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                m.payload_b64,
                m.signature_b64
            )
        }
        "expired" => {
            let mut claims = m.payload.clone();
            let now = now_secs();
            claims.insert("exp".into(), json!(now - 7200));
            claims.insert("iat".into(), json!(now - 10800));
            claims.insert("jti".into(), json!(format!("soak-{tag}")));
            format!(
                "{}.{}.{}",
                m.header_b64,
                b64(Value::Object(claims).to_string().as_bytes()),
                m.signature_b64
            )
        }
        "wrong_audience" => {
            m.wrong_audience[(noise.next() as usize) % m.wrong_audience.len()].clone()
        }
        _ => {
            let mut claims = m.payload.clone();
            claims.insert("jti".into(), json!(format!("soak-{tag}")));
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(Value::Object(claims).to_string().as_bytes())
            )
        }
    }
}

async fn attacker(
    a: usize,
    http: reqwest::Client,
    url: Arc<str>,
    material: Arc<AttackMaterial>,
    clock: Clock,
    counters: Arc<Counters>,
) -> Vec<u32> {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15 ^ ((a as u64 + 1) << 20));
    let mut latencies = Vec::new();
    let mut n: u64 = 0;
    while Instant::now() < clock.deadline {
        n += 1;
        let kind = (a + n as usize) % KINDS.len();
        let token = forge(kind, &material, &mut noise, &format!("{a}-{n}"));
        let started = Instant::now();
        let result = http
            .post(&*url)
            .bearer_auth(&token)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(request_body(n))
            .send()
            .await;
        let verdict = match result {
            Ok(response) => {
                let status = response.status();
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("Bearer"));
                let body = response.bytes().await;
                match (status, challenge, body) {
                    (reqwest::StatusCode::UNAUTHORIZED, true, Ok(_)) => Ok(()),
                    (reqwest::StatusCode::UNAUTHORIZED, false, _) => {
                        Err("401 without a Bearer challenge".to_owned())
                    }
                    (_, _, Ok(b)) => Err(format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&b[..b.len().min(200)])
                    )),
                    (_, _, Err(e)) => Err(format!("status {status}, body: {e}")),
                }
            }
            Err(e) => Err(format!("transport: {e}")),
        };
        counters.attack.fetch_add(1, Relaxed);
        counters.attack_by_kind[kind].fetch_add(1, Relaxed);
        match verdict {
            Ok(()) => {
                if started >= clock.measure_start {
                    latencies.push(micros(started.elapsed()));
                }
            }
            Err(e) => {
                counters.attack_other.fetch_add(1, Relaxed);
                counters.attack_other_by_kind[kind].fetch_add(1, Relaxed);
                counters.note(format!("attacker {a} ({}): {e}", KINDS[kind]));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    latencies
}

// ------------------------------------------------------------------ memory samples

#[derive(Clone, Debug, serde::Serialize)]
struct ProcSample {
    rss_kb: Option<u64>,
    threads: Option<u64>,
    fds: Option<u64>,
}

fn proc_sample(pid: u32) -> ProcSample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64);
    ProcSample {
        rss_kb: field("VmRSS:"),
        threads: field("Threads:"),
        fds,
    }
}

#[derive(Clone, Debug, serde::Serialize)]
struct Sample {
    /// Seconds since the start of the measured window.
    t: f64,
    server: ProcSample,
    mock: Option<ProcSample>,
    legit_requests: u64,
    attack_requests: u64,
}

async fn sampler(
    args_pids: (u32, Option<u32>),
    duration: u64,
    every: u64,
    clock: Clock,
    counters: Arc<Counters>,
) -> Vec<Sample> {
    let mut offsets: Vec<u64> = (0..=duration).step_by(every as usize).collect();
    offsets.push(duration / 2);
    offsets.push(duration);
    offsets.sort_unstable();
    offsets.dedup();
    let mut samples = Vec::new();
    for off in offsets {
        sleep_until((clock.measure_start + Duration::from_secs(off)).into()).await;
        let sample = Sample {
            t: clock.measure_start.elapsed().as_secs_f64(),
            server: proc_sample(args_pids.0),
            mock: args_pids.1.map(proc_sample),
            legit_requests: counters.legit_ok.load(Relaxed) + counters.legit_err.load(Relaxed),
            attack_requests: counters.attack.load(Relaxed),
        };
        eprintln!(
            "soak: t={:>4}s server rss={} KiB fds={} | legit={} attack={}",
            off,
            sample.server.rss_kb.unwrap_or(0),
            sample.server.fds.unwrap_or(0),
            sample.legit_requests,
            sample.attack_requests
        );
        samples.push(sample);
    }
    samples
}

// ------------------------------------------------------------------ report

fn percentiles(mut v: Vec<u32>) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let at = |p: f64| {
        let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        f64::from(v[idx]) / 1000.0
    };
    json!({
        "p50_ms": at(50.0),
        "p90_ms": at(90.0),
        "p99_ms": at(99.0),
        "p999_ms": at(99.9),
        "max_ms": at(100.0),
        "samples": v.len(),
    })
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let setup_started = Instant::now();
    eprintln!(
        "soak: creating {} users and fetching their tokens ({} at a time)",
        args.clients, args.token_concurrency
    );
    let tokens = setup_users(&args).await?;
    let material = Arc::new(attack_material(&args).await?);
    let token_secs = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "soak: {} tokens in {token_secs:.1} s; building {} HTTP clients",
        tokens.len(),
        args.clients + args.attackers
    );
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(load_client(&args)?);
    }
    let mut attack_clients = Vec::with_capacity(args.attackers);
    for _ in 0..args.attackers {
        attack_clients.push(load_client(&args)?);
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let measure_start = t0 + Duration::from_secs(args.warmup_secs);
    let clock = Clock {
        measure_start,
        deadline: measure_start + Duration::from_secs(args.duration_secs),
    };
    eprintln!(
        "soak: {} clients and {} attackers running: {} s warm-up, then {} s measured",
        args.clients, args.attackers, args.warmup_secs, args.duration_secs
    );
    let counters = Arc::new(Counters::default());
    let url: Arc<str> = Arc::from(args.mcp_url.as_str());
    let mut legit = tokio::task::JoinSet::new();
    for (i, (token, http)) in tokens.into_iter().zip(clients).enumerate() {
        legit.spawn(legit_client(
            i,
            http,
            url.clone(),
            token,
            clock,
            counters.clone(),
        ));
    }
    let mut attacks = tokio::task::JoinSet::new();
    for (a, http) in attack_clients.into_iter().enumerate() {
        attacks.spawn(attacker(
            a,
            http,
            url.clone(),
            material.clone(),
            clock,
            counters.clone(),
        ));
    }
    let samples = tokio::spawn(sampler(
        (args.server_pid, args.mock_pid),
        args.duration_secs,
        args.sample_secs,
        clock,
        counters.clone(),
    ))
    .await?;

    let mut legit_lat = Vec::new();
    while let Some(done) = legit.join_next().await {
        legit_lat.extend(done?);
    }
    let mut attack_lat = Vec::new();
    while let Some(done) = attacks.join_next().await {
        attack_lat.extend(done?);
    }
    let drained_secs = clock.deadline.elapsed().as_secs_f64();
    let after = proc_sample(args.server_pid);

    // ---- figures
    let duration = args.duration_secs as f64;
    let first = samples.first().expect("at least the start sample");
    let last = samples.last().expect("at least the end sample");
    let middle = samples
        .iter()
        .min_by_key(|s| (s.t - duration / 2.0).abs() as u64)
        .unwrap_or(first);
    let window_legit = last.legit_requests - first.legit_requests;
    let window_attack = last.attack_requests - first.attack_requests;
    let legit_ok = counters.legit_ok.load(Relaxed);
    let legit_err = counters.legit_err.load(Relaxed);
    let attack = counters.attack.load(Relaxed);
    let attack_other = counters.attack_other.load(Relaxed);

    let start_kb = first.server.rss_kb.unwrap_or(0);
    let end_kb = last.server.rss_kb.unwrap_or(u64::MAX);
    let growth_limit_kb = start_kb + args.rss_max_growth_mb * 1024;
    let ratio_limit_kb = (start_kb as f64 * args.rss_max_ratio) as u64;
    let rss_ok = first.server.rss_kb.is_some()
        && last.server.rss_kb.is_some()
        && end_kb <= growth_limit_kb
        && end_kb <= ratio_limit_kb;
    let passed = legit_err == 0 && attack_other == 0 && legit_ok > 0 && attack > 0 && rss_ok;

    let by_kind: serde_json::Map<String, Value> = KINDS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                (*name).to_owned(),
                json!({
                    "requests": counters.attack_by_kind[k].load(Relaxed),
                    "not_401": counters.attack_other_by_kind[k].load(Relaxed),
                }),
            )
        })
        .collect();
    let legit_pct = percentiles(legit_lat);
    let attack_pct = percentiles(attack_lat);
    let mb = |kb: u64| kb as f64 / 1024.0;
    let results = json!({
        "passed": passed,
        "server_mode": args.server_mode,
        "machine": {
            "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "rustc": args.rustc,
            "generator_threads": args.threads,
        },
        "config": {
            "duration_secs": args.duration_secs,
            "warmup_secs": args.warmup_secs,
            "clients": args.clients,
            "attackers": args.attackers,
            "sample_secs": args.sample_secs,
            "request_timeout_secs": args.request_timeout_secs,
        },
        "setup": {
            "tokens_fetched": args.clients + 1 + material.wrong_audience.len(),
            "token_fetch_secs": token_secs,
            "setup_secs": setup_secs,
        },
        "legitimate": {
            "requests_total": legit_ok + legit_err,
            "errors": legit_err,
            "requests_measured": window_legit,
            "req_per_sec": window_legit as f64 / duration,
            "latency": legit_pct,
        },
        "attacker": {
            "requests_total": attack,
            "not_401": attack_other,
            "requests_measured": window_attack,
            "req_per_sec": window_attack as f64 / duration,
            "latency": attack_pct,
            "by_kind": by_kind,
        },
        "requests_total": legit_ok + legit_err + attack,
        "rss": {
            "server_start_kb": first.server.rss_kb,
            "server_middle_kb": middle.server.rss_kb,
            "server_end_kb": last.server.rss_kb,
            "server_after_drain_kb": after.rss_kb,
            "mock_start_kb": first.mock.as_ref().and_then(|m| m.rss_kb),
            "mock_middle_kb": middle.mock.as_ref().and_then(|m| m.rss_kb),
            "mock_end_kb": last.mock.as_ref().and_then(|m| m.rss_kb),
            "bound": format!(
                "server end RSS <= start + {} MiB and <= {} x start",
                args.rss_max_growth_mb, args.rss_max_ratio
            ),
            "bound_limit_kb": growth_limit_kb.min(ratio_limit_kb),
            "bound_ok": rss_ok,
        },
        "drain_secs_after_deadline": drained_secs,
        "failure_examples": *counters.examples.lock().unwrap(),
        "samples": samples,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)? + "\n")?;

    let ms = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    println!("== soak summary ==");
    println!(
        "server mode        {}; generator threads {}",
        args.server_mode, args.threads
    );
    println!(
        "measured window    {} s after {} s warm-up; {} clients, {} attackers",
        args.duration_secs, args.warmup_secs, args.clients, args.attackers
    );
    println!(
        "legitimate         {} requests ({} in window), {} errors, {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms",
        legit_ok + legit_err,
        window_legit,
        legit_err,
        window_legit as f64 / duration,
        ms(&legit_pct, "p50_ms"),
        ms(&legit_pct, "p99_ms"),
    );
    println!(
        "attackers          {} requests ({} in window), {} not 401, {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms",
        attack,
        window_attack,
        attack_other,
        window_attack as f64 / duration,
        ms(&attack_pct, "p50_ms"),
        ms(&attack_pct, "p99_ms"),
    );
    println!("requests total     {}", legit_ok + legit_err + attack);
    println!(
        "server RSS         start {:.1} MiB, middle {:.1} MiB, end {:.1} MiB, after drain {:.1} MiB",
        mb(start_kb),
        mb(middle.server.rss_kb.unwrap_or(0)),
        mb(last.server.rss_kb.unwrap_or(0)),
        mb(after.rss_kb.unwrap_or(0)),
    );
    if let (Some(a), Some(b), Some(c)) = (&first.mock, &middle.mock, &last.mock) {
        println!(
            "mock RSS           start {:.1} MiB, middle {:.1} MiB, end {:.1} MiB",
            mb(a.rss_kb.unwrap_or(0)),
            mb(b.rss_kb.unwrap_or(0)),
            mb(c.rss_kb.unwrap_or(0)),
        );
    }
    println!(
        "RSS bound          end <= start + {} MiB and <= {} x start (limit {:.1} MiB): {}",
        args.rss_max_growth_mb,
        args.rss_max_ratio,
        mb(growth_limit_kb.min(ratio_limit_kb)),
        if rss_ok { "ok" } else { "EXCEEDED" }
    );
    for e in counters.examples.lock().unwrap().iter() {
        println!("failure            {e}");
    }
    println!(
        "verdict            {}",
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(passed)
}
