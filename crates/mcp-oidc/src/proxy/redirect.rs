//! Redirect-URI rules for clients of the proxy (reference §B.4, RFC 8252, RFC 9700 §4.1).
//!
//! Two questions are answered here:
//!
//! - **May a client register this URI?** ([`RedirectPolicy::check_registration`]), asked for
//!   Dynamic Client Registration and for the `redirect_uris` of client metadata documents.
//! - **Does the `redirect_uri` of an authorization request belong to the client?**
//!   ([`RedirectPolicy::matches`]).
//!
//! Matching is exact string comparison (RFC 9700 §2.1 and §4.1.3: any pattern or
//! normalising comparison has led to open redirectors and stolen codes). The single exception is
//! the one RFC 8252 §7.3 requires: a native app listening on a loopback interface picks a free
//! port at run time, so for `http` loopback redirects the port is ignored while scheme, host,
//! path and query must still be identical.
//!
//! Because comparison is on strings, registration only accepts URIs already in the normalised
//! form a URL parser produces (lower-case scheme and host, no default port, no dot segments).
//! The string the client registered is then the string every browser and HTTP library will see,
//! and two spellings of one URI can never pass as different, or different URIs as one.

use std::net::Ipv6Addr;

use url::{Position, Url};

/// Longest redirect URI accepted, in bytes. Real ones are far shorter; a cap keeps stored
/// registrations and consent pages small.
pub const MAX_REDIRECT_URI_LEN: usize = 2048;

/// The configuration key the patterns come from, named in configuration errors.
const PATTERNS_KEY: &str = "redirect_uri_patterns";

/// Hosts on which plain `http` is allowed (RFC 8252 §7.3 and §8.3). Other spellings of
/// loopback (`127.1`, `[0:0::1]`, `127.0.0.2`) are refused: the exact-match rule only works
/// with one spelling per address.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Schemes that are never a redirect target: they run code in the browser, read local files,
/// or hand the code to something that is not the client.
const FORBIDDEN_SCHEMES: [&str; 13] = [
    "javascript",
    "vbscript",
    "data",
    "blob",
    "file",
    "filesystem",
    "about",
    "view-source",
    "ftp",
    "ws",
    "wss",
    "mailto",
    "jar",
];

/// Why a redirect URI is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid redirect URI: {0}")]
pub struct RedirectError(pub String);

impl RedirectError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Which redirect URIs clients may register and use.
///
/// The default policy applies the built-in rules only; [`RedirectPolicy::new`] adds an
/// allow-list of patterns that registered URIs must also match.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    patterns: Vec<Pattern>,
}

impl RedirectPolicy {
    /// A policy with an optional allow-list of patterns (an empty list allows every URI that
    /// passes the built-in rules).
    ///
    /// Pattern syntax:
    /// - `https://app.example.com/callback`: exactly this URI;
    /// - `https://app.example.com`: any path and query on this origin (no path given);
    /// - `https://app.example.com/oauth/*`: paths starting with `/oauth/` (`*` only at the end);
    /// - `https://*.example.com/*`: one subdomain label of `example.com` (not `example.com`
    ///   itself, not `a.b.example.com`), for `https` only and never directly under a top-level
    ///   domain;
    /// - `http://127.0.0.1:*/callback`, `http://localhost:*`: any port. A pattern without a port
    ///   allows only URIs without one;
    /// - `com.example.app:/callback`, `com.example.app:*`: private-use schemes of native apps.
    ///
    /// Patterns only narrow the built-in rules, so a pattern that could never match (plain
    /// `http` on a non-loopback host, `javascript:`) is a configuration error.
    pub fn new(patterns: Vec<String>) -> Result<Self, crate::ConfigError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Pattern::parse(p).map_err(|why| {
                    crate::ConfigError::new(
                        PATTERNS_KEY,
                        format!(
                            "pattern `{p}` is invalid: {why}. Write patterns like \
                             `https://app.example.com/callback`, `https://*.example.com/*` or \
                             `http://127.0.0.1:*/callback`"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    /// Checks a URI a client registers: the built-in rules, then the configured patterns.
    ///
    /// Allowed: `https` URIs; `http` on `localhost`, `127.0.0.1` or `[::1]`; private-use
    /// schemes of native apps in reverse-domain form (`com.example.app:/callback`,
    /// RFC 8252 §7.1). Refused: script, data and file schemes, user information, fragments,
    /// backslashes, whitespace, control and non-ASCII characters, wildcards, encoded dot
    /// segments, URIs not in normalised form, and URIs longer than [`MAX_REDIRECT_URI_LEN`].
    pub fn check_registration(&self, uri: &str) -> Result<(), RedirectError> {
        let url = check_uri(uri)?;
        if !self.patterns.is_empty() && !self.patterns.iter().any(|p| p.matches(&url)) {
            return Err(RedirectError::new(
                "not allowed by this server's redirect URI patterns",
            ));
        }
        Ok(())
    }

    /// Whether `requested` (the `redirect_uri` of an authorization or token request) matches
    /// one of `registered`.
    ///
    /// Exact string equality, except for `http` redirects to `localhost`, `127.0.0.1` and
    /// `[::1]`, whose port may differ (RFC 8252 §7.3: native apps listen on a port chosen at
    /// run time and may register the URI without one). Scheme, host, path and query still
    /// have to be identical, and the host is compared as written: `localhost`, `127.0.0.1` and
    /// `[::1]` are different hosts. The app listens on one of them, `localhost` may resolve to
    /// either address family, and RFC 8252 §8.3 only ever asks for the port to be ignored, so
    /// treating them as one would send the code to an interface the client never named.
    pub fn matches(registered: &[String], requested: &str) -> bool {
        if registered.iter().any(|r| r == requested) {
            return true;
        }
        let Some(requested) = LoopbackRedirect::parse(requested) else {
            return false;
        };
        registered
            .iter()
            .filter_map(|r| LoopbackRedirect::parse(r))
            .any(|r| r == requested)
    }
}

/// The parts of an `http` loopback redirect URI compared when the port is ignored.
#[derive(Debug, PartialEq, Eq)]
struct LoopbackRedirect {
    host: String,
    path_and_query: String,
}

impl LoopbackRedirect {
    /// `None` unless `uri` is a well-formed `http` loopback URI. Requested URIs go through
    /// the same checks as registered ones, so a hostile spelling cannot reach the comparison.
    fn parse(uri: &str) -> Option<Self> {
        let url = check_uri(uri).ok()?;
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?;
        if !LOOPBACK_HOSTS.contains(&host) {
            return None;
        }
        Some(Self {
            host: host.to_owned(),
            path_and_query: url[Position::BeforePath..Position::AfterQuery].to_owned(),
        })
    }
}

/// Applies the built-in rules and returns the parsed URI.
fn check_uri(uri: &str) -> Result<Url, RedirectError> {
    check_characters(uri)?;
    if has_dot_segment(uri) {
        return Err(RedirectError::new(
            "contains `.` or `..` path segments (plain or percent-encoded); register the \
             resolved path",
        ));
    }
    let url = Url::parse(uri).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            RedirectError::new("must be an absolute URI with a scheme")
        }
        other => RedirectError::new(format!("cannot be parsed: {other}")),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectError::new(
            "must not contain user information (`user@`): it disguises the real host",
        ));
    }
    check_scheme_and_host(&url)?;
    if !is_normalised(uri, &url) {
        return Err(RedirectError::new(format!(
            "is not in normalised form (lower-case scheme and host, no default port, no \
             dot segments); register `{}` instead",
            url.as_str()
        )));
    }
    check_path_encoding(url.path())?;
    Ok(url)
}

/// Refuses characters that different URL parsers treat differently, or that hide what the
/// URI points to.
fn check_characters(uri: &str) -> Result<(), RedirectError> {
    if uri.is_empty() {
        return Err(RedirectError::new("is empty"));
    }
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(RedirectError::new(format!(
            "is longer than {MAX_REDIRECT_URI_LEN} bytes"
        )));
    }
    for c in uri.chars() {
        let why = match c {
            // URL parsers strip leading and trailing whitespace and drop tabs and newlines
            // anywhere, so ` https://` or `java\nscript:` would not be what was compared.
            c if c.is_ascii_control() || c == ' ' => "contains whitespace or control characters",
            // RFC 3986 URIs are ASCII. Non-ASCII host names are turned into punycode by
            // parsers, and look-alike letters are a phishing tool on the consent page.
            c if !c.is_ascii() => {
                "contains non-ASCII characters; percent-encode them, and write international \
                 host names in their `xn--` form"
            }
            // Browsers read `\` as `/` in http(s) URIs and other parsers do not:
            // `https://good.example\@evil.example` goes to a different host depending on who
            // reads it.
            '\\' => "contains a backslash",
            // RFC 6749 §3.1.2: the redirection endpoint must not include a fragment.
            '#' => "must not contain a fragment (`#`)",
            // Registered URIs are matched exactly; a wildcard would never mean what it seems.
            '*' => "must not contain wildcards (`*`)",
            _ => continue,
        };
        return Err(RedirectError::new(why));
    }
    check_percent_encoding(uri)
}

/// Every `%` starts a valid escape, and no escape encodes a control character (which some
/// servers decode and act on, e.g. `%0d%0a` header splitting or `%00` truncation).
fn check_percent_encoding(uri: &str) -> Result<(), RedirectError> {
    let bytes = uri.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| RedirectError::new("contains a malformed percent-escape"))?;
            if decoded < 0x20 || decoded == 0x7f {
                return Err(RedirectError::new(
                    "contains percent-encoded control characters",
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Whether the part before the query has a `.` or `..` segment, also when written with
/// `%2e`: parsers resolve both spellings, so the URI would not be the one registered.
fn has_dot_segment(uri: &str) -> bool {
    let before_query = uri.split('?').next().unwrap_or(uri);
    before_query.split('/').any(|segment| {
        let lowered = segment.to_ascii_lowercase().replace("%2e", ".");
        lowered == "." || lowered == ".."
    })
}

/// Refuses encoded slashes, backslashes and percent signs in the path: a server that decodes
/// them (once or twice) sees a different path, e.g. `..%2f` or `%252e%252e`.
fn check_path_encoding(path: &str) -> Result<(), RedirectError> {
    let lowered = path.to_ascii_lowercase();
    for escape in ["%2e", "%2f", "%5c", "%25"] {
        if lowered.contains(escape) {
            return Err(RedirectError::new(format!(
                "path contains the escape `{escape}`, which servers decode into a different \
                 path"
            )));
        }
    }
    Ok(())
}

/// Scheme rules: `https` anywhere, `http` on loopback, reverse-domain private-use schemes.
fn check_scheme_and_host(url: &Url) -> Result<(), RedirectError> {
    match url.scheme() {
        "https" => match url.host_str() {
            Some(host) if !host.is_empty() => Ok(()),
            _ => Err(RedirectError::new("https URI without a host")),
        },
        "http" => match url.host_str() {
            Some(host) if LOOPBACK_HOSTS.contains(&host) => Ok(()),
            // RFC 9700 §2.6 / RFC 8252 §8.3: plain http exposes the code on the network,
            // except on the loopback interface, which never leaves the machine.
            _ => Err(RedirectError::new(
                "http is allowed only on loopback hosts (`localhost`, `127.0.0.1`, `[::1]`); \
                 use https",
            )),
        },
        scheme if FORBIDDEN_SCHEMES.contains(&scheme) => Err(RedirectError::new(format!(
            "the `{scheme}:` scheme is never allowed"
        ))),
        scheme => {
            check_private_use_scheme(scheme).map_err(RedirectError::new)?;
            // RFC 8252 §7.1 shows `com.example.app:/oauth2redirect/...`; a URI without a path
            // (`com.example.app:`) or with an opaque one (`com.example.app:x`) names nothing.
            let rest = url.as_str().get(scheme.len() + 1..).unwrap_or_default();
            if !rest.starts_with('/') || rest.trim_start_matches('/').is_empty() {
                return Err(RedirectError::new(
                    "a private-use scheme URI needs a path, like `com.example.app:/callback`",
                ));
            }
            Ok(())
        }
    }
}

/// RFC 8252 §7.1 and §8.4: a private-use scheme must be a reverse domain name the app
/// controls; one without a period must be refused, as such schemes collide between apps.
fn check_private_use_scheme(scheme: &str) -> Result<(), String> {
    let labels: Vec<&str> = scheme.split('.').collect();
    let valid_labels = labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if labels.len() < 2 || !valid_labels {
        return Err(format!(
            "the `{scheme}:` scheme is neither https, loopback http, nor a reverse-domain \
             private-use scheme such as `com.example.app:` (RFC 8252 §7.1)"
        ));
    }
    Ok(())
}

/// Whether `uri` is exactly what the parser produced. A bare origin (`https://app.example`)
/// is accepted although the parser adds a `/`, since that is the only change.
fn is_normalised(uri: &str, url: &Url) -> bool {
    let normal = url.as_str();
    normal == uri
        || (url.path() == "/"
            && url.query().is_none()
            && normal.strip_suffix('/') == Some(uri)
            && url.host().is_some())
}

/// One entry of the `redirect_uri_patterns` allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    scheme: String,
    /// `None` for private-use patterns without `//`: everything after `scheme:` is the tail.
    authority: Option<AuthorityPattern>,
    tail: TailPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthorityPattern {
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: exactly one more label in front.
    OneLabelUnder(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    /// No port written: only URIs without an explicit port.
    Default,
    /// `:*`.
    Any,
    Exact(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TailPattern {
    /// No path in the pattern: any path and query.
    Any,
    /// Path and query exactly.
    Exact(String),
    /// Ends with `*`: path and query starting with this.
    Prefix(String),
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("it is empty".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || matches!(c, ' ' | '\\' | '#' | '@'))
        {
            return Err(format!("it contains the character {c:?}"));
        }
        let (scheme, rest) = pattern
            .split_once(':')
            .ok_or("it has no scheme (write `https://...`)")?;
        let scheme = scheme.to_ascii_lowercase();
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(format!("`{scheme}` is not a valid scheme"));
        }
        match scheme.as_str() {
            "https" | "http" => {}
            s if FORBIDDEN_SCHEMES.contains(&s) => {
                return Err(format!("the `{s}:` scheme is never allowed"));
            }
            s => check_private_use_scheme(s)?,
        }
        let (authority, tail) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find(['/', '?']).unwrap_or(after.len());
                let authority = AuthorityPattern::parse(&scheme, &after[..end])?;
                (Some(authority), &after[end..])
            }
            None if matches!(scheme.as_str(), "https" | "http") => {
                return Err(format!("write `{scheme}://host/...`"));
            }
            None => (None, rest),
        };
        let tail = if tail.is_empty() {
            TailPattern::Any
        } else {
            if authority.is_some() && !tail.starts_with(['/', '?']) {
                return Err("the path must start with `/`".into());
            }
            match tail.find('*') {
                None => TailPattern::Exact(tail.to_owned()),
                Some(i) if i + 1 == tail.len() => TailPattern::Prefix(tail[..i].to_owned()),
                Some(_) => {
                    return Err("`*` is allowed in the path only as its last character".into());
                }
            }
        };
        Ok(Self {
            scheme,
            authority,
            tail,
        })
    }

    /// Whether a URI that passed the built-in rules (so is normalised) matches.
    fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let tail = match &self.authority {
            Some(authority) => {
                if !authority.matches(url) {
                    return false;
                }
                &url[Position::BeforePath..Position::AfterQuery]
            }
            None => url
                .as_str()
                .get(self.scheme.len() + 1..)
                .unwrap_or_default(),
        };
        match &self.tail {
            TailPattern::Any => true,
            TailPattern::Exact(t) => tail == t,
            TailPattern::Prefix(p) => tail.starts_with(p.as_str()),
        }
    }
}

impl AuthorityPattern {
    fn parse(scheme: &str, authority: &str) -> Result<Self, String> {
        let (host, port) = if authority.starts_with('[') {
            let end = authority
                .find(']')
                .ok_or("an IPv6 host must be closed with `]`")?;
            let (host, rest) = authority.split_at(end + 1);
            let inner = &host[1..host.len() - 1];
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| format!("`{host}` is not an IPv6 address"))?;
            let port = match rest {
                "" => None,
                r => Some(r.strip_prefix(':').ok_or("junk after the IPv6 host")?),
            };
            (HostPattern::Exact(format!("[{ip}]")), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            (
                parse_host_pattern(scheme, &host.to_ascii_lowercase())?,
                port,
            )
        };
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("`{p}` is not a port (1-65535 or `*`)")),
                Ok(443) if scheme == "https" => PortPattern::Default,
                Ok(80) if scheme == "http" => PortPattern::Default,
                Ok(n) => PortPattern::Exact(n),
            },
        };
        if scheme == "http" {
            match &host {
                HostPattern::Exact(h) if LOOPBACK_HOSTS.contains(&h.as_str()) => {}
                _ => {
                    return Err(
                        "http is allowed only on `localhost`, `127.0.0.1` and `[::1]`".into(),
                    );
                }
            }
        }
        Ok(Self { host, port })
    }

    fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == h,
            HostPattern::OneLabelUnder(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        };
        let port_ok = match self.port {
            PortPattern::Default => url.port().is_none(),
            PortPattern::Any => true,
            PortPattern::Exact(p) => url.port() == Some(p),
        };
        host_ok && port_ok
    }
}

/// A host name, an IPv4 address, or `*.` followed by a domain of at least two labels.
fn parse_host_pattern(scheme: &str, host: &str) -> Result<HostPattern, String> {
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let labels: Vec<&str> = name.split('.').collect();
    let valid = !name.is_empty()
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!(
            "`{host}` is not a host name (`*` may only be the whole first label, as in \
             `*.example.com`)"
        ));
    }
    if !wildcard {
        return Ok(HostPattern::Exact(name.to_owned()));
    }
    if scheme != "https" {
        return Err("host wildcards are allowed only for https".into());
    }
    // `*.com` would let anyone with a domain register; require a registrable domain below it.
    if labels.len() < 2 {
        return Err(format!(
            "`{host}` is too broad: the wildcard must sit below a domain like `example.com`"
        ));
    }
    Ok(HostPattern::OneLabelUnder(format!(".{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(uri: &str) {
        let policy = RedirectPolicy::default();
        assert_eq!(
            policy.check_registration(uri),
            Ok(()),
            "{uri:?} should be accepted"
        );
    }

    fn refuses(uri: &str) -> String {
        let policy = RedirectPolicy::default();
        match policy.check_registration(uri) {
            Err(RedirectError(why)) => why,
            Ok(()) => panic!("{uri:?} should be refused"),
        }
    }

    fn with_patterns(patterns: &[&str]) -> RedirectPolicy {
        RedirectPolicy::new(patterns.iter().map(|p| p.to_string()).collect())
            .expect("valid patterns")
    }

    fn reg(uris: &[&str]) -> Vec<String> {
        uris.iter().map(|u| u.to_string()).collect()
    }

    // ---- registration: accepted ----

    #[test]
    fn https_uris_are_accepted() {
        accepts("https://app.example.com/callback");
        accepts("https://app.example.com:8443/oauth/callback?tenant=a");
        accepts("https://app.example.com");
        accepts("https://app.example.com/");
    }

    #[test]
    fn loopback_http_uris_are_accepted_with_and_without_port() {
        accepts("http://localhost/callback");
        accepts("http://localhost:53124/callback");
        accepts("http://127.0.0.1/callback");
        accepts("http://127.0.0.1:8080/");
        accepts("http://[::1]:3000/cb");
        accepts("http://[::1]/cb");
    }

    #[test]
    fn reverse_domain_private_use_schemes_are_accepted() {
        accepts("com.example.app:/oauth2redirect/provider");
        accepts("com.example.app://callback");
        accepts("io.cursor.app-1:/auth");
    }

    #[test]
    fn punycode_hosts_are_accepted_as_written() {
        // Shown on the consent page as `xn--...`, so they cannot pass for `example.com`.
        accepts("https://xn--exmple-cua.com/callback");
    }

    // ---- registration: refused schemes ----

    #[test]
    fn script_data_and_file_schemes_are_refused_in_any_case() {
        for uri in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "javascript://example.com/%0aalert(1)",
            "vbscript:msgbox(1)",
            "data:text/html,<script>alert(1)</script>",
            "DATA:text/html;base64,PHNjcmlwdD4=",
            "file:///etc/passwd",
            "blob:https://example.com/uuid",
            "about:blank",
            "ftp://example.com/x",
            "wss://example.com/x",
        ] {
            refuses(uri);
        }
        assert!(refuses("JaVaScRiPt:alert(1)").contains("javascript"));
    }

    #[test]
    fn leading_or_embedded_whitespace_is_refused() {
        assert!(refuses(" https://app.example.com/cb").contains("whitespace"));
        assert!(refuses("https://app.example.com/cb ").contains("whitespace"));
        assert!(refuses("java\tscript:alert(1)").contains("control"));
        assert!(refuses("https://app.example.com/c\nb").contains("control"));
        assert!(refuses("https://app.example.com/\0").contains("control"));
    }

    #[test]
    fn plain_http_on_non_loopback_hosts_is_refused() {
        assert!(refuses("http://app.example.com/callback").contains("loopback"));
        assert!(refuses("http://192.168.1.10/callback").contains("loopback"));
    }

    #[test]
    fn look_alike_loopback_hosts_are_refused() {
        for uri in [
            "http://localhost.evil.com/cb",
            "http://127.0.0.1.nip.io/cb",
            "http://evil.com#@localhost/cb",
            "http://localhost@evil.com/cb",
            "http://127.0.0.2/cb",
            "http://0.0.0.0/cb",
            "http://[::ffff:7f00:1]/cb",
        ] {
            refuses(uri);
        }
    }

    #[test]
    fn alternative_spellings_of_loopback_addresses_are_refused() {
        // The parser would rewrite these to 127.0.0.1 / [::1]; the string would not match.
        for uri in [
            "http://127.1/cb",
            "http://0x7f.0.0.1/cb",
            "http://2130706433/cb",
            "http://[0:0:0:0:0:0:0:1]/cb",
            "http://[::ffff:127.0.0.1]/cb",
            "http://LOCALHOST/cb",
        ] {
            refuses(uri);
        }
    }

    #[test]
    fn dotless_private_use_schemes_are_refused() {
        assert!(refuses("myapp:/callback").contains("reverse-domain"));
        refuses("com..app:/callback");
    }

    #[test]
    fn private_use_scheme_without_path_is_refused() {
        assert!(refuses("com.example.app:").contains("path"));
        assert!(refuses("com.example.app:callback").contains("path"));
    }

    #[test]
    fn relative_and_empty_uris_are_refused() {
        assert!(refuses("/callback").contains("absolute"));
        assert!(refuses("//evil.example/cb").contains("absolute"));
        assert!(refuses("").contains("empty"));
    }

    // ---- registration: refused tricks ----

    #[test]
    fn userinfo_is_refused() {
        assert!(refuses("https://evil@good.example/cb").contains("user information"));
        assert!(refuses("https://good.example:pw@evil.example/cb").contains("user information"));
        refuses("https://good.example%40evil.example/cb");
        assert!(refuses("com.example.app://user@host/cb").contains("user information"));
    }

    #[test]
    fn backslashes_are_refused() {
        assert!(refuses("https://good.example\\@evil.example/cb").contains("backslash"));
        assert!(refuses("https:\\\\evil.example/cb").contains("backslash"));
        assert!(refuses("https://good.example/cb\\..\\admin").contains("backslash"));
    }

    #[test]
    fn fragments_are_refused_even_when_empty() {
        assert!(refuses("https://app.example.com/cb#frag").contains("fragment"));
        assert!(refuses("https://app.example.com/cb#").contains("fragment"));
    }

    #[test]
    fn wildcards_are_refused() {
        assert!(refuses("https://*.example.com/cb").contains("wildcard"));
        assert!(refuses("https://app.example.com/*").contains("wildcard"));
    }

    #[test]
    fn dot_segments_plain_or_encoded_are_refused() {
        for uri in [
            "https://app.example.com/cb/../admin",
            "https://app.example.com/./cb",
            "https://app.example.com/cb/%2e%2e/admin",
            "https://app.example.com/cb/%2E%2E/admin",
            "https://app.example.com/cb/.%2e/admin",
            "https://app.example.com/cb/%2e",
            "https://app.example.com/cb/..",
        ] {
            assert!(refuses(uri).contains("segments"), "{uri}");
        }
    }

    #[test]
    fn encoded_slashes_backslashes_and_double_encoding_in_the_path_are_refused() {
        assert!(refuses("https://app.example.com/cb..%2fadmin").contains("%2f"));
        assert!(refuses("https://app.example.com/cb%5cadmin").contains("%5c"));
        assert!(refuses("https://app.example.com/%252e%252e/admin").contains("%25"));
        assert!(refuses("https://app.example.com/a.%2ejson").contains("%2e"));
    }

    #[test]
    fn encoded_control_characters_and_bad_escapes_are_refused() {
        assert!(refuses("https://app.example.com/cb%0d%0aSet-Cookie:x").contains("control"));
        assert!(refuses("https://app.example.com/cb?x=%00").contains("control"));
        assert!(refuses("https://app.example.com/cb%zz").contains("malformed"));
        assert!(refuses("https://app.example.com/cb%2").contains("malformed"));
    }

    #[test]
    fn non_ascii_and_homograph_hosts_are_refused() {
        // Cyrillic `а` in place of Latin `a`.
        assert!(refuses("https://exаmple.com/cb").contains("non-ASCII"));
        assert!(refuses("https://example.com/caf\u{e9}").contains("non-ASCII"));
        // Full-width dot, which parsers turn into `.`.
        assert!(refuses("https://evil\u{ff0e}com/cb").contains("non-ASCII"));
    }

    #[test]
    fn non_normalised_uris_are_refused_with_the_normalised_form() {
        let why = refuses("HTTPS://App.Example.COM/cb");
        assert!(why.contains("https://app.example.com/cb"), "{why}");
        assert!(refuses("https://app.example.com:443/cb").contains("normalised"));
        assert!(refuses("http://localhost:80/cb").contains("normalised"));
        assert!(refuses("https://app.example.com/a b").contains("whitespace"));
        assert!(refuses("https://app.example.com/<x>").contains("normalised"));
    }

    #[test]
    fn overly_long_uris_are_refused() {
        let long = format!(
            "https://app.example.com/{}",
            "a".repeat(MAX_REDIRECT_URI_LEN)
        );
        assert!(refuses(&long).contains("longer"));
        let fits = format!(
            "https://app.example.com/{}",
            "a".repeat(MAX_REDIRECT_URI_LEN - "https://app.example.com/".len())
        );
        accepts(&fits);
    }

    #[test]
    fn ipv6_hosts_follow_the_same_rules() {
        accepts("https://[2001:db8::1]/cb");
        refuses("http://[2001:db8::1]/cb");
        refuses("https://[2001:DB8::1]/cb");
        refuses("https://[::1/cb");
    }

    // ---- patterns ----

    #[test]
    fn any_port_pattern_allows_every_loopback_port_and_none() {
        let policy = with_patterns(&["http://localhost:*"]);
        assert_eq!(
            policy.check_registration("http://localhost:53124/callback"),
            Ok(())
        );
        assert_eq!(
            policy.check_registration("http://localhost/callback"),
            Ok(())
        );
        assert!(
            policy
                .check_registration("http://127.0.0.1:5000/callback")
                .is_err()
        );
    }

    #[test]
    fn pattern_without_port_allows_only_uris_without_port() {
        let policy = with_patterns(&["http://127.0.0.1/callback"]);
        assert_eq!(
            policy.check_registration("http://127.0.0.1/callback"),
            Ok(())
        );
        assert!(
            policy
                .check_registration("http://127.0.0.1:8080/callback")
                .is_err()
        );
    }

    #[test]
    fn any_port_pattern_with_path_requires_that_path() {
        let policy = with_patterns(&["http://127.0.0.1:*/callback"]);
        assert_eq!(
            policy.check_registration("http://127.0.0.1:9/callback"),
            Ok(())
        );
        assert!(
            policy
                .check_registration("http://127.0.0.1:9/callback2")
                .is_err()
        );
        assert!(
            policy
                .check_registration("http://127.0.0.1:9/callback?x=1")
                .is_err()
        );
        assert!(policy.check_registration("http://127.0.0.1:9/").is_err());
    }

    #[test]
    fn subdomain_wildcard_matches_exactly_one_label() {
        let policy = with_patterns(&["https://*.example.com/*"]);
        assert_eq!(
            policy.check_registration("https://app.example.com/cb"),
            Ok(())
        );
        assert_eq!(
            policy.check_registration("https://a-1.example.com/x/y?z=1"),
            Ok(())
        );
        assert!(policy.check_registration("https://example.com/cb").is_err());
        assert!(
            policy
                .check_registration("https://a.b.example.com/cb")
                .is_err()
        );
        assert!(
            policy
                .check_registration("https://evilexample.com/cb")
                .is_err()
        );
        assert!(
            policy
                .check_registration("https://app.example.com.evil.com/cb")
                .is_err()
        );
        assert!(
            policy
                .check_registration("https://app.example.com:8443/cb")
                .is_err()
        );
    }

    #[test]
    fn path_prefix_pattern_matches_only_below_the_prefix() {
        let policy = with_patterns(&["https://app.example.com/oauth/*"]);
        assert_eq!(
            policy.check_registration("https://app.example.com/oauth/cb"),
            Ok(())
        );
        assert!(
            policy
                .check_registration("https://app.example.com/oauth")
                .is_err()
        );
        assert!(
            policy
                .check_registration("https://app.example.com/other")
                .is_err()
        );
        // The built-in rules run first, so no dot segment can climb out of the prefix.
        assert!(
            policy
                .check_registration("https://app.example.com/oauth/../admin")
                .is_err()
        );
        assert!(
            policy
                .check_registration("https://app.example.com/oauth/%2e%2e/admin")
                .is_err()
        );
    }

    #[test]
    fn exact_pattern_matches_only_that_uri() {
        let policy = with_patterns(&["https://app.example.com/callback"]);
        assert_eq!(
            policy.check_registration("https://app.example.com/callback"),
            Ok(())
        );
        assert!(
            policy
                .check_registration("https://app.example.com/callback/x")
                .is_err()
        );
        assert!(
            policy
                .check_registration("https://other.example.com/callback")
                .is_err()
        );
        let why = policy
            .check_registration("https://x.example/cb")
            .unwrap_err()
            .0;
        assert!(why.contains("patterns"));
    }

    #[test]
    fn origin_pattern_allows_any_path_on_that_origin() {
        let policy = with_patterns(&["https://app.example.com"]);
        assert_eq!(
            policy.check_registration("https://app.example.com/a/b?c=d"),
            Ok(())
        );
        assert!(
            policy
                .check_registration("http://app.example.com/a")
                .is_err()
        );
    }

    #[test]
    fn patterns_do_not_relax_the_built_in_rules() {
        let policy = with_patterns(&["https://*.example.com/*"]);
        assert!(
            policy
                .check_registration("https://evil@app.example.com/cb")
                .is_err()
        );
        assert!(
            policy
                .check_registration("https://app.example.com/cb#x")
                .is_err()
        );
    }

    #[test]
    fn private_use_scheme_patterns_match() {
        let policy = with_patterns(&["com.example.app:/callback", "org.example:*"]);
        assert_eq!(
            policy.check_registration("com.example.app:/callback"),
            Ok(())
        );
        assert!(policy.check_registration("com.example.app:/other").is_err());
        assert_eq!(policy.check_registration("org.example:/anything"), Ok(()));
    }

    #[test]
    fn pattern_host_and_scheme_case_is_normalised() {
        let policy = with_patterns(&["HTTPS://App.Example.COM/cb"]);
        assert_eq!(
            policy.check_registration("https://app.example.com/cb"),
            Ok(())
        );
    }

    #[test]
    fn pattern_with_default_port_equals_pattern_without_port() {
        let policy = with_patterns(&["https://app.example.com:443/cb"]);
        assert_eq!(
            policy.check_registration("https://app.example.com/cb"),
            Ok(())
        );
    }

    #[test]
    fn ipv6_loopback_pattern_matches() {
        let policy = with_patterns(&["http://[::1]:*/cb"]);
        assert_eq!(policy.check_registration("http://[::1]:4000/cb"), Ok(()));
        assert!(
            policy
                .check_registration("http://127.0.0.1:4000/cb")
                .is_err()
        );
    }

    #[test]
    fn invalid_patterns_are_config_errors_naming_the_key_and_the_fix() {
        for bad in [
            "",
            "example.com/cb",
            "https://*/cb",
            "https://*.com/*",
            "https://a.*.example.com/cb",
            "https://app*.example.com/cb",
            "https://app.example.com/*/cb",
            "https://app.example.com*",
            "http://app.example.com/*",
            "http://*.localhost/*",
            "javascript:*",
            "myapp:/cb",
            "https://app.example.com:99999/cb",
            "https://app.example.com:/cb",
            "https://user@app.example.com/cb",
            "https://app.example.com/cb#x",
            "https://[::1/cb",
            "https:app.example.com",
            " https://app.example.com",
        ] {
            let err = RedirectPolicy::new(vec![bad.to_owned()])
                .expect_err(&format!("{bad:?} should be refused"));
            assert_eq!(err.key, "redirect_uri_patterns", "{bad:?}");
            assert!(err.message.contains("Write patterns like"), "{bad:?}");
        }
    }

    // ---- matching ----

    #[test]
    fn identical_strings_match() {
        let registered = reg(&["https://app.example.com/cb"]);
        assert!(RedirectPolicy::matches(
            &registered,
            "https://app.example.com/cb"
        ));
    }

    #[test]
    fn non_loopback_uris_must_match_exactly() {
        let registered = reg(&["https://app.example.com/cb"]);
        for requested in [
            "https://app.example.com/cb/",
            "https://app.example.com/cb?x=1",
            "https://app.example.com/CB",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com:8443/cb",
            "https://app.example.com/cb#",
            "https://app.example.com/x/../cb",
            "https://app.example.com/%63b",
            "http://app.example.com/cb",
            "https://evil.example.com/cb",
            "https://app.example.com.evil.com/cb",
            " https://app.example.com/cb",
        ] {
            assert!(
                !RedirectPolicy::matches(&registered, requested),
                "{requested} must not match"
            );
        }
    }

    #[test]
    fn loopback_port_is_ignored_when_registered_without_port() {
        let registered = reg(&["http://localhost/callback"]);
        assert!(RedirectPolicy::matches(
            &registered,
            "http://localhost:53124/callback"
        ));
        assert!(RedirectPolicy::matches(
            &registered,
            "http://localhost/callback"
        ));
    }

    #[test]
    fn loopback_port_is_ignored_when_registered_with_another_port() {
        let registered = reg(&["http://127.0.0.1:8080/callback"]);
        assert!(RedirectPolicy::matches(
            &registered,
            "http://127.0.0.1:53124/callback"
        ));
        assert!(RedirectPolicy::matches(
            &registered,
            "http://127.0.0.1/callback"
        ));
        let v6 = reg(&["http://[::1]/cb"]);
        assert!(RedirectPolicy::matches(&v6, "http://[::1]:40000/cb"));
    }

    #[test]
    fn loopback_path_and_query_must_still_match_exactly() {
        let registered = reg(&["http://localhost/callback?x=1"]);
        assert!(RedirectPolicy::matches(
            &registered,
            "http://localhost:1/callback?x=1"
        ));
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://localhost:1/callback"
        ));
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://localhost:1/callback?x=2"
        ));
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://localhost:1/callback/?x=1"
        ));
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://localhost:1/Callback?x=1"
        ));
    }

    #[test]
    fn loopback_hosts_never_match_each_other() {
        let registered = reg(&["http://localhost/callback"]);
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://127.0.0.1:5000/callback"
        ));
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://[::1]:5000/callback"
        ));
        let registered = reg(&["http://127.0.0.1/callback"]);
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://localhost:5000/callback"
        ));
        assert!(!RedirectPolicy::matches(
            &registered,
            "http://[::1]:5000/callback"
        ));
    }

    #[test]
    fn loopback_port_leniency_does_not_apply_to_https_or_other_hosts() {
        let registered = reg(&["https://localhost/callback"]);
        assert!(!RedirectPolicy::matches(
            &registered,
            "https://localhost:8443/callback"
        ));
        let registered = reg(&["https://app.example.com/callback"]);
        assert!(!RedirectPolicy::matches(
            &registered,
            "https://app.example.com:1/callback"
        ));
        let registered = reg(&["http://localhost/callback"]);
        assert!(!RedirectPolicy::matches(
            &registered,
            "https://localhost:1/callback"
        ));
    }

    #[test]
    fn hostile_requested_loopback_uris_do_not_match() {
        let registered = reg(&["http://localhost/callback"]);
        for requested in [
            "http://localhost:1/callback#x",
            "http://evil@localhost:1/callback",
            "http://localhost:1@evil.example/callback",
            "http://localhost.evil.com:1/callback",
            "http://LOCALHOST:1/callback",
            "http://localhost:1/x/../callback",
            "http://localhost:1/%2e%2e/callback",
            "http://localhost:1\\@evil.example/callback",
            "http://localhost:99999/callback",
            " http://localhost:1/callback",
            "http://localhost:1/callback\n",
        ] {
            assert!(
                !RedirectPolicy::matches(&registered, requested),
                "{requested:?} must not match"
            );
        }
    }

    #[test]
    fn nothing_matches_an_empty_registration() {
        assert!(!RedirectPolicy::matches(&[], "http://localhost/callback"));
        assert!(!RedirectPolicy::matches(&[], ""));
    }
}
