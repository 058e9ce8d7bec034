//! gRPC gets what REST has, in the same shape: structured error details a
//! client can decode (`google.rpc.BadRequest`, `RetryInfo`, `ErrorInfo`), and
//! one log line and one latency sample per call, with the call's final code,
//! whichever layer answered it.

use std::time::Duration;

use jwks_server::proto::{IssueTokenRequest, IssueTokenResponse};
use serde_json::Value;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::helpers::{ServerProcess, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_bad_field_comes_with_a_field_violation_naming_it() {
    let app = spawn_app().await;
    let status = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest {
            lifetime_seconds: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let bad_request = status
        .get_details_bad_request()
        .expect("a google.rpc.BadRequest detail");
    assert_eq!(bad_request.field_violations.len(), 1, "{bad_request:?}");
    let violation = &bad_request.field_violations[0];
    assert_eq!(violation.field, "lifetime_seconds");
    assert!(
        violation.description.contains("must be between 1 and"),
        "{violation:?}"
    );
    let info = status
        .get_details_error_info()
        .expect("a google.rpc.ErrorInfo detail");
    assert_eq!(info.reason, "INVALID_REQUEST");
    assert_eq!(info.domain, "jwks-server");
    // The message stays what it was.
    assert!(
        status.message().starts_with("lifetime_seconds: "),
        "{status:?}"
    );
}

#[tokio::test]
async fn malformed_credentials_metadata_names_the_metadata_key() {
    let app = spawn_app().await;
    let mut request = Request::new(IssueTokenRequest::default());
    request
        .metadata_mut()
        .insert("x-client-secret", "s".parse().unwrap());
    let status = app.grpc().await.issue_token(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad_request = status
        .get_details_bad_request()
        .expect("a google.rpc.BadRequest detail");
    assert_eq!(bad_request.field_violations[0].field, "x-client-id");
}

#[tokio::test]
async fn a_rate_limited_call_says_when_to_retry_in_retry_info() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = Some(1);
    })
    .await;
    let mut grpc = app.grpc().await;
    grpc.issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    let status = grpc
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let retry = status
        .get_details_retry_info()
        .expect("a google.rpc.RetryInfo detail");
    let delay = retry.retry_delay.expect("a retry delay");
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&delay),
        "{delay:?}"
    );
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("RATE_LIMITED".to_owned())
    );
}

/// The JSON log lines of `server` whose message is `rpc`.
fn rpc_lines(server: &ServerProcess) -> Vec<Value> {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "rpc")
        .collect()
}

/// Polls `server` (at most `limit`) until an `rpc` line has `method` and `code`.
async fn wait_for_rpc_line(server: &ServerProcess, method: &str, code: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !rpc_lines(server)
        .iter()
        .any(|event| event["method"] == method && event["code"] == code)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rpc line with method {method} and code {code} within {limit:?}: {:?}",
            rpc_lines(server)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(server: &ServerProcess) -> String {
    reqwest::get(format!("{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_call_is_logged_and_timed_with_its_final_code_even_when_the_deadline_cuts_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/jwks.db", dir.path().display());
    let server =
        ServerProcess::spawn(&[("JWKS_STORE", &store), ("JWKS_REQUEST_TIMEOUT", "1s")]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = jwks_server::proto::key_service_client::KeyServiceClient::new(channel.clone());

    // A success: OK travels in the trailers after the message.
    client
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    // A refusal: the code travels in a trailers-only response.
    let refused = client
        .issue_token(IssueTokenRequest {
            lifetime_seconds: Some(-1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    // A call whose message never arrives: the server's deadline answers it,
    // before any handler has run.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let never_sent = tokio_stream::pending::<IssueTokenRequest>();
    let cut_off = grpc
        .client_streaming::<_, _, IssueTokenResponse, _>(
            Request::new(never_sent),
            http::uri::PathAndQuery::from_static("/jwks.v1.KeyService/IssueToken"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(cut_off.code(), Code::DeadlineExceeded, "{cut_off:?}");

    let limit = Duration::from_secs(10);
    for code in ["OK", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED"] {
        wait_for_rpc_line(&server, "IssueToken", code, limit).await;
    }
    for event in rpc_lines(&server) {
        assert!(event["latency_us"].is_u64(), "{event}");
    }
    let metrics = metrics(&server).await;
    for code in ["OK", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED"] {
        let series = format!(
            r#"jwks_grpc_request_duration_seconds_count{{method="IssueToken",code="{code}"}} 1"#
        );
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
}
