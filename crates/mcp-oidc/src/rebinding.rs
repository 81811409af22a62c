//! DNS-rebinding protection ahead of authentication, as a tower layer.
//!
//! The MCP transport requires a 403 for a request whose `Origin` is present and not
//! allowed, and servers check `Host` too. rmcp performs both checks, but inside the MCP
//! service, that is after the bearer layer: a page on a foreign origin sending no token
//! would get a 401 challenge, and one sending a token would cost a verification first.
//! This layer gives the same decisions (rmcp's rules, on the same lists) before anything
//! else runs. Behind it, rmcp is given empty lists so as not to repeat the work; it still
//! refuses a missing or malformed `Host`.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use futures::future::{Either, Ready, ready};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderValue, Request, StatusCode};
use tower::{Layer, Service};

/// A port rule of an allow-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// No port in the entry, or `:*`: any port (rmcp's reading of a portless entry).
    Any,
    Exact(u16),
}

impl Port {
    fn matches(self, port: Option<u16>, default: Option<u16>) -> bool {
        match self {
            Port::Any => true,
            Port::Exact(p) => port.or(default) == Some(p),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    host: String,
    port: Port,
    /// The port a `Host` without one stands for. Known for the server's own base URL (its
    /// scheme's default); `None` for allow-list entries, which name a port explicitly.
    default: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginRule {
    scheme: String,
    host: String,
    port: Port,
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` split without allocating (this runs on every request), an IPv6 literal's
/// brackets dropped; `None` for a malformed port.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

fn host_rule(entry: &str) -> Option<HostRule> {
    let authority = http::uri::Authority::try_from(entry.trim()).ok()?;
    Some(HostRule {
        host: normalize_host(authority.host()),
        port: authority.port_u16().map_or(Port::Any, Port::Exact),
        default: None,
    })
}

/// The scheme and authority of an `Origin` value (`scheme://host[:port]`, RFC 6454);
/// `None` for `null` or anything else.
fn origin_parts(value: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, authority) = value.trim().split_once("://")?;
    let (host, port) = split_authority(authority)?;
    (!host.is_empty() && !host.contains(['/', '@', '?', '#'])).then_some((scheme, host, port))
}

fn origin_rule(entry: &str) -> Option<OriginRule> {
    let entry = entry.trim();
    let (base, any) = match entry.strip_suffix(":*") {
        Some(base) => (base, true),
        None => (entry, false),
    };
    let (scheme, host, port) = origin_parts(base)?;
    let port = match (any, port) {
        (false, Some(p)) => Port::Exact(p),
        _ => Port::Any,
    };
    Some(OriginRule {
        scheme: scheme.to_ascii_lowercase(),
        host: normalize_host(host),
        port,
    })
}

/// The hosts and origins a server answers to.
#[derive(Debug, Clone)]
struct Allowed {
    hosts: Vec<HostRule>,
    origins: Vec<OriginRule>,
}

impl Allowed {
    /// Why `request` must be refused, if it must.
    fn refusal(&self, request: &Request<Body>) -> Option<&'static str> {
        let host = match request.headers().get(HOST) {
            Some(h) => h.to_str().ok(),
            None => request.uri().authority().map(|a| a.as_str()),
        };
        // No Host at all is a malformed request, which the MCP service answers itself.
        if let Some(host) = host
            && !self.hosts.is_empty()
        {
            let allowed = split_authority(host).is_some_and(|(name, port)| {
                self.hosts
                    .iter()
                    .any(|r| r.host.eq_ignore_ascii_case(name) && r.port.matches(port, r.default))
            });
            if !allowed {
                return Some("the Host header names a host this server does not answer to");
            }
        }
        if let Some(origin) = request.headers().get(ORIGIN) {
            let allowed =
                origin
                    .to_str()
                    .ok()
                    .and_then(origin_parts)
                    .is_some_and(|(scheme, host, port)| {
                        self.origins.iter().any(|r| {
                            r.scheme.eq_ignore_ascii_case(scheme)
                                && r.host.eq_ignore_ascii_case(host)
                                && r.port.matches(port, default_port(&r.scheme))
                        })
                    });
            if !allowed {
                return Some(
                    "requests from this Origin are not allowed (DNS rebinding protection)",
                );
            }
        }
        None
    }
}

/// Refuses, with 403, requests whose `Host` or `Origin` the server does not answer to.
#[derive(Clone, Debug)]
pub(crate) struct HostOriginLayer {
    allowed: Arc<Allowed>,
}

impl HostOriginLayer {
    /// Entries as rmcp's `allowed_hosts` (`host` or `host:port`) and `allowed_origins`
    /// (`scheme://host`, with `:port` or `:*`); an entry without a port matches any port.
    /// An empty host list lets every `Host` through, as in rmcp.
    pub(crate) fn new(hosts: &[String], origins: &[String]) -> Self {
        Self {
            allowed: Arc::new(Allowed {
                hosts: hosts.iter().filter_map(|h| host_rule(h)).collect(),
                origins: origins.iter().filter_map(|o| origin_rule(o)).collect(),
            }),
        }
    }

    /// Also answers to the `Host` of `base`, on its port only: written out, or left out
    /// when it is the scheme's default (rmcp's notation cannot say "this port or none",
    /// so a portless entry there would match every port of the host).
    pub(crate) fn answering_to(mut self, base: &url::Url) -> Self {
        if let (Some(host), Some(port)) = (base.host_str(), base.port_or_known_default()) {
            let allowed = Arc::make_mut(&mut self.allowed);
            allowed.hosts.push(HostRule {
                host: normalize_host(host),
                port: Port::Exact(port),
                default: default_port(base.scheme()),
            });
        }
        self
    }
}

impl<S> Layer<S> for HostOriginLayer {
    type Service = HostOriginService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HostOriginService {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

/// The service made by [`HostOriginLayer`].
#[derive(Clone, Debug)]
pub(crate) struct HostOriginService<S> {
    inner: S,
    allowed: Arc<Allowed>,
}

impl<S> Service<Request<Body>> for HostOriginService<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    // Not boxed: this wraps every request to the MCP endpoint.
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.allowed.refusal(&request) {
            None => Either::Right(self.inner.call(request)),
            Some(why) => {
                tracing::info!(target: "mcp_oidc::auth", reason = why, "request refused before authentication");
                let mut response = forbidden(why);
                // A foreign page's body is not worth reading: its connection ends here.
                if crate::keepalive::may_have_body(&request) {
                    crate::keepalive::close(&mut response);
                }
                Either::Left(ready(Ok(response)))
            }
        }
    }
}

fn forbidden(why: &str) -> Response {
    let body = serde_json::json!({"error": "forbidden", "error_description": why}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: Option<&str>, origin: Option<&str>) -> Request<Body> {
        let mut r = Request::builder().uri("/mcp");
        if let Some(h) = host {
            r = r.header(HOST, h);
        }
        if let Some(o) = origin {
            r = r.header(ORIGIN, o);
        }
        r.body(Body::empty()).unwrap()
    }

    fn allowed() -> Allowed {
        let layer = HostOriginLayer::new(
            &["mcp.example.com:8443".into(), "mcp.example.com".into()],
            &[
                "https://mcp.example.com".into(),
                "http://localhost:*".into(),
            ],
        );
        Arc::try_unwrap(layer.allowed).unwrap()
    }

    #[test]
    fn hosts_and_origins_follow_the_allow_lists() {
        let a = allowed();
        assert_eq!(a.refusal(&request(Some("mcp.example.com"), None)), None);
        assert_eq!(
            a.refusal(&request(Some("MCP.example.com:8443"), None)),
            None
        );
        assert!(
            a.refusal(&request(Some("evil.example.com"), None))
                .is_some()
        );
        assert_eq!(
            a.refusal(&request(
                Some("mcp.example.com"),
                Some("https://mcp.example.com")
            )),
            None
        );
        assert_eq!(
            a.refusal(&request(
                Some("mcp.example.com"),
                Some("http://localhost:5173")
            )),
            None
        );
        for bad in [
            "http://evil.example.com",
            "null",
            "https://mcp.example.com.evil",
            "garbage",
        ] {
            assert!(
                a.refusal(&request(Some("mcp.example.com"), Some(bad)))
                    .is_some(),
                "{bad}"
            );
        }
        // No Host: left to the MCP service, which answers 400.
        assert_eq!(a.refusal(&request(None, None)), None);
        assert!(
            a.refusal(&request(Some("mcp.example.com:x"), None))
                .is_some()
        );
        assert!(
            a.refusal(&request(
                Some("mcp.example.com"),
                Some("http://user@localhost:1")
            ))
            .is_some()
        );
    }

    #[test]
    fn loopback_entries_match_ipv6_literals_and_any_letter_case() {
        let layer = HostOriginLayer::new(
            &["[::1]".into(), "localhost".into()],
            &["http://[::1]:*".into(), "http://localhost:*".into()],
        );
        let a = Arc::try_unwrap(layer.allowed).unwrap();
        assert_eq!(
            a.refusal(&request(Some("[::1]:8000"), Some("http://[::1]:5173"))),
            None
        );
        assert_eq!(
            a.refusal(&request(
                Some("LOCALHOST:8000"),
                Some("HTTP://LocalHost:3000")
            )),
            None
        );
        assert!(a.refusal(&request(Some("[::2]:8000"), None)).is_some());
    }

    #[test]
    fn the_base_urls_host_is_allowed_on_its_own_port_only() {
        let https = url::Url::parse("https://mcp.example.com/").unwrap();
        let layer = HostOriginLayer::new(&[], &[]).answering_to(&https);
        let a = Arc::try_unwrap(layer.allowed).unwrap();
        for ok in ["mcp.example.com", "MCP.example.com:443"] {
            assert_eq!(a.refusal(&request(Some(ok), None)), None, "{ok}");
        }
        for bad in ["mcp.example.com:8443", "mcp.example.com:80", "example.com"] {
            assert!(a.refusal(&request(Some(bad), None)).is_some(), "{bad}");
        }

        let http = url::Url::parse("http://mcp.internal:8000/").unwrap();
        let layer = HostOriginLayer::new(&["proxy.example.com".into()], &[]).answering_to(&http);
        let a = Arc::try_unwrap(layer.allowed).unwrap();
        assert_eq!(a.refusal(&request(Some("mcp.internal:8000"), None)), None);
        for bad in ["mcp.internal", "mcp.internal:80", "mcp.internal:8001"] {
            assert!(a.refusal(&request(Some(bad), None)).is_some(), "{bad}");
        }
        // A configured entry keeps rmcp's reading: without a port, any port.
        assert_eq!(a.refusal(&request(Some("proxy.example.com:9"), None)), None);
    }

    #[test]
    fn an_explicit_origin_port_matches_the_scheme_default_when_omitted() {
        let layer = HostOriginLayer::new(&[], &["https://mcp.example.com:443".into()]);
        let a = Arc::try_unwrap(layer.allowed).unwrap();
        assert_eq!(
            a.refusal(&request(Some("x"), Some("https://mcp.example.com"))),
            None
        );
        assert!(
            a.refusal(&request(Some("x"), Some("https://mcp.example.com:444")))
                .is_some()
        );
    }
}
