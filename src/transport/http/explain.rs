//! A JSON body for the bodiless answers of lower layers: axum's 405 for a
//! known route and a method it does not serve, and the timeout layer's 408.
//! Every error a REST client sees then has the same shape ([`ApiError`]).

use axum::{
    extract::{MatchedPath, Request},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiError, router::route_label};

/// Replaces the empty body of a 405 or 408 with a JSON error that says what
/// to do; every other answer passes through untouched.
pub(super) async fn bodiless_answers(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    match response.status() {
        // axum adds the `Allow` header after this layer has run.
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {route}; the Allow header lists what is"),
        )
        .into_response(),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took too long to arrive; send it whole and promptly",
        )
        .into_response(),
        _ => response,
    }
}
