//! Binding MCP sessions to the user who created them.

use std::sync::Arc;
use std::time::Duration;

/// Remembers which principal (issuer + subject) created each `Mcp-Session-Id`.
///
/// A session presented with anyone else's token — or one this table does not know — is
/// answered 404 exactly as an unknown session, so a stolen or guessed session id is worth
/// nothing without its owner's token.
#[derive(Clone)]
pub struct SessionBindings {
    map: moka::sync::Cache<Arc<str>, Arc<str>>,
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
        self.map.insert(Arc::from(session), Arc::from(principal));
    }

    /// Whether `principal` may use `session`.
    pub fn allows(&self, session: &str, principal: &str) -> bool {
        self.map
            .get(session)
            .is_some_and(|owner| owner.as_ref() == principal)
    }

    /// Forgets a session (after it was deleted).
    pub fn unbind(&self, session: &str) {
        self.map.invalidate(session);
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
