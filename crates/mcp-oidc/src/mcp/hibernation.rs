//! Idle sessions hibernate: rmcp's session manager, with idleness judged by what is in flight.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};

/// rmcp's [`LocalSessionManager`], except that a session is ended ("hibernated") only when
/// nothing has passed in either direction for the idle period **and** none of its requests
/// is still being answered. rmcp's own keep-alive counts only messages, so it would cut off
/// a tool call that runs longer than the period without sending anything.
///
/// A hibernated session is resumed by rmcp from the session store on its next request.
pub(crate) struct HibernatingSessions {
    inner: LocalSessionManager,
    idle: Duration,
    activity: Mutex<HashMap<SessionId, Activity>>,
    me: Weak<HibernatingSessions>,
    sweeper: OnceLock<()>,
}

struct Activity {
    last: Instant,
    /// Requests whose answer stream is still open.
    in_flight: usize,
}

impl HibernatingSessions {
    pub(crate) fn new(idle: Duration) -> Arc<Self> {
        let mut inner = LocalSessionManager::default();
        // Idleness is judged here; rmcp's timer would ignore requests still running.
        inner.session_config.keep_alive = None;
        Arc::new_cyclic(|me| Self {
            inner,
            idle,
            activity: Mutex::new(HashMap::new()),
            me: me.clone(),
            sweeper: OnceLock::new(),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<SessionId, Activity>> {
        // A panic while holding this lock cannot leave the table inconsistent (each update
        // is a single field write), so a poisoned lock is still usable.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self, id: &SessionId) {
        if let Some(a) = self.table().get_mut(id) {
            a.last = Instant::now();
        }
    }

    fn track(&self, id: &SessionId) {
        self.table().insert(
            id.clone(),
            Activity {
                last: Instant::now(),
                in_flight: 0,
            },
        );
        self.start_sweeper();
    }

    /// Started on the first session, from inside the runtime.
    fn start_sweeper(&self) {
        self.sweeper.get_or_init(|| {
            let me = self.me.clone();
            let every = (self.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(me) = me.upgrade() else { return };
                    me.sweep().await;
                }
            });
        });
    }

    async fn sweep(&self) {
        let now = Instant::now();
        let idle: Vec<SessionId> = {
            let mut table = self.table();
            let ids: Vec<SessionId> = table
                .iter()
                .filter(|(_, a)| a.in_flight == 0 && now.duration_since(a.last) >= self.idle)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                table.remove(id);
            }
            ids
        };
        for id in idle {
            if let Err(e) = self.inner.close_session(&id).await {
                tracing::debug!(error = %e, "closing an idle session");
            }
        }
    }

    fn guard(&self, id: &SessionId, request: bool) -> ActivityGuard {
        if request && let Some(a) = self.table().get_mut(id) {
            a.in_flight += 1;
            a.last = Instant::now();
        }
        ActivityGuard {
            sessions: self.me.clone(),
            id: id.clone(),
            request,
        }
    }
}

/// Keeps a session's activity up to date while one of its answer streams is open: every
/// message sent counts as activity, and a request's stream counts as in flight until it
/// is dropped.
struct ActivityGuard {
    sessions: Weak<HibernatingSessions>,
    id: SessionId,
    request: bool,
}

impl ActivityGuard {
    fn sent(&self) {
        if let Some(s) = self.sessions.upgrade() {
            s.touch(&self.id);
        }
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if !self.request {
            return;
        }
        if let Some(s) = self.sessions.upgrade()
            && let Some(a) = s.table().get_mut(&self.id)
        {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.last = Instant::now();
        }
    }
}

/// An answer stream that reports its activity.
struct Watched<S> {
    inner: S,
    guard: ActivityGuard,
}

impl<S: Stream + Unpin> Stream for Watched<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.guard.sent();
        }
        polled
    }
}

impl SessionManager for HibernatingSessions {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (id, transport) = self.inner.create_session().await?;
        self.track(&id);
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.touch(id);
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        // A request has arrived: it counts as activity before anything else is decided.
        self.touch(id);
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.table().remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let guard = self.guard(id, true);
        let inner = Box::pin(self.inner.create_stream(id, message).await?);
        Ok(Watched { inner, guard })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id);
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let guard = self.guard(id, false);
        let inner = Box::pin(self.inner.create_standalone_stream(id).await?);
        Ok(Watched { inner, guard })
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let guard = self.guard(id, false);
        let inner = Box::pin(self.inner.resume(id, last_event_id).await?);
        Ok(Watched { inner, guard })
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        let outcome = self.inner.restore_session(id.clone()).await?;
        if matches!(outcome, RestoreOutcome::Restored(_)) {
            self.track(&id);
        }
        Ok(outcome)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}
