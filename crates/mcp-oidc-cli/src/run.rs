//! Building and running the protected demo server from resolved settings.

use std::future::Future;

use std::sync::Arc;
use std::time::Duration;

use mcp_oidc::McpOidc;
use mcp_oidc::proxy::OAuthProxy;
use mcp_oidc::store::{MemoryStore, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

use crate::config::{Resolved, StoreChoice};
use crate::demo::{DemoServer, WRITE_SCOPE};

/// The router of the protected demo server (with the OAuth proxy when configured).
pub async fn demo_router(
    resolved: Resolved,
    cancel: CancellationToken,
) -> anyhow::Result<axum::Router> {
    // One store for the proxy's records and the sessions (the same choice when both exist).
    let store = match &resolved.session_store {
        Some(choice) => Some(open_store(choice)?),
        None => None,
    };
    // Also the provider's keys, so that a restart while the provider is down still verifies.
    if let Some(store) = &store {
        resolved.verifier.keep_keys_in(store.clone());
    }
    let proxy = match &resolved.proxy {
        Some(plan) => {
            let store = match &store {
                Some(store) => store.clone(),
                None => open_store(&plan.store)?,
            };
            let mut config = plan.config.clone();
            // Scopes the demo's tools require must be grantable, or step-up could never succeed.
            if !config.scopes_supported.iter().any(|s| s == WRITE_SCOPE) {
                config.scopes_supported.push(WRITE_SCOPE.to_owned());
            }
            Some(OAuthProxy::new(config, store).await?)
        }
        None => None,
    };
    let mut server = McpOidc::with_arc(resolved.resource, resolved.verifier)
        .token_cache(resolved.cache)
        .tool_policies(DemoServer::policies())
        .authorization_server_metadata(resolved.as_metadata)
        .allowed_hosts(resolved.allowed_hosts)
        .allowed_origins(resolved.allowed_origins)
        .request_timeout(resolved.request_timeout)
        .max_body_bytes(resolved.max_body_bytes)
        .session_hibernation(resolved.session_hibernation)
        .health_probes(true)
        .metrics(resolved.metrics)
        .cancellation_token(cancel);
    if resolved.stateless {
        server = server.stateless(resolved.json_response);
    }
    if let Some(store) = store {
        server = server
            .persist_sessions(store)
            .session_store_recheck(resolved.session_store_recheck);
    }
    if resolved.auth_disabled {
        server = server.without_auth_for_testing();
    }
    if let Some(proxy) = &proxy {
        server = server.with_oauth_proxy(proxy);
    }
    Ok(server.router(DemoServer::new))
}

fn open_store(choice: &StoreChoice) -> Result<Arc<dyn Store>, mcp_oidc::store::StoreError> {
    Ok(match choice {
        StoreChoice::Memory => Arc::new(MemoryStore::new()),
        StoreChoice::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
    })
}

/// Serves the demo server on `listener` until `shutdown`.
pub async fn serve_demo(
    resolved: Resolved,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let router = demo_router(resolved, cancel.clone())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::spawn(release_freed_memory(cancel.clone()));
    let result = mcp_oidc::serve(listener, router, shutdown).await;
    cancel.cancel();
    result
}

/// How often the allocator is asked how much memory it holds free.
const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// How much more must have been freed since the last release before another is worth it.
const RELEASE_THRESHOLD: u32 = 32 << 20;

/// Hands memory freed inside the process back to the system once a lot of it has been
/// freed (checked every [`RELEASE_INTERVAL`]).
///
/// When sessions end or hibernate, rmcp frees their channels and workers (about 50 KB each),
/// but glibc's allocator gives back by itself only free memory at the top of a heap, and
/// freed session memory lies below what is still in use (10,000 hibernated sessions kept
/// about 530 MB resident without this, 7 MB with it). `malloc_trim` returns every whole
/// free page wherever it is. It walks the whole heap, so it runs off the request threads
/// and only after at least [`RELEASE_THRESHOLD`] more bytes became free. Other allocators
/// return memory on their own; there this does nothing.
async fn release_freed_memory(cancel: CancellationToken) {
    let mut tick = tokio::time::interval(RELEASE_INTERVAL);
    tick.tick().await;
    let mut free_at_last_release = heap::free_bytes();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let free = heap::free_bytes();
        // Wrapping: glibc counts in a C int; only the growth since the last release matters.
        if free.wrapping_sub(free_at_last_release) < RELEASE_THRESHOLD
            || free < free_at_last_release
        {
            free_at_last_release = free_at_last_release.min(free);
            continue;
        }
        let started = std::time::Instant::now();
        let released = tokio::task::spawn_blocking(heap::release)
            .await
            .unwrap_or(false);
        free_at_last_release = free;
        tracing::debug!(
            released,
            free_mib = free >> 20,
            took_us = started.elapsed().as_micros() as u64,
            "freed memory handed back to the system"
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod heap {
    /// Bytes glibc holds free in its arenas (wrapping at 4 GiB).
    pub fn free_bytes() -> u32 {
        // SAFETY: mallinfo takes no arguments and returns a plain struct of counters.
        let info = unsafe { libc::mallinfo() };
        info.fordblks as u32
    }

    /// Returns whole free pages to the system; whether any were.
    pub fn release() -> bool {
        // SAFETY: malloc_trim takes no pointers and only walks glibc's own free lists, under
        // the allocator's locks; it is safe to call at any time from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod heap {
    pub fn free_bytes() -> u32 {
        0
    }
    pub fn release() -> bool {
        false
    }
}
