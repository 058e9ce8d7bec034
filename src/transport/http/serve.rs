//! The REST listener: the shared accept loop and connection limits
//! ([`connections`]) plus what only HTTP clients need: a cap on the number of
//! headers (floods get 431) and the peer address as [`ConnectInfo`] for
//! per-address rate limits.

use std::net::SocketAddr;

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::transport::connections::{self, Limits};

/// Requests with more headers than this are refused (431).
pub const MAX_HEADERS: usize = 64;

/// Serves `router` on `listener` under `limits` until `shutdown` resolves,
/// then waits for open connections to finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = limits.builder();
    builder.http1().max_headers(MAX_HEADERS);
    builder.http2().max_header_list_size(16 * 1024);
    let make_service = move |peer: SocketAddr| {
        router
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request.map(axum::body::Body::new)
            })
    };
    connections::serve(
        listener,
        limits,
        builder,
        std::convert::identity,
        make_service,
        shutdown,
    )
    .await;
}
