//! OAuth 2.0 over REST: the token endpoint (RFC 6749 §4.4) issuing RFC 9068
//! access tokens, client authentication as RFC 6749 §2.3.1 encodes it,
//! §5.2 errors, introspection (RFC 7662) and revocation (RFC 7009), across
//! replicas.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use jwks_server::access::hash_secret;
use reqwest::header;
use serde_json::{Value, json};

use crate::helpers::{
    Respond, TestApp, claims, header as jwt_header, now, spawn_app, spawn_app_with, start,
    verify_with,
};

/// A secret with every character RFC 6749 §2.3.1's form-encoding changes,
/// and one that is not ASCII.
pub(crate) const ODD_SECRET: &str = "p/a+s:s=w örd%";

pub(crate) fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `client_secret_basic` as RFC 6749 §2.3.1 writes it: each part
/// form-encoded, then joined and base64-encoded.
pub(crate) fn basic(id: &str, secret: &str) -> String {
    let joined = format!("{}:{}", form_encode(id), form_encode(secret));
    format!("Basic {}", STANDARD.encode(joined))
}

/// A server with a clients file: `svc` (the odd secret) may ask for `read`
/// and `write`, gets audience `api` by default and at most five minutes, and
/// carries a static `roles` claim; `other` is registered with nothing more.
async fn app_with_clients() -> TestApp {
    spawn_app_with_clients(|_| {}).await
}

pub(crate) async fn spawn_app_with_clients(
    adjust: impl FnOnce(&mut jwks_server::config::Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let clients = json!({"clients": [
        {"id": "svc", "secret_hash": hash_secret(ODD_SECRET).unwrap(),
         "audiences": ["api", "https://api.example/"],
         "scopes": ["read", "write"], "default_audience": "api",
         "max_lifetime_seconds": 300, "claims": {"roles": ["reader"]}},
        {"id": "other", "secret_hash": hash_secret("other-secret").unwrap()},
    ]});
    std::fs::write(&path, clients.to_string()).unwrap();
    let app = spawn_app_with(|c| {
        c.clients_file = Some(path.clone());
        adjust(c);
    })
    .await;
    std::mem::forget(dir);
    app
}

pub(crate) async fn post_form(
    app: &TestApp,
    path: &str,
    auth: Option<&str>,
    form: &str,
) -> reqwest::Response {
    let mut request = app
        .post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    request.response().await
}

pub(crate) async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Gets an access token for `svc` and returns it.
async fn svc_token(app: &TestApp, form: &str) -> String {
    let response = post_form(app, "/oauth2/token", Some(&basic("svc", ODD_SECRET)), form).await;
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_endpoint_issues_rfc9068_access_tokens_to_any_client_in_open_mode() {
    let app = spawn_app().await;
    let response = post_form(
        &app,
        "/oauth2/token",
        Some(&basic("team-a", ODD_SECRET)),
        "grant_type=client_credentials&scope=read%20write",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::PRAGMA], "no-cache");
    let body: Value = response.json().await.unwrap();
    let members: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        ["access_token", "expires_in", "scope", "token_type"],
        "{body}"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read write");
    assert_eq!(body["expires_in"], 900);

    let token = body["access_token"].as_str().unwrap();
    assert_eq!(jwt_header(token)["typ"], "at+jwt");
    let data = verify_with(token, &app.jwks().await, |v| {
        v.set_audience(&["https://issuer.test"]);
        v.set_issuer(&["https://issuer.test"]);
    })
    .unwrap();
    assert_eq!(data.claims["sub"], "team-a");
    assert_eq!(data.claims["client_id"], "team-a");
    assert_eq!(
        data.claims["aud"], "https://issuer.test",
        "the server default"
    );
    assert_eq!(data.claims["scope"], "read write");
    assert!(data.claims["jti"].is_string());

    // client_secret_post, and a public client's bare client_id, work too.
    for form in [
        "grant_type=client_credentials&client_id=team-b&client_secret=x",
        "grant_type=client_credentials&client_id=team-b",
    ] {
        let (status, body) = json_of(post_form(&app, "/oauth2/token", None, form).await).await;
        assert_eq!(status, 200, "{form}: {body}");
        let claims = claims(body["access_token"].as_str().unwrap());
        assert_eq!(claims["client_id"], "team-b");
        assert!(
            claims.get("scope").is_none(),
            "no scope asked, none granted"
        );
    }
}

#[tokio::test]
async fn registered_clients_get_their_scopes_audience_lifetime_and_claims() {
    let app = app_with_clients().await;
    // RFC 6749 §2.3.1: the secret is form-encoded before Basic encoding.
    let token = svc_token(&app, "grant_type=client_credentials").await;
    let claims = claims(&token);
    assert_eq!(claims["scope"], "read write", "everything it may have");
    assert_eq!(claims["aud"], "api", "its default audience");
    assert_eq!(claims["roles"], json!(["reader"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );

    let token = svc_token(
        &app,
        "grant_type=client_credentials&scope=read&resource=https%3A%2F%2Fapi.example%2F",
    )
    .await;
    let claims = crate::helpers::claims(&token);
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["aud"], "https://api.example/");

    // client_secret_post with the same secret.
    let form = format!(
        "grant_type=client_credentials&client_id=svc&client_secret={}",
        form_encode(ODD_SECRET)
    );
    let (status, body) = json_of(post_form(&app, "/oauth2/token", None, &form).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn auth_decodes_basic_credentials_as_rfc6749_says() {
    let app = app_with_clients().await;
    let response = app
        .post("/auth")
        .header(header::AUTHORIZATION, basic("svc", ODD_SECRET))
        .header(header::ACCEPT, "application/json")
        .response()
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["access_token"], body["token"], "{body}");
    assert_eq!(jwt_header(body["token"].as_str().unwrap())["typ"], "JWT");
}

#[tokio::test]
async fn auth_reads_python_booleans_for_expired() {
    let app = spawn_app().await;
    for value in ["True", "TRUE"] {
        let token = app.token(&format!("?expired={value}")).await;
        assert!(claims(&token)["exp"].as_i64().unwrap() < now(), "{value}");
    }
    let token = app.token("?expired=False").await;
    assert!(claims(&token)["exp"].as_i64().unwrap() > now());
}

#[tokio::test]
async fn token_endpoint_errors_speak_rfc6749_section_5_2() {
    let app = app_with_clients().await;
    let good = basic("svc", ODD_SECRET);
    let cases: &[(&str, Option<&str>, &str, u16, &str)] = &[
        (
            "no grant_type",
            Some(&good),
            "scope=read",
            400,
            "invalid_request",
        ),
        (
            "another grant",
            Some(&good),
            "grant_type=password&username=a&password=b",
            400,
            "unsupported_grant_type",
        ),
        (
            "a parameter twice",
            Some(&good),
            "grant_type=client_credentials&scope=read&scope=write",
            400,
            "invalid_request",
        ),
        (
            "both auth methods",
            Some(&good),
            "grant_type=client_credentials&client_id=svc&client_secret=x",
            400,
            "invalid_request",
        ),
        (
            "no credentials",
            None,
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            "wrong secret",
            Some(&basic("svc", "nope")),
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            Some(&basic("nobody", "nope")),
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            "a scope it may not have",
            Some(&good),
            "grant_type=client_credentials&scope=admin",
            400,
            "invalid_scope",
        ),
        (
            "a malformed scope",
            Some(&good),
            "grant_type=client_credentials&scope=a%22b",
            400,
            "invalid_scope",
        ),
        (
            "an audience it may not have",
            Some(&good),
            "grant_type=client_credentials&audience=billing",
            400,
            "invalid_target",
        ),
        (
            "a resource that is not an absolute URI",
            Some(&good),
            "grant_type=client_credentials&resource=api",
            400,
            "invalid_target",
        ),
        (
            "a scope for a client registered with none",
            Some(&basic("other", "other-secret")),
            "grant_type=client_credentials&scope=read",
            400,
            "invalid_scope",
        ),
    ];
    let mut bodies = std::collections::HashMap::new();
    for (what, auth, form, status, code) in cases {
        let response = post_form(&app, "/oauth2/token", *auth, form).await;
        assert!(response.status().as_u16() < 500, "{what}");
        let www_authenticate = response.headers().get(header::WWW_AUTHENTICATE).cloned();
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "no-store",
            "{what}"
        );
        let (got, body) = json_of(response).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (*status, Some(*code)),
            "{what}: {body}"
        );
        assert!(body["error_description"].is_string(), "{what}: {body}");
        if *code == "invalid_client" {
            assert!(www_authenticate.is_some(), "{what}");
        }
        bodies.insert(*what, body);
    }
    assert_eq!(
        bodies["wrong secret"], bodies["unknown client"],
        "an unknown client and a wrong secret cannot be told apart"
    );

    // Not a form at all.
    let response = app
        .post("/oauth2/token")
        .header(header::AUTHORIZATION, &good)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .response()
        .await;
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn introspection_describes_live_tokens_and_says_nothing_of_others() {
    let app = spawn_app().await;
    let token = {
        let response = post_form(
            &app,
            "/oauth2/token",
            Some(&basic("team-a", "x")),
            "grant_type=client_credentials&scope=read&audience=api",
        )
        .await;
        json_of(response).await.1["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let introspect = |token: String| {
        let app = &app;
        async move {
            let form = format!("token={}", form_encode(&token));
            json_of(post_form(app, "/oauth2/introspect", None, &form).await).await
        }
    };
    let (status, body) = introspect(token.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["scope"], "read");
    assert_eq!(body["client_id"], "team-a");
    assert_eq!(body["sub"], "team-a");
    assert_eq!(body["aud"], "api");
    assert_eq!(body["iss"], "https://issuer.test");
    assert_eq!(body["token_type"], "Bearer");
    for member in ["exp", "iat", "nbf", "jti"] {
        assert!(body.get(member).is_some(), "{member}: {body}");
    }

    // A `POST /auth` token of this issuer is live too.
    let (_, body) = introspect(app.token("").await).await;
    assert_eq!(body["active"], true, "{body}");

    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for (what, candidate) in [
        ("expired", app.token("?expired=true").await),
        ("badly signed", tampered),
        ("malformed", "not-a-jwt".to_owned()),
        ("foreign", {
            let other = spawn_app().await;
            other.token("").await
        }),
    ] {
        let (status, body) = introspect(candidate).await;
        assert_eq!((status, body), (200, json!({"active": false})), "{what}");
    }
}

#[tokio::test]
async fn revoked_tokens_are_inactive_on_another_replica_after_its_reload() {
    let first = spawn_app_with(|c| c.reload_every = Duration::from_secs(1)).await;
    let second = start(first.config.clone(), tempfile::tempdir().unwrap()).await;
    let token = {
        let response = post_form(
            &first,
            "/oauth2/token",
            None,
            "grant_type=client_credentials&client_id=team-a",
        )
        .await;
        json_of(response).await.1["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let form = format!("token={}", form_encode(&token));
    let active_on = |app: &TestApp| {
        let form = form.clone();
        let app = app.url("/oauth2/introspect");
        let client = first.client.clone();
        async move {
            let response = client
                .post(app)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form)
                .response()
                .await;
            json_of(response).await.1["active"].clone()
        }
    };
    assert_eq!(active_on(&second).await, true, "a token from one replica");

    let response = post_form(&first, "/oauth2/revoke", None, &form).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        active_on(&first).await,
        false,
        "at once where it was revoked"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while active_on(&second).await != false {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other replica never saw the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Unknown and malformed tokens are revoked "successfully" (RFC 7009 §2.2).
    let response = post_form(&first, "/oauth2/revoke", None, "token=whatever").await;
    assert_eq!(response.status(), 200);
    let (status, body) = json_of(post_form(&first, "/oauth2/revoke", None, "").await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn with_clients_callers_authenticate_and_revoke_only_their_own_tokens() {
    let app = app_with_clients().await;
    let token = svc_token(&app, "grant_type=client_credentials").await;
    let form = format!("token={}", form_encode(&token));

    let (status, body) = json_of(post_form(&app, "/oauth2/introspect", None, &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let other = basic("other", "other-secret");
    let (status, body) =
        json_of(post_form(&app, "/oauth2/introspect", Some(&other), &form).await).await;
    assert_eq!(
        (status, body["active"].as_bool()),
        (200, Some(true)),
        "{body}"
    );

    let (status, body) =
        json_of(post_form(&app, "/oauth2/revoke", Some(&other), &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "another client's token"
    );
    let response = post_form(
        &app,
        "/oauth2/revoke",
        Some(&basic("svc", ODD_SECRET)),
        &form,
    )
    .await;
    assert_eq!(response.status(), 200);
    let (_, body) = json_of(post_form(&app, "/oauth2/introspect", Some(&other), &form).await).await;
    assert_eq!(body, json!({"active": false}));
}

/// The paths a discovery document names, relative to `issuer`.
fn path_of(doc: &Value, member: &str, issuer: &str) -> String {
    doc[member]
        .as_str()
        .unwrap_or_else(|| panic!("{member} missing: {doc}"))
        .strip_prefix(issuer)
        .unwrap_or_else(|| panic!("{member} is not under {issuer}: {doc}"))
        .to_owned()
}

#[tokio::test]
async fn discovery_documents_are_true_in_each_mode() {
    let open = spawn_app().await;
    let registered = app_with_clients().await;
    for (app, methods, scopes) in [
        (
            &open,
            json!(["client_secret_basic", "client_secret_post", "none"]),
            Value::Null,
        ),
        (
            &registered,
            json!(["client_secret_basic", "client_secret_post"]),
            json!(["read", "write"]),
        ),
    ] {
        for document in [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ] {
            let doc = app.get_json(document).await;
            assert_eq!(doc["grant_types_supported"], json!(["client_credentials"]));
            assert_eq!(doc["response_types_supported"], json!([]), "{doc}");
            assert_eq!(doc["scopes_supported"], scopes, "{doc}");
            for endpoint in ["token", "introspection", "revocation"] {
                assert_eq!(
                    doc[format!("{endpoint}_endpoint_auth_methods_supported")],
                    methods,
                    "{document}"
                );
                // Nothing advertised that is not served: each answers a POST
                // with an OAuth error, not a 404 or 405.
                let path = path_of(&doc, &format!("{endpoint}_endpoint"), "https://issuer.test");
                let (status, body) = json_of(post_form(app, &path, None, "").await).await;
                assert!(
                    status == 400 || status == 401,
                    "{endpoint}: {status} {body}"
                );
            }
            assert_eq!(
                path_of(&doc, "token_endpoint", "https://issuer.test"),
                "/oauth2/token"
            );
        }
    }
}

#[tokio::test]
async fn the_default_issuer_is_where_the_server_listens() {
    let app = spawn_app_with(|c| c.issuer = String::new()).await;
    let doc = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(doc["issuer"], app.http.as_str(), "{doc}");
    // What it names is reachable as named.
    let jwks = app
        .client
        .get(doc["jwks_uri"].as_str().unwrap())
        .response()
        .await;
    assert_eq!(jwks.status(), 200);
    let token = app.token("").await;
    assert_eq!(claims(&token)["iss"], app.http.as_str());
}

#[tokio::test]
async fn public_documents_answer_cors_preflight_and_honour_accept_q_values() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = app
            .request(reqwest::Method::OPTIONS, path)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .response()
            .await;
        assert_eq!(response.status(), 204, "{path}");
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("GET")
        );
    }
    let refused = app
        .get("/.well-known/jwks.json")
        .header(header::ACCEPT, "application/jwk-set+json;q=0")
        .response()
        .await;
    assert_eq!(refused.status(), 406);
    let (_, body) = json_of(refused).await;
    assert_eq!(body["error"], "not_acceptable");
    let json = app
        .get("/.well-known/jwks.json")
        .header(
            header::ACCEPT,
            "application/jwk-set+json;q=0, application/json",
        )
        .response()
        .await;
    assert_eq!(json.status(), 200);
    assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn the_oauth_routes_are_described_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let schema = |reference: &Value| -> Value {
        let name = reference["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("not a reference: {reference}"))
            .trim_start_matches("#/components/schemas/");
        doc["components"]["schemas"][name].clone()
    };
    let properties = |schema: &Value| -> Vec<String> {
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no properties: {schema}"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    for (path, form_member, answer_members) in [
        (
            "/oauth2/token",
            "grant_type",
            &["access_token", "expires_in", "scope", "token_type"][..],
        ),
        (
            "/oauth2/introspect",
            "token",
            &[
                "active",
                "aud",
                "client_id",
                "exp",
                "iat",
                "iss",
                "jti",
                "nbf",
                "scope",
                "sub",
                "token_type",
            ][..],
        ),
        ("/oauth2/revoke", "token", &[][..]),
    ] {
        let operation = &doc["paths"][path]["post"];
        assert!(operation.is_object(), "{path} undocumented");
        let form = schema(
            &operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"],
        );
        assert!(
            properties(&form).contains(&form_member.to_owned()),
            "{path}: {form}"
        );
        let ok = &operation["responses"]["200"];
        assert!(ok.is_object(), "{path}: no 200");
        if !answer_members.is_empty() {
            let answer = schema(&ok["content"]["application/json"]["schema"]);
            assert_eq!(properties(&answer), answer_members, "{path}");
        }
        for status in ["400", "401"] {
            let error =
                schema(&operation["responses"][status]["content"]["application/json"]["schema"]);
            assert_eq!(
                properties(&error),
                ["error", "error_description"],
                "{path} {status}"
            );
        }
    }
}
