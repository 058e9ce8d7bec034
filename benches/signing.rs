//! What one token costs, layer by layer, single-threaded:
//!
//! - `sign/aws_lc_rs_bare`: one aws-lc-rs RSA-2048 PKCS#1 v1.5 SHA-256
//!   signature over a typical JWT signing input, key parsed once, output buffer
//!   reused. The floor: nothing of ours can be faster.
//! - `sign/sign_jwt`: [`SigningKey::sign_jwt`] on typical claims JSON: base64 of
//!   the claims, the signature, base64 of it, the token string.
//! - `sign/issue_token` and `sign/issue_token_expired`: the whole
//!   [`KeyService::issue_token`] (validation, key choice, claims JSON, `jti`, the
//!   signature) over a temporary SQLite store.
//! - `hop/worker_task` and `hop/spawn_blocking`: `issue_token` run in a task on
//!   a runtime worker and on the blocking pool, awaited from outside, to price
//!   the hop to the blocking pool (the throughput side of that choice is for
//!   `benches/load.sh` to show).
//!
//! Each group reports throughput as elements (signatures) per second, to
//! compare with `openssl speed rsa2048`'s signs/s.

#[path = "common/mod.rs"]
mod common;

use std::{hint::black_box, time::Duration};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jwks_server::{keys::crypto::SigningKey, service::TokenRequest, time::Timestamp};

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
            service
                .issue_token(black_box(&request), Timestamp::now())
                .expect("token")
        });
    });
    group.bench_function("issue_token_expired", |b| {
        b.iter(|| {
            service
                .issue_token(black_box(&expired), Timestamp::now())
                .expect("expired token")
        });
    });
    group.finish();

    let mut group = c.benchmark_group("hop");
    group.throughput(Throughput::Elements(1));
    let runtime = &fixture.runtime;
    group.bench_function("worker_task", |b| {
        b.iter(|| {
            let service = service.clone();
            let request = request.clone();
            runtime
                .block_on(async move {
                    tokio::spawn(async move { service.issue_token(&request, Timestamp::now()) })
                        .await
                })
                .expect("task")
                .expect("token")
        });
    });
    group.bench_function("spawn_blocking", |b| {
        b.iter(|| {
            let service = service.clone();
            let request = request.clone();
            runtime
                .block_on(async move {
                    tokio::task::spawn_blocking(move || {
                        service.issue_token(&request, Timestamp::now())
                    })
                    .await
                })
                .expect("task")
                .expect("token")
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = signing
}
criterion_main!(benches);
