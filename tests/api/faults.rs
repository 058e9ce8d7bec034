//! Faults that must neither take the service down nor go unnoticed: a log
//! that cannot be written, a background refresher that panics, a store whose
//! disk is full, and core dumps that would hold every key.
//!
//! These tests use what CI has as root: `/dev/full`, tmpfs mounts, another
//! user id for a child process.

use std::{
    collections::HashSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;

use crate::helpers::{TEST_KEK, passthrough_env, verify};

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
