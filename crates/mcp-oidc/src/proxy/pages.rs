//! The HTML the proxy shows a person: the consent page and error pages.

use axum::body::Body;
use axum::response::Response;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_FRAME_OPTIONS,
};
use http::{HeaderValue, StatusCode};

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The Content-Security-Policy of a proxy page whose forms may lead the browser to
/// `form_targets` (CSP sources from [`csp_source`]) besides this server. Browsers check
/// `form-action` against every redirect that follows a submission, not just the form's own
/// URL, so a target missing here stops the sign-in on the consent page.
fn policy(form_targets: &[String]) -> HeaderValue {
    let mut csp = String::from("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'");
    for target in form_targets {
        csp.push(' ');
        csp.push_str(target);
    }
    csp.push_str("; frame-ancestors 'none'; base-uri 'none'");
    // `csp_source` lets only visible ASCII through, so this cannot fail; the fallback keeps
    // the strictest policy rather than panicking.
    HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

/// Adds the headers every proxy page carries: no framing (clickjacking), a strict CSP, no
/// caching, no referrer (the URL holds codes and states).
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    page(status, body, policy(&[]))
}

/// A CSP source expression matching `url`'s origin, for `form-action`: the origin itself
/// where CSP's grammar can name it, else the scheme alone (an IPv6 literal host, a
/// private-use scheme of a native app), which is the narrowest expression that still lets
/// the redirect through.
pub(crate) fn csp_source(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let named = matches!(url.scheme(), "http" | "https")
        && matches!(url.host(), Some(url::Host::Domain(_) | url::Host::Ipv4(_)));
    let source = if named {
        url.origin().ascii_serialization()
    } else {
        format!("{}:", url.scheme())
    };
    // Anything CSP would split on must not reach the header.
    source
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'\'')
        .then_some(source)
}

fn page(status: StatusCode, body: String, csp: HeaderValue) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CONTENT_SECURITY_POLICY, csp);
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.3rem}.box{border:1px solid #ccc;border-radius:8px;padding:1rem 1.2rem}\
code{background:#f3f3f3;padding:.1rem .3rem;border-radius:4px}.warn{color:#8a4b00}.ok{color:#1d6b2f}\
button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem;border-radius:6px;border:1px solid #888;cursor:pointer}\
button.approve{background:#1d5fd1;color:#fff;border-color:#1d5fd1}ul{padding-left:1.2rem}";

/// An error shown to the person instead of a redirect (unknown client, bad redirect URI,
/// expired or forged state): following the redirect would help an attacker.
pub(crate) fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    html(
        status,
        format!(
            "<!doctype html><html><head><meta charset=utf-8><title>{t}</title><style>{STYLE}</style></head>\
             <body><h1>{t}</h1><div class=box><p>{d}</p><p>Close this window and start again from your MCP client.</p></div></body></html>",
            t = escape(title),
            d = escape(detail)
        ),
    )
}

/// What the consent page shows.
pub(crate) struct ConsentView<'a> {
    pub client_name: &'a str,
    pub client_id: &'a str,
    pub redirect_host: &'a str,
    pub verified_by_document: bool,
    pub scopes: &'a [String],
    pub resource: &'a str,
    pub transaction: &'a str,
    pub csrf: &'a str,
    pub action: &'a str,
    pub offer_remember: bool,
    /// Where the form's answer redirects the browser, beyond this server: the provider's
    /// login page (approve) and the client's redirect URI (deny), as CSP sources.
    pub form_targets: &'a [String],
}

pub(crate) fn consent_page(v: &ConsentView<'_>) -> Response {
    let scopes: String = v
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let identity = if v.verified_by_document {
        format!(
            "<p class=ok>Its identity is verified: its metadata document is published at <code>{}</code>.</p>",
            escape(v.client_id)
        )
    } else {
        "<p class=warn>This client registered itself; its name is not verified. Approve only if you started this sign-in and recognise where it sends you back.</p>".to_owned()
    };
    let remember = if v.offer_remember {
        "<p><label><input type=checkbox name=remember value=1> Remember this decision for this client</label></p>"
    } else {
        ""
    };
    page(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><meta charset=utf-8><title>Authorize {name}</title><style>{STYLE}</style></head><body>\
             <h1>Allow <em>{name}</em> to use <code>{resource}</code> as you?</h1>\
             <div class=box><p>After you sign in, you will be sent back to <strong>{host}</strong>.</p>{identity}\
             <p>It asks for:</p><ul>{scopes}</ul></div>\
             <form method=post action=\"{action}\"><input type=hidden name=transaction value=\"{txn}\">\
             <input type=hidden name=csrf_token value=\"{csrf}\">{remember}\
             <button class=approve type=submit name=decision value=approve>Approve</button>\
             <button type=submit name=decision value=deny>Deny</button></form></body></html>",
            name = escape(v.client_name),
            resource = escape(v.resource),
            host = escape(v.redirect_host),
            txn = escape(v.transaction),
            csrf = escape(v.csrf),
            action = escape(v.action),
        ),
        policy(v.form_targets),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_targets_are_named_by_origin_or_else_by_scheme() {
        assert_eq!(
            csp_source("https://idp.example.com/oauth2/authorize?x=1").as_deref(),
            Some("https://idp.example.com")
        );
        assert_eq!(
            csp_source("http://127.0.0.1:33418/callback").as_deref(),
            Some("http://127.0.0.1:33418")
        );
        // CSP cannot name an IPv6 literal or a private-use scheme's "host".
        assert_eq!(csp_source("http://[::1]:8080/cb").as_deref(), Some("http:"));
        assert_eq!(
            csp_source("com.example.app:/oauth/cb").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(csp_source("not a url"), None);
    }

    #[test]
    fn the_consent_page_lets_its_form_reach_the_provider_and_the_client() {
        let targets = [
            "http://localhost:9400".to_owned(),
            "http://127.0.0.1:5000".to_owned(),
        ];
        let page = consent_page(&ConsentView {
            client_name: "c",
            client_id: "id",
            redirect_host: "127.0.0.1:5000",
            verified_by_document: false,
            scopes: &[],
            resource: "http://localhost:8000/mcp",
            transaction: "t",
            csrf: "x",
            action: "/consent",
            offer_remember: false,
            form_targets: &targets,
        });
        let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("form-action 'self' http://localhost:9400 http://127.0.0.1:5000;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let error = error_page(StatusCode::BAD_REQUEST, "t", "d");
        let csp = error.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("form-action 'self';"), "{csp}");
    }
}
