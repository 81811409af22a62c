//! Signing keys: generation, the JWKS, JWT signing and the optional key file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::config::SigningAlg;
use crate::error::MockError;

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// One private signing key with its public JWK.
pub(crate) struct SigningKey {
    alg: SigningAlg,
    kid: String,
    public_jwk: Value,
    /// PKCS#8 DER, kept only to write the key file.
    pkcs8: Vec<u8>,
    signer: Signer,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    pub(crate) fn generate(alg: SigningAlg) -> Result<Self, MockError> {
        let pkcs8 = match alg {
            SigningAlg::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|doc| doc.as_ref().to_vec()),
            SigningAlg::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map(|der| der.as_ref().to_vec()),
        }
        .map_err(|_| MockError::Key(format!("could not generate a {} key", alg.as_str())))?;
        Self::from_pkcs8(pkcs8)
    }

    /// Parses a PKCS#8 private key, detecting P-256 or RSA.
    pub(crate) fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, MockError> {
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8) {
            // An uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return Err(MockError::Key(
                    "unexpected P-256 public key encoding".into(),
                ));
            }
            let (x, y) = (b64url(&point[1..33]), b64url(&point[33..65]));
            // RFC 7638: members in lexicographic order, no whitespace.
            let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            let kid = b64url(&sha256(canonical.as_bytes()));
            let public_jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y,
                                    "kid": kid, "alg": "ES256", "use": "sig"});
            return Ok(Self {
                alg: SigningAlg::Es256,
                kid,
                public_jwk,
                pkcs8,
                signer: Signer::Ec(pair),
            });
        }
        let pair = RsaKeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| MockError::Key(format!("not a P-256 or RSA PKCS#8 key: {e}")))?;
        if pair.public_modulus_len() < 256 {
            return Err(MockError::Key(
                "RSA keys must have at least 2048 bits".into(),
            ));
        }
        let public = pair.public_key();
        let n = b64url(public.modulus().big_endian_without_leading_zero());
        let e = b64url(public.exponent().big_endian_without_leading_zero());
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = b64url(&sha256(canonical.as_bytes()));
        let public_jwk =
            json!({"kty": "RSA", "n": n, "e": e, "kid": kid, "alg": "RS256", "use": "sig"});
        Ok(Self {
            alg: SigningAlg::Rs256,
            kid,
            public_jwk,
            pkcs8,
            signer: Signer::Rsa(pair),
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// Signs `claims` as a compact JWS with the given `typ` header.
    pub(crate) fn sign_jwt(&self, typ: &str, claims: &Value) -> Result<String, SignError> {
        let header = json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid});
        let mut input = b64url(header.to_string().as_bytes());
        input.push('.');
        input.push_str(&b64url(claims.to_string().as_bytes()));
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = match &self.signer {
            Signer::Ec(pair) => pair
                .sign(&rng, input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError)?,
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .map_err(|_| SignError)?;
                sig
            }
        };
        input.push('.');
        input.push_str(&b64url(&signature));
        Ok(input)
    }
}

/// Signing failed inside the crypto library (not caused by request input).
#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub(crate) struct SignError;

/// The current signing key plus rotated-out keys still published.
#[derive(Debug)]
pub(crate) struct KeyRing {
    current: Arc<SigningKey>,
    retired: Vec<(Arc<SigningKey>, Instant)>,
    file: Option<PathBuf>,
    grace: Duration,
    alg: SigningAlg,
}

impl KeyRing {
    pub(crate) fn new(
        alg: SigningAlg,
        file: Option<PathBuf>,
        grace: Duration,
    ) -> Result<Self, MockError> {
        let Some(path) = file else {
            return Ok(Self {
                current: Arc::new(SigningKey::generate(alg)?),
                retired: Vec::new(),
                file: None,
                grace,
                alg,
            });
        };
        let shown = path.display().to_string();
        let key_err = |reason: String| MockError::KeyFile {
            path: shown.clone(),
            reason,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut keys = pem_decode_all(&text)
                    .map_err(key_err)?
                    .into_iter()
                    .map(|der| SigningKey::from_pkcs8(der).map(Arc::new))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| key_err(e.to_string()))?;
                if keys.is_empty() {
                    return Err(key_err("no PRIVATE KEY block found".into()));
                }
                let current = keys.remove(0);
                if current.alg != alg {
                    return Err(key_err(format!(
                        "holds a {} key but the signing algorithm is {}; pass --signing-alg {} or use another file",
                        current.alg.as_str(),
                        alg.as_str(),
                        current.alg.as_str()
                    )));
                }
                // The file does not record when older keys were retired, so
                // they get a full grace period from now.
                let now = Instant::now();
                let ring = Self {
                    current,
                    retired: keys.into_iter().map(|k| (k, now)).collect(),
                    file: Some(path),
                    grace,
                    alg,
                };
                tracing::info!(kid = %ring.current.kid, "loaded signing key from key file");
                Ok(ring)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ring = Self {
                    current: Arc::new(SigningKey::generate(alg)?),
                    retired: Vec::new(),
                    file: Some(path),
                    grace,
                    alg,
                };
                ring.save().map_err(|e| key_err(e.to_string()))?;
                tracing::info!(kid = %ring.current.kid, "created key file");
                Ok(ring)
            }
            Err(e) => Err(key_err(e.to_string())),
        }
    }

    pub(crate) fn current(&self) -> Arc<SigningKey> {
        Arc::clone(&self.current)
    }

    /// Public JWKs of the current key and of retired keys still in their grace period.
    pub(crate) fn jwks(&self) -> Value {
        let now = Instant::now();
        let keys: Vec<Value> = std::iter::once(&self.current)
            .chain(
                self.retired
                    .iter()
                    .filter(|(_, at)| now.duration_since(*at) < self.grace)
                    .map(|(k, _)| k),
            )
            .map(|k| k.public_jwk.clone())
            .collect();
        json!({ "keys": keys })
    }

    /// Makes a freshly generated key current; the old one stays published for
    /// the grace period so tokens it signed keep verifying.
    pub(crate) fn rotate(&mut self, new_key: SigningKey) -> String {
        let now = Instant::now();
        let old = std::mem::replace(&mut self.current, Arc::new(new_key));
        self.retired
            .retain(|(_, at)| now.duration_since(*at) < self.grace);
        self.retired.push((old, now));
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "could not update the key file after key rotation");
        }
        self.current.kid.clone()
    }

    pub(crate) fn alg(&self) -> SigningAlg {
        self.alg
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let mut text = String::new();
        for key in std::iter::once(&self.current).chain(self.retired.iter().map(|(k, _)| k)) {
            text.push_str(&pem_encode(&key.pkcs8));
        }
        write_private(path, text.as_bytes())
    }
}

/// Writes the file readable by its owner only, replacing it atomically.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // `mode` only applies to new files; a stale temp file keeps its mode.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

fn pem_decode_all(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match (&mut body, line) {
            (None, "-----BEGIN PRIVATE KEY-----") => body = Some(String::new()),
            (None, l) if l.starts_with("-----BEGIN ") => {
                return Err(format!(
                    "unsupported PEM block {l:?}: expected PKCS#8 PRIVATE KEY"
                ));
            }
            (Some(b), "-----END PRIVATE KEY-----") => {
                out.push(
                    STANDARD
                        .decode(b.as_bytes())
                        .map_err(|e| format!("bad base64 in PEM: {e}"))?,
                );
                body = None;
            }
            (Some(b), l) => b.push_str(l),
            (None, _) => {}
        }
    }
    if body.is_some() {
        return Err("unterminated PEM block".into());
    }
    Ok(out)
}
