//! Every algorithm verifiers expect (RS256, PS256, ES256, EdDSA) and larger
//! RSA keys: through both doors, each token verified by `jsonwebtoken`
//! against keys built from the JWKS fetched over the wire; the settings that
//! choose them; and a store written by the release before them.

use std::{path::Path, time::Duration};

use aws_lc_rs::digest;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, DecodingKey, TokenData, Validation, decode};
use jwks_server::{
    config::{Algorithms, Config, KeysCommand, Secret, StoreUrl},
    keys::{Algorithm as Alg, algorithm::RsaKeySize},
    proto::{GetJwksRequest, IssueTokenRequest},
};
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{Respond, TestApp, claims, header, kids, now, spawn_app_with, start};

const ALL: &str = "RS256,PS256,ES256,EdDSA";

fn algorithms(list: &str) -> Algorithms {
    Algorithms(list.split(',').map(|a| a.parse().unwrap()).collect())
}

async fn spawn_with_algorithms(list: &str) -> TestApp {
    let list = algorithms(list);
    spawn_app_with(move |config| config.algorithms = list).await
}

/// Verifies `token` as a relying party would: find its `kid` in `jwks`, build
/// the key from that JWK's public members alone (by its `kty`), and check the
/// signature with the JWK's `alg`, which must be the token's.
pub fn verify_any(token: &str, jwks: &Value) -> Result<TokenData<Value>, String> {
    let header = header(token);
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .ok_or("no keys array")?
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
    if jwk["alg"] != header["alg"] {
        return Err(format!(
            "token alg {} but JWK alg {}",
            header["alg"], jwk["alg"]
        ));
    }
    let member = |name: &str| jwk[name].as_str().ok_or(format!("no {name} in {jwk}"));
    let (key, alg) = match (jwk["kty"].as_str(), jwk["alg"].as_str()) {
        (Some("RSA"), Some(alg @ ("RS256" | "PS256"))) => (
            DecodingKey::from_rsa_components(member("n")?, member("e")?),
            if alg == "RS256" {
                Algorithm::RS256
            } else {
                Algorithm::PS256
            },
        ),
        (Some("EC"), Some("ES256")) if jwk["crv"] == "P-256" => (
            DecodingKey::from_ec_components(member("x")?, member("y")?),
            Algorithm::ES256,
        ),
        (Some("OKP"), Some("EdDSA")) if jwk["crv"] == "Ed25519" => (
            DecodingKey::from_ed_components(member("x")?),
            Algorithm::EdDSA,
        ),
        _ => return Err(format!("unexpected JWK {jwk}")),
    };
    let key = key.map_err(|e| e.to_string())?;
    let mut validation = Validation::new(alg);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "sub", "jti"]);
    decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())
}

/// The gRPC JWKS as the REST JSON would show it (members a type lacks are empty).
async fn grpc_jwks(app: &TestApp) -> Value {
    let response = app
        .grpc()
        .await
        .get_jwks(GetJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<Value> = response
        .keys
        .iter()
        .map(|k| {
            let mut jwk = json!({"kty": k.kty, "use": k.r#use, "alg": k.alg, "kid": k.kid});
            for (name, value) in [
                ("n", &k.n),
                ("e", &k.e),
                ("crv", &k.crv),
                ("x", &k.x),
                ("y", &k.y),
            ] {
                if !value.is_empty() {
                    jwk[name] = json!(value);
                }
            }
            jwk
        })
        .collect();
    json!({ "keys": keys })
}

async fn grpc_token(
    app: &TestApp,
    alg: Option<&str>,
    expired: bool,
) -> Result<String, tonic::Status> {
    app.grpc()
        .await
        .issue_token(IssueTokenRequest {
            alg: alg.map(str::to_owned),
            expired,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().token)
}

/// RFC 7638: SHA-256 over the required members, sorted, without whitespace.
fn thumbprint(jwk: &Value) -> String {
    let required: &[&str] = match jwk["kty"].as_str() {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        other => panic!("kty {other:?}"),
    };
    let members: Vec<String> = required
        .iter()
        .map(|name| format!("\"{name}\":{}", jwk[*name]))
        .collect();
    let canonical = format!("{{{}}}", members.join(","));
    B64.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

#[tokio::test]
async fn every_algorithm_signs_tokens_that_verify_against_the_jwks_through_both_doors() {
    let app = spawn_with_algorithms(ALL).await;
    let rest_jwks = app.jwks().await;
    let grpc_jwks = grpc_jwks(&app).await;
    assert_eq!(grpc_jwks, rest_jwks, "both doors publish the same keys");

    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        let by_query = app.token(&format!("?alg={alg}")).await;
        let by_json = app
            .post("/auth")
            .json(&json!({"alg": alg, "username": "alice"}))
            .response()
            .await
            .text()
            .await
            .unwrap();
        let by_form = app
            .post("/auth")
            .form(&[("alg", alg)])
            .response()
            .await
            .text()
            .await
            .unwrap();
        let by_grpc = grpc_token(&app, Some(alg), false).await.unwrap();
        for (door, token) in [
            ("query", &by_query),
            ("JSON body", &by_json),
            ("form body", &by_form),
            ("gRPC", &by_grpc),
        ] {
            assert_eq!(header(token)["alg"], alg, "{alg} by {door}");
            verify_any(token, &rest_jwks).unwrap_or_else(|e| panic!("{alg} by {door}: {e}"));
            verify_any(token, &grpc_jwks).unwrap_or_else(|e| panic!("{alg} by {door}: {e}"));
        }
        assert_eq!(claims(&by_json)["sub"], "alice");
    }
}

#[tokio::test]
async fn each_jwk_carries_its_types_members_and_its_thumbprint_as_kid() {
    let app = spawn_with_algorithms(ALL).await;
    let jwks = app.jwks().await;
    let keys = jwks["keys"].as_array().unwrap();
    for (alg, kty, members) in [
        ("RS256", "RSA", &["n", "e"][..]),
        ("PS256", "RSA", &["n", "e"]),
        ("ES256", "EC", &["crv", "x", "y"]),
        ("EdDSA", "OKP", &["crv", "x"]),
    ] {
        let jwk = keys
            .iter()
            .find(|k| k["alg"] == alg)
            .unwrap_or_else(|| panic!("no {alg} key: {jwks}"));
        let mut names: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let mut expected = vec!["alg", "kid", "kty", "use"];
        expected.extend(members);
        expected.sort_unstable();
        assert_eq!(names, expected, "{alg}: exactly its public members: {jwk}");
        assert_eq!(jwk["kty"], kty);
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"].as_str().unwrap(), thumbprint(jwk), "{alg}");
        if kty == "RSA" {
            assert_eq!(B64.decode(jwk["n"].as_str().unwrap()).unwrap().len(), 256);
        }
    }
    assert_eq!(keys.iter().filter(|k| k["crv"] == "P-256").count(), 1);
    assert_eq!(keys.iter().filter(|k| k["crv"] == "Ed25519").count(), 1);
}

#[tokio::test]
async fn without_alg_the_first_configured_algorithm_signs() {
    let app = spawn_with_algorithms("ES256,RS256").await;
    let token = app.token("").await;
    assert_eq!(header(&token)["alg"], "ES256");
    let token = grpc_token(&app, None, false).await.unwrap();
    assert_eq!(header(&token)["alg"], "ES256");
    verify_any(&token, &app.jwks().await).unwrap();
}

#[tokio::test]
async fn an_algorithm_not_configured_is_refused_naming_those_that_are() {
    let app = spawn_with_algorithms("RS256,EdDSA").await;
    for asked in ["ES256", "HS256", "rs256", "none"] {
        let response = app.post_auth(&format!("?alg={asked}")).await;
        assert_eq!(response.status(), 400, "{asked}");
        let body: Value = response.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(body["error"].is_string(), "{body}");
        assert!(
            detail.contains("alg") && detail.contains("RS256, EdDSA"),
            "{asked}: {detail}"
        );
        // Only the case wrong: the name it meant, said once.
        assert_eq!(
            detail.contains("case-sensitive"),
            asked == "rs256",
            "{asked}: {detail}"
        );
        if asked == "rs256" {
            assert!(
                detail.ends_with("(names are case-sensitive: RS256)"),
                "{detail}"
            );
        }

        let status = grpc_token(&app, Some(asked), false).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{asked}");
        assert!(
            status.message().contains("RS256, EdDSA"),
            "{}",
            status.message()
        );
    }
    let response = app
        .post("/auth?alg=RS256")
        .json(&json!({"alg": "EdDSA"}))
        .response()
        .await;
    assert_eq!(response.status(), 400, "query and body disagree");
}

#[tokio::test]
async fn expired_tokens_of_every_algorithm_are_signed_by_keys_absent_from_the_jwks() {
    let app = spawn_with_algorithms(ALL).await;
    let jwks = app.jwks().await;
    let published = kids(&jwks);
    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        let rest = app.token(&format!("?expired=true&alg={alg}")).await;
        let grpc = grpc_token(&app, Some(alg), true).await.unwrap();
        for token in [&rest, &grpc] {
            let header = header(token);
            assert_eq!(header["alg"], alg);
            let kid = header["kid"].as_str().unwrap();
            assert!(
                !published.iter().any(|k| k == kid),
                "{alg}: expired kid {kid} is published"
            );
            assert!(claims(token)["exp"].as_i64().unwrap() < now(), "{alg}");
            assert!(verify_any(token, &jwks).is_err());
        }
    }
}

#[tokio::test]
async fn discovery_lists_the_configured_algorithms() {
    let app = spawn_with_algorithms("EdDSA,RS256").await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let doc = app.get_json(path).await;
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["EdDSA", "RS256"]),
            "{path}"
        );
    }
}

#[tokio::test]
async fn larger_rsa_keys_are_made_on_request_and_stored_ones_outlive_a_change_of_size() {
    let app = spawn_app_with(|config| {
        config.algorithms = algorithms("PS256");
        config.rsa_key_bits = RsaKeySize::Bits3072;
    })
    .await;
    let jwks = app.jwks().await;
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    assert_eq!(B64.decode(n).unwrap().len() * 8, 3072);
    let before = kids(&jwks);
    let (mut config, dir) = app.stop().await;

    config.rsa_key_bits = RsaKeySize::Bits2048;
    let app = start(config, dir).await;
    let jwks = app.jwks().await;
    assert_eq!(kids(&jwks), before, "the 3072-bit key is kept and served");
    let token = app.token("").await;
    assert_eq!(header(&token)["alg"], "PS256");
    verify_any(&token, &jwks).unwrap();
}

/// Bad `--algorithms` and `--rsa-key-bits`: one line naming the flag, exit 2.
#[tokio::test]
async fn unknown_repeated_or_out_of_range_settings_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, says) in [
        ("--algorithms", "RS256,HS256", "unknown algorithm \"HS256\""),
        ("--algorithms", "ES256,ES256", "ES256 is named twice"),
        ("--algorithms", "", "unknown algorithm"),
        ("--rsa-key-bits", "1024", "2048, 3072 or 4096"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"))
            .env_clear()
            .envs(crate::helpers::passthrough_env())
            .args([flag, value, "keys", "list"])
            .current_dir(dir.path())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(flag) && first.contains(says),
            "{flag} {value}: {stderr}"
        );
    }
}

/// The fixture: generation 1 expired, 2 active, 3 published (see
/// tests/fixtures/README.md), RS256 keys sealed by the fixture's KEK.
pub const FIXTURE_KIDS: [&str; 3] = [
    "WuDOAQSaY3kdC6ZZ4awGrI4ttKOzaoMMSoKfnY_JT_Q",
    "OlvHupfaIs0s05oXYI94kXK9CzxMStSzh-wSXKLINI4",
    "pqPlD_rr-Zok7maqfJxrVenOKPOad7Z78g74x28q4MA",
];

fn fixture_config(dir: &Path) -> Config {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = dir.join("jwks.db");
    std::fs::copy(fixtures.join("release-1-store.db"), &path).unwrap();
    let kek = std::fs::read_to_string(fixtures.join("release-1-store.kek")).unwrap();
    let mut config = crate::helpers::test_config(dir);
    config.store = StoreUrl::Sqlite {
        url: format!("sqlite://{}", path.display()),
        path,
    };
    config.kek = vec![kek.trim().parse::<Secret>().unwrap()];
    config.reload_every = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn a_store_written_by_the_release_before_algorithms_opens_keeps_its_keys_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fixture_config(dir.path());
    config.algorithms = algorithms("RS256,ES256");
    let app = start(config.clone(), dir).await;

    // Every stored key is kept: the two published ones are served, the
    // expired one signs expired tokens, and the newest published one signs.
    let jwks = app.jwks().await;
    let rs256: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == "RS256")
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rs256, [FIXTURE_KIDS[2], FIXTURE_KIDS[1]], "{jwks}");
    let token = app.token("").await;
    assert_eq!(header(&token)["kid"], FIXTURE_KIDS[2]);
    verify_any(&token, &jwks).unwrap();
    let expired = app.token("?expired=true").await;
    assert_eq!(header(&expired)["kid"], FIXTURE_KIDS[0]);

    // The newly configured algorithm starts as a fresh store would.
    let es256 = app.token("?alg=ES256").await;
    verify_any(&es256, &jwks).unwrap();
    app.token("?alg=ES256&expired=true").await;

    // And rotation goes on: an operator rotation adds the next RS256
    // generation, which the running server publishes.
    let out = jwks_server::admin::run(&config, &KeysCommand::Rotate { alg: None })
        .await
        .unwrap();
    assert!(out.contains("(generation 4)"), "{out}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let jwks = app.jwks().await;
        let rs256 = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["alg"] == "RS256")
            .count();
        if rs256 == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was never published: {jwks}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = jwks_server::admin::run(&config, &KeysCommand::List)
        .await
        .unwrap();
    for kid in FIXTURE_KIDS {
        assert!(list.contains(kid), "{kid} kept: {list}");
    }
}

#[test]
fn the_default_is_rs256_with_2048_bit_keys() {
    let config = Config::defaults();
    assert_eq!(config.algorithms, Algorithms(vec![Alg::Rs256]));
    assert_eq!(config.rsa_key_bits, RsaKeySize::Bits2048);
}

#[tokio::test]
async fn a_clients_default_alg_signs_its_tokens_unless_the_request_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let hash = |secret: &str| jwks_server::access::hash_secret(secret).unwrap();
    let clients = json!({"clients": [
        {"id": "edge", "secret_hash": hash("e-secret"), "alg": "EdDSA"},
        {"id": "plain", "secret_hash": hash("p-secret")},
    ]});
    std::fs::write(&path, clients.to_string()).unwrap();
    let app = spawn_app_with(|config| {
        config.algorithms = algorithms("RS256,EdDSA");
        config.clients_file = Some(path.clone());
    })
    .await;
    let token_for = async |id: &str, secret: &str, query: &str| {
        let response = app
            .post(&format!("/auth{query}"))
            .basic_auth(id, Some(secret))
            .response()
            .await;
        assert_eq!(response.status(), 200, "{id}{query}");
        header(&response.text().await.unwrap())["alg"].clone()
    };
    assert_eq!(token_for("edge", "e-secret", "").await, "EdDSA");
    assert_eq!(token_for("edge", "e-secret", "?alg=RS256").await, "RS256");
    assert_eq!(token_for("plain", "p-secret", "").await, "RS256");
}

#[tokio::test]
async fn keys_list_shows_each_keys_algorithm_and_rotate_can_name_one() {
    let app = spawn_with_algorithms("RS256,ES256").await;
    let (config, _dir) = app.stop().await;

    let list = jwks_server::admin::run(&config, &KeysCommand::List)
        .await
        .unwrap();
    let header_line = list.lines().next().unwrap();
    assert!(header_line.contains("ALG"), "{list}");
    for alg in ["RS256", "ES256"] {
        let rows = list
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(alg));
        assert_eq!(
            rows.count(),
            2,
            "{alg}: an active and an expired key: {list}"
        );
    }

    let out = jwks_server::admin::run(
        &config,
        &KeysCommand::Rotate {
            alg: Some(Alg::Es256),
        },
    )
    .await
    .unwrap();
    let created: Vec<&str> = out.lines().filter(|l| l.starts_with("created")).collect();
    assert_eq!(created.len(), 1, "{out}");
    assert!(created[0].starts_with("created ES256 ") && created[0].contains("(generation 3)"));

    let err = jwks_server::admin::run(
        &config,
        &KeysCommand::Rotate {
            alg: Some(Alg::EdDsa),
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--alg EdDSA") && err.contains("--algorithms"),
        "{err}"
    );
}

#[tokio::test]
async fn tokens_and_keys_are_counted_by_algorithm() {
    let app = spawn_with_algorithms("RS256,ES256").await;
    app.token("?alg=ES256").await;
    app.token("?alg=ES256&expired=true").await;
    grpc_token(&app, Some("ES256"), false).await.unwrap();
    let metrics = app.get("/metrics").response().await.text().await.unwrap();
    for line in [
        r#"jwks_tokens_signed_total{alg="ES256",kind="valid"} 2"#,
        r#"jwks_tokens_signed_total{alg="ES256",kind="expired"} 1"#,
        r#"jwks_algorithm_keys{alg="ES256",state="active"} 1"#,
        r#"jwks_algorithm_keys{alg="RS256",state="expired"} 1"#,
        r#"jwks_tokens_issued_total{door="rest",kind="valid"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_client_whose_default_alg_the_server_does_not_run_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let clients = json!({"clients": [
        {"id": "edge", "secret_hash": jwks_server::access::hash_secret("s").unwrap(), "alg": "EdDSA"},
    ]});
    std::fs::write(&path, clients.to_string()).unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.clients_file = Some(path);
    let err = jwks_server::startup::Application::build(config)
        .await
        .err()
        .expect("the start is refused")
        .to_string();
    assert!(
        err.contains("client edge") && err.contains("EdDSA") && err.contains("RS256"),
        "{err}"
    );
}

#[tokio::test]
async fn the_token_endpoint_signs_access_tokens_with_every_algorithm_and_introspection_accepts_them()
 {
    let app = spawn_with_algorithms(ALL).await;
    let jwks = app.jwks().await;
    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        let answer: Value = app
            .post("/oauth2/token")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "svc"),
                ("alg", alg),
            ])
            .response()
            .await
            .json()
            .await
            .unwrap();
        let token = answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{alg}: {answer}"));
        assert_eq!(header(token)["alg"], alg);
        assert_eq!(header(token)["typ"], "at+jwt");
        verify_any(token, &jwks).unwrap_or_else(|e| panic!("{alg}: {e}"));

        let introspection: Value = app
            .post("/oauth2/introspect")
            .form(&[("token", token)])
            .response()
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(introspection["active"], true, "{alg}: {introspection}");
        assert_eq!(introspection["client_id"], "svc");
    }

    // A token whose header names another algorithm than its key's is refused
    // (no algorithm confusion), and an unconfigured `alg` is invalid_request.
    let es256 = app
        .post("/oauth2/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("alg", "ES256"),
        ])
        .response()
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, rest) = es256.split_once('.').unwrap();
    let mut forged_header = header(&es256);
    forged_header["alg"] = json!("RS256");
    let forged = format!("{}.{rest}", B64.encode(forged_header.to_string()));
    let introspection: Value = app
        .post("/oauth2/introspect")
        .form(&[("token", forged.as_str())])
        .response()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(introspection, json!({"active": false}));

    let only_rs256 = spawn_with_algorithms("RS256").await;
    let refused = only_rs256
        .post("/oauth2/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("alg", "ES256"),
        ])
        .response()
        .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("RS256"),
        "names what is configured: {body}"
    );
}
