//! The proxy's token-signing key: ES256, kept (sealed) in the store so that every instance
//! sharing the store and the proxy secret signs and verifies with the same key.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

use super::crypto::Secrets;
use crate::store::{Namespace, Store, StoreError};

const KEY_NAME: &str = "signing-key-es256";

/// The signing key and its public JWK.
pub(crate) struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the key from the store, creating it on first use. Two instances starting at
    /// once agree on one key: only the first `put_if_absent` wins.
    pub(crate) async fn load_or_create(
        store: &dyn Store,
        secrets: &Secrets,
    ) -> Result<Self, StoreError> {
        if store.get(Namespace::Keys, KEY_NAME).await?.is_none() {
            let pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map_err(|_| StoreError::new("generate signing key", "key generation failed"))?;
            let sealed = secrets.seal(KEY_NAME, pkcs8.as_ref());
            store
                .put_if_absent(Namespace::Keys, KEY_NAME, sealed.as_bytes(), None)
                .await?;
        }
        let sealed = store
            .get(Namespace::Keys, KEY_NAME)
            .await?
            .ok_or_else(|| StoreError::new("load signing key", "missing after creation"))?;
        let sealed = String::from_utf8(sealed)
            .map_err(|_| StoreError::new("load signing key", "not text"))?;
        let pkcs8 = secrets.open(KEY_NAME, &sealed).map_err(|e| {
            StoreError::new(
                "load signing key",
                format!("{e}: the store was written with another proxy secret"),
            )
        })?;
        Self::from_pkcs8(&pkcs8)
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, StoreError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| StoreError::new("load signing key", "not a P-256 PKCS#8 key"))?;
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err(StoreError::new(
                "load signing key",
                "unexpected public key encoding",
            ));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        // RFC 7638 thumbprint: members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ));
        let public_jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
        Ok(Self {
            kid,
            encoding: EncodingKey::from_ec_der(pkcs8),
            public_jwk,
        })
    }

    /// The public key set.
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk] })
    }

    /// The public key set, typed, for the local verifier.
    pub(crate) fn jwk_set(&self) -> Option<JwkSet> {
        serde_json::from_value(self.jwks()).ok()
    }

    /// Signs an RFC 9068 access token.
    pub(crate) fn sign<T: Serialize>(&self, claims: &T) -> Option<String> {
        self.sign_typed("at+jwt", claims)
    }

    /// Signs an OpenID Connect ID token: `typ` `JWT`, so that it can never pass for an
    /// access token where `at+jwt` is required.
    pub(crate) fn sign_id_token<T: Serialize>(&self, claims: &T) -> Option<String> {
        self.sign_typed("JWT", claims)
    }

    fn sign_typed<T: Serialize>(&self, typ: &str, claims: &T) -> Option<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).ok()
    }
}
