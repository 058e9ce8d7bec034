//! Input is never silently ignored or silently resolved: `expired` in a body
//! is honoured, conflicting input is a 400 naming the conflict, text that
//! hides or reorders characters is refused, and an unknown client id costs
//! the same check, gets the same answer and spends the same budget as a known
//! one with a wrong secret.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use jwks_server::{
    access::{SecretChecks, hash_secret},
    proto::IssueTokenRequest,
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tonic::{Code, Request};

use crate::helpers::{ServerProcess, TestApp, claims, kids, now, spawn_app, spawn_app_with};

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// The JSON error of a 400, after checking it is one.
async fn bad_request(response: reqwest::Response, what: &str) -> String {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
    assert_eq!(body["error"], "invalid_request", "{what}: {body}");
    body["detail"].as_str().unwrap_or_default().to_owned()
}

/// A token whose `exp` is in the past and whose `kid` the JWKS no longer lists.
async fn assert_expired(app: &TestApp, response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 200, "{what}");
    let token = response.text().await.unwrap();
    assert!(
        claims(&token)["exp"].as_i64().unwrap() < now(),
        "{what}: exp is not in the past"
    );
    let kid = crate::helpers::header(&token)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!kids(&app.jwks().await).contains(&kid), "{what}");
}

async fn assert_valid(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 200, "{what}");
    let token = response.text().await.unwrap();
    assert!(
        claims(&token)["exp"].as_i64().unwrap() > now(),
        "{what}: exp is not in the future"
    );
}

#[tokio::test]
async fn expired_in_a_json_or_form_body_is_honoured() {
    let app = spawn_app().await;
    let post = || app.client.post(app.url("/auth"));
    for (what, request) in [
        (
            "JSON true (the gRPC shape)",
            post().json(&json!({"expired": true})),
        ),
        ("JSON \"1\"", post().json(&json!({"expired": "1"}))),
        ("form expired=true", post().form(&[("expired", "true")])),
        ("form expired (no value)", post().form(&[("expired", "")])),
        (
            "query and body agree",
            app.client
                .post(app.url("/auth?expired=1"))
                .json(&json!({"expired": true})),
        ),
    ] {
        assert_expired(&app, post_send(request).await, what).await;
    }
    for (what, request) in [
        ("JSON false", post().json(&json!({"expired": false}))),
        ("form expired=0", post().form(&[("expired", "0")])),
    ] {
        assert_valid(post_send(request).await, what).await;
    }
    for (what, request) in [
        ("JSON \"yes\"", post().json(&json!({"expired": "yes"}))),
        ("form expired=2", post().form(&[("expired", "2")])),
    ] {
        let detail = bad_request(post_send(request).await, what).await;
        assert!(detail.contains("expired"), "{what}: {detail}");
    }
}

async fn post_send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.unwrap()
}

#[tokio::test]
async fn expired_in_the_body_that_contradicts_the_query_is_a_400_naming_both() {
    let app = spawn_app().await;
    for (what, query, request) in [
        (
            "JSON false, query true",
            "?expired=true",
            json!({"expired": false}),
        ),
        (
            "JSON true, query false",
            "?expired=0",
            json!({"expired": true}),
        ),
    ] {
        let response = app
            .client
            .post(app.url(&format!("/auth{query}")))
            .json(&request)
            .send()
            .await
            .unwrap();
        let detail = bad_request(response, what).await;
        assert!(
            detail.contains("query") && detail.contains("body"),
            "{what}: {detail}"
        );
    }
    let response = app
        .client
        .post(app.url("/auth?expired"))
        .form(&[("expired", "false")])
        .send()
        .await
        .unwrap();
    let detail = bad_request(response, "form false, query present").await;
    assert!(
        detail.contains("query") && detail.contains("body"),
        "{detail}"
    );
}

#[tokio::test]
async fn conflicting_rest_input_is_a_400_naming_the_conflict() {
    let app = spawn_app().await;
    let form = |body: &'static str| {
        app.client
            .post(app.url("/auth"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
    };
    let json_body = |body: &'static str| {
        app.client
            .post(app.url("/auth"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, &[&str])> = vec![
        (
            "a form field twice",
            form("username=a&username=b"),
            &["username"],
        ),
        (
            "lifetime_seconds with expires_in (form)",
            form("lifetime_seconds=60&expires_in=60"),
            &["lifetime_seconds", "expires_in"],
        ),
        (
            "lifetime_seconds with expires_in (JSON)",
            json_body(r#"{"lifetime_seconds":60,"expires_in":30}"#),
            &["lifetime_seconds", "expires_in"],
        ),
        (
            "audience with aud (JSON)",
            json_body(r#"{"audience":"a","aud":"b"}"#),
            &["audience", "aud"],
        ),
        (
            "audience with aud (form)",
            form("audience=a&aud=b"),
            &["audience", "aud"],
        ),
        (
            "a JSON member twice",
            json_body(r#"{"username":"a","username":"b"}"#),
            &["username"],
        ),
        (
            "a JSON member twice, sent as text/plain",
            app.client
                .post(app.url("/auth"))
                .header(header::CONTENT_TYPE, "text/plain")
                .body(r#"{"username":"a","username":"b"}"#),
            &["username"],
        ),
        (
            "two Authorization headers",
            app.client
                .post(app.url("/auth"))
                .header(header::AUTHORIZATION, basic("alice", "x"))
                .header(header::AUTHORIZATION, basic("bob", "y")),
            &["Authorization"],
        ),
        (
            "two Content-Type headers",
            app.client
                .post(app.url("/auth"))
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(r#"{"username":"a"}"#),
            &["Content-Type"],
        ),
        (
            "Basic credentials and body credentials",
            app.client
                .post(app.url("/auth"))
                .header(header::AUTHORIZATION, basic("alice", "x"))
                .form(&[("client_id", "bob"), ("client_secret", "y")]),
            &["Authorization", "client_id"],
        ),
        (
            "client_secret without client_id",
            form("client_secret=y"),
            &["client_secret", "client_id"],
        ),
        (
            "a body member in the query",
            app.client.post(app.url("/auth?username=alice")),
            &["username", "query"],
        ),
        (
            "a client secret in the query",
            app.client.post(app.url("/auth?client_secret=y")),
            &["client_secret", "query"],
        ),
    ];
    for (what, request, named) in cases {
        let detail = bad_request(request.send().await.unwrap(), what).await;
        for name in named {
            assert!(detail.contains(name), "{what}: {name} not in {detail:?}");
        }
    }

    // A list stays a list, and unknown members are still ignored.
    let response = form("aud=a&aud=b&grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        claims(&response.text().await.unwrap())["aud"],
        json!(["a", "b"])
    );
}

#[tokio::test]
async fn conflicting_grpc_credentials_are_invalid_argument() {
    let app = spawn_app().await;
    let mut client = app.grpc().await;
    let cases: [(&str, &[(&str, String)]); 4] = [
        (
            "authorization twice",
            &[
                ("authorization", basic("alice", "x")),
                ("authorization", basic("bob", "y")),
            ],
        ),
        (
            "x-client-id twice",
            &[
                ("x-client-id", "alice".into()),
                ("x-client-id", "bob".into()),
            ],
        ),
        (
            "authorization and x-client-id",
            &[
                ("authorization", basic("alice", "x")),
                ("x-client-id", "bob".into()),
            ],
        ),
        (
            "x-client-secret without x-client-id",
            &[("x-client-secret", "y".into())],
        ),
    ];
    for (what, metadata) in cases {
        let mut request = Request::new(IssueTokenRequest::default());
        for (key, value) in metadata {
            request.metadata_mut().append(*key, value.parse().unwrap());
        }
        let status = client.issue_token(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let first = metadata[0].0;
        assert!(status.message().contains(first), "{what}: {status:?}");
    }
}

#[tokio::test]
async fn invisible_and_direction_changing_characters_are_refused_through_both_doors() {
    let app = spawn_app().await;
    let rest_cases = [
        (
            "right-to-left override in username",
            json!({"username": "admin\u{202E}gnp.exe"}),
            "U+202E",
        ),
        (
            "zero-width space in username",
            json!({"username": "ad\u{200B}min"}),
            "U+200B",
        ),
        (
            "isolate in audience",
            json!({"audience": ["api", "b\u{2066}x"]}),
            "U+2066",
        ),
        ("soft hyphen", json!({"username": "ad\u{AD}min"}), "U+00AD"),
        ("Hangul filler", json!({"username": "\u{3164}"}), "U+3164"),
        (
            "tag character",
            json!({"username": "a\u{E0041}"}),
            "U+E0041",
        ),
        (
            "variation selector",
            json!({"username": "a\u{FE0F}"}),
            "U+FE0F",
        ),
        (
            "line separator",
            json!({"username": "a\u{2028}b"}),
            "U+2028",
        ),
        ("private use", json!({"username": "a\u{E000}"}), "U+E000"),
        ("unassigned", json!({"username": "a\u{378}"}), "U+0378"),
    ];
    for (what, body, code_point) in rest_cases {
        let response = app
            .client
            .post(app.url("/auth"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let detail = bad_request(response, what).await;
        assert!(detail.contains(code_point), "{what}: {detail}");
    }
    // A Basic user id becomes `sub` too.
    let response = app
        .client
        .post(app.url("/auth"))
        .header(header::AUTHORIZATION, basic("\u{FEFF}alice", "pw"))
        .send()
        .await
        .unwrap();
    let detail = bad_request(response, "byte order mark in a Basic id").await;
    assert!(detail.contains("U+FEFF"), "{detail}");

    // Ordinary text of every script still works.
    for name in ["José", "Zoë-Ann O'Brien", "日本語", "Ünïcödé 👍", "عربي"] {
        let response = app
            .client
            .post(app.url("/auth"))
            .json(&json!({"username": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(claims(&response.text().await.unwrap())["sub"], name);
    }

    let mut client = app.grpc().await;
    for (what, request, code_point) in [
        (
            "subject with a left-to-right mark",
            IssueTokenRequest {
                subject: Some("a\u{200E}b".into()),
                ..Default::default()
            },
            "U+200E",
        ),
        (
            "audience with a first strong isolate",
            IssueTokenRequest {
                audience: vec!["\u{2068}api".into()],
                ..Default::default()
            },
            "U+2068",
        ),
    ] {
        let status = client.issue_token(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}");
        assert!(status.message().contains(code_point), "{what}: {status:?}");
    }
}

/// A server requiring client credentials, with one client `known`.
async fn app_with_one_client() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let clients = json!({"clients": [
        {"id": "known", "secret_hash": hash_secret("k-secret").unwrap()},
    ]});
    std::fs::write(&path, clients.to_string()).unwrap();
    let app = spawn_app_with(|c| c.clients_file = Some(path.clone())).await;
    (app, dir)
}

async fn secret_checks_run(app: &TestApp) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("jwks_client_secret_checks_total "))
        .unwrap_or_else(|| panic!("no jwks_client_secret_checks_total in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Sends wrong credentials for `id` until the answer is not 401; returns how
/// many 401s came first and the answer that ended them.
async fn attempts_until_refused(app: &TestApp, id: &str) -> (u32, reqwest::Response) {
    let budget = SecretChecks::PER_ADDRESS_BURST;
    let mut unauthorized = 0;
    loop {
        let response = app
            .client
            .post(app.url("/auth"))
            .header(
                header::AUTHORIZATION,
                basic(id, &format!("guess-{unauthorized}")),
            )
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::UNAUTHORIZED {
            return (unauthorized, response);
        }
        unauthorized += 1;
        // The budget refills one check every 2 s, so a slow machine may see
        // a few more than the burst.
        assert!(
            unauthorized <= budget + 10,
            "{id}: no limit after {unauthorized} wrong secrets"
        );
    }
}

#[tokio::test]
async fn an_unknown_client_id_gets_the_same_check_answer_and_budget_as_a_known_one() {
    let (known_app, _known_dir) = app_with_one_client().await;
    let (unknown_app, _unknown_dir) = app_with_one_client().await;

    // The same answer, byte for byte.
    let answer = |app: &TestApp, id: &str| {
        app.client
            .post(app.url("/auth"))
            .header(header::AUTHORIZATION, basic(id, "wrong"))
            .send()
    };
    let known = answer(&known_app, "known").await.unwrap();
    let unknown = answer(&known_app, "nobody").await.unwrap();
    assert_eq!(known.status(), unknown.status());
    assert_eq!(
        known.headers().get(header::WWW_AUTHENTICATE),
        unknown.headers().get(header::WWW_AUTHENTICATE)
    );
    assert_eq!(known.bytes().await.unwrap(), unknown.bytes().await.unwrap());

    // The same work: an unknown id runs an argon2 check too.
    let before = secret_checks_run(&unknown_app).await;
    let response = answer(&unknown_app, "nobody-else").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(secret_checks_run(&unknown_app).await, before + 1);

    // The same budget: each from a fresh address budget (one server each).
    let (known_count, known_refusal) = attempts_until_refused(&known_app, "known").await;
    let (unknown_count, unknown_refusal) = attempts_until_refused(&unknown_app, "nobody").await;
    assert_eq!(known_refusal.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(unknown_refusal.status(), StatusCode::TOO_MANY_REQUESTS);
    let budget = SecretChecks::PER_ADDRESS_BURST;
    for count in [known_count, unknown_count] {
        // One check each was spent above; refills may add a few.
        assert!(
            (budget - 2..=budget + 10).contains(&count),
            "cut off after {count} (known {known_count}, unknown {unknown_count})"
        );
    }
    assert!(
        known_count.abs_diff(unknown_count) <= 2,
        "known {known_count}, unknown {unknown_count}"
    );
    assert_eq!(
        known_refusal.bytes().await.unwrap().len(),
        unknown_refusal.bytes().await.unwrap().len()
    );
}

#[tokio::test]
async fn authentication_failures_and_429s_are_logged_with_the_client_id_and_peer() {
    let dir = tempfile::tempdir().unwrap();
    let clients = dir.path().join("clients.json");
    std::fs::write(
        &clients,
        json!({"clients": [{"id": "svc", "secret_hash": hash_secret("svc-secret").unwrap()}]})
            .to_string(),
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path().join("jwks.db").display());
    let server = ServerProcess::spawn(&[
        ("JWKS_STORE", &store),
        ("JWKS_CLIENTS_FILE", clients.to_str().unwrap()),
        ("JWKS_RATE_LIMIT", "1"),
        ("JWKS_RATE_BURST", "1"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let client = reqwest::Client::new();
    let post = |auth: String| {
        client
            .post(format!("{}/auth", server.http))
            .header(header::AUTHORIZATION, auth)
            .send()
    };

    let wrong = post(basic("svc", "not-the-secret-1")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown = post(basic("mallory", "not-the-secret-2")).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let first = post(basic("svc", "svc-secret")).await.unwrap();
    assert_eq!(first.status(), 200);
    let limited = post(basic("svc", "svc-secret")).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    let line_with = |needles: &[&str]| {
        let needles: Vec<String> = needles.iter().map(|n| (*n).to_owned()).collect();
        let server = &server;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let text = server.log_text();
                if let Some(line) = text
                    .lines()
                    .find(|line| needles.iter().all(|n| line.contains(n.as_str())))
                {
                    let event: Value = serde_json::from_str(line).unwrap();
                    return event;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no log line with {needles:?}: {text}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for (client_id, what) in [
        ("svc", "authentication failed"),
        ("mallory", "authentication failed"),
        ("svc", "rate limited"),
    ] {
        let event = line_with(&[client_id, what, "127.0.0.1"]).await;
        let level = event["level"].as_str().unwrap();
        assert!(level == "WARN" || level == "INFO", "{event}");
        assert_eq!(event["client_id"], client_id, "{event}");
        assert_eq!(event["peer"], "127.0.0.1", "{event}");
    }
    let log = server.log_text();
    for secret in ["not-the-secret-1", "not-the-secret-2", "svc-secret"] {
        assert!(!log.contains(secret), "{secret} reached the log");
    }
}

#[tokio::test]
async fn an_address_over_its_check_budget_is_logged_with_the_client_id_and_peer() {
    let dir = tempfile::tempdir().unwrap();
    let clients = dir.path().join("clients.json");
    std::fs::write(
        &clients,
        json!({"clients": [{"id": "svc", "secret_hash": hash_secret("svc-secret").unwrap()}]})
            .to_string(),
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path().join("jwks.db").display());
    let server = ServerProcess::spawn(&[
        ("JWKS_STORE", &store),
        ("JWKS_CLIENTS_FILE", clients.to_str().unwrap()),
    ])
    .await;
    let client = reqwest::Client::new();
    let limit = SecretChecks::PER_ADDRESS_BURST + 10;
    for attempt in 0..=limit {
        let response = client
            .post(format!("{}/auth", server.http))
            .header(
                header::AUTHORIZATION,
                basic("guesser", &format!("g{attempt}")),
            )
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(attempt < limit, "no 429 after {attempt} attempts");
    }
    server
        .wait_for_log("\"client_id\":\"guesser\"", Duration::from_secs(10))
        .await;
    let log = server.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("rate limited") && line.contains("guesser"))
        .unwrap_or_else(|| panic!("no 429 log line: {log}"));
    assert!(line.contains("127.0.0.1"), "{line}");
}
