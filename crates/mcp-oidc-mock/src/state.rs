//! In-memory state: users, clients, codes and tokens.
//!
//! Codes and tokens are stored under the SHA-256 of their value, so the map
//! never holds a usable credential and lookups do not compare secrets.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Claims;
use crate::keys::{b64url, sha256};

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh random credential (256 bits, base64url).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Practically unreachable; fall back to the OS RNG through uuid
        // (2 x 122 random bits) rather than fail the request.
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    b64url(&bytes)
}

/// The key under which a credential is stored.
pub(crate) fn token_key(token: &str) -> String {
    b64url(&sha256(token.as_bytes()))
}

/// How a registered client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

impl AuthMethod {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
        }
    }
}

/// A client registered through RFC 7591.
#[derive(Clone)]
pub(crate) struct Client {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    /// Scopes the client may request; `None` means any.
    pub scope: Option<Vec<String>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("redirect_uris", &self.redirect_uris)
            .field("auth_method", &self.auth_method)
            .field("grant_types", &self.grant_types)
            .field("scope", &self.scope)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    /// RFC 6749 §4.1.3: the token request must repeat `redirect_uri` only if
    /// the authorization request carried it.
    pub redirect_uri_given: bool,
    pub sub: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub resources: Vec<String>,
    pub code_challenge: Option<String>,
    pub auth_time: u64,
    pub expires_at: u64,
    pub grant_id: String,
    /// Kept after use until expiry so that a replay can be detected.
    pub used: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    pub aud: Vec<String>,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub grant_id: Option<String>,
    pub issuer: String,
    /// False for client_credentials tokens, which have no end user.
    pub has_user: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    pub aud: Vec<String>,
    pub resources: Vec<String>,
    pub iat: u64,
    pub exp: u64,
    pub grant_id: String,
    pub auth_time: u64,
    pub issuer: String,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub users: HashMap<String, Claims>,
    pub predefined: Vec<String>,
    pub recent: VecDeque<String>,
    pub clients: HashMap<String, Client>,
    pub codes: HashMap<String, CodeRecord>,
    pub access_tokens: HashMap<String, AccessRecord>,
    pub refresh_tokens: HashMap<String, RefreshRecord>,
    next_prune: u64,
}

impl State {
    /// Drops expired codes and tokens; cheap enough to call on every write
    /// because it runs at most once every few seconds.
    pub(crate) fn maybe_prune(&mut self, now: u64) {
        if now < self.next_prune {
            return;
        }
        self.next_prune = now + 5;
        self.codes.retain(|_, c| c.expires_at > now);
        self.access_tokens.retain(|_, t| t.exp > now);
        self.refresh_tokens.retain(|_, t| t.exp > now);
    }

    pub(crate) fn record_subject(&mut self, sub: &str, cap: usize) {
        self.recent.retain(|s| s != sub);
        self.recent.push_front(sub.to_owned());
        self.recent.truncate(cap);
    }

    /// Invalidates every token that descends from one authorization code.
    pub(crate) fn revoke_grant(&mut self, grant_id: &str) {
        self.access_tokens
            .retain(|_, t| t.grant_id.as_deref() != Some(grant_id));
        self.refresh_tokens.retain(|_, t| t.grant_id != grant_id);
    }

    pub(crate) fn revoke_user(&mut self, sub: &str) {
        self.access_tokens
            .retain(|_, t| !(t.has_user && t.sub == sub));
        self.refresh_tokens.retain(|_, t| t.sub != sub);
        self.codes.retain(|_, c| c.sub != sub);
    }
}
