//! Server-rendered pages. Every interpolated value goes through [`escape`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn escape(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A `302 Found` redirect. axum's `Redirect::to` answers 303, but OAuth clients
/// and the reference mock expect 302 on authorization responses.
pub(crate) fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        // Only reachable for a URL with control characters, which `url` never
        // serialises; answer with an error rather than panic.
        Err(_) => (StatusCode::BAD_REQUEST, "invalid redirect location").into_response(),
    }
}

/// Adds headers that keep our pages out of frames and block any script.
pub(crate) fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}\
code{background:#eee;padding:0 .2em}button{margin:.2em}fieldset{margin:1em 0}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        title = escape(title),
    )
}

pub(crate) fn error_page(error: &str, description: &str) -> String {
    layout(
        "Authorization error",
        &format!(
            "<h1>Authorization error</h1><p><code>{}</code></p><p>{}</p>",
            escape(error),
            escape(description)
        ),
    )
}

/// What the authorization form shows.
pub(crate) struct AuthorizeForm<'a> {
    /// Path and query the form posts back to, so every parameter is kept.
    pub action: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub known_users: &'a [String],
    pub recent_subjects: &'a [String],
}

pub(crate) fn authorize_form(form: &AuthorizeForm<'_>) -> String {
    let buttons = |subs: &[String]| -> String {
        subs.iter()
            .map(|sub| {
                format!(
                    "<button type=\"submit\" name=\"sub\" value=\"{0}\">{0}</button>",
                    escape(sub)
                )
            })
            .collect::<Vec<_>>()
            .join("")
    };
    let action = escape(form.action);
    let mut body = format!(
        "<h1>Sign in</h1><p>Client <code>{}</code> asks for scope <code>{}</code>; \
         you will be sent back to <code>{}</code>.</p>\
         <form method=\"post\" action=\"{action}\">\
         <fieldset><legend>Subject</legend>\
         <label>sub <input type=\"text\" name=\"sub\" required autofocus></label> \
         <button type=\"submit\">Authorize</button></fieldset></form>",
        escape(form.client_id),
        escape(form.scope),
        escape(form.redirect_uri),
    );
    // Each group is its own form so a click sends exactly one `sub`.
    for (legend, subs) in [
        ("Known users", form.known_users),
        ("Recently used", form.recent_subjects),
    ] {
        if !subs.is_empty() {
            body.push_str(&format!(
                "<form method=\"post\" action=\"{action}\"><fieldset><legend>{legend}</legend>{}</fieldset></form>",
                buttons(subs)
            ));
        }
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"{action}\"><button type=\"submit\" name=\"action\" \
         value=\"deny\">Deny</button></form>"
    ));
    layout("Sign in", &body)
}

pub(crate) fn signed_out_page() -> String {
    layout(
        "Signed out",
        "<h1>Signed out</h1><p>The session has ended.</p>",
    )
}
