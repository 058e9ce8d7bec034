//! Keys held in a PKCS#11 token, with SoftHSM2 as the module: each test
//! initialises its own token in a temporary directory (`SOFTHSM2_CONF`) and
//! runs the real binary as a child process against it (a process loads a
//! PKCS#11 module once, with one configuration, so servers cannot share the
//! test's). Tokens are verified by `jsonwebtoken` against the JWKS fetched
//! over the wire; the token's objects are listed with `pkcs11-tool` (OpenSC)
//! and the store read with sqlx, as an operator would inspect them.
//!
//! They need `softhsm2` and `opensc` (Debian packages; `.ci/run` installs
//! them): without them they fail, saying so, rather than pass unrun.

use std::{
    collections::{BTreeSet, HashSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jwks_server::proto::{IssueTokenRequest, key_service_client::KeyServiceClient};
use serde_json::Value;
use sqlx::{Connection, Row};
use tempfile::TempDir;
use tonic::Code;

use crate::{
    algorithms::verify_any,
    helpers::{ServerProcess, TEST_KEK, header, kids},
    replicas::{TestDatabase, assert_one_key_per_slot},
};

/// Debian's SoftHSM2 module.
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "jwks-test";
const PIN: &str = "1234-user";
const SO_PIN: &str = "5678-so";
const ALL: &str = "RS256,PS256,ES256,EdDSA";

/// Fast lifecycle settings (rotations every second), as the replica tests use.
const FAST: &[(&str, &str)] = &[
    ("JWKS_TOKEN_TTL", "2s"),
    ("JWKS_ROTATE_EVERY", "1s"),
    ("JWKS_JWKS_MAX_AGE", "1s"),
    ("JWKS_RELOAD_EVERY", "1s"),
    ("JWKS_CLOCK_SKEW", "1s"),
];

/// A SoftHSM2 token of its own in a temporary directory, and a SQLite store
/// beside it.
struct SoftHsm {
    dir: TempDir,
    conf: PathBuf,
    pin_file: PathBuf,
}

/// One object in the token, as `pkcs11-tool --list-objects` shows it.
#[derive(Debug)]
struct TokenObject {
    /// `Private Key Object; RSA` and the like.
    kind: String,
    label: String,
    /// `CKA_ID`, hex.
    id: String,
    /// `Access:` flags, e.g. `sensitive, always sensitive, never extractable, local`.
    access: String,
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?}: {e}; these tests need softhsm2 and opensc \
             (apt-get install softhsm2 opensc; .ci/run installs them)",
            command.get_program()
        )
    })
}

impl SoftHsm {
    /// A fresh token labelled [`LABEL`] with user PIN [`PIN`].
    fn new() -> Self {
        Self::with_conf("")
    }

    /// [`Self::new`], with more lines in `softhsm2.conf` (e.g. the
    /// mechanisms the module offers).
    fn with_conf(extra: &str) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: these tests need softhsm2 (apt-get install softhsm2; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n{extra}\n",
                tokens.display()
            ),
        )
        .unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        let hsm = Self {
            dir,
            conf,
            pin_file,
        };
        let output = run(hsm.command("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            LABEL,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ]));
        assert!(output.status.success(), "softhsm2-util: {output:?}");
        hsm
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SOFTHSM2_CONF", &self.conf);
        command
    }

    fn tokens_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("jwks.db")
    }

    fn store_url(&self) -> String {
        format!("sqlite://{}", self.store_path().display())
    }

    /// The settings that put new keys in this token.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.conf.display().to_string()),
            ("JWKS_PKCS11_MODULE".into(), MODULE.into()),
            ("JWKS_PKCS11_TOKEN_LABEL".into(), LABEL.into()),
            (
                "JWKS_PKCS11_PIN_FILE".into(),
                self.pin_file.display().to_string(),
            ),
        ]
    }

    /// A server on this token and, unless `extra` names another, the
    /// SQLite store beside it.
    async fn server(&self, extra: &[(&str, &str)]) -> ServerProcess {
        let mut env = self.env();
        env.push(("JWKS_STORE".into(), self.store_url()));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ServerProcess::spawn(&refs).await
    }

    /// The binary run to completion with `args` and `env` on top of this
    /// token's settings (`with_token` false: without them).
    fn binary(&self, args: &[&str], env: &[(&str, &str)], with_token: bool) -> Output {
        // Bounded: a server that starts when it should not must fail the
        // test, not hang it.
        let mut command = Command::new("timeout");
        command
            .args(["60", env!("CARGO_BIN_EXE_jwks-server")])
            .args(args)
            .env_clear()
            .envs(crate::helpers::passthrough_env())
            .env("JWKS_KEK", TEST_KEK)
            .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
            .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
            .env("JWKS_STORE", self.store_url());
        if with_token {
            command.envs(self.env());
        }
        command.envs(env.iter().copied());
        run(&mut command)
    }

    /// Every object in the token, as the user sees them after logging in.
    fn objects(&self) -> Vec<TokenObject> {
        let output = run(self.command("pkcs11-tool").args([
            "--module",
            MODULE,
            "--token-label",
            LABEL,
            "--login",
            "--pin",
            PIN,
            "--list-objects",
        ]));
        assert!(output.status.success(), "pkcs11-tool: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut objects: Vec<TokenObject> = Vec::new();
        for line in text.lines() {
            if line.contains("Key Object") {
                objects.push(TokenObject {
                    kind: line.trim().to_owned(),
                    label: String::new(),
                    id: String::new(),
                    access: String::new(),
                });
            } else if let (Some(object), Some((name, value))) =
                (objects.last_mut(), line.trim().split_once(':'))
            {
                let value = value.trim().to_owned();
                match name {
                    "label" => object.label = value,
                    "ID" => object.id = value,
                    "Access" => object.access = value,
                    _ => {}
                }
            }
        }
        objects
    }

    /// The `CKA_ID`s (hex) of the private keys in the token.
    fn private_ids(&self) -> BTreeSet<String> {
        self.objects()
            .into_iter()
            .filter(|o| o.kind.starts_with("Private Key Object"))
            .map(|o| o.id)
            .collect()
    }
}

/// The thumbprint bytes a kid encodes, as hex (`CKA_ID` as `pkcs11-tool` shows it).
fn id_of(kid: &str) -> String {
    B64.decode(kid)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stored rows: kid, backend, token, and whether any sealing column holds a value.
async fn dump_store(path: &Path) -> Vec<(String, String, Option<String>, bool)> {
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT kid, backend, token, kek_id IS NOT NULL OR nonce IS NOT NULL \
         OR sealed_key IS NOT NULL AS sealed FROM signing_keys",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    rows.iter()
        .map(|row| {
            (
                row.get::<String, _>("kid"),
                row.get::<String, _>("backend"),
                row.get::<Option<String>, _>("token"),
                row.get::<bool, _>("sealed"),
            )
        })
        .collect()
}

async fn jwks(server: &ServerProcess) -> Value {
    let response = reqwest::get(format!("{}/.well-known/jwks.json", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn rest_token(server: &ServerProcess, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/auth{query}", server.http))
        .send()
        .await
        .unwrap()
}

async fn grpc_token(server: &ServerProcess, alg: &str) -> Result<String, tonic::Status> {
    KeyServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
        .issue_token(IssueTokenRequest {
            alg: Some(alg.to_owned()),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().token)
}

/// Stops `server` as an operator would (SIGTERM) and waits for it to exit,
/// so nothing it was writing (a key in the token, a row) is cut in half.
async fn stop(server: ServerProcess) {
    let pid = server.child.id().unwrap().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let (status, log) = server.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}: {log}");
}

async fn health(server: &ServerProcess) -> Value {
    reqwest::get(format!("{}/health", server.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn keys_in_the_token_sign_tokens_that_verify_against_the_jwks_through_both_doors() {
    let hsm = SoftHsm::new();
    let server = hsm.server(&[("JWKS_ALGORITHMS", ALL)]).await;
    let published = jwks(&server).await;
    assert_eq!(kids(&published).len(), 4, "one published key per algorithm");

    for alg in ALL.split(',') {
        let response = rest_token(&server, &format!("?alg={alg}")).await;
        assert_eq!(response.status(), 200, "POST /auth?alg={alg}");
        let by_rest = response.text().await.unwrap();
        let by_grpc = grpc_token(&server, alg).await.unwrap();
        for token in [&by_rest, &by_grpc] {
            assert_eq!(header(token)["alg"], alg);
            let verified = verify_any(token, &published);
            assert!(verified.is_ok(), "{alg}: {verified:?}");
        }
    }
    // The expired key of each algorithm was made in the token too.
    let expired = rest_token(&server, "?expired=true&alg=ES256").await;
    assert_eq!(expired.status(), 200);
    let kid = header(&expired.text().await.unwrap())["kid"].clone();
    assert!(!kids(&published).contains(&kid.as_str().unwrap().to_owned()));
    assert!(hsm.private_ids().contains(&id_of(kid.as_str().unwrap())));

    // The catalogue works with token-held keys too: every defect applies, and
    // the algorithm-confusion token is keyed with the PEM of the token's
    // RSA key, built from its published members.
    for defect in ["hs256-public-key", "no-kid", "bad-signature"] {
        let response = rest_token(&server, &format!("?alg=RS256&defect={defect}")).await;
        assert_eq!(response.status(), 200, "defect={defect}");
        let token = response.text().await.unwrap();
        assert!(
            verify_any(&token, &published).is_err(),
            "{defect} must not verify"
        );
        if defect == "hs256-public-key" {
            assert_eq!(header(&token)["alg"], "HS256");
            assert!(kids(&published).contains(&header(&token)["kid"].as_str().unwrap().to_owned()));
        }
    }
}

#[tokio::test]
async fn the_store_holds_no_private_key_and_the_token_holds_them_sensitive_and_unextractable() {
    let hsm = SoftHsm::new();
    let server = hsm.server(&[("JWKS_ALGORITHMS", "RS256,ES256")]).await;
    let published = kids(&jwks(&server).await);
    stop(server).await;

    let rows = dump_store(&hsm.store_path()).await;
    assert_eq!(rows.len(), 4, "an active and an expired key per algorithm");
    for (kid, backend, token, sealed) in &rows {
        assert_eq!(backend, "pkcs11", "{kid}");
        assert!(
            token.as_deref().is_some_and(|t| t.starts_with(LABEL)),
            "{kid} names its token: {token:?}"
        );
        assert!(!sealed, "{kid}: no sealed private key in the store");
    }

    let objects = hsm.objects();
    for (kid, ..) in &rows {
        let mine: Vec<&TokenObject> = objects.iter().filter(|o| o.label == *kid).collect();
        assert_eq!(mine.len(), 2, "{kid}: a private and a public object");
        for object in &mine {
            assert_eq!(object.id, id_of(kid), "{kid}: CKA_ID is the thumbprint");
        }
        let private = mine
            .iter()
            .find(|o| o.kind.starts_with("Private Key Object"))
            .unwrap();
        let flags: Vec<&str> = private.access.split(", ").collect();
        assert!(flags.contains(&"sensitive"), "{kid}: {private:?}");
        assert!(flags.contains(&"never extractable"), "{kid}: {private:?}");
        assert!(!flags.contains(&"extractable"), "{kid}: {private:?}");
    }
    for kid in &published {
        assert!(rows.iter().any(|(stored, ..)| stored == kid));
    }
}

#[tokio::test]
async fn keys_list_shows_the_token_and_keys_rotate_creates_the_new_key_in_it() {
    let hsm = SoftHsm::new();
    let server = hsm.server(&[("JWKS_ALGORITHMS", "ES256")]).await;
    stop(server).await;
    let before = hsm.private_ids();

    let rotate = hsm.binary(&["keys", "rotate"], &[("JWKS_ALGORITHMS", "ES256")], true);
    assert!(rotate.status.success(), "{rotate:?}");
    let said = String::from_utf8_lossy(&rotate.stdout).to_string();
    let created: Vec<&str> = said
        .lines()
        .filter_map(|l| l.strip_prefix("created ES256 "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(created.len(), 1, "{said}");
    let after = hsm.private_ids();
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.contains(&id_of(created[0])));

    let list = hsm.binary(&["keys", "list"], &[], false);
    assert!(list.status.success(), "{list:?}");
    let table = String::from_utf8_lossy(&list.stdout);
    let row = table.lines().find(|l| l.starts_with(created[0])).unwrap();
    assert!(row.contains("pkcs11: in token jwks-test"), "{table}");

    // Removing a key from the store destroys it in the token too.
    let expired = table
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("expired"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert!(hsm.private_ids().contains(&id_of(expired)));
    let remove = hsm.binary(&["keys", "remove", expired], &[], true);
    assert!(remove.status.success(), "{remove:?}");
    assert!(
        String::from_utf8_lossy(&remove.stdout).contains("destroyed its 2 object(s)"),
        "{remove:?}"
    );
    assert!(!hsm.private_ids().contains(&id_of(expired)));
    assert_eq!(hsm.private_ids().len(), after.len() - 1);
}

#[tokio::test]
async fn pruned_keys_are_destroyed_in_the_token() {
    let hsm = SoftHsm::new();
    let mut settings = FAST.to_vec();
    settings.extend([("JWKS_ALGORITHMS", "ES256"), ("JWKS_KEEP_EXPIRED", "1")]);
    let server = hsm.server(&settings).await;
    server
        .wait_for_log(
            "destroyed key in the PKCS#11 token",
            Duration::from_secs(60),
        )
        .await;
    let jwks_before_stop = jwks(&server).await;
    stop(server).await;

    let stored: BTreeSet<String> = dump_store(&hsm.store_path())
        .await
        .into_iter()
        .map(|(kid, ..)| id_of(&kid))
        .collect();
    // A key created after the last look at the store may still be on its way
    // in; every object has a row, and every row its object.
    let in_token = hsm.private_ids();
    assert_eq!(
        in_token, stored,
        "no orphan and no missing key in the token"
    );
    for kid in kids(&jwks_before_stop) {
        assert!(in_token.contains(&id_of(&kid)) || !stored.contains(&id_of(&kid)));
    }
}

#[tokio::test]
async fn a_wrong_pin_a_missing_module_or_an_unknown_token_stop_the_start_and_create_nothing() {
    let hsm = SoftHsm::new();
    let wrong_pin = hsm.dir.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "0000\n").unwrap();
    let wrong_pin = wrong_pin.display().to_string();
    let cases: [(&str, &str, &str); 3] = [
        (
            "JWKS_PKCS11_PIN_FILE",
            wrong_pin.as_str(),
            "CKR_PIN_INCORRECT",
        ),
        (
            "JWKS_PKCS11_MODULE",
            "/usr/lib/no-such-pkcs11.so",
            "cannot load the PKCS#11 module",
        ),
        (
            "JWKS_PKCS11_TOKEN_LABEL",
            "no-such-token",
            "no token labelled",
        ),
    ];
    for (name, value, expected) in cases {
        let output = hsm.binary(&[], &[(name, value)], true);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value} started: {stderr}");
        assert!(stderr.contains(expected), "{name}={value}: {stderr}");
        assert!(!stderr.contains(PIN), "the PIN is never shown");
        assert!(
            !hsm.store_path().exists(),
            "{name}={value}: a store was created"
        );
        assert!(
            hsm.objects().is_empty(),
            "{name}={value}: keys were created"
        );
    }
}

#[tokio::test]
async fn a_configured_algorithm_the_module_lacks_is_a_startup_error_naming_it() {
    // A module that offers RSA and P-256 but not Ed25519.
    let hsm = SoftHsm::with_conf(
        "slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_SHA256_RSA_PKCS,CKM_EC_KEY_PAIR_GEN,CKM_ECDSA",
    );
    let output = hsm.binary(&[], &[("JWKS_ALGORITHMS", "RS256,EdDSA")], true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not support EdDSA (it lacks mechanism CKM_EDDSA)"),
        "{stderr}"
    );
    assert!(!hsm.store_path().exists());
    assert!(hsm.objects().is_empty());

    // What it has is enough for what it is asked.
    let server = hsm.server(&[("JWKS_ALGORITHMS", "RS256,ES256")]).await;
    assert_eq!(rest_token(&server, "?alg=ES256").await.status(), 200);
}

#[tokio::test]
async fn a_slot_that_holds_no_token_stops_the_start_and_creates_nothing() {
    let hsm = SoftHsm::new();
    let mut env = hsm.env();
    env.retain(|(name, _)| name != "JWKS_PKCS11_TOKEN_LABEL");
    env.push(("JWKS_PKCS11_SLOT".into(), "4242".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = hsm.binary(&[], &env, false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("in slot 4242"), "{stderr}");
    assert!(!hsm.store_path().exists());
}

#[tokio::test]
async fn while_the_token_is_away_token_requests_get_503_with_retry_after_and_the_jwks_stays() {
    let hsm = SoftHsm::new();
    let server = hsm
        .server(&[("JWKS_ALGORITHMS", "ES256"), ("JWKS_RELOAD_EVERY", "1s")])
        .await;
    assert_eq!(rest_token(&server, "").await.status(), 200);
    let published = jwks(&server).await;

    let away = hsm.dir.path().join("tokens.away");
    std::fs::rename(hsm.tokens_dir(), &away).unwrap();

    let refused = rest_token(&server, "").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert!(body["detail"].as_str().unwrap().contains("token"), "{body}");

    let status = grpc_token(&server, "ES256").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.metadata().contains_key("retry-after"));

    assert_eq!(
        jwks(&server).await,
        published,
        "the JWKS keeps being served"
    );
    let report = health(&server).await;
    assert_eq!(report["status"], "degraded", "{report}");
    assert!(
        report["faults"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "token_unavailable"),
        "{report}"
    );

    std::fs::rename(&away, hsm.tokens_dir()).unwrap();
    // The refresher reconnects within a reload interval or two.
    server
        .wait_for_log("PKCS#11 token is back", Duration::from_secs(30))
        .await;
    let response = rest_token(&server, "").await;
    assert_eq!(response.status(), 200);
    let token = response.text().await.unwrap();
    assert!(verify_any(&token, &jwks(&server).await).is_ok());
    assert!(grpc_token(&server, "ES256").await.is_ok());
    assert_eq!(health(&server).await["status"], "ok");
}

#[tokio::test]
async fn a_software_store_switched_to_the_token_keeps_its_keys_and_switching_back_is_refused() {
    let hsm = SoftHsm::new();
    let store = hsm.store_url();
    let software = ServerProcess::spawn(&[("JWKS_STORE", &store)]).await;
    let old_token = rest_token(&software, "").await.text().await.unwrap();
    let old_kids = kids(&jwks(&software).await);
    stop(software).await;

    let switched = hsm.server(&[]).await;
    let published = jwks(&switched).await;
    assert_eq!(kids(&published), old_kids, "software keys stay published");
    assert!(verify_any(&old_token, &published).is_ok());
    let signed = rest_token(&switched, "").await.text().await.unwrap();
    assert_eq!(
        header(&signed)["kid"],
        old_kids[0],
        "and keep signing until they retire"
    );
    stop(switched).await;

    let rotate = hsm.binary(&["keys", "rotate"], &[], true);
    assert!(rotate.status.success(), "{rotate:?}");
    let rows = dump_store(&hsm.store_path()).await;
    let backends: HashSet<&str> = rows.iter().map(|(_, b, ..)| b.as_str()).collect();
    assert_eq!(backends, HashSet::from(["software", "pkcs11"]));
    let new_kid = rows
        .iter()
        .find(|(_, b, ..)| b == "pkcs11")
        .map(|(kid, ..)| kid.clone())
        .unwrap();
    assert!(hsm.private_ids().contains(&id_of(&new_kid)));

    let back = hsm.binary(&[], &[], false);
    let stderr = String::from_utf8_lossy(&back.stderr);
    assert!(
        !back.status.success(),
        "started without the token: {stderr}"
    );
    assert!(stderr.contains(&new_kid), "{stderr}");
    assert!(
        stderr.contains("switching back to software keys is refused"),
        "{stderr}"
    );
}

#[tokio::test]
async fn replicas_sharing_one_token_and_postgres_fill_each_slot_once_and_leave_no_orphans() {
    let hsm = SoftHsm::new();
    let db = TestDatabase::create().await;
    let mut settings = FAST.to_vec();
    settings.extend([
        ("JWKS_ALGORITHMS", "ES256"),
        ("JWKS_KEEP_EXPIRED", "1000"),
        ("JWKS_STORE", db.url.as_str()),
    ]);
    let mut env: Vec<(String, String)> = hsm.env();
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (a, b) = tokio::join!(ServerProcess::spawn(&env), ServerProcess::spawn(&env));
    db.generation_above(3, Duration::from_secs(60)).await;

    let response = rest_token(&a, "").await;
    let status = response.status();
    let token = response.text().await.unwrap();
    assert_eq!(status, 200, "{token}\n{}", a.log_text());
    assert!(verify_any(&token, &jwks(&b).await).is_ok());
    let token = grpc_token(&b, "ES256")
        .await
        .unwrap_or_else(|status| panic!("{status:?}\n{}", b.log_text()));
    assert!(verify_any(&token, &jwks(&a).await).is_ok());
    tokio::join!(stop(a), stop(b));

    let keys = db.keys().await;
    assert_one_key_per_slot(&keys);
    let stored: BTreeSet<String> = keys.iter().map(|k| id_of(&k.meta.kid)).collect();
    assert_eq!(
        hsm.private_ids(),
        stored,
        "every key in the token has its row: keys that lost a slot were destroyed"
    );
}
