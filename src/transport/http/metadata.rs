//! What the REST facade says about itself to standard clients: the RFC 8414
//! and OIDC discovery documents (true in every mode: only endpoints, grants
//! and client authentication methods actually served), CORS preflight for the
//! documents browsers fetch, and `Accept` negotiation (with q-values) for the
//! JWKS.

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{
    AppState,
    dto::IssuerMetadata,
    oauth::{INTROSPECT_PATH, REVOKE_PATH, TOKEN_PATH},
};

/// The discovery document for `state`'s issuer and mode.
pub(super) fn issuer_metadata(state: &AppState) -> Response {
    let issuer = state.service.issuer().trim_end_matches('/');
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // Without a clients file any client id is accepted with any secret or
    // none; with one, only a proven secret, by either method.
    let auth_methods = if state.service.requires_client_auth() {
        strings(&["client_secret_basic", "client_secret_post"])
    } else {
        strings(&["client_secret_basic", "client_secret_post", "none"])
    };
    let scopes = state.service.scopes_supported();
    let body = IssuerMetadata {
        issuer: state.service.issuer().to_owned(),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}{TOKEN_PATH}"),
        token_endpoint_auth_methods_supported: auth_methods.clone(),
        introspection_endpoint: format!("{issuer}{INTROSPECT_PATH}"),
        introspection_endpoint_auth_methods_supported: auth_methods.clone(),
        revocation_endpoint: format!("{issuer}{REVOKE_PATH}"),
        revocation_endpoint_auth_methods_supported: auth_methods,
        grant_types_supported: strings(&["client_credentials"]),
        // No authorization endpoint, so no response type: present and empty.
        response_types_supported: Vec::new(),
        scopes_supported: (!scopes.is_empty()).then_some(scopes),
        id_token_signing_alg_values_supported: state
            .service
            .algorithms()
            .iter()
            .map(ToString::to_string)
            .collect(),
        subject_types_supported: strings(&["public"]),
        claims_supported: strings(&[
            "iss",
            "sub",
            "aud",
            "iat",
            "nbf",
            "exp",
            "jti",
            "client_id",
            "scope",
        ]),
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

/// A CORS preflight for the public documents (the JWKS and discovery): 204,
/// any origin, the methods they serve.
pub(super) async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Accept, If-None-Match"),
            ),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            ),
        ],
    )
        .into_response()
}

/// The media type to serve the JWKS as, by RFC 9110 section 12.5.1: the
/// most specific matching range gives each type its q; the higher q wins,
/// `application/jwk-set+json` on a tie only when named. `None` when the
/// caller refuses both (`q=0`): a 406.
pub(super) fn jwks_media_type(headers: &HeaderMap) -> Option<&'static str> {
    const JWK_SET: &str = "application/jwk-set+json";
    const JSON: &str = "application/json";
    let ranges: Vec<(String, f32)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let range = parts.next()?.trim().to_ascii_lowercase();
            if range.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            Some((range, q))
        })
        .collect();
    if ranges.is_empty() {
        return Some(JSON);
    }
    // The q of the most specific range matching `media` (exact, type/*, */*).
    let quality = |media: &str| -> Option<f32> {
        let main = media.split('/').next().unwrap_or_default();
        let find = |wanted: &str| ranges.iter().find(|(r, _)| r == wanted).map(|(_, q)| *q);
        find(media)
            .or_else(|| find(&format!("{main}/*")))
            .or_else(|| find("*/*"))
    };
    let named = ranges.iter().any(|(r, _)| r == JWK_SET);
    let jwk_set = quality(JWK_SET).unwrap_or(0.0);
    let json = quality(JSON).unwrap_or(0.0);
    match (jwk_set > 0.0, json > 0.0) {
        (false, false) => None,
        (true, false) => Some(JWK_SET),
        (false, true) => Some(JSON),
        (true, true) if jwk_set > json || (jwk_set == json && named) => Some(JWK_SET),
        (true, true) => Some(JSON),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &str) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        jwks_media_type(&headers)
    }

    #[test]
    fn jwks_accept_honours_q_values() {
        assert_eq!(
            negotiate("application/jwk-set+json"),
            Some("application/jwk-set+json")
        );
        assert_eq!(negotiate("*/*"), Some("application/json"));
        assert_eq!(negotiate("application/jwk-set+json;q=0"), None);
        assert_eq!(
            negotiate("application/jwk-set+json;q=0, */*;q=0.1"),
            Some("application/json")
        );
        assert_eq!(
            negotiate("application/jwk-set+json;q=0.5, application/json"),
            Some("application/json")
        );
        assert_eq!(negotiate("text/html"), None);
        assert_eq!(negotiate("application/*"), Some("application/json"));
        assert_eq!(jwks_media_type(&HeaderMap::new()), Some("application/json"));
    }
}
