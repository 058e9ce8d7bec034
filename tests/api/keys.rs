//! Keys that last: restarts, sealing at rest, KEK rotation, automatic rotation
//! with short periods, crashes mid-rotation, and the operator commands.

use std::{collections::HashSet, process::Stdio, sync::Arc, time::Duration};

use jwks_server::{
    admin,
    config::{Config, KeysCommand, Secret},
    keys::{
        crypto::SigningKey,
        seal::{Kek, KekRing},
    },
    startup::Application,
    store::{KeyStore, SqlStore},
};
use serde_json::Value;

use crate::helpers::{
    TEST_KEK, header, kids, now, spawn_app, spawn_app_with, start, test_config, verify,
};

const OTHER_KEK: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Short periods: a key signs for 2 s, is published 3 s ahead and kept 5 s after.
fn fast_rotation(config: &mut Config) {
    config.token_ttl = Duration::from_secs(2);
    config.rotate_every = Duration::from_secs(2);
    config.jwks_max_age = Duration::from_secs(2);
    config.reload_every = Duration::from_secs(1);
    config.clock_skew = Duration::from_secs(1);
}

#[tokio::test]
async fn a_restart_keeps_the_keys_and_earlier_tokens_stay_valid() {
    let app = spawn_app().await;
    let token = app.token("").await;
    let before = app.jwks().await;
    let (config, dir) = app.stop().await;

    let app = start(config, dir).await;
    let after = app.jwks().await;
    assert_eq!(kids(&after), kids(&before));
    verify(&token, &after).expect("a token from before the restart verifies");
}

#[tokio::test]
async fn the_store_holds_no_private_key_in_the_clear() {
    let app = spawn_app().await;
    let _ = app.token("").await;
    let path = app.store_path();
    let (config, dir) = app.stop().await;

    // PKCS#8 RSA keys carry the rsaEncryption OID; the published public halves
    // are base64 text, so the OID's raw bytes must appear nowhere in the files.
    let rsa_oid: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    let mut dump = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) {
            dump.extend(bytes);
        }
    }
    assert!(!dump.is_empty());
    assert!(
        !dump.windows(rsa_oid.len()).any(|w| w == rsa_oid),
        "DER private key in the clear"
    );
    assert!(
        !dump.windows(11).any(|w| w == b"PRIVATE KEY"),
        "PEM in the clear"
    );

    // ...while the sealed rows really are the keys (positive control: the
    // same search finds the OID once unsealed).
    let store = SqlStore::connect(config.store.connection_string())
        .await
        .unwrap();
    let keks = KekRing::new(vec![Kek::from_base64(TEST_KEK).unwrap()]).unwrap();
    let stored = store.load().await.unwrap();
    assert_eq!(stored.len(), 2);
    for key in stored {
        let der = keks.open(&key.meta.kid, &key.sealed).unwrap();
        assert!(der.windows(rsa_oid.len()).any(|w| w == rsa_oid));
        let parsed = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(parsed.kid(), key.meta.kid);
        assert_eq!(parsed.jwk().public, key.public);
    }
    drop(dir);
}

#[tokio::test]
async fn a_wrong_kek_is_a_clear_startup_error_not_garbage_keys() {
    let app = spawn_app().await;
    let (mut config, _dir) = app.stop().await;
    config.kek = vec![OTHER_KEK.parse().unwrap()];
    let err = Application::build(config)
        .await
        .err()
        .expect("refuses to start");
    let message = err.to_string();
    assert!(message.contains("key-encryption key"), "{message}");
    assert!(message.contains("not configured"), "{message}");
}

#[tokio::test]
async fn kek_rotation_reseals_every_key_under_the_new_kek() {
    let app = spawn_app().await;
    let token = app.token("").await;
    let before = kids(&app.jwks().await);
    let (mut config, dir) = app.stop().await;

    // New KEK first (it seals), old one second (it still opens).
    config.kek = vec![secret(OTHER_KEK), secret(TEST_KEK)];
    let out = admin::run(&config, &KeysCommand::Reseal).await.unwrap();
    assert!(out.contains("re-sealed 2 key(s)"), "{out}");

    // The old KEK can now be dropped.
    config.kek = vec![secret(OTHER_KEK)];
    let app = start(config, dir).await;
    let after = app.jwks().await;
    assert_eq!(kids(&after), before);
    verify(&token, &after).unwrap();
}

fn secret(text: &str) -> Secret {
    text.parse().unwrap()
}

#[tokio::test]
async fn settings_that_break_a_publication_rule_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.publish_ahead = Some(Duration::from_secs(60));
    let err = Application::build(config)
        .await
        .err()
        .expect("refuses to start");
    assert!(err.to_string().contains("published at least"), "{err}");

    let mut config = test_config(dir.path());
    config.retain_after = Some(Duration::from_secs(60));
    let err = Application::build(config)
        .await
        .err()
        .expect("refuses to start");
    assert!(err.to_string().contains("stay published"), "{err}");
}

/// A relying party that caches the JWKS for max-age, as verifier libraries do.
struct CachingVerifier {
    jwks: Value,
    fetched_at: tokio::time::Instant,
    max_age: Duration,
}

#[tokio::test]
async fn through_many_rotations_every_token_verifies_until_it_expires() {
    let app = spawn_app_with(fast_rotation).await;
    let mut grpc = app.grpc().await;
    let mut cache = CachingVerifier {
        jwks: app.jwks().await,
        fetched_at: tokio::time::Instant::now(),
        max_age: Duration::from_secs(2),
    };
    let mut issued: Vec<(String, i64)> = Vec::new();
    let mut signing_kids = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut round = 0u32;
    while tokio::time::Instant::now() < deadline {
        round += 1;
        // Issue through both doors.
        let token = if round.is_multiple_of(2) {
            app.token("").await
        } else {
            grpc.issue_token(jwks_server::proto::IssueTokenRequest::default())
                .await
                .unwrap()
                .into_inner()
                .token
        };
        let exp = crate::helpers::claims(&token)["exp"].as_i64().unwrap();
        signing_kids.insert(header(&token)["kid"].as_str().unwrap().to_owned());

        // A caching verifier never meets an unknown kid.
        if cache.fetched_at.elapsed() >= cache.max_age {
            cache.jwks = app.jwks().await;
            cache.fetched_at = tokio::time::Instant::now();
        }
        let kid = header(&token)["kid"].as_str().unwrap().to_owned();
        assert!(
            kids(&cache.jwks).contains(&kid),
            "cached JWKS lacks {kid} (round {round})"
        );
        issued.push((token, exp));

        // Every unexpired token verifies against the JWKS fetched now.
        let fresh = app.jwks().await;
        for (token, exp) in &issued {
            if *exp > now() + 1 {
                verify(token, &fresh).unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        signing_kids.len() >= 4,
        "saw only {} signing keys",
        signing_kids.len()
    );
}

#[tokio::test]
async fn an_operator_rotation_from_the_cli_reaches_a_running_server() {
    let app = spawn_app_with(|c| c.reload_every = Duration::from_secs(1)).await;
    let before = kids(&app.jwks().await);

    let output = cli(&app.config, &["keys", "rotate"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("created"), "{stdout}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let current = kids(&app.jwks().await);
        if current.len() > before.len() || tokio::time::Instant::now() > deadline {
            break current;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        after.len(),
        before.len() + 1,
        "new key published: {after:?}"
    );
    assert_eq!(after[1..], before[..], "the new key is listed first");
    // It is pending: the old key still signs.
    assert_eq!(header(&app.token("").await)["kid"], before[0].as_str());

    let list = cli(&app.config, &["keys", "list"]).output().await.unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("pending") && listing.contains("active") && listing.contains("expired"),
        "{listing}"
    );
}

/// The built binary, pointed at a test server's store and KEK.
fn cli(config: &Config, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"));
    command
        .args(args)
        .env_clear()
        .envs(crate::helpers::passthrough_env())
        .env("JWKS_STORE", config.store.connection_string())
        .env("JWKS_KEK", TEST_KEK)
        .env("JWKS_RELOAD_EVERY", "1s")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn kill_9_while_rotating_loses_no_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let store_url = config.store.connection_string().to_owned();
    let mut published = HashSet::new();
    for round in 0..6u64 {
        let mut child = cli(&config, &[])
            .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
            .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
            .env("JWKS_TOKEN_TTL", "1s")
            .env("JWKS_ROTATE_EVERY", "1s")
            .env("JWKS_JWKS_MAX_AGE", "1s")
            .env("JWKS_CLOCK_SKEW", "0s")
            .env("JWKS_KEEP_EXPIRED", "1000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it rotate for a while, then kill it without warning.
        tokio::time::sleep(Duration::from_millis(700 + round * 330)).await;
        let store = SqlStore::connect(&store_url).await.unwrap();
        published.extend(store.load().await.unwrap().into_iter().map(|k| k.meta.kid));
        store.close().await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    assert!(published.len() >= 4, "rotated: {}", published.len());

    // Every key ever seen is still there and opens (nothing half-written).
    let store: Arc<dyn KeyStore> = Arc::new(SqlStore::connect(&store_url).await.unwrap());
    let keks = KekRing::new(vec![Kek::from_base64(TEST_KEK).unwrap()]).unwrap();
    let stored = store.load().await.unwrap();
    let held: HashSet<String> = stored.iter().map(|k| k.meta.kid.clone()).collect();
    assert!(
        published.is_subset(&held),
        "lost keys: {:?}",
        published.difference(&held)
    );
    for key in &stored {
        let der = keks.open(&key.meta.kid, &key.sealed).unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_der(&der).unwrap().kid(),
            key.meta.kid
        );
    }
    let generations: HashSet<i64> = stored.iter().map(|k| k.meta.generation).collect();
    assert_eq!(generations.len(), stored.len(), "one key per rotation slot");
}

#[tokio::test]
async fn without_a_kek_the_embedded_store_gets_a_private_kek_file_that_restarts_reuse() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app_with(|c| {
        c.kek = Vec::new();
        c.kek_file = None;
    })
    .await;
    let before = kids(&app.jwks().await);
    let kek_file = std::path::PathBuf::from(format!("{}.kek", app.store_path().display()));
    let mode = std::fs::metadata(&kek_file)
        .expect("KEK file created beside the store")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read it");
    let text = std::fs::read_to_string(&kek_file).unwrap();
    assert!(Kek::from_base64(text.trim()).is_ok());

    let (config, dir) = app.stop().await;
    let app = start(config, dir).await;
    assert_eq!(
        kids(&app.jwks().await),
        before,
        "the same KEK opens the same keys"
    );
}
