//! The tonic adapter: `jwks.v1.KeyService`, server reflection (v1 and
//! v1alpha, so old and new grpcurl both work) and the standard health service.
//! Conversions to and from the domain live here, as does the one mapping of
//! domain errors to gRPC status codes. [`serve`] puts every service behind the
//! shared connection limits, one message size limit and the request timeout.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::{body::Incoming, http};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Code, Request, Response, Status, service::Routes, transport::server::TcpConnectInfo};
use tonic_health::{ServingStatus, server::HealthReporter};

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
    transport::connections::{self, Limits},
};

/// The fully qualified service name health and reflection report.
pub const SERVICE_NAME: &str = "jwks.v1.KeyService";

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

/// Builds every gRPC service this server exposes.
pub async fn routes(service: KeyService, metrics: Arc<Metrics>) -> (HealthHandle, Routes) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let handle = HealthHandle { reporter };
    handle.update(&service.health(Timestamp::now())).await;

    let mut routes = Routes::new(
        KeyServiceServer::new(GrpcKeyService { service, metrics })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(health_service.max_decoding_message_size(MAX_REQUEST_BYTES));
    // Reflection is a debugging aid: if it cannot be built, serve without it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
    (handle, routes)
}

struct GrpcKeyService {
    service: KeyService,
    metrics: Arc<Metrics>,
}

impl GrpcKeyService {
    /// Records latency and logs one line per RPC, like the REST middleware.
    fn observe<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = code_name(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
        let elapsed = started.elapsed();
        self.metrics.observe_grpc(method, code, elapsed);
        tracing::info!(
            method,
            code,
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "rpc"
        );
    }
}

#[tonic::async_trait]
impl KeyServiceRpc for GrpcKeyService {
    async fn get_jwks(
        &self,
        request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let started = Instant::now();
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
        let result = Ok(Response::new(GetJwksResponse {
            keys: if not_modified {
                Vec::new()
            } else {
                jwks.keys.iter().map(proto::Jwk::from).collect()
            },
            etag: jwks.etag.clone(),
            max_age_seconds: u32::try_from(max_age.as_secs()).unwrap_or(u32::MAX),
            not_modified,
        }));
        self.observe("GetJwks", started, &result);
        result
    }

    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let started = Instant::now();
        let result = match caller(&request) {
            Ok(caller) => {
                let token_request = TokenRequest::from(request.into_inner());
                self.service
                    .issue_token(&token_request, &caller, Timestamp::now())
                    .await
                    .map(|issued| {
                        self.metrics
                            .token_issued(Door::Grpc, token_request.expired, issued.alg);
                        Response::new(issued.into())
                    })
                    .map_err(to_status)
            }
            Err(status) => Err(status),
        };
        self.observe("IssueToken", started, &result);
        result
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
            return Err(Status::invalid_argument(format!(
                "metadata {key} is sent more than once; send it once"
            )));
        }
        value
            .to_str()
            .map(|v| Some(v.to_owned()))
            .map_err(|_| Status::invalid_argument(format!("metadata {key} is not valid text")))
    };
    let from_authorization = match text("authorization")? {
        Some(value) => Credentials::from_authorization(&value).map_err(Status::invalid_argument)?,
        None => None,
    };
    let from_client_keys = match (text("x-client-id")?, text("x-client-secret")?) {
        (Some(id), secret) => Some(Credentials {
            id,
            secret: secret.unwrap_or_default(),
        }),
        (None, Some(_)) => {
            return Err(Status::invalid_argument(
                "metadata x-client-secret is given without x-client-id; send both, \
                 or use authorization: Basic",
            ));
        }
        (None, None) => None,
    };
    let credentials = match (from_authorization, from_client_keys) {
        (Some(_), Some(_)) => {
            return Err(Status::invalid_argument(
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
/// variant must be decided here.
fn to_status(err: Error) -> Status {
    match err {
        Error::InvalidRequest { .. } => Status::invalid_argument(err.to_string()),
        Error::ClientNotAuthenticated(AuthProblem::Missing) => Status::unauthenticated(format!(
            "{err}: metadata authorization (Basic client_id:client_secret), or x-client-id and \
             x-client-secret"
        )),
        Error::ClientNotAuthenticated(AuthProblem::Rejected) => {
            Status::unauthenticated(err.to_string())
        }
        // The domain says what is so; the operator's way to change it is a flag.
        Error::ExpiredTokensDisabled => Status::permission_denied(format!(
            "{err}; start it with --expired-tokens=true (JWKS_EXPIRED_TOKENS=true) to allow them"
        )),
        Error::AudienceNotPermitted { .. } => Status::permission_denied(err.to_string()),
        Error::RateLimited { .. } => {
            with_retry_after(Status::resource_exhausted(err.to_string()), &err)
        }
        Error::Busy => with_retry_after(Status::unavailable(err.to_string()), &err),
        Error::NoSigningKey | Error::NoExpiredKey => Status::unavailable(err.to_string()),
        Error::Internal(_) => {
            tracing::error!(error = %err.chain(), "IssueToken failed");
            Status::internal(err.client_message())
        }
    }
}

/// Adds the `retry-after` metadata (whole seconds) the error carries.
fn with_retry_after(mut status: Status, err: &Error) -> Status {
    if let Some(value) = err
        .retry_after_secs()
        .and_then(|s| s.to_string().parse().ok())
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
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

/// A gRPC connection's socket, presented to h2 as not supporting vectored
/// writes.
///
/// With vectored writes h2 keeps a DATA frame of 256 bytes or more aside
/// instead of copying it into its buffer, so the few-byte trailers that follow
/// force a flush of their own: two `writev`s and two TCP segments per RPC.
/// Without them h2 copies frames up to 1 KiB and sends headers, data and
/// trailers in one write (profiled with callgrind and strace: about 3 µs of
/// kernel time per RPC saved).
pub struct CoalescingStream(TcpStream);

impl tokio::io::AsyncRead for CoalescingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CoalescingStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Serves `routes` on `listener` (HTTP/2 only, as gRPC is) under `limits`
/// until `shutdown` resolves, then waits for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let local_addr = listener.local_addr().ok();
    let builder = limits.builder().http2_only();
    let make_service = move |peer: SocketAddr| WithDeadline {
        routes: routes.clone(),
        timeout: limits.request_timeout,
        connect_info: TcpConnectInfo {
            local_addr,
            remote_addr: Some(peer),
        },
    };
    connections::serve(
        listener,
        limits,
        builder,
        CoalescingStream,
        make_service,
        shutdown,
    )
    .await;
}

/// Every call, to any service, with the peer address tonic's
/// `Request::remote_addr` reads, and a deadline: the request timeout, or the
/// client's `grpc-timeout` when that is shorter. A call still unanswered then
/// (a message that never finishes arriving, say) ends with
/// DEADLINE_EXCEEDED, and whatever it held is freed.
#[derive(Clone)]
struct WithDeadline {
    routes: Routes,
    timeout: Duration,
    connect_info: TcpConnectInfo,
}

impl tower::Service<http::Request<Incoming>> for WithDeadline {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Incoming>>::poll_ready(&mut self.routes, cx)
    }

    fn call(&mut self, mut request: http::Request<Incoming>) -> Self::Future {
        let timeout =
            grpc_timeout(request.headers()).map_or(self.timeout, |asked| asked.min(self.timeout));
        request.extensions_mut().insert(self.connect_info.clone());
        let call = self.routes.call(request);
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call did not complete within {timeout:?}"
                ))
                .into_http()),
            }
        })
    }
}

/// The `grpc-timeout` a client set: up to eight digits and a unit, H, M, S,
/// m, u or n (gRPC over HTTP/2, "Requests").
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_as_the_spec_writes_them() {
        let timeout = |text: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_static(text));
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("99999999S"), Some(Duration::from_secs(99_999_999)));
        assert_eq!(timeout("123456789S"), None);
        assert_eq!(timeout("S"), None);
        assert_eq!(timeout("10x"), None);
    }
}
