//! A scripted browser for OAuth sign-ins: follows redirects, keeps cookies per host, and
//! answers the two pages this project's flows show — the proxy's consent page (approve)
//! and an OpenID provider's login form with a `sub` field (the mock providers').
//!
//! It is what `mcp-oidc token` uses to obtain a token through the real authorization-code
//! + PKCE flow, and what the end-to-end tests drive the proxy with.

use std::collections::HashMap;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

/// The end of a sign-in: what came back on the client's redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirected {
    /// The full URL the flow ended on.
    pub url: String,
    /// Its query parameters.
    pub params: HashMap<String, String>,
}

/// How the scripted person answers.
#[derive(Debug, Clone)]
pub struct Person {
    /// The subject typed into a login form.
    pub user: String,
    /// Approve (or deny) consent pages.
    pub approve: bool,
    /// Tick "remember this decision" when offered.
    pub remember: bool,
}

/// A failed scripted sign-in.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// An HTTP request failed.
    #[error("request to {url} failed: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// A page the script does not know how to answer.
    #[error("{url} answered {status} with a page this script cannot complete: {snippet}")]
    UnexpectedPage {
        /// The URL.
        url: String,
        /// Its status.
        status: u16,
        /// The start of its text.
        snippet: String,
    },
    /// Too many steps.
    #[error("the sign-in did not finish within {0} steps")]
    TooManySteps(usize),
}

/// A cookie-keeping, redirect-following client that never follows a redirect to the
/// client's own redirect URI (it stops there, as an app's loopback listener would).
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, HashMap<String, String>>,
    /// Every URL visited, in order (for tests that inspect the flow).
    pub visited: Vec<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A fresh browser with no cookies.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            cookies: HashMap::new(),
            visited: Vec::new(),
        }
    }

    fn host_key(url: &url::Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        )
    }

    fn cookie_header(&self, url: &url::Url) -> Option<String> {
        let jar = self.cookies.get(&Self::host_key(url))?;
        if jar.is_empty() {
            return None;
        }
        Some(
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn store_cookies(&mut self, url: &url::Url, response: &reqwest::Response) {
        let jar = self.cookies.entry(Self::host_key(url)).or_default();
        for v in response.headers().get_all(SET_COOKIE) {
            if let Ok(v) = v.to_str()
                && let Some((name, rest)) = v.split_once('=')
            {
                let value = rest.split(';').next().unwrap_or("").to_owned();
                jar.insert(name.trim().to_owned(), value);
            }
        }
    }

    /// Sets a cookie for the host of `url` (as if a previous page had set it).
    pub fn add_cookie(&mut self, url: &str, name: &str, value: &str) {
        if let Ok(u) = url::Url::parse(url) {
            self.cookies
                .entry(Self::host_key(&u))
                .or_default()
                .insert(name.to_owned(), value.to_owned());
        }
    }

    /// Removes all cookies (a different browser).
    pub fn clear_cookies(&mut self) {
        self.cookies.clear();
    }

    async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        form: Option<Vec<(String, String)>>,
    ) -> Result<(u16, Option<String>, String), BrowserError> {
        let parsed = url::Url::parse(url).map_err(|e| BrowserError::Http {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        self.visited.push(url.to_owned());
        let mut req = self.http.request(method, parsed.clone());
        if let Some(c) = self.cookie_header(&parsed) {
            req = req.header(COOKIE, c);
        }
        if let Some(f) = form {
            req = req.form(&f);
        }
        let response = req.send().await.map_err(|e| BrowserError::Http {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        self.store_cookies(&parsed, &response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| parsed.join(l).ok())
            .map(|u| u.to_string());
        let body = response.text().await.unwrap_or_default();
        Ok((status, location, body))
    }

    /// Starts at `start` and walks the flow as `person` until the browser is sent to a URL
    /// beginning with `redirect_uri`.
    pub async fn sign_in(
        &mut self,
        start: &str,
        redirect_uri: &str,
        person: &Person,
    ) -> Result<Redirected, BrowserError> {
        let mut next: (reqwest::Method, String, Option<Vec<(String, String)>>) =
            (reqwest::Method::GET, start.to_owned(), None);
        for _ in 0..12 {
            let (method, url, form) = next;
            if url.starts_with(redirect_uri) {
                return Ok(finished(&url));
            }
            let (status, location, body) = self.send(method, &url, form).await?;
            if (300..400).contains(&status)
                && let Some(loc) = location
            {
                next = (reqwest::Method::GET, loc, None);
                continue;
            }
            let page = url::Url::parse(&url).map_err(|e| BrowserError::Http {
                url: url.clone(),
                message: e.to_string(),
            })?;
            if status == 200
                && let Some(form) = parse_form(&body)
            {
                let action = match &form.action {
                    Some(a) if !a.is_empty() => {
                        page.join(a).map(|u| u.to_string()).unwrap_or(url.clone())
                    }
                    _ => url.clone(),
                };
                let mut fields = form.hidden.clone();
                if form.has_field("csrf_token") {
                    fields.push((
                        "decision".into(),
                        if person.approve { "approve" } else { "deny" }.into(),
                    ));
                    if person.remember && form.has_field("remember") {
                        fields.push(("remember".into(), "1".into()));
                    }
                } else if form.has_field("sub") {
                    fields.retain(|(k, _)| k != "sub");
                    if person.approve {
                        fields.push(("sub".into(), person.user.clone()));
                    } else {
                        fields.push(("action".into(), "deny".into()));
                    }
                } else {
                    return Err(unexpected(&url, status, &body));
                }
                next = (reqwest::Method::POST, action, Some(fields));
                continue;
            }
            return Err(unexpected(&url, status, &body));
        }
        Err(BrowserError::TooManySteps(12))
    }
}

fn unexpected(url: &str, status: u16, body: &str) -> BrowserError {
    BrowserError::UnexpectedPage {
        url: url.to_owned(),
        status,
        snippet: body.chars().take(300).collect(),
    }
}

fn finished(url: &str) -> Redirected {
    let params = url::Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Redirected {
        url: url.to_owned(),
        params,
    }
}

struct Form {
    action: Option<String>,
    hidden: Vec<(String, String)>,
    fields: Vec<String>,
}

impl Form {
    fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f == name)
    }
}

/// Reads the first form of a page: its action, hidden inputs and field names. Enough for
/// the simple server-rendered pages of sign-in flows; not a general HTML parser.
fn parse_form(html: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let form_html = &html[start..end];
    let tag_end = form_html.find('>')?;
    let action = attr(&form_html[..tag_end], "action").map(|a| unescape(&a));
    let mut hidden = Vec::new();
    let mut fields = Vec::new();
    for part in form_html.split('<').skip(1) {
        let tag = part.split('>').next().unwrap_or("");
        let lower = tag.to_ascii_lowercase();
        if !(lower.starts_with("input")
            || lower.starts_with("button")
            || lower.starts_with("select")
            || lower.starts_with("textarea"))
        {
            continue;
        }
        let Some(name) = attr(tag, "name") else {
            continue;
        };
        let name = unescape(&name);
        fields.push(name.clone());
        if lower.starts_with("input")
            && attr(tag, "type").is_some_and(|t| t.eq_ignore_ascii_case("hidden"))
        {
            hidden.push((name, unescape(&attr(tag, "value").unwrap_or_default())));
        }
    }
    Some(Form {
        action,
        hidden,
        fields,
    })
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(name) {
        let i = from + pos;
        from = i + name.len();
        let before_ok = i == 0 || lower.as_bytes()[i - 1].is_ascii_whitespace();
        let rest = tag[i + name.len()..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        return Some(match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or("").to_owned(),
            _ => rest
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or("")
                .to_owned(),
        });
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read_with_hidden_fields_and_actions() {
        let f = parse_form(r#"<p><form method=post action="/consent"><input type=hidden name=transaction value="t&amp;1"><input type=hidden name=csrf_token value="c"><button name=decision value=approve>"#).unwrap();
        assert_eq!(f.action.as_deref(), Some("/consent"));
        assert_eq!(
            f.hidden,
            vec![
                ("transaction".into(), "t&1".into()),
                ("csrf_token".into(), "c".into())
            ]
        );
        assert!(f.has_field("decision"));
        let f = parse_form(
            r#"<form method="post"><input type="text" name="sub" placeholder="user"></form>"#,
        )
        .unwrap();
        assert!(f.has_field("sub"));
        assert!(f.action.is_none());
    }
}
