//! Newtypes for the OAuth values that flow through the crate.
//!
//! Each value gets its own type so that an issuer cannot be passed where an audience is
//! expected, and so that secrets ([`BearerToken`], [`ClientSecret`]) can never be printed by
//! accident: their `Debug` and `Display` are redacted.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Unwraps the value.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_newtype!(
    /// The `iss` of a token: the identifier of the authorization server that issued it.
    IssuerUrl
);
string_newtype!(
    /// One entry of a token's `aud`, or the audience this server expects.
    Audience
);
string_newtype!(
    /// The `sub` of a token: who the token is about.
    Subject
);
string_newtype!(
    /// The OAuth client a token was issued to (`client_id` or `azp`).
    ClientId
);
string_newtype!(
    /// One OAuth scope, such as `openid` or `mcp:read`.
    Scope
);
string_newtype!(
    /// The `jti` of a token.
    TokenId
);

/// A bearer token as received on the wire.
///
/// Its `Debug` and `Display` never show the value; use [`BearerToken::secret`] where the
/// value is genuinely needed (to call an upstream API with it, say).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    /// Wraps a token.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The token itself. Treat the result as a secret: never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token: what caches key on, so that no cache holds a usable credential.
    pub fn fingerprint(&self) -> TokenFingerprint {
        TokenFingerprint::of(self.0.as_bytes())
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

impl fmt::Display for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The SHA-256 digest of a bearer token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenFingerprint([u8; 32]);

impl TokenFingerprint {
    /// The digest of `token`, computed without copying it into a [`BearerToken`] first.
    pub fn of(token: impl AsRef<[u8]>) -> Self {
        Self(Sha256::digest(token.as_ref()).into())
    }

    /// A short, non-reversible label for logs (the first 8 hex digits of the digest).
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenFingerprint({})", self.short())
    }
}

/// A PKCE code verifier (RFC 7636 §4.1), the secret half of a PKCE pair. Redacted in
/// `Debug`.
///
/// ```
/// use mcp_oidc::types::PkceCodeVerifier;
///
/// let verifier = PkceCodeVerifier::new_random();
/// let challenge = verifier.challenge_s256();
/// // Send `challenge` (method S256) with the authorization request, and
/// // `verifier.secret()` with the code exchange.
/// assert_eq!(challenge.as_str().len(), 43);
/// assert_eq!(format!("{verifier:?}"), "PkceCodeVerifier(<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PkceCodeVerifier(String);

impl PkceCodeVerifier {
    /// A fresh verifier of 32 random bytes (43 base64url characters, the RFC's recommended
    /// 256 bits of entropy).
    pub fn new_random() -> Self {
        Self(crate::proxy::crypto::random_token(32))
    }

    /// Wraps an existing verifier.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A verifier presented by a client, if it has the shape RFC 7636 §4.1 requires:
    /// 43 to 128 characters, each a letter, digit, `-`, `.`, `_` or `~`.
    ///
    /// ```
    /// use mcp_oidc::types::PkceCodeVerifier;
    ///
    /// assert!(PkceCodeVerifier::parse(&"a".repeat(43)).is_some());
    /// assert!(PkceCodeVerifier::parse(&"a".repeat(42)).is_none());
    /// assert!(PkceCodeVerifier::parse(&format!("{}+", "a".repeat(43))).is_none());
    /// ```
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = (43..=128).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        well_formed.then(|| Self(value.to_owned()))
    }

    /// The verifier itself, for the code exchange. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Its S256 challenge: the unpadded base64url SHA-256 of the verifier (RFC 7636 §4.2).
    pub fn challenge_s256(&self) -> PkceCodeChallenge {
        PkceCodeChallenge(crate::proxy::crypto::pkce_challenge(&self.0))
    }
}

impl fmt::Debug for PkceCodeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PkceCodeVerifier(<redacted>)")
    }
}

string_newtype!(
    /// A PKCE S256 code challenge (RFC 7636 §4.2), made by
    /// [`PkceCodeVerifier::challenge_s256`].
    PkceCodeChallenge
);

/// A client secret (for introspection or the proxy's upstream client). Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// A set of scopes, kept in the order first seen and without duplicates.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// An empty set.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Parses a space-separated `scope` string (RFC 6749 §3.3).
    pub fn from_space_separated(value: &str) -> Self {
        value
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(Scope::from)
            .collect()
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    /// Whether every scope of `required` is in the set.
    pub fn contains_all(&self, required: &Scopes) -> bool {
        required.iter().all(|s| self.contains(s.as_str()))
    }

    /// The scopes of `required` that are not in the set.
    pub fn missing(&self, required: &Scopes) -> Scopes {
        required
            .iter()
            .filter(|s| !self.contains(s.as_str()))
            .cloned()
            .collect()
    }

    /// Adds a scope unless it is already present.
    pub fn insert(&mut self, scope: Scope) {
        if !self.contains(scope.as_str()) {
            self.0.push(scope);
        }
    }

    /// The union of two sets, `self` first.
    pub fn union(&self, other: &Scopes) -> Scopes {
        let mut out = self.clone();
        for s in other.iter() {
            out.insert(s.clone());
        }
        out
    }

    /// Iterates over the scopes.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes as a space-separated string.
    pub fn to_space_separated(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(s.as_str());
        }
        out
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(Scope::as_str))
            .finish()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        let mut out = Scopes::new();
        for s in iter {
            out.insert(s);
        }
        out
    }
}

impl<'a> FromIterator<&'a str> for Scopes {
    fn from_iter<T: IntoIterator<Item = &'a str>>(iter: T) -> Self {
        iter.into_iter().map(Scope::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_debug_and_display_never_show_the_value() {
        let t = BearerToken::new("super-secret-value");
        assert!(!format!("{t:?}").contains("super-secret"));
        assert!(!format!("{t}").contains("super-secret"));
        assert_eq!(t.secret(), "super-secret-value");
    }

    #[test]
    fn client_secret_debug_is_redacted() {
        let s = ClientSecret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn scopes_parse_dedupe_and_compute_missing() {
        let have = Scopes::from_space_separated("openid  mcp:read openid");
        assert_eq!(have.len(), 2);
        let need = Scopes::from_space_separated("mcp:read mcp:write");
        assert_eq!(have.missing(&need).to_space_separated(), "mcp:write");
        assert!(!have.contains_all(&need));
        assert_eq!(
            have.union(&need).to_space_separated(),
            "openid mcp:read mcp:write"
        );
    }
}
