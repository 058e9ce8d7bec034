//! `jwks-server probe` as its users run it: the real binary, in its own
//! process, against a real server and small protected endpoints on port 0.
//! Each endpoint verifies with `jsonwebtoken` against the JWKS it fetches
//! over the wire, either correctly or with one of the flaws real incidents
//! came from; the probe must flag exactly the defects each flaw lets through.

use std::{collections::BTreeSet, net::SocketAddr, process::Output, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::get,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::Jwk};
use serde_json::Value;

use crate::helpers::{TestApp, now, spawn_app, spawn_app_with};

/// Defects only a signature check refuses: every other defect's signature is
/// made by the server's real key, so its claims or header are what give it
/// away. (`alg-none` is not here: jsonwebtoken cannot even parse an
/// unsecured header, so it refuses it with or without a signature check.)
const SIGNATURE_DEFECTS: &[&str] = &[
    "unknown-kid",
    "no-kid",
    "bad-signature",
    "hs256-public-key",
    "embedded-jwk",
    "jku",
    "ecdsa-zero-signature",
];

/// What the issue's catalogue has for `/auth`, whatever the algorithm: all
/// but the access-token-only `wrong-typ` and the ES256-only
/// `ecdsa-zero-signature`.
fn auth_defects() -> impl Iterator<Item = &'static str> {
    crate::defects::NAMES
        .into_iter()
        .filter(|name| !["wrong-typ", "ecdsa-zero-signature"].contains(name))
}

const AUDIENCE: &str = "https://api.probe.test/";

/// How a protected endpoint gets verification wrong (or right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// Verifies correctly.
    None,
    /// Reads the claims without checking the signature (the claims are
    /// still checked).
    NoSignatureCheck,
    /// Takes `alg` from the header and, for HS256, uses the RSA public key's
    /// PEM as the HMAC secret: the algorithm-confusion attack.
    Hs256PublicKey,
    /// Does not check `aud`.
    NoAudienceCheck,
    /// Checks `exp` only when present.
    NoExpRequired,
    /// Requires `exp` but never compares the token's times to the clock.
    NoTimeCheck,
    /// Does not check RFC 9068's `typ: at+jwt` on access tokens.
    NoTypCheck,
}

impl Flaw {
    /// The defects this flaw lets through (whatever the catalogue offers).
    fn lets_through(self) -> &'static [&'static str] {
        match self {
            Self::None => &[],
            Self::NoSignatureCheck => SIGNATURE_DEFECTS,
            Self::Hs256PublicKey => &["hs256-public-key"],
            Self::NoAudienceCheck => &["wrong-audience"],
            Self::NoExpRequired => &["missing-exp"],
            // `expired` is refused all the same: its key is not published.
            Self::NoTimeCheck => &["exp-in-past", "not-yet-valid"],
            Self::NoTypCheck => &["wrong-typ"],
        }
    }
}

/// A protected endpoint: `GET /protected` answers 200 to a token it accepts
/// and 401 to one it refuses.
#[derive(Clone)]
struct Verifier {
    jwks_url: String,
    issuer: String,
    audience: &'static str,
    flaw: Flaw,
    /// RFC 9068 access tokens: `typ` must be `at+jwt`.
    access_tokens: bool,
    /// Read the bare token from this header instead of `Authorization: Bearer`.
    header: Option<&'static str>,
    /// A header every request must carry (400 without it).
    required: Option<(&'static str, &'static str)>,
    /// Answer this to every request (a verifier that is broken outright).
    always: Option<StatusCode>,
    /// Never answer.
    hang: bool,
    http: reqwest::Client,
}

impl Verifier {
    fn new(app: &TestApp, flaw: Flaw) -> Self {
        Self {
            jwks_url: app.url("/.well-known/jwks.json"),
            issuer: app.config.issuer.clone(),
            audience: AUDIENCE,
            flaw,
            access_tokens: false,
            header: None,
            required: None,
            always: None,
            hang: false,
            http: reqwest::Client::new(),
        }
    }

    /// Serves it on 127.0.0.1 port 0; the URL of its protected route.
    async fn serve(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/protected", get(protected))
            .with_state(Arc::new(self));
        tokio::spawn(axum::serve(listener, router).into_future());
        format!("http://{addr}/protected")
    }

    fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        match self.header {
            Some(name) => headers.get(name)?.to_str().ok(),
            None => headers
                .get("authorization")?
                .to_str()
                .ok()?
                .strip_prefix("Bearer "),
        }
    }

    fn check(&self, token: &str, jwks: &Value) -> Result<(), String> {
        let header = decode_header(token).map_err(|e| e.to_string())?;
        // No extension is understood here, so every `crit` one is unknown
        // (RFC 7515 §4.1.11); jsonwebtoken leaves this to its caller.
        if header.crit.is_some() {
            return Err("crit".into());
        }
        if self.access_tokens && self.flaw != Flaw::NoTypCheck {
            let typ = header
                .typ
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if typ != "at+jwt" && typ != "application/at+jwt" {
                return Err(format!("typ {typ}"));
            }
        }
        if self.flaw == Flaw::NoSignatureCheck {
            let data = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
                .map_err(|e| e.to_string())?;
            return self.check_claims_by_hand(&data.claims);
        }
        if self.flaw == Flaw::Hs256PublicKey && header.alg == Algorithm::HS256 {
            let accepted = rsa_public_key_pems(jwks).iter().any(|pem| {
                let key = DecodingKey::from_secret(pem.as_bytes());
                decode::<Value>(token, &key, &self.validation(Algorithm::HS256)).is_ok()
            });
            return if accepted {
                Ok(())
            } else {
                Err("hs256".into())
            };
        }
        let kid = header.kid.ok_or("no kid")?;
        let jwk = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kid"] == kid.as_str())
            .ok_or("unknown kid")?;
        // The key's own algorithm, never the header's choice.
        if jwk["alg"] != serde_json::to_value(header.alg).unwrap() {
            return Err("alg is not the key's".into());
        }
        let jwk: Jwk = serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        decode::<Value>(token, &key, &self.validation(header.alg))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = 5;
        validation.validate_nbf = self.flaw != Flaw::NoTimeCheck;
        validation.validate_exp = self.flaw != Flaw::NoTimeCheck;
        validation.set_issuer(&[&self.issuer]);
        let mut required = vec!["iss"];
        if self.flaw == Flaw::NoAudienceCheck {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[self.audience]);
            required.push("aud");
        }
        if self.flaw != Flaw::NoExpRequired {
            required.push("exp");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// What `validation` checks, for the verifier that skips the signature.
    fn check_claims_by_hand(&self, claims: &Value) -> Result<(), String> {
        let now = now();
        let exp = claims["exp"].as_i64().ok_or("no exp")?;
        if exp < now - 5 || claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 5) {
            return Err("times".into());
        }
        if claims["iss"] != self.issuer.as_str() {
            return Err("iss".into());
        }
        let aud_ok = match &claims["aud"] {
            Value::String(aud) => aud == self.audience,
            Value::Array(auds) => auds.iter().any(|a| a == self.audience),
            _ => false,
        };
        if aud_ok { Ok(()) } else { Err("aud".into()) }
    }
}

async fn protected(State(verifier): State<Arc<Verifier>>, headers: HeaderMap) -> StatusCode {
    if verifier.hang {
        std::future::pending::<()>().await;
    }
    if let Some(status) = verifier.always {
        return status;
    }
    if let Some((name, value)) = verifier.required
        && headers.get(name).is_none_or(|v| v != value)
    {
        return StatusCode::BAD_REQUEST;
    }
    let Some(token) = verifier.token(&headers) else {
        return StatusCode::UNAUTHORIZED;
    };
    let jwks: Value = match verifier.http.get(&verifier.jwks_url).send().await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE,
    };
    match verifier.check(token, &jwks) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

/// The SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`, trailing
/// newline) of every RSA key in `jwks`, built from `n` and `e` alone.
fn rsa_public_key_pems(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kty"] == "RSA")
        .map(crate::helpers::rsa_public_pem)
        .collect()
}

/// Runs `jwks-server probe ARGS` with no `JWKS_*` variable of ours leaking in.
async fn probe(args: &[&str]) -> Output {
    probe_with_env(args, &[]).await
}

/// [`probe`] with `env` set.
async fn probe_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"))
        .arg("probe")
        .args(args)
        .env_clear()
        .envs(crate::helpers::passthrough_env())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the probe finishes within 60 s")
        .expect("the probe starts")
}

/// `probe --json`: its exit code and parsed output.
async fn probe_json(args: &[&str]) -> (i32, Value) {
    let out = probe(&[args, &["--json"]].concat()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "probe {args:?} printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), json)
}

/// The catalogue's names for `route`, in its order.
async fn catalogue(app: &TestApp, route: &str) -> Vec<String> {
    let body = app.get_json("/test-tokens").await;
    body["defects"]
        .as_array()
        .expect("GET /test-tokens lists defects")
        .iter()
        .filter(|d| {
            d["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == route)
        })
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The defects whose row failed, and asserts every row has the shape the
/// README promises and the counts add up.
fn failed_defects(report: &Value) -> BTreeSet<String> {
    let results = report["results"].as_array().unwrap();
    for row in results {
        let expected = if row["defect"] == "none" {
            "accepted"
        } else {
            "refused"
        };
        assert_eq!(row["expected"], expected, "{row}");
        assert!(row["status"].is_u64(), "{row}");
        assert!(
            row["verdict"] == "pass" || row["verdict"] == "FAIL",
            "{row}"
        );
    }
    let failed: BTreeSet<String> = results
        .iter()
        .filter(|r| r["verdict"] == "FAIL")
        .map(|r| r["defect"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(report["failed"], failed.len(), "{report}");
    assert_eq!(report["passed"], results.len() - failed.len(), "{report}");
    failed
}

fn names(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["defect"].as_str().unwrap().to_owned())
        .collect()
}

/// The flaw's defects among those `offered`.
fn expected_through(flaw: Flaw, offered: &[String]) -> BTreeSet<String> {
    offered
        .iter()
        .filter(|d| flaw.lets_through().contains(&d.as_str()))
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_catalogue_for_auth_has_every_defect_the_issue_names() {
    let app = spawn_app().await;
    let offered = catalogue(&app, "/auth").await;
    for name in auth_defects() {
        assert!(offered.iter().any(|d| d == name), "{name} in {offered:?}");
    }
}

#[tokio::test]
async fn a_correct_verifier_passes_every_row_and_the_probe_exits_0() {
    let app = spawn_app().await;
    let url = Verifier::new(&app, Flaw::None).serve().await;
    let offered = catalogue(&app, "/auth").await;

    let (code, report) = probe_json(&[&url, "--server", &app.http, "--audience", AUDIENCE]).await;

    assert_eq!(code, 0, "{report}");
    assert_eq!(failed_defects(&report), BTreeSet::new(), "{report}");
    let mut expected_rows = vec!["none".to_owned()];
    expected_rows.extend(offered);
    assert_eq!(names(&report), expected_rows);
    assert_eq!(report["results"][0]["status"], 200);
    for row in &report["results"].as_array().unwrap()[1..] {
        assert_eq!(row["status"], 401, "{row}");
    }
}

#[tokio::test]
async fn each_broken_verifier_is_flagged_for_exactly_the_defects_it_lets_through() {
    let app = spawn_app().await;
    let offered = catalogue(&app, "/auth").await;
    for flaw in [
        Flaw::NoSignatureCheck,
        Flaw::Hs256PublicKey,
        Flaw::NoAudienceCheck,
        Flaw::NoExpRequired,
        Flaw::NoTimeCheck,
    ] {
        let url = Verifier::new(&app, flaw).serve().await;

        let (code, report) =
            probe_json(&[&url, "--server", &app.http, "--audience", AUDIENCE]).await;

        let expected = expected_through(flaw, &offered);
        assert!(
            !expected.is_empty(),
            "{flaw:?}: the catalogue {offered:?} has its defect"
        );
        assert_eq!(code, 1, "{flaw:?}: {report}");
        assert_eq!(failed_defects(&report), expected, "{flaw:?}: {report}");
        for row in report["results"].as_array().unwrap() {
            let through = expected.contains(row["defect"].as_str().unwrap());
            let status = if through || row["defect"] == "none" {
                200
            } else {
                401
            };
            assert_eq!(row["status"], status, "{flaw:?}: {row}");
        }
    }
}

#[tokio::test]
async fn the_table_shows_each_row_and_says_why_a_row_failed() {
    let app = spawn_app().await;
    let url = Verifier::new(&app, Flaw::NoAudienceCheck).serve().await;
    let offered = catalogue(&app, "/auth").await;

    let out = probe(&[&url, "--server", &app.http, "--audience", AUDIENCE]).await;

    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    let columns = |line: &str| {
        line.split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(columns(lines[0]), "defect expected status verdict");
    assert_eq!(columns(lines[1]), "none accepted 200 pass");
    assert_eq!(lines.len(), offered.len() + 3, "{table}");
    for (defect, line) in offered.iter().zip(&lines[2..]) {
        if defect == "wrong-audience" {
            assert_eq!(columns(line), "wrong-audience refused 200 FAIL", "{table}");
            assert!(
                line.contains("accepted: a correct verifier refuses this token"),
                "{line}"
            );
        } else {
            assert_eq!(
                columns(line),
                format!("{defect} refused 401 pass"),
                "{table}"
            );
        }
    }
    assert_eq!(
        lines.last().unwrap(),
        &format!("{} passed, 1 failed", offered.len())
    );
}

#[tokio::test]
async fn access_tokens_from_the_token_endpoint_are_probed_with_their_typ() {
    let app = spawn_app().await;
    let offered = catalogue(&app, "/oauth2/token").await;
    assert!(offered.iter().any(|d| d == "wrong-typ"), "{offered:?}");
    let args = |url: &str| {
        vec![
            url.to_owned(),
            "--server".to_owned(),
            app.http.clone(),
            "--audience".to_owned(),
            AUDIENCE.to_owned(),
            "--token-endpoint".to_owned(),
            "--client-id".to_owned(),
            "probe test".to_owned(),
        ]
    };
    for flaw in [Flaw::None, Flaw::NoTypCheck, Flaw::NoExpRequired] {
        let mut verifier = Verifier::new(&app, flaw);
        verifier.access_tokens = true;
        let url = verifier.serve().await;
        let args = args(&url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();

        let (code, report) = probe_json(&args).await;

        let expected = expected_through(flaw, &offered);
        assert_eq!(code, i32::from(!expected.is_empty()), "{flaw:?}: {report}");
        assert_eq!(failed_defects(&report), expected, "{flaw:?}: {report}");
        let mut rows = vec!["none".to_owned()];
        rows.extend(offered.iter().cloned());
        assert_eq!(names(&report), rows);
    }
}

#[tokio::test]
async fn every_configured_algorithm_is_probed_with_alg() {
    let app = spawn_app_with(|c| {
        c.algorithms = jwks_server::config::bounds::algorithms("RS256,ES256,EdDSA").unwrap();
    })
    .await;
    let offered = catalogue(&app, "/auth").await;
    let correct = Verifier::new(&app, Flaw::None).serve().await;
    let unsigned = Verifier::new(&app, Flaw::NoSignatureCheck).serve().await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let (code, report) = probe_json(&[
            &correct,
            "--server",
            &app.http,
            "--audience",
            AUDIENCE,
            "--alg",
            alg,
        ])
        .await;
        assert_eq!(code, 0, "{alg}: {report}");
        assert_eq!(failed_defects(&report), BTreeSet::new(), "{alg}: {report}");
        assert_eq!(names(&report).len(), offered.len() + 1, "{alg}: {report}");

        let (code, report) = probe_json(&[
            &unsigned,
            "--server",
            &app.http,
            "--audience",
            AUDIENCE,
            "--alg",
            alg,
        ])
        .await;
        assert_eq!(code, 1, "{alg}: {report}");
        assert_eq!(
            failed_defects(&report),
            expected_through(Flaw::NoSignatureCheck, &offered),
            "{alg}: {report}"
        );
    }
}

#[tokio::test]
async fn defects_header_and_extra_headers_shape_what_is_sent() {
    let app = spawn_app().await;
    let mut verifier = Verifier::new(&app, Flaw::None);
    verifier.header = Some("x-token");
    verifier.required = Some(("x-tenant", "acme"));
    let url = verifier.serve().await;
    let base = [url.as_str(), "--server", &app.http, "--audience", AUDIENCE];

    let (code, report) = probe_json(
        &[
            &base[..],
            &[
                "--header",
                "X-Token",
                "--extra-header",
                "X-Tenant: acme",
                "--defects",
                "expired,bad-signature",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(names(&report), ["none", "expired", "bad-signature"]);

    // Without the header the service wants, it answers 400: neither an
    // acceptance nor a refusal, so every row fails.
    let (code, report) =
        probe_json(&[&base[..], &["--header", "X-Token", "--defects", "expired"]].concat()).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["results"][1]["status"], 400);
    assert!(
        report["results"][1]["note"]
            .as_str()
            .unwrap()
            .contains("neither accepted (2xx) nor refused (401/403)"),
        "{report}"
    );
}

#[tokio::test]
async fn a_service_that_fails_or_is_down_fails_the_probe_with_a_reason() {
    let app = spawn_app().await;
    let mut verifier = Verifier::new(&app, Flaw::None);
    verifier.always = Some(StatusCode::INTERNAL_SERVER_ERROR);
    let url = verifier.serve().await;

    let out = probe(&[&url, "--server", &app.http, "--defects", "expired"]).await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("server error 500"), "{table}");
    assert!(table.ends_with("0 passed, 2 failed\n"), "{table}");

    // A port nothing listens on (bound, then released).
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (code, report) = probe_json(&[
        &format!("http://{closed}/protected"),
        "--server",
        &app.http,
        "--defects",
        "expired",
    ])
    .await;
    assert_eq!(code, 1, "{report}");
    let row = &report["results"][0];
    assert_eq!(row["status"], Value::Null, "{row}");
    assert_eq!(row["verdict"], "FAIL");
    assert!(
        row["error"].as_str().unwrap().contains("cannot connect"),
        "{row}"
    );
}

#[tokio::test]
async fn a_service_that_never_answers_fails_each_row_after_timeout() {
    let app = spawn_app().await;
    let mut verifier = Verifier::new(&app, Flaw::None);
    verifier.hang = true;
    let url = verifier.serve().await;

    let (code, report) = probe_json(&[
        &url,
        "--server",
        &app.http,
        "--defects",
        "expired",
        "--timeout",
        "1s",
    ])
    .await;

    assert_eq!(code, 1, "{report}");
    for row in report["results"].as_array().unwrap() {
        assert_eq!(row["verdict"], "FAIL", "{row}");
        assert!(
            row["error"].as_str().unwrap().starts_with("timed out"),
            "{row}"
        );
    }
}

/// A jwks-server from before the catalogue: no `/test-tokens`, and
/// `expired=true` its one test token (here passed through to a real server).
async fn serve_old_server(app: &TestApp) -> String {
    use axum::{extract::RawQuery, routing::post};
    let real = app.url("/auth");
    let router = Router::new().route(
        "/auth",
        post(move |RawQuery(query): RawQuery, body: String| async move {
            let url = match query {
                Some(q) => format!("{real}?{q}"),
                None => real,
            };
            let answer = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (
                StatusCode::from_u16(answer.status().as_u16()).unwrap(),
                [("content-type", "application/json")],
                answer.text().await.unwrap(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router).into_future());
    format!("http://{addr}")
}

#[tokio::test]
async fn a_server_without_the_catalogue_is_probed_with_expired_alone() {
    let app = spawn_app().await;
    let old = serve_old_server(&app).await;
    let url = Verifier::new(&app, Flaw::None).serve().await;

    let out = probe(&[&url, "--server", &old, "--audience", AUDIENCE, "--json"]).await;

    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(names(&report), ["none", "expired"]);
    assert_eq!(failed_defects(&report), BTreeSet::new());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no GET /test-tokens"), "{stderr}");
}

#[tokio::test]
async fn a_rate_limited_server_is_asked_again_after_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 20;
        c.rate_burst = Some(4);
    })
    .await;
    let url = Verifier::new(&app, Flaw::None).serve().await;
    let offered = catalogue(&app, "/auth").await;
    assert!(offered.len() + 1 > 4, "more tokens than the burst");

    let (code, report) = probe_json(&[&url, "--server", &app.http, "--audience", AUDIENCE]).await;

    assert_eq!(code, 0, "{report}");
    assert_eq!(names(&report).len(), offered.len() + 1);
    assert_eq!(failed_defects(&report), BTreeSet::new());
}

/// Runs the openssl CLI (the test's TLS tooling) in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("this test needs the openssl command-line tool");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

#[tokio::test]
async fn https_services_are_probed_with_the_ca_given() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let app = spawn_app().await;
    // A CA, and a certificate it signs for 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |line: String| {
        openssl(dir.path(), &line.split_whitespace().collect::<Vec<_>>());
    };
    run(format!(
        "req -x509 {key} -keyout ca.key -out ca.pem -subj /CN=probe-test-ca -days 1"
    ));
    run(format!(
        "req {key} -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(
        dir.path().join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem \
         -days 1 -extfile leaf.ext"
            .to_owned(),
    );
    // `openssl s_server -www` answers every GET with 200: a service that
    // accepts anything, over TLS.
    let mut server = tokio::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-cert",
            "leaf.pem",
            "-key",
            "leaf.key",
        ])
        .args(["-www"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("ACCEPT ") {
                return addr.rsplit(':').next().unwrap().to_owned();
            }
        }
        panic!("openssl s_server exited before listening");
    })
    .await
    .expect("openssl s_server listens within 10 s");
    // Keep reading what it prints, so its pipe never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("https://127.0.0.1:{port}/protected");
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let base = [url.as_str(), "--server", &app.http, "--defects", "alg-none"];

    let (code, report) = probe_json(&[&base[..], &["--ca-cert", ca]].concat()).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["results"][0]["status"], 200, "{report}");
    assert_eq!(report["results"][1]["status"], 200, "{report}");
    assert_eq!(
        failed_defects(&report),
        BTreeSet::from(["alg-none".to_owned()])
    );

    // Without the CA the certificate is not trusted: no answer, every row fails.
    let (code, report) = probe_json(&base).await;
    assert_eq!(code, 1, "{report}");
    let error = report["results"][0]["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{report}");

    // A machine without system CA certificates (rustls-native-certs reads
    // these two variables): --ca-cert still works, and http URLs work with a
    // note that https ones need it.
    let empty = tempfile::tempdir().unwrap();
    let none = empty.path().join("none.pem");
    let no_roots = [
        ("SSL_CERT_FILE", none.to_str().unwrap()),
        ("SSL_CERT_DIR", empty.path().to_str().unwrap()),
    ];
    let out = probe_with_env(
        &[&base[..], &["--ca-cert", ca, "--json"]].concat(),
        &no_roots,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let plain = Verifier::new(&app, Flaw::None).serve().await;
    let out = probe_with_env(
        &[
            &plain,
            "--server",
            &app.http,
            "--defects",
            "alg-none",
            "--audience",
            AUDIENCE,
        ],
        &no_roots,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("https URLs will fail"), "{stderr}");
    assert!(stderr.contains("--ca-cert"), "{stderr}");
    drop(server);
}

#[tokio::test]
async fn usage_errors_exit_2_with_a_message_and_no_results() {
    let app = spawn_app().await;
    let off = spawn_app_with(|c| c.expired_tokens = Some(false)).await;
    let url = Verifier::new(&app, Flaw::None).serve().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for (args, message) in [
        (
            vec![url.as_str(), "--server", closed.as_str()],
            "cannot connect",
        ),
        (
            vec![
                url.as_str(),
                "--server",
                &app.http,
                "--defects",
                "expired,nonsense",
            ],
            "unknown defect \"nonsense\"",
        ),
        (
            vec![
                url.as_str(),
                "--server",
                &app.http,
                "--extra-header",
                "no colon",
            ],
            "--extra-header",
        ),
        (
            vec!["ftp://example.test/", "--server", &app.http],
            "neither http nor https",
        ),
        (
            vec![
                url.as_str(),
                "--server",
                &app.http,
                "--ca-cert",
                "/nonexistent.pem",
            ],
            "--ca-cert /nonexistent.pem",
        ),
        (vec![url.as_str(), "--server", &off.http], "switched off"),
        (
            vec![url.as_str(), "--server", &app.http, "--alg", "HS512"],
            "HS512",
        ),
        (
            vec![url.as_str(), "--server", &app.http, "--alg", "ES256"],
            "ES256",
        ),
        (vec![], "URL"),
    ] {
        let out = probe(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn a_registered_clients_secret_is_sent_with_basic_but_never_printed() {
    let app = crate::oauth::spawn_app_with_clients(|c| c.test_tokens = Some(true)).await;
    let mut verifier = Verifier::new(&app, Flaw::None);
    verifier.access_tokens = true;
    verifier.audience = "https://api.example/";
    let url = verifier.serve().await;
    let offered = catalogue(&app, "/oauth2/token").await;
    let run = |secret: &'static str, json: bool| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"))
            .args(["probe", &url, "--server", &app.http, "--token-endpoint"])
            .args(["--client-id", "svc", "--audience", "https://api.example/"])
            .args(json.then_some("--json"))
            .env_clear()
            .env("JWKS_PROBE_CLIENT_SECRET", secret)
            .output()
    };
    for json in [false, true] {
        let out = run(crate::oauth::ODD_SECRET, json).await.unwrap();
        let all = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
        assert_eq!(out.status.code(), Some(0), "{all}");
        assert!(!all.contains(crate::oauth::ODD_SECRET), "{all}");
        let summary = if json {
            format!("\"passed\":{}", offered.len() + 1)
        } else {
            format!("{} passed, 0 failed", offered.len() + 1)
        };
        assert!(all.contains(&summary), "{all}");
    }

    let out = run("not-the-secret", false).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
    assert!(out.stdout.is_empty());
}
