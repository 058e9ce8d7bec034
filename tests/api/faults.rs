//! Faults that must neither take the service down nor go unnoticed: a log
//! that cannot be written, a background refresher that panics, a store whose
//! disk is full, and core dumps that would hold every key.
//!
//! These tests use what CI has as root: `/dev/full`, tmpfs mounts, another
//! user id for a child process.

use std::{
    collections::HashSet,
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use jwks_server::{
    config::{Config, StoreUrl},
    keys::seal::{Kek, KekRing},
    service::{Access, KeyService},
    startup::Application,
    store::{
        KeyStore, NewKeyMaterial, Planner, RemoveCheck, RemoveOutcome, Resealer, RotateOutcome,
        SqlStore, StoreError, StoredKey,
    },
    time::Timestamp,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{
    TEST_KEK, TestApp, passthrough_env, run_app, spawn_app_with, test_config, verify,
};

/// Short periods (as in keys.rs): a key signs for 2 s.
const FAST_ROTATION: [(&str, &str); 5] = [
    ("JWKS_TOKEN_TTL", "2s"),
    ("JWKS_ROTATE_EVERY", "2s"),
    ("JWKS_JWKS_MAX_AGE", "2s"),
    ("JWKS_RELOAD_EVERY", "1s"),
    ("JWKS_CLOCK_SKEW", "1s"),
];

/// Calls `probe` every 100 ms until it answers, for at most `limit`.
async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn metrics_of(client: &reqwest::Client, http: &str) -> String {
    let response = client.get(format!("{http}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// gRPC health of the key service.
async fn grpc_serving(app: &TestApp) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let response = HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: "jwks.v1.KeyService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    response.status() == ServingStatus::Serving
}

async fn health_of(app: &TestApp) -> (u16, Value) {
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The TCP ports process `pid` listens on, read from /proc: its socket
/// inodes, matched against the kernel's table of listening sockets.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st ... inode; st 0A is LISTEN.
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") || !inodes.contains(*fields.get(9)?) {
                return None;
            }
            u16::from_str_radix(fields.get(1)?.split(':').nth(1)?, 16).ok()
        })
        .collect()
}

/// The REST base URL of a server process that cannot log its addresses: the
/// one of its listening ports that answers `GET /`.
async fn rest_url_of(child: &mut tokio::process::Child) -> String {
    let pid = child.id().expect("the server runs");
    let client = reqwest::Client::new();
    wait_until("the server listens", Duration::from_secs(30), async || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited before listening: {status}");
        }
        for port in listening_ports(pid) {
            let url = format!("http://127.0.0.1:{port}");
            let answer = client
                .get(format!("{url}/"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return Some(url);
            }
        }
        None
    })
    .await
}

// Item 1: `jwks-server 2>/dev/full` exited 101 at its first log line, and a
// failed log write killed the request or the refresher that wrote it.
#[tokio::test]
async fn with_every_log_write_failing_the_server_serves_rotates_and_counts_dropped_lines() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("jwks.db").display());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists (Linux)");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"))
        .env_clear()
        .envs(passthrough_env())
        .env("JWKS_KEK", TEST_KEK)
        .env("JWKS_STORE", &store)
        .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
        .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .envs(FAST_ROTATION)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(full))
        .kill_on_drop(true)
        .spawn()
        .expect("server process starts");
    let http = rest_url_of(&mut child).await;
    let client = reqwest::Client::new();

    let issue = async || {
        let response = client
            .post(format!("{http}/auth"))
            .send()
            .await
            .expect("an answer to POST /auth");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let jwks = async || -> Value {
        let response = client
            .get(format!("{http}/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    };
    let first = issue().await;
    verify(&first, &jwks().await).expect("a token issued while logs fail verifies");
    let dropped = metric(
        &metrics_of(&client, &http).await,
        "jwks_log_lines_dropped_total",
    )
    .expect("jwks_log_lines_dropped_total is exported");
    assert!(dropped > 0.0, "dropped lines are counted: {dropped}");

    // Rotation goes on: a later token is signed by a newer key, and verifies.
    let first_kid = crate::helpers::header(&first)["kid"].clone();
    let rotated = wait_until(
        "a new key signs while logs fail",
        Duration::from_secs(60),
        async || {
            let token = issue().await;
            (crate::helpers::header(&token)["kid"] != first_kid).then_some(token)
        },
    )
    .await;
    verify(&rotated, &jwks().await).expect("a token from the rotated key verifies");

    let later = metric(
        &metrics_of(&client, &http).await,
        "jwks_log_lines_dropped_total",
    )
    .unwrap();
    assert!(later > dropped, "dropped lines keep being counted: {later}");
    assert!(child.try_wait().unwrap().is_none(), "the server still runs");
}

/// A store that panics on `load` while armed: the fault a bug or a driver
/// could throw at the background refresher.
struct PanickingStore {
    inner: SqlStore,
    armed: AtomicBool,
}

#[async_trait]
impl KeyStore for PanickingStore {
    async fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        assert!(!self.armed.load(Ordering::SeqCst), "injected store fault");
        self.inner.load().await
    }

    async fn rotate(
        &self,
        plan: &Planner<'_>,
        fresh: Vec<NewKeyMaterial>,
    ) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(plan, fresh).await
    }

    async fn reseal(&self, reseal: &Resealer<'_>) -> Result<usize, StoreError> {
        self.inner.reseal(reseal).await
    }

    async fn remove(
        &self,
        kid: &str,
        check: &RemoveCheck<'_>,
    ) -> Result<RemoveOutcome, StoreError> {
        self.inner.remove(kid, check).await
    }
}

async fn spawn_app_over(store: Arc<dyn KeyStore>, config: Config, dir: TempDir) -> TestApp {
    let keks = KekRing::new(vec![Kek::from_base64(TEST_KEK).unwrap()]).unwrap();
    let service = KeyService::start(
        store,
        keks,
        config.policy(),
        config.issuer.clone(),
        Access::default(),
        Timestamp::now(),
    )
    .await
    .expect("the service starts");
    let app = Application::with_service(service, config.clone())
        .await
        .expect("the server binds");
    run_app(app, config, dir)
}

fn fault_kinds(health: &Value) -> Vec<String> {
    health["faults"]
        .as_array()
        .map(|faults| {
            faults
                .iter()
                .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// Item 1: the refresher died for good at its first panic, and nothing said so.
#[tokio::test]
async fn a_refresher_that_panics_is_restarted_counted_and_shown_in_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.reload_every = Duration::from_secs(1);
    let store = Arc::new(PanickingStore {
        inner: SqlStore::connect(config.store.connection_string())
            .await
            .unwrap(),
        armed: AtomicBool::new(false),
    });
    let app = spawn_app_over(store.clone(), config, dir).await;
    assert_eq!(health_of(&app).await.1["status"], "ok");

    store.armed.store(true, Ordering::SeqCst);
    let health = wait_until(
        "health reports the dead refresher",
        Duration::from_secs(20),
        async || {
            let (status, body) = health_of(&app).await;
            assert_eq!(status, 200, "a key still signs: {body}");
            fault_kinds(&body)
                .contains(&"refresher_restarting".to_owned())
                .then_some(body)
        },
    )
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reason"]
            .as_str()
            .is_some_and(|r| r.contains("injected store fault")),
        "the panic is the reason: {health}"
    );
    assert!(health["signing_for_seconds"].as_u64().is_some(), "{health}");
    assert!(
        grpc_serving(&app).await,
        "gRPC health: SERVING while a key signs"
    );
    wait_until(
        "the refresher is restarted (and panics again)",
        Duration::from_secs(20),
        async || {
            let text = metrics_of(&app.client, &app.http).await;
            metric(&text, "jwks_refresher_restarts_total").filter(|n| *n >= 2.0)
        },
    )
    .await;
    // Tokens are still issued meanwhile.
    let token = app.token("").await;
    verify(&token, &app.jwks().await).expect("tokens verify while the refresher restarts");

    store.armed.store(false, Ordering::SeqCst);
    wait_until(
        "health is ok once a restarted refresher completes a refresh",
        Duration::from_secs(90),
        async || {
            let (status, body) = health_of(&app).await;
            (status == 200 && body["status"] == "ok").then_some(())
        },
    )
    .await;
}

/// A tmpfs of `size` mounted on a fresh directory (needs root), unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (tests and CI run as root): {status}"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while matches!(file.write(&chunk), Ok(n) if n > 0) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

// Item 5: with the store's disk full every rotation failed with a warning
// while /health said ok, until signing stopped and /health jumped to 503.
#[tokio::test]
async fn a_full_store_disk_turns_health_degraded_until_space_returns() {
    let tmpfs = Tmpfs::mount("2m");
    let path = tmpfs.path().join("jwks.db");
    let app = spawn_app_with(|config| {
        config.store = StoreUrl::Sqlite {
            url: format!("sqlite://{}", path.display()),
            path: path.clone(),
        };
        config.token_ttl = Duration::from_secs(2);
        config.rotate_every = Duration::from_secs(3);
        config.jwks_max_age = Duration::from_secs(2);
        config.reload_every = Duration::from_secs(1);
        config.clock_skew = Duration::from_secs(1);
        // Keys are published long before they sign, so signing goes on for
        // a while after writes start failing.
        config.publish_ahead = Some(Duration::from_secs(20));
    })
    .await;
    assert_eq!(health_of(&app).await.1["status"], "ok");

    let filler = tmpfs.fill();
    let health = wait_until(
        "health reports the failing rotation",
        Duration::from_secs(30),
        async || {
            let (status, body) = health_of(&app).await;
            assert_eq!(status, 200, "held keys still sign: {body}");
            (body["status"] != "ok").then_some(body)
        },
    )
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(fault_kinds(&health), ["rotation_failing"], "{health}");
    let error = health["faults"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("full"), "the error says why: {health}");
    assert!(health["reason"].as_str().is_some(), "{health}");
    assert!(
        health["signing_for_seconds"]
            .as_u64()
            .is_some_and(|s| s > 0),
        "{health}"
    );
    let failures = metric(
        &metrics_of(&app.client, &app.http).await,
        "jwks_rotation_failures_total",
    )
    .expect("jwks_rotation_failures_total is exported");
    assert!(failures > 0.0, "rotation failures are counted: {failures}");
    assert!(
        grpc_serving(&app).await,
        "gRPC health: SERVING while a key signs"
    );

    std::fs::remove_file(filler).unwrap();
    wait_until(
        "health is ok once a rotation succeeds",
        Duration::from_secs(30),
        async || {
            let (status, body) = health_of(&app).await;
            (status == 200 && body["status"] == "ok" && body.get("faults").is_none()).then_some(())
        },
    )
    .await;
    drop(app);
}

// Item 6: a core dump would hold every private key and the KEK.
#[tokio::test]
async fn core_dumps_are_off_for_the_server_and_the_operator_commands() {
    // The child runs as `nobody`: the kernel then hands the /proc files of a
    // process that may not be dumped to root, which a test can observe.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let store = format!("sqlite://{}", dir.path().join("jwks.db").display());
    for args in [&[][..], &["hash-secret"][..]] {
        // Core dumps allowed, as a shell with `ulimit -c unlimited` would start it.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -c unlimited && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_jwks-server"))
            .args(args)
            .env_clear()
            .envs(passthrough_env())
            .env("JWKS_KEK", TEST_KEK)
            .env("JWKS_STORE", &store)
            .env("JWKS_HTTP_ADDR", "127.0.0.1:0")
            .env("JWKS_GRPC_ADDR", "127.0.0.1:0")
            .uid(65534)
            .gid(65534)
            // hash-secret waits for the secret on stdin, which stays open.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts as nobody");
        let pid = child.id().unwrap();
        let (limits, owner) = wait_until(
            &format!("jwks-server {args:?} turns core dumps off"),
            Duration::from_secs(20),
            async || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("jwks-server {args:?} exited: {status}");
                }
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
                if !exe.ends_with("jwks-server") {
                    return None; // still the shell
                }
                if args.is_empty() && listening_ports(pid).is_empty() {
                    return None; // not started yet
                }
                let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
                let core = limits
                    .lines()
                    .find(|l| l.starts_with("Max core file size"))?
                    .split_whitespace()
                    .skip(4)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                let owner = std::fs::metadata(format!("/proc/{pid}/status")).ok()?.uid();
                (core == "0 0" && owner == 0).then_some((core, owner))
            },
        )
        .await;
        assert_eq!(limits, "0 0");
        assert_eq!(owner, 0, "not dumpable: /proc/{pid} belongs to root");
        child.kill().await.unwrap();
    }
}

/// `hash-secret` with nothing on standard input says what to do, as the
/// operator command it is (it used to say "server failed").
#[tokio::test]
async fn hash_secret_with_no_secret_says_how_to_give_one() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"))
        .arg("hash-secret")
        .env_clear()
        .envs(passthrough_env())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr.trim_end(),
        "jwks-server: no secret on standard input; pipe it in: \
         printf %s \"$SECRET\" | jwks-server hash-secret"
    );
}

// Item 1, the operator side: `print!` panicked (exit 101) when stdout failed.
#[tokio::test]
async fn an_operator_command_whose_output_cannot_be_written_exits_1_without_a_panic() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists (Linux)");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwks-server"))
        .arg("hash-secret")
        .env_clear()
        .envs(passthrough_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"s3cret")
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("hash-secret finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
