//! A store for tests of what happens around storage: which operations reach it, and how the
//! code behaves when some of them fail (a full disk, a locked database, a lost network
//! store). Compiled only with the `test-util` feature.
//!
//! ```
//! use mcp_oidc::store::testing::{Op, TestStore};
//! use mcp_oidc::store::{Namespace, Store};
//!
//! # tokio_test_block_on(async {
//! let store = TestStore::default();
//! store.fail_next(Op::Put(Namespace::Grants), 1);
//! assert!(store.put(Namespace::Grants, "g", b"{}", None).await.is_err());
//! assert!(store.put(Namespace::Grants, "g", b"{}", None).await.is_ok());
//! assert_eq!(store.calls(Op::Put(Namespace::Grants)), 2);
//! # });
//! # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{MemoryStore, Namespace, Store, StoreError, StoreFuture};

/// One kind of store operation, with the namespace it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Store::put`].
    Put(Namespace),
    /// [`Store::put_if_absent`].
    PutIfAbsent(Namespace),
    /// [`Store::replace`].
    Replace(Namespace),
    /// [`Store::get`].
    Get(Namespace),
    /// [`Store::take`].
    Take(Namespace),
    /// [`Store::delete`].
    Delete(Namespace),
    /// [`Store::purge_expired`].
    PurgeExpired,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put(_) => "put",
            Op::PutIfAbsent(_) => "put_if_absent",
            Op::Replace(_) => "replace",
            Op::Get(_) => "get",
            Op::Take(_) => "take",
            Op::Delete(_) => "delete",
            Op::PurgeExpired => "purge_expired",
        }
    }
}

type Rule = Arc<dyn Fn(Op) -> bool + Send + Sync>;

/// An operation held back by [`TestStore::pause_next`].
struct Held {
    op: Op,
    reached: tokio::sync::oneshot::Sender<()>,
    go: tokio::sync::oneshot::Receiver<()>,
}

/// The handle of a paused operation: wait until the code under test reaches it, do
/// something else meanwhile, then let it go on.
pub struct Pause {
    reached: tokio::sync::oneshot::Receiver<()>,
    go: tokio::sync::oneshot::Sender<()>,
}

impl Pause {
    /// Waits until the operation is called (and held). Panics if the store is dropped first.
    pub async fn reached(&mut self) {
        (&mut self.reached)
            .await
            .expect("the paused operation was never called");
    }

    /// Lets the operation run.
    pub fn release(self) {
        let _ = self.go.send(());
    }
}

/// A [`MemoryStore`] that counts its operations and fails those a rule picks, with a
/// `disk I/O error` [`StoreError`].
#[derive(Default)]
pub struct TestStore {
    inner: MemoryStore,
    calls: Mutex<HashMap<Op, u64>>,
    purged: Mutex<u64>,
    rule: Mutex<Option<Rule>>,
    held: Mutex<Option<Held>>,
}

impl TestStore {
    /// The store underneath, to change records behind the back of the code under test
    /// (neither counted nor failed).
    pub fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    /// How many times `op` was called (failed calls included).
    pub fn calls(&self, op: Op) -> u64 {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.get(&op).copied().unwrap_or(0)
    }

    /// How many expired records [`Store::purge_expired`] deleted, all calls together.
    pub fn purged(&self) -> u64 {
        *self.purged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, every operation for which `rule` says `true` fails.
    pub fn fail_when(&self, rule: impl Fn(Op) -> bool + Send + Sync + 'static) {
        *self.rule.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(rule));
    }

    /// Every operation fails from now on (until [`heal`](Self::heal)).
    pub fn fail_all(&self) {
        self.fail_when(|_| true);
    }

    /// The next `times` calls of `op` fail; the others succeed.
    pub fn fail_next(&self, op: Op, times: usize) {
        let left = AtomicUsize::new(times);
        self.fail_when(move |o| {
            o == op
                && left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
        });
    }

    /// The next call of `op` waits, before it touches the store, until the returned
    /// [`Pause`] is released: to put another writer's operation in between two steps of
    /// the code under test.
    pub fn pause_next(&self, op: Op) -> Pause {
        let (reached_tx, reached) = tokio::sync::oneshot::channel();
        let (go, go_rx) = tokio::sync::oneshot::channel();
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Held {
            op,
            reached: reached_tx,
            go: go_rx,
        });
        Pause { reached, go }
    }

    /// No operation fails any more.
    pub fn heal(&self) {
        *self.rule.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Counts `op`, holds it if it is paused, then fails it if the rule says so, else runs
    /// `f`.
    fn run<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        f: impl FnOnce() -> StoreFuture<'a, T> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        *self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(op)
            .or_default() += 1;
        let held = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.as_ref().is_some_and(|h| h.op == op) {
                held.take()
            } else {
                None
            }
        };
        match held {
            Some(h) => Box::pin(async move {
                let _ = h.reached.send(());
                let _ = h.go.await;
                self.fail_or(op, f).await
            }),
            None => self.fail_or(op, f),
        }
    }

    fn fail_or<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        f: impl FnOnce() -> StoreFuture<'a, T> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let rule = self
            .rule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if rule.is_some_and(|fails| fails(op)) {
            return Box::pin(async move { Err(StoreError::new(op.name(), "disk I/O error")) });
        }
        f()
    }
}

impl Store for TestStore {
    fn put<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, ()> {
        self.run(Op::Put(ns), move || self.inner.put(ns, key, value, ttl))
    }

    fn put_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        self.run(Op::PutIfAbsent(ns), move || {
            self.inner.put_if_absent(ns, key, value, ttl)
        })
    }

    fn replace<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        self.run(Op::Replace(ns), move || {
            self.inner.replace(ns, key, expected, value, ttl)
        })
    }

    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.run(Op::Get(ns), move || self.inner.get(ns, key))
    }

    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.run(Op::Take(ns), move || self.inner.take(ns, key))
    }

    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, ()> {
        self.run(Op::Delete(ns), move || self.inner.delete(ns, key))
    }

    fn purge_expired(&self) -> StoreFuture<'_, u64> {
        self.run(Op::PurgeExpired, move || {
            Box::pin(async move {
                let n = self.inner.purge_expired().await?;
                *self.purged.lock().unwrap_or_else(PoisonError::into_inner) += n;
                Ok(n)
            })
        })
    }
}
