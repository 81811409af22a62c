//! Options ([`MockConfig`]) and the command-line flags ([`MockArgs`]) that
//! produce them.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::MockError;

/// A JSON object of user claims (everything except `sub`).
pub type Claims = Map<String, Value>;

/// The JWS algorithm used to sign ID tokens and JWT access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SigningAlg {
    /// ECDSA P-256 with SHA-256 (small, fast keys).
    #[default]
    #[value(name = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys (what the reference mock uses).
    #[value(name = "RS256")]
    Rs256,
}

impl SigningAlg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

/// Every option of the mock provider. `Default` matches the reference mock's
/// defaults, plus our additions in their most permissive-yet-safe setting.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Only registered clients may authorize and get tokens; their secrets and
    /// redirect URIs are checked. Off: any client id, secret and redirect URI
    /// is accepted (registered clients are still checked).
    pub require_registration: bool,
    /// Authorization requests must carry a `nonce`.
    pub require_nonce: bool,
    /// Authorization requests must carry a PKCE `code_challenge` (S256).
    pub require_pkce: bool,
    /// Issue a refresh token alongside the access token.
    pub issue_refresh_token: bool,
    /// Lifetime of access and ID tokens.
    pub token_max_age: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_token_max_age: Duration,
    /// Lifetime of authorization codes.
    pub code_max_age: Duration,
    /// Issue random opaque access tokens instead of RFC 9068 JWTs.
    pub opaque_access_tokens: bool,
    /// `aud` of access tokens when the request names no `resource`
    /// (falls back to the client id when unset).
    pub default_audience: Option<String>,
    /// Signing algorithm for new keys.
    pub signing_alg: SigningAlg,
    /// Where to keep the private signing keys across restarts (PKCS#8 PEM).
    pub key_file: Option<PathBuf>,
    /// How long a rotated-out public key stays in the JWKS.
    pub key_grace_period: Duration,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age: Duration,
    /// Derive the issuer from `X-Forwarded-Proto`/`-Host`/`-Port` (only behind
    /// a proxy you control).
    pub trust_forwarded_headers: bool,
    /// Predefined users, offered on the authorization form, in order.
    pub users: Vec<(String, Claims)>,
    /// How many recently used subjects the authorization form remembers.
    pub max_recent_subjects: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            require_registration: false,
            require_nonce: false,
            require_pkce: false,
            issue_refresh_token: true,
            token_max_age: Duration::from_secs(3600),
            refresh_token_max_age: Duration::from_secs(24 * 3600),
            code_max_age: Duration::from_secs(300),
            opaque_access_tokens: false,
            default_audience: None,
            signing_alg: SigningAlg::Es256,
            key_file: None,
            key_grace_period: Duration::from_secs(3600),
            jwks_max_age: Duration::from_secs(300),
            trust_forwarded_headers: false,
            users: Vec::new(),
            max_recent_subjects: 10,
        }
    }
}

/// Command-line flags, compatible with the reference `oidc-provider-mock`
/// (its boolean options also accept an explicit value: `-r` or `-r true`).
///
/// Embed it in another clap command with `#[command(flatten)]` or as a
/// subcommand's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Port the server listens on.
    #[arg(short = 'p', long, env = "MCP_OIDC_MOCK_PORT", default_value_t = 9400)]
    pub port: u16,
    /// IP address to bind the server to.
    #[arg(
        short = 'H',
        long,
        env = "MCP_OIDC_MOCK_HOST",
        default_value = "127.0.0.1"
    )]
    pub host: String,
    /// Require clients to register before they can request authentication.
    #[arg(short = 'r', long, env = "MCP_OIDC_MOCK_REQUIRE_REGISTRATION",
          num_args = 0..=1, default_value_t = false, default_missing_value = "true",
          value_name = "BOOL", action = clap::ArgAction::Set)]
    pub require_registration: bool,
    /// Require a nonce in the authorization request.
    #[arg(short = 'n', long, env = "MCP_OIDC_MOCK_REQUIRE_NONCE",
          num_args = 0..=1, default_value_t = false, default_missing_value = "true",
          value_name = "BOOL", action = clap::ArgAction::Set)]
    pub require_nonce: bool,
    /// Do not issue a refresh token.
    #[arg(short = 'f', long, env = "MCP_OIDC_MOCK_NO_REFRESH_TOKEN",
          num_args = 0..=1, default_value_t = false, default_missing_value = "true",
          value_name = "BOOL", action = clap::ArgAction::Set)]
    pub no_refresh_token: bool,
    /// Max age of access and ID tokens in seconds.
    #[arg(short = 'e', long, env = "MCP_OIDC_MOCK_TOKEN_MAX_AGE", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub token_max_age: u64,
    /// Predefined user subject, with claims {"email": SUB} (repeatable).
    #[arg(long = "user", env = "MCP_OIDC_MOCK_USER", value_name = "SUB")]
    pub users: Vec<String>,
    /// Predefined user with claims as a JSON object that includes "sub" (repeatable).
    #[arg(
        long = "user-claims",
        env = "MCP_OIDC_MOCK_USER_CLAIMS",
        value_name = "JSON"
    )]
    pub user_claims: Vec<String>,
    /// JSON file holding a list of user claim objects (each with "sub").
    #[arg(long, env = "MCP_OIDC_MOCK_USER_CLAIMS_FILE", value_name = "PATH")]
    pub user_claims_file: Option<PathBuf>,
    /// Require a PKCE code challenge (S256) in every authorization request.
    #[arg(long, env = "MCP_OIDC_MOCK_REQUIRE_PKCE")]
    pub require_pkce: bool,
    /// Issue random opaque access tokens instead of JWTs (RFC 9068).
    #[arg(long, env = "MCP_OIDC_MOCK_OPAQUE_ACCESS_TOKENS")]
    pub opaque_access_tokens: bool,
    /// Access-token audience when the client sends no `resource` (default: the client id).
    #[arg(long, env = "MCP_OIDC_MOCK_DEFAULT_AUDIENCE", value_name = "AUD")]
    pub default_audience: Option<String>,
    /// Signing algorithm of ID tokens and JWT access tokens.
    #[arg(long, env = "MCP_OIDC_MOCK_SIGNING_ALG", value_enum, default_value_t = SigningAlg::Es256)]
    pub signing_alg: SigningAlg,
    /// Keep the signing keys in this PEM file (created with mode 0600 if missing),
    /// so issued tokens stay valid across restarts.
    #[arg(long, env = "MCP_OIDC_MOCK_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Derive the issuer from X-Forwarded-Proto/-Host/-Port headers.
    #[arg(long, env = "MCP_OIDC_MOCK_TRUST_FORWARDED_HEADERS")]
    pub trust_forwarded_headers: bool,
    /// Seconds a rotated-out key stays published in the JWKS.
    #[arg(
        long,
        env = "MCP_OIDC_MOCK_KEY_GRACE_PERIOD",
        default_value_t = 3600,
        value_name = "SECONDS"
    )]
    pub key_grace_period: u64,
}

impl MockArgs {
    /// The `host:port` to bind.
    pub fn bind_addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Binds the configured address and serves until `shutdown` completes,
    /// logging the issuer URL. This is what the `mock-idp` command runs.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), MockError> {
        let addr = self.bind_addr();
        let provider = crate::MockProvider::new(self.into_config()?)?;
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let local = listener.local_addr()?;
        let host = if local.ip().is_loopback() {
            "localhost".to_owned()
        } else {
            local.ip().to_string()
        };
        tracing::info!(
            issuer = %format!("http://{host}:{}", local.port()),
            "mock OpenID provider listening on {local}"
        );
        provider.serve(listener, shutdown).await?;
        Ok(())
    }

    /// Builds the provider configuration, reading and checking user claims.
    pub fn into_config(self) -> Result<MockConfig, MockError> {
        let mut users: Vec<(String, Claims)> = Vec::new();
        for sub in &self.users {
            if sub.is_empty() {
                return Err(MockError::UserClaims(
                    "--user needs a non-empty subject".into(),
                ));
            }
            let mut claims = Claims::new();
            claims.insert("email".into(), Value::String(sub.clone()));
            users.push((sub.clone(), claims));
        }
        for json in &self.user_claims {
            let value: Value = serde_json::from_str(json).map_err(|e| {
                MockError::UserClaims(format!("invalid JSON in --user-claims: {e}"))
            })?;
            users.push(user_from_value(value).map_err(MockError::UserClaims)?);
        }
        if let Some(path) = &self.user_claims_file {
            let text = std::fs::read_to_string(path).map_err(|source| MockError::File {
                path: path.display().to_string(),
                source,
            })?;
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                MockError::UserClaims(format!("--user-claims-file: invalid JSON: {e}"))
            })?;
            let Value::Array(items) = value else {
                return Err(MockError::UserClaims(
                    "--user-claims-file must contain a list at top level".into(),
                ));
            };
            for item in items {
                users.push(
                    user_from_value(item)
                        .map_err(|e| MockError::UserClaims(format!("--user-claims-file: {e}")))?,
                );
            }
        }
        Ok(MockConfig {
            require_registration: self.require_registration,
            require_nonce: self.require_nonce,
            require_pkce: self.require_pkce,
            issue_refresh_token: !self.no_refresh_token,
            token_max_age: Duration::from_secs(self.token_max_age),
            opaque_access_tokens: self.opaque_access_tokens,
            default_audience: self.default_audience.filter(|a| !a.is_empty()),
            signing_alg: self.signing_alg,
            key_file: self.key_file,
            trust_forwarded_headers: self.trust_forwarded_headers,
            key_grace_period: Duration::from_secs(self.key_grace_period),
            users,
            ..MockConfig::default()
        })
    }
}

impl TryFrom<MockArgs> for MockConfig {
    type Error = MockError;

    fn try_from(args: MockArgs) -> Result<Self, Self::Error> {
        args.into_config()
    }
}

fn user_from_value(value: Value) -> Result<(String, Claims), String> {
    let Value::Object(mut claims) = value else {
        return Err("user claims must be an object".into());
    };
    match claims.remove("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => Ok((sub, claims)),
        _ => Err("user claims must include a \"sub\" property".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockArgs,
    }

    fn parse(argv: &[&str]) -> MockArgs {
        Cli::try_parse_from(std::iter::once("mock").chain(argv.iter().copied()))
            .expect("valid flags")
            .args
    }

    #[test]
    fn defaults_match_the_reference_mock() {
        let args = parse(&[]);
        assert_eq!((args.port, args.host.as_str()), (9400, "127.0.0.1"));
        let config = args.into_config().unwrap();
        assert!(!config.require_registration && !config.require_nonce);
        assert!(config.issue_refresh_token);
        assert_eq!(config.token_max_age, Duration::from_secs(3600));
        assert_eq!(config.signing_alg, SigningAlg::Es256);
    }

    #[test]
    fn boolean_flags_accept_an_optional_value_like_the_reference() {
        let args = parse(&[
            "-r",
            "-n",
            "true",
            "--no-refresh-token",
            "false",
            "-e",
            "60",
        ]);
        assert!(args.require_registration && args.require_nonce && !args.no_refresh_token);
        let args = parse(&["--require-registration", "--user", "a", "-f"]);
        assert!(args.require_registration && args.no_refresh_token);
        assert_eq!(args.users, ["a"]);
    }

    #[test]
    fn users_come_from_user_user_claims_and_file() {
        let dir = std::env::temp_dir().join(format!("mock-users-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users.json");
        std::fs::write(&file, r#"[{"sub": "c", "name": "C"}]"#).unwrap();
        let args = parse(&[
            "--user",
            "a",
            "--user-claims",
            r#"{"sub": "b", "roles": ["x"]}"#,
            "--user-claims-file",
            file.to_str().unwrap(),
            "--signing-alg",
            "RS256",
        ]);
        let config = args.into_config().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let subs: Vec<&str> = config.users.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(subs, ["a", "b", "c"]);
        assert_eq!(config.users[0].1["email"], "a");
        assert_eq!(config.users[1].1["roles"][0], "x");
        assert!(!config.users[1].1.contains_key("sub"));
        assert_eq!(config.signing_alg, SigningAlg::Rs256);
    }

    #[test]
    fn malformed_user_claims_are_rejected() {
        for bad in ["not json", "[1]", r#"{"name": "no sub"}"#, r#"{"sub": ""}"#] {
            let err = parse(&["--user-claims", bad]).into_config().unwrap_err();
            assert!(matches!(err, MockError::UserClaims(_)), "{bad}: {err}");
        }
    }
}
