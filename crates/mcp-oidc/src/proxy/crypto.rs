//! Secrets of the proxy: random values, hashing, sealing upstream tokens at rest, and
//! signing cookies.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A random, URL-safe value with `bytes` bytes of entropy.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SystemRandom fails only when the OS entropy source is gone. Issuing a predictable
    // code or token would be worse than stopping, so the process stops.
    if SystemRandom::new().fill(&mut buf).is_err() {
        std::process::abort();
    }
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of `value`, base64url: how codes and refresh tokens are keyed in the store, so
/// that a copy of the store holds no usable credential.
pub(crate) fn hash(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        value.as_bytes(),
    ))
}

/// The PKCE S256 transform (RFC 7636 §4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    hash(verifier)
}

/// Constant-time equality of two strings.
pub(crate) fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Keys derived from the proxy's master secret.
pub(crate) struct Secrets {
    aead: LessSafeKey,
    cookie: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

/// A sealing or opening failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decrypt a stored secret (wrong or rotated proxy secret?)")]
pub(crate) struct SealError;

impl Secrets {
    /// Derives the keys from `master` (at least 32 bytes).
    pub(crate) fn new(master: &[u8]) -> Option<Self> {
        if master.len() < 32 {
            return None;
        }
        let derive = |label: &[u8]| {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, master);
            aws_lc_rs::hmac::sign(&key, label)
        };
        let aead_key = derive(b"mcp-oidc proxy: encryption at rest v1");
        let cookie_key = derive(b"mcp-oidc proxy: cookie signing v1");
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, aead_key.as_ref()).ok()?);
        let cookie = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, cookie_key.as_ref());
        Some(Self { aead, cookie })
    }

    /// Encrypts `plain`, bound to `context` (e.g. the grant id), so a sealed value cannot
    /// be moved to another record.
    pub(crate) fn seal(&self, context: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        if SystemRandom::new().fill(&mut nonce).is_err() {
            std::process::abort();
        }
        let mut data = plain.to_vec();
        // Sealing with a fresh key and nonce cannot fail for inputs under 64 GiB.
        if self
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .is_err()
        {
            std::process::abort();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts what [`Secrets::seal`] produced with the same `context`.
    pub(crate) fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| SealError)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError)?;
        let mut data = data.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SealError)?;
        Ok(plain.to_vec())
    }

    /// `value.signature`, for a cookie.
    pub(crate) fn sign_cookie(&self, value: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.cookie, value.as_bytes());
        format!("{value}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The value of a cookie signed by [`Secrets::sign_cookie`], if the signature holds.
    pub(crate) fn verify_cookie<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let (value, tag) = signed.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        aws_lc_rs::hmac::verify(&self.cookie, value.as_bytes(), &tag).ok()?;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let s = Secrets::new(&[7u8; 32]).unwrap();
        let sealed = s.seal("grant-1", b"upstream-token");
        assert_eq!(s.open("grant-1", &sealed).unwrap(), b"upstream-token");
        assert!(s.open("grant-2", &sealed).is_err());
        let other = Secrets::new(&[8u8; 32]).unwrap();
        assert!(other.open("grant-1", &sealed).is_err());
    }

    #[test]
    fn cookie_signatures_detect_tampering() {
        let s = Secrets::new(&[1u8; 32]).unwrap();
        let c = s.sign_cookie("abc");
        assert_eq!(s.verify_cookie(&c), Some("abc"));
        assert_eq!(s.verify_cookie(&c.replacen("abc", "abd", 1)), None);
        assert_eq!(s.verify_cookie("abc"), None);
    }

    #[test]
    fn pkce_s256_is_unpadded_base64url_of_the_verifiers_sha256() {
        // Expected value computed independently (Python hashlib + base64.urlsafe_b64encode).
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gXk9-cMoE"),
            "-trTjJAKCmk3SaLqwjUWur87115baiTASaFZPHxQIwA"
        );
    }
}
