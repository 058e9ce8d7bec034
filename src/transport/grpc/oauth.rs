//! The gRPC twins of the OAuth 2.0 routes: `Token` (RFC 6749 §4.4, client
//! credentials), `Introspect` (RFC 7662) and `Revoke` (RFC 7009). They read
//! the same fields the REST forms carry and the same client credentials
//! (`caller`, from metadata), call the same domain functions
//! (`service::oauth`), and map an [`OAuthError`] to a gRPC code with a
//! `google.rpc.ErrorInfo` whose `reason` is the RFC 6749 §5.2 code.
//!
//! What is granted, verified or revoked is the service's; the REST shape is
//! `http/oauth.rs`'s.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{ERROR_DOMAIN, caller};
use crate::{
    metrics::{Door, Metrics},
    proto,
    service::{AccessToken, GrantRequest, Introspection, KeyService, OAuthError, OAuthErrorCode},
    time::Timestamp,
};

/// `Token`: the client credentials grant, as `POST /oauth2/token`.
pub(super) async fn token(
    service: &KeyService,
    metrics: &Metrics,
    request: Request<proto::TokenRequest>,
) -> Result<Response<proto::TokenResponse>, Status> {
    let caller = oauth_caller(&request)?;
    let mut message = request.into_inner();
    let claims =
        super::test_tokens::requested_claims(message.claims.take(), message.claims_json.take())
            .map_err(|err| to_status(OAuthError::from(err)))?;
    let mut request = GrantRequest::from(message);
    request.claims = claims;
    let issued = service
        .grant_client_credentials(&request, &caller, Timestamp::now())
        .await
        .map_err(to_status)?;
    metrics.issued(Door::Grpc, issued.defect, issued.alg);
    Ok(Response::new(issued.into()))
}

/// `Introspect`: as `POST /oauth2/introspect`.
pub(super) async fn introspect(
    service: &KeyService,
    request: Request<proto::IntrospectRequest>,
) -> Result<Response<proto::IntrospectResponse>, Status> {
    let caller = oauth_caller(&request)?;
    let token = required_token(&request.get_ref().token, "RFC 7662 section 2.1")?;
    let answer = service
        .introspect(token, &caller, Timestamp::now())
        .await
        .map_err(to_status)?;
    Ok(Response::new(answer.into()))
}

/// `Revoke`: as `POST /oauth2/revoke`; OK also for unknown tokens.
pub(super) async fn revoke(
    service: &KeyService,
    request: Request<proto::RevokeRequest>,
) -> Result<Response<proto::RevokeResponse>, Status> {
    let caller = oauth_caller(&request)?;
    let token = required_token(&request.get_ref().token, "RFC 7009 section 2.1")?;
    service
        .revoke(token, &caller, Timestamp::now())
        .await
        .map_err(to_status)?;
    Ok(Response::new(proto::RevokeResponse {}))
}

/// The caller, as `IssueToken` reads it; metadata it cannot read is an
/// `invalid_request` here, in OAuth words.
fn oauth_caller<T>(request: &Request<T>) -> Result<crate::access::Caller, Status> {
    caller(request).map_err(|status| to_status(OAuthError::invalid_request(status.message())))
}

/// An empty `token` is absent (RFC 6749 §3.1, as the REST form reads it).
fn required_token<'a>(token: &'a str, section: &str) -> Result<&'a str, Status> {
    if token.is_empty() {
        return Err(to_status(OAuthError::invalid_request(format!(
            "token is required ({section})"
        ))));
    }
    Ok(token)
}

impl From<proto::TokenRequest> for GrantRequest {
    fn from(request: proto::TokenRequest) -> Self {
        // Empty strings are absent, as empty form values are (RFC 6749 §3.1).
        let present = |value: Option<String>| value.filter(|v| !v.is_empty());
        Self {
            grant_type: request.grant_type,
            scope: present(request.scope),
            audience: request
                .audience
                .into_iter()
                .filter(|v| !v.is_empty())
                .collect(),
            resource: request
                .resource
                .into_iter()
                .filter(|v| !v.is_empty())
                .collect(),
            alg: present(request.alg),
            defect: present(request.defect),
            ..Self::default()
        }
    }
}

impl From<AccessToken> for proto::TokenResponse {
    fn from(issued: AccessToken) -> Self {
        Self {
            access_token: issued.access_token,
            token_type: AccessToken::TOKEN_TYPE.to_owned(),
            expires_in: issued.expires_in,
            scope: issued.scope,
        }
    }
}

impl From<Introspection> for proto::IntrospectResponse {
    fn from(answer: Introspection) -> Self {
        match answer {
            Introspection::Inactive => Self::default(),
            Introspection::Active(token) => Self {
                active: true,
                scope: token.scope,
                client_id: token.client_id,
                sub: token.sub,
                aud: token.aud,
                iss: Some(token.iss),
                exp: Some(token.exp),
                iat: token.iat,
                nbf: token.nbf,
                jti: Some(token.jti),
                token_type: Some(token.token_type.to_owned()),
            },
        }
    }
}

/// The gRPC code of each OAuth error code. No catch-all arm: a new code must
/// be decided here, as in the REST mapping to HTTP statuses.
fn code_of(code: OAuthErrorCode) -> Code {
    match code {
        OAuthErrorCode::InvalidRequest
        | OAuthErrorCode::InvalidGrant
        | OAuthErrorCode::UnsupportedGrantType
        | OAuthErrorCode::InvalidScope
        | OAuthErrorCode::InvalidTarget => Code::InvalidArgument,
        OAuthErrorCode::InvalidClient => Code::Unauthenticated,
        OAuthErrorCode::UnauthorizedClient => Code::PermissionDenied,
        OAuthErrorCode::SlowDown => Code::ResourceExhausted,
        OAuthErrorCode::TemporarilyUnavailable => Code::Unavailable,
        OAuthErrorCode::ServerError => Code::Internal,
    }
}

/// An [`OAuthError`] as a status: its code, the description as the message,
/// a `google.rpc.ErrorInfo` with the RFC code as `reason`, and, for a refusal
/// worth retrying, `google.rpc.RetryInfo` and `retry-after` metadata.
fn to_status(error: OAuthError) -> Status {
    let mut details = match error.retry_after_secs {
        Some(seconds) => ErrorDetails::with_retry_info(Some(Duration::from_secs(seconds))),
        None => ErrorDetails::new(),
    };
    details.set_error_info(error.code.as_str(), ERROR_DOMAIN, HashMap::new());
    let mut status = Status::with_error_details(code_of(error.code), error.description, details);
    if let Some(value) = error
        .retry_after_secs
        .and_then(|seconds| seconds.to_string().parse().ok())
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_info_reason_is_the_rfc_code() {
        let status = to_status(OAuthError::new(OAuthErrorCode::InvalidScope, "no"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "invalid_scope");
        assert_eq!(info.domain, "jwks-server");
    }
}
