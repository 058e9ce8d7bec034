//! Unit tests of the domain service over the in-memory store: what was
//! reachable only through sockets (store health, reloads, the JWKS's life,
//! access rules, rotation). Time is passed in; nothing sleeps.

use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    access::{Caller, ClientRegistry, Credentials, hash_secret},
    error::{AuthProblem, Error},
    faults::FaultKind,
    keys::{
        Algorithm, KeyMeta, KeyState,
        policy::{Trigger, plan_rotation},
        seal::Kek,
    },
    store::{MemoryStore, StoreFailure},
};

const T0: Timestamp = Timestamp::from_unix(1_800_000_000);

fn at(seconds_after_t0: u64) -> Timestamp {
    T0 + Duration::from_secs(seconds_after_t0)
}

fn policy() -> Policy {
    Policy::new(
        Duration::from_secs(15 * 60),
        Duration::from_secs(30 * 60),
        Duration::from_secs(10 * 60),
        Duration::from_secs(10),
        Duration::from_secs(5 * 60),
    )
}

fn keks() -> KekRing {
    KekRing::new(vec![Kek::from_bytes(&[7; 32]).unwrap()]).unwrap()
}

async fn start_with(store: &Arc<MemoryStore>, access: Access) -> KeyService {
    let store: Arc<dyn KeyStore> = store.clone();
    KeyService::start(
        store,
        keks(),
        policy(),
        "https://issuer.test".into(),
        access,
        T0,
    )
    .await
    .expect("the service starts over an empty store")
}

async fn start(store: &Arc<MemoryStore>) -> KeyService {
    start_with(store, Access::default()).await
}

fn metas(store: &MemoryStore) -> Vec<KeyMeta> {
    store.keys().into_iter().map(|k| k.meta).collect()
}

fn kids(jwks: &JwksDocument) -> Vec<String> {
    jwks.keys.iter().map(|k| k.kid.clone()).collect()
}

/// The claims of a compact JWT, unverified (the transports' tests verify).
fn claims(token: &str) -> serde_json::Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

// ---- rotation ----------------------------------------------------------------

#[tokio::test]
async fn a_fresh_start_creates_exactly_the_planned_keys() {
    let store = Arc::new(MemoryStore::new());
    let planned = plan_rotation(&[], T0, &policy(), Trigger::Schedule);
    let service = start(&store).await;

    let stored = metas(&store);
    assert_eq!(stored.len(), planned.create.len());
    for (meta, times) in stored.iter().zip(planned.create) {
        assert_eq!(*meta, times.into_meta(meta.kid.clone()));
    }
    assert!(service.ring().signer(T0).is_some(), "a key signs at once");
    assert!(
        service.ring().expired_signer(T0).is_some(),
        "and an expired key is there for expired=true"
    );
}

#[tokio::test]
async fn rotation_creates_nothing_until_due_and_one_key_when_an_operator_asks() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let before = metas(&store);

    assert!(
        service
            .rotate(Trigger::Schedule, at(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(metas(&store), before, "nothing was due");

    let created = service.rotate(Trigger::Operator, at(2)).await.unwrap();
    let planned = plan_rotation(&before, at(2), &policy(), Trigger::Operator);
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0],
        planned.create[0].clone().into_meta(created[0].kid.clone())
    );
    assert_eq!(metas(&store).len(), before.len() + 1);
    assert!(
        service.ring().get(&created[0].kid).is_some(),
        "the ring holds the new key after the rotation"
    );
}

// ---- store health ------------------------------------------------------------

#[tokio::test]
async fn store_health_goes_unreachable_from_the_first_failure_and_back() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    assert_eq!(service.health(at(1)).store, StoreHealth::Reachable);

    store.fail(StoreFailure::Unavailable);
    assert!(service.reload(at(10)).await.is_err());
    assert!(service.rotate(Trigger::Schedule, at(20)).await.is_err());
    let health = service.health(at(20));
    let StoreHealth::Unreachable { since, .. } = &health.store else {
        panic!("unreachable: {health:?}");
    };
    assert_eq!(*since, at(10), "dated by the first failure, as passed in");
    assert!(health.can_sign, "the keys held still sign");
    assert!(health.signing_until.is_some_and(|until| until > at(20)));

    store.fail(StoreFailure::None);
    service.reload(at(30)).await.unwrap();
    assert_eq!(service.health(at(30)).store, StoreHealth::Reachable);
}

#[tokio::test]
async fn failed_writes_degrade_health_until_a_rotation_writes() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;

    store.fail(StoreFailure::Writes);
    assert!(service.rotate(Trigger::Operator, at(5)).await.is_err());
    assert!(service.rotate(Trigger::Operator, at(6)).await.is_err());
    let health = service.health(at(7));
    assert_eq!(
        health.store,
        StoreHealth::Reachable,
        "the store answers; it refuses writes"
    );
    assert_eq!(health.faults.len(), 1, "{health:?}");
    assert_eq!(health.faults[0].kind, FaultKind::RotationFailing);
    assert_eq!(health.faults[0].since, at(5));
    assert!(health.can_sign);

    store.fail(StoreFailure::None);
    assert_eq!(
        service
            .rotate(Trigger::Operator, at(8))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(service.health(at(8)).faults.is_empty());
}

// ---- reloads -----------------------------------------------------------------

#[tokio::test]
async fn a_reload_with_nothing_changed_unseals_nothing_and_keeps_the_ring() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let ring = service.ring();
    // Damage every sealed row: a reload that unsealed anything would fail.
    for mut key in store.keys() {
        key.sealed.ciphertext[0] ^= 0xff;
        assert!(store.replace(key));
    }

    service.reload(at(1)).await.unwrap();

    assert!(Arc::ptr_eq(&ring, &service.ring()), "the same ring");
}

#[tokio::test]
async fn a_reload_picks_up_a_key_another_process_created() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let other: Arc<dyn KeyStore> = store.clone();
    let other = KeyService::start(other, keks(), policy(), "x".into(), Access::default(), T0)
        .await
        .unwrap();
    let created = other.rotate(Trigger::Operator, at(1)).await.unwrap();

    service.reload(at(2)).await.unwrap();

    assert!(service.ring().get(&created[0].kid).is_some());
}

#[tokio::test]
async fn a_published_key_that_unseals_to_another_key_is_a_named_fault() {
    let store = Arc::new(MemoryStore::new());
    start(&store).await;
    // Another key's private half, sealed for this row's kid (as a KEK
    // holder could): it opens, but to the wrong key.
    let keys = store.keys();
    let victim = keys.iter().find(|k| k.meta.is_published(T0)).unwrap();
    let other = keys.iter().find(|k| k.meta.kid != victim.meta.kid).unwrap();
    let der = keks().open(&other.meta.kid, &other.sealed).unwrap();
    let mut forged = victim.clone();
    forged.sealed = keks().seal(&victim.meta.kid, &der).unwrap();
    assert!(store.replace(forged));

    let store: Arc<dyn KeyStore> = store.clone();
    let err = KeyService::start(store, keks(), policy(), "x".into(), Access::default(), T0)
        .await
        .err()
        .expect("refuses to start");
    assert!(
        matches!(
            &err,
            StartError::Unreadable(PublishedKeyUnreadable {
                reason: Unopenable::OtherKey { found },
                kid,
            }) if *found == other.meta.kid && *kid == victim.meta.kid
        ),
        "{err}"
    );
}

// ---- the JWKS ----------------------------------------------------------------

#[tokio::test]
async fn the_jwks_is_rebuilt_when_a_key_expires() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let first_to_expire = metas(&store)
        .into_iter()
        .filter(|k| k.is_published(T0))
        .min_by_key(|k| k.expires_at)
        .unwrap();
    let just_before = first_to_expire.expires_at - Duration::from_secs(1);
    let loads = store.loads();

    let before = service.jwks(just_before);
    let after = service.jwks(first_to_expire.expires_at);

    assert!(kids(&before).contains(&first_to_expire.kid));
    assert!(!kids(&after).contains(&first_to_expire.kid));
    assert_ne!(before.etag, after.etag);
    assert_eq!(
        store.loads(),
        loads,
        "rebuilt from the keys held, not the store"
    );
}

// ---- issuance ----------------------------------------------------------------

#[tokio::test]
async fn expired_tokens_are_refused_when_disabled_and_dated_in_the_past_when_not() {
    let store = Arc::new(MemoryStore::new());
    let expired = TokenRequest {
        expired: true,
        ..TokenRequest::default()
    };
    let caller = Caller::default();

    let refusing = start_with(&store, Access::new(false, None, None)).await;
    assert!(matches!(
        refusing.issue_token(&expired, &caller, at(1)).await,
        Err(Error::ExpiredTokensDisabled)
    ));
    assert!(
        refusing
            .issue_token(&TokenRequest::default(), &caller, at(1))
            .await
            .is_ok(),
        "valid tokens are unaffected"
    );

    let allowing = start(&store).await;
    let token = allowing
        .issue_token(&expired, &caller, at(1))
        .await
        .unwrap();
    assert!(token.expires_at <= at(1) && token.expires_in <= 0);
    assert!(!kids(&allowing.jwks(at(1))).contains(&token.kid));
}

#[tokio::test]
async fn without_client_auth_the_audience_is_what_was_asked_within_bounds() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let caller = Caller::default();
    let ask = |audience: Vec<&str>| TokenRequest {
        audience: audience.into_iter().map(str::to_owned).collect(),
        ..TokenRequest::default()
    };

    let none = service
        .issue_token(&ask(vec![]), &caller, at(1))
        .await
        .unwrap();
    assert!(claims(&none.token).get("aud").is_none());
    let one = service
        .issue_token(&ask(vec!["api"]), &caller, at(1))
        .await
        .unwrap();
    assert_eq!(claims(&one.token)["aud"], "api", "one audience is a string");
    let two = service
        .issue_token(&ask(vec!["api", "web"]), &caller, at(1))
        .await
        .unwrap();
    assert_eq!(claims(&two.token)["aud"], serde_json::json!(["api", "web"]));

    let too_many = ask(vec!["a"; MAX_AUDIENCES + 1]);
    assert!(matches!(
        service.issue_token(&too_many, &caller, at(1)).await,
        Err(Error::InvalidRequest {
            field: "audience",
            ..
        })
    ));
}

#[tokio::test]
async fn a_client_gets_its_audiences_by_default_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let hash = hash_secret("s3cret").unwrap();
    std::fs::write(
        &path,
        serde_json::json!({"clients": [
            {"id": "billing", "secret_hash": hash, "audiences": ["ledger", "invoices"]},
            {"id": "any", "secret_hash": hash},
        ]})
        .to_string(),
    )
    .unwrap();
    let registry = Arc::new(ClientRegistry::load(&path).unwrap());
    let store = Arc::new(MemoryStore::new());
    let service = start_with(&store, Access::new(true, Some(registry), None)).await;
    let as_client = |id: &str, secret: &str| Caller {
        credentials: Some(Credentials {
            id: id.into(),
            secret: secret.into(),
        }),
        addr: None,
    };
    let ask = |audience: &[&str]| TokenRequest {
        audience: audience.iter().map(|a| (*a).to_owned()).collect(),
        ..TokenRequest::default()
    };
    let billing = as_client("billing", "s3cret");

    let default = service
        .issue_token(&ask(&[]), &billing, at(1))
        .await
        .unwrap();
    let default = claims(&default.token);
    assert_eq!(default["sub"], "billing", "the client id is the subject");
    assert_eq!(default["aud"], serde_json::json!(["ledger", "invoices"]));

    let some = service
        .issue_token(&ask(&["ledger"]), &billing, at(1))
        .await
        .unwrap();
    assert_eq!(claims(&some.token)["aud"], "ledger");

    match service
        .issue_token(&ask(&["ledger", "payroll"]), &billing, at(1))
        .await
    {
        Err(Error::AudienceNotPermitted { client, audience }) => {
            assert_eq!((client.as_str(), audience.as_str()), ("billing", "payroll"));
        }
        other => panic!("refused: {other:?}"),
    }

    let any = as_client("any", "s3cret");
    let free = service
        .issue_token(&ask(&["payroll"]), &any, at(1))
        .await
        .unwrap();
    assert_eq!(
        claims(&free.token)["aud"],
        "payroll",
        "no audiences means any"
    );
    let nothing = service.issue_token(&ask(&[]), &any, at(1)).await.unwrap();
    assert!(claims(&nothing.token).get("aud").is_none());

    assert!(matches!(
        service
            .issue_token(&ask(&[]), &Caller::default(), at(1))
            .await,
        Err(Error::ClientNotAuthenticated(AuthProblem::Missing))
    ));
    assert!(matches!(
        service
            .issue_token(&ask(&[]), &as_client("billing", "wrong"), at(1))
            .await,
        Err(Error::ClientNotAuthenticated(AuthProblem::Rejected))
    ));
}

// ---- mutation-tested properties ----------------------------------------------

#[tokio::test]
async fn signing_until_is_the_instant_the_last_held_key_retires_and_not_after() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let newest_retires = metas(&store)
        .into_iter()
        .map(|k| k.retires_at)
        .max()
        .unwrap();

    let health = service.health(T0);
    assert_eq!(health.signing_until, Some(newest_retires));

    let at_the_end = service.health(newest_retires);
    assert_eq!(at_the_end.signing_until, None, "{at_the_end:?}");
    assert!(
        !at_the_end.can_sign,
        "no key signs once the last one retires"
    );
}

#[tokio::test]
async fn the_refresher_counts_as_stalled_after_three_reloads_and_three_store_timeouts() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    service.inner.faults.refreshed(T0);
    let stall_after = policy().reload_every * 3 + health::STORE_TIMEOUT * 3;
    assert_eq!(stall_after, Duration::from_secs(45));

    assert!(service.health(T0 + stall_after).faults.is_empty());
    let stalled = service.health(T0 + stall_after + Duration::from_secs(1));
    assert_eq!(stalled.faults.len(), 1, "{stalled:?}");
    assert_eq!(stalled.faults[0].kind, FaultKind::RefresherStalled);
}

async fn start_with_policy(store: &Arc<MemoryStore>, policy: Policy, access: Access) -> KeyService {
    let store: Arc<dyn KeyStore> = store.clone();
    KeyService::start(
        store,
        keks(),
        policy,
        "https://issuer.test".into(),
        access,
        T0,
    )
    .await
    .expect("the service starts over an empty store")
}

/// Signs ES256 by default and EdDSA on request: two algorithms whose keys
/// are quick to make.
fn two_algorithms() -> Policy {
    let mut policy = policy();
    policy.algorithms = vec![Algorithm::Es256, Algorithm::EdDsa];
    policy
}

fn from(addr: [u8; 4]) -> Caller {
    Caller {
        credentials: None,
        addr: Some(std::net::IpAddr::from(addr)),
    }
}

#[tokio::test]
async fn a_token_is_dated_now_and_lives_what_was_asked_or_the_policy_lifetime() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let caller = Caller::default();

    let asked = TokenRequest {
        lifetime_seconds: Some(60),
        ..TokenRequest::default()
    };
    let token = service.issue_token(&asked, &caller, at(1)).await.unwrap();
    assert_eq!((token.issued_at, token.expires_at), (at(1), at(61)));
    assert_eq!(token.expires_in, 60);
    let claims = claims(&token.token);
    assert_eq!(claims["iat"], at(1).unix());
    assert_eq!(claims["nbf"], at(1).unix());
    assert_eq!(claims["exp"], at(61).unix());
    assert_eq!(claims["iss"], "https://issuer.test");
    assert_eq!(claims["sub"], DEFAULT_SUBJECT);

    let default = service
        .issue_token(&TokenRequest::default(), &caller, at(1))
        .await
        .unwrap();
    assert_eq!(default.expires_in, 15 * 60, "the policy's token lifetime");
    assert_eq!(default.expires_at, at(1) + policy().token_ttl);
    assert_eq!(
        Some(default.kid.as_str()),
        service.ring().signer(at(1)).map(|k| k.meta.kid.as_str())
    );
}

#[tokio::test]
async fn an_expired_token_ends_when_its_key_retired_and_lived_its_lifetime_before() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let expired_key = service.ring().expired_signer(at(1)).unwrap().meta.clone();
    assert!(expired_key.retires_at < at(1));
    let request = TokenRequest {
        expired: true,
        lifetime_seconds: Some(60),
        ..TokenRequest::default()
    };

    let token = service
        .issue_token(&request, &Caller::default(), at(1))
        .await
        .unwrap();

    assert_eq!(token.kid, expired_key.kid);
    assert_eq!(token.expires_at, expired_key.retires_at);
    assert_eq!(
        token.issued_at,
        expired_key.retires_at - Duration::from_secs(60)
    );
    assert_eq!(
        token.expires_in,
        expired_key.retires_at.unix() - at(1).unix()
    );
    assert!(token.expires_in < 0);
}

#[tokio::test]
async fn the_first_configured_algorithm_signs_unless_another_configured_one_is_named() {
    let store = Arc::new(MemoryStore::new());
    let service = start_with_policy(&store, two_algorithms(), Access::default()).await;
    let caller = Caller::default();
    let naming = |alg: &str| TokenRequest {
        alg: Some(alg.to_owned()),
        ..TokenRequest::default()
    };
    assert_eq!(service.algorithms(), [Algorithm::Es256, Algorithm::EdDsa]);
    assert_eq!(service.default_alg(), Algorithm::Es256);

    let default = service
        .issue_token(&TokenRequest::default(), &caller, at(1))
        .await
        .unwrap();
    assert_eq!(default.alg, Algorithm::Es256);
    let named = service
        .issue_token(&naming("EdDSA"), &caller, at(1))
        .await
        .unwrap();
    assert_eq!(named.alg, Algorithm::EdDsa);
    assert_eq!(
        Some(named.kid.as_str()),
        service
            .ring()
            .signer_for(Algorithm::EdDsa, at(1))
            .map(|k| k.meta.kid.as_str())
    );

    for refused in ["RS256", "HS256", ""] {
        match service.issue_token(&naming(refused), &caller, at(1)).await {
            Err(Error::InvalidRequest {
                field: "alg",
                reason,
            }) => {
                assert!(
                    reason.contains("ES256, EdDSA") || reason.contains("ES256"),
                    "{reason}"
                );
            }
            other => panic!("{refused:?}: {other:?}"),
        }
    }
    assert_eq!(service.named_alg(None).unwrap(), None);
    assert_eq!(
        service.named_alg(Some("ES256")).unwrap(),
        Some(Algorithm::Es256)
    );
}

#[tokio::test]
async fn without_client_auth_each_address_has_its_own_token_budget() {
    let store = Arc::new(MemoryStore::new());
    let one = std::num::NonZeroU32::MIN;
    let access = Access::new(true, None, Some(crate::access::RateLimits::new(one, one)));
    let service = start_with(&store, access).await;
    let request = TokenRequest::default();

    assert!(
        service
            .issue_token(&request, &from([192, 0, 2, 1]), at(1))
            .await
            .is_ok()
    );
    match service
        .issue_token(&request, &from([192, 0, 2, 1]), at(1))
        .await
    {
        Err(Error::RateLimited { what, retry_after }) => {
            assert_eq!(what, "tokens requested");
            assert!(retry_after > Duration::ZERO);
        }
        other => panic!("limited: {other:?}"),
    }
    assert!(
        service
            .issue_token(&request, &from([192, 0, 2, 2]), at(1))
            .await
            .is_ok(),
        "another address has its own budget"
    );
    for _ in 0..3 {
        assert!(
            service
                .issue_token(&request, &Caller::default(), at(1))
                .await
                .is_ok(),
            "an in-process caller has no address to count"
        );
    }
}

#[test]
fn request_checks_accept_their_bounds_and_refuse_one_past() {
    let policy = policy();
    let max = i64::try_from(policy.token_ttl.as_secs()).unwrap();
    let lifetime = |secs| TokenRequest {
        lifetime_seconds: Some(secs),
        ..TokenRequest::default()
    };
    assert_eq!(
        validate_request(&lifetime(1), &policy).unwrap(),
        Duration::from_secs(1)
    );
    assert_eq!(
        validate_request(&lifetime(max), &policy).unwrap(),
        policy.token_ttl
    );
    for bad in [0, -1, max + 1] {
        assert!(
            matches!(
                validate_request(&lifetime(bad), &policy),
                Err(Error::InvalidRequest {
                    field: "lifetime_seconds",
                    ..
                })
            ),
            "{bad}"
        );
    }
    assert_eq!(
        validate_request(&TokenRequest::default(), &policy).unwrap(),
        policy.token_ttl
    );

    let subject = |s: String| TokenRequest {
        subject: Some(s),
        ..TokenRequest::default()
    };
    assert!(validate_request(&subject("é".repeat(MAX_CLAIM_LEN)), &policy).is_ok());
    for bad in [
        "é".repeat(MAX_CLAIM_LEN + 1),
        String::new(),
        "a\u{202e}b".into(),
    ] {
        assert!(
            matches!(
                validate_request(&subject(bad.clone()), &policy),
                Err(Error::InvalidRequest {
                    field: "subject",
                    ..
                })
            ),
            "{bad:?}"
        );
    }

    let audience = |values: Vec<String>| TokenRequest {
        audience: values,
        ..TokenRequest::default()
    };
    assert!(validate_request(&audience(vec!["a".into(); MAX_AUDIENCES]), &policy).is_ok());
    assert!(validate_request(&audience(vec!["a".into(); MAX_AUDIENCES + 1]), &policy).is_err());
    let reason = |values: Vec<String>| match validate_request(&audience(values), &policy) {
        Err(Error::InvalidRequest {
            field: "audience",
            reason,
        }) => reason,
        other => panic!("refused: {other:?}"),
    };
    assert_eq!(
        reason(vec!["ok".into(), "ok".into(), String::new()]),
        "value 3 of 3: must not be empty",
        "among several, the message says which"
    );
    assert_eq!(reason(vec![String::new()]), "must not be empty");
}

// ---- lifecycle ---------------------------------------------------------------

#[tokio::test]
async fn the_listing_and_the_schedule_are_the_keys_held() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    let held = metas(&store);

    let statuses = service.key_statuses(at(1));
    assert_eq!(statuses.len(), held.len());
    for status in &statuses {
        assert_eq!(status.state, service.ring().state_of(&status.meta, at(1)));
        assert!(held.contains(&status.meta));
    }
    assert!(statuses.iter().any(|s| s.state == KeyState::Active));
    assert!(statuses.iter().any(|s| s.state == KeyState::Expired));

    let next = service.next_rotation();
    assert_eq!(
        next,
        crate::keys::policy::next_rotation_at(&held, &policy())
    );
    assert!(next.is_some_and(|t| t > T0));
    assert_eq!(service.next_deadline(), service.jwks(T0).next_change);
    assert!(service.next_deadline() > T0);
}

#[tokio::test]
async fn an_expired_key_that_does_not_open_is_listed_apart_and_does_not_force_reloads() {
    let store = Arc::new(MemoryStore::new());
    start(&store).await;
    let mut damaged = store
        .keys()
        .into_iter()
        .find(|k| !k.meta.is_published(T0))
        .expect("an expired key for expired=true");
    damaged.sealed.ciphertext[0] ^= 0xff;
    assert!(store.replace(damaged.clone()));

    let service = start(&store).await;

    let unreadable = service.unreadable_keys();
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0].meta, damaged.meta);
    assert!(!unreadable[0].reason.is_empty());
    assert!(
        service
            .key_statuses(T0)
            .iter()
            .all(|s| s.meta.kid != damaged.meta.kid)
    );
    let ring = service.ring();
    service.reload(at(1)).await.unwrap();
    assert!(Arc::ptr_eq(&ring, &service.ring()), "nothing changed");
}

#[tokio::test]
async fn an_operator_may_rotate_one_algorithm_and_leave_the_others() {
    let store = Arc::new(MemoryStore::new());
    let service = start_with_policy(&store, two_algorithms(), Access::default()).await;

    let created = service
        .rotate_algorithms(Trigger::Operator, at(1), &[Algorithm::EdDsa])
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].alg, Algorithm::EdDsa);

    let both = service
        .rotate_algorithms(Trigger::Operator, at(2), &[])
        .await
        .unwrap();
    let mut algs: Vec<Algorithm> = both.iter().map(|k| k.alg).collect();
    algs.sort_by_key(|a| a.as_str());
    assert_eq!(algs, [Algorithm::Es256, Algorithm::EdDsa]);
}

#[tokio::test]
async fn a_failing_rotation_says_why_and_clears_when_nothing_is_left_to_write() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    store.fail(StoreFailure::Writes);
    assert!(service.rotate(Trigger::Operator, at(5)).await.is_err());
    let faults = service.health(at(6)).faults;
    assert_eq!(faults.len(), 1);
    assert!(faults[0].error.contains("refuses writes"), "{faults:?}");
    assert!(!faults[0].error.starts_with("internal"), "{faults:?}");

    // Nothing is due on schedule: there is nothing to write, so no failure.
    assert!(
        service
            .rotate(Trigger::Schedule, at(7))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(service.health(at(7)).faults.is_empty());
}

// ---- what operators read -----------------------------------------------------

/// The log lines written while `logs` is the default subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || logs.clone())
                .with_ansi(false)
                .finish(),
        )
    }

    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

#[tokio::test]
async fn refused_callers_are_logged_with_who_and_from_where_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let hash = hash_secret("s3cret").unwrap();
    std::fs::write(
        &path,
        serde_json::json!({"clients": [{"id": "billing", "secret_hash": hash}]}).to_string(),
    )
    .unwrap();
    let registry = Arc::new(ClientRegistry::load(&path).unwrap());
    let store = Arc::new(MemoryStore::new());
    let one = std::num::NonZeroU32::MIN;
    let access = Access::new(
        true,
        Some(registry),
        Some(crate::access::RateLimits::new(one, one)),
    );
    let service = start_with(&store, access).await;
    let as_client = |id: &str, secret: &str| Caller {
        credentials: Some(Credentials {
            id: id.into(),
            secret: secret.into(),
        }),
        addr: Some(std::net::IpAddr::from([192, 0, 2, 9])),
    };
    let request = TokenRequest::default();
    let logs = Logs::default();
    let _guard = logs.capture();

    let _ = service
        .issue_token(&request, &as_client("billing", "wrong-secret"), at(1))
        .await;
    let line = logs.take();
    assert!(line.contains("client authentication failed"), "{line}");
    assert!(line.contains("wrong secret"), "{line}");
    assert!(
        line.contains("billing") && line.contains("192.0.2.9"),
        "{line}"
    );
    assert!(!line.contains("wrong-secret"), "{line}");

    let _ = service
        .issue_token(&request, &as_client("nobody", "x"), at(1))
        .await;
    let line = logs.take();
    assert!(
        line.contains("unknown client") && line.contains("nobody"),
        "{line}"
    );

    let _ = service
        .issue_token(&request, &Caller::default(), at(1))
        .await;
    let line = logs.take();
    assert!(
        line.contains("no credentials") && line.contains("unknown"),
        "{line}"
    );

    let billing = as_client("billing", "s3cret");
    assert!(service.issue_token(&request, &billing, at(1)).await.is_ok());
    assert!(
        service
            .issue_token(&request, &billing, at(1))
            .await
            .is_err()
    );
    let line = logs.take();
    assert!(line.contains("request rate limited"), "{line}");
    assert!(
        line.contains("billing") && line.contains("192.0.2.9"),
        "{line}"
    );
    assert!(line.contains("retry_after_secs=1"), "{line}");
}

#[tokio::test]
async fn an_outage_shows_the_stores_own_words_once() {
    let store = Arc::new(MemoryStore::new());
    let service = start(&store).await;
    store.fail(StoreFailure::Unavailable);
    assert!(service.reload(at(1)).await.is_err());

    let StoreHealth::Unreachable { error, .. } = service.health(at(1)).store else {
        panic!("unreachable");
    };
    assert_eq!(error, "the in-memory store is switched off");
}

// ---- domain words ------------------------------------------------------------

/// Flags, environment variables and doors are the edges' words: the domain
/// says what is so, and the edge that knows how to change it says how.
#[test]
fn domain_messages_name_no_flag_variable_or_transport() {
    use crate::keys::{
        kek::KekError,
        policy::{PolicyError, Setting},
        seal::SealError,
    };
    let d = Duration::from_secs;
    let messages = [
        Error::invalid("lifetime_seconds", "x").to_string(),
        validate_request(
            &TokenRequest {
                lifetime_seconds: Some(0),
                ..TokenRequest::default()
            },
            &policy(),
        )
        .unwrap_err()
        .to_string(),
        Error::ClientNotAuthenticated(AuthProblem::Missing).to_string(),
        Error::ClientNotAuthenticated(AuthProblem::Rejected).to_string(),
        Error::ExpiredTokensDisabled.to_string(),
        PolicyError::PublishAhead {
            needed: d(60),
            actual: d(1),
        }
        .to_string(),
        PolicyError::RetainAfter {
            needed: d(60),
            actual: d(1),
        }
        .to_string(),
        PolicyError::TooShort(Setting::RotateEvery).to_string(),
        PolicyError::KeepExpired.to_string(),
        SealError::UnknownKek {
            kid: "k".into(),
            kek_id: "e".into(),
        }
        .to_string(),
        KekError::Required {
            store: "PostgreSQL",
        }
        .to_string(),
        KekError::Missing {
            kek_ids: "e".into(),
            path: "jwks.db.kek".into(),
        }
        .to_string(),
    ];
    for message in messages {
        for edge_word in ["--", "JWKS_", "gRPC", "HTTP", "metadata", "form field"] {
            assert!(
                !message.contains(edge_word),
                "{message:?} names {edge_word:?}"
            );
        }
    }
}
