//! The REST facade in process: the axum router driven with `tower::oneshot` on
//! a current-thread runtime, no sockets, so what is measured is routing,
//! middleware, extraction, the handler and the response body, and nothing of
//! the kernel or HTTP/1 parsing (`benches/load.sh` measures those).
//!
//! - `rest/jwks`, `rest/jwks_if_none_match`, `rest/auth`, `rest/auth_expired`:
//!   each route (with its metrics and request timeout, as served) with no log
//!   subscriber installed.
//! - `rest_logged/…`: the same requests with an `info`-level text subscriber
//!   writing to a sink, as the server logs by default: the cost of one log
//!   line per request, without the cost of the write.
// Tests and tools: a failed assumption should stop them loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use criterion::{Criterion, criterion_group, criterion_main};
use jwks_server::{metrics::Metrics, time::Timestamp, transport::http};
use tokio::runtime::Runtime;
use tower::ServiceExt;

use common::Fixture;

/// One request as a client sends it: method, path and an optional header.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    header: Option<(header::HeaderName, String)>,
    expect: StatusCode,
}

fn cases(etag: &str) -> Vec<Case> {
    vec![
        Case {
            name: "jwks",
            method: Method::GET,
            path: "/.well-known/jwks.json",
            header: None,
            expect: StatusCode::OK,
        },
        Case {
            name: "jwks_if_none_match",
            method: Method::GET,
            path: "/.well-known/jwks.json",
            header: Some((header::IF_NONE_MATCH, etag.to_owned())),
            expect: StatusCode::NOT_MODIFIED,
        },
        Case {
            name: "auth",
            method: Method::POST,
            path: "/auth",
            header: None,
            expect: StatusCode::OK,
        },
        Case {
            name: "auth_expired",
            method: Method::POST,
            path: "/auth?expired=true",
            header: None,
            expect: StatusCode::OK,
        },
    ]
}

/// Sends one request through the router and reads the whole body.
fn send(runtime: &Runtime, router: &Router, case: &Case) -> usize {
    let mut request = Request::builder()
        .method(case.method.clone())
        .uri(case.path);
    if let Some((name, value)) = &case.header {
        request = request.header(name, value);
    }
    // The server's accept loop adds the peer address (for per-address limits).
    let request = request
        .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))))
        .body(Body::empty())
        .expect("a request");
    runtime.block_on(async {
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), case.expect, "{}", case.path);
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
            .len()
    })
}

fn rest(c: &mut Criterion) {
    // Current-thread: the router runs on this thread, so a thread-local log
    // subscriber sees its events.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let fixture = Fixture::start(runtime);
    let router = http::router(
        fixture.service.clone(),
        Arc::new(Metrics::new()),
        "127.0.0.1:50051".parse().expect("an address"),
        Duration::from_secs(10),
    );
    let etag = fixture.service.jwks(Timestamp::now()).etag.clone();
    let cases = cases(&etag);

    let mut group = c.benchmark_group("rest");
    for case in &cases {
        group.bench_function(case.name, |b| {
            b.iter(|| send(&fixture.runtime, &router, case));
        });
    }
    group.finish();

    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut group = c.benchmark_group("rest_logged");
        for case in &cases {
            group.bench_function(case.name, |b| {
                b.iter(|| send(&fixture.runtime, &router, case));
            });
        }
        group.finish();
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = rest
}
criterion_main!(benches);
