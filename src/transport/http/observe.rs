//! One log line and one latency sample per REST request, whatever answered
//! it (a handler, the fallback, a lower layer's 405 or 408): the `request`
//! line with `method`, `route`, `status` and `latency_us`, and
//! `jwks_http_request_duration_seconds{method,route,status}`. Labels are
//! bounded: unknown routes and methods share one value each.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

use super::{AppState, router::route_label};

/// Times the request, then records and logs its final status.
pub(super) async fn each_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .observe_http(method_label(&method), route, status, elapsed);
    tracing::info!(
        %method,
        route,
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// Standard methods by name; anything else is "OTHER" (bounded label values).
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|known| **known == method.as_str())
        .copied()
        .unwrap_or("OTHER")
}
