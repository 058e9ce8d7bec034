//! The OAuth 2.0 routes: `POST /oauth2/token` (RFC 6749 §4.4, client
//! credentials), `POST /oauth2/introspect` (RFC 7662) and `POST
//! /oauth2/revoke` (RFC 7009). This file reads their
//! `application/x-www-form-urlencoded` bodies and client credentials
//! (`client_secret_basic`, decoded as RFC 6749 §2.3.1 says, or
//! `client_secret_post`), calls the service, and writes RFC 6749 §5.1
//! answers and §5.2 errors (`{"error","error_description"}`).
//!
//! What is granted, verified or revoked is the service's (`service::oauth`).

use std::net::SocketAddr;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{ConnectInfo, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, MAX_BODY_BYTES};
use crate::{
    access::{Caller, Credentials},
    service::{AccessToken, GrantRequest, Introspection, OAuthError, OAuthErrorCode},
    time::Timestamp,
};

pub const TOKEN_PATH: &str = "/oauth2/token";
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";
pub const REVOKE_PATH: &str = "/oauth2/revoke";

/// The three OAuth routes, for the router to merge.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(INTROSPECT_PATH, post(introspect))
        .route(REVOKE_PATH, post(revoke))
}

/// An RFC 6749 §5.2 error as REST clients see it.
#[derive(Debug)]
pub struct OAuthResponseError(OAuthError);

impl From<OAuthError> for OAuthResponseError {
    fn from(error: OAuthError) -> Self {
        Self(error)
    }
}

fn invalid_request(description: impl Into<String>) -> OAuthResponseError {
    OAuthError::invalid_request(description).into()
}

/// The one mapping of OAuth error codes to HTTP statuses. No catch-all arm.
fn status_of(code: OAuthErrorCode) -> StatusCode {
    match code {
        OAuthErrorCode::InvalidRequest
        | OAuthErrorCode::InvalidGrant
        | OAuthErrorCode::UnauthorizedClient
        | OAuthErrorCode::UnsupportedGrantType
        | OAuthErrorCode::InvalidScope
        | OAuthErrorCode::InvalidTarget => StatusCode::BAD_REQUEST,
        OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        OAuthErrorCode::SlowDown => StatusCode::TOO_MANY_REQUESTS,
        OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// RFC 6749 §5.2: the body of every OAuth error.
#[derive(Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// The RFC 6749 §5.2 code (or RFC 8707's `invalid_target`, RFC 8628's
    /// `slow_down`).
    #[schema(example = "invalid_client")]
    pub error: &'static str,
    /// What went wrong, for the developer reading it.
    pub error_description: String,
}

impl IntoResponse for OAuthResponseError {
    fn into_response(self) -> Response {
        let Self(error) = self;
        let status = status_of(error.code);
        let body = OAuthErrorBody {
            error: error.code.as_str(),
            error_description: error.description,
        };
        let mut response = (status, no_store(), Json(body)).into_response();
        let headers = response.headers_mut();
        if error.code == OAuthErrorCode::InvalidClient {
            // §5.2: required when the client used the Authorization header;
            // said always, so a client that sent none learns the scheme.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"jwks-server\", charset=\"UTF-8\""),
            );
        }
        if let Some(seconds) = error.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// §5.1: token answers (and errors, and introspection) are never cached.
fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// An OAuth request body: its parameters, each once (§3.2) except those
/// named in `repeatable`, with empty values treated as absent (§3.1).
struct FormParams {
    pairs: Vec<(String, String)>,
}

impl FormParams {
    fn read(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        repeatable: &[&str],
    ) -> Result<Self, OAuthResponseError> {
        let body = body.map_err(|rejection| {
            invalid_request(format!(
                "could not read the body ({rejection}); the limit is {MAX_BODY_BYTES} bytes"
            ))
        })?;
        if headers
            .get_all(header::CONTENT_TYPE)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(invalid_request(
                "the Content-Type header is sent more than once",
            ));
        }
        let media_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media_type != "application/x-www-form-urlencoded" {
            return Err(invalid_request(
                "send the parameters as application/x-www-form-urlencoded (RFC 6749 section 4.4.2)",
            ));
        }
        if std::str::from_utf8(&body).is_err() {
            return Err(invalid_request("the form body is not valid UTF-8"));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(&body) {
            if value.is_empty() {
                continue;
            }
            if !repeatable.contains(&name.as_ref()) && pairs.iter().any(|(n, _)| *n == name) {
                return Err(invalid_request(format!(
                    "{} is given more than once; send each parameter once (RFC 6749 section 3.2)",
                    crate::text::for_log(&name, 64)
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self { pairs })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let index = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(index).1)
    }

    fn take_all(&mut self, name: &str) -> Vec<String> {
        let (taken, kept) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.pairs = kept;
        taken.into_iter().map(|(_, v)| v).collect()
    }
}

/// The caller's client credentials: HTTP Basic (`client_secret_basic`) or
/// the `client_id`/`client_secret` parameters (`client_secret_post`, or a
/// public client's bare `client_id`); both at once is `invalid_request`
/// (§2.3).
fn client_credentials(
    headers: &HeaderMap,
    form: &mut FormParams,
) -> Result<Option<Credentials>, OAuthResponseError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let first = authorization.next();
    if authorization.next().is_some() {
        return Err(invalid_request(
            "the Authorization header is sent more than once",
        ));
    }
    let basic = match first {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| invalid_request("the Authorization header is not valid text"))?;
            Credentials::from_authorization(value).map_err(invalid_request)?
        }
    };
    let (id, secret) = (form.take("client_id"), form.take("client_secret"));
    match (basic, id, secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(invalid_request(
            "client credentials are in both the Authorization header and the body; use one \
             method (RFC 6749 section 2.3)",
        )),
        (Some(basic), None, None) => Ok(Some(basic)),
        (None, Some(id), secret) => Ok(Some(Credentials {
            id,
            secret: secret.unwrap_or_default().into(),
        })),
        (None, None, Some(_)) => Err(invalid_request(
            "client_secret is given without client_id; send both, or use HTTP Basic",
        )),
        (None, None, None) => Ok(None),
    }
}

fn peer_addr(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<std::net::IpAddr> {
    peer.map(|Extension(ConnectInfo(addr))| addr.ip())
}

/// RFC 6749 §5.1: a successful token answer.
#[derive(Serialize, ToSchema)]
pub struct AccessTokenBody<'a> {
    /// An RFC 9068 JWT access token (header `typ: at+jwt`).
    pub access_token: &'a str,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token's `exp`.
    pub expires_in: i64,
    /// The scopes granted, space-delimited; absent when none were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'a str>,
}

/// The form of `POST /oauth2/token` (RFC 6749 §4.4.2, RFC 8707). Client
/// credentials go here (`client_secret_post`) or in HTTP Basic
/// (`client_secret_basic`), not both.
#[derive(ToSchema)]
#[allow(dead_code)] // read by hand (`FormParams`): repeats are refused, empties ignored
pub struct TokenForm {
    /// `client_credentials`, the one grant served.
    #[schema(example = "client_credentials")]
    grant_type: String,
    /// Space-delimited scopes (RFC 6749 §3.3).
    scope: Option<String>,
    /// The `aud` asked for, by name; repeatable.
    audience: Option<Vec<String>>,
    /// RFC 8707 resource indicators (absolute URIs), also put in `aud`; repeatable.
    resource: Option<Vec<String>>,
    /// The algorithm to sign with (RS256, PS256, ES256, EdDSA), one of `--algorithms`.
    alg: Option<String>,
    /// A defective test access token by name (see `GET /test-tokens`), e.g. `wrong-typ`.
    defect: Option<String>,
    /// Claims to add, a JSON object (see `GET /test-tokens` and the README's claims section).
    claims: Option<String>,
    /// `client_secret_post`, or a public client's bare id without --clients-file.
    client_id: Option<String>,
    /// `client_secret_post`.
    client_secret: Option<String>,
}

/// The form of `POST /oauth2/introspect` (RFC 7662 §2.1) and `POST
/// /oauth2/revoke` (RFC 7009 §2.1).
#[derive(ToSchema)]
#[allow(dead_code)] // read by hand (`FormParams`)
pub struct TokenHintForm {
    /// The token asked about.
    token: String,
    /// Accepted and not needed: this server has one kind of token.
    token_type_hint: Option<String>,
    /// `client_secret_post` (with --clients-file).
    client_id: Option<String>,
    /// `client_secret_post` (with --clients-file).
    client_secret: Option<String>,
}

/// `POST /oauth2/token`: the client credentials grant.
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth",
    params(("Authorization" = Option<String>, Header,
        description = "client_secret_basic: `Basic base64(id:secret)`, id and secret form-encoded first (RFC 6749 section 2.3.1)")),
    request_body(content((TokenForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "An access token (RFC 6749 section 5.1); Cache-Control: no-store", body = AccessTokenBody),
        (status = 400, description = "invalid_request, unsupported_grant_type, invalid_scope or invalid_target", body = OAuthErrorBody),
        (status = 401, description = "invalid_client, with WWW-Authenticate: an unknown client and a wrong secret get the same answer", body = OAuthErrorBody),
        (status = 429, description = "slow_down (with --rate-limit, or too many secret checks); see Retry-After", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable: no key can sign, or secret checks are queued up; see Retry-After", body = OAuthErrorBody),
    ))]
pub(crate) async fn token(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthResponseError> {
    let mut form = FormParams::read(&headers, body, &["audience", "resource"])?;
    let credentials = client_credentials(&headers, &mut form)?;
    let request = GrantRequest {
        grant_type: form.take("grant_type").unwrap_or_default(),
        scope: form.take("scope"),
        audience: form.take_all("audience"),
        resource: form.take_all("resource"),
        alg: form.take("alg"),
        defect: form.take("defect"),
        claims: match form.take("claims") {
            Some(text) => crate::service::claims::parse_claims_json(&text)
                .map_err(|err| OAuthResponseError(err.into()))?,
            None => serde_json::Map::new(),
        },
    };
    let caller = Caller {
        credentials,
        addr: peer_addr(peer),
    };
    let issued: AccessToken = state
        .service
        .grant_client_credentials(&request, &caller, Timestamp::now())
        .await
        .map_err(OAuthResponseError)?;
    state
        .metrics
        .issued(crate::metrics::Door::Rest, issued.defect, issued.alg);
    let body = AccessTokenBody {
        access_token: &issued.access_token,
        token_type: AccessToken::TOKEN_TYPE,
        expires_in: issued.expires_in,
        scope: issued.scope.as_deref(),
    };
    Ok((no_store(), Json(body)).into_response())
}

/// What introspection and revocation both read: the form's `token` (required
/// by the RFC section `rfc` names) and who is asking.
fn token_and_caller(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    rfc: &str,
) -> Result<(String, Caller), OAuthResponseError> {
    let mut form = FormParams::read(headers, body, &[])?;
    let credentials = client_credentials(headers, &mut form)?;
    let token = form
        .take("token")
        .ok_or_else(|| invalid_request(format!("token is required ({rfc})")))?;
    let caller = Caller {
        credentials,
        addr: peer_addr(peer),
    };
    Ok((token, caller))
}

/// `POST /oauth2/introspect`: `{"active": true, …}` for a live token of this
/// issuer, `{"active": false}` and nothing else otherwise.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth",
    params(("Authorization" = Option<String>, Header,
        description = "client_secret_basic (with --clients-file), encoded as for /oauth2/token")),
    request_body(content((TokenHintForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "RFC 7662 section 2.2: only `active: false` for an expired, revoked, malformed, foreign or badly signed token", body = IntrospectionBody),
        (status = 400, description = "invalid_request: no token, not a form, a parameter twice", body = OAuthErrorBody),
        (status = 401, description = "invalid_client (with --clients-file)", body = OAuthErrorBody),
        (status = 429, description = "slow_down: too many secret checks; see Retry-After", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable: secret checks are queued up", body = OAuthErrorBody),
    ))]
pub(crate) async fn introspect(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthResponseError> {
    let (token, caller) = token_and_caller(&headers, body, peer, "RFC 7662 section 2.1")?;
    let answer = state
        .service
        .introspect(&token, &caller, Timestamp::now())
        .await
        .map_err(OAuthResponseError)?;
    Ok((no_store(), Json(IntrospectionBody::from(answer))).into_response())
}

/// RFC 7662 §2.2: an introspection answer. Every member but `active` is
/// absent for an inactive token.
#[derive(Serialize, ToSchema, Default)]
pub struct IntrospectionBody {
    /// Whether the token is live: signed by this issuer's key, not expired, not revoked.
    pub active: bool,
    /// The scopes granted, space-delimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// One audience as a string, several as an array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
}

/// The `aud` claim as JWTs write it (RFC 7519 §4.1.3).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl From<Introspection> for IntrospectionBody {
    fn from(answer: Introspection) -> Self {
        match answer {
            Introspection::Inactive => Self::default(),
            Introspection::Active(token) => Self {
                active: true,
                scope: token.scope,
                client_id: token.client_id,
                sub: token.sub,
                aud: match <[String; 1]>::try_from(token.aud) {
                    Ok([one]) => Some(Audience::One(one)),
                    Err(many) if many.is_empty() => None,
                    Err(many) => Some(Audience::Many(many)),
                },
                iss: Some(token.iss),
                exp: Some(token.exp),
                iat: token.iat,
                nbf: token.nbf,
                jti: Some(token.jti),
                token_type: Some(token.token_type),
            },
        }
    }
}

/// `POST /oauth2/revoke`: 200 for every well-formed request (§2.2), also for
/// unknown tokens.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth",
    params(("Authorization" = Option<String>, Header,
        description = "client_secret_basic (with --clients-file), encoded as for /oauth2/token")),
    request_body(content((TokenHintForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Revoked until its exp, on every replica after its next reload; also for a token this server does not know (RFC 7009 section 2.2)"),
        (status = 400, description = "invalid_request (no token, not a form, a parameter twice), or unauthorized_client: another client's token", body = OAuthErrorBody),
        (status = 401, description = "invalid_client (with --clients-file)", body = OAuthErrorBody),
        (status = 429, description = "slow_down: too many secret checks; see Retry-After", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable: the store did not take the revocation", body = OAuthErrorBody),
    ))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthResponseError> {
    let (token, caller) = token_and_caller(&headers, body, peer, "RFC 7009 section 2.1")?;
    state
        .service
        .revoke(&token, &caller, Timestamp::now())
        .await
        .map_err(OAuthResponseError)?;
    Ok((StatusCode::OK, no_store()).into_response())
}
