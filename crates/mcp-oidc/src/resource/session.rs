//! Binding MCP sessions to the user who created them, and keeping idle sessions resumable.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};

/// What is remembered of one session: who created it and, once rmcp has recorded it, the
/// client's `initialize` parameters (all it takes to bring a hibernated session back),
/// kept as their JSON: one small block instead of a dozen, since thousands of idle
/// sessions may be kept and a resume is rare enough to parse it again.
#[derive(Clone, Default)]
struct Entry {
    owner: Option<Arc<str>>,
    state: Option<Arc<str>>,
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
#[derive(Clone)]
pub struct SessionBindings {
    map: moka::sync::Cache<Arc<str>, Entry>,
}

impl SessionBindings {
    /// At most `capacity` sessions, each forgotten after `idle` without a request.
    pub fn new(capacity: u64, idle: Duration) -> Self {
        Self {
            map: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// Records that `principal` created `session`.
    pub fn bind(&self, session: &str, principal: &str) {
        let principal: Arc<str> = Arc::from(principal);
        self.map
            .entry(Arc::from(session))
            .and_upsert_with(|known| Entry {
                owner: Some(principal),
                state: known.and_then(|e| e.into_value().state),
            });
    }

    /// Whether `principal` may use `session`.
    pub fn allows(&self, session: &str, principal: &str) -> bool {
        self.map
            .get(session)
            .and_then(|e| e.owner)
            .is_some_and(|owner| owner.as_ref() == principal)
    }

    /// Forgets a session (after it was deleted).
    pub fn unbind(&self, session: &str) {
        self.map.invalidate(session);
    }

    fn remember_state(&self, session: &str, state: &SessionState) -> serde_json::Result<()> {
        let state: Arc<str> = Arc::from(serde_json::to_string(state)?);
        self.map
            .entry(Arc::from(session))
            .and_upsert_with(|known| Entry {
                owner: known.and_then(|e| e.into_value().owner),
                state: Some(state),
            });
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
        write!(f, "SessionBindings({} sessions)", self.map.entry_count())
    }
}

#[async_trait::async_trait]
impl SessionStore for SessionBindings {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        match self.map.get(session_id).and_then(|e| e.state) {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        Ok(self.remember_state(session_id, state)?)
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.unbind(session_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::InitializeRequestParams;

    fn state() -> SessionState {
        SessionState::new(InitializeRequestParams::default())
    }

    #[tokio::test]
    async fn binding_after_the_state_keeps_the_state_and_the_reverse_keeps_the_owner() {
        let b = SessionBindings::default();
        b.store("s1", &state()).await.unwrap();
        b.bind("s1", "alice");
        assert!(b.allows("s1", "alice"));
        assert!(b.load("s1").await.unwrap().is_some());

        b.bind("s2", "bob");
        b.store("s2", &state()).await.unwrap();
        assert!(b.allows("s2", "bob"));
        assert!(!b.allows("s2", "alice"));
        assert!(b.load("s2").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_session_known_only_by_its_state_belongs_to_nobody() {
        let b = SessionBindings::default();
        b.store("s1", &state()).await.unwrap();
        assert!(!b.allows("s1", ""));
        assert!(!b.allows("s1", "alice"));
    }

    #[tokio::test]
    async fn deleting_forgets_owner_and_state() {
        let b = SessionBindings::default();
        b.bind("s1", "alice");
        b.store("s1", &state()).await.unwrap();
        b.delete("s1").await.unwrap();
        assert!(!b.allows("s1", "alice"));
        assert!(b.load("s1").await.unwrap().is_none());
    }
}
