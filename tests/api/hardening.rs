//! Hard to break, hard to abuse: bad input of every class through both doors,
//! expired tokens switched off, client authentication, rate limits, and no
//! secret in any log line.

use std::{collections::HashSet, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use jwks_server::{
    access::hash_secret,
    proto::{IssueTokenRequest, IssueTokenResponse},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tonic::{Code, Request, metadata::MetadataValue};

use crate::helpers::{
    ServerProcess, TEST_KEK, TestApp, claims, header as jwt_header, spawn_app, spawn_app_with,
    verify, verify_with,
};

async fn post_auth(app: &TestApp, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url("/auth"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn assert_json_error(response: reqwest::Response, status: StatusCode, what: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
    assert!(
        body["error"].is_string() && body["detail"].is_string(),
        "{what}: {body}"
    );
    body
}

#[tokio::test]
async fn bad_rest_input_of_every_class_gets_a_clear_4xx() {
    let app = spawn_app().await;
    let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"username\":".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "JSON of the wrong shape",
            "application/json",
            b"{\"username\": 42}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "deeply nested JSON",
            "application/json",
            deep.into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "JSON that is not UTF-8",
            "application/json",
            b"{\"username\":\"\xff\xfe\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "form that is not UTF-8",
            "application/x-www-form-urlencoded",
            b"username=\xff\xfe".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "huge JSON",
            "application/json",
            vec![b'x'; 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "wrong content type",
            "image/png",
            b"\x89PNG".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "multipart",
            "multipart/form-data; boundary=x",
            b"--x--".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (what, content_type, body, status) in cases {
        assert_json_error(post_auth(&app, content_type, body).await, status, what).await;
    }

    // Absurd query strings: long, repeated, or binary.
    let long = format!("/auth?{}", "a=b&".repeat(2_000));
    assert_eq!(
        app.client
            .post(app.url(&long))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let junk = format!("/auth?expired={}", "%FF".repeat(1_000));
    let body = assert_json_error(
        app.client.post(app.url(&junk)).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "junk",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().len() < 1_000,
        "the echo of bad input is bounded"
    );

    // A header flood is refused before it reaches a handler.
    let mut flood = app.client.post(app.url("/auth"));
    for i in 0..200 {
        flood = flood.header(format!("x-flood-{i}"), "1");
    }
    assert_eq!(
        flood.send().await.unwrap().status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    // The server is unharmed.
    verify(&app.token("").await, &app.jwks().await).unwrap();
}

#[tokio::test]
async fn slow_clients_are_cut_off_instead_of_holding_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.request_timeout = Duration::from_secs(1)).await;
    let addr = app.http.trim_start_matches("http://").to_owned();

    // Headers that never finish: the connection is closed.
    let mut slow_headers = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_headers
        .write_all(b"POST /auth HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow_headers.read_to_end(&mut buf))
        .await
        .expect("closed within the timeout")
        .unwrap();

    // A body that never finishes: 408 with a JSON error.
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST /auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        slow_body.read_to_string(&mut response),
    )
    .await
    .expect("answered within the timeout")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
}

#[tokio::test]
async fn bad_grpc_input_gets_the_right_status_codes() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    // Oversize message: refused by size, not by crashing.
    let huge = IssueTokenRequest {
        subject: Some("x".repeat(64 * 1024)),
        ..Default::default()
    };
    let status = client.issue_token(huge).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );

    // Malformed credentials metadata.
    let mut request = Request::new(IssueTokenRequest::default());
    request
        .metadata_mut()
        .insert("authorization", MetadataValue::from_static("Basic !!!"));
    assert_eq!(
        client.issue_token(request).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Unknown fields are ignored (proto3 forward compatibility).
    #[derive(Clone, PartialEq, prost::Message)]
    struct NewerRequest {
        #[prost(bool, tag = "1")]
        expired: bool,
        #[prost(string, tag = "99")]
        added_later: String,
    }
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.unwrap();
    let response: tonic::Response<IssueTokenResponse> = grpc
        .unary(
            Request::new(NewerRequest {
                expired: false,
                added_later: "x".into(),
            }),
            http::uri::PathAndQuery::from_static("/jwks.v1.KeyService/IssueToken"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap();
    verify(&response.into_inner().token, &app.jwks().await).unwrap();
}

#[tokio::test]
async fn expired_tokens_can_be_switched_off_through_both_doors() {
    let app = spawn_app_with(|c| c.expired_tokens = Some(false)).await;
    let body = assert_json_error(
        app.client
            .post(app.url("/auth?expired=true"))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "REST",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("--test-tokens=true"),
        "{body}"
    );
    let status = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest {
            expired: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("--test-tokens=true"));
    // Valid tokens are unaffected.
    verify(&app.token("").await, &app.jwks().await).unwrap();
}

/// A server that requires client credentials: `billing` may only ask for the
/// `billing-api` audience; `ops` for any.
async fn app_with_clients() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let clients = json!({"clients": [
        {"id": "billing", "secret_hash": hash_secret("b-secret").unwrap(), "audiences": ["billing-api"]},
        {"id": "ops", "secret_hash": hash_secret("o-secret").unwrap()},
    ]});
    std::fs::write(&path, clients.to_string()).unwrap();
    let app = spawn_app_with(|c| c.clients_file = Some(path.clone())).await;
    // Keep the clients file's directory alive with the app.
    std::mem::forget(dir);
    app
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

#[tokio::test]
async fn client_authentication_over_rest() {
    let app = app_with_clients().await;
    let jwks = app.jwks().await;

    let ok = app
        .client
        .post(app.url("/auth"))
        .header(header::AUTHORIZATION, basic("billing", "b-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let token = ok.text().await.unwrap();
    let data = verify_with(&token, &jwks, |v| v.set_audience(&["billing-api"])).unwrap();
    assert_eq!(data.claims["sub"], "billing", "sub is the client id");
    assert_eq!(
        data.claims["aud"], "billing-api",
        "the client's audience by default"
    );

    let form = app
        .client
        .post(app.url("/auth"))
        .form(&[
            ("client_id", "ops"),
            ("client_secret", "o-secret"),
            ("audience", "anything"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert_eq!(claims(&form.text().await.unwrap())["sub"], "ops");

    for (what, request) in [
        ("no credentials", app.client.post(app.url("/auth"))),
        (
            "wrong secret",
            app.client
                .post(app.url("/auth"))
                .header(header::AUTHORIZATION, basic("billing", "nope")),
        ),
        (
            "unknown client",
            app.client
                .post(app.url("/auth"))
                .header(header::AUTHORIZATION, basic("mallory", "b-secret")),
        ),
        (
            "username is not a client",
            app.client
                .post(app.url("/auth"))
                .form(&[("username", "billing")]),
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().starts_with("Basic")),
            Some(true),
            "{what}"
        );
        assert_json_error(response, StatusCode::UNAUTHORIZED, what).await;
    }

    let other_audience = app
        .client
        .post(app.url("/auth"))
        .header(header::AUTHORIZATION, basic("billing", "b-secret"))
        .json(&json!({"audience": "payroll-api"}))
        .send()
        .await
        .unwrap();
    assert_json_error(
        other_audience,
        StatusCode::FORBIDDEN,
        "audience not allowed",
    )
    .await;
}

#[tokio::test]
async fn client_authentication_over_grpc() {
    let app = app_with_clients().await;
    let jwks = app.jwks().await;
    let mut client = app.grpc().await;
    let with = |metadata: &[(&'static str, String)], request: IssueTokenRequest| {
        let mut request = Request::new(request);
        for (key, value) in metadata {
            request.metadata_mut().insert(*key, value.parse().unwrap());
        }
        request
    };

    let ok = client
        .issue_token(with(
            &[("authorization", basic("billing", "b-secret"))],
            IssueTokenRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    let data = verify_with(&ok.token, &jwks, |v| v.set_audience(&["billing-api"])).unwrap();
    assert_eq!(data.claims["sub"], "billing");

    let headers = [
        ("x-client-id", "ops".to_owned()),
        ("x-client-secret", "o-secret".to_owned()),
    ];
    let ok = client
        .issue_token(with(&headers, IssueTokenRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claims(&ok.token)["sub"], "ops");

    for (what, metadata) in [
        ("none", vec![]),
        (
            "wrong secret",
            vec![("authorization", basic("billing", "nope"))],
        ),
        (
            "unknown client",
            vec![
                ("x-client-id", "mallory".to_owned()),
                ("x-client-secret", "x".to_owned()),
            ],
        ),
    ] {
        let status = client
            .issue_token(with(&metadata, IssueTokenRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
    }
    let denied = client
        .issue_token(with(
            &[("authorization", basic("billing", "b-secret"))],
            IssueTokenRequest {
                audience: vec!["payroll-api".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// Wrong secrets cost an argon2 check each, so an address that keeps sending
/// them runs out of checks (429 / RESOURCE_EXHAUSTED with a retry time) while
/// a client whose secret is already proven keeps getting tokens from the same
/// address, through both doors.
#[tokio::test]
async fn a_stream_of_wrong_secrets_is_cut_off_without_locking_out_a_proven_client() {
    let app = app_with_clients().await;
    let mut grpc = app.grpc().await;
    let issue = |auth: String| {
        app.client
            .post(app.url("/auth"))
            .header(header::AUTHORIZATION, auth)
            .send()
    };
    assert_eq!(issue(basic("ops", "o-secret")).await.unwrap().status(), 200);

    let budget = jwks_server::access::SecretChecks::PER_ADDRESS_BURST;
    let mut unauthorized = 0;
    let refused = loop {
        let response = issue(basic("ops", &format!("guess-{unauthorized}")))
            .await
            .unwrap();
        if response.status() != StatusCode::UNAUTHORIZED {
            break response;
        }
        unauthorized += 1;
        // The budget refills one check every 2 s, so a slow machine may see
        // a few more than the burst.
        assert!(
            unauthorized <= budget + 10,
            "no limit after {unauthorized} wrong secrets"
        );
    };
    assert!(
        unauthorized >= budget - 2,
        "cut off after only {unauthorized}"
    );
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let body = assert_json_error(refused, StatusCode::TOO_MANY_REQUESTS, "over budget").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("client authentication attempts"),
        "{body}"
    );

    let mut request = Request::new(IssueTokenRequest::default());
    request
        .metadata_mut()
        .insert("authorization", basic("billing", "wrong").parse().unwrap());
    let status = grpc.issue_token(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some());

    // The proven client is answered from the cache, never limited.
    let ok = issue(basic("ops", "o-secret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    verify(&ok.text().await.unwrap(), &app.jwks().await).unwrap();
    let mut request = Request::new(IssueTokenRequest::default());
    request
        .metadata_mut()
        .insert("authorization", basic("ops", "o-secret").parse().unwrap());
    assert!(grpc.issue_token(request).await.is_ok());
}

#[tokio::test]
async fn rate_limits_refuse_with_retry_after_and_recover_while_the_jwks_is_never_limited() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = Some(2);
    })
    .await;
    assert_eq!(
        app.client
            .post(app.url("/auth"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .post(app.url("/auth"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let limited = app.client.post(app.url("/auth")).send().await.unwrap();
    let retry_after: u64 = limited.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_json_error(
        limited,
        StatusCode::TOO_MANY_REQUESTS,
        "third in a burst of two",
    )
    .await;

    // The same address over gRPC shares the budget.
    let status = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());

    for _ in 0..20 {
        assert_eq!(
            app.client
                .get(app.url("/.well-known/jwks.json"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        app.client
            .post(app.url("/auth"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "recovered"
    );
}

#[tokio::test]
async fn no_private_key_secret_or_token_ever_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let clients_path = dir.path().join("clients.json");
    std::fs::write(
        &clients_path,
        json!({"clients": [{"id": "svc", "secret_hash": hash_secret("svc-secret-value").unwrap()}]}).to_string(),
    )
    .unwrap();
    let store = format!("sqlite://{}/jwks.db", dir.path().display());
    let mut server = ServerProcess::spawn(&[
        ("JWKS_STORE", &store),
        ("JWKS_CLIENTS_FILE", clients_path.to_str().unwrap()),
        ("JWKS_TEST_TOKENS", "true"),
        ("RUST_LOG", "trace"),
    ])
    .await;
    let client = reqwest::Client::new();
    let mut tokens = Vec::new();
    for query in ["", "?expired=true"] {
        let response = client
            .post(format!("{}/auth{query}", server.http))
            .header(header::AUTHORIZATION, basic("svc", "svc-secret-value"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        tokens.push(response.text().await.unwrap());
    }
    let wrong = client
        .post(format!("{}/auth", server.http))
        .form(&[
            ("client_id", "svc"),
            ("client_secret", "wrong-secret-value"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let mut grpc = jwks_server::proto::key_service_client::KeyServiceClient::connect(format!(
        "http://{}",
        server.grpc
    ))
    .await
    .unwrap();
    let mut request = Request::new(IssueTokenRequest::default());
    request.metadata_mut().insert(
        "authorization",
        basic("svc", "svc-secret-value").parse().unwrap(),
    );
    tokens.push(grpc.issue_token(request).await.unwrap().into_inner().token);
    client
        .get(format!("{}/.well-known/jwks.json", server.http))
        .send()
        .await
        .unwrap();
    server.child.start_kill().unwrap();
    let (_, log) = server.exited(Duration::from_secs(15)).await;
    assert!(
        log.lines().count() > 20,
        "trace logging produced {} lines",
        log.lines().count()
    );

    // The private keys, as the store holds them once opened.
    let store = jwks_server::store::SqlStore::connect(&store).await.unwrap();
    let keks = jwks_server::keys::seal::KekRing::new(vec![
        jwks_server::keys::seal::Kek::from_base64(TEST_KEK).unwrap(),
    ])
    .unwrap();
    let mut forbidden: HashSet<String> = HashSet::new();
    for key in jwks_server::store::KeyStore::load(&store).await.unwrap() {
        let der = keks.open(&key.meta.kid, &key.sealed).unwrap();
        // Any 24-byte window of the private key, in the encodings a log might use.
        for window in der.chunks(24).filter(|c| c.len() == 24) {
            forbidden.insert(STANDARD.encode(window));
            forbidden.insert(window.iter().map(|b| format!("{b:02x}")).collect());
            forbidden.insert(format!("{window:?}").trim_matches(['[', ']']).to_owned());
        }
    }
    for token in &tokens {
        forbidden.insert(token.clone());
        forbidden.insert(token.rsplit('.').next().unwrap().to_owned()); // the signature
    }
    forbidden.extend(
        [
            "svc-secret-value",
            "wrong-secret-value",
            TEST_KEK,
            "PRIVATE KEY",
        ]
        .map(str::to_owned),
    );
    forbidden.insert(STANDARD.encode("svc:svc-secret-value"));
    for needle in &forbidden {
        assert!(
            !log.contains(needle.as_str()),
            "the log contains a secret ({} chars)",
            needle.len()
        );
    }
    // Positive control: the log is the real one, and public facts do appear in it.
    let kid = jwt_header(&tokens[0])["kid"].as_str().unwrap().to_owned();
    assert!(
        log.contains(&kid),
        "the signing key's kid is logged when it is created"
    );
}

mod fuzzish {
    //! Property test: arbitrary methods, paths, queries, headers and bodies
    //! thrown at the REST router never produce a 5xx, a panic, or a non-JSON error.

    use std::sync::{Arc, OnceLock};

    use axum::{body::Body, http::Request};
    use jwks_server::{metrics::Metrics, startup::start_service, transport::http::router};
    use proptest::prelude::*;
    use tower::ServiceExt;

    fn runtime_and_router() -> &'static (tokio::runtime::Runtime, axum::Router, tempfile::TempDir) {
        static SHARED: OnceLock<(tokio::runtime::Runtime, axum::Router, tempfile::TempDir)> =
            OnceLock::new();
        SHARED.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let config = crate::helpers::test_config(dir.path());
            let service = runtime.block_on(start_service(&config)).unwrap();
            let app = router(
                service,
                Arc::new(Metrics::new()),
                "127.0.0.1:50051".parse().unwrap(),
                std::time::Duration::from_secs(5),
            );
            (runtime, app, dir)
        })
    }

    fn method() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("GET".to_owned()),
            Just("POST".to_owned()),
            Just("PUT".to_owned()),
            Just("DELETE".to_owned()),
            Just("PATCH".to_owned()),
            Just("HEAD".to_owned()),
            Just("OPTIONS".to_owned()),
            "[A-Z]{1,10}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_owned()),
            Just("/auth".to_owned()),
            Just("/health".to_owned()),
            Just("/connect".to_owned()),
            Just("/.well-known/jwks.json".to_owned()),
            Just("/metrics".to_owned()),
            Just("/openapi.json".to_owned()),
            "(/[a-zA-Z0-9%._~-]{0,12}){1,4}",
        ]
    }

    fn query() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("?expired".to_owned()),
            Just("?expired=true".to_owned()),
            "\\?[a-z=&%0-9A-F]{0,40}",
            "\\?expired=[ -~]{0,10}".prop_map(|s| s.replace([' ', '#'], "%20")),
        ]
    }

    fn content_type() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            Just("application/json".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            Just("text/plain".to_owned()),
            Just("application/xml".to_owned()),
            "[a-z]{1,8}/[a-z+.-]{1,12}",
        ])
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "\\{\"username\":\"[a-z]{0,8}\",\"audience\":\\[\"[a-z]{0,5}\"\\],\"lifetime_seconds\":-?[0-9]{1,7}\\}".prop_map(String::into_bytes),
            "username=[a-z%0-9]{0,10}&aud=[a-z]{0,5}&lifetime_seconds=[0-9a-z-]{0,6}".prop_map(String::into_bytes),
        ]
    }

    fn authorization() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            "Basic [A-Za-z0-9+/=!]{0,24}",
            "Bearer [ -~]{0,20}",
            "[ -~]{0,30}"
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn the_router_never_answers_5xx_or_a_non_json_error(
            method in method(), path in path(), query in query(), content_type in content_type(),
            accept in prop::option::of(prop_oneof![Just("application/json"), Just("*/*"), Just("application/jwk-set+json")]),
            authorization in authorization(), body in body(),
        ) {
            let (runtime, app, _) = runtime_and_router();
            let mut request = Request::builder().method(method.as_str()).uri(format!("{path}{query}"));
            if let Some(content_type) = &content_type { request = request.header("content-type", content_type); }
            if let Some(accept) = accept { request = request.header("accept", accept); }
            if let Some(authorization) = &authorization { request = request.header("authorization", authorization); }
            // Inputs the HTTP layer itself refuses (invalid header text) never reach us.
            let Ok(request) = request.body(Body::from(body)) else { return Ok(()) };
            let response = runtime.block_on(app.clone().oneshot(request)).unwrap();
            let status = response.status();
            prop_assert!(status.as_u16() < 500, "{} {}{} -> {}", method, path, query, status);
            let bytes = runtime.block_on(axum::body::to_bytes(response.into_body(), 1 << 20)).unwrap();
            if status.is_client_error() && !bytes.is_empty() {
                let error: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| TestCaseError::fail(format!("{status}: not JSON: {e}")))?;
                prop_assert!(error["error"].is_string() && error["detail"].is_string(), "{}", error);
            }
        }
    }
}
