//! The REST listener: the shared accept loop and connection limits
//! ([`connections`]) plus what only HTTP clients need. The same header limits
//! hold on HTTP/1 and HTTP/2, every refusal is a JSON error, including the few
//! hyper writes itself, and each request carries its peer address as
//! [`ConnectInfo`] for per-address rate limits.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hyper::body::Incoming;
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tower::ServiceExt;

use super::ApiError;
use crate::transport::connections::{self, Limits};

/// Requests with more headers than this are refused (431), on HTTP/1 and HTTP/2.
pub const MAX_HEADERS: usize = 64;

/// Requests whose headers take more than this (as HTTP/2 counts them: name,
/// value and 32 bytes each) are refused (431), on HTTP/1 and HTTP/2.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// hyper's own limits sit well above ours, so that [`refuse_oversized_headers`]
/// answers nearly every case; past them hyper refuses before any service runs
/// (HTTP/1 answers get a JSON body from [`JsonParseErrors`]).
const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADERS;
const HYPER_MAX_HEADER_BYTES: usize = 4 * MAX_HEADER_BYTES;

/// Serves `router` on `listener` under `limits` until `shutdown` resolves,
/// then waits for open connections to finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let router = router.layer(middleware::from_fn(refuse_oversized_headers));
    let mut builder = limits.builder();
    builder
        .http1()
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_HEADER_BYTES);
    builder
        .http2()
        .max_header_list_size(u32::try_from(HYPER_MAX_HEADER_BYTES).unwrap_or(u32::MAX));
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
        JsonParseErrors::new,
        make_service,
        shutdown,
    )
    .await;
}

/// 431 for more than [`MAX_HEADERS`] headers or [`MAX_HEADER_BYTES`] of them,
/// whichever protocol carried them.
async fn refuse_oversized_headers(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            format!(
                "at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all are accepted"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// A REST connection's socket, which gives the bodiless responses hyper
/// writes itself for HTTP/1 requests it cannot parse (400, 414, 431) the JSON
/// body every other error has.
///
/// hyper 1 has no hook for those responses, so their bytes are reshaped on the
/// way out. hyper writes one only when no response is in progress and closes
/// the connection after it, so it is always the last bytes of a write; no
/// response of ours is a 4xx with `content-length: 0`. Writes are not
/// vectored, so hyper hands each response head over whole.
pub struct JsonParseErrors {
    stream: TcpStream,
    /// The rewritten bytes being written, and how much of the caller's buffer
    /// they stand for.
    pending: Option<Pending>,
}

struct Pending {
    bytes: Vec<u8>,
    written: usize,
    stands_for: usize,
}

impl JsonParseErrors {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            pending: None,
        }
    }
}

/// `buf` with its final response head replaced by a JSON error, when that
/// head is one of hyper's bodiless 4xx answers.
fn with_json_error(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let start = buf.windows(9).rposition(|w| w == b"HTTP/1.1 ")?;
    let head = std::str::from_utf8(&buf[start..]).ok()?;
    let head = head.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.get(9..12)?.parse::<StatusCode>().ok()?;
    if !status.is_client_error() {
        return None;
    }
    let mut kept = Vec::new();
    let mut bodiless = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => bodiless = true,
            "content-length" | "content-type" | "transfer-encoding" => return None,
            "connection" => {}
            _ => kept.push(line),
        }
    }
    if !bodiless {
        return None;
    }
    let (code, detail) = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "request_header_fields_too_large",
            format!(
                "at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all are accepted"
            ),
        ),
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the request target is too long".to_owned()),
        _ => (
            "invalid_request",
            "the request is not well-formed HTTP/1.1".to_owned(),
        ),
    };
    let body = json!({"error": code, "detail": detail}).to_string();
    let mut out = buf[..start].to_vec();
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in kept {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    Some(out)
}

impl AsyncRead for JsonParseErrors {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonParseErrors {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match with_json_error(buf) {
                Some(bytes) => {
                    this.pending = Some(Pending {
                        bytes,
                        written: 0,
                        stands_for: buf.len(),
                    });
                }
                None => return Pin::new(&mut this.stream).poll_write(cx, buf),
            }
        }
        // hyper calls again with the same buffer until it is reported written.
        while let Some(pending) = &mut this.pending {
            if pending.written == pending.bytes.len() {
                let stands_for = pending.stands_for;
                this.pending = None;
                return Poll::Ready(Ok(stands_for));
            }
            let n = ready!(
                Pin::new(&mut this.stream).poll_write(cx, &pending.bytes[pending.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            pending.written += n;
        }
        Poll::Ready(Ok(0))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_refusals_get_a_json_body() {
        let earlier = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".as_slice();
        let refusal = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 01:00:00 GMT\r\n\r\n";
        let out = with_json_error(&[earlier, refusal.as_slice()].concat()).unwrap();
        let out = String::from_utf8(out).unwrap();
        let (head, body) = out[earlier.len()..].split_once("\r\n\r\n").unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("date: Mon"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "request_header_fields_too_large");
    }

    #[test]
    fn our_own_responses_pass_unchanged() {
        for response in [
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}".as_slice(),
            b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n",
            b"HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\ncontent-length: 90\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert_eq!(with_json_error(response), None);
        }
    }
}
