//! Per-client-address rate limits, as a tower layer.
//!
//! Applied by the OAuth proxy to `/register`, `/authorize` and `/token`, where an attacker
//! could otherwise fill the store, brute-force codes or exhaust the upstream provider.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, StatusCode};
use tower::{Layer, Service};

/// How many requests one client address may make: a bucket of `burst` requests, refilled
/// at `per_minute` a minute. A `per_minute` of 0 turns the limit off. IPv6 addresses are
/// counted by their /64 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl RateLimit {
    /// `per_minute` a minute with a burst of the same size.
    pub const fn per_minute(per_minute: u32) -> Self {
        Self {
            per_minute,
            burst: per_minute,
        }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A [`Layer`] refusing requests over the limit with 429 and `Retry-After`.
///
/// The client address is the TCP peer (`ConnectInfo<SocketAddr>`, which
/// [`crate::serve`] provides). Behind a reverse proxy every request shares the proxy's
/// address: give the limit room for that, or rate-limit at the proxy.
#[derive(Clone)]
pub struct RateLimitLayer {
    limit: RateLimit,
    buckets: moka::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limit", &self.limit)
            .finish()
    }
}

impl RateLimitLayer {
    /// A layer enforcing `limit` per client address (at most 100,000 addresses tracked).
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// `None` when the request may go ahead, else how long to wait.
    fn check(&self, ip: IpAddr) -> Option<Duration> {
        if self.limit.per_minute == 0 {
            return None;
        }
        let rate = f64::from(self.limit.per_minute.max(1)) / 60.0;
        let burst = f64::from(self.limit.burst.max(1));
        let bucket = self.buckets.get_with(bucket_of(ip), || {
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                updated: Instant::now(),
            }))
        });
        let mut b = bucket.lock().ok()?;
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.updated).as_secs_f64() * rate).min(burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

/// The key of an address's bucket. One IPv6 host is usually given a whole /64 and can
/// send from any address in it, so IPv6 addresses share the bucket of their /64; an
/// IPv4-mapped IPv6 address is its IPv4 address.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimited<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> Service<Request<Body>> for RateLimited<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(wait) = ip.and_then(|ip| self.layer.check(ip)) {
            tracing::info!(target: "mcp_oidc::limit", client = ?ip, path = %request.uri().path(), "rate limit exceeded; answering 429");
            let mut response = too_many(wait);
            // Reading a flood's bodies would be work spent on it: the connection ends here.
            if crate::keepalive::may_have_body(&request) {
                crate::keepalive::close(&mut response);
            }
            return Box::pin(async move { Ok(response) });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

fn too_many(wait: Duration) -> Response {
    let body = serde_json::json!({
        "error": "too_many_requests",
        "error_description": "too many requests from this address; retry later",
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let layer = RateLimitLayer::new(RateLimit {
            per_minute: 60,
            burst: 3,
        });
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(layer.check(ip).is_none());
        assert!(layer.check(ip).is_none());
        assert!(layer.check(ip).is_none());
        let wait = layer.check(ip).unwrap();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        let other: IpAddr = [127, 0, 0, 2].into();
        assert!(
            layer.check(other).is_none(),
            "addresses are limited separately"
        );
    }

    #[test]
    fn ipv6_addresses_share_the_bucket_of_their_64() {
        let layer = RateLimitLayer::new(RateLimit {
            per_minute: 60,
            burst: 2,
        });
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        assert!(layer.check(a).is_none());
        assert!(layer.check(b).is_none());
        assert!(
            layer.check(a).is_some(),
            "a second address in the /64 spent the same bucket"
        );
        let next: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(layer.check(next).is_none(), "the next /64 has its own");
        // An IPv4 client seen through a dual-stack socket is still its IPv4 address.
        let v4: IpAddr = [192, 0, 2, 7].into();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(layer.check(v4).is_none());
        assert!(layer.check(mapped).is_none());
        assert!(layer.check(v4).is_some());
        assert!(
            layer.check([192, 0, 2, 8].into()).is_none(),
            "IPv4 addresses are not grouped"
        );
    }
}
