//! Tokens: the token endpoint (authorization code with PKCE, refresh rotation with reuse
//! detection) and revocation (RFC 7009).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{RawForm, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::{InvalidToken, Unavailable, VerifyError};
use crate::proxy::crypto::{hash, random_token, same};
use crate::proxy::records::{
    self, ClientRecord, CodeRecord, Grant, RefreshRecord, UpstreamTokens, UsedRefresh,
};
use crate::proxy::{Inner, seal_upstream};
use crate::store::{Namespace, StoreError, now_ms};
use crate::token::{TokenVerifier, unix_now};
use crate::types::PkceCodeVerifier;

use super::authorize::normalise_resource;
use super::clients::authenticate_client;
use super::errors::{OAuthError, no_store_json, parse_form};
use super::{CODE_TTL, Shared};

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: String,
    iat: u64,
    exp: u64,
    jti: String,
    sid: &'a str,
    #[serde(flatten)]
    upstream: &'a Map<String, Value>,
}

/// The claims of an OpenID Connect ID token (Core §2): who signed in, for which client.
#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    iat: u64,
    exp: u64,
    auth_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(flatten)]
    profile: Map<String, Value>,
}

/// The identity claims the granted scopes release (OIDC Core §5.4): `email` the address,
/// `profile` the name and picture.
fn released_claims(claims: &Map<String, Value>, scopes: &[String]) -> Map<String, Value> {
    let has = |s: &str| scopes.iter().any(|g| g == s);
    claims
        .iter()
        .filter(|(k, _)| match k.as_str() {
            "email" | "email_verified" => has("email"),
            _ => has("profile"),
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Answers a token request: an access token for the resource, a new refresh token, and,
/// when `openid` was granted, an ID token for the client (with the authorization request's
/// `nonce`, which only a code exchange carries).
async fn issue_tokens(
    inner: &Inner,
    grant: &Grant,
    scopes: &[String],
    nonce: Option<&str>,
) -> Result<Response, OAuthError> {
    let now = unix_now();
    let ttl = inner.config.access_token_ttl.as_secs();
    let claims = AccessClaims {
        iss: &inner.config.issuer,
        sub: &grant.subject,
        aud: &grant.resource,
        client_id: &grant.client_id,
        scope: scopes.join(" "),
        iat: now,
        exp: now + ttl,
        jti: random_token(16),
        sid: &grant.grant_id,
        upstream: &grant.claims,
    };
    let access_token = inner.signing.sign(&claims).ok_or_else(|| {
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot sign the token",
        )
    })?;
    let refresh_token = random_token(32);
    let record = RefreshRecord {
        grant_id: grant.grant_id.clone(),
        client_id: grant.client_id.clone(),
        scopes: scopes.to_vec(),
    };
    records::save(
        inner.store.as_ref(),
        Namespace::RefreshTokens,
        &hash(&refresh_token),
        &record,
        Some(inner.config.refresh_token_ttl),
    )
    .await
    .map_err(OAuthError::store)?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh_token,
        "scope": scopes.join(" "),
    });
    if scopes.iter().any(|s| s == "openid") {
        let id_claims = IdClaims {
            iss: &inner.config.issuer,
            sub: &grant.subject,
            aud: &grant.client_id,
            azp: &grant.client_id,
            iat: now,
            exp: now + ttl,
            auth_time: grant.created_at,
            nonce,
            profile: released_claims(&grant.claims, scopes),
        };
        let id_token = inner.signing.sign_id_token(&id_claims).ok_or_else(|| {
            OAuthError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "cannot sign the ID token",
            )
        })?;
        body["id_token"] = Value::String(id_token);
    }
    Ok(no_store_json(StatusCode::OK, &body))
}

pub(super) async fn token(
    State(inner): State<Shared>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let result = async {
        let form = parse_form(&body)?;
        let client = authenticate_client(&inner, &headers, &form).await?;
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => code_grant(&inner, &client, &form).await,
            Some("refresh_token") => refresh_grant(&inner, &client, &form).await,
            Some(_) => Err(OAuthError::bad(
                "unsupported_grant_type",
                "only authorization_code and refresh_token are supported",
            )),
            None => Err(OAuthError::bad("invalid_request", "grant_type is required")),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(in crate::proxy) async fn revoke_grant(
    inner: &Inner,
    grant_id: &str,
) -> Result<(), StoreError> {
    let store = inner.store.as_ref();
    let lock = inner.grant_locks.of(grant_id);
    let _writing = lock.record.lock().await;
    records::update(
        store,
        Namespace::Grants,
        grant_id,
        Some(inner.config.refresh_token_ttl),
        |grant: &mut Grant| {
            grant.revoked = true;
            grant.upstream_sealed = None;
            Ok::<_, StoreError>(())
        },
    )
    .await?;
    inner
        .revocations
        .fetch_add(1, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// A code presented wrongly is burnt, and so is its grant: it may be in an attacker's hands.
async fn refuse(inner: &Inner, grant_id: &str, why: &str) -> Result<Response, OAuthError> {
    let _ = revoke_grant(inner, grant_id).await;
    Err(OAuthError::grant(why.to_owned()))
}

async fn code_grant(
    inner: &Inner,
    client: &ClientRecord,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::bad("invalid_request", "code is required"))?;
    let key = hash(code);
    let store = inner.store.as_ref();
    // A wrong resource from the code's own client is a mistake, not an attack: it is
    // refused before the code is spent, so that a corrected request can still use it.
    if let Some(r) = form.get("resource")
        && let Some(record) = records::load::<CodeRecord>(store, Namespace::Codes, &key)
            .await
            .map_err(OAuthError::store)?
        && record.client_id == client.client_id
        && normalise_resource(r).as_deref() != Some(record.resource.as_str())
    {
        return Err(OAuthError::bad(
            "invalid_target",
            "the resource does not match the authorization request",
        ));
    }
    let record: Option<CodeRecord> = records::take(store, Namespace::Codes, &key)
        .await
        .map_err(OAuthError::store)?;
    let Some(record) = record else {
        // A code seen before: replay. Revoke what its first use issued (RFC 6749 §4.1.2).
        if let Some(grant_id) = records::load::<String>(store, Namespace::UsedCodes, &key)
            .await
            .map_err(OAuthError::store)?
        {
            tracing::warn!(client_id = %client.client_id, "authorization code replayed; revoking its grant");
            revoke_grant(inner, &grant_id)
                .await
                .map_err(OAuthError::store)?;
        }
        return Err(OAuthError::grant(
            "the code is invalid, expired or already used",
        ));
    };
    if let Err(e) = records::save(
        store,
        Namespace::UsedCodes,
        &key,
        &record.grant_id,
        Some(Duration::from_secs(24 * 3600)),
    )
    .await
    {
        restore_code(inner, &key, &record).await;
        return Err(OAuthError::store(e));
    }
    if record.client_id != client.client_id {
        return refuse(
            inner,
            &record.grant_id,
            "the code was issued to another client",
        )
        .await;
    }
    match form.get("redirect_uri") {
        Some(r) if r != &record.redirect_uri => {
            return refuse(
                inner,
                &record.grant_id,
                "redirect_uri does not match the authorization request",
            )
            .await;
        }
        None if record.redirect_uri_given => {
            return refuse(inner, &record.grant_id, "redirect_uri is required").await;
        }
        _ => {}
    }
    let Some(verifier) = form.get("code_verifier") else {
        return refuse(inner, &record.grant_id, "code_verifier is required (PKCE)").await;
    };
    let matches = PkceCodeVerifier::parse(verifier)
        .is_some_and(|v| same(v.challenge_s256().as_str(), &record.code_challenge));
    if !matches {
        return refuse(
            inner,
            &record.grant_id,
            "the PKCE code_verifier does not match",
        )
        .await;
    }
    let issued = async {
        let grant: Grant = records::load(store, Namespace::Grants, &record.grant_id)
            .await
            .map_err(OAuthError::store)?
            .filter(|g: &Grant| !g.revoked)
            .ok_or_else(|| OAuthError::grant("the authorization was revoked"))?;
        let response = issue_tokens(inner, &grant, &record.scopes, record.nonce.as_deref()).await?;
        tracing::info!(client_id = %client.client_id, subject = %grant.subject, "tokens issued");
        Ok(response)
    }
    .await;
    if issued.as_ref().is_err_and(OAuthError::is_transient) {
        restore_code(inner, &key, &record).await;
    }
    issued
}

/// Puts back a code spent by a request that then failed on our side, so that the client's
/// retry is not taken for a replay.
async fn restore_code(inner: &Inner, key: &str, record: &CodeRecord) {
    let store = inner.store.as_ref();
    let restored = async {
        records::save(store, Namespace::Codes, key, record, Some(CODE_TTL)).await?;
        store.delete(Namespace::UsedCodes, key).await
    };
    if let Err(e) = restored.await {
        tracing::error!(error = %e, "cannot restore an authorization code after a failure");
    }
}

async fn refresh_grant(
    inner: &Inner,
    client: &ClientRecord,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::bad("invalid_request", "refresh_token is required"))?;
    let key = hash(token);
    let store = inner.store.as_ref();
    // Read, not taken yet: the token is spent only once nothing but a fault can fail.
    let live = records::load::<RefreshRecord>(store, Namespace::RefreshTokens, &key)
        .await
        .map_err(OAuthError::store)?;
    let (grant_id, record_client, granted) = match &live {
        Some(r) => (r.grant_id.clone(), r.client_id.clone(), r.scopes.clone()),
        None => {
            let used = reused(inner, client, &key).await?;
            (used.grant_id, used.client_id, used.scopes)
        }
    };
    if record_client != client.client_id {
        revoke_grant(inner, &grant_id)
            .await
            .map_err(OAuthError::store)?;
        return Err(OAuthError::grant(
            "the refresh token was issued to another client",
        ));
    }
    let grant: Grant = records::load(store, Namespace::Grants, &grant_id)
        .await
        .map_err(OAuthError::store)?
        .filter(|g: &Grant| !g.revoked)
        .ok_or_else(|| OAuthError::grant("this sign-in was revoked or has expired"))?;
    if let Some(r) = form.get("resource")
        && normalise_resource(r).as_deref() != Some(grant.resource.as_str())
    {
        return Err(OAuthError::bad(
            "invalid_target",
            "the resource does not match the grant",
        ));
    }
    let scopes = match form.get("scope") {
        Some(s) => {
            let asked: Vec<String> = s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect();
            if asked.iter().any(|a| !granted.contains(a)) {
                return Err(OAuthError::bad(
                    "invalid_scope",
                    "a refresh cannot widen the granted scopes",
                ));
            }
            asked
        }
        None => granted,
    };
    let spent = match live {
        Some(record) => spend_refresh(inner, &key, record).await?,
        None => None,
    };
    let issued = async {
        // Keep the upstream sign-in alive: refresh it now if it is about to lapse.
        refresh_upstream_if_needed(inner, &grant_id).await?;
        renew_grant(inner, &grant_id).await?;
        issue_tokens(inner, &grant, &scopes, None).await
    }
    .await;
    if let Some(record) = spent
        && issued.as_ref().is_err_and(OAuthError::is_transient)
    {
        restore_refresh(inner, &key, &record).await;
    }
    issued
}

/// Restarts the grant's lifetime: `refresh_token_ttl` is how long a sign-in lasts without
/// use, so every refresh counts from now.
pub(in crate::proxy) async fn renew_grant(inner: &Inner, grant_id: &str) -> Result<(), OAuthError> {
    let store = inner.store.as_ref();
    let lock = inner.grant_locks.of(grant_id);
    let _writing = lock.record.lock().await;
    let gone = || OAuthError::grant("this sign-in was revoked or has expired");
    records::update(
        store,
        Namespace::Grants,
        grant_id,
        Some(inner.config.refresh_token_ttl),
        |grant: &mut Grant| if grant.revoked { Err(gone()) } else { Ok(()) },
    )
    .await?
    .ok_or_else(gone)
}

/// A refresh token that is no longer live: a duplicate of a refresh that just happened
/// (tolerated within the grace window, for the same client), or a reuse, which revokes
/// the whole family.
async fn reused(
    inner: &Inner,
    client: &ClientRecord,
    key: &str,
) -> Result<UsedRefresh, OAuthError> {
    let Some(used) =
        records::load::<UsedRefresh>(inner.store.as_ref(), Namespace::UsedRefreshTokens, key)
            .await
            .map_err(OAuthError::store)?
    else {
        return Err(OAuthError::grant("the refresh token is invalid or expired"));
    };
    let age = Duration::from_millis(now_ms().saturating_sub(used.used_at_ms));
    if age > inner.config.refresh_grace || used.client_id != client.client_id {
        tracing::warn!(client_id = %client.client_id, "refresh token reused; revoking the whole family");
        revoke_grant(inner, &used.grant_id)
            .await
            .map_err(OAuthError::store)?;
        return Err(OAuthError::grant(
            "the refresh token was already used; this sign-in is revoked",
        ));
    }
    // Two concurrent refreshes by one client (two tabs, a retry): the late one gets a
    // pair of its own rather than logging the user out.
    Ok(used)
}

/// Spends a live refresh token. The record of its use is written before the token is
/// taken, so that a concurrent duplicate that finds the token gone always finds that
/// record (and is tolerated) rather than nothing (and refused). Returns the record when
/// this request spent it, `None` when a concurrent one did.
async fn spend_refresh(
    inner: &Inner,
    key: &str,
    record: RefreshRecord,
) -> Result<Option<RefreshRecord>, OAuthError> {
    let store = inner.store.as_ref();
    let used = UsedRefresh {
        grant_id: record.grant_id.clone(),
        client_id: record.client_id.clone(),
        scopes: record.scopes.clone(),
        used_at_ms: now_ms(),
    };
    records::save(
        store,
        Namespace::UsedRefreshTokens,
        key,
        &used,
        Some(inner.config.refresh_token_ttl),
    )
    .await
    .map_err(OAuthError::store)?;
    match records::take::<RefreshRecord>(store, Namespace::RefreshTokens, key).await {
        Ok(taken) => Ok(taken),
        Err(e) => {
            // Whether the take happened is unknown: leave the token live rather than spent.
            restore_refresh(inner, key, &record).await;
            Err(OAuthError::store(e))
        }
    }
}

/// Puts back a refresh token spent by a request that then failed on our side (the
/// provider or the store unavailable), so that the client's retry, even after the grace
/// window, is not taken for a reuse that revokes the sign-in.
async fn restore_refresh(inner: &Inner, key: &str, record: &RefreshRecord) {
    let store = inner.store.as_ref();
    let restored = async {
        records::save(
            store,
            Namespace::RefreshTokens,
            key,
            record,
            Some(inner.config.refresh_token_ttl),
        )
        .await?;
        store.delete(Namespace::UsedRefreshTokens, key).await
    };
    if let Err(e) = restored.await {
        tracing::error!(error = %e, "cannot restore a refresh token after a failure");
    }
}

/// The grant's upstream tokens, refreshed first when they are about to lapse. `None` when
/// the grant is gone or holds no upstream tokens.
///
/// One upstream refresh per grant runs at a time in this process: a second caller waits
/// and finds the tokens the first one got, so one upstream refresh token is never sent
/// twice (providers that rotate them would take that for a theft). And since the grant can
/// be revoked while the provider answers, it is read again before the new tokens are
/// written, and a revoked grant is left revoked.
async fn refresh_upstream_if_needed(
    inner: &Inner,
    grant_id: &str,
) -> Result<Option<UpstreamTokens>, OAuthError> {
    let store = inner.store.as_ref();
    let lock = inner.grant_locks.of(grant_id);
    let _one_refresh = lock.upstream.lock().await;
    let Some(grant) = records::load::<Grant>(store, Namespace::Grants, grant_id)
        .await
        .map_err(OAuthError::store)?
    else {
        return Ok(None);
    };
    let Some(sealed) = &grant.upstream_sealed else {
        return Ok(None);
    };
    let Ok(plain) = inner.secrets.open(grant_id, sealed) else {
        return Err(OAuthError::grant(
            "the upstream sign-in cannot be read; sign in again",
        ));
    };
    let Ok(mut tokens) = serde_json::from_slice::<UpstreamTokens>(&plain) else {
        return Err(OAuthError::grant(
            "the upstream sign-in cannot be read; sign in again",
        ));
    };
    let expiring = tokens.expires_at.is_some_and(|e| e <= unix_now() + 60);
    if expiring && let Some(rt) = tokens.refresh_token.clone() {
        let fresh = match inner.upstream.refresh(&rt).await {
            Ok(fresh) => fresh,
            Err(e) => {
                // Another instance sharing the store may have just refreshed this grant
                // with the same upstream refresh token, which the provider then refused
                // here: what it got is in the store.
                if let Some(theirs) = refreshed_elsewhere(inner, grant_id, sealed).await {
                    return Ok(Some(theirs));
                }
                return Err(OAuthError::upstream(e));
            }
        };
        tokens = UpstreamTokens {
            access_token: fresh.access_token,
            refresh_token: fresh.refresh_token.or(Some(rt)),
            id_token: fresh.id_token.or(tokens.id_token),
            expires_at: fresh.expires_in.map(|e| unix_now() + e),
        };
        // Written only over the grant as it is now: a revocation that came meanwhile,
        // through this process or another sharing the store, is never undone.
        let _writing = lock.record.lock().await;
        let sealed = seal_upstream(&inner.secrets, grant_id, &tokens);
        let written = records::update(
            store,
            Namespace::Grants,
            grant_id,
            Some(inner.config.refresh_token_ttl),
            |current: &mut Grant| {
                if current.revoked {
                    return Err(OAuthError::grant("this sign-in was revoked"));
                }
                current.upstream_sealed = sealed.clone();
                Ok(())
            },
        )
        .await;
        match written {
            Ok(Some(())) => tracing::debug!(grant = %grant_id, "upstream tokens refreshed"),
            Ok(None) => {
                tracing::info!(grant = %grant_id, "sign-in expired during an upstream refresh; its new tokens are dropped");
                return Err(OAuthError::grant("this sign-in has expired"));
            }
            Err(e) => {
                if !e.is_transient() {
                    tracing::info!(grant = %grant_id, "sign-in revoked during an upstream refresh; its new tokens are dropped");
                }
                return Err(e);
            }
        }
    }
    Ok(Some(tokens))
}

/// The grant's upstream tokens if someone else replaced `ours` with tokens still fresh.
async fn refreshed_elsewhere(inner: &Inner, grant_id: &str, ours: &str) -> Option<UpstreamTokens> {
    let grant = records::load::<Grant>(inner.store.as_ref(), Namespace::Grants, grant_id)
        .await
        .ok()??;
    let sealed = grant
        .upstream_sealed
        .filter(|s| !grant.revoked && s != ours)?;
    let plain = inner.secrets.open(grant_id, &sealed).ok()?;
    let tokens = serde_json::from_slice::<UpstreamTokens>(&plain).ok()?;
    let fresh = tokens.expires_at.is_none_or(|e| e > unix_now() + 60);
    fresh.then_some(tokens)
}

pub(in crate::proxy) async fn upstream_access_token(
    inner: &Inner,
    grant_id: &str,
) -> Result<String, VerifyError> {
    match refresh_upstream_if_needed(inner, grant_id).await {
        Ok(Some(t)) => Ok(t.access_token),
        Ok(None) => Err(InvalidToken::Inactive.into()),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            Err(VerifyError::Unavailable(Unavailable {
                retry_after: Duration::from_secs(5),
                detail: e.description,
            }))
        }
        Err(_) => Err(InvalidToken::Inactive.into()),
    }
}

pub(super) async fn revoke(
    State(inner): State<Shared>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let result = async {
        let form = parse_form(&body)?;
        let client = authenticate_client(&inner, &headers, &form).await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::bad("invalid_request", "token is required"))?;
        let store = inner.store.as_ref();
        // RFC 7009 §2.1: a token issued to another client is not this client's to revoke.
        let not_yours = || {
            tracing::warn!(client_id = %client.client_id, "revocation of another client's token refused");
            OAuthError::bad(
                "unauthorized_client",
                "the token was not issued to this client",
            )
        };
        // A refresh token revokes its whole grant; so does one of our access tokens.
        if let Some(r) =
            records::load::<RefreshRecord>(store, Namespace::RefreshTokens, &hash(token))
                .await
                .map_err(OAuthError::store)?
        {
            if r.client_id != client.client_id {
                return Err(not_yours());
            }
            store
                .delete(Namespace::RefreshTokens, &hash(token))
                .await
                .map_err(OAuthError::store)?;
            revoke_grant(&inner, &r.grant_id)
                .await
                .map_err(OAuthError::store)?;
        } else if let Ok(access) = inner
            .verifier
            .verify(&crate::types::BearerToken::new(token.as_str()))
            .await
            && let Some(sid) = access.claim_str("sid")
        {
            if access
                .client_id()
                .is_none_or(|c| c.as_str() != client.client_id)
            {
                return Err(not_yours());
            }
            revoke_grant(&inner, sid).await.map_err(OAuthError::store)?;
        }
        // RFC 7009 §2.2: unknown tokens get 200 too.
        Ok::<Response, OAuthError>(no_store_json(StatusCode::OK, &json!({})))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
