//! The REST facade, as curl, browsers and HTTP client libraries see it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{
    Respond, claims, header as jwt_header, kids, now, spawn_app, verify, verify_with,
};

#[tokio::test]
async fn jwks_publishes_rsa_2048_public_keys_and_nothing_private() {
    let app = spawn_app().await;
    let jwks = app.jwks().await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "a fresh store publishes one key: {jwks}");
    for key in keys {
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["e"], "AQAB");
        let n = B64
            .decode(key["n"].as_str().unwrap())
            .expect("n is unpadded base64url");
        assert_eq!(n.len() * 8, 2048);
        assert!(
            n[0] & 0x80 != 0,
            "n has no leading zero byte and all 2048 bits"
        );
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "JWKS leaks {private}");
        }
        // kid is the RFC 7638 thumbprint of (e, kty, n).
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            key["e"].as_str().unwrap(),
            key["n"].as_str().unwrap()
        );
        let thumbprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        assert_eq!(key["kid"], B64.encode(thumbprint));
    }
}

#[tokio::test]
async fn auth_token_verifies_against_the_published_jwks() {
    let app = spawn_app().await;
    let token = app.token("").await;
    let jwks = app.jwks().await;
    let data = verify(&token, &jwks).expect("token verifies");
    let header = jwt_header(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
    let claims = data.claims;
    assert_eq!(claims["iss"], "https://issuer.test");
    assert_eq!(claims["sub"], "anonymous");
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now()).abs() <= 5);
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - iat,
        15 * 60,
        "default --token-ttl"
    );
    assert!(claims.get("aud").is_none(), "no aud unless asked for");
}

#[tokio::test]
async fn expired_token_fails_on_exp_and_its_kid_is_absent_from_the_jwks() {
    let app = spawn_app().await;
    let token = app.token("?expired=true").await;
    let jwks = app.jwks().await;
    let kid = jwt_header(&token)["kid"].as_str().unwrap().to_owned();
    assert!(
        !kids(&jwks).contains(&kid),
        "expired kid {kid} is published"
    );
    assert!(verify(&token, &jwks).unwrap_err().contains("not in JWKS"));

    let claims = claims(&token);
    assert!(
        claims["exp"].as_i64().unwrap() < now() - 60,
        "exp is well in the past: {claims}"
    );
    assert!(claims["iat"].as_i64().unwrap() < claims["exp"].as_i64().unwrap());
}

#[tokio::test]
async fn every_token_has_a_unique_jti() {
    let app = spawn_app().await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let jti = claims(&app.token("").await)["jti"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(seen.insert(jti), "duplicate jti");
    }
}

#[tokio::test]
async fn expired_parameter_values_are_table_driven() {
    let app = spawn_app().await;
    let published = kids(&app.jwks().await);
    for (query, expect_expired) in [
        ("", false),
        ("?expired", true),
        ("?expired=", true),
        ("?expired=true", true),
        ("?expired=1", true),
        ("?expired=false", false),
        ("?expired=0", false),
    ] {
        let token = app.token(query).await;
        let kid = jwt_header(&token)["kid"].as_str().unwrap().to_owned();
        let exp = claims(&token)["exp"].as_i64().unwrap();
        assert_eq!(
            !published.contains(&kid),
            expect_expired,
            "kid for {query:?}"
        );
        assert_eq!(exp < now(), expect_expired, "exp for {query:?}");
    }
    for junk in ["yes", "2", "TRUE!", "%FF"] {
        let response = app.post_auth(&format!("?expired={junk}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "expired={junk}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("expired=true") && detail.contains("expired=0"),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn auth_accepts_what_real_clients_send_and_a_username_becomes_sub() {
    let app = spawn_app().await;
    let jwks = app.jwks().await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("carol:pw")
    );
    let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        ("no body", app.post("/auth"), "anonymous"),
        (
            "form body",
            app.post("/auth")
                .form(&[("username", "alice"), ("password", "pw")]),
            "alice",
        ),
        (
            "JSON body",
            app.post("/auth")
                .json(&json!({"username": "bob", "password": "pw"})),
            "bob",
        ),
        (
            "HTTP Basic",
            app.post("/auth").header(header::AUTHORIZATION, &basic),
            "carol",
        ),
        (
            "Bearer",
            app.post("/auth")
                .header(header::AUTHORIZATION, "Bearer whatever"),
            "anonymous",
        ),
        (
            "fetch() JSON as text/plain",
            app.post("/auth")
                .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
                .body(r#"{"username":"dave"}"#),
            "dave",
        ),
        (
            "empty JSON content",
            app.post("/auth")
                .header(header::CONTENT_TYPE, "application/json"),
            "anonymous",
        ),
        (
            "body username wins over Basic",
            app.post("/auth")
                .header(header::AUTHORIZATION, &basic)
                .form(&[("username", "erin")]),
            "erin",
        ),
    ];
    for (name, request, sub) in cases {
        let response = request.response().await;
        assert_eq!(response.status(), 200, "{name}");
        let token = response.text().await.unwrap();
        let data = verify(&token, &jwks).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(data.claims["sub"], sub, "{name}");
    }
}

#[tokio::test]
async fn audience_and_lifetime_can_be_asked_for() {
    let app = spawn_app().await;
    let jwks = app.jwks().await;
    let response = app
        .post("/auth")
        .json(&json!({"username": "svc", "audience": ["api", "web"], "lifetime_seconds": 60}))
        .response()
        .await;
    assert_eq!(response.status(), 200);
    let token = response.text().await.unwrap();
    let data = verify_with(&token, &jwks, |v| v.set_audience(&["web"])).unwrap();
    assert_eq!(data.claims["aud"], json!(["api", "web"]));
    assert_eq!(
        data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap(),
        60
    );

    let one = app.post("/auth").form(&[("aud", "api")]).response().await;
    let token = one.text().await.unwrap();
    assert_eq!(
        claims(&token)["aud"],
        "api",
        "a single audience is a string"
    );
}

#[tokio::test]
async fn bad_auth_bodies_get_a_json_4xx() {
    let app = spawn_app().await;
    let cases = [
        ("application/json", "{not json", StatusCode::BAD_REQUEST),
        ("application/json", "[1,2]", StatusCode::BAD_REQUEST),
        (
            "application/json",
            r#"{"lifetime_seconds": 0}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            r#"{"lifetime_seconds": -5}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            r#"{"lifetime_seconds": 999999}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/x-www-form-urlencoded",
            "lifetime_seconds=soon",
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/xml",
            "<user/>",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (content_type, body, status) in cases {
        let response = app.post_auth_body(content_type, body).await;
        assert_eq!(response.status(), status, "{content_type} {body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].is_string() && error["detail"].is_string(),
            "{error}"
        );
    }
    let response = app
        .post("/auth")
        .header(header::AUTHORIZATION, "Basic !!!not-base64")
        .response()
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn accept_json_gets_a_json_token_response() {
    let app = spawn_app().await;
    let response = app
        .post("/auth")
        .header(header::ACCEPT, "application/json")
        .response()
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["token"].as_str().unwrap();
    assert_eq!(jwt_header(token)["kid"], body["kid"]);
    verify(token, &app.jwks().await).unwrap();

    let plain = app.post_auth("").await;
    assert!(
        plain.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow_and_unknown_routes_404() {
    let app = spawn_app().await;
    let cases = [
        (Method::GET, "/auth", "POST"),
        (Method::PUT, "/auth", "POST"),
        (Method::DELETE, "/auth", "POST"),
        (Method::PATCH, "/auth", "POST"),
        (Method::HEAD, "/auth", "POST"),
        (Method::POST, "/.well-known/jwks.json", "GET"),
        (Method::PUT, "/.well-known/jwks.json", "GET"),
        (Method::DELETE, "/.well-known/jwks.json", "GET"),
        (Method::PATCH, "/.well-known/jwks.json", "GET"),
        (Method::DELETE, "/health", "GET"),
        (Method::PUT, "/connect", "POST"),
    ];
    for (method, path, allowed) in cases {
        let response = app.request(method.clone(), path).response().await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allow = response.headers()[header::ALLOW]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(allow.contains(allowed), "{method} {path}: Allow: {allow}");
        if method != Method::HEAD {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "method_not_allowed");
        }
    }
    let response = app.get("/nope").response().await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn root_health_and_connect_answer_as_documented() {
    let app = spawn_app().await;
    let root: Value = app.get_json("/").await;
    assert_eq!(root["status"], "ok");
    assert_eq!(root["service"], "jwks-server");

    for method in [Method::GET, Method::POST] {
        let health = app.request(method.clone(), "/health").response().await;
        assert_eq!(health.status(), 200, "{method} /health");
        let body: Value = health.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["store"]["status"], "ok");

        let connect = app.request(method.clone(), "/connect").response().await;
        assert_eq!(connect.status(), 200, "{method} /connect");
        let body: Value = connect.json().await.unwrap();
        assert_eq!(body["service"], "jwks-server");
        assert_eq!(body["status"], "ok");
        assert_eq!(
            body["endpoints"],
            json!({"jwks": "/.well-known/jwks.json", "auth": "/auth",
                   "auth_expired": "/auth?expired=true", "test_tokens": "/test-tokens",
                   "health": "/health",
                   "token": "/oauth2/token", "introspection": "/oauth2/introspect",
                   "revocation": "/oauth2/revoke",
                   "oauth_authorization_server": "/.well-known/oauth-authorization-server",
                   "openid_configuration": "/.well-known/openid-configuration"})
        );
        assert_eq!(body["grpc"]["port"], app.grpc_addr.port());
    }
}

#[tokio::test]
async fn jwks_is_cacheable_with_an_etag_and_answers_head_and_304() {
    let app = spawn_app().await;
    let response = app.get("/.well-known/jwks.json").response().await;
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=600");
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let body = response.bytes().await.unwrap();

    let head = app
        .request(Method::HEAD, "/.well-known/jwks.json")
        .response()
        .await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()[header::ETAG], etag.as_str());
    assert!(head.bytes().await.unwrap().is_empty());

    let cached = app
        .get("/.well-known/jwks.json")
        .header(header::IF_NONE_MATCH, &etag)
        .response()
        .await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert!(cached.bytes().await.unwrap().is_empty());

    let stale = app
        .get("/.well-known/jwks.json")
        .header(header::IF_NONE_MATCH, "\"something-else\"")
        .response()
        .await;
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap(), body);

    let jwk_set = app
        .get("/.well-known/jwks.json")
        .header(header::ACCEPT, "application/jwk-set+json")
        .response()
        .await;
    assert_eq!(
        jwk_set.headers()[header::CONTENT_TYPE],
        "application/jwk-set+json"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_app().await;
    let response = app
        .post_auth_body("application/json", vec![b' '; 64 * 1024])
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
}
