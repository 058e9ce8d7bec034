//! Bounded connections on both ports: what a slow, silent or greedy client
//! can hold, and that real clients are still served while it tries. Each test
//! reproduces a fault of issue #10 over real sockets.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{ServerProcess, spawn_app_with};

/// The most headers a REST request may have, on HTTP/1 and HTTP/2 alike.
const MAX_HEADERS: usize = 64;

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits (at most `limit`) until the server closes `stream`: end of file or a
/// reset. Whatever it sent first is returned.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let result = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(result.is_ok(), "{what}: still open after {limit:?}");
    received
}

/// Whether the server has already closed `stream` (without waiting).
fn already_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// How an HTTP/2 stream ended, as a client sees it.
#[derive(Debug)]
enum StreamEnd {
    /// A response whose `grpc-status` (headers or trailers) is this code.
    Grpc(Option<String>),
    /// The server reset the stream or closed the connection (why, for
    /// failure messages).
    Reset(#[allow(dead_code)] String),
}

/// Opens a raw h2 connection to `addr` (no gRPC client, so nothing limits
/// what it sends) and drives it in the background. The join handle resolves
/// when the server closes the connection.
async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::spawn(connection))
}

/// Starts `count` gRPC calls to `path` on one connection, each sending the
/// 5-byte gRPC message prefix for a message of `declared` bytes followed by
/// `sent` bytes of it, and never the rest.
async fn half_sent_calls(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    count: usize,
    declared: u32,
    sent: usize,
) -> Vec<(h2::client::ResponseFuture, h2::SendStream<Bytes>)> {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&declared.to_be_bytes());
    let payload = Bytes::from(vec![0u8; sent]);
    let mut calls = Vec::new();
    for _ in 0..count {
        let mut ready = client.clone().ready().await.unwrap();
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut body) = ready.send_request(request, false).unwrap();
        // The server may answer (and reset) before all of it is sent.
        let _ = body.send_data(Bytes::from(prefix.clone()), false);
        let _ = body.send_data(payload.clone(), false);
        calls.push((response, body));
        *client = ready;
    }
    calls
}

/// How a call ended, within `limit`.
async fn stream_end(response: h2::client::ResponseFuture, limit: Duration) -> StreamEnd {
    let ended = tokio::time::timeout(limit, async {
        let response = match response.await {
            Ok(response) => response,
            Err(err) => return StreamEnd::Reset(err.to_string()),
        };
        let header = |map: &http::HeaderMap| {
            map.get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        if let Some(code) = header(response.headers()) {
            return StreamEnd::Grpc(Some(code));
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            if let Err(err) = chunk {
                return StreamEnd::Reset(err.to_string());
            }
        }
        match body.trailers().await {
            Ok(trailers) => StreamEnd::Grpc(trailers.as_ref().and_then(header)),
            Err(err) => StreamEnd::Reset(err.to_string()),
        }
    })
    .await;
    ended.unwrap_or_else(|_| panic!("the call was neither answered nor reset within {limit:?}"))
}

#[tokio::test]
async fn half_sent_grpc_messages_are_cut_off_and_do_not_pin_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/jwks.db", dir.path().display());
    let server =
        ServerProcess::spawn(&[("JWKS_STORE", &store), ("JWKS_REQUEST_TIMEOUT", "1s")]).await;
    let pid = server.child.id().unwrap();
    let before = rss_kib(pid);

    // 50 Health/Check calls on one connection, each declaring a 1 MiB message
    // and sending all of it but the last byte: refused by size at once.
    let (mut client, _connection) = h2_connect(server.grpc).await;
    let calls = half_sent_calls(
        &mut client,
        server.grpc,
        "/grpc.health.v1.Health/Check",
        50,
        1024 * 1024,
        1024 * 1024 - 1,
    )
    .await;
    for (response, _body) in calls {
        match stream_end(response, Duration::from_secs(10)).await {
            // OUT_OF_RANGE or RESOURCE_EXHAUSTED: too large.
            StreamEnd::Grpc(Some(code)) => assert!(code == "11" || code == "8", "{code}"),
            other => panic!("an oversized message got {other:?}"),
        }
    }

    // Small messages that never finish: cut off by the request timeout.
    let calls = half_sent_calls(
        &mut client,
        server.grpc,
        "/grpc.health.v1.Health/Check",
        50,
        1000,
        10,
    )
    .await;
    for (response, _body) in calls {
        match stream_end(response, Duration::from_secs(10)).await {
            StreamEnd::Grpc(Some(code)) => assert_eq!(code, "4", "DEADLINE_EXCEEDED"),
            StreamEnd::Reset(_) => {}
            other => panic!("a stalled message got {other:?}"),
        }
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// An `IssueToken` call on a raw h2 connection whose message is sent in two
/// DATA frames `pause` apart (none when zero): its token, once answered.
async fn issue_token_in_pieces(
    mut client: h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    alg: &str,
    pause: Duration,
) -> String {
    use prost::Message;
    let message = jwks_server::proto::IssueTokenRequest {
        alg: Some(alg.to_owned()),
        subject: Some("pieces".to_owned()),
        ..Default::default()
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    let request = http::Request::post(format!("http://{addr}/jwks.v1.KeyService/IssueToken"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    client = client.ready().await.unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    let (first, rest) = framed.split_at(if pause.is_zero() { 0 } else { 7 });
    if !first.is_empty() {
        body.send_data(Bytes::copy_from_slice(first), false)
            .unwrap();
        tokio::time::sleep(pause).await;
    }
    body.send_data(Bytes::copy_from_slice(rest), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered within 10 s")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut answer = Vec::new();
    while let Some(chunk) = body.data().await {
        answer.extend_from_slice(&chunk.unwrap());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    assert!(answer.len() > 5 && answer[0] == 0, "{answer:?}");
    jwks_server::proto::IssueTokenResponse::decode(&answer[5..])
        .unwrap()
        .token
}

/// Calls whose message is whole when they start, and calls whose message
/// arrives 200 ms later, all at once on one connection: every one answered
/// with a token the JWKS verifies.
async fn whole_and_late_messages_are_answered(http: &str, grpc: SocketAddr) {
    let (client, _connection) = h2_connect(grpc).await;
    let calls = (0..16).map(|i| {
        let pause = if i % 2 == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        };
        let alg = if i % 4 < 2 { "ES256" } else { "RS256" };
        tokio::spawn(issue_token_in_pieces(client.clone(), grpc, alg, pause))
    });
    let mut tokens = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        tokens.push(call.await);
    }
    let jwks: Value = reqwest::get(format!("{http}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for token in tokens {
        let token = token.unwrap();
        let verified = crate::algorithms::verify_any(&token, &jwks).unwrap();
        assert_eq!(verified.claims["sub"], "pieces");
    }
}

/// On one worker thread each call is first run where the connection hands it
/// over and only spawned when it has to wait; on more, each is spawned. Both
/// ways answer every call, whether its message is in hand or still arriving.
#[tokio::test]
async fn grpc_calls_are_answered_on_one_worker_thread_and_on_several() {
    let app = spawn_app_with(|config| {
        config.algorithms = jwks_server::config::Algorithms(
            ["ES256", "RS256"].map(|a| a.parse().unwrap()).to_vec(),
        );
    })
    .await;
    whole_and_late_messages_are_answered(&app.http, app.grpc_addr).await;
    for workers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}/jwks.db", dir.path().display());
        let server = ServerProcess::spawn(&[
            ("JWKS_STORE", &store),
            ("JWKS_ALGORITHMS", "ES256,RS256"),
            ("TOKIO_WORKER_THREADS", workers),
        ])
        .await;
        whole_and_late_messages_are_answered(&server.http, server.grpc).await;
    }
}

/// The idle timeout counts from the end of the last request: a call in
/// flight for longer than it (its message arriving late) is answered, and the
/// connection then stays open for the idle timeout before it is closed.
#[tokio::test]
async fn a_call_in_flight_outlives_the_idle_timeout_and_idleness_counts_from_its_end() {
    let app = spawn_app_with(|c| {
        c.request_timeout = Duration::from_secs(5);
        c.idle_timeout = Duration::from_secs(1);
        c.algorithms = jwks_server::config::Algorithms(vec!["ES256".parse().unwrap()]);
    })
    .await;
    let (client, connection) = h2_connect(app.grpc_addr).await;
    let token = issue_token_in_pieces(
        client.clone(),
        app.grpc_addr,
        "ES256",
        Duration::from_millis(1500),
    )
    .await;
    let ended = std::time::Instant::now();
    assert!(crate::algorithms::verify_any(&token, &app.jwks().await).is_ok());
    // Idle from here: still open half an idle timeout later, closed soon after
    // a whole one.
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(ended.elapsed())).await;
    assert!(!connection.is_finished(), "closed before the idle timeout");
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("closed within 5 s of going idle")
        .unwrap()
        .ok();
    let idle_for = ended.elapsed();
    assert!(
        idle_for >= Duration::from_millis(900),
        "closed {idle_for:?} after its last call, before the 1 s idle timeout"
    );
    drop(client);
}

#[tokio::test]
async fn every_grpc_service_refuses_messages_over_16_kib() {
    let app = spawn_app_with(|_| {}).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "x".repeat(64 * 1024),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    // Normal-sized checks still work.
    let ok = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jwks.v1.KeyService".into(),
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().status, 1, "SERVING");
}

#[tokio::test]
async fn silent_and_one_byte_connections_are_closed_after_the_request_timeout_on_both_ports() {
    let app = spawn_app_with(|c| {
        c.request_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let rest: SocketAddr = app.http.trim_start_matches("http://").parse().unwrap();
    for (port, addr) in [("REST", rest), ("gRPC", app.grpc_addr)] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut one_byte = TcpStream::connect(addr).await.unwrap();
        one_byte.write_all(&H2_PREFACE[..1]).await.unwrap();
        closed_by_server(
            &mut silent,
            Duration::from_secs(10),
            &format!("{port} silent"),
        )
        .await;
        closed_by_server(
            &mut one_byte,
            Duration::from_secs(10),
            &format!("{port} 1 byte"),
        )
        .await;
    }
}

#[tokio::test]
async fn idle_h2c_sessions_are_closed_on_both_ports() {
    let app = spawn_app_with(|c| {
        c.request_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let rest: SocketAddr = app.http.trim_start_matches("http://").parse().unwrap();
    for (port, addr, path) in [
        ("REST", rest, "/health"),
        ("gRPC", app.grpc_addr, "/grpc.health.v1.Health/Check"),
    ] {
        // A session that never sends a request.
        let (_client, silent) = h2_connect(addr).await;
        // A session that sends one request and then nothing.
        let (client, used) = h2_connect(addr).await;
        let mut ready = client.ready().await.unwrap();
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut body) = ready.send_request(request, false).unwrap();
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200, "{port}");
        drop(response);

        for (what, connection) in [("silent", silent), ("idle after a request", used)] {
            tokio::time::timeout(Duration::from_secs(10), connection)
                .await
                .unwrap_or_else(|_| panic!("{port} h2c session {what} still open after 10 s"))
                .unwrap()
                .ok();
        }
    }
}

#[tokio::test]
async fn extra_connections_wait_for_a_free_slot_and_are_then_served() {
    let app = spawn_app_with(|c| {
        c.request_timeout = Duration::from_secs(1);
        c.max_connections = Some(2);
    })
    .await;
    let rest: SocketAddr = app.http.trim_start_matches("http://").parse().unwrap();
    // Two silent connections take both slots...
    let hogs = [
        TcpStream::connect(rest).await.unwrap(),
        TcpStream::connect(rest).await.unwrap(),
    ];
    // ...so a real client waits until the server has closed them.
    let mut client = TcpStream::connect(rest).await.unwrap();
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        client.read_to_string(&mut response),
    )
    .await
    .expect("the waiting client is served")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The client took the slot of a hog the server had closed.
    assert!(
        hogs.iter().any(already_closed),
        "the extra connection was served while both slots were taken"
    );
}

#[tokio::test]
async fn out_of_file_descriptors_rest_still_answers_and_accept_errors_are_not_a_log_flood() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/jwks.db", dir.path().display());
    let server = ServerProcess::spawn_program(
        &[
            "prlimit",
            "--nofile=256:256",
            "--",
            env!("CARGO_BIN_EXE_jwks-server"),
        ],
        &[("JWKS_STORE", &store), ("JWKS_REQUEST_TIMEOUT", "5s")],
    )
    .await;

    // 300 idle gRPC connections: more than the process has descriptors.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(server.grpc).await.unwrap());
    }
    // Real clients on the other port are still answered.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..20 {
        let response = client
            .post(format!("{}/auth", server.http))
            .send()
            .await
            .expect("REST /auth answers while gRPC is flooded");
        assert_eq!(response.status(), 200);
    }
    let warnings = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("accept"))
        .count();
    assert!(
        warnings <= 3,
        "{warnings} accept log lines: {}",
        server.log_text()
    );
    drop(idle);
}

/// The JSON error in an HTTP/1.1 response read off a socket.
fn json_error_of(response: &[u8], status: u16) -> Value {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        body["error"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn refusals_hyper_writes_itself_are_json_and_header_limits_match_on_http1_and_http2() {
    let app = spawn_app_with(|_| {}).await;
    let rest: SocketAddr = app.http.trim_start_matches("http://").parse().unwrap();
    let raw = |request: Vec<u8>| async move {
        let mut stream = TcpStream::connect(rest).await.unwrap();
        stream.write_all(&request).await.unwrap();
        closed_by_server(&mut stream, Duration::from_secs(10), "a refused request").await
    };

    // Requests hyper cannot parse.
    let malformed = raw(b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec()).await;
    json_error_of(&malformed, 400);
    let mut flood = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        flood.extend_from_slice(format!("x-flood-{i}: 1\r\n").as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    json_error_of(&raw(flood).await, 431);

    // One header over the limit, on HTTP/1.1...
    let mut over = app.client.get(app.url("/health"));
    for i in 0..=MAX_HEADERS {
        over = over.header(format!("x-extra-{i}"), "1");
    }
    let response = over.send().await.unwrap();
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "request_header_fields_too_large", "{body}");

    // ...and on HTTP/2.
    let (client, _connection) = h2_connect(rest).await;
    let mut ready = client.ready().await.unwrap();
    let mut request = http::Request::get(format!("http://{rest}/health"));
    for i in 0..=MAX_HEADERS {
        request = request.header(format!("x-extra-{i}"), "1");
    }
    let (response, _) = ready.send_request(request.body(()).unwrap(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 431);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "request_header_fields_too_large", "{body}");
}

/// Not a test: the RSS figures of issue #10 for a release binary. Run with
/// `JWKS_FLOOD_BINARY=$PWD/target/release/jwks-server cargo test --test api
/// flood_figures -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check: prints RSS under the gRPC floods"]
async fn flood_figures() {
    let binary = std::env::var("JWKS_FLOOD_BINARY").expect("JWKS_FLOOD_BINARY");
    for (name, connections, streams, path, declared) in [
        (
            "50 half-sent Health/Check on one connection",
            1,
            50,
            "/grpc.health.v1.Health/Check",
            1024 * 1024_u32,
        ),
        (
            "20 connections of half-sent IssueToken",
            20,
            200,
            "/jwks.v1.KeyService/IssueToken",
            16 * 1024 - 6,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}/jwks.db", dir.path().display());
        let server = ServerProcess::spawn_program(&[&binary], &[("JWKS_STORE", &store)]).await;
        let pid = server.child.id().unwrap();
        let before = rss_kib(pid);
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&declared.to_be_bytes());
        let payload = Bytes::from(vec![0u8; declared as usize - 1]);
        let mut held = Vec::new();
        let mut sessions = Vec::new();
        let mut opened = 0;
        for _ in 0..connections {
            let (mut client, connection) = h2_connect(server.grpc).await;
            for _ in 0..streams {
                // Stop at the server's stream cap.
                let Ok(Ok(ready)) =
                    tokio::time::timeout(Duration::from_secs(1), client.clone().ready()).await
                else {
                    break;
                };
                client = ready;
                let request = http::Request::post(format!("http://{}{path}", server.grpc))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .unwrap();
                let Ok((response, mut body)) = client.send_request(request, false) else {
                    break;
                };
                let _ = body.send_data(Bytes::from(prefix.clone()), false);
                let _ = body.send_data(payload.clone(), false);
                held.push((response, body));
                opened += 1;
            }
            sessions.push((client, connection));
        }
        // The calls stay open on the client's side throughout: at the default
        // 10 s request timeout the server has cut off each wave by 30 s.
        let mut peak = before;
        let mut at = Vec::new();
        for tick in 1..=60 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = rss_kib(pid);
            peak = peak.max(now);
            if tick % 30 == 0 {
                at.push(now);
            }
        }
        println!(
            "{name} ({opened} calls): RSS {before} KiB before, peak {peak} KiB, \
             {} KiB at 15 s, {} KiB at 30 s",
            at[0], at[1]
        );
    }
}
