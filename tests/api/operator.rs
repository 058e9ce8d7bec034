//! What operators do to a server and its store: settings at their limits,
//! KEK files, `keys …` commands against a mistyped path, a damaged row, and
//! the SQLite journal mode.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use jwks_server::{
    config::Config,
    startup::Application,
    store::{KeyStore, SqlStore},
};
use serde_json::Value;

use crate::helpers::{ServerProcess, TEST_KEK, kids, now, spawn_app_with, start, test_config};

const OTHER_KEK: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// The built binary in a clean environment, run from `cwd` so nothing it might
/// create lands in the repository.
fn binary(cwd: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"));
    command
        .env_clear()
        .envs(crate::helpers::passthrough_env())
        .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
        .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the binary to its end (at most 60 s).
async fn run(command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command ends")
        .expect("the command runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

// ---- 11: every setting has bounds -------------------------------------------

#[tokio::test]
async fn every_bounded_setting_refuses_an_out_of_range_value_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(&dir.path().join("jwks.db"));
    for (flag, value) in [
        ("--token-ttl", "18446744073709551615"),
        ("--token-ttl", "0s"),
        ("--rotate-every", "10000y"),
        ("--rotate-every", "0s"),
        ("--jwks-max-age", "100y"),
        ("--reload-every", "0s"),
        ("--reload-every", "30d"),
        ("--clock-skew", "100y"),
        ("--publish-ahead", "100y"),
        ("--retain-after", "100y"),
        ("--keep-expired", "0"),
        ("--keep-expired", "1000000"),
        ("--rate-limit", "4294967295"),
        ("--rate-burst", "0"),
        ("--rate-burst", "4294967295"),
        ("--request-timeout", "0s"),
        ("--request-timeout", "100y"),
        ("--drain-timeout", "100y"),
        ("--max-connections", "0"),
        ("--max-streams-per-connection", "0"),
        ("--max-streams-per-connection", "1000000"),
        ("--idle-timeout", "0s"),
        ("--idle-timeout", "100y"),
        ("--keepalive-interval", "0s"),
        ("--keepalive-timeout", "100y"),
    ] {
        // `keys list` ends by itself should a value be accepted.
        let output = run(binary(dir.path())
            .args([flag, value, "--store", &store, "keys", "list"])
            .env("JWKS_KEK", TEST_KEK))
        .await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(flag) && first.contains("between"),
            "{flag} {value}: the first line names the flag and the allowed range: {stderr}"
        );
    }
}

#[tokio::test]
async fn settings_that_break_a_rule_are_one_error_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(&dir.path().join("jwks.db"));
    for args in [["--publish-ahead", "1s"], ["--retain-after", "1s"]] {
        let output = run(binary(dir.path())
            .args(args)
            .args(["--store", &store])
            .env("JWKS_KEK", TEST_KEK))
        .await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr}");
        assert!(
            lines[0].starts_with("error: rule broken") && lines[0].contains(args[0]),
            "{args:?}: {stderr}"
        );
    }
    assert!(files_in(dir.path()).is_empty(), "nothing was created");
}

#[tokio::test]
async fn keys_list_prints_a_store_made_with_the_largest_allowed_settings() {
    let largest = [
        ("JWKS_TOKEN_TTL", "365d"),
        ("JWKS_ROTATE_EVERY", "3650d"),
        ("JWKS_JWKS_MAX_AGE", "30d"),
        ("JWKS_RELOAD_EVERY", "1d"),
        ("JWKS_CLOCK_SKEW", "1d"),
        ("JWKS_PUBLISH_AHEAD", "3650d"),
        ("JWKS_RETAIN_AFTER", "3650d"),
        ("JWKS_KEEP_EXPIRED", "10000"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(&dir.path().join("jwks.db"));
    let mut env = largest.to_vec();
    env.push(("JWKS_STORE", &store));
    // The server accepts them, makes its keys, and serves.
    let server = ServerProcess::spawn(&env).await;
    let health = reqwest::get(format!("{}/health", server.http))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let output = run(binary(dir.path())
        .args(["keys", "rotate"])
        .envs(env.iter().copied())
        .env("JWKS_KEK", TEST_KEK))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));

    let output = run(binary(dir.path())
        .args(["keys", "list"])
        .envs(env.iter().copied())
        .env("JWKS_KEK", TEST_KEK))
    .await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.lines().count() >= 4,
        "a header and at least three keys: {stdout}"
    );
    assert!(stdout.contains("pending"), "{stdout}");
}

// ---- 12: KEK handling --------------------------------------------------------

fn default_kek_path(store: &Path) -> PathBuf {
    PathBuf::from(format!("{}.kek", store.display()))
}

#[tokio::test]
async fn a_store_with_keys_but_no_kek_file_is_refused_naming_the_kek_and_gets_no_new_one() {
    let app = spawn_app_with(|c| c.kek = Vec::new()).await;
    let store_path = app.store_path();
    let (config, dir) = app.stop().await;
    let kek_path = default_kek_path(&store_path);
    std::fs::remove_file(&kek_path).unwrap();
    let sealed_by = {
        let store = SqlStore::connect(config.store.connection_string())
            .await
            .unwrap();
        let keys = store.load().await.unwrap();
        store.close().await;
        keys[0].sealed.kek_id.clone()
    };

    let err = Application::build(config)
        .await
        .err()
        .expect("refuses to start")
        .to_string();
    assert!(err.contains(&sealed_by), "names the KEK id: {err}");
    assert!(
        err.contains(&kek_path.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("JWKS_KEK"), "says how to supply it: {err}");
    assert!(!kek_path.exists(), "no useless KEK was written");
    drop(dir);
}

#[tokio::test]
async fn a_kek_file_others_can_read_gets_a_warning_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let kek_file = dir.path().join("kek");
    std::fs::write(&kek_file, format!("{OTHER_KEK}\n")).unwrap();
    std::fs::set_permissions(&kek_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = sqlite_url(&dir.path().join("jwks.db"));
    let server = ServerProcess::spawn(&[
        ("JWKS_STORE", &store),
        ("JWKS_KEK_FILE", kek_file.to_str().unwrap()),
    ])
    .await;
    let log = server.log_text();
    let warning = log
        .lines()
        .find(|line| line.contains("readable by"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    let event: Value = serde_json::from_str(warning).unwrap();
    assert_eq!(event["level"], "WARN", "{warning}");
    assert!(warning.contains(kek_file.to_str().unwrap()), "{warning}");
    assert!(
        warning.contains("0644") || warning.contains("644"),
        "{warning}"
    );
}

// ---- 13: operator commands never create a store ------------------------------

#[tokio::test]
async fn operator_commands_on_a_missing_store_fail_naming_it_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    for command in [
        vec!["keys", "list"],
        vec!["keys", "rotate"],
        vec!["keys", "reseal"],
        vec!["keys", "remove", "some-kid"],
    ] {
        // Without a KEK (the embedded store would make one) and with one.
        for kek in [None, Some(TEST_KEK)] {
            let mut cmd = binary(dir.path());
            cmd.args(&command).env("JWKS_STORE", sqlite_url(&missing));
            if let Some(kek) = kek {
                cmd.env("JWKS_KEK", kek);
            }
            let output = run(&mut cmd).await;
            let stderr = text(&output.stderr);
            assert!(!output.status.success(), "{command:?}: {stderr}");
            assert!(
                stderr.contains(&missing.display().to_string()) && stderr.contains("no key store"),
                "{command:?}: names the path: {stderr}"
            );
            assert!(
                files_in(dir.path()).is_empty(),
                "{command:?} created {:?}",
                files_in(dir.path())
            );
        }
    }
}

// ---- 14: a damaged row of an expired key -------------------------------------

/// Overwrites a key's sealed private half, as a bad disk or a bad hand would.
async fn corrupt_sealed_key(store_url: &str, kid: &str) {
    let pool = sqlx::SqlitePool::connect(store_url).await.unwrap();
    let changed = sqlx::query("UPDATE signing_keys SET sealed_key = x'deadbeef' WHERE kid = ?")
        .bind(kid)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;
}

/// The kids of the store's expired and signing keys.
async fn expired_and_active(config: &Config) -> (String, String) {
    let store = SqlStore::connect(config.store.connection_string())
        .await
        .unwrap();
    let keys = store.load().await.unwrap();
    store.close().await;
    let expired = keys
        .iter()
        .find(|k| k.meta.expires_at.unix() <= now())
        .expect("an expired key");
    let active = keys
        .iter()
        .find(|k| k.meta.expires_at.unix() > now())
        .expect("a published key");
    (expired.meta.kid.clone(), active.meta.kid.clone())
}

fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn an_unreadable_expired_key_is_reported_and_skipped_and_keys_remove_deletes_it() {
    let app = spawn_app_with(|_| {}).await;
    let (config, dir) = app.stop().await;
    let (expired, active) = expired_and_active(&config).await;
    let store = config.store.connection_string().to_owned();
    corrupt_sealed_key(&store, &expired).await;

    // The service starts and serves.
    let server = ServerProcess::spawn(&[("JWKS_STORE", &store), ("JWKS_RELOAD_EVERY", "1s")]).await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/health", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let jwks: Value = client
        .get(format!("{}/.well-known/jwks.json", server.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kids(&jwks), vec![active.clone()]);
    let token = client
        .post(format!("{}/auth", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);

    // A warning names the key...
    let log = server.log_text();
    let warning = log
        .lines()
        .find(|line| line.contains("unreadable") && line.contains(&expired))
        .unwrap_or_else(|| panic!("no warning naming {expired}: {log}"));
    assert!(warning.contains("WARN"), "{warning}");
    // ...a metric counts it...
    let metrics_url = format!("{}/metrics", server.http);
    let scrape = || async {
        client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(metric(&scrape().await, "jwks_keys_unreadable"), Some(1.0));
    // ...and `keys list` shows it.
    let env = [("JWKS_STORE", store.as_str()), ("JWKS_KEK", TEST_KEK)];
    let output = run(binary(dir.path()).args(["keys", "list"]).envs(env)).await;
    let listing = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let row = listing
        .lines()
        .find(|line| line.starts_with(&expired))
        .unwrap_or_else(|| panic!("{expired} listed: {listing}"));
    assert!(row.contains("unreadable"), "{listing}");

    // `keys remove` deletes it from the live store; the server drops it.
    let output = run(binary(dir.path())
        .args(["keys", "remove", &expired])
        .envs(env))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains(&expired));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&scrape().await, "jwks_keys_unreadable") != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still counts an unreadable key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = run(binary(dir.path()).args(["keys", "list"]).envs(env)).await;
    assert!(!text(&output.stdout).contains(&expired));
}

#[tokio::test]
async fn an_unreadable_published_key_stops_the_start_with_its_kid_named() {
    let app = spawn_app_with(|_| {}).await;
    let (config, dir) = app.stop().await;
    let (_, active) = expired_and_active(&config).await;
    corrupt_sealed_key(config.store.connection_string(), &active).await;
    let err = Application::build(config)
        .await
        .err()
        .expect("refuses to start")
        .to_string();
    assert!(err.contains(&active), "{err}");
    assert!(err.contains("keys remove"), "says what to do: {err}");
    drop(dir);
}

#[tokio::test]
async fn keys_remove_refuses_the_signing_key_unless_forced() {
    let app = spawn_app_with(|_| {}).await;
    let (config, dir) = app.stop().await;
    let (_, active) = expired_and_active(&config).await;
    let env = [
        ("JWKS_STORE", config.store.connection_string()),
        ("JWKS_KEK", TEST_KEK),
    ];
    let output = run(binary(dir.path())
        .args(["keys", "remove", &active])
        .envs(env))
    .await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&active) && stderr.contains("active") && stderr.contains("--force"),
        "says why and how: {stderr}"
    );

    let output = run(binary(dir.path())
        .args(["keys", "remove", "no-such-kid"])
        .envs(env))
    .await;
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no-such-kid"));

    let output = run(binary(dir.path())
        .args(["keys", "remove", &active, "--force"])
        .envs(env))
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!stored_kids(&config).await.contains(&active));
}

async fn stored_kids(config: &Config) -> Vec<String> {
    let store = SqlStore::connect(config.store.connection_string())
        .await
        .unwrap();
    let keys = store.load().await.unwrap();
    store.close().await;
    keys.into_iter().map(|k| k.meta.kid).collect()
}

// ---- 15: SQLite in WAL mode --------------------------------------------------

#[tokio::test]
async fn the_sqlite_store_runs_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let app = start(config, dir).await;
    let pool = sqlx::SqlitePool::connect(app.config.store.connection_string())
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    pool.close().await;
}
