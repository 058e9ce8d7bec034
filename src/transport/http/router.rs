//! The REST routes and the layers around them: which handler answers which
//! path and method, the request timeout, the body limit, and the order of the
//! cross-cutting layers ([`observe`](super::observe) outside
//! [`explain`](super::explain), so logs and metrics see the final answer). The
//! handlers themselves live in [`handlers`](super::handlers).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath},
    http::StatusCode,
    middleware,
    routing::{get, post},
};

use super::{
    ApiError, MAX_BODY_BYTES, explain,
    handlers::{auth, discovery, jwks, operations, service, test_tokens},
    metadata, oauth, observe,
};
use crate::{metrics::Metrics, service::KeyService};

/// What every handler is handed: the domain service, the metrics, and what
/// `/connect` tells clients about the other door.
#[derive(Clone)]
pub(super) struct AppState {
    pub(super) service: KeyService,
    pub(super) metrics: Arc<Metrics>,
    pub(super) grpc_port: u16,
}

/// The REST facade over `service`. Requests that take longer than
/// `request_timeout` (a slow body, say) get 408.
pub fn router(
    service: KeyService,
    metrics: Arc<Metrics>,
    grpc_addr: SocketAddr,
    request_timeout: std::time::Duration,
) -> Router {
    let state = AppState {
        service,
        metrics,
        grpc_port: grpc_addr.port(),
    };
    Router::new()
        .route("/", get(service::root))
        .route("/health", get(service::health).post(service::health))
        .route("/connect", get(service::connect).post(service::connect))
        .route(
            "/.well-known/jwks.json",
            get(jwks::jwks).options(metadata::preflight),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration).options(metadata::preflight),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::oauth_authorization_server).options(metadata::preflight),
        )
        .route("/openapi.json", get(operations::openapi_json))
        .route("/auth", post(auth::auth))
        .route("/test-tokens", get(test_tokens::test_tokens))
        .route("/metrics", get(operations::prometheus_metrics))
        .merge(oauth::routes())
        .fallback(not_found)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::from_fn(explain::bodiless_answers))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::each_request,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Every route this router serves: the labels of metrics and logs.
const ROUTES: &[&str] = &[
    "/",
    "/health",
    "/connect",
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/auth",
    "/test-tokens",
    "/metrics",
    "/openapi.json",
    oauth::TOKEN_PATH,
    oauth::INTROSPECT_PATH,
    oauth::REVOKE_PATH,
];

/// The route template as a static label; anything else is "(unmatched)".
pub(super) fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched
        .and_then(|m| ROUTES.iter().find(|route| **route == m.as_str()))
        .copied()
        .unwrap_or("(unmatched)")
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}; see GET /connect", uri.path()),
    )
}
