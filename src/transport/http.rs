//! The axum adapter: the REST routes, their DTOs, and the one mapping of
//! domain errors to HTTP responses. `POST /auth` and gRPC `IssueToken` call the
//! same [`KeyService::issue_token`]; this file only reads what clients send
//! (query, credentials, form or JSON bodies) and writes what they expect.
//!
//! Every error is JSON: `{"error": "<code>", "detail": "<what to do>"}`.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, MatchedPath, RawQuery, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    error::Error,
    service::{IssuedToken, KeyService, StoreHealth, TokenRequest},
    time::Timestamp,
};

/// Largest request body accepted on any route.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
const JWK_SET_MEDIA_TYPE: &str = "application/jwk-set+json";

#[derive(Clone)]
struct AppState {
    service: KeyService,
    grpc_port: u16,
}

/// The REST facade over `service`.
pub fn router(service: KeyService, grpc_addr: SocketAddr) -> Router {
    let state = AppState {
        service,
        grpc_port: grpc_addr.port(),
    };
    Router::new()
        .route("/", get(root))
        .route("/health", get(health).post(health))
        .route("/connect", get(connect).post(connect))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/auth", axum::routing::post(auth))
        .fallback(not_found)
        .layer(middleware::from_fn(log_and_explain))
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
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "detail": self.detail})),
        )
            .into_response()
    }
}

/// The one mapping of domain errors to HTTP. No catch-all arm: a new variant
/// must be decided here.
impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match &err {
            Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            Error::NoSigningKey | Error::NoExpiredKey => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => {
                tracing::error!(error = %err.chain(), "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, err.code(), err.client_message())
    }
}

/// Logs one line per request and gives axum's bodiless 405s a JSON body.
async fn log_and_explain(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        // axum adds the `Allow` header after this layer has run.
        response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {route}; the Allow header lists what is"),
        )
        .into_response();
    }
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}; see GET /connect", uri.path()),
    )
}

async fn root() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "service": "jwks-server", "version": env!("CARGO_PKG_VERSION")}))
}

async fn health(State(state): State<AppState>) -> Response {
    let now = Timestamp::now();
    let health = state.service.health(now);
    let store = match &health.store {
        StoreHealth::Reachable => json!({"status": "ok"}),
        StoreHealth::Unreachable { since, error } => {
            json!({"status": "unreachable", "since": since.to_string(), "error": error})
        }
    };
    let signing_for = health.signing_until.map(|until| now.until(until).as_secs());
    if !health.can_sign {
        let body = json!({
            "status": "unavailable",
            "reason": "no signing key is active",
            "store": store,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let status = if health.store == StoreHealth::Reachable {
        "ok"
    } else {
        "degraded"
    };
    Json(json!({
        "status": status,
        "store": store,
        "signing_for_seconds": signing_for,
    }))
    .into_response()
}

async fn connect(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "service": "jwks-server",
        "status": "ok",
        "issuer": state.service.issuer(),
        "endpoints": {
            "jwks": "/.well-known/jwks.json",
            "auth": "/auth",
            "auth_expired": "/auth?expired=true",
            "health": "/health",
        },
        "grpc": {
            "port": state.grpc_port,
            "service": super::grpc::SERVICE_NAME,
            "reflection": true,
        },
    }))
}

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
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
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

/// What `/auth` reads from a JSON or form body. Unknown members are ignored:
/// clients send all sorts (grant_type, scope…).
#[derive(Debug, Default, Deserialize)]
struct AuthBody {
    username: Option<String>,
    #[serde(alias = "aud")]
    audience: Option<OneOrMany>,
    #[serde(alias = "expires_in")]
    lifetime_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The JSON answer for clients that send `Accept: application/json`.
#[derive(Serialize)]
struct TokenResponse<'a> {
    token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    kid: &'a str,
}

/// `POST /auth`: a token signed by the active key (or, with `expired`, by an
/// expired key). Accepts no body, form and JSON bodies, Basic and Bearer
/// credentials; a username becomes `sub`.
async fn auth(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let request = auth_request(query.as_deref(), &headers, body)?;
    let issued = state.service.issue_token(&request, Timestamp::now())?;
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

/// Reads an `/auth` request into the domain's [`TokenRequest`].
fn auth_request(
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<TokenRequest, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_request"
        };
        ApiError::new(
            status,
            code,
            format!("could not read the body ({rejection}); the limit is {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let expired = parse_expired(query.unwrap_or_default())?;
    let fields = parse_body(headers, &body)?;
    let basic_user = basic_username(headers)?;
    Ok(TokenRequest {
        expired,
        subject: fields.username.or(basic_user),
        audience: match fields.audience {
            None => Vec::new(),
            Some(OneOrMany::One(aud)) => vec![aud],
            Some(OneOrMany::Many(auds)) => auds,
        },
        lifetime_seconds: fields.lifetime_seconds,
    })
}

/// `expired` present with no value, `true` or `1`: expired; `false`, `0` or
/// absent: valid; anything else is refused.
fn parse_expired(query: &str) -> Result<bool, Error> {
    let mut expired = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "expired" {
            continue;
        }
        let this = match value.as_ref() {
            "" | "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(Error::invalid(
                    "expired",
                    format!(
                        "unsupported value {:?}; use expired, expired=true or expired=1 for an expired token, \
                         expired=false or expired=0 (or leave it out) for a valid one",
                        truncate(other, 64)
                    ),
                ));
            }
        };
        if expired.is_some_and(|seen| seen != this) {
            return Err(Error::invalid(
                "expired",
                "given more than once with different values",
            ));
        }
        expired = Some(this);
    }
    Ok(expired.unwrap_or(false))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<AuthBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(AuthBody::default());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "application/json" => parse_json_body(body).map_err(ApiError::bad_request),
        m if m.starts_with("application/") && m.ends_with("+json") => {
            parse_json_body(body).map_err(ApiError::bad_request)
        }
        "application/x-www-form-urlencoded" => parse_form_body(body).map_err(ApiError::bad_request),
        // Browsers' fetch() sends JSON as text/plain; curl without -H sends
        // nothing. Use the body if it is a JSON object, otherwise ignore it.
        "" | "text/plain" => Ok(parse_json_body(body).unwrap_or_default()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "cannot read a {} body; send application/json or application/x-www-form-urlencoded, or no body",
                truncate(other, 64)
            ),
        )),
    }
}

fn parse_json_body(body: &[u8]) -> Result<AuthBody, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn parse_form_body(body: &[u8]) -> Result<AuthBody, String> {
    std::str::from_utf8(body).map_err(|_| "form body is not valid UTF-8".to_owned())?;
    let mut fields = AuthBody::default();
    let mut audiences = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        match name.as_ref() {
            "username" => fields.username = Some(value.into_owned()),
            "audience" | "aud" => audiences.push(value.into_owned()),
            "lifetime_seconds" | "expires_in" => {
                let secs = value
                    .parse()
                    .map_err(|_| format!("{name} must be a whole number of seconds"))?;
                fields.lifetime_seconds = Some(secs);
            }
            _ => {}
        }
    }
    if !audiences.is_empty() {
        fields.audience = Some(OneOrMany::Many(audiences));
    }
    Ok(fields)
}

/// The username of HTTP Basic credentials; Bearer and other schemes carry none.
fn basic_username(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "malformed Authorization header: expected Basic base64(username:password) or Bearer TOKEN",
        )
    };
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = B64.decode(credentials.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let username = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    Ok((!username.is_empty()).then(|| username.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_accepts_the_documented_values_only() {
        for (query, want) in [
            ("", false),
            ("expired", true),
            ("expired=", true),
            ("expired=true", true),
            ("expired=1", true),
            ("expired=false", false),
            ("expired=0", false),
            ("other=1", false),
            ("expired=1&expired=true", true),
        ] {
            assert_eq!(parse_expired(query).unwrap(), want, "{query}");
        }
        for query in ["expired=yes", "expired=2", "expired=1&expired=0"] {
            assert!(parse_expired(query).is_err(), "{query}");
        }
    }

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
