//! The axum adapter: the REST door into [`crate::service::KeyService`].
//! `POST /auth` and gRPC `IssueToken` call the same
//! [`KeyService::issue_token`](crate::service::KeyService::issue_token); this
//! module only reads what clients send (query, credentials, form or JSON
//! bodies) and writes what they expect. It never imports the gRPC door.
//!
//! Every error is JSON: `{"error": "<code>", "detail": "<what to do>"}`.
//!
//! - `router`: the routes and the layers around them.
//! - `error`: [`ApiError`], the one mapping of domain errors to HTTP.
//! - `observe`: one log line and one latency sample per request.
//! - `explain`: a JSON body for the bodiless answers of lower layers (405, 408).
//! - `handlers`: one file per concern (service, keys, tokens, discovery, operations).
//! - `openapi`: [`ApiDoc`], the OpenAPI description generated from the handlers.
//! - `auth_input`: reading `POST /auth` into a domain request; `dto`: the JSON shapes.
//! - `oauth`: the OAuth 2.0 endpoints (token, introspection, revocation);
//!   `metadata`: the discovery documents, CORS preflight and JWKS negotiation.
//! - `serve`: the listener, hyper's limits and its own refusals.

mod auth_input;
mod dto;
mod error;
mod explain;
mod handlers;
mod metadata;
mod oauth;
mod observe;
mod openapi;
mod router;
mod serve;

pub use auth_input::{AuthBody, auth_request};
pub use error::ApiError;
pub use openapi::ApiDoc;
use router::AppState;
pub use router::router;
pub use serve::serve;

/// Largest request body accepted on any route.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
