//! [`ApiError`], an error as REST clients see it, and the one mapping of
//! domain errors ([`crate::error::Error`]) to HTTP statuses and headers.
//! Handlers return it; [`explain`](super::explain) and [`serve`](super::serve)
//! use it for the answers they write themselves.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::error::{AuthProblem, Error};

/// An error as REST clients see it: a status and a JSON body
/// `{"error": code, "detail": detail}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    pub(super) detail: String,
    /// `WWW-Authenticate`, `Retry-After` and the like.
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    pub(super) fn bad_request(detail: impl Into<String>) -> Self {
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
            Error::ExpiredTokensDisabled
            | Error::TestTokensDisabled(_)
            | Error::AudienceNotPermitted { .. } => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NoSigningKey | Error::NoExpiredKey | Error::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::SignerUnavailable(_) => {
                tracing::warn!(error = %err.chain(), "request refused: signing key unavailable");
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
                "{err}; start it with --test-tokens=true (JWKS_TEST_TOKENS=true) to allow \
                 them"
            ),
            Error::TestTokensDisabled(_) => format!(
                "{err}; start it with --test-tokens=true (JWKS_TEST_TOKENS=true) to allow them"
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
            Error::RateLimited { .. } | Error::Busy | Error::SignerUnavailable(_) => match err
                .retry_after_secs()
            {
                Some(seconds) => api.with_header(header::RETRY_AFTER, HeaderValue::from(seconds)),
                None => api,
            },
            _ => api,
        }
    }
}
