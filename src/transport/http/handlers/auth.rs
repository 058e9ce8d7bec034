//! `POST /auth`: reads the request ([`auth_request`]), asks the domain for a
//! token with the caller's credentials and address, and answers with the
//! compact JWT as text, or as JSON for clients that accept it.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{ConnectInfo, RawQuery, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::{
    super::{
        ApiError, AppState, AuthBody, auth_request,
        dto::{ErrorBody, TokenResponse},
    },
    accepts,
};
use crate::{access::Caller, metrics::Door, service::IssuedToken, time::Timestamp};

/// Issues a JWT signed by the active key of the algorithm asked for (`alg`),
/// or with `expired` one signed
/// by an expired key with `exp` in the past. Accepts no body, form and JSON
/// bodies, Basic and Bearer credentials; a username becomes `sub`. The token
/// comes as text, or as JSON with `Accept: application/json`.
#[utoipa::path(post, path = "/auth", tag = "tokens",
    params(("expired" = Option<String>, Query,
        description = "Present with no value, `true` or `1`: an expired token. `false`, `0` or absent: a valid one. \
                       May be given in the body instead; given in both, the two must agree."),
        ("defect" = Option<String>, Query,
        description = "A defective test token by name (see GET /test-tokens), e.g. `alg-none`. \
                       May be given in the body instead; given in both, the two must agree.")),
    request_body(description = "Optional; JSON or form",
        content((AuthBody = "application/json"), (AuthBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "A compact JWT (text/plain), or JSON with Accept: application/json",
            content((String = "text/plain"), (TokenResponse = "application/json"))),
        (status = 400, description = "A bad parameter or body, or conflicting input (a member twice, a name with its alias, query and body disagreeing, two Authorization or Content-Type headers, two credential methods); the detail names it", body = ErrorBody),
        (status = 401, description = "Client credentials required (with --clients-file)", body = ErrorBody),
        (status = 403, description = "Expired or other test tokens disabled, or an audience the client may not ask for", body = ErrorBody),
        (status = 429, description = "Rate limited (with --rate-limit), or too many client secret checks from this address (with --clients-file); see Retry-After", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "A body of an unsupported type", body = ErrorBody),
        (status = 503, description = "No key can sign, or too many client secret checks queued; see Retry-After", body = ErrorBody),
    ))]
pub(crate) async fn auth(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (request, credentials) = auth_request(query.as_deref(), &headers, body)?;
    let caller = Caller {
        credentials,
        addr: peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
    };
    let issued = state
        .service
        .issue_token(&request, &caller, Timestamp::now())
        .await?;
    state.metrics.issued(Door::Rest, issued.defect, issued.alg);
    Ok(token_response(&headers, &issued))
}

fn token_response(headers: &HeaderMap, issued: &IssuedToken) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if accepts(headers, "application/json") {
        let body = TokenResponse {
            token: &issued.token,
            access_token: &issued.token,
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
