//! The service's own routes: `/` (liveness), `/health` (readiness, with the
//! store's state and background faults) and `/connect` (where everything is,
//! including the gRPC port and service name, taken from the contract).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::super::{
    AppState,
    dto::{
        Endpoints, FaultReport, GrpcEndpoint, HealthReport, ServiceDiscovery, ServiceStatus,
        StoreStatus,
    },
    oauth,
};
use crate::{proto::key_service_server::SERVICE_NAME, service::StoreHealth, time::Timestamp};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "The service is up", body = ServiceStatus)))]
pub(crate) async fn root() -> Json<ServiceStatus> {
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
pub(crate) async fn health(State(state): State<AppState>) -> Response {
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
pub(crate) async fn connect(State(state): State<AppState>) -> Json<ServiceDiscovery> {
    Json(ServiceDiscovery {
        service: "jwks-server".into(),
        status: "ok".into(),
        issuer: state.service.issuer().to_owned(),
        endpoints: Endpoints {
            jwks: "/.well-known/jwks.json".into(),
            auth: "/auth".into(),
            auth_expired: "/auth?expired=true".into(),
            test_tokens: "/test-tokens".into(),
            health: "/health".into(),
            token: oauth::TOKEN_PATH.into(),
            introspection: oauth::INTROSPECT_PATH.into(),
            revocation: oauth::REVOKE_PATH.into(),
            oauth_authorization_server: "/.well-known/oauth-authorization-server".into(),
            openid_configuration: "/.well-known/openid-configuration".into(),
        },
        grpc: GrpcEndpoint {
            port: state.grpc_port,
            service: SERVICE_NAME.into(),
            reflection: true,
        },
    })
}
