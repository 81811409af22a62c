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

/// Adds the headers every proxy page carries: no framing (clickjacking), a strict CSP, no
/// caching, no referrer (the URL holds codes and states).
pub(crate) fn html(status: StatusCode, body: String) -> Response {
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
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
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
    html(
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
    )
}
