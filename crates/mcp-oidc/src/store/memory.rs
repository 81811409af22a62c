//! An in-process store, for tests and single-process development.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Namespace, Store, StoreError, StoreFuture, expiry_ms, now_ms};

type Entry = (Vec<u8>, Option<u64>);

/// Keeps everything in memory: a restart forgets it all.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<(Namespace, String), Entry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut HashMap<(Namespace, String), Entry>) -> T,
    ) -> Result<T, StoreError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| StoreError::new(operation, "lock poisoned"))?;
        Ok(f(&mut map))
    }
}

fn live(entry: &Entry) -> bool {
    entry.1.is_none_or(|exp| exp > now_ms())
}

impl Store for MemoryStore {
    fn put<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, ()> {
        let r = self.with("put", |m| {
            m.insert((ns, key.to_owned()), (value.to_vec(), expiry_ms(ttl)));
        });
        Box::pin(async move { r })
    }

    fn put_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        let r = self.with("put_if_absent", |m| {
            let k = (ns, key.to_owned());
            if m.get(&k).is_some_and(live) {
                return false;
            }
            m.insert(k, (value.to_vec(), expiry_ms(ttl)));
            true
        });
        Box::pin(async move { r })
    }

    fn replace<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        let r = self.with("replace", |m| match m.get_mut(&(ns, key.to_owned())) {
            Some(entry) if live(entry) && entry.0 == expected => {
                *entry = (value.to_vec(), expiry_ms(ttl));
                true
            }
            _ => false,
        });
        Box::pin(async move { r })
    }

    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let r = self.with("get", |m| {
            m.get(&(ns, key.to_owned()))
                .filter(|e| live(e))
                .map(|e| e.0.clone())
        });
        Box::pin(async move { r })
    }

    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let r = self.with("take", |m| {
            m.remove(&(ns, key.to_owned())).filter(live).map(|e| e.0)
        });
        Box::pin(async move { r })
    }

    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, ()> {
        let r = self.with("delete", |m| {
            m.remove(&(ns, key.to_owned()));
        });
        Box::pin(async move { r })
    }

    fn purge_expired(&self) -> StoreFuture<'_, u64> {
        let r = self.with("purge_expired", |m| {
            let before = m.len();
            m.retain(|_, e| live(e));
            (before - m.len()) as u64
        });
        Box::pin(async move { r })
    }
}
