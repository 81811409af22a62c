//! Redirect-URI rules of the OAuth proxy: registration checks with and without a pattern
//! allow-list, and request-time matching. Input: `pattern \x01 registered \x01 requested`.
//! Properties: no panic; an accepted URI has no fragment, user information, backslash,
//! whitespace or non-ASCII, and uses https, loopback http or a reverse-domain private-use
//! scheme; a pattern only narrows the built-in rules; matching is exact except for the port
//! of a loopback http URI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oidc::proxy::RedirectPolicy;
use mcp_oidc::proxy::redirect::MAX_REDIRECT_URI_LEN;

const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

fn assert_safe(uri: &str) {
    assert!(uri.len() <= MAX_REDIRECT_URI_LEN);
    assert!(
        !uri.contains(['#', '\\', '*', ' '])
            && uri.is_ascii()
            && !uri.bytes().any(|b| b.is_ascii_control()),
        "{uri:?}"
    );
    let url = url::Url::parse(uri).expect("an accepted URI parses");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{uri:?}"
    );
    assert!(url.fragment().is_none(), "{uri:?}");
    match url.scheme() {
        "https" => assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{uri:?}"),
        "http" => assert!(
            url.host_str().is_some_and(|h| LOOPBACK.contains(&h)),
            "{uri:?}"
        ),
        other => {
            assert!(other.contains('.'), "{uri:?}");
            assert!(!["javascript", "data", "file", "vbscript", "blob"].contains(&other));
        }
    }
}

/// The URI without the port of an http loopback URI, for the matching property.
fn without_port(uri: &str) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    if url.scheme() != "http" || !url.host_str().is_some_and(|h| LOOPBACK.contains(&h)) {
        return None;
    }
    url.set_port(None).ok()?;
    Some(url.to_string())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\u{1}');
    let pattern = parts.next().unwrap_or_default();
    let registered = parts.next().unwrap_or(pattern);
    let requested = parts.next().unwrap_or(registered);

    let default = RedirectPolicy::default();
    let registered_ok = default.check_registration(registered).is_ok();
    if registered_ok {
        assert_safe(registered);
    }
    if let Ok(narrowed) = RedirectPolicy::new(vec![pattern.to_owned()])
        && narrowed.check_registration(registered).is_ok()
    {
        assert!(
            registered_ok,
            "a pattern widened the rules: {pattern:?} {registered:?}"
        );
    }

    if registered_ok {
        let list = vec![registered.to_owned()];
        assert!(RedirectPolicy::matches(&list, registered));
        if RedirectPolicy::matches(&list, requested) && requested != registered {
            assert!(
                default.check_registration(requested).is_ok(),
                "{requested:?}"
            );
            let (a, b) = (without_port(registered), without_port(requested));
            assert!(
                a.is_some() && a == b,
                "{registered:?} matched {requested:?}"
            );
        }
    }
});
