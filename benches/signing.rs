//! What one token costs, layer by layer, single-threaded:
//!
//! - `sign/aws_lc_rs_bare`: one aws-lc-rs RSA-2048 PKCS#1 v1.5 SHA-256
//!   signature over a typical JWT signing input, key parsed once, output buffer
//!   reused. The floor: nothing of ours can be faster.
//! - `sign/sign_jwt`: [`SigningKey::sign_jwt`] on typical claims JSON: base64 of
//!   the claims, the signature, base64 of it, the token string.
//! - `sign/issue_token` and `sign/issue_token_expired`: the whole
//!   [`KeyService::issue_token`] (validation, access checks, key choice, claims
//!   JSON, `jti`, the signature) over a temporary SQLite store, with the default
//!   access settings (no client registry, no rate limit), so the future is
//!   ready at once and `block_on` adds next to nothing.
//! - `hop/inline` and `hop/spawn_blocking`: one `sign_jwt` with the service's
//!   signing key, called from a task on a runtime worker, directly or through
//!   `spawn_blocking`: the latency a hop to the blocking pool adds to each token
//!   (what it does to throughput and to other requests under load is for
//!   `benches/load.sh` to show).
//!
//! - `alg/NAME/aws_lc_rs_bare` and `alg/NAME/sign_jwt`, for RS256 (RSA-2048,
//!   3072 and 4096), PS256, ES256 and EdDSA: the same floor and the same
//!   `sign_jwt`, per algorithm, to compare with `openssl speed rsa2048 rsa3072
//!   rsa4096 ecdsap256 ed25519`.
//!
//! - `verify/aws_lc_rs_bare`: one aws-lc-rs RSA-2048 PKCS#1 v1.5 SHA-256
//!   verification of an access token's signature, public key parsed once: the
//!   floor of introspection, to compare with `openssl speed -verify rsa2048`.
//! - `verify/introspect`: the whole [`KeyService::introspect`] of a live RS256
//!   access token (header and claims read, key looked up, signature checked,
//!   revocation looked up, the answer built), without HTTP.
//!
//! Each group reports throughput as elements (signatures) per second, to
//! compare with `openssl speed rsa2048`'s signs/s.
// Tests and tools: a failed assumption should stop them loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey,
        RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair,
    },
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jwks_server::{
    access::{Caller, Credentials},
    keys::{Algorithm, algorithm::RsaKeySize, crypto::SigningKey},
    service::{GrantRequest, Introspection, TokenRequest},
    time::Timestamp,
};

use common::{Fixture, multi_thread_runtime, typical_request};

/// Claims shaped like the ones the service writes.
const CLAIMS: &[u8] = br#"{"iss":"https://issuer.example.com","sub":"alice@example.com","aud":"billing-api","iat":1767225600,"nbf":1767225600,"exp":1767226500,"jti":"q1w2e3r4t5y6u7i8o9p0aA"}"#;

fn signing(c: &mut Criterion) {
    let key = SigningKey::generate().expect("an RSA-2048 key");
    let der = key.to_pkcs8_der().expect("PKCS#8 DER");
    let pair = RsaKeyPair::from_pkcs8(&der).expect("the same key, for aws-lc-rs directly");
    let token = key.sign_jwt(CLAIMS).expect("a token");
    // Exactly what sign_jwt signs: `base64(header).base64(claims)`.
    let (signing_input, _) = token.rsplit_once('.').expect("three segments");
    let signing_input = signing_input.as_bytes().to_vec();

    let fixture = Fixture::start(multi_thread_runtime());
    let service = &fixture.service;
    let runtime = &fixture.runtime;
    let caller = Caller::default();
    let request = typical_request();
    let expired = TokenRequest {
        expired: true,
        ..typical_request()
    };

    let mut group = c.benchmark_group("sign");
    group.throughput(Throughput::Elements(1));

    let rng = SystemRandom::new();
    let mut signature = vec![0u8; pair.public_modulus_len()];
    group.bench_function("aws_lc_rs_bare", |b| {
        b.iter(|| {
            pair.sign(
                &RSA_PKCS1_SHA256,
                &rng,
                black_box(&signing_input),
                &mut signature,
            )
            .expect("signature");
            black_box(&signature);
        });
    });
    group.bench_function("sign_jwt", |b| {
        b.iter(|| key.sign_jwt(black_box(CLAIMS)).expect("token"));
    });
    group.bench_function("issue_token", |b| {
        b.iter(|| {
            runtime
                .block_on(service.issue_token(black_box(&request), &caller, Timestamp::now()))
                .expect("token")
        });
    });
    group.bench_function("issue_token_expired", |b| {
        b.iter(|| {
            runtime
                .block_on(service.issue_token(black_box(&expired), &caller, Timestamp::now()))
                .expect("expired token")
        });
    });
    group.finish();

    // From a task already on a runtime worker, as a request handler is:
    // sign right there, or hand the signature to the blocking pool and await
    // it. The time is taken inside the task, so only the hop is added.
    let signer = Arc::clone(
        service
            .ring()
            .signer(Timestamp::now())
            .expect("a fresh store has a signing key"),
    );
    let mut group = c.benchmark_group("hop");
    group.throughput(Throughput::Elements(1));
    group.bench_function("inline", |b| {
        b.iter_custom(|iters| {
            let signer = Arc::clone(&signer);
            let task = runtime.spawn(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(signer.key.sign_jwt(CLAIMS).expect("token"));
                }
                started.elapsed()
            });
            runtime.block_on(task).expect("task")
        });
    });
    group.bench_function("spawn_blocking", |b| {
        b.iter_custom(|iters| {
            let signer = Arc::clone(&signer);
            let task = runtime.spawn(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    let signer = Arc::clone(&signer);
                    let token = tokio::task::spawn_blocking(move || signer.key.sign_jwt(CLAIMS))
                        .await
                        .expect("task")
                        .expect("token");
                    black_box(token);
                }
                started.elapsed()
            });
            runtime.block_on(task).expect("task")
        });
    });
    group.finish();
}

/// Per algorithm: one bare aws-lc-rs signature of the signing input against
/// our `sign_jwt` of the same claims, keys parsed once from our own PKCS#8.
fn algorithms(c: &mut Criterion) {
    let cases = [
        ("RS256", Algorithm::Rs256, RsaKeySize::Bits2048),
        ("RS256-3072", Algorithm::Rs256, RsaKeySize::Bits3072),
        ("RS256-4096", Algorithm::Rs256, RsaKeySize::Bits4096),
        ("PS256", Algorithm::Ps256, RsaKeySize::Bits2048),
        ("ES256", Algorithm::Es256, RsaKeySize::Bits2048),
        ("EdDSA", Algorithm::EdDsa, RsaKeySize::Bits2048),
    ];
    let rng = SystemRandom::new();
    let mut group = c.benchmark_group("alg");
    group.throughput(Throughput::Elements(1));
    for (name, alg, size) in cases {
        let key = SigningKey::generate_for(alg, size).expect("a key");
        let der = key.to_pkcs8_der().expect("PKCS#8 DER");
        let token = key.sign_jwt(CLAIMS).expect("a token");
        let (signing_input, _) = token.rsplit_once('.').expect("three segments");
        let input = signing_input.as_bytes().to_vec();
        let mut bare: Box<dyn FnMut() + '_> = match alg {
            Algorithm::Rs256 | Algorithm::Ps256 => {
                let pair = RsaKeyPair::from_pkcs8(&der).expect("the same key");
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding =
                    if alg == Algorithm::Ps256 {
                        &RSA_PSS_SHA256
                    } else {
                        &RSA_PKCS1_SHA256
                    };
                let mut signature = vec![0u8; pair.public_modulus_len()];
                let input = input.clone();
                let rng = &rng;
                Box::new(move || {
                    pair.sign(padding, rng, black_box(&input), &mut signature)
                        .expect("signature");
                    black_box(&signature);
                })
            }
            Algorithm::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .expect("the same key");
                let input = input.clone();
                let rng = &rng;
                Box::new(move || {
                    black_box(pair.sign(rng, black_box(&input)).expect("signature"));
                })
            }
            Algorithm::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(&der).expect("the same key");
                let input = input.clone();
                Box::new(move || {
                    black_box(pair.sign(black_box(&input)));
                })
            }
        };
        group.bench_function(format!("{name}/aws_lc_rs_bare"), |b| b.iter(&mut bare));
        group.bench_function(format!("{name}/sign_jwt"), |b| {
            b.iter(|| key.sign_jwt(black_box(CLAIMS)).expect("token"));
        });
    }
    group.finish();
}

fn verifying(c: &mut Criterion) {
    let fixture = Fixture::start(multi_thread_runtime());
    let service = &fixture.service;
    let runtime = &fixture.runtime;
    let caller = Caller {
        credentials: Some(Credentials {
            id: "load".to_owned(),
            secret: String::new().into(),
        }),
        addr: None,
    };
    let grant = GrantRequest {
        grant_type: "client_credentials".to_owned(),
        ..GrantRequest::default()
    };
    let token = runtime
        .block_on(service.grant_client_credentials(&grant, &caller, Timestamp::now()))
        .expect("an access token")
        .access_token;
    let (signing_input, signature) = token.rsplit_once('.').expect("three segments");
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .expect("base64url");

    // The same kind of key, for aws-lc-rs directly (the service's is sealed
    // inside it): verification costs the same for every RSA-2048 key.
    let key = SigningKey::generate().expect("an RSA-2048 key");
    let pair = RsaKeyPair::from_pkcs8(&key.to_pkcs8_der().expect("PKCS#8 DER")).expect("a pair");
    let rng = SystemRandom::new();
    let mut own_signature = vec![0u8; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &rng,
        signing_input.as_bytes(),
        &mut own_signature,
    )
    .expect("a signature");
    let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref())
        .expect("a public key");
    // The service's own signature checks out too (its key is another one).
    assert_eq!(signature.len(), own_signature.len());

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("aws_lc_rs_bare", |b| {
        b.iter(|| {
            parsed
                .verify_sig(
                    black_box(signing_input.as_bytes()),
                    black_box(&own_signature),
                )
                .expect("a valid signature");
        });
    });
    group.bench_function("introspect", |b| {
        b.iter(|| {
            let answer = runtime
                .block_on(service.introspect(black_box(&token), &caller, Timestamp::now()))
                .expect("an answer");
            assert!(matches!(answer, Introspection::Active(_)));
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = signing, algorithms, verifying
}
criterion_main!(benches);
