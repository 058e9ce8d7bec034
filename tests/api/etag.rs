//! The ETag property replicas and caches rely on: the same key set gives the
//! same ETag, wherever and whenever it is rendered, and a changed key set a
//! different one. A verifier that round-robins between replicas revalidates
//! with one replica's ETag at another; a needless mismatch costs a download,
//! a false match hides a new key.

use std::time::Duration;

use jwks_server::{admin, config::KeysCommand, proto::GetJwksRequest};
use reqwest::header;

use crate::helpers::{TestApp, kids, spawn_app_with, start};

/// The JWKS `app` serves now: its ETag and its `kid`s.
async fn served(app: &TestApp) -> (String, Vec<String>) {
    let response = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    (etag, kids(&response.json().await.unwrap()))
}

/// Polls (at most `limit`) until both servers serve the same `kid`s, other
/// than `not`, and returns what each serves.
async fn agreed_key_set(
    a: &TestApp,
    b: &TestApp,
    not: &[String],
    limit: Duration,
) -> ((String, Vec<String>), (String, Vec<String>)) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (sa, sb) = (served(a).await, served(b).await);
        if sa.1 == sb.1 && sa.1 != not {
            return (sa, sb);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the servers did not agree on a new key set within {limit:?}: {:?} and {:?}",
            sa.1,
            sb.1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_servers_on_one_store_give_the_same_etag_until_the_key_set_changes() {
    // Two servers on one SQLite store, as replicas share one database.
    let a = spawn_app_with(|c| c.reload_every = Duration::from_secs(1)).await;
    let b = start(a.config.clone(), tempfile::tempdir().unwrap()).await;

    let ((etag_a, kids_a), (etag_b, _)) =
        agreed_key_set(&a, &b, &[], Duration::from_secs(10)).await;
    assert_eq!(
        etag_a, etag_b,
        "the same key set has one ETag on both servers"
    );
    let grpc_etag = b
        .grpc()
        .await
        .get_jwks(GetJwksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .etag;
    assert_eq!(grpc_etag, etag_a, "and the same over gRPC");
    // A cache holding one server's ETag revalidates at the other.
    let revalidated = b
        .client
        .get(b.url("/.well-known/jwks.json"))
        .header(header::IF_NONE_MATCH, &etag_a)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);

    // An operator publishes the next key; both servers reload it.
    admin::run(&a.config, &KeysCommand::Rotate { alg: None })
        .await
        .unwrap();
    let ((rotated_a, new_kids), (rotated_b, _)) =
        agreed_key_set(&a, &b, &kids_a, Duration::from_secs(15)).await;
    assert_eq!(new_kids.len(), kids_a.len() + 1, "{new_kids:?}");
    assert_ne!(rotated_a, etag_a, "a changed key set has a new ETag");
    assert_eq!(rotated_a, rotated_b, "and again one ETag on both servers");
    let stale = a
        .client
        .get(a.url("/.well-known/jwks.json"))
        .header(header::IF_NONE_MATCH, &etag_a)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200, "the old ETag no longer matches");

    // The same keys loaded again by a restarted server: the same ETag.
    let (config, dir) = b.stop().await;
    let restarted = start(config, dir).await;
    assert_eq!(served(&restarted).await, (rotated_a, new_kids));
}
