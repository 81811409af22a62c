//! Configuration of `mcp-oidc serve`: a TOML file, every key overridable by an
//! `MCP_OIDC_<KEY>` environment variable and a `--<key>` flag (flag > environment > file >
//! default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_oidc::ConfigError;
use mcp_oidc::resource::{MetadataSource, ProtectedResource};
use mcp_oidc::token::{
    AudiencePolicy, IntrospectionConfig, IntrospectionVerifier, JwksSettings, JwtConfig,
    JwtVerifier, KeySource, MultiVerifier, StaticTokenVerifier, TokenCache, TokenVerifier,
    UserinfoConfig, UserinfoVerifier,
};
use mcp_oidc::types::{ClientId, ClientSecret, Scopes};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A pre-registered client of the OAuth proxy (`[[clients]]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Its id.
    pub client_id: String,
    /// Its secret (omit for a public client).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Its redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Its display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Where the proxy keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// In memory (lost on restart).
    Memory,
    /// A SQLite file.
    Sqlite(PathBuf),
}

/// The OAuth proxy part of a configuration.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    /// The proxy's settings.
    pub config: mcp_oidc::proxy::ProxyConfig,
    /// Its store.
    pub store: StoreChoice,
}

/// Every setting, each optional so that the file, the environment and the flags can be
/// layered. Field names are the TOML keys; `MCP_OIDC_` + upper case is the variable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Public base URL of this server, e.g. https://mcp.example.com (default: http://localhost:<port of bind>).
    #[arg(long, env = "MCP_OIDC_BASE_URL")]
    pub base_url: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8000].
    #[arg(long, env = "MCP_OIDC_BIND")]
    pub bind: Option<String>,
    /// Path of the MCP endpoint [default: /mcp].
    #[arg(long, env = "MCP_OIDC_MCP_PATH")]
    pub mcp_path: Option<String>,
    /// The OIDC issuer whose tokens are accepted (exact `iss`), e.g. http://localhost:9400.
    #[arg(long, env = "MCP_OIDC_ISSUER")]
    pub issuer: Option<String>,
    /// The provider's configuration URL, if not {issuer}/.well-known/openid-configuration.
    #[arg(long, env = "MCP_OIDC_CONFIG_URL")]
    pub config_url: Option<String>,
    /// An explicit JWKS URL (skips discovery).
    #[arg(long, env = "MCP_OIDC_JWKS_URI")]
    pub jwks_uri: Option<String>,
    /// How tokens are checked: jwt, userinfo or introspection [default: jwt].
    #[arg(long, env = "MCP_OIDC_TOKEN_VALIDATION")]
    pub token_validation: Option<String>,
    /// Accepted audiences, comma-separated [default: the resource URL, {base_url}{mcp_path}].
    #[arg(long, env = "MCP_OIDC_AUDIENCE", value_delimiter = ',')]
    pub audience: Option<Vec<String>>,
    /// Accept tokens for any audience (only when the issuer serves this resource alone).
    #[arg(long, env = "MCP_OIDC_ALLOW_ANY_AUDIENCE", num_args = 0..=1, default_missing_value = "true")]
    pub allow_any_audience: Option<bool>,
    /// Allowed JWT algorithms, comma-separated [default: RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,EdDSA].
    #[arg(long, env = "MCP_OIDC_ALGORITHMS", value_delimiter = ',')]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew tolerated on exp/nbf/iat, in seconds [default: 60].
    #[arg(long, env = "MCP_OIDC_LEEWAY_SECS")]
    pub leeway_secs: Option<u64>,
    /// Refuse an introspected token whose response has no `aud` (token_validation =
    /// introspection) [default: false].
    #[arg(long, env = "MCP_OIDC_INTROSPECTION_REQUIRE_AUD", num_args = 0..=1, default_missing_value = "true")]
    pub introspection_require_aud: Option<bool>,
    /// Accept only JWTs typed `at+jwt` (RFC 9068), refusing `typ: JWT` and untyped ones
    /// (token_validation = jwt) [default: false].
    #[arg(long, env = "MCP_OIDC_REQUIRE_AT_JWT", num_args = 0..=1, default_missing_value = "true")]
    pub require_at_jwt: Option<bool>,
    /// Scopes every request must carry, comma-separated.
    #[arg(long, env = "MCP_OIDC_REQUIRED_SCOPES", value_delimiter = ',')]
    pub required_scopes: Option<Vec<String>>,
    /// Scopes advertised to clients, comma-separated [default: openid,profile,email].
    #[arg(long, env = "MCP_OIDC_SCOPES_SUPPORTED", value_delimiter = ',')]
    pub scopes_supported: Option<Vec<String>>,
    /// RFC 7662 introspection endpoint (token_validation = introspection; default: from discovery).
    #[arg(long, env = "MCP_OIDC_INTROSPECTION_ENDPOINT")]
    pub introspection_endpoint: Option<String>,
    /// Client id for introspection.
    #[arg(long, env = "MCP_OIDC_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Client secret for introspection (prefer the environment variable).
    #[arg(long, env = "MCP_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// Shared HMAC secret for HS256/384/512 tokens (only if your issuer signs with one).
    #[arg(long, env = "MCP_OIDC_HMAC_SECRET", hide_env_values = true)]
    pub hmac_secret: Option<String>,
    /// A JSON file of development tokens: {"token": {"sub": "...", ...}}. Never in production.
    #[arg(long, env = "MCP_OIDC_STATIC_TOKENS_FILE")]
    pub static_tokens_file: Option<PathBuf>,
    /// Verified tokens cached (0 disables the cache) [default: 10000].
    #[arg(long, env = "MCP_OIDC_TOKEN_CACHE_SIZE")]
    pub token_cache_size: Option<u64>,
    /// Longest a verified JWT stays cached, in seconds (never past its exp) [default: 3600].
    #[arg(long, env = "MCP_OIDC_TOKEN_CACHE_TTL_SECS")]
    pub token_cache_ttl_secs: Option<u64>,
    /// Longest an introspection/userinfo result stays cached, in seconds [default: 60].
    #[arg(long, env = "MCP_OIDC_OPAQUE_CACHE_TTL_SECS")]
    pub opaque_cache_ttl_secs: Option<u64>,
    /// Shortest JWKS refresh interval, in seconds [default: 60].
    #[arg(long, env = "MCP_OIDC_JWKS_MIN_REFRESH_SECS")]
    pub jwks_min_refresh_secs: Option<u64>,
    /// Longest JWKS refresh interval, in seconds [default: 86400].
    #[arg(long, env = "MCP_OIDC_JWKS_MAX_REFRESH_SECS")]
    pub jwks_max_refresh_secs: Option<u64>,
    /// At most one JWKS refetch for unknown key ids per this many seconds [default: 10].
    #[arg(long, env = "MCP_OIDC_JWKS_UNKNOWN_KID_COOLDOWN_SECS")]
    pub jwks_unknown_kid_cooldown_secs: Option<u64>,
    /// Timeout of calls to the provider, in seconds [default: 5].
    #[arg(long, env = "MCP_OIDC_PROVIDER_TIMEOUT_SECS")]
    pub provider_timeout_secs: Option<u64>,
    /// Serve without sessions [default: false].
    #[arg(long, env = "MCP_OIDC_STATELESS", num_args = 0..=1, default_missing_value = "true")]
    pub stateless: Option<bool>,
    /// In stateless mode, answer with plain JSON instead of SSE [default: false].
    #[arg(long, env = "MCP_OIDC_JSON_RESPONSE", num_args = 0..=1, default_missing_value = "true")]
    pub json_response: Option<bool>,
    /// More accepted Host values, comma-separated.
    #[arg(long, env = "MCP_OIDC_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// More accepted browser Origins, comma-separated.
    #[arg(long, env = "MCP_OIDC_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Request timeout, in seconds [default: 30].
    #[arg(long, env = "MCP_OIDC_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds a session may sit idle (no message either way, no request still running)
    /// before its memory is released; its next request resumes it transparently under the
    /// same id. 0 turns this off (an idle session then ends after 5 minutes) [default: 300].
    #[arg(long, env = "MCP_OIDC_SESSION_HIBERNATE_SECS")]
    pub session_hibernate_secs: Option<u64>,
    /// With sessions in a store shared by several instances: seconds a session held here
    /// is used before the store is asked again whether another instance deleted it (how
    /// late such a DELETE takes effect here; one store read per session in use and period;
    /// 0: every request) [default: 5].
    #[arg(long, env = "MCP_OIDC_SESSION_STORE_RECHECK_SECS")]
    pub session_store_recheck_secs: Option<u64>,
    /// Largest request body, in bytes [default: 4194304].
    #[arg(long, env = "MCP_OIDC_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Serve /.well-known/oauth-authorization-server and openid-configuration on this
    /// origin, mirroring the provider's metadata, for older clients [default: true].
    #[arg(long, env = "MCP_OIDC_MIRROR_PROVIDER_METADATA", num_args = 0..=1, default_missing_value = "true")]
    pub mirror_provider_metadata: Option<bool>,
    /// Serve Prometheus metrics at /metrics (decisions of the bearer layer, token-cache
    /// lookups, readiness, sessions held); keep the route internal [default: false].
    #[arg(long, env = "MCP_OIDC_METRICS", num_args = 0..=1, default_missing_value = "true")]
    pub metrics: Option<bool>,
    /// OAuth proxy: the client id registered for this server at the provider (turns the
    /// proxy on; the provider must allow the redirect URI {base_url}/auth/callback).
    #[arg(long, env = "MCP_OIDC_UPSTREAM_CLIENT_ID")]
    pub upstream_client_id: Option<String>,
    /// OAuth proxy: that client's secret (prefer the environment variable).
    #[arg(long, env = "MCP_OIDC_UPSTREAM_CLIENT_SECRET", hide_env_values = true)]
    pub upstream_client_secret: Option<String>,
    /// OAuth proxy: scopes requested from the provider [default: openid,profile,email].
    #[arg(long, env = "MCP_OIDC_UPSTREAM_SCOPES", value_delimiter = ',')]
    pub upstream_scopes: Option<Vec<String>>,
    /// OAuth proxy: a provider preset (keycloak, auth0, okta, entra, google).
    #[arg(long, env = "MCP_OIDC_UPSTREAM_PRESET")]
    pub upstream_preset: Option<String>,
    /// OAuth proxy: client_secret_basic or client_secret_post [default: client_secret_basic].
    #[arg(long, env = "MCP_OIDC_UPSTREAM_AUTH_METHOD")]
    pub upstream_auth_method: Option<String>,
    /// OAuth proxy: also read claims from the userinfo endpoint.
    #[arg(long, env = "MCP_OIDC_UPSTREAM_USE_USERINFO", num_args = 0..=1, default_missing_value = "true")]
    pub upstream_use_userinfo: Option<bool>,
    /// OAuth proxy: extra authorization parameters, comma-separated key=value.
    #[arg(long, env = "MCP_OIDC_UPSTREAM_EXTRA_PARAMS", value_delimiter = ',')]
    pub upstream_extra_params: Option<Vec<String>>,
    /// OAuth proxy, providers without discovery: the authorization endpoint.
    #[arg(long, env = "MCP_OIDC_UPSTREAM_AUTHORIZATION_ENDPOINT")]
    pub upstream_authorization_endpoint: Option<String>,
    /// OAuth proxy, providers without discovery: the token endpoint.
    #[arg(long, env = "MCP_OIDC_UPSTREAM_TOKEN_ENDPOINT")]
    pub upstream_token_endpoint: Option<String>,
    /// OAuth proxy, providers without discovery: where the user's profile is read.
    #[arg(long, env = "MCP_OIDC_UPSTREAM_USERINFO_ENDPOINT")]
    pub upstream_userinfo_endpoint: Option<String>,
    /// OAuth proxy: the profile member naming the user when there is no `sub` (GitHub: id).
    #[arg(long, env = "MCP_OIDC_UPSTREAM_SUBJECT_CLAIM")]
    pub upstream_subject_claim: Option<String>,
    /// OAuth proxy: the master secret (32+ characters) sealing stored upstream tokens and
    /// signing keys [default: generated once into {state_dir}/proxy-secret].
    #[arg(long, env = "MCP_OIDC_PROXY_SECRET", hide_env_values = true)]
    pub proxy_secret: Option<String>,
    /// Where state lives (the OAuth proxy's records and the MCP sessions, which then survive
    /// restarts): sqlite or memory [default: sqlite with the proxy, else sessions in memory].
    #[arg(long, env = "MCP_OIDC_STORE")]
    pub store: Option<String>,
    /// Directory of the SQLite database and the proxy's generated secret [default: .mcp-oidc].
    #[arg(long, env = "MCP_OIDC_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// OAuth proxy: allowed redirect URI patterns, comma-separated (e.g. http://localhost:*,https://*.example.com/*).
    #[arg(long, env = "MCP_OIDC_REDIRECT_URI_PATTERNS", value_delimiter = ',')]
    pub redirect_uri_patterns: Option<Vec<String>>,
    /// OAuth proxy: fetch client metadata documents from private and loopback addresses (development only).
    #[arg(long, env = "MCP_OIDC_ALLOW_PRIVATE_CLIENT_METADATA", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_client_metadata: Option<bool>,
    /// OAuth proxy: offer "remember this decision" on the consent page [default: false].
    #[arg(long, env = "MCP_OIDC_REMEMBER_CONSENT", num_args = 0..=1, default_missing_value = "true")]
    pub remember_consent: Option<bool>,
    /// OAuth proxy: access token lifetime in seconds [default: 3600].
    #[arg(long, env = "MCP_OIDC_ACCESS_TOKEN_TTL_SECS")]
    pub access_token_ttl_secs: Option<u64>,
    /// OAuth proxy: seconds a sign-in lasts without a refresh [default: 2592000].
    #[arg(long, env = "MCP_OIDC_REFRESH_TOKEN_TTL_SECS")]
    pub refresh_token_ttl_secs: Option<u64>,
    /// OAuth proxy: seconds during which a just-used refresh token presented again by the
    /// same client gets a pair of its own (concurrent refreshes) rather than revoking the
    /// sign-in as a reuse; 0 treats every second use as a reuse [default: 10].
    #[arg(long, env = "MCP_OIDC_REFRESH_GRACE_SECS")]
    pub refresh_grace_secs: Option<u64>,
    /// OAuth proxy: requests per minute per client address to /register (0 = no limit) [default: 20].
    #[arg(long, env = "MCP_OIDC_REGISTER_RATE_LIMIT")]
    pub register_rate_limit: Option<u32>,
    /// OAuth proxy: requests per minute per client address to /authorize and /consent [default: 120].
    #[arg(long, env = "MCP_OIDC_AUTHORIZE_RATE_LIMIT")]
    pub authorize_rate_limit: Option<u32>,
    /// OAuth proxy: requests per minute per client address to /token and /revoke [default: 600].
    #[arg(long, env = "MCP_OIDC_TOKEN_RATE_LIMIT")]
    pub token_rate_limit: Option<u32>,
    /// OAuth proxy: pre-registered clients (config file only: [[clients]] tables).
    #[arg(skip)]
    pub clients: Option<Vec<ClientSettings>>,
    /// DANGEROUS: serve every caller without checking tokens (benchmarks only).
    #[arg(long, env = "MCP_OIDC_INSECURE_DISABLE_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_disable_auth: Option<bool>,
}

impl Settings {
    /// Reads a TOML file. Unknown keys are errors, named with the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml(&text).map_err(|mut e| {
            e.message = format!("{} (in {})", e.message, path.display());
            e
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            let key = message
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "config".to_owned());
            ConfigError::new(
                key,
                format!("{message}; see the configuration reference in the README"),
            )
        })
    }

    /// `self` with every value set in `over` replacing ours.
    pub fn overlay(self, over: &Settings) -> Settings {
        let mut base = to_map(&self);
        for (k, v) in to_map(over) {
            if !v.is_null() {
                base.insert(k, v);
            }
        }
        serde_json::from_value(Value::Object(base)).unwrap_or(self)
    }
}

fn to_map(s: &Settings) -> Map<String, Value> {
    match serde_json::to_value(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Everything `serve` needs, validated.
pub struct Resolved {
    /// The address to listen on.
    pub bind: String,
    /// The protected resource.
    pub resource: ProtectedResource,
    /// The token verifier.
    pub verifier: Arc<dyn TokenVerifier>,
    /// The verified-token cache.
    pub cache: TokenCache,
    /// Serve without sessions.
    pub stateless: bool,
    /// Plain JSON answers (stateless only).
    pub json_response: bool,
    /// Extra Host values.
    pub allowed_hosts: Vec<String>,
    /// Extra Origins.
    pub allowed_origins: Vec<String>,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Idle time before a session hibernates (`None`: never).
    pub session_hibernation: Option<Duration>,
    /// Where sessions are kept beyond memory (the proxy's store, or `store` when set).
    pub session_store: Option<StoreChoice>,
    /// How long a session held in memory is trusted before the store is asked again.
    pub session_store_recheck: Duration,
    /// Whether `/metrics` is served.
    pub metrics: bool,
    /// What to mirror at the AS metadata locations.
    pub as_metadata: MetadataSource,
    /// Auth off (benchmarks).
    pub auth_disabled: bool,
    /// The OAuth proxy, when `upstream_client_id` is set.
    pub proxy: Option<ProxyPlan>,
    /// A JWT verifier, when one is used, for `check`.
    pub jwt: Option<JwtVerifier>,
    /// Where discovery happens.
    pub discovery_url: String,
}

fn required<'a>(
    value: &'a Option<String>,
    key: &str,
    example: &str,
) -> Result<&'a str, ConfigError> {
    value.as_deref().filter(|v| !v.is_empty()).ok_or_else(|| {
        ConfigError::new(
            key,
            format!(
                "required; set `{key} = \"{example}\"` in the config file, MCP_OIDC_{} or --{}",
                key.to_uppercase(),
                key.replace('_', "-")
            ),
        )
    })
}

fn parse_algorithms(names: &[String]) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
    names
        .iter()
        .map(|n| {
            n.trim().parse().map_err(|_| {
                ConfigError::new(
                    "algorithms",
                    format!("`{n}` is not a JWS algorithm; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (or HS256/384/512 with hmac_secret)"),
                )
            })
        })
        .collect()
}

impl Settings {
    /// Validates the settings and builds the server's parts. Must run inside a Tokio
    /// runtime (key loading starts at once, in the background).
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let bind = self
            .bind
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8000".to_owned());
        let bind_addr: std::net::SocketAddr = bind.parse().map_err(|_| {
            ConfigError::new(
                "bind",
                format!("`{bind}` is not an address like 127.0.0.1:8000 or 0.0.0.0:8000"),
            )
        })?;
        let base_url = self
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{}", bind_addr.port()));
        let mcp_path = self.mcp_path.clone().unwrap_or_else(|| "/mcp".to_owned());
        let mut resource = ProtectedResource::new(&base_url, &mcp_path)?;
        let auth_disabled = self.insecure_disable_auth.unwrap_or(false);

        let scopes_supported: Scopes = match &self.scopes_supported {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => ["openid", "profile", "email"].into_iter().collect(),
        };
        resource.scopes_supported = scopes_supported;
        resource.required_scopes = self
            .required_scopes
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        resource.resource_name = Some("mcp-oidc".to_owned());

        let cache = TokenCache::new(
            self.token_cache_size.unwrap_or(10_000),
            Duration::from_secs(self.token_cache_ttl_secs.unwrap_or(3600)),
            Duration::from_secs(self.opaque_cache_ttl_secs.unwrap_or(60)),
        );
        let timeout = Duration::from_secs(self.provider_timeout_secs.unwrap_or(5).max(1));

        let issuer = if auth_disabled && self.issuer.is_none() {
            "http://invalid.localhost".to_owned()
        } else {
            required(&self.issuer, "issuer", "https://idp.example.com")?
                .trim_end_matches('/')
                .to_owned()
        };
        url::Url::parse(&issuer).map_err(|e| {
            ConfigError::new("issuer", format!("`{issuer}` is not an absolute URL ({e})"))
        })?;
        resource.authorization_servers = vec![issuer.clone()];
        let discovery_url = self.config_url.clone().unwrap_or_else(|| issuer.clone());

        let audience = if self.allow_any_audience.unwrap_or(false) {
            AudiencePolicy::AnyAudience
        } else {
            let list = self
                .audience
                .clone()
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| vec![resource.resource().to_owned()]);
            AudiencePolicy::OneOf(list.into_iter().map(Into::into).collect())
        };

        let proxy_mode = self.upstream_client_id.is_some();
        let mode = if proxy_mode {
            "proxy"
        } else {
            self.token_validation.as_deref().unwrap_or("jwt")
        };
        let mut jwt = None;
        let mut verifiers = MultiVerifier::new();
        if self.require_at_jwt == Some(true) && matches!(mode, "userinfo" | "introspection") {
            return Err(ConfigError::new(
                "require_at_jwt",
                format!(
                    "applies to JWT access tokens only; with token_validation = {mode} the tokens are opaque (remove the key, or use token_validation = jwt)"
                ),
            ));
        }
        if self.introspection_require_aud == Some(true) && mode != "introspection" {
            return Err(ConfigError::new(
                "introspection_require_aud",
                format!(
                    "applies to token_validation = introspection only (here {mode}; JWTs always need `aud`)"
                ),
            ));
        }
        match mode {
            "jwt" => {
                let keys = match (&self.hmac_secret, &self.jwks_uri) {
                    (Some(secret), _) => KeySource::HmacSecret(ClientSecret::new(secret.clone())),
                    (None, Some(uri)) => KeySource::JwksUri(uri.clone()),
                    (None, None) => KeySource::Discovery(discovery_url.clone()),
                };
                let mut config = JwtConfig::new(issuer.as_str(), keys, audience);
                if let Some(names) = &self.algorithms {
                    config.algorithms = parse_algorithms(names)?;
                } else if self.hmac_secret.is_some() {
                    config.algorithms = vec![
                        jsonwebtoken::Algorithm::HS256,
                        jsonwebtoken::Algorithm::HS384,
                        jsonwebtoken::Algorithm::HS512,
                    ];
                }
                config.leeway = Duration::from_secs(self.leeway_secs.unwrap_or(60));
                if self.require_at_jwt == Some(true) {
                    config.accepted_types = vec!["at+jwt".into(), "application/at+jwt".into()];
                    config.require_type = true;
                }
                config.jwks = JwksSettings {
                    min_refresh: Duration::from_secs(self.jwks_min_refresh_secs.unwrap_or(60)),
                    max_refresh: Duration::from_secs(self.jwks_max_refresh_secs.unwrap_or(86_400)),
                    unknown_kid_cooldown: Duration::from_secs(
                        self.jwks_unknown_kid_cooldown_secs.unwrap_or(10),
                    ),
                    http_timeout: timeout,
                    ..JwksSettings::default()
                };
                if config.jwks.min_refresh > config.jwks.max_refresh {
                    return Err(ConfigError::new(
                        "jwks_min_refresh_secs",
                        "must not be larger than jwks_max_refresh_secs",
                    ));
                }
                if !auth_disabled {
                    let v = JwtVerifier::new(config)?;
                    jwt = Some(v.clone());
                    verifiers = verifiers.with(v);
                }
            }
            "userinfo" => {
                verifiers = verifiers.with(UserinfoVerifier::new(UserinfoConfig {
                    issuer: issuer.as_str().into(),
                    discovery_url: discovery_url.clone(),
                    endpoint: None,
                    timeout,
                }));
            }
            "introspection" => {
                let endpoint = required(
                    &self.introspection_endpoint,
                    "introspection_endpoint",
                    "https://idp.example.com/oauth2/introspect",
                )?;
                let client_id = required(&self.client_id, "client_id", "my-resource-server")?;
                let secret = required(&self.client_secret, "client_secret", "...")?;
                verifiers = verifiers.with(IntrospectionVerifier::new(IntrospectionConfig {
                    issuer: issuer.as_str().into(),
                    endpoint: endpoint.to_owned(),
                    client_id: ClientId::new(client_id),
                    client_secret: ClientSecret::new(secret),
                    audience,
                    require_audience: self.introspection_require_aud == Some(true),
                    timeout,
                }));
            }
            "proxy" => {}
            other => {
                return Err(ConfigError::new(
                    "token_validation",
                    format!("`{other}` is not one of jwt, userinfo, introspection"),
                ));
            }
        }
        if let Some(path) = &self.static_tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "static_tokens_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let tokens: std::collections::BTreeMap<String, Map<String, Value>> =
                serde_json::from_str(&text).map_err(|e| {
                    ConfigError::new(
                        "static_tokens_file",
                        format!(
                            "{} must be a JSON object of token -> claims: {e}",
                            path.display()
                        ),
                    )
                })?;
            verifiers = verifiers.with(StaticTokenVerifier::new(issuer.as_str(), tokens));
        }

        let as_metadata = if self.mirror_provider_metadata.unwrap_or(true) {
            MetadataSource::Upstream(discovery_url.clone())
        } else {
            MetadataSource::None
        };

        let proxy = if proxy_mode {
            Some(self.proxy_plan(&discovery_url, &resource, timeout)?)
        } else {
            None
        };

        // The proxy's store keeps the sessions too; without the proxy they are kept on
        // disk only when a store is asked for, so a plain `serve` writes no files.
        let session_store = match (&proxy, &self.store) {
            (Some(plan), _) => Some(plan.store.clone()),
            (None, Some(_)) => Some(self.store_choice()?),
            (None, None) => None,
        };

        Ok(Resolved {
            proxy,
            session_store,
            bind,
            resource,
            verifier: Arc::new(verifiers),
            cache,
            stateless: self.stateless.unwrap_or(false),
            json_response: self.json_response.unwrap_or(false),
            allowed_hosts: self.allowed_hosts.clone().unwrap_or_default(),
            allowed_origins: self.allowed_origins.clone().unwrap_or_default(),
            request_timeout: Duration::from_secs(self.request_timeout_secs.unwrap_or(30)),
            max_body_bytes: self.max_body_bytes.unwrap_or(4 * 1024 * 1024),
            session_hibernation: match self.session_hibernate_secs {
                None => Some(mcp_oidc::server::DEFAULT_SESSION_HIBERNATION),
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
            },
            metrics: self.metrics.unwrap_or(false),
            session_store_recheck: self.session_store_recheck_secs.map_or(
                mcp_oidc::server::DEFAULT_SESSION_STORE_RECHECK,
                Duration::from_secs,
            ),
            as_metadata,
            auth_disabled,
            jwt,
            discovery_url,
        })
    }
}

impl Settings {
    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".mcp-oidc"))
    }

    fn store_choice(&self) -> Result<StoreChoice, ConfigError> {
        match self.store.as_deref() {
            None | Some("sqlite") => Ok(StoreChoice::Sqlite(self.state_dir().join("mcp-oidc.db"))),
            Some("memory") => Ok(StoreChoice::Memory),
            Some(other) => Err(ConfigError::new(
                "store",
                format!("`{other}` is not sqlite or memory"),
            )),
        }
    }

    fn proxy_plan(
        &self,
        discovery_url: &str,
        resource: &ProtectedResource,
        timeout: Duration,
    ) -> Result<ProxyPlan, ConfigError> {
        use mcp_oidc::proxy::{
            PreRegisteredClient, ProxyConfig, RedirectPolicy, UpstreamAuthMethod, UpstreamConfig,
            UpstreamEndpoints,
        };
        let client_id = required(
            &self.upstream_client_id,
            "upstream_client_id",
            "my-mcp-server",
        )?;
        let secret = required(
            &self.upstream_client_secret,
            "upstream_client_secret",
            "...",
        )?;
        let preset = match &self.upstream_preset {
            Some(name) => Some(mcp_oidc::proxy::presets::preset(name).ok_or_else(|| {
                ConfigError::new(
                    "upstream_preset",
                    format!("`{name}` is not one of keycloak, auth0, okta, entra, google, github"),
                )
            })?),
            None => None,
        };
        let scopes = self.upstream_scopes.clone().unwrap_or_else(|| {
            preset.map_or_else(
                || vec!["openid".into(), "profile".into(), "email".into()],
                |p| p.scopes.iter().map(|s| (*s).to_owned()).collect(),
            )
        });
        let mut extra: Vec<(String, String)> = preset
            .map(|p| {
                p.extra_authorize_params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for kv in self.upstream_extra_params.iter().flatten() {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                ConfigError::new("upstream_extra_params", format!("`{kv}` is not key=value"))
            })?;
            extra.push((k.to_owned(), v.to_owned()));
        }
        let auth_method = match self.upstream_auth_method.as_deref() {
            None | Some("client_secret_basic") => UpstreamAuthMethod::ClientSecretBasic,
            Some("client_secret_post") => UpstreamAuthMethod::ClientSecretPost,
            Some(other) => {
                return Err(ConfigError::new(
                    "upstream_auth_method",
                    format!("`{other}` is not client_secret_basic or client_secret_post"),
                ));
            }
        };
        let state_dir = self.state_dir();
        let store = self.store_choice()?;
        let proxy_secret = match &self.proxy_secret {
            Some(s) => s.clone(),
            None => load_or_create_secret(&state_dir)?,
        };
        let preset_endpoints = preset.and_then(|p| p.endpoints);
        let endpoints = match (
            &self.upstream_authorization_endpoint,
            &self.upstream_token_endpoint,
            &self.upstream_userinfo_endpoint,
        ) {
            (Some(a), Some(t), Some(u)) => Some(UpstreamEndpoints {
                issuer: discovery_url.to_owned(),
                authorization_endpoint: a.clone(),
                token_endpoint: t.clone(),
                userinfo_endpoint: u.clone(),
            }),
            (None, None, None) => preset_endpoints.map(|(a, t, u)| UpstreamEndpoints {
                issuer: discovery_url.to_owned(),
                authorization_endpoint: a.to_owned(),
                token_endpoint: t.to_owned(),
                userinfo_endpoint: u.to_owned(),
            }),
            _ => {
                return Err(ConfigError::new(
                    "upstream_authorization_endpoint",
                    "set all three of upstream_authorization_endpoint, upstream_token_endpoint and upstream_userinfo_endpoint (providers without discovery), or none",
                ));
            }
        };
        let upstream = UpstreamConfig {
            discovery_url: discovery_url.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: ClientSecret::new(secret),
            scopes,
            extra_authorize_params: extra,
            auth_method,
            use_userinfo: self
                .upstream_use_userinfo
                .unwrap_or(preset.is_some_and(|p| p.use_userinfo)),
            timeout,
            endpoints,
            subject_claim: self
                .upstream_subject_claim
                .clone()
                .or_else(|| preset.and_then(|p| p.subject_claim).map(str::to_owned)),
        };
        let origin = resource
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let mut config = ProxyConfig::new(
            &origin,
            resource.resource(),
            upstream,
            ClientSecret::new(proxy_secret),
        );
        config.scopes_supported = resource
            .scopes_supported
            .iter()
            .map(ToString::to_string)
            .collect();
        config.redirect_policy =
            RedirectPolicy::new(self.redirect_uri_patterns.clone().unwrap_or_default())?;
        if let Some(cimd) = config.cimd.as_mut() {
            cimd.allow_private_networks = self.allow_private_client_metadata.unwrap_or(false);
        }
        config.remember_consent = self.remember_consent.unwrap_or(false);
        if let Some(t) = self.access_token_ttl_secs {
            config.access_token_ttl = Duration::from_secs(t.max(60));
        }
        if let Some(t) = self.refresh_token_ttl_secs {
            config.refresh_token_ttl = Duration::from_secs(t.max(300));
        }
        if let Some(t) = self.refresh_grace_secs {
            // Longer would leave a stolen refresh token usable alongside the real client.
            config.refresh_grace = Duration::from_secs(t.min(60));
        }
        let limit = |v: Option<u32>, d: mcp_oidc::limit::RateLimit| match v {
            Some(n) => mcp_oidc::limit::RateLimit {
                per_minute: n,
                burst: n.div_ceil(2).max(1),
            },
            None => d,
        };
        config.register_limit = limit(self.register_rate_limit, config.register_limit);
        config.authorize_limit = limit(self.authorize_rate_limit, config.authorize_limit);
        config.token_limit = limit(self.token_rate_limit, config.token_limit);
        config.clients = self
            .clients
            .iter()
            .flatten()
            .map(|c| PreRegisteredClient {
                client_id: c.client_id.clone(),
                client_secret: c.client_secret.clone().map(ClientSecret::new),
                redirect_uris: c.redirect_uris.clone(),
                name: c.name.clone(),
            })
            .collect();
        Ok(ProxyPlan { config, store })
    }
}

/// Reads the proxy secret kept in `dir`, creating it (owner-only) on first start.
fn load_or_create_secret(dir: &Path) -> Result<String, ConfigError> {
    let path = dir.join("proxy-secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if existing.len() >= 32 {
            return Ok(existing);
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        ConfigError::new("state_dir", format!("cannot create {}: {e}", dir.display()))
    })?;
    let secret: String = (0..3)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    std::fs::write(&path, &secret).map_err(|e| {
        ConfigError::new("state_dir", format!("cannot write {}: {e}", path.display()))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    tracing::info!(path = %path.display(), "generated the proxy secret; keep this file (or set MCP_OIDC_PROXY_SECRET) so tokens survive restarts");
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_in_the_file_are_named() {
        let e = Settings::from_toml("isuer = \"x\"").unwrap_err();
        assert_eq!(e.key, "isuer", "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = Settings::from_toml("issuer = \"http://a\"\nleeway_secs = 5").unwrap();
        let flags = Settings {
            issuer: Some("http://b".into()),
            ..Settings::default()
        };
        let merged = file.overlay(&flags);
        assert_eq!(merged.issuer.as_deref(), Some("http://b"));
        assert_eq!(merged.leeway_secs, Some(5));
    }

    #[tokio::test]
    async fn missing_issuer_is_reported_with_the_fix() {
        let e = Settings::default().resolve().err().unwrap();
        assert_eq!(e.key, "issuer");
        assert!(e.message.contains("MCP_OIDC_ISSUER"), "{e}");
    }

    #[tokio::test]
    async fn bad_algorithm_and_bind_are_reported() {
        let s = Settings {
            issuer: Some("http://localhost:9400".into()),
            algorithms: Some(vec!["none".into()]),
            ..Settings::default()
        };
        assert_eq!(s.resolve().err().unwrap().key, "algorithms");
        let s = Settings {
            issuer: Some("http://localhost:9400".into()),
            bind: Some("nowhere".into()),
            ..Settings::default()
        };
        assert_eq!(s.resolve().err().unwrap().key, "bind");
    }

    #[tokio::test]
    async fn session_hibernation_defaults_to_five_minutes_and_zero_turns_it_off() {
        let base = "issuer = \"http://localhost:9400\"\n";
        let r = Settings::from_toml(base).unwrap().resolve().unwrap();
        assert_eq!(r.session_hibernation, Some(Duration::from_secs(300)));
        let r = Settings::from_toml(&format!("{base}session_hibernate_secs = 0"))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(r.session_hibernation, None);
        let r = Settings::from_toml(&format!("{base}session_hibernate_secs = 30"))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(r.session_hibernation, Some(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn metrics_are_off_unless_asked_for() {
        let base = "issuer = \"http://localhost:9400\"\n";
        assert!(
            !Settings::from_toml(base)
                .unwrap()
                .resolve()
                .unwrap()
                .metrics
        );
        let r = Settings::from_toml(&format!("{base}metrics = true"))
            .unwrap()
            .resolve()
            .unwrap();
        assert!(r.metrics);
    }

    #[tokio::test]
    async fn session_store_recheck_defaults_to_five_seconds() {
        let base = "issuer = \"http://localhost:9400\"\n";
        let r = Settings::from_toml(base).unwrap().resolve().unwrap();
        assert_eq!(r.session_store_recheck, Duration::from_secs(5));
        let r = Settings::from_toml(&format!("{base}session_store_recheck_secs = 0"))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(r.session_store_recheck, Duration::ZERO);
    }
}
