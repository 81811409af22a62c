//! Client ID Metadata Documents: an https `client_id` whose JSON document describes the
//! client, fetched with an SSRF guard.
//!
//! A client that uses one sends `client_id=https://app.example.com/oauth/client.json`; we fetch
//! that URL and read the client's name and redirect URIs from it (MCP authorization, "Client ID
//! Metadata Documents"; draft-ietf-oauth-client-id-metadata-document). Anyone can make us
//! fetch any URL this way, so the fetch is guarded:
//!
//! - the URL must be `https`, with a path, without fragment, user information or dot segments;
//! - the host is resolved here and refused if any address is loopback, private, link-local or
//!   otherwise not public, and the connection then goes to exactly the vetted addresses, so a
//!   DNS answer that changes between check and connect (DNS rebinding) changes nothing;
//! - no proxy, no redirects, one time limit for the whole fetch, a size limit enforced while
//!   reading, JSON only;
//! - valid documents are cached by their `Cache-Control` (within bounds); after a failure the
//!   same `client_id` is not fetched again for a short back-off, so a client cannot make us
//!   fetch a host at the rate it sends authorization requests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use super::redirect::RedirectPolicy;

/// Shortest time a fetched document is cached, whatever its `max-age` says: a document
/// cannot make us fetch it on every request.
pub const MIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Longest time a fetched document is cached, so that changes reach us within a day.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a document without `Cache-Control: max-age` is cached.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a failed fetch of a `client_id` is answered with the same refusal instead of a
/// new request: a back-off, so that a broken or hostile `client_id` cannot turn us into a
/// request generator against its host at the rate it sends authorization requests.
///
/// The draft (section "Metadata Caching") says error responses and invalid documents must not
/// be cached. Nothing from a failure is ever used as client metadata, and the back-off is
/// short, so a fixed document works again within half a minute; it is one constant so it can
/// be lowered if the stricter reading is wanted.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(30);
/// Most `client_id`s cached at once (each entry is at most `max_bytes` of document).
pub const CACHE_CAPACITY: u64 = 1000;
/// Longest `client_id` URL accepted, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 2048;

/// Settings of the [`CimdFetcher`].
#[derive(Debug, Clone)]
pub struct CimdConfig {
    /// Allow documents on private, loopback and link-local addresses, and plain http on
    /// loopback (development only).
    pub allow_private_networks: bool,
    /// Largest document accepted.
    pub max_bytes: usize,
    /// Time limit of a fetch.
    pub timeout: Duration,
}

impl Default for CimdConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            max_bytes: 5 * 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A client metadata document (RFC 7591 client metadata, served at the `client_id` URL).
///
/// Only documents that passed validation are handed out: `client_id` equals the URL,
/// `redirect_uris` is non-empty and every entry is acceptable to the default
/// [`RedirectPolicy`], the client authenticates with `none` or `private_key_jwt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadataDocument {
    /// Must equal the URL it was fetched from.
    pub client_id: String,
    /// Display name.
    #[serde(default)]
    pub client_name: Option<String>,
    /// Registered redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The client's home page. Kept only if it is an https URL without user information,
    /// since it is shown to the user; otherwise dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    /// The client's logo. Kept only if it is an https URL without user information;
    /// otherwise dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// `none` (public client; also assumed when absent) or `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    /// Grant types the client uses; when present, includes `authorization_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
    /// Response types the client uses; when present, includes `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_types: Option<Vec<String>>,
    /// Space-separated scopes the client may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Where the client's public keys are (an https URL); required for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client metadata document refused: {message}")]
pub struct CimdError {
    message: String,
    transient: bool,
}

impl CimdError {
    /// Why, in words that describe the client's side of the problem.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the document could not be fetched at all (the host did not answer, timed
    /// out, or answered with a server error), so that a later attempt may succeed; `false`
    /// when the document itself, or the client id, is unacceptable.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The precise reasons, worded once. Messages describe the client's side of the problem and
/// never include addresses we resolved or errors of our own HTTP stack.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the client_id is not an acceptable URL: {0}")]
    ClientIdUrl(String),
    #[error("the client_id host name could not be resolved")]
    Unresolvable,
    #[error(
        "the client_id host resolves to a loopback, private, link-local or other non-public \
         address; only publicly routable hosts are fetched"
    )]
    NonPublicAddress,
    #[error("could not connect to the client_id host")]
    Connect,
    #[error("the document was not fetched within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("fetching the document failed")]
    Transport,
    #[error(
        "the client_id URL answered with a redirect (HTTP {0}); redirects are not followed, \
         serve the document at the client_id URL itself"
    )]
    Redirect(u16),
    #[error("the client_id URL answered HTTP {0}, expected 200")]
    Status(u16),
    #[error("the document is not served as JSON (expected Content-Type: application/json)")]
    ContentType,
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the document is not valid JSON: {0}")]
    Json(String),
    #[error("the document is not a JSON object")]
    NotObject,
    #[error("the document contains `{0}`: a public document cannot hold a client secret")]
    Secret(&'static str),
    #[error(
        "the document's client_id does not equal the URL it was fetched from (compared as \
         strings)"
    )]
    ClientIdMismatch,
    #[error("the document has no redirect_uris")]
    NoRedirectUris,
    #[error("redirect_uris[{0}] is refused: {1}")]
    RedirectUri(usize, String),
    #[error(
        "token_endpoint_auth_method must be `none` or `private_key_jwt`: a public document \
         cannot carry a shared secret"
    )]
    AuthMethod,
    #[error("jwks contains private or symmetric key material; publish public keys only")]
    PrivateKey,
    #[error("token_endpoint_auth_method `private_key_jwt` needs a jwks_uri")]
    MissingJwksUri,
    #[error("jwks_uri must be an https URL without user information or fragment")]
    JwksUri,
    #[error("grant_types must include `authorization_code`")]
    GrantTypes,
    #[error("response_types must include `code`")]
    ResponseTypes,
}

impl Refusal {
    /// Failures of the network or of the document's host rather than of the document.
    fn is_transient(&self) -> bool {
        match self {
            Refusal::Unresolvable | Refusal::Connect | Refusal::Timeout(_) | Refusal::Transport => {
                true
            }
            Refusal::Status(status) => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl From<Refusal> for CimdError {
    fn from(value: Refusal) -> Self {
        Self {
            transient: value.is_transient(),
            message: value.to_string(),
        }
    }
}

/// One cache entry: a valid document for its cache lifetime, or a refusal for the back-off.
#[derive(Debug, Clone)]
struct Cached {
    outcome: Result<ClientMetadataDocument, CimdError>,
    ttl: Duration,
}

/// Gives every entry its own lifetime (the document's `max-age`, or the failure TTL).
#[derive(Debug, Clone, Copy)]
struct PerEntryTtl;

impl Expiry<String, Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Fetches client metadata documents. Cheap to clone; clones share the cache.
#[derive(Debug, Clone)]
pub struct CimdFetcher {
    config: CimdConfig,
    cache: Cache<String, Cached>,
}

impl CimdFetcher {
    /// A new fetcher with an empty cache.
    pub fn new(config: CimdConfig) -> Self {
        let cache = Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(PerEntryTtl)
            .build();
        Self { config, cache }
    }

    /// Fetches and validates the document of `client_id`, from the cache when possible.
    ///
    /// Concurrent calls for the same `client_id` share one fetch.
    pub async fn fetch(&self, client_id: &str) -> Result<ClientMetadataDocument, CimdError> {
        // Checked before the cache: costs nothing, and keeps junk keys out of it.
        let url = self.check_client_id(client_id).map_err(CimdError::from)?;
        let cached = self
            .cache
            .get_with_by_ref(client_id, self.fetch_uncached(client_id, url))
            .await;
        cached.outcome
    }

    async fn fetch_uncached(&self, client_id: &str, url: Url) -> Cached {
        let limit = self.config.timeout;
        let fetched = match tokio::time::timeout(limit, self.download(&url)).await {
            Ok(result) => result,
            Err(_) => Err(Refusal::Timeout(limit)),
        };
        let outcome = fetched.and_then(|(body, ttl)| validate(client_id, &body).map(|d| (d, ttl)));
        match outcome {
            Ok((document, ttl)) => Cached {
                outcome: Ok(document),
                ttl,
            },
            Err(refusal) => {
                tracing::debug!(client_id, reason = %refusal, "client metadata document refused");
                Cached {
                    outcome: Err(refusal.into()),
                    ttl: FAILURE_BACKOFF,
                }
            }
        }
    }

    /// The URL rules of the draft (section "Client Identifier URL"): https, a path, no
    /// fragment, no user information, no dot segments. We also require the parser's normalised
    /// form, so that the simple string comparison with the document's `client_id` and our
    /// cache key both see one spelling.
    fn check_client_id(&self, client_id: &str) -> Result<Url, Refusal> {
        let bad = |why: &str| Refusal::ClientIdUrl(why.to_owned());
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        if client_id
            .chars()
            .any(|c| !c.is_ascii() || c.is_ascii_control() || c == ' ' || c == '\\')
        {
            return Err(bad(
                "contains whitespace, control, non-ASCII or backslash characters",
            ));
        }
        if client_id.contains('#') {
            return Err(bad("must not contain a fragment"));
        }
        let before_query = client_id.split('?').next().unwrap_or(client_id);
        let dot_segment = before_query.split('/').skip(3).any(|segment| {
            let lowered = segment.to_ascii_lowercase().replace("%2e", ".");
            lowered == "." || lowered == ".."
        });
        if dot_segment {
            return Err(bad("must not contain `.` or `..` path segments"));
        }
        let url = Url::parse(client_id).map_err(|_| bad("not an absolute URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not contain user information"));
        }
        let loopback_host = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_private_networks && loopback_host => {}
            _ => return Err(bad("must use the https scheme")),
        }
        if url.path() == "/" {
            return Err(bad(
                "must have a path, like https://app.example.com/client.json",
            ));
        }
        if url.as_str() != client_id {
            return Err(Refusal::ClientIdUrl(format!(
                "not in normalised form (lower-case scheme and host, no default port); \
                 use `{}`",
                url.as_str()
            )));
        }
        Ok(url)
    }

    /// Resolves, vets and fetches. Returns the body and how long to cache it.
    async fn download(&self, url: &Url) -> Result<(Vec<u8>, Duration), Refusal> {
        let port = url.port_or_known_default().ok_or(Refusal::Unresolvable)?;
        let host = url.host().ok_or(Refusal::Unresolvable)?;
        let addrs: Vec<SocketAddr> = match host {
            Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Host::Domain(name) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| Refusal::Unresolvable)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Refusal::Unresolvable);
        }
        // The draft's SSRF section: never fetch from special-use addresses (RFC 6890). Every
        // address is checked, not just the first: the connector may try any of them.
        if !self.config.allow_private_networks && !addrs.iter().all(|a| is_public_address(a.ip())) {
            return Err(Refusal::NonPublicAddress);
        }

        let mut builder = reqwest::Client::builder()
            // A proxy would resolve the name itself, undoing the pinning below.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.config.timeout)
            .connect_timeout(self.config.timeout)
            .user_agent(concat!("mcp-oidc/", env!("CARGO_PKG_VERSION")));
        if let Host::Domain(name) = host {
            // Connect to exactly the addresses vetted above; reqwest does no lookup of its own.
            builder = builder.resolve_to_addrs(name, &addrs);
        }
        let client = builder.build().map_err(|_| Refusal::Transport)?;

        let mut response = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    Refusal::Timeout(self.config.timeout)
                } else if e.is_connect() {
                    Refusal::Connect
                } else {
                    Refusal::Transport
                }
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Refusal::Redirect(status.as_u16()));
        }
        if status != reqwest::StatusCode::OK {
            return Err(Refusal::Status(status.as_u16()));
        }
        let headers = response.headers();
        let is_json = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(Refusal::ContentType);
        }
        let ttl = cache_ttl(
            headers
                .get_all(reqwest::header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );

        let max = self.config.max_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(Refusal::TooLarge(max));
        }
        // The declared length may be absent (chunked) or wrong: count what actually arrives.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                Refusal::Timeout(self.config.timeout)
            } else {
                Refusal::Transport
            }
        })? {
            if body.len() + chunk.len() > max {
                return Err(Refusal::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, ttl))
    }
}

/// `application/json` or a more specific `application/<something>+json` (draft section
/// "Client ID Metadata Document").
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.len() > "+json".len() && sub.ends_with("+json"))
}

/// How long to cache a document, from its `Cache-Control` headers: `no-store`, `no-cache`
/// and `max-age=0` mean not at all; other `max-age` values are clamped to
/// [`MIN_CACHE_TTL`]..=[`MAX_CACHE_TTL`]; no `max-age` means [`DEFAULT_CACHE_TTL`].
fn cache_ttl<'a>(headers: impl Iterator<Item = &'a str>) -> Duration {
    let mut max_age: Option<u64> = None;
    for directive in headers.flat_map(|h| h.split(',')) {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(value) = directive.strip_prefix("max-age=") {
            // An unparsable value is treated as absent rather than as "forever".
            if let Ok(secs) = value.trim_matches('"').parse::<u64>() {
                max_age = Some(max_age.map_or(secs, |m| m.min(secs)));
            }
        }
    }
    match max_age {
        None => DEFAULT_CACHE_TTL,
        Some(0) => Duration::ZERO,
        Some(secs) => Duration::from_secs(secs).clamp(MIN_CACHE_TTL, MAX_CACHE_TTL),
    }
}

/// Checks the document against its URL and the rules for public documents.
fn validate(client_id: &str, body: &[u8]) -> Result<ClientMetadataDocument, Refusal> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refusal::Json(e.to_string()))?;
    let object = value.as_object().ok_or(Refusal::NotObject)?;
    // Draft section "Credential and Key Material Restrictions": a document anyone can read
    // must not carry a secret.
    for field in ["client_secret", "client_secret_expires_at"] {
        if object.contains_key(field) {
            return Err(Refusal::Secret(field));
        }
    }
    // Draft section "Credential and Key Material Restrictions": only public keys may be
    // published.
    if let Some(jwks) = object.get("jwks")
        && has_private_key_material(jwks)
    {
        return Err(Refusal::PrivateKey);
    }
    let mut document: ClientMetadataDocument =
        serde_json::from_value(value).map_err(|e| Refusal::Json(e.to_string()))?;
    if document.client_id != client_id {
        return Err(Refusal::ClientIdMismatch);
    }
    if document.redirect_uris.is_empty() {
        return Err(Refusal::NoRedirectUris);
    }
    let policy = RedirectPolicy::default();
    for (i, uri) in document.redirect_uris.iter().enumerate() {
        policy
            .check_registration(uri)
            .map_err(|e| Refusal::RedirectUri(i, e.0))?;
    }
    // Absent means `none` here, not RFC 7591's `client_secret_basic`: no secret can exist for
    // a client that registered by URL.
    match document.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some("private_key_jwt") if document.jwks_uri.is_none() => {
            return Err(Refusal::MissingJwksUri);
        }
        Some("private_key_jwt") => {}
        Some(_) => return Err(Refusal::AuthMethod),
    }
    if let Some(jwks_uri) = &document.jwks_uri
        && !is_plain_https_url(jwks_uri)
    {
        return Err(Refusal::JwksUri);
    }
    if let Some(grants) = &document.grant_types
        && !grants.iter().any(|g| g == "authorization_code")
    {
        return Err(Refusal::GrantTypes);
    }
    if let Some(types) = &document.response_types
        && !types.iter().any(|t| t == "code")
    {
        return Err(Refusal::ResponseTypes);
    }
    // Display-only links: a bad one is dropped rather than failing the client, but it never
    // reaches the consent page as a `javascript:` or `http:` link.
    if document
        .client_uri
        .as_deref()
        .is_some_and(|u| !is_plain_https_url(u))
    {
        document.client_uri = None;
    }
    if document
        .logo_uri
        .as_deref()
        .is_some_and(|u| !is_plain_https_url(u))
    {
        document.logo_uri = None;
    }
    Ok(document)
}

/// Whether a JWK Set holds members only private keys have (`d` and the RSA CRT parameters)
/// or symmetric keys (`k`).
fn has_private_key_material(jwks: &serde_json::Value) -> bool {
    const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];
    jwks.get("keys")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|keys| {
            keys.iter().any(|key| {
                key.as_object()
                    .is_some_and(|k| PRIVATE_MEMBERS.iter().any(|m| k.contains_key(*m)))
            })
        })
}

/// An absolute https URL with a host, without user information or fragment.
fn is_plain_https_url(value: &str) -> bool {
    Url::parse(value).is_ok_and(|u| {
        u.scheme() == "https"
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
            && u.fragment().is_none()
    })
}

/// Whether `ip` is a publicly routable unicast address: not loopback, private, link-local,
/// shared (CGNAT), unspecified, multicast, broadcast, documentation, benchmarking or reserved,
/// and, for IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4), not embedding one.
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let non_public = a == 0 // "this network", includes 0.0.0.0
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), RFC 6598
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, includes cloud metadata 169.254.169.254
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // documentation TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !non_public
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // Forms that carry an IPv4 address: judge the IPv4 address, since that is where the
    // packets end up (`::ffff:127.0.0.1` is loopback).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let octets = ip.octets();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix, RFC 6052.
        return is_public_v4(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    if segments[0] == 0x2002 {
        // 6to4, RFC 3056: the IPv4 address is in bits 16..48.
        return is_public_v4(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    // Everything outside global unicast 2000::/3 is special: ::, ::1, IPv4-compatible ::/96,
    // discard 100::/64, local NAT64 64:ff9b:1::/48, ULA fc00::/7, link-local fe80::/10,
    // site-local fec0::/10, multicast ff00::/8.
    let outside_global_unicast = segments[0] & 0xe000 != 0x2000;
    // 2001::/23 IETF protocol assignments, including Teredo 2001::/32 (which hides an IPv4
    // address) and benchmarking 2001:2::/48.
    let protocol_assignments = segments[0] == 0x2001 && segments[1] < 0x0200;
    // Documentation: 2001:db8::/32 and 3fff::/20.
    let documentation =
        (segments[0] == 0x2001 && segments[1] == 0x0db8) || (segments[0] & 0xfff0) == 0x3ff0;
    let non_public = outside_global_unicast || protocol_assignments || documentation;
    !non_public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn public_addresses_are_public() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public_address(ip(a)), "{a} should be public");
        }
    }

    #[test]
    fn non_public_ipv4_ranges_are_refused() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public_address(ip(a)), "{a} should not be public");
        }
    }

    #[test]
    fn non_public_ipv6_ranges_are_refused() {
        for a in [
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public_address(ip(a)), "{a} should not be public");
        }
    }

    #[test]
    fn cache_ttl_follows_cache_control_within_bounds() {
        let ttl = |h: &[&str]| cache_ttl(h.iter().copied());
        assert_eq!(ttl(&[]), DEFAULT_CACHE_TTL);
        assert_eq!(ttl(&["public, max-age=600"]), Duration::from_secs(600));
        assert_eq!(ttl(&["max-age=5"]), MIN_CACHE_TTL);
        assert_eq!(ttl(&["max-age=999999999"]), MAX_CACHE_TTL);
        assert_eq!(ttl(&["max-age=0"]), Duration::ZERO);
        assert_eq!(ttl(&["no-store"]), Duration::ZERO);
        assert_eq!(ttl(&["max-age=600, No-Cache"]), Duration::ZERO);
        assert_eq!(ttl(&["max-age=abc"]), DEFAULT_CACHE_TTL);
        assert_eq!(
            ttl(&["max-age=600", "max-age=120"]),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/client-metadata+json"));
        assert!(!is_json_media_type("text/html"));
        assert!(!is_json_media_type("text/json"));
        assert!(!is_json_media_type("application/+json"));
        assert!(!is_json_media_type("application/jsonp"));
    }

    fn refused_client_id(config: CimdConfig, client_id: &str) -> String {
        match CimdFetcher::new(config).check_client_id(client_id) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{client_id:?} should be refused"),
        }
    }

    #[test]
    fn client_id_urls_are_checked_before_any_fetch() {
        let d = CimdConfig::default;
        assert!(refused_client_id(d(), "http://app.example.com/c.json").contains("https"));
        assert!(refused_client_id(d(), "http://localhost:8080/c.json").contains("https"));
        assert!(refused_client_id(d(), "https://app.example.com").contains("path"));
        assert!(refused_client_id(d(), "https://app.example.com/").contains("path"));
        assert!(refused_client_id(d(), "https://app.example.com/c.json#x").contains("fragment"));
        assert!(refused_client_id(d(), "https://u:p@app.example.com/c.json").contains("user"));
        assert!(refused_client_id(d(), "https://app.example.com/a/../c.json").contains("segments"));
        assert!(refused_client_id(d(), "https://app.example.com/a/%2E%2e/c").contains("segments"));
        assert!(refused_client_id(d(), "https://app.example.com/./c.json").contains("segments"));
        assert!(refused_client_id(d(), "https://App.Example.com/c.json").contains("normalised"));
        assert!(refused_client_id(d(), "https://app.example.com:443/c").contains("normalised"));
        assert!(refused_client_id(d(), " https://app.example.com/c").contains("whitespace"));
        assert!(refused_client_id(d(), "https://app.example.com\\@x/c").contains("backslash"));
        assert!(refused_client_id(d(), "https://exаmple.com/c").contains("non-ASCII"));
        assert!(refused_client_id(d(), "app.example.com/c.json").contains("absolute"));
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_CLIENT_ID_LEN));
        assert!(refused_client_id(d(), &long).contains("longer"));
    }

    #[test]
    fn plain_http_client_id_is_allowed_only_on_loopback_in_development() {
        let dev = CimdConfig {
            allow_private_networks: true,
            ..CimdConfig::default()
        };
        let fetcher = CimdFetcher::new(dev.clone());
        assert!(
            fetcher
                .check_client_id("http://127.0.0.1:8080/c.json")
                .is_ok()
        );
        assert!(
            fetcher
                .check_client_id("http://localhost:8080/c.json")
                .is_ok()
        );
        assert!(fetcher.check_client_id("http://[::1]:8080/c.json").is_ok());
        assert!(refused_client_id(dev, "http://app.example.com/c.json").contains("https"));
    }

    #[test]
    fn good_client_id_urls_are_accepted() {
        let fetcher = CimdFetcher::new(CimdConfig::default());
        for id in [
            "https://app.example.com/client.json",
            "https://app.example.com:8443/oauth/client-metadata",
            "https://app.example.com/client?v=2",
        ] {
            assert!(fetcher.check_client_id(id).is_ok(), "{id}");
        }
    }

    const ID: &str = "https://app.example.com/client.json";

    fn doc(extra: serde_json::Value) -> Vec<u8> {
        let mut value = serde_json::json!({
            "client_id": ID,
            "client_name": "Example",
            "redirect_uris": ["http://127.0.0.1/callback"],
        });
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        serde_json::to_vec(&value).expect("json")
    }

    fn refusal(body: &[u8]) -> String {
        match validate(ID, body) {
            Err(e) => e.to_string(),
            Ok(d) => panic!("document should be refused: {d:?}"),
        }
    }

    #[test]
    fn a_valid_document_is_accepted_with_its_optional_fields() {
        let document = validate(
            ID,
            &doc(serde_json::json!({
                "client_uri": "https://app.example.com",
                "logo_uri": "https://app.example.com/logo.png",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "scope": "openid profile",
                "software_id": "extra members are ignored",
            })),
        )
        .expect("valid");
        assert_eq!(document.client_name.as_deref(), Some("Example"));
        assert_eq!(
            document.client_uri.as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(document.scope.as_deref(), Some("openid profile"));
    }

    #[test]
    fn documents_with_secrets_or_shared_secret_methods_are_refused() {
        assert!(refusal(&doc(serde_json::json!({"client_secret": "s"}))).contains("client_secret"));
        assert!(
            refusal(&doc(serde_json::json!({"client_secret_expires_at": 0})))
                .contains("client_secret_expires_at")
        );
        for method in [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
            "x",
        ] {
            let body = doc(serde_json::json!({"token_endpoint_auth_method": method}));
            assert!(
                refusal(&body).contains("token_endpoint_auth_method"),
                "{method}"
            );
        }
    }

    #[test]
    fn documents_publishing_private_or_symmetric_keys_are_refused() {
        let private = serde_json::json!({"jwks": {"keys": [
            {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "d": "secret"}
        ]}});
        assert!(refusal(&doc(private)).contains("private or symmetric key"));
        let symmetric = serde_json::json!({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}});
        assert!(refusal(&doc(symmetric)).contains("private or symmetric key"));
        let public = serde_json::json!({"jwks": {"keys": [
            {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}
        ]}});
        assert!(validate(ID, &doc(public)).is_ok());
    }

    #[test]
    fn private_key_jwt_needs_an_https_jwks_uri() {
        let body = doc(serde_json::json!({"token_endpoint_auth_method": "private_key_jwt"}));
        assert!(refusal(&body).contains("jwks_uri"));
        let body = doc(serde_json::json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "http://app.example.com/jwks",
        }));
        assert!(refusal(&body).contains("jwks_uri"));
        let body = doc(serde_json::json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "https://app.example.com/jwks",
        }));
        assert!(validate(ID, &body).is_ok());
    }

    #[test]
    fn grant_and_response_types_must_allow_the_code_flow() {
        let body = doc(serde_json::json!({"grant_types": ["client_credentials"]}));
        assert!(refusal(&body).contains("grant_types"));
        let body = doc(serde_json::json!({"response_types": ["token"]}));
        assert!(refusal(&body).contains("response_types"));
    }

    #[test]
    fn unsafe_display_links_are_dropped() {
        let document = validate(
            ID,
            &doc(serde_json::json!({
                "client_uri": "javascript:alert(1)",
                "logo_uri": "http://app.example.com/logo.png",
            })),
        )
        .expect("valid");
        assert_eq!(document.client_uri, None);
        assert_eq!(document.logo_uri, None);
    }

    #[test]
    fn malformed_documents_are_refused() {
        assert!(refusal(b"{not json").contains("not valid JSON"));
        assert!(refusal(b"[1,2]").contains("not a JSON object"));
        assert!(refusal(br#"{"client_id": 5}"#).contains("not valid JSON"));
        assert!(
            refusal(br#"{"client_id": "https://app.example.com/client.json"}"#)
                .contains("no redirect_uris")
        );
    }

    #[test]
    fn client_id_must_equal_the_url_as_a_string() {
        for other in [
            "https://app.example.com/client.json/",
            "https://APP.example.com/client.json",
            "https://app.example.com:443/client.json",
            "https://evil.example.com/client.json",
        ] {
            let mut body: serde_json::Value =
                serde_json::from_slice(&doc(serde_json::json!({}))).expect("json");
            body["client_id"] = serde_json::Value::from(other);
            let body = serde_json::to_vec(&body).expect("json");
            assert!(refusal(&body).contains("does not equal"), "{other}");
        }
    }

    #[test]
    fn each_redirect_uri_must_pass_the_registration_rules() {
        let body = doc(serde_json::json!({
            "redirect_uris": ["https://app.example.com/cb", "javascript:alert(1)"],
        }));
        let why = refusal(&body);
        assert!(
            why.contains("redirect_uris[1]") && why.contains("javascript"),
            "{why}"
        );
        let body = doc(serde_json::json!({"redirect_uris": ["http://app.example.com/cb"]}));
        assert!(refusal(&body).contains("loopback"));
    }
}
