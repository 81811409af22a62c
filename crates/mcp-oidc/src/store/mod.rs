//! Durable state of the OAuth proxy behind one trait.
//!
//! [`Store`] is a namespaced key-value store with expiry and an atomic single-use read
//! ([`Store::take`]), which is all the proxy needs: registered clients, pending
//! authorizations, codes, refresh-token families, encrypted upstream tokens, consents. The
//! operations map one to one onto a networked store (Redis: `SET PX`, `SET NX PX`, `GET`,
//! `GETDEL`, `DEL`, and a compare-and-set script for [`Store::replace`]), so several
//! instances behind a load balancer can share one.
//!
//! - [`MemoryStore`]: in process, for tests;
//! - [`SqliteStore`]: an embedded SQLite file, the default, so a restart loses nothing.
//!
//! With the `test-util` feature, `testing::TestStore` counts operations and fails chosen
//! ones, for testing code against a broken store.

mod memory;
mod sqlite;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// What a store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The kinds of records, each its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Namespace {
    /// Registered clients, by client id.
    Clients,
    /// Authorizations waiting for consent or for the upstream callback.
    Transactions,
    /// Our authorization codes, by hash.
    Codes,
    /// Live refresh tokens, by hash.
    RefreshTokens,
    /// Refresh tokens already exchanged, by hash (reuse detection).
    UsedRefreshTokens,
    /// Refresh-token families (grants), by id: revocation state and upstream tokens.
    Grants,
    /// Remembered consents, by user and client.
    Consents,
    /// Signing keys and other server secrets.
    Keys,
    /// Codes already exchanged, by hash (replay detection).
    UsedCodes,
    /// MCP sessions, by id: their owner and the client's `initialize` parameters.
    Sessions,
}

impl Namespace {
    /// A stable name, used as a key prefix or table column.
    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Clients => "clients",
            Namespace::Transactions => "transactions",
            Namespace::Codes => "codes",
            Namespace::RefreshTokens => "refresh_tokens",
            Namespace::UsedRefreshTokens => "used_refresh_tokens",
            Namespace::Grants => "grants",
            Namespace::Consents => "consents",
            Namespace::Keys => "keys",
            Namespace::UsedCodes => "used_codes",
            Namespace::Sessions => "sessions",
        }
    }
}

/// A storage failure. Its text names the operation and the cause, never a stored value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage error during {operation}: {message}")]
pub struct StoreError {
    /// What was being done.
    pub operation: &'static str,
    /// Why it failed.
    pub message: String,
}

impl StoreError {
    pub(crate) fn new(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation,
            message: message.into(),
        }
    }
}

/// A namespaced key-value store with expiry.
pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces a value, expiring after `ttl` (never, if `None`).
    fn put<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, ()>;

    /// Inserts a value unless an unexpired one exists. Returns whether it inserted.
    fn put_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool>;

    /// Replaces a value only if the unexpired value stored is exactly `expected`; returns
    /// whether it did. Records that several writers may update at once (a grant, refreshed
    /// through one instance while another revokes it) are written this way, so that no
    /// update is lost: the writer that loses reads the record again.
    fn replace<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool>;

    /// Reads an unexpired value.
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Reads and deletes an unexpired value in one step: of two concurrent takes, exactly
    /// one gets the value. Single-use records (codes, refresh tokens) rely on this.
    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Deletes a value.
    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, ()>;

    /// Drops expired values; returns how many.
    fn purge_expired(&self) -> StoreFuture<'_, u64>;
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn expiry_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)))
}
