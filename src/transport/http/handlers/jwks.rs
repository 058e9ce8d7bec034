//! `GET /.well-known/jwks.json`: the key set as the service rendered it, with
//! the caching headers verifiers and CDNs rely on (`ETag`, `Cache-Control`,
//! `Vary`), 304 for a current copy, and RFC 7517's media type when asked.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::super::{
    ApiError, AppState,
    dto::{ErrorBody, JwkSet},
    metadata,
};
use crate::{
    metrics::{Door, JwksOutcome},
    time::Timestamp,
};

const JWK_SET_MEDIA_TYPE: &str = "application/jwk-set+json";

/// The JSON Web Key Set: every unexpired key, newest first. Cacheable:
/// `ETag`, `Cache-Control: public, max-age=N` (capped by the next key change),
/// `If-None-Match` gives 304.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier response")),
    responses(
        (status = 200, description = "The key set",
            content((JwkSet = "application/json"), (JwkSet = "application/jwk-set+json"))),
        (status = 304, description = "The caller's copy is current"),
        (status = 406, description = "The Accept header refuses both media types", body = ErrorBody),
    ))]
pub(crate) async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
    let Some(content_type) = metadata::jwks_media_type(&headers) else {
        return ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!("the key set is served as {JWK_SET_MEDIA_TYPE} or application/json"),
        )
        .into_response();
    };
    state.metrics.jwks_served(Door::Rest, JwksOutcome::Full);
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
