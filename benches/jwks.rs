//! What serving the JWKS costs, per request and per key change:
//!
//! - `jwks/service_jwks`: [`KeyService::jwks`], the hot path both transports
//!   call per request (a snapshot load and a pointer copy while no key expires).
//! - `jwks/grpc_response_encode`: what gRPC `GetJwks` does per request on top:
//!   build the `GetJwksResponse` from the keys and protobuf-encode it (REST
//!   serves pre-rendered bytes instead).
//! - `jwks/json_per_request`: the counterfactual, rendering the JSON per request,
//!   to show what rendering once per key change saves.
//! - `jwks/keyring_new`: building a [`KeyRing`] from loaded keys (sort, render
//!   JSON, hash the ETag), which happens once per key change.
//!
//! The keys are the ones a fresh store starts with (one published key, one
//! expired one).
// Tests and tools: a failed assumption should stop them loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use jwks_server::{
    keys::ring::KeyRing,
    proto::{GetJwksResponse, Jwk},
    time::Timestamp,
};
use prost::Message;
use serde::Serialize;

use common::{Fixture, multi_thread_runtime};

#[derive(Serialize)]
struct JwkSet<'a> {
    keys: &'a [jwks_server::keys::crypto::PublicJwk],
}

fn jwks(c: &mut Criterion) {
    let fixture = Fixture::start(multi_thread_runtime());
    let service = &fixture.service;
    let now = Timestamp::now();
    let document = service.jwks(now);
    assert!(!document.keys.is_empty(), "a fresh store publishes a key");

    let mut group = c.benchmark_group("jwks");
    group.bench_function("service_jwks", |b| {
        b.iter(|| service.jwks(black_box(now)));
    });
    group.bench_function("grpc_response_encode", |b| {
        b.iter(|| {
            let jwks = service.jwks(black_box(now));
            GetJwksResponse {
                keys: jwks.keys.iter().map(Jwk::from).collect(),
                etag: jwks.etag.clone(),
                max_age_seconds: 600,
                not_modified: false,
            }
            .encode_to_vec()
        });
    });
    group.bench_function("json_per_request", |b| {
        b.iter(|| {
            serde_json::to_vec(&JwkSet {
                keys: &black_box(&document).keys,
            })
            .expect("JSON")
        });
    });
    let ring = service.ring();
    group.bench_function("keyring_new", |b| {
        b.iter(|| KeyRing::new(ring.keys().to_vec(), black_box(now), service.policy()));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = jwks
}
criterion_main!(benches);
