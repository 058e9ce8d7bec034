//! Operating it: metrics, discovery documents, caching near a rotation,
//! graceful shutdown, and the command line.

use std::{collections::HashMap, process::Stdio, time::Duration};

use jwks_server::proto::{GetJwksRequest, IssueTokenRequest};
use reqwest::header;
use serde_json::Value;

use crate::helpers::{Respond, ServerProcess, spawn_app, spawn_app_with};

/// Parses the Prometheus text format strictly enough to catch malformed output:
/// `name{labels} value` per sample; returns samples keyed by `name{labels}`.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty()
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && name.starts_with("jwks_"),
            "bad metric name: {name}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_count_what_happened_in_prometheus_format() {
    let app = spawn_app().await;
    app.token("").await;
    app.token("").await;
    app.token("?expired=true").await;
    let mut grpc = app.grpc().await;
    grpc.issue_token(IssueTokenRequest::default())
        .await
        .unwrap();
    let etag = grpc
        .get_jwks(GetJwksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .etag;
    grpc.get_jwks(GetJwksRequest {
        if_none_match: etag.clone(),
    })
    .await
    .unwrap();
    app.get("/.well-known/jwks.json").response().await;
    app.get("/.well-known/jwks.json")
        .header(header::IF_NONE_MATCH, &etag)
        .response()
        .await;

    let response = app.get("/metrics").response().await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let samples = parse_exposition(&response.text().await.unwrap());
    let get = |series: &str| {
        samples
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("missing {series}: {samples:?}"))
    };

    assert_eq!(
        get(r#"jwks_tokens_issued_total{door="rest",kind="valid"}"#),
        2.0
    );
    assert_eq!(
        get(r#"jwks_tokens_issued_total{door="rest",kind="expired"}"#),
        1.0
    );
    assert_eq!(
        get(r#"jwks_tokens_issued_total{door="grpc",kind="valid"}"#),
        1.0
    );
    assert_eq!(
        get(r#"jwks_jwks_requests_total{door="rest",outcome="full"}"#),
        1.0
    );
    assert_eq!(
        get(r#"jwks_jwks_requests_total{door="rest",outcome="not_modified"}"#),
        1.0
    );
    assert_eq!(
        get(r#"jwks_jwks_requests_total{door="grpc",outcome="not_modified"}"#),
        1.0
    );
    assert_eq!(
        get(
            r#"jwks_http_request_duration_seconds_count{method="POST",route="/auth",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        get(r#"jwks_grpc_request_duration_seconds_count{method="IssueToken",code="OK"}"#),
        1.0
    );
    assert_eq!(get(r#"jwks_keys{state="active"}"#), 1.0);
    assert_eq!(get(r#"jwks_keys{state="expired"}"#), 1.0);
    assert_eq!(get(r#"jwks_keys{state="pending"}"#), 0.0);
    assert_eq!(get("jwks_store_up"), 1.0);
    assert!(get("jwks_active_key_age_seconds") < 60.0);
    assert!(get("jwks_next_rotation_seconds") > 0.0);
    assert!(get("jwks_signing_remaining_seconds") > 0.0);
}

#[tokio::test]
async fn discovery_documents_describe_the_issuer_truthfully() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = app.get(path).response().await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["issuer"], "https://issuer.test");
        assert_eq!(doc["jwks_uri"], "https://issuer.test/.well-known/jwks.json");
        assert_eq!(doc["token_endpoint"], "https://issuer.test/oauth2/token");
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            serde_json::json!(["RS256"])
        );
        assert!(doc.get("authorization_endpoint").is_none(), "there is none");
        // The path it names really serves the keys.
        let jwks_path = doc["jwks_uri"]
            .as_str()
            .unwrap()
            .trim_start_matches("https://issuer.test");
        assert_eq!(app.get(jwks_path).response().await.status(), 200);
    }
}

#[tokio::test]
async fn max_age_is_capped_by_the_time_until_the_next_key_is_published() {
    // Keys sign for 20 s and are published 62 s ahead, so the next key is
    // always less than 20 s away: well under the configured 60 s max-age.
    let app = spawn_app_with(|c| {
        c.rotate_every = Duration::from_secs(20);
        c.jwks_max_age = Duration::from_secs(60);
        c.reload_every = Duration::from_secs(1);
    })
    .await;
    let response = app.get("/.well-known/jwks.json").response().await;
    let cache_control = response.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .to_owned();
    let max_age: u64 = cache_control
        .trim_start_matches("public, max-age=")
        .parse()
        .unwrap();
    assert!(max_age <= 20, "{cache_control}");
    let grpc = app
        .grpc()
        .await
        .get_jwks(GetJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(grpc.max_age_seconds <= 20);
}

#[tokio::test]
async fn sigterm_as_soon_as_the_server_says_it_listens_is_a_clean_stop() {
    // The handlers are in place before the listeners open: a deploy that
    // stops a server the moment it started gets exit 0, never a process
    // killed by the signal. Several rounds, since the old race was narrow.
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}/jwks.db", dir.path().display());
        let server = ServerProcess::spawn(&[("JWKS_STORE", &store)]).await;
        let pid = server.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let (status, log) = server.exited(Duration::from_secs(30)).await;
        assert!(status.success(), "round {round}: {status}: {log}");
    }
}

#[tokio::test]
async fn sigterm_lets_accepted_requests_finish_refuses_new_ones_and_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/jwks.db", dir.path().display());
    let mut server = ServerProcess::spawn(&[("JWKS_STORE", &store)]).await;
    let addr = server.http.trim_start_matches("http://").to_owned();

    // A burst of requests the server has accepted and is still reading: each
    // has sent its headers and half its body when SIGTERM arrives.
    let body = r#"{"username":"drain"}"#;
    let (first_half, second_half) = body.split_at(10);
    let mut in_flight = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /auth HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first_half}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        in_flight.push(stream);
    }
    // Prove the server is reading them: a complete request meanwhile works.
    let probe = reqwest::Client::new()
        .get(format!("{}/health", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);

    let pid = server.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    server
        .wait_for_log("shutting down", Duration::from_secs(10))
        .await;

    // Both listeners close while the accepted requests are still in flight
    // (the process cannot exit before they finish)...
    for listener in [addr.clone(), server.grpc.to_string()] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&listener).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{listener} still accepts connections 10 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited before its accepted requests finished"
    );

    // ...but every accepted request completes.
    for mut stream in in_flight {
        stream.write_all(second_half.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("response within the drain timeout")
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let token = response.rsplit("\r\n\r\n").next().unwrap();
        assert_eq!(crate::helpers::claims(token)["sub"], "drain");
    }
    let (status, log) = server.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        log.contains("shutting down") && log.contains("stopped cleanly"),
        "{log}"
    );
}

fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"));
    command
        .env_clear()
        .envs(crate::helpers::passthrough_env())
        .stdin(Stdio::null());
    command
}

#[test]
fn help_documents_every_flag_with_its_env_var_and_default() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env, default) in [
        ("--http-addr", "JWKS_HTTP_ADDR", Some("0.0.0.0:8080")),
        ("--grpc-addr", "JWKS_GRPC_ADDR", Some("0.0.0.0:50051")),
        ("--store", "JWKS_STORE", Some("sqlite://jwks.db")),
        ("--issuer", "JWKS_ISSUER", None),
        ("--token-ttl", "JWKS_TOKEN_TTL", Some("15m")),
        ("--rotate-every", "JWKS_ROTATE_EVERY", Some("30m")),
        ("--jwks-max-age", "JWKS_JWKS_MAX_AGE", Some("10m")),
        ("--reload-every", "JWKS_RELOAD_EVERY", Some("10s")),
        ("--clock-skew", "JWKS_CLOCK_SKEW", Some("5m")),
        ("--publish-ahead", "JWKS_PUBLISH_AHEAD", None),
        ("--retain-after", "JWKS_RETAIN_AFTER", None),
        ("--kek", "JWKS_KEK", None),
        ("--kek-file", "JWKS_KEK_FILE", None),
        ("--drain-timeout", "JWKS_DRAIN_TIMEOUT", Some("10s")),
        ("--log-format", "JWKS_LOG_FORMAT", Some("text")),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing from --help"
        );
        if let Some(default) = default {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{flag} default missing"
            );
        }
    }
}

#[test]
fn secrets_given_in_the_environment_do_not_show_in_help() {
    let output = binary()
        .arg("--help")
        .env("JWKS_KEK", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw==")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(!help.contains("c2VjcmV0"), "{help}");
}

#[test]
fn a_bad_value_is_one_clear_line_naming_the_flag_and_exit_code_2() {
    for (args, names) in [
        (vec!["--token-ttl", "5x"], "--token-ttl"),
        (vec!["--http-addr", "not-an-address"], "--http-addr"),
        (vec!["--store", "mysql://db/keys"], "unknown store scheme"),
        (vec!["--log-format", "xml"], "--log-format"),
    ] {
        let output = binary().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(names),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn settings_that_break_a_rule_stop_the_binary_with_the_rule_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .args(["--publish-ahead", "1s", "--store"])
        .arg(format!("sqlite://{}/jwks.db", dir.path().display()))
        .output()
        .unwrap();
    // A usage error, like a bad flag (issue #10, item 11).
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("rule broken") && stderr.contains("--publish-ahead"),
        "{stderr}"
    );
}

/// Resolves `{"$ref": "#/components/schemas/X"}` against the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `value` has every required property of `schema`, recursively.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap();
        assert!(
            value.get(name).is_some(),
            "{at}: missing required {name} in {value}"
        );
        let property = &schema["properties"][name];
        if !property.is_null() {
            conforms(doc, property, &value[name], &format!("{at}.{name}"));
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            conforms(doc, items, item, &format!("{at}[{i}]"));
        }
    }
}

#[tokio::test]
async fn every_documented_route_answers_as_the_openapi_document_says() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/",
        "/health",
        "/connect",
        "/.well-known/jwks.json",
        "/auth",
        "/metrics",
        "/openapi.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        assert!(paths.contains_key(expected), "{expected} undocumented");
    }
    let mut checked = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let response = app
                .request(method.clone(), path)
                .header(header::ACCEPT, "application/json")
                .response()
                .await;
            let status = response.status().as_u16().to_string();
            let documented = &operation["responses"][&status];
            assert!(
                !documented.is_null(),
                "{method} {path} answered {status}, which is undocumented"
            );
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
            if let Some(schema) = content_type
                .as_deref()
                .filter(|ct| *ct == "application/json")
                .and_then(|ct| documented["content"][ct]["schema"].as_object())
            {
                let body: Value = response.json().await.unwrap();
                conforms(
                    &doc,
                    &Value::Object(schema.clone()),
                    &body,
                    &format!("{method} {path}"),
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 11, "checked {checked} operations");
}
