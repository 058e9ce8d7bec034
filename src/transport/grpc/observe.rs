//! One log line and one latency sample per call to `jwks.v1.KeyService`,
//! as a tower layer around every gRPC service, the twin of the REST door's
//! per-request layer: the `rpc` line with `method`, `code` and `latency_us`,
//! and `jwks_grpc_request_duration_seconds{method,code}`.
//!
//! The code is the call's final one, whoever wrote it (a handler, tonic, or
//! the deadline): tower-http's [`GrpcErrorsAsFailures`] reads `grpc-status`
//! from the headers of a trailers-only answer (how errors travel), or else
//! from the trailers at the end of the body, which [`ObservedBody`] watches.
//! A body dropped before its trailers (the client went away) counts as
//! CANCELLED. Health and reflection calls are not counted, as before.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use hyper::{
    body::{Body, Frame, SizeHint},
    http,
};
use tonic::{Code, Status};
use tower_http::classify::{
    ClassifiedResponse, ClassifyEos, ClassifyResponse, GrpcEosErrorsAsFailures,
    GrpcErrorsAsFailures, GrpcFailureClass,
};

use super::code_name;
use crate::{metrics::Metrics, proto::key_service_server::SERVICE_NAME};

/// The RPCs of `jwks.v1.KeyService`, the bounded values of the `method` label.
const METHODS: [&str; 5] = ["GetJwks", "IssueToken", "Token", "Introspect", "Revoke"];

/// Adds [`Observe`] around a service.
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Times each `KeyService` call until its final code is known, then records
/// and logs it.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = rpc_label(request.uri().path());
        let started = Instant::now();
        let call = self.inner.call(request);
        let Some(method) = method else {
            return Box::pin(call);
        };
        let observation = Observation {
            method,
            started,
            metrics: self.metrics.clone(),
        };
        Box::pin(async move {
            let response = call.await?;
            Ok(
                match GrpcErrorsAsFailures::new().classify_response(&response) {
                    ClassifiedResponse::Ready(result) => {
                        observation.finish(code_of(result));
                        response
                    }
                    ClassifiedResponse::RequiresEos(eos) => response.map(|body| {
                        tonic::body::Body::new(ObservedBody {
                            inner: body,
                            pending: Some((observation, eos)),
                        })
                    }),
                },
            )
        })
    }
}

/// The `method` label of a call to `/jwks.v1.KeyService/NAME`: the RPC's
/// name, or "(unknown)" for a name the service does not have; `None` for
/// other services.
fn rpc_label(path: &str) -> Option<&'static str> {
    let name = path
        .strip_prefix('/')?
        .strip_prefix(SERVICE_NAME)?
        .strip_prefix('/')?;
    Some(
        METHODS
            .iter()
            .find(|method| **method == name)
            .copied()
            .unwrap_or("(unknown)"),
    )
}

/// The code a classification stands for: OK unless a failure says otherwise.
fn code_of(result: Result<(), GrpcFailureClass>) -> Code {
    match result {
        Ok(()) => Code::Ok,
        Err(GrpcFailureClass::Status(status)) => Code::from_i32(status.code_raw()),
        Err(_) => Code::Unknown,
    }
}

/// One call on its way to a final code.
struct Observation {
    method: &'static str,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl Observation {
    fn finish(self, code: Code) {
        let code = code_name(code);
        let elapsed = self.started.elapsed();
        self.metrics.observe_grpc(self.method, code, elapsed);
        // The target the line had when each method logged it itself.
        tracing::info!(
            target: "jwks_server::transport::grpc",
            method = self.method,
            code,
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "rpc"
        );
    }
}

/// A response body that finishes its call's [`Observation`] when the
/// trailers (or the end, or an error) go by, or when it is dropped early.
struct ObservedBody {
    inner: tonic::body::Body,
    pending: Option<(Observation, GrpcEosErrorsAsFailures)>,
}

impl ObservedBody {
    fn finish(&mut self, code: impl FnOnce(GrpcEosErrorsAsFailures) -> Code) {
        if let Some((observation, eos)) = self.pending.take() {
            observation.finish(code(eos));
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(|eos| code_of(eos.classify_eos(Some(trailers))));
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                this.finish(|_| code);
            }
            Poll::Ready(None) => this.finish(|eos| code_of(eos.classify_eos(None))),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Ended without trailers is what the classifier calls OK; dropped
        // before the end, the client went away.
        let ended = self.inner.is_end_stream();
        self.finish(|eos| {
            if ended {
                code_of(eos.classify_eos(None))
            } else {
                Code::Cancelled
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_service_calls_get_a_bounded_method_label() {
        assert_eq!(rpc_label("/jwks.v1.KeyService/GetJwks"), Some("GetJwks"));
        assert_eq!(
            rpc_label("/jwks.v1.KeyService/IssueToken"),
            Some("IssueToken")
        );
        assert_eq!(rpc_label("/jwks.v1.KeyService/Other"), Some("(unknown)"));
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), None);
        assert_eq!(rpc_label("/jwks.v1.KeyServiceX/GetJwks"), None);
    }
}
