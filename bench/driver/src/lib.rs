//! Code shared by the programs `bench/run` drives (`bench_load` and `raw_rmcp`).

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// One RSA signing key of an issuer, parsed once for RS256, as mcp-oidc keeps its keys.
pub struct RsaKey {
    /// The key's `kid`, if the key set names one.
    pub kid: Option<String>,
    /// The parsed public key.
    pub key: ParsedPublicKey,
}

/// The issuer's RSA keys, found the way `mcp-oidc serve` finds them: its discovery document
/// names the key set.
pub async fn issuer_rsa_keys(issuer: &str) -> anyhow::Result<Vec<RsaKey>> {
    let http = reqwest::Client::new();
    let discovery: Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the discovery document names no jwks_uri"))?;
    let jwks: Value = http
        .get(jwks_uri)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut keys = Vec::new();
    for k in jwks["keys"].as_array().into_iter().flatten() {
        if k["kty"] != "RSA" {
            continue;
        }
        let field = |name: &str| URL_SAFE_NO_PAD.decode(k[name].as_str().unwrap_or_default());
        let (n, e) = (field("n")?, field("e")?);
        let key = RsaPublicKeyComponents {
            n: &n[..],
            e: &e[..],
        }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|_| anyhow::anyhow!("an RSA key of the key set does not parse"))?;
        keys.push(RsaKey {
            kid: k["kid"].as_str().map(str::to_owned),
            key,
        });
    }
    anyhow::ensure!(!keys.is_empty(), "the key set holds no RSA key");
    Ok(keys)
}

/// Whether the compact JWS `token` carries an RS256 signature one of `keys` accepts. This
/// is the signature check and the base64 decoding it needs, nothing else: no header or
/// claim is read, so it is a floor under any verifier, not one.
pub fn rs256_signature_verifies(keys: &[RsaKey], token: &str) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    keys.iter().any(|k| {
        k.key
            .verify_sig(signing_input.as_bytes(), &signature)
            .is_ok()
    })
}
