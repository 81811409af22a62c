//! Binding MCP sessions to the user who created them, and keeping idle sessions resumable.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use serde::{Deserialize, Serialize};

use super::session_table::{Entry, SessionTable};
use crate::store::{Namespace, Store};

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
/// long as its session is used at least once per `idle` period. Entries are compact (the
/// owner and the parameters, usually the same for many sessions, are stored once each): a
/// hibernated session costs the server well under a kilobyte.
///
/// With a durable [`Store`] ([`SessionBindings::with_store`]) every entry is also written
/// there, so sessions outlive a restart of the server: the memory table is then a cache of
/// it. Several instances can share the store; a session deleted through one of them is
/// refused by the others from their next check of the store, at most
/// [`SessionBindings::store_recheck`] (default 5 seconds) later.
#[derive(Clone)]
pub struct SessionBindings {
    table: Arc<SessionTable>,
    durable: Option<Durable>,
    idle: Duration,
    /// Installed as rmcp's session store, which forgets a deleted session by itself.
    transport_store: bool,
    /// How long a session from memory is trusted before the durable store is asked
    /// whether another instance deleted it.
    recheck: Duration,
    /// Ends the transport's live session (its worker and open streams) once the store
    /// shows it was deleted through another instance.
    closer: Option<Closer>,
}

/// Ends a live session in the transport's session manager.
pub(crate) type Closer =
    Arc<dyn Fn(Arc<str>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The durable side of [`SessionBindings`].
#[derive(Clone)]
struct Durable {
    store: Arc<dyn Store>,
    /// Session ids the store was just asked about and did not have. Every request naming
    /// an unknown id would otherwise cost a store read (two, with rmcp's own restore
    /// attempt); ids are made by the server, so one unknown now stays unknown.
    unknown: moka::sync::Cache<Arc<str>, ()>,
}

/// How long an id the store did not have is remembered as unknown.
const UNKNOWN_FOR: Duration = Duration::from_secs(60);

/// The default of [`SessionBindings::store_recheck`].
pub(crate) const DEFAULT_STORE_RECHECK: Duration = Duration::from_secs(5);

impl SessionBindings {
    /// At most `capacity` sessions in memory (when full, the least recently used one is
    /// forgotten), each forgotten after `idle` without a request.
    pub fn new(capacity: u64, idle: Duration) -> Self {
        Self {
            table: Arc::new(SessionTable::new(capacity, idle)),
            durable: None,
            idle,
            transport_store: false,
            recheck: DEFAULT_STORE_RECHECK,
            closer: None,
        }
    }

    /// How to end the transport's live session when the store shows it was deleted
    /// elsewhere (without it, the session's worker lingers until its idle period ends).
    pub(crate) fn closing_with(mut self, closer: Closer) -> Self {
        self.closer = Some(closer);
        self
    }

    /// Marks this table as the session store of rmcp's transport: rmcp then forgets a
    /// deleted session itself, and [`SessionBindings::deleted`] leaves it at that.
    pub(crate) fn serving_as_transport_store(mut self) -> Self {
        self.transport_store = true;
        self
    }

    /// Also keeps every session in `store`, where it expires `idle` after it was last
    /// written. The requests of a session rewrite it once an eighth of that period has
    /// passed, so a stored session outlives at least seven eighths of `idle` without use:
    /// what a restart must not lose is kept, at one write per session every few hours.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.durable = Some(Durable {
            store,
            unknown: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(UNKNOWN_FOR)
                .build(),
        });
        self
    }

    /// With a durable store: how long a session held in memory is used before the store is
    /// asked again whether it still exists, i.e. how late a DELETE made through another
    /// instance sharing the store can take effect here. Each session in use costs one store
    /// read per period. Zero asks on every request.
    pub fn store_recheck(mut self, every: Duration) -> Self {
        self.recheck = every;
        self
    }

    /// How many sessions are held in memory (expired ones not yet swept included).
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Records that `principal` created `session`.
    pub async fn bind(&self, session: &str, principal: &str) {
        let owner = self.table.owner(principal);
        let entry = self.table.upsert(session, |known| Entry {
            owner: Some(owner),
            state: known.and_then(|e| e.state),
            written: Some(self.table.now_s()),
            confirmed: self.table.now_s(),
        });
        self.persist(session, &entry).await;
    }

    /// Whether `principal` may use `session`.
    pub async fn allows(&self, session: &str, principal: &str) -> bool {
        let Some(entry) = self.entry(session).await else {
            return false;
        };
        if entry.owner.as_deref() != Some(principal) {
            return false;
        }
        // A rewrite would bring back a session deleted through another instance, so one
        // is preceded by a check of the store (unless the entry was just read from there).
        let rewrite = self.rewrite_due(&entry);
        let confirm_now = rewrite && entry.written.is_some();
        let Some(entry) = self.still_stored(session, entry, confirm_now).await else {
            return false;
        };
        if rewrite {
            self.rewrite(session, entry).await;
        }
        true
    }

    /// The entry, unless the durable store says the session is gone: deleted through
    /// another instance, or expired there. Asks the store at most once per `recheck` per
    /// session, or now if `force`. When the store cannot answer, the session stays usable:
    /// its owner was checked, and an outage of the store must not end every session.
    async fn still_stored(&self, session: &str, entry: Entry, force: bool) -> Option<Entry> {
        let Some(durable) = &self.durable else {
            return Some(entry);
        };
        let now = self.table.now_s();
        let every = u32::try_from(self.recheck.as_secs()).unwrap_or(u32::MAX);
        if !force && now.saturating_sub(entry.confirmed) < every {
            return Some(entry);
        }
        match durable.store.get(Namespace::Sessions, session).await {
            Ok(Some(_)) => Some(self.table.upsert(session, |known| Entry {
                confirmed: now,
                ..known.unwrap_or(entry)
            })),
            Ok(None) => {
                tracing::debug!(target: "mcp_oidc::sessions", "session no longer in the store (deleted elsewhere or expired); refusing it");
                self.table.remove(session);
                let id: Arc<str> = Arc::from(session);
                durable.unknown.insert(id.clone(), ());
                if let Some(close) = &self.closer {
                    close(id).await;
                }
                None
            }
            Err(e) => {
                tracing::warn!(target: "mcp_oidc::sessions", error = %e, "could not read a session from the store; trusting memory");
                Some(entry)
            }
        }
    }

    /// Whether a session in use is due to be rewritten to the durable store: once its
    /// stored lifetime has run an eighth down, so that what expires there is a session
    /// left unused, not an old one.
    fn rewrite_due(&self, entry: &Entry) -> bool {
        if self.durable.is_none() {
            return false;
        }
        let every = u32::try_from(self.idle.as_secs() / 8).unwrap_or(u32::MAX);
        entry
            .written
            .is_none_or(|at| self.table.now_s().saturating_sub(at) >= every)
    }

    async fn rewrite(&self, session: &str, entry: Entry) {
        let now = self.table.now_s();
        let entry = self.table.upsert(session, |known| Entry {
            written: Some(now),
            confirmed: now,
            ..known.unwrap_or(entry)
        });
        self.persist(session, &entry).await;
    }

    /// After the transport answered a DELETE of `session` with success: forgets it, unless
    /// rmcp (with this table as its session store) has already done so.
    pub(crate) async fn deleted(&self, session: &str) {
        if !self.transport_store {
            self.unbind(session).await;
        }
    }

    /// Forgets a session (after it was deleted).
    pub async fn unbind(&self, session: &str) {
        self.table.remove(session);
        if let Some(durable) = &self.durable
            && let Err(e) = durable.store.delete(Namespace::Sessions, session).await
        {
            tracing::warn!(target: "mcp_oidc::sessions", error = %e, "could not delete a session from the store");
        }
    }

    /// The entry from memory or, after a restart or from another instance, from the store.
    async fn entry(&self, session: &str) -> Option<Entry> {
        if let Some(entry) = self.table.get(session) {
            return Some(entry);
        }
        let durable = self.durable.as_ref()?;
        if durable.unknown.contains_key(session) {
            return None;
        }
        let bytes = match durable.store.get(Namespace::Sessions, session).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                durable.unknown.insert(Arc::from(session), ());
                return None;
            }
            Err(e) => {
                tracing::warn!(target: "mcp_oidc::sessions", error = %e, "could not read a session from the store");
                return None;
            }
        };
        let p: Persisted<'_> = serde_json::from_slice(&bytes).ok()?;
        let entry = Entry {
            owner: p.owner.map(|o| self.table.owner(&o)),
            state: p.state.map(|s| self.table.state(&s)),
            written: None,
            confirmed: self.table.now_s(),
        };
        Some(self.table.upsert(session, |known| known.unwrap_or(entry)))
    }

    async fn persist(&self, session: &str, entry: &Entry) {
        let Some(durable) = &self.durable else { return };
        // An id now written is no longer unknown (only a new session can be in both).
        durable.unknown.invalidate(session);
        let persisted = Persisted {
            owner: entry.owner.as_deref().map(Cow::Borrowed),
            state: entry.state.as_deref().map(Cow::Borrowed),
        };
        let result = match serde_json::to_vec(&persisted) {
            Ok(bytes) => {
                durable
                    .store
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
        let state = self.table.state(&serde_json::to_string(state)?);
        // Read first: after a restart the owner may be known only to the durable store.
        let known = self.entry(session).await;
        let entry = self.table.upsert(session, |now_known| Entry {
            owner: now_known.or(known).and_then(|e| e.owner),
            state: Some(state),
            written: Some(self.table.now_s()),
            confirmed: self.table.now_s(),
        });
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
            self.table.len(),
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
    use crate::store::testing::{Op, TestStore};
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

    #[tokio::test]
    async fn a_session_in_use_outlives_its_stored_lifetime_and_an_unused_one_does_not() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        // A 2 s lifetime: every use rewrites the record (an eighth of it rounds to 0 s).
        let b = SessionBindings::new(100, Duration::from_secs(2)).with_store(store.clone());
        b.bind("used", "alice").await;
        b.bind("unused", "alice").await;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(b.allows("used", "alice").await);
        }
        // 2.8 s after both were written: a restarted table still has the one in use.
        let after_restart = SessionBindings::new(100, Duration::from_secs(2)).with_store(store);
        assert!(after_restart.allows("used", "alice").await);
        assert!(!after_restart.allows("unused", "alice").await);
    }

    #[tokio::test]
    async fn a_session_used_within_an_eighth_of_its_lifetime_is_not_rewritten() {
        let store = Arc::new(TestStore::default());
        let b = SessionBindings::default().with_store(store.clone());
        b.bind("s1", "alice").await;
        // Deleted behind the table's back: only a rewrite would bring it back.
        store
            .inner()
            .delete(Namespace::Sessions, "s1")
            .await
            .unwrap();
        for _ in 0..3 {
            assert!(b.allows("s1", "alice").await);
        }
        assert!(
            store
                .inner()
                .get(Namespace::Sessions, "s1")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_unknown_session_id_costs_one_store_read_until_it_is_created() {
        let store = Arc::new(TestStore::default());
        let reads = || store.calls(Op::Get(Namespace::Sessions));
        let b = SessionBindings::default().with_store(store.clone());
        for _ in 0..5 {
            assert!(!b.allows("nope", "alice").await);
            assert!(b.load("nope").await.unwrap().is_none());
        }
        assert_eq!(reads(), 1);

        // A session written under an id once asked about is found (by another table too).
        b.store("nope", &state()).await.unwrap();
        b.bind("nope", "alice").await;
        assert!(b.allows("nope", "alice").await);
        let other = SessionBindings::default().with_store(store.clone());
        assert!(other.allows("nope", "alice").await);
    }

    #[tokio::test]
    async fn a_delete_rmcp_already_handled_is_not_repeated_but_one_it_did_not_is_done() {
        let store = Arc::new(TestStore::default());
        let deletes = || store.calls(Op::Delete(Namespace::Sessions));
        let b = SessionBindings::default()
            .with_store(store.clone())
            .serving_as_transport_store();
        b.bind("s1", "alice").await;
        b.delete("s1").await.unwrap(); // rmcp's hook, on DELETE
        b.deleted("s1").await; // the bearer layer, after the DELETE succeeded
        assert_eq!(deletes(), 1);
        assert!(!b.allows("s1", "alice").await);

        // Without rmcp's hook the layer's call is what forgets the session.
        let b = SessionBindings::default().with_store(store.clone());
        b.bind("s2", "alice").await;
        b.deleted("s2").await;
        assert_eq!(deletes(), 2);
        assert!(!b.allows("s2", "alice").await);
    }

    #[tokio::test]
    async fn a_session_deleted_through_another_instance_is_refused_here_after_the_recheck() {
        let store = Arc::new(TestStore::default());
        let reads = || store.calls(Op::Get(Namespace::Sessions));
        let here = SessionBindings::default()
            .with_store(store.clone())
            .store_recheck(Duration::from_secs(1));
        let there = SessionBindings::default().with_store(store.clone());
        here.bind("s1", "alice").await;
        assert!(there.allows("s1", "alice").await);
        there.unbind("s1").await; // a DELETE through the other instance

        // Within the period memory is trusted, without a store read.
        let before = reads();
        assert!(here.allows("s1", "alice").await);
        assert_eq!(reads(), before);

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!here.allows("s1", "alice").await);
        assert!(!here.allows("s1", "alice").await);
        assert!(here.load("s1").await.unwrap().is_none(), "nor resumed");
        assert_eq!(reads(), before + 1, "the refusal is remembered");
    }

    #[tokio::test]
    async fn a_session_in_use_is_confirmed_once_per_recheck_period() {
        let store = Arc::new(TestStore::default());
        let reads = || store.calls(Op::Get(Namespace::Sessions));
        let b = SessionBindings::default()
            .with_store(store.clone())
            .store_recheck(Duration::from_secs(1));
        b.bind("s1", "alice").await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let before = reads();
            for _ in 0..5 {
                assert!(b.allows("s1", "alice").await);
            }
            // One read, or two if the table's clock (whole seconds) ticked mid-loop.
            assert!(
                (1..=2).contains(&(reads() - before)),
                "{}",
                reads() - before
            );
        }
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_leaves_the_sessions_in_memory_usable() {
        let store = Arc::new(TestStore::default());
        let b = SessionBindings::default()
            .with_store(store.clone())
            .store_recheck(Duration::ZERO);
        b.bind("s1", "alice").await;
        store.fail_when(|op| matches!(op, Op::Get(_)));
        assert!(b.allows("s1", "alice").await);
        assert!(!b.allows("s1", "bob").await, "the owner is still checked");

        store.heal();
        store
            .inner()
            .delete(Namespace::Sessions, "s1")
            .await
            .unwrap();
        assert!(
            !b.allows("s1", "alice").await,
            "a zero period asks every time"
        );
    }

    #[tokio::test]
    async fn a_due_rewrite_never_brings_back_a_session_deleted_elsewhere() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        // A 2 s lifetime: every use is due to rewrite the record; the recheck period (5 s)
        // alone would not look at the store yet.
        let here = SessionBindings::new(100, Duration::from_secs(2)).with_store(store.clone());
        let there = SessionBindings::new(100, Duration::from_secs(2)).with_store(store.clone());
        here.bind("s1", "alice").await;
        there.unbind("s1").await;
        assert!(!here.allows("s1", "alice").await);
        assert!(
            store
                .get(Namespace::Sessions, "s1")
                .await
                .unwrap()
                .is_none()
        );
    }
}
