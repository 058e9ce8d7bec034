//! The tonic adapter: `jwks.v1.KeyService`, server reflection (v1 and
//! v1alpha, so old and new grpcurl both work) and the standard health service.
//! Conversions to and from the domain live here, as does the one mapping of
//! domain errors to gRPC status codes, with the standard error details
//! (`google.rpc.BadRequest`, `RetryInfo`, `ErrorInfo`, through `tonic-types`).
//! [`serve()`] (in `grpc/serve.rs`) puts every service behind the shared
//! connection limits, one message size limit, the request timeout, and
//! `observe`'s per-call log line and latency sample.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tonic::{Code, Request, Response, Status, service::Routes};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    access::{Caller, Credentials},
    error::{AuthProblem, Error},
    keys::crypto::{PublicJwk, PublicMembers},
    metrics::{Door, JwksOutcome, Metrics},
    proto::{
        self, GetJwksRequest, GetJwksResponse, IssueTokenRequest, IssueTokenResponse,
        key_service_server::{KeyService as KeyServiceRpc, KeyServiceServer},
    },
    service::{Health, IssuedToken, KeyService, TokenRequest},
    time::Timestamp,
};

mod oauth;
mod observe;
mod serve;
mod test_tokens;

pub use serve::serve;

/// The fully qualified service name health and reflection report, as the
/// contract (the proto) names it.
pub use crate::proto::key_service_server::SERVICE_NAME;

/// Largest request message any service accepts (a token request is tiny).
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Reports this server's state through `grpc.health.v1.Health`.
#[derive(Clone)]
pub struct HealthHandle {
    reporter: HealthReporter,
}

impl HealthHandle {
    /// SERVING while a key can sign (even with the store away), else NOT_SERVING.
    pub async fn update(&self, health: &Health) {
        let status = if health.can_sign {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(SERVICE_NAME, status).await;
        self.reporter.set_service_status("", status).await;
    }

    /// Tells load balancers to stop sending work (the first step of shutdown).
    pub async fn not_serving(&self) {
        self.reporter
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

/// Every gRPC service this server exposes, and the metrics their calls feed.
pub struct Services {
    /// `jwks.v1.KeyService`, which the listener calls directly: its calls
    /// are the hot path, and a path prefix is all tonic's router would check.
    key_service: KeyServiceServer<GrpcKeyService>,
    /// Health, reflection, and UNIMPLEMENTED for any other service.
    routes: Routes,
    metrics: Arc<Metrics>,
}

/// Builds every gRPC service this server exposes.
pub async fn routes(service: KeyService, metrics: Arc<Metrics>) -> (HealthHandle, Services) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let handle = HealthHandle { reporter };
    handle.update(&service.health(Timestamp::now())).await;

    let key_service = KeyServiceServer::new(GrpcKeyService {
        service,
        metrics: metrics.clone(),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let mut routes = Routes::new(key_service.clone())
        .add_service(health_service.max_decoding_message_size(MAX_REQUEST_BYTES));
    // Reflection is a debugging aid: if it cannot be built, serve without it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    match reflection().build_v1() {
        Ok(v1) => routes = routes.add_service(v1.max_decoding_message_size(MAX_REQUEST_BYTES)),
        Err(err) => tracing::error!(error = %err, "gRPC reflection v1 unavailable"),
    }
    match reflection().build_v1alpha() {
        Ok(v1alpha) => {
            routes = routes.add_service(v1alpha.max_decoding_message_size(MAX_REQUEST_BYTES));
        }
        Err(err) => tracing::error!(error = %err, "gRPC reflection v1alpha unavailable"),
    }
    (
        handle,
        Services {
            key_service,
            routes: routes.prepare(),
            metrics,
        },
    )
}

struct GrpcKeyService {
    service: KeyService,
    metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl KeyServiceRpc for GrpcKeyService {
    async fn get_jwks(
        &self,
        request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let now = Timestamp::now();
        let jwks = self.service.jwks(now);
        let max_age = jwks.max_age(now, self.service.policy().jwks_max_age);
        let not_modified = request.get_ref().if_none_match == jwks.etag;
        self.metrics.jwks_served(
            Door::Grpc,
            if not_modified {
                JwksOutcome::NotModified
            } else {
                JwksOutcome::Full
            },
        );
        Ok(Response::new(GetJwksResponse {
            keys: if not_modified {
                Vec::new()
            } else {
                jwks.keys.iter().map(proto::Jwk::from).collect()
            },
            etag: jwks.etag.clone(),
            max_age_seconds: u32::try_from(max_age.as_secs()).unwrap_or(u32::MAX),
            not_modified,
        }))
    }

    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let caller = caller(&request)?;
        let mut message = request.into_inner();
        let claims = test_tokens::requested_claims_status(
            message.claims.take(),
            message.claims_json.take(),
        )?;
        let mut token_request = TokenRequest::from(message);
        token_request.claims = claims;
        let issued = self
            .service
            .issue_token(&token_request, &caller, Timestamp::now())
            .await
            .map_err(to_status)?;
        self.metrics.issued(Door::Grpc, issued.defect, issued.alg);
        Ok(Response::new(issued.into()))
    }

    async fn token(
        &self,
        request: Request<proto::TokenRequest>,
    ) -> Result<Response<proto::TokenResponse>, Status> {
        oauth::token(&self.service, &self.metrics, request).await
    }

    async fn introspect(
        &self,
        request: Request<proto::IntrospectRequest>,
    ) -> Result<Response<proto::IntrospectResponse>, Status> {
        oauth::introspect(&self.service, request).await
    }

    async fn revoke(
        &self,
        request: Request<proto::RevokeRequest>,
    ) -> Result<Response<proto::RevokeResponse>, Status> {
        oauth::revoke(&self.service, request).await
    }

    async fn list_test_tokens(
        &self,
        _request: Request<proto::ListTestTokensRequest>,
    ) -> Result<Response<proto::ListTestTokensResponse>, Status> {
        Ok(test_tokens::list(&self.service))
    }
}

/// Who is calling: credentials from `authorization: Basic …` metadata, or
/// `x-client-id` / `x-client-secret` (one method, each key once: a second
/// value would leave us to pick whose credentials count), and the peer address.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let metadata = request.metadata();
    let text = |key: &str| -> Result<Option<String>, Status> {
        let mut values = metadata.get_all(key).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(bad_metadata(
                key,
                format!("metadata {key} is sent more than once; send it once"),
            ));
        }
        value
            .to_str()
            .map(|v| Some(v.to_owned()))
            .map_err(|_| bad_metadata(key, format!("metadata {key} is not valid text")))
    };
    let from_authorization = match text("authorization")? {
        Some(value) => Credentials::from_authorization(&value)
            .map_err(|reason| bad_metadata("authorization", reason))?,
        None => None,
    };
    let from_client_keys = match (text("x-client-id")?, text("x-client-secret")?) {
        (Some(id), secret) => Some(Credentials {
            id,
            secret: secret.unwrap_or_default().into(),
        }),
        (None, Some(_)) => {
            return Err(bad_metadata(
                "x-client-id",
                "metadata x-client-secret is given without x-client-id; send both, \
                 or use authorization: Basic",
            ));
        }
        (None, None) => None,
    };
    let credentials = match (from_authorization, from_client_keys) {
        (Some(_), Some(_)) => {
            return Err(bad_metadata(
                "authorization",
                "client credentials are in both authorization and x-client-id metadata; \
                 use one method",
            ));
        }
        (basic, keys) => basic.or(keys),
    };
    Ok(Caller {
        credentials,
        addr: request.remote_addr().map(|addr| addr.ip()),
    })
}

/// INVALID_ARGUMENT for call metadata, with a field violation naming the key.
fn bad_metadata(key: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    let mut details = ErrorDetails::with_bad_request_violation(key, message.clone());
    details.set_error_info("INVALID_REQUEST", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

impl From<&PublicJwk> for proto::Jwk {
    fn from(jwk: &PublicJwk) -> Self {
        let mut out = Self {
            kty: jwk.kty.to_owned(),
            r#use: jwk.use_.to_owned(),
            alg: jwk.alg.to_owned(),
            kid: jwk.kid.clone(),
            ..Self::default()
        };
        match &jwk.public {
            PublicMembers::Rsa { n, e } => (out.n, out.e) = (n.clone(), e.clone()),
            PublicMembers::Ec { crv, x, y } => {
                (out.crv, out.x, out.y) = ((*crv).to_owned(), x.clone(), y.clone());
            }
            PublicMembers::Okp { crv, x } => (out.crv, out.x) = ((*crv).to_owned(), x.clone()),
        }
        out
    }
}

impl From<IssueTokenRequest> for TokenRequest {
    fn from(request: IssueTokenRequest) -> Self {
        Self {
            expired: request.expired,
            subject: request.subject,
            audience: request.audience,
            lifetime_seconds: request.lifetime_seconds,
            alg: request.alg,
            defect: request.defect.filter(|d| !d.is_empty()),
            ..Self::default()
        }
    }
}

impl From<IssuedToken> for IssueTokenResponse {
    fn from(issued: IssuedToken) -> Self {
        Self {
            token: issued.token,
            kid: issued.kid,
            token_type: IssuedToken::TOKEN_TYPE.to_owned(),
            issued_at: issued.issued_at.unix(),
            expires_at: issued.expires_at.unix(),
            expires_in: issued.expires_in,
        }
    }
}

/// The one mapping of domain errors to gRPC codes. No catch-all arm: a new
/// variant must be decided here. Every refusal carries a
/// `google.rpc.ErrorInfo` (the REST `error` code, upper case); a bad field a
/// `google.rpc.BadRequest` naming it; a refusal worth retrying a
/// `google.rpc.RetryInfo` with the delay.
fn to_status(err: Error) -> Status {
    let message = match &err {
        Error::ClientNotAuthenticated(AuthProblem::Missing) => format!(
            "{err}: metadata authorization (Basic client_id:client_secret), or x-client-id and \
             x-client-secret"
        ),
        // The domain says what is so; the operator's way to change it is a flag.
        Error::ExpiredTokensDisabled => {
            format!("{err}; start it with --test-tokens=true (JWKS_TEST_TOKENS=true) to allow them")
        }
        Error::TestTokensDisabled(_) => {
            format!("{err}; start it with --test-tokens=true (JWKS_TEST_TOKENS=true) to allow them")
        }
        _ => err.to_string(),
    };
    let (code, mut details) = match &err {
        Error::InvalidRequest { field, reason } => (
            Code::InvalidArgument,
            ErrorDetails::with_bad_request_violation(*field, reason.clone()),
        ),
        Error::ClientNotAuthenticated(_) => (Code::Unauthenticated, ErrorDetails::new()),
        Error::ExpiredTokensDisabled
        | Error::TestTokensDisabled(_)
        | Error::AudienceNotPermitted { .. } => (Code::PermissionDenied, ErrorDetails::new()),
        Error::RateLimited { .. } => (Code::ResourceExhausted, retry_info(&err)),
        Error::Busy => (Code::Unavailable, retry_info(&err)),
        Error::SignerUnavailable(_) => {
            tracing::warn!(error = %err.chain(), "IssueToken refused: signing key unavailable");
            (Code::Unavailable, retry_info(&err))
        }
        Error::NoSigningKey | Error::NoExpiredKey => (Code::Unavailable, ErrorDetails::new()),
        Error::Internal(_) => {
            tracing::error!(error = %err.chain(), "IssueToken failed");
            return Status::internal(err.client_message());
        }
    };
    details.set_error_info(
        err.code().to_ascii_uppercase(),
        ERROR_DOMAIN,
        HashMap::new(),
    );
    let mut status = Status::with_error_details(code, message, details);
    with_retry_after(&mut status, &err);
    status
}

/// The `domain` of every `google.rpc.ErrorInfo` this server sends.
const ERROR_DOMAIN: &str = "jwks-server";

/// `google.rpc.RetryInfo` with the whole seconds the error says to wait.
fn retry_info(err: &Error) -> ErrorDetails {
    ErrorDetails::with_retry_info(err.retry_after_secs().map(Duration::from_secs))
}

/// Also the `retry-after` metadata (whole seconds) that clients written
/// before `RetryInfo` read; kept so they keep working.
fn with_retry_after(status: &mut Status, err: &Error) {
    if let Some(value) = err
        .retry_after_secs()
        .and_then(|s| s.to_string().parse().ok())
    {
        status.metadata_mut().insert("retry-after", value);
    }
}

/// The canonical name of a status code, for metric labels and logs.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
