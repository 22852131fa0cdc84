//! The broker's owners, without a daemon process: a real SQLite file, the file secret
//! store and a real token endpoint on loopback (axum) that counts what it is asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mcp_authd_ipc::ErrorKind;
use mcp_authd_ipc::methods::TokenGetParams;

use super::{Broker, Recipient, new_grant_row};
use crate::config::Config;
use crate::oauth::discovery::AsMetadata;
use crate::peer::Peer;
use crate::secret::Secret;
use crate::store::{GrantRow, RegistrationRow, keys};

/// A token endpoint that answers each refresh after `delay` with `at-<n>` (n counting
/// from 1), valid for an hour.
struct TokenEndpoint {
    url: String,
    refreshes: Arc<AtomicUsize>,
}

async fn token_endpoint(delay: Duration) -> TokenEndpoint {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counted = refreshes.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                axum::Json(serde_json::json!({
                    "access_token": format!("at-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    TokenEndpoint { url, refreshes }
}

struct Fixture {
    broker: Arc<Broker>,
    grant: GrantRow,
    endpoint: TokenEndpoint,
    _dir: tempfile::TempDir,
}

/// A broker with one grant (scope `read`) of a public client at the test endpoint's
/// authorization server, its refresh token stored, no access token in memory yet.
async fn fixture(delay: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = token_endpoint(delay).await;
    let broker = Arc::new(super::for_tests(dir.path(), Config::default()).await.0);
    let issuer = endpoint.url.clone();
    let metadata: AsMetadata = serde_json::from_value(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
    }))
    .unwrap();
    broker.save_as_metadata(&metadata).await.unwrap();
    let registration = RegistrationRow {
        id: "r-test".into(),
        issuer: issuer.clone(),
        kind: "dynamic".into(),
        client_id: "client-1".into(),
        redirect_uri: None,
        token_endpoint_auth_method: "none".into(),
        has_client_secret: false,
        created_at: 0,
    };
    broker.save_registration(&registration, None).await.unwrap();
    let server = format!("{issuer}/mcp");
    let mut grant = new_grant_row("g-test".into(), &server, &server, &issuer, "r-test", "");
    grant.scopes = "read".into();
    grant.has_refresh_token = true;
    broker.db.upsert_grant(&grant).await.unwrap();
    broker
        .refresh_tokens
        .set(&keys::refresh_token(&grant.id), &Secret::new("rt-1"))
        .await
        .unwrap();
    Fixture {
        broker,
        grant,
        endpoint,
        _dir: dir,
    }
}

fn ask(server: &str) -> TokenGetParams {
    TokenGetParams {
        server: server.into(),
        ..Default::default()
    }
}

fn to<'a>(peer: &'a Arc<Peer>, server: &'a str) -> Recipient<'a> {
    Recipient {
        peer,
        asked_for: server,
    }
}

/// The hand-outs of the grant in the audit log (each flush writes its own rows): how
/// many in all, and to which pids.
async fn hand_outs(f: &Fixture) -> (u64, Vec<Option<u32>>) {
    let rows = f.broker.hand_outs(&f.grant.id, 100).await.unwrap();
    let mut pids: Vec<Option<u32>> = rows.iter().map(|h| h.peer_pid).collect();
    pids.dedup();
    (rows.iter().map(|h| h.count).sum(), pids)
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let f = fixture(Duration::from_millis(300)).await;
    let peer = Arc::new(Peer::default());
    let server = f.grant.server_url.clone();
    let calls = (0..20).map(|_| {
        let (broker, peer, server) = (f.broker.clone(), peer.clone(), server.clone());
        tokio::spawn(async move { broker.token_get(&ask(&server), to(&peer, &server)).await })
    });
    for call in futures_join(calls).await {
        let token = call.unwrap().unwrap();
        assert_eq!(token.access_token, "at-1");
    }
    assert_eq!(f.endpoint.refreshes.load(Ordering::SeqCst), 1);
}

/// Awaits every task (the daemon has no `futures` dependency for `join_all`).
async fn futures_join<T>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await);
    }
    out
}

#[tokio::test]
async fn a_hand_out_touches_the_grant_and_is_audited_once() {
    let f = fixture(Duration::ZERO).await;
    let peer = Arc::new(Peer {
        pid: Some(4242),
        ..Default::default()
    });
    let server = f.grant.server_url.clone();
    assert_eq!(
        f.broker
            .find_grant(&server, None)
            .await
            .unwrap()
            .last_used_at,
        None
    );

    f.broker
        .token_get(&ask(&server), to(&peer, &server))
        .await
        .unwrap();
    let used = f
        .broker
        .find_grant(&server, None)
        .await
        .unwrap()
        .last_used_at;
    assert!(used.is_some(), "the first hand-out writes the last use");
    assert_eq!(hand_outs(&f).await, (1, vec![Some(4242)]));

    // The memory-only answer is a hand-out too: counted once more, and only once.
    let now = crate::oauth::token::now();
    let fast = from_memory(&f.broker, &ask(&server), &peer, now);
    assert_eq!(fast.unwrap().access_token, "at-1");
    assert_eq!(hand_outs(&f).await, (2, vec![Some(4242)]));
    // A refusal hands nothing out and records nothing.
    let mut other = ask(&server);
    other.scopes = Some(vec!["write".into()]);
    assert!(from_memory(&f.broker, &other, &peer, now).is_none());
    assert_eq!(hand_outs(&f).await, (2, vec![Some(4242)]));
    assert_eq!(f.endpoint.refreshes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn memory_and_the_full_way_apply_the_same_freshness_and_scope_check() {
    let f = fixture(Duration::ZERO).await;
    let peer = Arc::new(Peer::default());
    let server = f.grant.server_url.clone();
    // A refresh writes the grant, which clears the remembered lookups that the memory-only
    // answer needs: a second call (from the token in memory) remembers it again.
    let warm = || async {
        for _ in 0..2 {
            f.broker
                .token_get(&ask(&server), to(&peer, &server))
                .await
                .unwrap();
        }
        assert!(
            from_memory(&f.broker, &ask(&server), &peer, crate::oauth::token::now()).is_some(),
            "an hour-long token serves a caller asking 60 s from memory"
        );
    };
    warm().await;

    // The token in memory has 30 s left of its hour: a caller asking 10 s takes it either
    // way; one asking the default 60 s gets nothing from memory, and a refresh the full way.
    let now = crate::oauth::token::now();
    let mut aging = f.broker.cached_access_token(&f.grant.id).unwrap();
    aging.issued_at = now - 3570;
    aging.expires_at = now + 30;
    aging.obtained = tokio::time::Instant::now()
        .checked_sub(Duration::from_secs(10))
        .expect("the clock is older than 10 s");
    f.broker.slot(&f.grant.id).set(Some(aging));
    let mut short = ask(&server);
    short.min_valid_secs = Some(10);
    assert!(from_memory(&f.broker, &short, &peer, now).is_some());
    let same = f
        .broker
        .token_get(&short, to(&peer, &server))
        .await
        .unwrap();
    assert_eq!(same.access_token, "at-1");
    assert!(from_memory(&f.broker, &ask(&server), &peer, now).is_none());
    let renewed = f.broker.token_get(&ask(&server), to(&peer, &server)).await;
    assert_eq!(renewed.unwrap().access_token, "at-2");
    assert_eq!(f.endpoint.refreshes.load(Ordering::SeqCst), 2);
    warm().await;

    // A scope the grant lacks: memory declines, the full way asks for a login with both.
    let mut wider = ask(&server);
    wider.scopes = Some(vec!["read".into(), "write".into()]);
    assert!(from_memory(&f.broker, &wider, &peer, now).is_none());
    let e = f
        .broker
        .token_get(&wider, to(&peer, &server))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired));
    assert!(e.message.contains("lacks scope write"), "{}", e.message);
    // A scope it has is no reason to decline, on either way.
    let mut narrower = ask(&server);
    narrower.scopes = Some(vec!["read".into()]);
    assert!(from_memory(&f.broker, &narrower, &peer, now).is_some());
    let same = f.broker.token_get(&narrower, to(&peer, &server)).await;
    assert_eq!(same.unwrap().access_token, "at-2");
    assert_eq!(f.endpoint.refreshes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn client_credentials_come_from_their_one_owner() {
    let f = fixture(Duration::ZERO).await;
    let issuer = f.grant.issuer.clone();
    let confidential = RegistrationRow {
        id: "r-secret".into(),
        issuer: issuer.clone(),
        kind: "dynamic".into(),
        client_id: "client-2".into(),
        redirect_uri: None,
        token_endpoint_auth_method: "client_secret_basic".into(),
        has_client_secret: true,
        created_at: 0,
    };
    // Without its secret in the store, the registration cannot authenticate.
    f.broker
        .db
        .insert_registration(&confidential)
        .await
        .unwrap();
    let e = f
        .broker
        .credentials(&confidential, &issuer, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::SecretStore));

    // Saved through the broker, the secret is in the store and the credentials carry it.
    let mut saved = confidential.clone();
    saved.id = "r-secret-2".into();
    f.broker
        .save_registration(&saved, Some(&Secret::new("cs-1")))
        .await
        .unwrap();
    let found = f
        .broker
        .find_registration(
            &issuer,
            &crate::store::db::RegistrationKind::Dynamic,
            Some("client-2"),
        )
        .await
        .unwrap()
        .unwrap();
    let credentials = f.broker.credentials(&found, &issuer, None).await.unwrap();
    assert_eq!(credentials.client_secret.unwrap().expose(), "cs-1");
    assert_eq!(credentials.client_id, "client-2");

    // A registration is never offered to another authorization server.
    let e = f
        .broker
        .credentials(&found, "https://other.example", None)
        .await
        .unwrap_err();
    assert!(e.message.contains("mix-up"), "{}", e.message);
}

#[tokio::test]
async fn step_ups_are_capped_per_server_and_account() {
    let f = fixture(Duration::ZERO).await;
    let scopes = |s: &str| vec![s.to_string()];
    assert!(f.broker.admit_step_up("s", &scopes("a")).is_ok());
    assert!(
        f.broker.admit_step_up("s", &scopes("a")).is_err(),
        "the same scopes again"
    );
    assert!(
        f.broker.admit_step_up("s work", &scopes("a")).is_ok(),
        "another account's count is its own"
    );
}

#[tokio::test]
async fn a_forgotten_grant_is_not_refreshed_by_a_caller_that_waited() {
    let f = fixture(Duration::from_millis(200)).await;
    let peer = Arc::new(Peer::default());
    let server = f.grant.server_url.clone();
    let lock = f.broker.lock_grant(&f.grant.id).await;
    let waiting = {
        let (broker, peer, server) = (f.broker.clone(), peer.clone(), server.clone());
        tokio::spawn(async move { broker.token_get(&ask(&server), to(&peer, &server)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.broker.forget_grant(&f.grant, &lock).await.unwrap();
    drop(lock);
    let e = waiting.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired));
    assert_eq!(f.endpoint.refreshes.load(Ordering::SeqCst), 0);
}

/// The memory-only answer as a client reads it: written from the borrowed reply, read
/// back as the owned result.
fn from_memory(
    broker: &Broker,
    p: &TokenGetParams,
    peer: &Arc<Peer>,
    now: i64,
) -> Option<mcp_authd_ipc::methods::TokenGetResult> {
    broker.token_from_memory(p, peer, now, |reply| {
        serde_json::from_slice(&serde_json::to_vec(reply).unwrap()).unwrap()
    })
}
