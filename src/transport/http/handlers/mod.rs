//! The REST handlers, one file per concern. Each extracts what the client
//! sent, calls the domain service once, and converts the answer back: no key
//! or token logic lives here.

use axum::http::{HeaderMap, header};

pub(super) mod auth;
pub(super) mod discovery;
pub(super) mod jwks;
pub(super) mod operations;
pub(super) mod service;
pub(super) mod test_tokens;

/// Whether the `Accept` header names `media_type` (parameters ignored).
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
