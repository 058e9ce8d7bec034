//! Fuzzes what `POST /auth` reads from a client: the query string, the
//! Content-Type and Authorization headers, and the body, then the domain's
//! validation of the resulting token request. Any panic is a bug; errors are
//! the expected answer to garbage.

#![no_main]

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, header},
};
use jwks_server::{
    config::Config, keys::policy::Policy, service::validate_request, transport::http::auth_request,
};
use libfuzzer_sys::fuzz_target;

static POLICY: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(|| Config::defaults().policy());

fuzz_target!(|data: &[u8]| {
    // Split the input into query | content-type | authorization | body on 0xFF.
    let mut parts = data.splitn(4, |b| *b == 0xFF);
    let query = parts.next().map(String::from_utf8_lossy);
    let content_type = parts.next().unwrap_or_default();
    let authorization = parts.next().unwrap_or_default();
    let body = Bytes::copy_from_slice(parts.next().unwrap_or_default());

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        headers.insert(header::AUTHORIZATION, value);
    }
    if let Ok((request, _credentials)) = auth_request(query.as_deref(), &headers, Ok(body)) {
        let _ = validate_request(&request, &POLICY);
    }
});
