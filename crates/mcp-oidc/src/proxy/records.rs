//! What the proxy keeps in its [`Store`](crate::store::Store), serialised as JSON.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::{Namespace, Store, StoreError};

/// A registered client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClientRecord {
    pub client_id: String,
    /// SHA-256 of the secret, for confidential clients.
    #[serde(default)]
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub client_uri: Option<String>,
    pub token_endpoint_auth_method: String,
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub scope: Option<String>,
    pub issued_at: u64,
    /// How the client is known: `dcr`, `metadata-document` or `preregistered`.
    pub kind: String,
}

/// An authorization in progress: created at `/authorize`, consumed at `/consent` and
/// again at `/auth/callback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Transaction {
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the client sent `redirect_uri` (then the token request must repeat it).
    pub redirect_uri_given: bool,
    pub state: Option<String>,
    /// The client's OpenID Connect `nonce`, returned in the ID token.
    #[serde(default)]
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub scopes: Vec<String>,
    pub resource: String,
    pub csrf: String,
    /// Set once the user approved: our PKCE verifier and nonce for the upstream leg.
    #[serde(default)]
    pub upstream_verifier: Option<String>,
    #[serde(default)]
    pub upstream_nonce: Option<String>,
    /// Browser binding: the consent cookie value that must come back at the callback.
    #[serde(default)]
    pub browser_binding: Option<String>,
    #[serde(default)]
    pub remember: bool,
}

/// One of our authorization codes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CodeRecord {
    pub grant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_given: bool,
    pub code_challenge: String,
    pub resource: String,
    pub scopes: Vec<String>,
    /// The client's OpenID Connect `nonce`, for the ID token of this code's exchange.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// A grant: one user's authorization of one client, the family of its refresh tokens, and
/// the upstream tokens behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub grant_id: String,
    pub client_id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub resource: String,
    /// Claims of the upstream identity (ID token or userinfo), for our access tokens.
    pub claims: Map<String, Value>,
    /// The upstream tokens, sealed with the proxy secret and bound to the grant id.
    #[serde(default)]
    pub upstream_sealed: Option<String>,
    #[serde(default)]
    pub revoked: bool,
    pub created_at: u64,
}

/// The upstream tokens, as sealed inside a [`Grant`].
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct UpstreamTokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A live refresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefreshRecord {
    pub grant_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
}

/// A refresh token already exchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UsedRefresh {
    pub grant_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub used_at_ms: u64,
}

/// Typed access to the store.
pub(crate) async fn load<T: DeserializeOwned>(
    store: &dyn Store,
    ns: Namespace,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match store.get(ns, key).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::new("decode", e.to_string())),
        None => Ok(None),
    }
}

pub(crate) async fn take<T: DeserializeOwned>(
    store: &dyn Store,
    ns: Namespace,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match store.take(ns, key).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::new("decode", e.to_string())),
        None => Ok(None),
    }
}

pub(crate) async fn save<T: Serialize>(
    store: &dyn Store,
    ns: Namespace,
    key: &str,
    value: &T,
    ttl: Option<std::time::Duration>,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::new("encode", e.to_string()))?;
    store.put(ns, key, &bytes, ttl).await
}

/// Reads a record and changes it with `change`, then writes it back only if nobody wrote
/// it meanwhile ([`Store::replace`]); otherwise reads it again and starts over. Another
/// process sharing the store may write the same record at any moment (an instance revoking
/// a grant while this one refreshes it), and an update made between our read and our write
/// must not be lost.
///
/// `change` may refuse (its error is returned, nothing is written). `Ok(None)` if the
/// record does not exist.
pub(crate) async fn update<T, R, E>(
    store: &dyn Store,
    ns: Namespace,
    key: &str,
    ttl: Option<std::time::Duration>,
    mut change: impl FnMut(&mut T) -> Result<R, E>,
) -> Result<Option<R>, E>
where
    T: Serialize + DeserializeOwned,
    E: From<StoreError>,
{
    // Each lost race means another writer succeeded, so this ends unless the record is
    // rewritten without pause; the bound turns that into an error instead of a spin.
    const ATTEMPTS: usize = 16;
    for _ in 0..ATTEMPTS {
        let Some(before) = store.get(ns, key).await? else {
            return Ok(None);
        };
        let mut value: T = serde_json::from_slice(&before)
            .map_err(|e| StoreError::new("decode", e.to_string()))?;
        let out = change(&mut value)?;
        let after =
            serde_json::to_vec(&value).map_err(|e| StoreError::new("encode", e.to_string()))?;
        if store.replace(ns, key, &before, &after, ttl).await? {
            return Ok(Some(out));
        }
    }
    Err(StoreError::new("update", "the record kept changing under this update").into())
}
