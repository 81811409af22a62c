//! Form and query parameter parsing with the OAuth rules: empty values count
//! as absent (RFC 6749 §3.1) and repeating a parameter is an error, except for
//! those that are lists by definition (`resource`, RFC 8707).

/// Decoded `application/x-www-form-urlencoded` pairs.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string or form body. Invalid UTF-8 is rejected rather
    /// than replaced, so a garbled value never silently matches.
    pub(crate) fn parse(input: &[u8]) -> Result<Self, String> {
        if std::str::from_utf8(input).is_err() {
            return Err("parameters are not valid UTF-8".into());
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(input)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs
            .iter()
            .any(|(k, v)| k.contains('\u{FFFD}') || v.contains('\u{FFFD}'))
        {
            return Err("parameters contain invalid percent-encoded UTF-8".into());
        }
        Ok(Self(pairs))
    }

    /// The single non-empty value of `name`; an error if it appears twice.
    pub(crate) fn one(&self, name: &str) -> Result<Option<&str>, String> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(format!("parameter {name} is repeated"));
        }
        Ok(first)
    }

    /// Every non-empty value of a list parameter.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Decodes one `application/x-www-form-urlencoded` component, as RFC 6749
/// §2.3.1 requires for the client id and secret inside HTTP Basic auth.
pub(crate) fn form_decode(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// RFC 6749 §3.3 scope token characters.
pub(crate) fn valid_scope_token(token: &str) -> bool {
    token
        .bytes()
        .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// RFC 7636 §4.1 verifier / challenge characters and length.
pub(crate) fn valid_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}
