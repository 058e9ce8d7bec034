//! Custom claims: accepted values appear in the verified token through
//! both doors (REST JSON and form bodies, the token endpoint's form, gRPC's
//! `Struct` and `claims_json`); registered claims, too many, too large and
//! names a client may not add are refused with clear 400s and
//! INVALID_ARGUMENTs; a client's static claims always apply.

use jwks_server::{
    access::hash_secret,
    proto::{IssueTokenRequest, TokenRequest},
};
use prost_types::{ListValue, Struct, Value as ProtoValue, value::Kind};
use reqwest::header;
use serde_json::{Value, json};
use tonic::{Code, Request};

use crate::{
    helpers::{Respond, TestApp, spawn_app, spawn_app_with, verify_with},
    oauth::{basic, form_encode, json_of, post_form},
};

/// The claims every door below adds.
fn wanted() -> Value {
    json!({"roles": ["admin", "auditor"], "tenant": {"id": 7, "name": "acme"}, "beta": true})
}

fn proto_value(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(proto_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(proto_struct(value)),
    };
    ProtoValue { kind: Some(kind) }
}

fn proto_struct(value: &Value) -> Struct {
    Struct {
        fields: value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), proto_value(v)))
            .collect(),
    }
}

/// Verifies `token` against the JWKS (RS256, access tokens' `typ` aside) and
/// returns its claims.
async fn verified(app: &TestApp, token: &str) -> Value {
    let jwks = app.jwks().await;
    verify_with(token, &jwks, |v| {
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .claims
}

fn assert_carries(claims: &Value, added: &Value, door: &str) {
    for (name, value) in added.as_object().unwrap() {
        assert_eq!(&claims[name], value, "{door}: claim {name} in {claims}");
    }
}

fn grpc_token_request(
    claims: Option<Struct>,
    claims_json: Option<String>,
) -> Request<TokenRequest> {
    let mut request = Request::new(TokenRequest {
        grant_type: "client_credentials".into(),
        claims,
        claims_json,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-client-id", "probe".parse().unwrap());
    request
}

#[tokio::test]
async fn added_claims_appear_in_the_verified_token_through_every_door() {
    let app = spawn_app().await;
    let added = wanted();
    let mut tokens = Vec::new();

    let json_body = app
        .post("/auth")
        .json(&json!({"claims": added}))
        .response()
        .await;
    assert_eq!(json_body.status(), 200);
    tokens.push(("REST JSON", json_body.text().await.unwrap()));

    let form_body = app
        .post("/auth")
        .form(&[("claims", added.to_string())])
        .response()
        .await;
    assert_eq!(form_body.status(), 200);
    tokens.push(("REST form", form_body.text().await.unwrap()));

    let form = format!(
        "grant_type=client_credentials&client_id=probe&claims={}",
        form_encode(&added.to_string())
    );
    let (status, body) = json_of(post_form(&app, "/oauth2/token", None, &form).await).await;
    assert_eq!(status, 200, "{body}");
    tokens.push((
        "REST token endpoint",
        body["access_token"].as_str().unwrap().into(),
    ));

    let mut grpc = app.grpc().await;
    let issued = grpc
        .issue_token(IssueTokenRequest {
            claims: Some(proto_struct(&added)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokens.push(("gRPC IssueToken Struct", issued.token));
    let issued = grpc
        .issue_token(IssueTokenRequest {
            claims_json: Some(added.to_string()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokens.push(("gRPC IssueToken claims_json", issued.token));
    let access = grpc
        .token(grpc_token_request(Some(proto_struct(&added)), None))
        .await
        .unwrap()
        .into_inner();
    tokens.push(("gRPC Token Struct", access.access_token));
    let access = grpc
        .token(grpc_token_request(None, Some(added.to_string())))
        .await
        .unwrap()
        .into_inner();
    tokens.push(("gRPC Token claims_json", access.access_token));

    for (door, token) in tokens {
        let claims = verified(&app, &token).await;
        assert_carries(&claims, &added, door);
        assert_eq!(claims["iss"], "https://issuer.test", "{door}");
    }
}

/// Every way to send `claims` to both doors, and what each answered:
/// (door, status or code, what it said).
async fn refusals(app: &TestApp, claims: &Value) -> Vec<(&'static str, String, String)> {
    let mut answers = Vec::new();
    let (status, body) = json_of(
        app.post("/auth")
            .json(&json!({"claims": claims}))
            .response()
            .await,
    )
    .await;
    answers.push(("REST /auth", status.to_string(), body.to_string()));
    let form = format!(
        "grant_type=client_credentials&client_id=probe&claims={}",
        form_encode(&claims.to_string())
    );
    let (status, body) = json_of(post_form(app, "/oauth2/token", None, &form).await).await;
    answers.push(("REST token endpoint", status.to_string(), body.to_string()));
    let mut grpc = app.grpc().await;
    let status = grpc
        .issue_token(IssueTokenRequest {
            claims: Some(proto_struct(claims)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    answers.push((
        "gRPC IssueToken",
        format!("{:?}", status.code()),
        status.message().into(),
    ));
    let status = grpc
        .token(grpc_token_request(None, Some(claims.to_string())))
        .await
        .unwrap_err();
    answers.push((
        "gRPC Token",
        format!("{:?}", status.code()),
        status.message().into(),
    ));
    answers
}

#[tokio::test]
async fn registered_too_many_and_too_large_claims_are_refused_through_both_doors() {
    let app = spawn_app().await;
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("c{i}"), Value::from(i))).collect();
    let cases = [
        (json!({"iss": "https://evil.example"}), "\"iss\""),
        (json!({"exp": 9_999_999_999_i64}), "\"exp\""),
        (json!({"sub": "root"}), "\"sub\""),
        (json!({"scope": "admin"}), "\"scope\""),
        (Value::Object(many), "at most 32"),
        (json!({"blob": "x".repeat(5000)}), "4096 bytes"),
    ];
    for (claims, says) in cases {
        for (door, status, said) in refusals(&app, &claims).await {
            let want = if door.starts_with("gRPC") {
                "InvalidArgument"
            } else {
                "400"
            };
            assert_eq!(status, want, "{door} {says}: {said}");
            // REST bodies are JSON text, whose quotes are escaped.
            let said = said.replace("\\\"", "\"");
            assert!(said.contains(says), "{door}: {said} should say {says}");
        }
    }
    let (status, body) = json_of(
        app.post("/auth")
            .form(&[("claims", "[1,2]")])
            .response()
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("JSON object"),
        "{body}"
    );
    let both = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest {
            claims: Some(proto_struct(&json!({"a": 1}))),
            claims_json: Some(r#"{"a":1}"#.into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
}

async fn spawn_with_claims_client() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let clients = json!({"clients": [
        {"id": "svc", "secret_hash": hash_secret("svc-secret-value").unwrap(),
         "claims": {"tenant": "acme"}, "allowed_claims": ["roles", "tenant"]},
    ]});
    std::fs::write(&path, clients.to_string()).unwrap();
    let app = spawn_app_with(|c| c.clients_file = Some(path.clone())).await;
    std::mem::forget(dir);
    app
}

#[tokio::test]
async fn a_client_adds_only_the_claims_its_entry_allows_and_its_static_claims_always_apply() {
    let app = spawn_with_claims_client().await;
    let auth = basic("svc", "svc-secret-value");
    let ask = |claims: Value| {
        app.post("/auth")
            .header(header::AUTHORIZATION, auth.clone())
            .json(&json!({"claims": claims}))
    };

    let allowed = ask(json!({"roles": ["admin"]})).response().await;
    assert_eq!(allowed.status(), 200);
    let claims = verified(&app, &allowed.text().await.unwrap()).await;
    assert_eq!(claims["roles"], json!(["admin"]));
    assert_eq!(claims["tenant"], "acme", "static claims always apply");

    let plain = app
        .post("/auth")
        .header(header::AUTHORIZATION, auth.clone())
        .response()
        .await;
    let claims = verified(&app, &plain.text().await.unwrap()).await;
    assert_eq!(
        claims["tenant"], "acme",
        "static claims apply with none asked"
    );

    let (status, body) = json_of(ask(json!({"level": 3})).response().await).await;
    assert_eq!(status, 400);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"level\"") && detail.contains("roles, tenant"),
        "{detail}"
    );

    let (status, body) = json_of(ask(json!({"tenant": "other"})).response().await).await;
    assert_eq!(status, 400, "a static claim is not the caller's to change");
    assert!(
        body["detail"].as_str().unwrap().contains("static claim"),
        "{body}"
    );
    let same = ask(json!({"tenant": "acme"})).response().await;
    assert_eq!(
        same.status(),
        200,
        "asking for the static value is no conflict"
    );

    let form = format!(
        "grant_type=client_credentials&claims={}",
        form_encode(r#"{"level":3}"#)
    );
    let (status, body) = json_of(post_form(&app, "/oauth2/token", Some(&auth), &form).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    let form = format!(
        "grant_type=client_credentials&claims={}",
        form_encode(r#"{"roles":["x"]}"#)
    );
    let (status, body) = json_of(post_form(&app, "/oauth2/token", Some(&auth), &form).await).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = verified(&app, token).await;
    assert_eq!(claims["roles"], json!(["x"]));
    assert_eq!(claims["tenant"], "acme");
}
