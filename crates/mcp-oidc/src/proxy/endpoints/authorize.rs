//! Authorization: `/authorize` → consent → the upstream provider → `/auth/callback` → back
//! to the client with a code.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, RawForm, RawQuery, State};
use axum::response::Response;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use crate::proxy::crypto::{hash, random_token, same};
use crate::proxy::pages::{ConsentView, consent_page, csp_source, error_page};
use crate::proxy::records::{self, CodeRecord, Grant, Transaction, UpstreamTokens};
use crate::proxy::{Inner, claims_from_upstream, seal_upstream};
use crate::store::{Namespace, StoreError};
use crate::token::unix_now;
use crate::types::PkceCodeVerifier;

use super::clients::find_client;
use super::errors::{parse_form, redirect, redirect_error, redirect_with, storage_page};
use super::{CODE_TTL, CONSENT_COOKIE, MAX_STATE_BYTES, REMEMBER_COOKIE, Shared, TRANSACTION_TTL};

pub(super) fn normalise_resource(r: &str) -> Option<String> {
    let url = url::Url::parse(r).ok()?;
    if url.fragment().is_some() {
        return None;
    }
    Some(url.as_str().trim_end_matches('/').to_owned())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure(inner: &Inner) -> bool {
    inner.config.issuer.starts_with("https://")
}

fn cookie_name(inner: &Inner, base: &str) -> String {
    // `__Host-` cookies must be Secure, so they exist only on https deployments.
    if secure(inner) {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

fn set_cookie(inner: &Inner, response: &mut Response, base: &str, value: &str, max_age: Duration) {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        cookie_name(inner, base),
        max_age.as_secs()
    );
    if secure(inner) {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        response.headers_mut().append(SET_COOKIE, v);
    }
}

/// The name of the consent cookie of one sign-in, told apart by a digest of `key` (the
/// transaction id on the consent page, the upstream state at the callback): a person
/// signing in from two clients at once in one browser keeps both flows' cookies, where one
/// shared name let the second flow's cookie overwrite the first's.
fn flow_cookie(key: &str) -> String {
    // Not the digest the store files the transaction under: the name says nothing of it.
    format!("{CONSENT_COOKIE}_{}", &hash(&format!("cookie {key}"))[..16])
}

/// The value of one of our signed cookies, if the request carries it and its signature holds.
fn signed_cookie<'a>(inner: &Inner, headers: &'a HeaderMap, base: &str) -> Option<&'a str> {
    cookie(headers, &cookie_name(inner, base)).and_then(|c| inner.secrets.verify_cookie(c))
}

/// Takes (reads and deletes) a pending authorization; a storage failure becomes the page
/// the person sees.
async fn take_transaction(inner: &Inner, id: &str) -> Result<Option<Transaction>, Response> {
    records::take(inner.store.as_ref(), Namespace::Transactions, id)
        .await
        .map_err(|e| storage_page(&e))
}

pub(super) async fn authorize(
    State(inner): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // RFC 6749 §3.1: no parameter twice. Taking either copy would let a second
    // `redirect_uri` or `client_id` slip past what the first was checked as; no
    // redirect can be trusted yet, so the answer is a page.
    let Ok(q) = parse_form(query.as_deref().unwrap_or("").as_bytes()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "A parameter of the authorization request is repeated (or the request is too large).",
        );
    };
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "client_id is missing.",
        );
    };
    let client = match find_client(&inner, client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Unknown client",
                "This client is not registered with this server.",
            );
        }
        Err(e) => return e.page(),
    };
    let (redirect_uri, given) = match get("redirect_uri") {
        Some(r) if crate::proxy::RedirectPolicy::matches(&client.redirect_uris, r) => {
            (r.to_owned(), true)
        }
        Some(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid redirect URI",
                "The redirect URI is not registered for this client; it will not be followed.",
            );
        }
        None if client.redirect_uris.len() == 1 => (client.redirect_uris[0].clone(), false),
        None => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "redirect_uri is missing.",
            );
        }
    };
    let state = get("state");
    let fail = |code: &str, d: &str| redirect_error(&inner, &redirect_uri, state, code, d);
    // The state is kept with the pending authorization, before anyone signed in: unbounded,
    // it would let anonymous requests fill the store.
    if state.is_some_and(|s| s.len() > MAX_STATE_BYTES) {
        return fail(
            "invalid_request",
            &format!("state is longer than {MAX_STATE_BYTES} bytes"),
        );
    }
    let nonce = get("nonce");
    if nonce.is_some_and(|n| n.len() > MAX_STATE_BYTES) {
        return fail(
            "invalid_request",
            &format!("nonce is longer than {MAX_STATE_BYTES} bytes"),
        );
    }
    if get("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = get("code_challenge") else {
        return fail(
            "invalid_request",
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        );
    };
    if get("code_challenge_method") != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail("invalid_request", "code_challenge is not an S256 challenge");
    }
    let resource = match get("resource") {
        None => inner.config.resource.clone(),
        Some(r) => match normalise_resource(r) {
            Some(r) if r == inner.config.resource => r,
            _ => {
                return fail(
                    "invalid_target",
                    "this server issues tokens only for its own resource",
                );
            }
        },
    };
    let requested: Vec<String> = get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let scopes: Vec<String> = if requested.is_empty() {
        inner.config.default_scopes.clone()
    } else {
        let mut s: Vec<String> = requested
            .into_iter()
            .filter(|x| inner.config.scopes_supported.contains(x))
            .collect();
        s.dedup();
        s
    };
    if scopes.is_empty() {
        return fail("invalid_scope", "none of the requested scopes is available");
    }
    let tx = Transaction {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_given: given,
        state: state.map(str::to_owned),
        nonce: nonce.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        scopes: scopes.clone(),
        resource: resource.clone(),
        csrf: random_token(24),
        upstream_verifier: None,
        upstream_nonce: None,
        browser_binding: None,
        remember: false,
    };
    let txn_id = random_token(24);

    // A decision the person asked us to remember for this client skips the page.
    if inner.config.remember_consent
        && let Some(sub) = signed_cookie(&inner, &headers, REMEMBER_COOKIE)
    {
        let key = format!("{sub}\u{0}{}", client.client_id);
        if let Ok(Some(granted)) =
            records::load::<Vec<String>>(inner.store.as_ref(), Namespace::Consents, &key).await
            && scopes.iter().all(|s| granted.contains(s))
        {
            return start_upstream(&inner, tx).await;
        }
    }

    if let Err(e) = records::save(
        inner.store.as_ref(),
        Namespace::Transactions,
        &txn_id,
        &tx,
        Some(TRANSACTION_TTL),
    )
    .await
    {
        return storage_page(&e);
    }
    let host = url::Url::parse(&redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| redirect_uri.clone());
    // Approving leads to the provider's login page, denying to the client's redirect URI
    // (and an approval with the person still signed in at the provider runs on through our
    // callback to that URI): the page's `form-action` must allow both.
    let form_targets: Vec<String> = [inner.upstream.authorization_endpoint().await]
        .into_iter()
        .flatten()
        .chain([redirect_uri.clone()])
        .filter_map(|u| csp_source(&u))
        .collect();
    let mut page = consent_page(&ConsentView {
        client_name: client.client_name.as_deref().unwrap_or("An unnamed client"),
        client_id: &client.client_id,
        redirect_host: &host,
        verified_by_document: client.kind == "metadata-document",
        scopes: &scopes,
        resource: &resource,
        transaction: &txn_id,
        csrf: &tx.csrf,
        action: &format!("{}/consent", inner.prefix),
        offer_remember: inner.config.remember_consent,
        form_targets: &form_targets,
    });
    // Double submit: the form's token must match this cookie and the transaction.
    set_cookie(
        &inner,
        &mut page,
        &flow_cookie(&txn_id),
        &inner.secrets.sign_cookie(&tx.csrf),
        TRANSACTION_TTL,
    );
    page
}

pub(super) async fn consent(
    State(inner): State<Shared>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let Ok(form) = parse_form(&body) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The consent form is malformed.",
        );
    };
    let (Some(txn_id), Some(csrf)) = (form.get("transaction"), form.get("csrf_token")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The consent form is incomplete.",
        );
    };
    let cookie_ok =
        signed_cookie(&inner, &headers, &flow_cookie(txn_id)).is_some_and(|v| same(v, csrf));
    let tx = match take_transaction(&inner, txn_id).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let Some(mut tx) = tx else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Expired",
            "This sign-in has expired or was already used. Start again from your MCP client.",
        );
    };
    if !cookie_ok || !same(&tx.csrf, csrf) {
        tracing::warn!(client_id = %tx.client_id, "consent refused: CSRF token mismatch");
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "The consent could not be verified (CSRF check failed). Start again from your MCP client.",
        );
    }
    if form.get("decision").map(String::as_str) != Some("approve") {
        tracing::info!(client_id = %tx.client_id, "consent denied");
        return redirect_error(
            &inner,
            &tx.redirect_uri,
            tx.state.as_deref(),
            "access_denied",
            "the user denied the request",
        );
    }
    tx.remember = inner.config.remember_consent && form.contains_key("remember");
    start_upstream(&inner, tx).await
}

/// Sends the browser to the upstream provider, with our own PKCE pair and a state that is
/// single-use, expires in 10 minutes, and is bound to this browser by a signed cookie.
async fn start_upstream(inner: &Inner, mut tx: Transaction) -> Response {
    let verifier = PkceCodeVerifier::new_random();
    let nonce = random_token(24);
    let upstream_state = random_token(32);
    let binding = random_token(24);
    tx.upstream_verifier = Some(verifier.secret().to_owned());
    tx.upstream_nonce = Some(nonce.clone());
    tx.browser_binding = Some(binding.clone());
    if let Err(e) = records::save(
        inner.store.as_ref(),
        Namespace::Transactions,
        &hash(&upstream_state),
        &tx,
        Some(TRANSACTION_TTL),
    )
    .await
    {
        return storage_page(&e);
    }
    let callback = format!("{}/auth/callback", inner.config.issuer);
    match inner
        .upstream
        .authorize_url(
            &callback,
            &upstream_state,
            verifier.challenge_s256().as_str(),
            &nonce,
        )
        .await
    {
        Ok(url) => {
            let mut response = redirect(&url);
            set_cookie(
                inner,
                &mut response,
                &flow_cookie(&upstream_state),
                &inner.secrets.sign_cookie(&binding),
                TRANSACTION_TTL,
            );
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the upstream sign-in");
            redirect_error(
                inner,
                &tx.redirect_uri,
                tx.state.as_deref(),
                "temporarily_unavailable",
                "the identity provider is unavailable",
            )
        }
    }
}

pub(super) async fn callback(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(state) = q.get("state") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid callback",
            "The identity provider's answer has no state.",
        );
    };
    let tx = match take_transaction(&inner, &hash(state)).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let Some(tx) = tx.filter(|t| t.upstream_verifier.is_some()) else {
        tracing::warn!("callback with an unknown, expired or reused state");
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid callback",
            "This sign-in is unknown, expired or was already completed. Start again from your MCP client.",
        );
    };
    let bound = signed_cookie(&inner, &headers, &flow_cookie(state))
        .zip(tx.browser_binding.as_deref())
        .is_some_and(|(a, b)| same(a, b));
    if !bound {
        tracing::warn!(client_id = %tx.client_id, "callback from a browser that did not give consent");
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This sign-in was started in another browser. Start again from your MCP client.",
        );
    }
    let client_state = tx.state.as_deref();
    // Every failure from here on goes back to the client, with its state.
    let fail =
        |code: &str, d: &str| redirect_error(&inner, &tx.redirect_uri, client_state, code, d);
    // RFC 9207: a response carrying another issuer's name is a mix-up attack. Compared as
    // plain strings (§2.4), exactly as the provider's metadata names itself.
    if let Some(iss) = q.get("iss") {
        match inner.upstream.issuer().await {
            Ok(expected) if *iss == expected => {}
            _ => {
                tracing::warn!(client_id = %tx.client_id, "callback iss does not name the upstream provider (mix-up)");
                return fail(
                    "access_denied",
                    "the identity provider's response failed the issuer check",
                );
            }
        }
    } else if inner.upstream.sends_iss().await {
        return fail(
            "access_denied",
            "the identity provider's response lacks its issuer",
        );
    }
    if let Some(err) = q.get("error") {
        let code = match err.as_str() {
            "access_denied"
            | "temporarily_unavailable"
            | "server_error"
            | "login_required"
            | "consent_required"
            | "interaction_required" => err.as_str(),
            _ => "access_denied",
        };
        return fail(
            code,
            "the sign-in at the identity provider did not complete",
        );
    }
    let Some(code) = q.get("code") else {
        return fail("server_error", "the identity provider returned no code");
    };
    let callback_uri = format!("{}/auth/callback", inner.config.issuer);
    let verifier = tx.upstream_verifier.clone().unwrap_or_default();
    let tokens = match inner
        .upstream
        .exchange_code(code, &callback_uri, &verifier)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "upstream code exchange failed");
            return fail(
                "server_error",
                "the identity provider did not complete the sign-in",
            );
        }
    };
    let mut claims = Map::new();
    if let Some(id_token) = &tokens.id_token {
        match inner
            .upstream
            .verify_id_token(id_token, tx.upstream_nonce.as_deref())
            .await
        {
            Ok(c) => claims = c,
            Err(e) => {
                tracing::warn!(error = %e, "upstream ID token refused");
                return fail(
                    "server_error",
                    "the identity provider's ID token is invalid",
                );
            }
        }
    }
    if tokens.id_token.is_none() || inner.upstream.config.use_userinfo {
        match inner.upstream.userinfo(&tokens.access_token).await {
            Ok(info) => {
                if let (Some(a), Some(b)) = (claims.get("sub"), info.get("sub"))
                    && a != b
                {
                    return fail("server_error", "the identity provider's answers disagree");
                }
                for (k, v) in info {
                    claims.entry(k).or_insert(v);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream userinfo failed");
                return fail(
                    "server_error",
                    "the identity provider did not say who signed in",
                );
            }
        }
    }
    if !claims.contains_key("sub")
        && let Some(id) = inner
            .upstream
            .config
            .subject_claim
            .as_deref()
            .and_then(|k| claims.get(k))
    {
        // A plain OAuth provider's user id (a number at GitHub) becomes the subject.
        let sub = match id {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(sub) = sub {
            claims.insert("sub".into(), Value::String(sub));
        }
    }
    let Some(subject) = claims.get("sub").and_then(Value::as_str).map(str::to_owned) else {
        return fail(
            "server_error",
            "the identity provider did not say who signed in",
        );
    };
    let grant_id = random_token(18);
    let upstream = UpstreamTokens {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        id_token: tokens.id_token,
        expires_at: tokens.expires_in.map(|e| unix_now() + e),
    };
    let mut kept = claims_from_upstream(&claims);
    if let Ok(iss) = inner.upstream.issuer().await {
        kept.insert("upstream_iss".into(), json!(iss));
    }
    let grant = Grant {
        grant_id: grant_id.clone(),
        client_id: tx.client_id.clone(),
        subject: subject.clone(),
        scopes: tx.scopes.clone(),
        resource: tx.resource.clone(),
        claims: kept,
        upstream_sealed: seal_upstream(&inner.secrets, &grant_id, &upstream),
        revoked: false,
        created_at: unix_now(),
    };
    let our_code = random_token(32);
    let code_record = CodeRecord {
        grant_id: grant_id.clone(),
        client_id: tx.client_id.clone(),
        redirect_uri: tx.redirect_uri.clone(),
        redirect_uri_given: tx.redirect_uri_given,
        code_challenge: tx.code_challenge.clone(),
        resource: tx.resource.clone(),
        scopes: tx.scopes.clone(),
        nonce: tx.nonce.clone(),
    };
    let store = inner.store.as_ref();
    let saved = async {
        records::save(
            store,
            Namespace::Grants,
            &grant_id,
            &grant,
            Some(inner.config.refresh_token_ttl),
        )
        .await?;
        records::save(
            store,
            Namespace::Codes,
            &hash(&our_code),
            &code_record,
            Some(CODE_TTL),
        )
        .await?;
        if tx.remember {
            let key = format!("{subject}\u{0}{}", tx.client_id);
            records::save(
                store,
                Namespace::Consents,
                &key,
                &tx.scopes,
                Some(inner.config.consent_ttl),
            )
            .await?;
        }
        Ok::<(), StoreError>(())
    };
    if let Err(e) = saved.await {
        tracing::error!(error = %e, "proxy storage failure");
        return fail("temporarily_unavailable", "storage is unavailable");
    }
    tracing::info!(client_id = %tx.client_id, subject = %subject, "authorization granted");
    let mut params = vec![("code", our_code.as_str())];
    if let Some(s) = client_state {
        params.push(("state", s));
    }
    params.push(("iss", inner.config.issuer.as_str()));
    let mut response = redirect_with(&tx.redirect_uri, &params);
    if tx.remember {
        set_cookie(
            &inner,
            &mut response,
            REMEMBER_COOKIE,
            &inner.secrets.sign_cookie(&subject),
            inner.config.consent_ttl,
        );
    }
    response
}
