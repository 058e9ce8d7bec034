//! The axum adapter: the REST routes, their DTOs, and the one mapping of
//! domain errors to HTTP responses. `POST /auth` and gRPC `IssueToken` call the
//! same [`KeyService::issue_token`]; this file only reads what clients send
//! (query, credentials, form or JSON bodies) and writes what they expect.
//!
//! Every error is JSON: `{"error": "<code>", "detail": "<what to do>"}`.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Instant,
};

use axum::{
    Extension, Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, RawQuery, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use utoipa::OpenApi;

use crate::{
    access::Caller,
    error::{AuthProblem, Error},
    metrics::{Door, JwksOutcome, Metrics},
    service::{IssuedToken, KeyService, StoreHealth},
    time::Timestamp,
};

mod auth_input;
mod dto;
mod serve;

pub use auth_input::{AuthBody, auth_request};
use dto::{
    Endpoints, ErrorBody, FaultReport, GrpcEndpoint, HealthReport, IssuerMetadata, JwkSet,
    ServiceDiscovery, ServiceStatus, StoreStatus, TokenResponse,
};
pub use serve::serve;

/// The OpenAPI 3.1 description of the REST facade, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "jwks-server",
        description = "Publishes signing keys as a JWKS and issues JWTs (RS256 by default; \
                       PS256, ES256 and EdDSA with --algorithms). \
                       The same operations are served over gRPC (jwks.v1.KeyService)."
    ),
    paths(
        root,
        health,
        connect,
        jwks,
        auth,
        openid_configuration,
        oauth_authorization_server,
        prometheus_metrics,
        openapi_json
    ),
    components(schemas(ErrorBody, AuthBody))
)]
pub struct ApiDoc;

/// Largest request body accepted on any route.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
const JWK_SET_MEDIA_TYPE: &str = "application/jwk-set+json";

#[derive(Clone)]
struct AppState {
    service: KeyService,
    metrics: Arc<Metrics>,
    grpc_port: u16,
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
        .route("/", get(root))
        .route("/health", get(health).post(health))
        .route("/connect", get(connect).post(connect))
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth_authorization_server),
        )
        .route("/openapi.json", get(openapi_json))
        .route("/auth", axum::routing::post(auth))
        .route("/metrics", get(prometheus_metrics))
        .fallback(not_found)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            log_and_explain,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An error as REST clients see it: a status and a JSON body
/// `{"error": code, "detail": detail}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    /// `WWW-Authenticate`, `Retry-After` and the like.
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": self.code, "detail": self.detail})),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// The one mapping of domain errors to HTTP. No catch-all arm: a new variant
/// must be decided here.
impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match &err {
            Error::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Error::ClientNotAuthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::ExpiredTokensDisabled | Error::AudienceNotPermitted { .. } => {
                StatusCode::FORBIDDEN
            }
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NoSigningKey | Error::NoExpiredKey | Error::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) => {
                tracing::error!(error = %err.chain(), "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        // The domain says what is so; this door adds how a caller or an
        // operator changes it, in the words (flags, fields) it knows.
        let detail = match &err {
            Error::ExpiredTokensDisabled => format!(
                "{err}; start it with --expired-tokens=true (JWKS_EXPIRED_TOKENS=true) to allow \
                 them"
            ),
            Error::ClientNotAuthenticated(AuthProblem::Missing) => format!(
                "{err}: HTTP Basic (client_id:client_secret), or form or JSON fields client_id \
                 and client_secret"
            ),
            _ => err.client_message(),
        };
        let api = Self::new(status, err.code(), detail);
        match &err {
            Error::ClientNotAuthenticated(_) => api.with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"jwks-server\", charset=\"UTF-8\""),
            ),
            Error::RateLimited { .. } | Error::Busy => match err.retry_after_secs() {
                Some(seconds) => api.with_header(header::RETRY_AFTER, HeaderValue::from(seconds)),
                None => api,
            },
            _ => api,
        }
    }
}

/// Logs one line per request and gives axum's bodiless 405s a JSON body.
async fn log_and_explain(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let mut response = next.run(request).await;
    // Give the bodiless answers of lower layers a JSON body like every other error.
    match response.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            // axum adds the `Allow` header after this layer has run.
            response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {route}; the Allow header lists what is"),
            )
            .into_response();
        }
        StatusCode::REQUEST_TIMEOUT => {
            response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request took too long to arrive; send it whole and promptly",
            )
            .into_response();
        }
        _ => {}
    }
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

/// Every route this router serves: the labels of metrics and logs.
const ROUTES: &[&str] = &[
    "/",
    "/health",
    "/connect",
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/auth",
    "/metrics",
    "/openapi.json",
];

/// The route template as a static label; anything else is "(unmatched)".
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched
        .and_then(|m| ROUTES.iter().find(|route| **route == m.as_str()))
        .copied()
        .unwrap_or("(unmatched)")
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

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}; see GET /connect", uri.path()),
    )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "The service is up", body = ServiceStatus)))]
async fn root() -> Json<ServiceStatus> {
    Json(ServiceStatus {
        status: "ok".into(),
        service: "jwks-server".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Readiness: 200 while a key can sign (`degraded` when the store is
/// unreachable or a background fault has not cleared, but held keys still
/// sign), 503 when none can.
#[utoipa::path(method(get, post), path = "/health", tag = "service",
    responses(
        (status = 200, description = "A key can sign", body = HealthReport),
        (status = 503, description = "No key can sign", body = HealthReport),
    ))]
async fn health(State(state): State<AppState>) -> Response {
    let now = Timestamp::now();
    let health = state.service.health(now);
    let store = match &health.store {
        StoreHealth::Reachable => StoreStatus {
            status: "ok".into(),
            since: None,
            error: None,
        },
        StoreHealth::Unreachable { since, error } => StoreStatus {
            status: "unreachable".into(),
            since: Some(since.to_string()),
            error: Some(error.clone()),
        },
    };
    let mut report = HealthReport {
        status: "ok".into(),
        store,
        signing_for_seconds: health.signing_until.map(|until| now.until(until).as_secs()),
        reason: None,
        faults: health
            .faults
            .iter()
            .map(|fault| FaultReport {
                kind: fault.kind.as_str().into(),
                since: fault.since.to_string(),
                error: fault.error.clone(),
            })
            .collect(),
    };
    if !health.can_sign {
        report.status = "unavailable".into();
        report.reason = Some("no signing key is active".into());
        return (StatusCode::SERVICE_UNAVAILABLE, Json(report)).into_response();
    }
    if health.store != StoreHealth::Reachable {
        report.status = "degraded".into();
    }
    if let Some(fault) = health.faults.first() {
        report.status = "degraded".into();
        report.reason = Some(fault.to_string());
    }
    Json(report).into_response()
}

/// Service discovery: where everything is.
#[utoipa::path(method(get, post), path = "/connect", tag = "service",
    responses((status = 200, description = "Endpoints of this service", body = ServiceDiscovery)))]
async fn connect(State(state): State<AppState>) -> Json<ServiceDiscovery> {
    Json(ServiceDiscovery {
        service: "jwks-server".into(),
        status: "ok".into(),
        issuer: state.service.issuer().to_owned(),
        endpoints: Endpoints {
            jwks: "/.well-known/jwks.json".into(),
            auth: "/auth".into(),
            auth_expired: "/auth?expired=true".into(),
            health: "/health".into(),
        },
        grpc: GrpcEndpoint {
            port: state.grpc_port,
            service: super::grpc::SERVICE_NAME.into(),
            reflection: true,
        },
    })
}

/// Prometheus metrics, text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn prometheus_metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.service, Timestamp::now());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// OpenID Connect discovery document.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "keys",
    responses((status = 200, description = "Issuer metadata", body = IssuerMetadata)))]
async fn openid_configuration(State(state): State<AppState>) -> Response {
    issuer_metadata(&state)
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "keys",
    responses((status = 200, description = "Issuer metadata", body = IssuerMetadata)))]
async fn oauth_authorization_server(State(state): State<AppState>) -> Response {
    issuer_metadata(&state)
}

/// Only what is true of this service: it has no authorization endpoint and
/// issues access tokens, not ID tokens of its own.
fn issuer_metadata(state: &AppState) -> Response {
    let issuer = state.service.issuer().trim_end_matches('/');
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    let body = IssuerMetadata {
        issuer: state.service.issuer().to_owned(),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}/auth"),
        token_endpoint_auth_methods_supported: strings(&["none"]),
        id_token_signing_alg_values_supported: state
            .service
            .algorithms()
            .iter()
            .map(ToString::to_string)
            .collect(),
        subject_types_supported: strings(&["public"]),
        claims_supported: strings(&["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]),
    };
    (
        [
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        Json(body),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 description of the REST facade")))]
async fn openapi_json() -> Response {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// The JSON Web Key Set: every unexpired key, newest first. Cacheable:
/// `ETag`, `Cache-Control: public, max-age=N` (capped by the next key change),
/// `If-None-Match` gives 304.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier response")),
    responses(
        (status = 200, description = "The key set",
            content((JwkSet = "application/json"), (JwkSet = "application/jwk-set+json"))),
        (status = 304, description = "The caller's copy is current"),
    ))]
async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let now = Timestamp::now();
    let jwks = state.service.jwks(now);
    let max_age = jwks.max_age(now, state.service.policy().jwks_max_age);
    let etag = HeaderValue::from_str(&jwks.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache_control = HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, cache_control),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (header::VARY, HeaderValue::from_static("Accept")),
    ];
    if if_none_match(&headers, &jwks.etag) {
        state
            .metrics
            .jwks_served(Door::Rest, JwksOutcome::NotModified);
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    state.metrics.jwks_served(Door::Rest, JwksOutcome::Full);
    let content_type = if accepts(&headers, JWK_SET_MEDIA_TYPE) {
        JWK_SET_MEDIA_TYPE
    } else {
        "application/json"
    };
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        Body::from(jwks.json.clone()),
    )
        .into_response()
}

/// RFC 9110 `If-None-Match`: `*` or a list of (possibly weak) entity tags.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(media_type))
        })
}

/// Issues a JWT signed by the active key of the algorithm asked for (`alg`),
/// or with `expired` one signed
/// by an expired key with `exp` in the past. Accepts no body, form and JSON
/// bodies, Basic and Bearer credentials; a username becomes `sub`. The token
/// comes as text, or as JSON with `Accept: application/json`.
#[utoipa::path(post, path = "/auth", tag = "tokens",
    params(("expired" = Option<String>, Query,
        description = "Present with no value, `true` or `1`: an expired token. `false`, `0` or absent: a valid one. \
                       May be given in the body instead; given in both, the two must agree.")),
    request_body(description = "Optional; JSON or form",
        content((AuthBody = "application/json"), (AuthBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "A compact JWT (text/plain), or JSON with Accept: application/json",
            content((String = "text/plain"), (TokenResponse = "application/json"))),
        (status = 400, description = "A bad parameter or body, or conflicting input (a member twice, a name with its alias, query and body disagreeing, two Authorization or Content-Type headers, two credential methods); the detail names it", body = ErrorBody),
        (status = 401, description = "Client credentials required (with --clients-file)", body = ErrorBody),
        (status = 403, description = "Expired tokens disabled, or an audience the client may not ask for", body = ErrorBody),
        (status = 429, description = "Rate limited (with --rate-limit), or too many client secret checks from this address (with --clients-file); see Retry-After", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "A body of an unsupported type", body = ErrorBody),
        (status = 503, description = "No key can sign, or too many client secret checks queued; see Retry-After", body = ErrorBody),
    ))]
async fn auth(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (request, credentials) = auth_request(query.as_deref(), &headers, body)?;
    let caller = Caller {
        credentials,
        addr: peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
    };
    let issued = state
        .service
        .issue_token(&request, &caller, Timestamp::now())
        .await?;
    state
        .metrics
        .token_issued(Door::Rest, request.expired, issued.alg);
    Ok(token_response(&headers, &issued))
}

fn token_response(headers: &HeaderMap, issued: &IssuedToken) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if accepts(headers, "application/json") {
        let body = TokenResponse {
            token: &issued.token,
            token_type: IssuedToken::TOKEN_TYPE,
            expires_in: issued.expires_in,
            kid: &issued.kid,
        };
        (no_store, Json(body)).into_response()
    } else {
        (
            no_store,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            issued.token.clone(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_handles_lists_weak_tags_and_star() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(if_none_match(&headers, "\"b\""));
        assert!(!if_none_match(&headers, "\"c\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&headers, "\"c\""));
    }
}
