//! An embedded SQLite store: the default, so that registered clients, refresh tokens and
//! consents survive a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Namespace, Store, StoreError, StoreFuture, expiry_ms, now_ms};

/// A store in one SQLite file (WAL journal, synchronous commits: an acknowledged write
/// survives `kill -9` and power loss).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::new("open", format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(&path)
            .map_err(|e| StoreError::new("open", format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| StoreError::new("open", e.to_string()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS kv (
                 ns TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB NOT NULL,
                 expires_at INTEGER,
                 PRIMARY KEY (ns, key)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;",
        )
        .map_err(|e| {
            StoreError::new("open", format!("cannot initialise {}: {e}", path.display()))
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The file holds encrypted upstream tokens and client records: owner only.
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = conn
                    .lock()
                    .map_err(|_| StoreError::new(operation, "lock poisoned"))?;
                f(&mut conn).map_err(|e| StoreError::new(operation, e.to_string()))
            })
            .await
            .map_err(|e| StoreError::new(operation, e.to_string()))?
        })
    }
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn now() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn put<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, ()> {
        let (key, value, exp) = (key.to_owned(), value.to_vec(), to_i64(expiry_ms(ttl)));
        self.run("put", move |c| {
            c.execute(
                "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                params![ns.as_str(), key, value, exp],
            )
            .map(|_| ())
        })
    }

    fn put_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        let (key, value, exp) = (key.to_owned(), value.to_vec(), to_i64(expiry_ms(ttl)));
        self.run("put_if_absent", move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND expires_at IS NOT NULL AND expires_at <= ?3",
                params![ns.as_str(), key, now()],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![ns.as_str(), key, value, exp],
            )?;
            tx.commit()?;
            Ok(inserted == 1)
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
        let (key, expected, value, exp) = (
            key.to_owned(),
            expected.to_vec(),
            value.to_vec(),
            to_i64(expiry_ms(ttl)),
        );
        self.run("replace", move |c| {
            // One statement: the comparison and the write cannot be separated by another
            // connection, in this process or another.
            c.execute(
                "UPDATE kv SET value = ?4, expires_at = ?5
                 WHERE ns = ?1 AND key = ?2 AND value = ?3 AND (expires_at IS NULL OR expires_at > ?6)",
                params![ns.as_str(), key, expected, value, exp, now()],
            )
            .map(|n| n == 1)
        })
    }

    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let key = key.to_owned();
        self.run("get", move |c| {
            c.query_row(
                "SELECT value FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                params![ns.as_str(), key, now()],
                |row| row.get::<_, Vec<u8>>(0),
            )
            .optional()
        })
    }

    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let key = key.to_owned();
        self.run("take", move |c| {
            // DELETE ... RETURNING is one statement: two concurrent takes cannot both win.
            let value = c
                .query_row(
                    "DELETE FROM kv WHERE ns = ?1 AND key = ?2 RETURNING value, expires_at",
                    params![ns.as_str(), key],
                    |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Option<i64>>(1)?)),
                )
                .optional()?;
            Ok(value
                .filter(|(_, exp)| exp.is_none_or(|e| e > now()))
                .map(|(v, _)| v))
        })
    }

    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, ()> {
        let key = key.to_owned();
        self.run("delete", move |c| {
            c.execute(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2",
                params![ns.as_str(), key],
            )
            .map(|_| ())
        })
    }

    fn purge_expired(&self) -> StoreFuture<'_, u64> {
        self.run("purge_expired", move |c| {
            c.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                params![now()],
            )
            .map(|n| n as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    async fn exercise(store: &dyn Store) {
        let ns = Namespace::Codes;
        store.put(ns, "a", b"1", None).await.unwrap();
        assert_eq!(
            store.get(ns, "a").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert!(!store.put_if_absent(ns, "a", b"2", None).await.unwrap());
        assert_eq!(
            store.take(ns, "a").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(store.take(ns, "a").await.unwrap(), None);
        store
            .put(ns, "short", b"x", Some(Duration::from_millis(30)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.get(ns, "short").await.unwrap(), None);
        assert!(store.put_if_absent(ns, "short", b"y", None).await.unwrap());
        store
            .put(Namespace::Clients, "short", b"z", None)
            .await
            .unwrap();
        assert_eq!(
            store.get(ns, "short").await.unwrap().as_deref(),
            Some(&b"y"[..]),
            "namespaces are separate"
        );
        store.delete(ns, "short").await.unwrap();
        assert_eq!(store.get(ns, "short").await.unwrap(), None);

        // replace: only over the exact unexpired value.
        store.put(ns, "g", b"v1", None).await.unwrap();
        assert!(!store.replace(ns, "g", b"v0", b"v2", None).await.unwrap());
        assert!(store.replace(ns, "g", b"v1", b"v2", None).await.unwrap());
        assert!(!store.replace(ns, "g", b"v1", b"v3", None).await.unwrap());
        assert_eq!(
            store.get(ns, "g").await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        assert!(!store.replace(ns, "absent", b"", b"x", None).await.unwrap());
        assert_eq!(
            store.get(ns, "absent").await.unwrap(),
            None,
            "replace never inserts"
        );
        store
            .put(ns, "old", b"v1", Some(Duration::from_millis(30)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!store.replace(ns, "old", b"v1", b"v2", None).await.unwrap());
    }

    #[tokio::test]
    async fn memory_and_sqlite_stores_behave_alike() {
        exercise(&MemoryStore::new()).await;
        let dir = tempfile::tempdir().unwrap();
        exercise(&SqliteStore::open(dir.path().join("s.db")).unwrap()).await;
    }

    #[tokio::test]
    async fn sqlite_values_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/mcp-oidc.db");
        SqliteStore::open(&path)
            .unwrap()
            .put(Namespace::Clients, "c1", b"client", None)
            .await
            .unwrap();
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(
            again
                .get(Namespace::Clients, "c1")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"client"[..])
        );
    }

    #[tokio::test]
    async fn concurrent_takes_give_the_value_to_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
        for round in 0..20 {
            let key = format!("k{round}");
            store.put(Namespace::Codes, &key, b"v", None).await.unwrap();
            let mut handles = Vec::new();
            for _ in 0..8 {
                let (s, k) = (store.clone(), key.clone());
                handles.push(tokio::spawn(async move {
                    s.take(Namespace::Codes, &k).await.unwrap()
                }));
            }
            let mut winners = 0;
            for h in handles {
                if h.await.unwrap().is_some() {
                    winners += 1;
                }
            }
            assert_eq!(winners, 1);
        }
    }
}
