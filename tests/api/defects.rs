//! The catalogue of defective test tokens: every defect, for every
//! configured algorithm, through every door that offers it (REST `/auth`,
//! the REST token endpoint, gRPC `IssueToken` and `Token`), is refused by a
//! correctly configured relying party built on `jsonwebtoken` and the JWKS
//! fetched over the wire, while the same request without the defect
//! verifies. Each token is also checked for the property that makes it what
//! it says (no kid, alg none, a signature by the PEM of the RSA key…), and
//! that the defect is the only reason to refuse it. The switch turns all of
//! them off through both doors, and authorization is a normal token's.

use std::{collections::BTreeSet, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::Jwk};
use jwks_server::{
    config::Algorithms,
    proto::{IssueTokenRequest, ListTestTokensRequest, TokenRequest},
};
use reqwest::header;
use serde_json::{Value, json};
use tonic::{Code, Request};

use crate::{
    helpers::{Respond, TestApp, claims, header as jwt_header, kids, now, spawn_app_with},
    oauth::{ODD_SECRET, basic, form_encode, json_of, post_form, spawn_app_with_clients},
};

const ALL_ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];
const AUDIENCE: &str = "https://api.test";
const ISSUER: &str = "https://issuer.test";

/// Every name the contract promises, in the catalogue's order.
pub const NAMES: [&str; 16] = [
    "expired",
    "exp-in-past",
    "not-yet-valid",
    "unknown-kid",
    "no-kid",
    "bad-signature",
    "alg-none",
    "hs256-public-key",
    "embedded-jwk",
    "jku",
    "crit-unknown",
    "wrong-issuer",
    "wrong-audience",
    "missing-exp",
    "wrong-typ",
    "ecdsa-zero-signature",
];

async fn spawn_with_every_algorithm() -> TestApp {
    let list = Algorithms(ALL_ALGORITHMS.iter().map(|a| a.parse().unwrap()).collect());
    spawn_app_with(move |c| c.algorithms = list).await
}

/// The four doors a token comes out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Door {
    RestAuth,
    RestToken,
    GrpcIssueToken,
    GrpcToken,
}

const DOORS: [Door; 4] = [
    Door::RestAuth,
    Door::RestToken,
    Door::GrpcIssueToken,
    Door::GrpcToken,
];

impl Door {
    /// Whether it issues RFC 9068 access tokens (`typ: at+jwt`).
    fn access_tokens(self) -> bool {
        matches!(self, Self::RestToken | Self::GrpcToken)
    }

    fn typ(self) -> &'static str {
        if self.access_tokens() {
            "at+jwt"
        } else {
            "JWT"
        }
    }

    fn endpoint(self) -> &'static str {
        if self.access_tokens() {
            "/oauth2/token"
        } else {
            "/auth"
        }
    }
}

/// What a door answered: a token, or a refusal as (HTTP status or gRPC
/// code, what it said).
type Answer = Result<String, (String, String)>;

/// Asks `door` for a token for [`AUDIENCE`] signed with `alg`, with `defect`.
async fn ask(app: &TestApp, door: Door, alg: &str, defect: Option<&str>) -> Answer {
    match door {
        Door::RestAuth => {
            let query = match defect {
                Some(defect) => format!("/auth?alg={alg}&defect={defect}"),
                None => format!("/auth?alg={alg}"),
            };
            let response = app
                .post(&query)
                .json(&json!({"audience": AUDIENCE}))
                .response()
                .await;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            if status == 200 {
                Ok(text)
            } else {
                Err((status.to_string(), text))
            }
        }
        Door::RestToken => {
            let mut form = format!(
                "grant_type=client_credentials&client_id=probe&audience={}&alg={alg}",
                form_encode(AUDIENCE)
            );
            if let Some(defect) = defect {
                form.push_str(&format!("&defect={defect}"));
            }
            let (status, body) = json_of(post_form(app, "/oauth2/token", None, &form).await).await;
            if status == 200 {
                Ok(body["access_token"].as_str().unwrap().to_owned())
            } else {
                Err((status.to_string(), body.to_string()))
            }
        }
        Door::GrpcIssueToken => app
            .grpc()
            .await
            .issue_token(IssueTokenRequest {
                audience: vec![AUDIENCE.into()],
                alg: Some(alg.into()),
                defect: defect.map(str::to_owned),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().token)
            .map_err(|s| (format!("{:?}", s.code()), s.message().to_owned())),
        Door::GrpcToken => {
            let mut request = Request::new(TokenRequest {
                grant_type: "client_credentials".into(),
                audience: vec![AUDIENCE.into()],
                alg: Some(alg.into()),
                defect: defect.map(str::to_owned),
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("x-client-id", "probe".parse().unwrap());
            app.grpc()
                .await
                .token(request)
                .await
                .map(|r| r.into_inner().access_token)
                .map_err(|s| (format!("{:?}", s.code()), s.message().to_owned()))
        }
    }
}

/// One check a correct relying party makes, to leave out when showing that
/// a defect is the only reason a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Crit,
    Typ,
    Issuer,
    Audience,
    Exp,
    Nbf,
}

/// A relying party configured correctly: the key is the JWKS key the `kid`
/// names, the algorithm is that key's `alg` (never the token's), `typ` is the
/// route's, `crit` extensions it does not understand are refused (RFC 7515
/// §4.1.11), and issuer, audience, `exp` and `nbf` are checked with no leeway.
fn relying_party(
    token: &str,
    jwks: &Value,
    typ: &str,
    skip: Option<Check>,
) -> Result<Value, String> {
    let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
    let raw = jwt_header(token);
    if skip != Some(Check::Crit) && raw.get("crit").is_some() {
        return Err("crit names an extension this verifier does not understand".into());
    }
    if skip != Some(Check::Typ) && header.typ.as_deref() != Some(typ) {
        return Err(format!("typ {:?}, want {typ}", header.typ));
    }
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
    decode_with(token, jwk, skip)
}

fn decode_with(token: &str, jwk: &Value, skip: Option<Check>) -> Result<Value, String> {
    let parsed: Jwk = serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
    let key = DecodingKey::from_jwk(&parsed).map_err(|e| e.to_string())?;
    let alg = Algorithm::from_str(jwk["alg"].as_str().unwrap()).map_err(|e| e.to_string())?;
    decode_key(token, &key, alg, skip)
}

fn decode_key(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    skip: Option<Check>,
) -> Result<Value, String> {
    let mut validation = Validation::new(alg);
    validation.leeway = 0;
    validation.validate_nbf = skip != Some(Check::Nbf);
    validation.validate_exp = skip != Some(Check::Exp);
    if skip != Some(Check::Issuer) {
        validation.set_issuer(&[ISSUER]);
    }
    if skip == Some(Check::Audience) {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&[AUDIENCE]);
    }
    let mut required = vec!["iat", "nbf", "iss", "sub", "aud"];
    if skip != Some(Check::Exp) {
        required.push("exp");
    }
    validation.set_required_spec_claims(&required);
    decode::<Value>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("{e:?}"))
}

fn signature(token: &str) -> Vec<u8> {
    B64.decode(token.rsplit('.').next().unwrap()).unwrap()
}

/// Asserts what makes `token` the defect `name` (and, where the claims and
/// signature are otherwise a valid token's, that leaving out the one check
/// the defect breaks lets it verify).
fn assert_is_the_defect(name: &str, token: &str, jwks: &Value, alg: &str, door: Door) {
    let what = format!("{name} {alg} {door:?}");
    let header = jwt_header(token);
    let claims = claims(token);
    let published = kids(jwks);
    let kid = header["kid"].as_str().unwrap_or_default().to_owned();
    let typ = door.typ();
    let only_reason = |check: Check| {
        relying_party(token, jwks, typ, Some(check))
            .unwrap_or_else(|e| panic!("{what}: refused for more than its defect: {e}"));
    };
    match name {
        "expired" => {
            assert!(claims["exp"].as_i64().unwrap() < now(), "{what}");
            assert!(
                !published.contains(&kid),
                "{what}: expired kid is published"
            );
        }
        "exp-in-past" => {
            let exp = claims["exp"].as_i64().unwrap();
            assert!(exp < now() - 3000, "{what}: exp {exp}");
            assert_eq!(claims["iat"], claims["nbf"], "{what}");
            assert!(claims["iat"].as_i64().unwrap() < exp, "{what}");
            assert!(
                published.contains(&kid),
                "{what}: signed by a published key"
            );
            only_reason(Check::Exp);
        }
        "not-yet-valid" => {
            let nbf = claims["nbf"].as_i64().unwrap();
            assert!(nbf > now() + 3000, "{what}: nbf {nbf}");
            assert_eq!(claims["iat"], claims["nbf"], "{what}");
            assert!(claims["exp"].as_i64().unwrap() > nbf, "{what}");
            only_reason(Check::Nbf);
        }
        "unknown-kid" => {
            assert_eq!(header["alg"], alg, "{what}");
            assert_eq!(kid.len(), 43, "{what}: a SHA-256 thumbprint kid");
            assert!(!published.contains(&kid), "{what}");
        }
        "no-kid" => {
            assert!(header.get("kid").is_none(), "{what}: {header}");
            assert_eq!(header["alg"], alg, "{what}");
            let signed_by_a_published_key = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["alg"] == alg)
                .any(|jwk| decode_with(token, jwk, None).is_ok());
            assert!(signed_by_a_published_key, "{what}");
        }
        "bad-signature" => {
            assert!(published.contains(&kid), "{what}");
            let err = relying_party(token, jwks, typ, None).unwrap_err();
            assert!(err.contains("InvalidSignature"), "{what}: {err}");
        }
        "alg-none" => {
            assert_eq!(header["alg"], "none", "{what}");
            assert!(header.get("kid").is_none(), "{what}");
            assert!(token.ends_with('.'), "{what}: the signature is empty");
        }
        "hs256-public-key" => {
            assert_eq!(header["alg"], "HS256", "{what}");
            let jwk = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["kid"] == kid.as_str())
                .unwrap_or_else(|| panic!("{what}: kid is a published key's"));
            assert_eq!(jwk["kty"], "RSA", "{what}");
            let pem = crate::helpers::rsa_public_pem(jwk);
            let key = DecodingKey::from_secret(pem.as_bytes());
            decode_key(token, &key, Algorithm::HS256, None)
                .unwrap_or_else(|e| panic!("{what}: not keyed with the PEM: {e}"));
        }
        "embedded-jwk" => {
            let embedded = &header["jwk"];
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(embedded.get(private).is_none(), "{what}: {private} leaked");
            }
            assert_eq!(embedded["kid"], kid.as_str(), "{what}");
            assert!(!published.contains(&kid), "{what}");
            decode_with(token, embedded, None)
                .unwrap_or_else(|e| panic!("{what}: not signed by the embedded key: {e}"));
        }
        "jku" => {
            assert_eq!(
                header["jku"], "https://attacker.example/jwks.json",
                "{what}"
            );
            assert!(!published.contains(&kid), "{what}");
        }
        "crit-unknown" => {
            assert_eq!(header["crit"], json!(["urn:example:unknown"]), "{what}");
            assert!(header.get("urn:example:unknown").is_some(), "{what}");
            only_reason(Check::Crit);
        }
        "wrong-issuer" => {
            assert_ne!(claims["iss"], ISSUER, "{what}");
            only_reason(Check::Issuer);
        }
        "wrong-audience" => {
            assert_ne!(claims["aud"], AUDIENCE, "{what}");
            only_reason(Check::Audience);
        }
        "missing-exp" => {
            assert!(claims.get("exp").is_none(), "{what}");
            only_reason(Check::Exp);
        }
        "wrong-typ" => {
            assert_eq!(header["typ"], "JWT", "{what}");
            only_reason(Check::Typ);
        }
        "ecdsa-zero-signature" => {
            assert_eq!(header["alg"], "ES256", "{what}");
            assert!(published.contains(&kid), "{what}");
            assert_eq!(signature(token), vec![0u8; 64], "{what}");
        }
        other => panic!("no check for defect {other}"),
    }
    if name != "wrong-audience" {
        assert!(
            claims["aud"] == AUDIENCE || claims["aud"] == json!([AUDIENCE]),
            "{what}: the requested audience, {}",
            claims["aud"]
        );
    }
    if name != "wrong-issuer" {
        assert_eq!(claims["iss"], ISSUER, "{what}");
    }
}

/// Whether `alg` can carry `defect`: the ES256 attack needs ES256, the
/// algorithm confusion an RSA key.
fn applies(defect: &str, alg: &str) -> bool {
    match defect {
        "ecdsa-zero-signature" => alg == "ES256",
        "hs256-public-key" => alg.starts_with("RS") || alg.starts_with("PS"),
        _ => true,
    }
}

#[tokio::test]
async fn every_defect_of_every_algorithm_through_every_door_is_refused_by_a_correct_verifier() {
    let app = spawn_with_every_algorithm().await;
    let jwks = app.jwks().await;
    let catalogue = app.get_json("/test-tokens").await;
    assert_eq!(catalogue["enabled"], true);
    let names: Vec<&str> = catalogue["defects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, NAMES);
    let mut refused = 0;
    for alg in ALL_ALGORITHMS {
        for door in DOORS {
            let valid = ask(&app, door, alg, None)
                .await
                .unwrap_or_else(|e| panic!("{alg} {door:?} valid token: {e:?}"));
            relying_party(&valid, &jwks, door.typ(), None)
                .unwrap_or_else(|e| panic!("{alg} {door:?}: the valid token is refused: {e}"));
            for entry in catalogue["defects"].as_array().unwrap() {
                let name = entry["name"].as_str().unwrap();
                let offered = entry["endpoints"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(door.endpoint()));
                let answer = ask(&app, door, alg, Some(name)).await;
                if !offered || !applies(name, alg) {
                    let (status, said) = answer.expect_err(&format!("{name} {alg} {door:?}"));
                    assert!(
                        status == "400" || status == "InvalidArgument",
                        "{name} {alg} {door:?}: {status} {said}"
                    );
                    assert!(said.contains(name), "{name} {alg} {door:?}: {said}");
                    continue;
                }
                let token = answer.unwrap_or_else(|e| panic!("{name} {alg} {door:?}: {e:?}"));
                let verdict = relying_party(&token, &jwks, door.typ(), None);
                assert!(
                    verdict.is_err(),
                    "{name} {alg} {door:?} was accepted: {verdict:?}"
                );
                assert_is_the_defect(name, &token, &jwks, alg, door);
                refused += 1;
            }
        }
    }
    // 4 algorithms x 4 doors x the 13 defects every token can carry, plus
    // wrong-typ (2 access-token doors x 4), hs256-public-key (2 RSA x 4) and
    // ecdsa-zero-signature (1 x 4).
    assert_eq!(refused, 4 * 4 * 13 + 4 * 2 + 2 * 4 + 4);
}

#[tokio::test]
async fn the_catalogue_lists_only_what_this_servers_algorithms_can_make() {
    let app = spawn_app_with(|c| {
        c.algorithms = Algorithms(vec!["EdDSA".parse().unwrap()]);
    })
    .await;
    let catalogue = app.get_json("/test-tokens").await;
    let names: BTreeSet<&str> = catalogue["defects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains("ecdsa-zero-signature"), "{names:?}");
    assert!(!names.contains("hs256-public-key"), "{names:?}");
    assert!(names.contains("expired") && names.contains("alg-none"));
    for entry in catalogue["defects"].as_array().unwrap() {
        assert_eq!(entry["expected"], "refused");
        assert!(
            entry["weakness"].as_str().unwrap().contains("CWE-"),
            "{entry}"
        );
        assert!(!entry["description"].as_str().unwrap().is_empty());
    }
    let wrong_typ = &catalogue["defects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "wrong-typ")
        .unwrap()["endpoints"];
    assert_eq!(wrong_typ, &json!(["/oauth2/token"]));

    let listed = app
        .grpc()
        .await
        .list_test_tokens(ListTestTokensRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.enabled);
    let grpc_names: BTreeSet<&str> = listed.defects.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(grpc_names, names);

    let refused = app.post_auth("?defect=ecdsa-zero-signature").await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("ES256 is not configured"),
        "{body}"
    );
    let openapi = app.get_json("/openapi.json").await;
    assert!(openapi["paths"]["/test-tokens"]["get"].is_object());
    let connect = app.get_json("/connect").await;
    assert_eq!(connect["endpoints"]["test_tokens"], "/test-tokens");
}

#[tokio::test]
async fn an_unknown_defect_is_refused_naming_the_valid_ones_through_both_doors() {
    let app = spawn_app_with(|_| {}).await;
    let (status, body) = json_of(app.post_auth("?defect=alg-None").await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("alg-none") && detail.contains("no-kid"),
        "{detail}"
    );

    let form = "grant_type=client_credentials&client_id=probe&defect=nope";
    let (status, body) = json_of(post_form(&app, "/oauth2/token", None, form).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("wrong-typ"),
        "{body}"
    );

    let status = app
        .grpc()
        .await
        .issue_token(IssueTokenRequest {
            defect: Some("nope".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("alg-none"),
        "{}",
        status.message()
    );

    let (status, body) = json_of(app.post_auth("?defect=no-kid&expired=true").await).await;
    assert_eq!(status, 400, "two defects at once: {body}");
    let same = app.post_auth("?defect=expired&expired=true").await;
    assert_eq!(same.status(), 200, "expired=true is defect=expired");
}

#[tokio::test]
async fn switched_off_every_test_token_is_refused_through_both_doors() {
    let app = spawn_app_with(|c| c.test_tokens = Some(false)).await;
    let catalogue = app.get_json("/test-tokens").await;
    assert_eq!(catalogue["enabled"], false);
    let listed = app
        .grpc()
        .await
        .list_test_tokens(ListTestTokensRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!listed.enabled);
    for entry in catalogue["defects"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        for door in DOORS {
            let offered = entry["endpoints"]
                .as_array()
                .unwrap()
                .contains(&json!(door.endpoint()));
            if !offered {
                continue;
            }
            let (status, said) = ask(&app, door, "RS256", Some(name))
                .await
                .expect_err(&format!("{name} {door:?} switched off"));
            let want = match door {
                Door::RestAuth => "403",
                Door::RestToken => "400",
                Door::GrpcIssueToken => "PermissionDenied",
                Door::GrpcToken => "InvalidArgument",
            };
            assert_eq!(status, want, "{name} {door:?}: {said}");
            assert!(said.contains("disabled"), "{name} {door:?}: {said}");
        }
    }
    // A valid token is still a valid token.
    let valid = ask(&app, Door::RestAuth, "RS256", None).await;
    assert!(valid.is_ok(), "{valid:?}");
}

#[tokio::test]
async fn with_a_clients_file_defects_are_off_unless_turned_on_and_need_the_same_authorization() {
    let default = spawn_app_with_clients(|_| {}).await;
    let catalogue = default.get_json("/test-tokens").await;
    assert_eq!(catalogue["enabled"], false);
    let as_svc = |app: &TestApp, query: &str| {
        app.post(&format!("/auth{query}"))
            .header(header::AUTHORIZATION, basic("svc", ODD_SECRET))
    };
    let off = as_svc(&default, "?defect=no-kid").response().await;
    assert_eq!(off.status(), 403);
    // One switch for the whole catalogue: expired=true is a test token too.
    let expired = as_svc(&default, "?expired=true").response().await;
    assert_eq!(
        expired.status(),
        403,
        "expired=true follows the same switch"
    );
    let old_name_on = spawn_app_with_clients(|c| c.expired_tokens = Some(true)).await;
    let expired = as_svc(&old_name_on, "?expired=true").response().await;
    assert_eq!(expired.status(), 200, "--expired-tokens=true turns them on");
    let token = as_svc(&old_name_on, "?defect=no-kid").response().await;
    assert_eq!(
        token.status(),
        200,
        "--expired-tokens=true turns them all on"
    );

    let on = spawn_app_with_clients(|c| c.test_tokens = Some(true)).await;
    let token = as_svc(&on, "?defect=no-kid").response().await;
    assert_eq!(token.status(), 200);
    let anonymous = on.post_auth("?defect=no-kid").await;
    assert_eq!(
        anonymous.status(),
        401,
        "a defect needs the client's credentials"
    );
    let wider = as_svc(&on, "?defect=wrong-issuer")
        .json(&json!({"audience": "not-its-audience"}))
        .response()
        .await;
    assert_eq!(
        wider.status(),
        403,
        "a defect never widens a client's audiences"
    );
    let form = "grant_type=client_credentials&defect=wrong-typ&scope=admin";
    let auth = basic("svc", ODD_SECRET);
    let (status, body) = json_of(post_form(&on, "/oauth2/token", Some(&auth), form).await).await;
    assert_eq!(status, 400, "nor its scopes: {body}");
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn test_tokens_are_counted_by_defect() {
    let app = spawn_app_with(|_| {}).await;
    assert_eq!(app.post_auth("?defect=alg-none").await.status(), 200);
    let metrics = app.get("/metrics").response().await.text().await.unwrap();
    assert!(
        metrics.contains(r#"jwks_test_tokens_issued_total{door="rest",defect="alg-none"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn defect_comes_in_the_query_the_form_or_the_json_body_and_two_places_must_agree() {
    let app = spawn_app_with(|_| {}).await;
    let json_body = app
        .post("/auth")
        .json(&json!({"defect": "no-kid"}))
        .response()
        .await;
    assert_eq!(json_body.status(), 200);
    assert!(
        jwt_header(&json_body.text().await.unwrap())
            .get("kid")
            .is_none()
    );

    let form_body = app
        .post("/auth")
        .form(&[("defect", "alg-none")])
        .response()
        .await;
    assert_eq!(form_body.status(), 200);
    assert_eq!(jwt_header(&form_body.text().await.unwrap())["alg"], "none");

    let agreeing = app
        .post("/auth?defect=alg-none")
        .json(&json!({"defect": "alg-none"}))
        .response()
        .await;
    assert_eq!(agreeing.status(), 200);

    let (status, body) = json_of(
        app.post("/auth?defect=alg-none")
            .json(&json!({"defect": "no-kid"}))
            .response()
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("defect"),
        "{body}"
    );

    let json_answer = app
        .post("/auth?defect=no-kid")
        .header(header::ACCEPT, "application/json")
        .response()
        .await;
    let (status, body) = json_of(json_answer).await;
    assert_eq!(status, 200);
    assert_eq!(body["token"], body["access_token"]);
    assert!(
        jwt_header(body["token"].as_str().unwrap())
            .get("kid")
            .is_none()
    );
}
