//! The gRPC listener: the shared accept loop and connection limits
//! ([`connections`]) plus what only gRPC needs: HTTP/2 only, each call's
//! deadline (the request timeout, or the client's shorter `grpc-timeout`), the
//! peer address tonic's `Request::remote_addr` reads, the per-call
//! [`observe`](super::observe) layer, and a socket that sends each answer in
//! one write.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use hyper::{body::Incoming, http};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Status, service::Routes, transport::server::TcpConnectInfo};

use super::{GrpcKeyService, Services, observe};
use crate::proto::key_service_server::KeyServiceServer;
use crate::transport::connections::{self, Limits};

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

/// Serves `services` on `listener` (HTTP/2 only, as gRPC is) under `limits`
/// until `shutdown` resolves, then waits for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let local_addr = listener.local_addr().ok();
    let builder = limits.builder().http2_only();
    let Services {
        key_service,
        routes,
        metrics,
    } = services;
    let observe = observe::ObserveLayer::new(metrics);
    // Outside the deadline, so a call it cuts off is counted too.
    let make_service = move |peer: SocketAddr| {
        tower::Layer::layer(
            &observe,
            WithDeadline {
                key_service: key_service.clone(),
                routes: routes.clone(),
                timeout: limits.request_timeout,
                connect_info: TcpConnectInfo {
                    local_addr,
                    remote_addr: Some(peer),
                },
            },
        )
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

/// Where the calls of `jwks.v1.KeyService` go: `/jwks.v1.KeyService/METHOD`.
const KEY_SERVICE_PATH: &str = concat!("/", "jwks.v1.KeyService", "/");

type BoxedCall =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

/// Every call, to any service, with the peer address tonic's
/// `Request::remote_addr` reads, and a deadline: the request timeout, or the
/// client's `grpc-timeout` when that is shorter. A call still unanswered then
/// (a message that never finishes arriving, say) ends with
/// DEADLINE_EXCEEDED, and whatever it held is freed.
#[derive(Clone)]
struct WithDeadline {
    key_service: KeyServiceServer<GrpcKeyService>,
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
        let call: BoxedCall = if request.uri().path().starts_with(KEY_SERVICE_PATH) {
            self.key_service.call(request.map(tonic::body::Body::new))
        } else {
            Box::pin(self.routes.call(request))
        };
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
    fn key_service_calls_are_told_apart_by_the_service_name_tonic_routes_on() {
        use crate::proto::key_service_server::SERVICE_NAME;
        assert_eq!(KEY_SERVICE_PATH, format!("/{SERVICE_NAME}/"));
    }

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
