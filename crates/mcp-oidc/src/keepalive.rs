//! What a refusal does with a request body it did not need to read.
//!
//! An HTTP/1.1 connection can carry the next request only once the previous body has been
//! read. hyper reads what has already arrived and otherwise closes the connection after
//! the answer, without saying so in it: a client that sends the body after the headers (as
//! most do) then finds the connection closed under its next request. A refusal either
//! reads a small body ([`drain`]) or says `Connection: close` ([`close`]).

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};

/// The most of a refused request's body that is read, so that its connection stays usable.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// How long a refused request's body is waited for before the connection is given up.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads the body of a request refused before its body was needed (the first request of
/// every MCP client carries no token); true if some of it is left unread, and the answer
/// must then [`close`] the connection. A small declared body is read within
/// [`DRAIN_TIME`]; a larger, chunked or slow one is not. HTTP/2 streams end on their own.
pub(crate) async fn drain(parts: &http::request::Parts, body: Body) -> bool {
    if parts.version >= http::Version::HTTP_2 {
        return false;
    }
    if parts.headers.contains_key(TRANSFER_ENCODING) {
        return true;
    }
    match declared_length(&parts.headers) {
        Ok(None | Some(0)) => false,
        // At most DRAIN_LIMIT, so the conversion cannot fail (were it to, a limit of 0
        // would leave the body unread and the connection closed: still correct).
        Ok(Some(n)) if n <= DRAIN_LIMIT => {
            let limit = usize::try_from(n).unwrap_or(0);
            !matches!(
                tokio::time::timeout(DRAIN_TIME, axum::body::to_bytes(body, limit)).await,
                Ok(Ok(_))
            )
        }
        _ => true,
    }
}

/// A `Content-Length` header that is not a number.
#[derive(Debug)]
pub(crate) struct BadLength;

/// The body length the request declares (`None` without a `Content-Length` header).
pub(crate) fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, BadLength> {
    headers
        .get(CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(BadLength)
        })
        .transpose()
}

/// Whether `request` may have a body that nobody has read yet (HTTP/1.x with a non-empty
/// declared or chunked body): a refusal that does not read it should [`close`].
pub(crate) fn may_have_body<B>(request: &http::Request<B>) -> bool {
    request.version() < http::Version::HTTP_2
        && (request.headers().contains_key(TRANSFER_ENCODING)
            || !matches!(declared_length(request.headers()), Ok(None | Some(0))))
}

/// Marks `response` as the last on its connection.
pub(crate) fn close(response: &mut Response) {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}
