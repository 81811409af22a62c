//! Binding MCP sessions to the user who created them, and keeping idle sessions resumable.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use serde::{Deserialize, Serialize};

use crate::store::{Namespace, Store};

/// What is remembered of one session: who created it and, once rmcp has recorded it, the
/// client's `initialize` parameters (all it takes to bring a hibernated session back),
/// kept as their JSON: one small block instead of a dozen, since thousands of idle
/// sessions may be kept and a resume is rare enough to parse it again.
#[derive(Clone, Default)]
struct Entry {
    owner: Option<Arc<str>>,
    state: Option<Arc<str>>,
}

/// An [`Entry`] as written to a durable store.
#[derive(Serialize, Deserialize)]
struct Persisted<'a> {
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    owner: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    state: Option<Cow<'a, str>>,
}

/// Remembers which principal (issuer + subject) created each `Mcp-Session-Id`.
///
/// A session presented with anyone else's token — or one this table does not know — is
/// answered 404 exactly as an unknown session, so a stolen or guessed session id is worth
/// nothing without its owner's token.
///
/// It is also rmcp's [`SessionStore`]: next to the owner it keeps the client's `initialize`
/// parameters (a few hundred bytes). A session whose worker was ended for being idle
/// ("hibernated", see [`crate::McpOidc::session_hibernation`]) is rebuilt from them on its
/// next request, with the same id and owner, without the client noticing. An entry lives as
/// long as its session is used at least once per `idle` period.
///
/// With a durable [`Store`] ([`SessionBindings::with_store`]) every entry is also written
/// there, so sessions outlive a restart of the server and are shared by every instance
/// using the same store: the memory table is then a cache of it.
#[derive(Clone)]
pub struct SessionBindings {
    map: moka::sync::Cache<Arc<str>, Entry>,
    durable: Option<Arc<dyn Store>>,
    idle: Duration,
}

impl SessionBindings {
    /// At most `capacity` sessions, each forgotten after `idle` without a request.
    pub fn new(capacity: u64, idle: Duration) -> Self {
        Self {
            map: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .build(),
            durable: None,
            idle,
        }
    }

    /// Also keeps every session in `store`, where it expires `idle` after it was created
    /// (the memory table, refreshed by every request, is what keeps a busy session longer
    /// while the server runs).
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.durable = Some(store);
        self
    }

    /// Records that `principal` created `session`.
    pub async fn bind(&self, session: &str, principal: &str) {
        let principal: Arc<str> = Arc::from(principal);
        let entry = self
            .map
            .entry(Arc::from(session))
            .and_upsert_with(|known| Entry {
                owner: Some(principal),
                state: known.and_then(|e| e.into_value().state),
            })
            .into_value();
        self.persist(session, &entry).await;
    }

    /// Whether `principal` may use `session`.
    pub async fn allows(&self, session: &str, principal: &str) -> bool {
        self.entry(session)
            .await
            .and_then(|e| e.owner)
            .is_some_and(|owner| owner.as_ref() == principal)
    }

    /// Forgets a session (after it was deleted).
    pub async fn unbind(&self, session: &str) {
        self.map.invalidate(session);
        if let Some(store) = &self.durable
            && let Err(e) = store.delete(Namespace::Sessions, session).await
        {
            tracing::warn!(target: "mcp_oidc::sessions", error = %e, "could not delete a session from the store");
        }
    }

    /// The entry from memory or, after a restart or from another instance, from the store.
    async fn entry(&self, session: &str) -> Option<Entry> {
        if let Some(entry) = self.map.get(session) {
            return Some(entry);
        }
        let store = self.durable.as_ref()?;
        let bytes = match store.get(Namespace::Sessions, session).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(target: "mcp_oidc::sessions", error = %e, "could not read a session from the store");
                return None;
            }
        };
        let p: Persisted<'_> = serde_json::from_slice(&bytes).ok()?;
        let entry = Entry {
            owner: p.owner.map(|o| Arc::from(o.as_ref())),
            state: p.state.map(|s| Arc::from(s.as_ref())),
        };
        self.map.insert(Arc::from(session), entry.clone());
        Some(entry)
    }

    async fn persist(&self, session: &str, entry: &Entry) {
        let Some(store) = &self.durable else { return };
        let persisted = Persisted {
            owner: entry.owner.as_deref().map(Cow::Borrowed),
            state: entry.state.as_deref().map(Cow::Borrowed),
        };
        let result = match serde_json::to_vec(&persisted) {
            Ok(bytes) => {
                store
                    .put(Namespace::Sessions, session, &bytes, Some(self.idle))
                    .await
            }
            Err(e) => Err(crate::store::StoreError::new(
                "encode session",
                e.to_string(),
            )),
        };
        if let Err(e) = result {
            tracing::warn!(target: "mcp_oidc::sessions", error = %e, "could not write a session to the store; it will not survive a restart");
        }
    }

    async fn remember_state(&self, session: &str, state: &SessionState) -> serde_json::Result<()> {
        let state: Arc<str> = Arc::from(serde_json::to_string(state)?);
        let known = self.entry(session).await;
        let entry = Entry {
            owner: known.and_then(|e| e.owner),
            state: Some(state),
        };
        self.map.insert(Arc::from(session), entry.clone());
        self.persist(session, &entry).await;
        Ok(())
    }
}

impl Default for SessionBindings {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(24 * 3600))
    }
}

impl std::fmt::Debug for SessionBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionBindings({} sessions in memory{})",
            self.map.entry_count(),
            if self.durable.is_some() {
                ", durable"
            } else {
                ""
            }
        )
    }
}

#[async_trait::async_trait]
impl SessionStore for SessionBindings {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(json) = self.entry(session_id).await.and_then(|e| e.state) else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_str(&json)?))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        Ok(self.remember_state(session_id, state).await?)
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.unbind(session_id).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, SqliteStore};
    use rmcp::model::InitializeRequestParams;

    fn state() -> SessionState {
        SessionState::new(InitializeRequestParams::default())
    }

    #[tokio::test]
    async fn binding_after_the_state_keeps_the_state_and_the_reverse_keeps_the_owner() {
        let b = SessionBindings::default();
        b.store("s1", &state()).await.unwrap();
        b.bind("s1", "alice").await;
        assert!(b.allows("s1", "alice").await);
        assert!(b.load("s1").await.unwrap().is_some());

        b.bind("s2", "bob").await;
        b.store("s2", &state()).await.unwrap();
        assert!(b.allows("s2", "bob").await);
        assert!(!b.allows("s2", "alice").await);
        assert!(b.load("s2").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_session_known_only_by_its_state_belongs_to_nobody() {
        let b = SessionBindings::default();
        b.store("s1", &state()).await.unwrap();
        assert!(!b.allows("s1", "").await);
        assert!(!b.allows("s1", "alice").await);
    }

    #[tokio::test]
    async fn deleting_forgets_owner_and_state() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let b = SessionBindings::default().with_store(store.clone());
        b.bind("s1", "alice").await;
        b.store("s1", &state()).await.unwrap();
        b.delete("s1").await.unwrap();
        assert!(!b.allows("s1", "alice").await);
        assert!(b.load("s1").await.unwrap().is_none());
        let fresh = SessionBindings::default().with_store(store);
        assert!(!fresh.allows("s1", "alice").await);
    }

    #[tokio::test]
    async fn sessions_in_a_sqlite_store_outlive_the_table_that_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
            let b = SessionBindings::default().with_store(store);
            b.store("s1", &state()).await.unwrap();
            b.bind("s1", "alice").await;
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
        let b = SessionBindings::default().with_store(store);
        assert!(!b.allows("s1", "bob").await);
        assert!(b.allows("s1", "alice").await);
        assert!(b.load("s1").await.unwrap().is_some());
        assert!(b.load("s2").await.unwrap().is_none());
    }
}
