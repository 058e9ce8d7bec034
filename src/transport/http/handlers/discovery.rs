//! The issuer metadata documents: OpenID Connect discovery and RFC 8414
//! authorization server metadata, saying only what is true of this service.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::super::{AppState, dto::IssuerMetadata};

/// OpenID Connect discovery document.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "keys",
    responses((status = 200, description = "Issuer metadata", body = IssuerMetadata)))]
pub(crate) async fn openid_configuration(State(state): State<AppState>) -> Response {
    issuer_metadata(&state)
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "keys",
    responses((status = 200, description = "Issuer metadata", body = IssuerMetadata)))]
pub(crate) async fn oauth_authorization_server(State(state): State<AppState>) -> Response {
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
        id_token_signing_alg_values_supported: strings(&["RS256"]),
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
