//! The issuer metadata documents: OpenID Connect discovery and RFC 8414
//! authorization server metadata, saying only what is true of this service.

use axum::{extract::State, response::Response};

use super::super::{AppState, dto::IssuerMetadata, metadata};

/// OpenID Connect discovery document.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "keys",
    responses((status = 200, description = "Issuer metadata", body = IssuerMetadata)))]
pub(crate) async fn openid_configuration(State(state): State<AppState>) -> Response {
    metadata::issuer_metadata(&state)
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "keys",
    responses((status = 200, description = "Issuer metadata", body = IssuerMetadata)))]
pub(crate) async fn oauth_authorization_server(State(state): State<AppState>) -> Response {
    metadata::issuer_metadata(&state)
}
